//! The `zsend-wrap` binary: parses arguments and hands over to the library.

fn main() -> std::process::ExitCode {
    zpipe_core::cli::main_with("zsend-wrap", zsend_wrap::command(), zsend_wrap::run)
}
