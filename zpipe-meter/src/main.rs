//! The `zpipe-meter` binary: parses arguments and hands over to the library.

fn main() -> std::process::ExitCode {
    zpipe_core::cli::main_with("zpipe-meter", zpipe_meter::command(), zpipe_meter::run)
}
