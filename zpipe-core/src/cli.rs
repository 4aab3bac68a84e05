//! The `main` helper every zpipe binary uses.
//!
//! [`main_with`] parses the command line (a bad flag or value becomes one
//! line naming the flag and exit 1; `--help`/`--version` exit 0), installs
//! the SIGINT/SIGTERM watcher, runs the tool and turns its result into an
//! exit code, printing at most one error line that starts with the tool's
//! name and shows the cause chain.

use crate::cancel;
use crate::exit::{self, Exit};
use std::ffi::OsString;
use std::process::ExitCode;
use std::time::Duration;

/// How long the tool gets to stop its threads after SIGINT/SIGTERM before
/// the watcher exits the process itself.
pub const SIGNAL_GRACE: Duration = Duration::from_secs(3);

/// Runs a tool: parses `std::env::args_os()` with `cmd`, then `run`.
pub fn main_with<F>(tool: &str, cmd: clap::Command, run: F) -> ExitCode
where
    F: FnOnce(clap::ArgMatches) -> anyhow::Result<Exit>,
{
    main_with_args(tool, cmd, std::env::args_os(), run)
}

/// Like [`main_with`] with an explicit argument list.
pub fn main_with_args<F, I, T>(tool: &str, cmd: clap::Command, args: I, run: F) -> ExitCode
where
    F: FnOnce(clap::ArgMatches) -> anyhow::Result<Exit>,
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    let matches = match cmd.try_get_matches_from(args) {
        Ok(m) => m,
        Err(e) => return report_clap_error(tool, &e).into(),
    };
    install_signal_watcher(tool);
    let result = run(matches);
    let code = match (cancel::signal_received(), result) {
        (Some(sig), _) => {
            eprintln!("{tool}: stopped by {}", signal_name(sig));
            signal_exit(sig)
        }
        (None, Ok(code)) => code,
        (None, Err(err)) => {
            eprintln!("{tool}: {}", exit::one_line(&err));
            exit::classify(&err)
        }
    };
    code.into()
}

/// Prints a clap error the zpipe way and returns its exit code: help and
/// version go to stdout with 0; anything else is one line on stderr with 1.
pub fn report_clap_error(tool: &str, e: &clap::Error) -> Exit {
    use clap::error::ErrorKind;
    match e.kind() {
        ErrorKind::DisplayHelp | ErrorKind::DisplayVersion => {
            let _ = e.print();
            Exit::Success
        }
        _ => {
            eprintln!("{tool}: {}", clap_error_line(e));
            Exit::Usage
        }
    }
}

/// The first line of a clap error, without clap's `error: ` prefix.
pub fn clap_error_line(e: &clap::Error) -> String {
    let rendered = e.render().to_string();
    let first = rendered
        .lines()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("invalid arguments");
    let line = first.strip_prefix("error: ").unwrap_or(first).trim();
    if e.kind() == clap::error::ErrorKind::MissingRequiredArgument {
        let missing: Vec<&str> = rendered
            .lines()
            .skip(1)
            .map(str::trim)
            .take_while(|l| !l.is_empty())
            .collect();
        if !missing.is_empty() {
            return format!("{line} {}", missing.join(" "));
        }
    }
    line.to_string()
}

fn signal_name(sig: i32) -> &'static str {
    if sig == signal_hook::consts::SIGINT {
        "SIGINT"
    } else {
        "SIGTERM"
    }
}

fn signal_exit(sig: i32) -> Exit {
    if sig == signal_hook::consts::SIGINT {
        Exit::Interrupted
    } else {
        Exit::Terminated
    }
}

fn install_signal_watcher(tool: &str) {
    use signal_hook::consts::{SIGINT, SIGTERM};
    let Ok(mut signals) = signal_hook::iterator::Signals::new([SIGINT, SIGTERM]) else {
        return;
    };
    let tool = tool.to_string();
    let _ = std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            if let Some(sig) = signals.forever().next() {
                cancel::note_signal(sig);
                cancel::terminate_children();
                std::thread::sleep(SIGNAL_GRACE);
                // The tool did not wind down in time (a thread stuck in a
                // kernel call): end the process with the documented code.
                eprintln!("{tool}: stopped by {}", signal_name(sig));
                std::process::exit(i32::from(signal_exit(sig).code()));
            }
        });
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::{Arg, Command};

    fn cmd() -> Command {
        Command::new("t").arg(
            Arg::new("limit")
                .long("limit")
                .value_parser(crate::parse::rate),
        )
    }

    #[test]
    fn bad_value_is_one_line_naming_the_flag() {
        let e = cmd()
            .try_get_matches_from(["t", "--limit=abc"])
            .unwrap_err();
        let line = clap_error_line(&e);
        assert!(line.contains("--limit"), "{line}");
        assert!(!line.contains('\n'));
    }

    #[test]
    fn unknown_flag_names_it() {
        let e = cmd().try_get_matches_from(["t", "--bogus"]).unwrap_err();
        assert!(clap_error_line(&e).contains("--bogus"));
    }
}
