//! The `zpipe-verify` binary: parses arguments and hands over to the library.

fn main() -> std::process::ExitCode {
    zpipe_core::cli::main_with("zpipe-verify", zpipe_verify::command(), zpipe_verify::run)
}
