//! zpipe-meter: Progress, rate, ETA, bandwidth limit, big buffer and stall watchdog for pipes.

use zpipe_core::Exit;

/// The command-line interface of `zpipe-meter`.
pub fn command() -> clap::Command {
    clap::Command::new("zpipe-meter")
        .about("Progress, rate, ETA, bandwidth limit, big buffer and stall watchdog for pipes")
        .version(env!("CARGO_PKG_VERSION"))
}

/// Runs `zpipe-meter` with parsed arguments.
pub fn run(_matches: clap::ArgMatches) -> anyhow::Result<Exit> {
    Err(zpipe_core::exit::usage("not built yet"))
}
