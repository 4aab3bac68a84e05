//! The `zrecv-wrap` binary: parses arguments and hands over to the library.

fn main() -> std::process::ExitCode {
    zpipe_core::cli::main_with("zrecv-wrap", zrecv_wrap::command(), zrecv_wrap::run)
}
