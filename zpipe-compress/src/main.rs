//! The `zpipe-compress` binary: parses arguments and hands over to the library.

fn main() -> std::process::ExitCode {
    zpipe_core::cli::main_with(
        "zpipe-compress",
        zpipe_compress::command(),
        zpipe_compress::run,
    )
}
