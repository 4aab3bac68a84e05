//! The `zpipe-compress` binary: turns zstd-style `-N` level flags into
//! `--level=N`, parses arguments and hands over to the library.

fn main() -> std::process::ExitCode {
    zpipe_core::cli::main_with_args(
        "zpipe-compress",
        zpipe_compress::command(),
        zpipe_compress::normalize_args(std::env::args_os()),
        zpipe_compress::run,
    )
}
