//! zfs-standin: a test stand-in for OpenZFS 2.x's `zfs` command on top of a
//! real, older `zfs` (zfs-fuse 0.7).
//!
//! The real `zfs` (env `ZPIPE_REAL_ZFS`, default `/usr/sbin/zfs`) does all
//! the real work. The stand-in adds what zfs-fuse lacks, in OpenZFS's
//! formats and error texts: `send -nvP` estimates, `send -w/-c/-L/-e`
//! (accepted, plain stream), `recv -s` with partial state and a
//! `receive_resume_token`, `send -t`, `recv -A`. Every other command is
//! passed to the real `zfs` unchanged (exec). docs/STANDIN-ZFS.md describes
//! the behaviour and its limits.

mod get;
mod recv;
mod send;
mod state;
mod stream;

use std::ffi::OsString;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Command, Stdio};

/// Env var naming the real `zfs`.
pub const REAL_ZFS_ENV: &str = "ZPIPE_REAL_ZFS";
/// The real `zfs` when the env var is unset.
pub const DEFAULT_REAL_ZFS: &str = "/usr/sbin/zfs";
/// Exit status of `zfs` for a failed command.
pub const EXIT_FAIL: i32 = 1;
/// Exit status of `zfs` for a usage error.
pub const EXIT_USAGE: i32 = 2;
/// Copy buffer size.
pub const BUF_SIZE: usize = 1 << 20;

/// Path of the real `zfs`.
pub fn real_zfs() -> PathBuf {
    std::env::var_os(REAL_ZFS_ENV)
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(DEFAULT_REAL_ZFS))
}

/// Replaces this process with the real `zfs` and `args`.
pub fn exec_real<I, S>(args: I) -> !
where
    I: IntoIterator<Item = S>,
    S: Into<OsString>,
{
    let real = real_zfs();
    let err = Command::new(&real)
        .args(args.into_iter().map(Into::into))
        .exec();
    eprintln!("zfs-standin: cannot run {}: {err}", real.display());
    std::process::exit(127);
}

/// Output of a captured real `zfs` run.
pub struct Captured {
    /// Exit status (1 if killed by a signal).
    pub code: i32,
    /// Standard output.
    pub stdout: String,
    /// Standard error.
    pub stderr: String,
}

impl Captured {
    /// True on exit status 0.
    pub fn ok(&self) -> bool {
        self.code == 0
    }
}

/// Runs the real `zfs` with `args`, capturing its output.
pub fn run_real(args: &[&str]) -> anyhow::Result<Captured> {
    let out = Command::new(real_zfs())
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| anyhow::anyhow!("zfs-standin: cannot run {}: {e}", real_zfs().display()))?;
    Ok(Captured {
        code: out.status.code().unwrap_or(EXIT_FAIL),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    })
}

/// True when the dataset exists.
pub fn dataset_exists(name: &str) -> bool {
    run_real(&["list", "-H", "-o", "name", name]).is_ok_and(|c| c.ok())
}

/// `(name, guid)` of the filesystem `fs` and its snapshots (not children).
pub fn snapshot_guids(fs: &str) -> Option<Vec<(String, u64)>> {
    let c = run_real(&["get", "-Hp", "-r", "-o", "name,value", "guid", fs]).ok()?;
    if !c.ok() {
        return None;
    }
    let prefix = format!("{fs}@");
    Some(
        c.stdout
            .lines()
            .filter_map(|l| {
                let (name, guid) = l.split_once('\t')?;
                (name == fs || name.starts_with(&prefix))
                    .then(|| Some((name.to_string(), guid.trim().parse().ok()?)))?
            })
            .collect(),
    )
}

/// A failure printed the way `zfs` prints it: the text alone, exit 1.
#[derive(Debug)]
pub struct ZfsError(pub String, pub i32);

impl std::fmt::Display for ZfsError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ZfsError {}

/// A `zfs`-style failure with exit status 1.
pub fn zfs_fail(msg: impl Into<String>) -> anyhow::Error {
    ZfsError(msg.into(), EXIT_FAIL).into()
}

/// A `zfs`-style usage failure with exit status 2.
pub fn zfs_usage(msg: impl Into<String>) -> anyhow::Error {
    ZfsError(msg.into(), EXIT_USAGE).into()
}

/// OpenZFS 2.2's `zfs send` usage text (zfs_main.c `get_usage(HELP_SEND)`):
/// the wrappers read the flags it lists to detect capabilities.
pub const SEND_USAGE: &str = "usage:\n\tsend [-DLPbcehnpsVvw] [-i|-I snapshot]\n\t     [-R [-X dataset[,dataset]...]]     <snapshot>\n\tsend [-DnVvPLecw] [-i snapshot|bookmark] <filesystem|volume|snapshot>\n\tsend [-DnPpVvLec] [-i bookmark|snapshot] --redact <bookmark> <snapshot>\n\tsend [-nVvPe] -t <receive_resume_token>\n\tsend [-PnVv] --saved filesystem\n";
/// OpenZFS 2.2's `zfs receive` usage text (`get_usage(HELP_RECEIVE)`).
pub const RECV_USAGE: &str = "usage:\n\treceive [-vMnsFhu] [-o <property>=<value>] ... [-x <property>] ...\n\t    <filesystem|volume|snapshot>\n\treceive [-vMnsFhu] [-o <property>=<value>] ... [-x <property>] ... \n\t    [-d | -e] <filesystem>\n\treceive -A <filesystem|volume>\n";

/// libzfs's `zfs_nicenum_format`: base 1024, at most 5 characters where
/// possible; `bytes` adds the `B` unit below 1 KiB (`zfs_nicebytes`).
pub fn nicenum(num: u64, bytes: bool) -> String {
    const UNITS: [&str; 7] = ["", "K", "M", "G", "T", "P", "E"];
    const K: u64 = 1024;
    const MAX_WIDTH: usize = 5;
    let mut n = num;
    let mut index = 0;
    while n >= K && index < UNITS.len() - 1 {
        n /= K;
        index += 1;
    }
    let unit = if index == 0 && bytes {
        "B"
    } else {
        UNITS[index]
    };
    let base = K.pow(index as u32);
    if index == 0 || num.is_multiple_of(base) {
        return format!("{n}{unit}");
    }
    let val = num as f64 / base as f64;
    for prec in (0..=2).rev() {
        let s = format!("{val:.prec$}{unit}");
        if s.len() <= MAX_WIDTH || prec == 0 {
            return s;
        }
    }
    format!("{n}{unit}")
}

fn main() {
    let args: Vec<OsString> = std::env::args_os().skip(1).collect();
    let sub = args.first().and_then(|a| a.to_str()).unwrap_or("");
    let strings = || -> Vec<String> {
        args[1..]
            .iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect()
    };
    let result = match sub {
        "send" => send::main(&strings()),
        "recv" | "receive" => recv::main(&strings()),
        "get" => get::main(&strings()),
        _ => exec_real(args),
    };
    let code = match result {
        Ok(code) => code,
        Err(err) => match err.downcast_ref::<ZfsError>() {
            Some(z) => {
                eprintln!("{}", z.0);
                z.1
            }
            None => {
                eprintln!("zfs-standin: {err:#}");
                EXIT_FAIL
            }
        },
    };
    std::process::exit(code);
}

#[cfg(test)]
mod tests {
    use super::nicenum;

    #[test]
    fn nicenum_matches_libzfs() {
        assert_eq!(nicenum(0, false), "0");
        assert_eq!(nicenum(512, true), "512B");
        assert_eq!(nicenum(1024, false), "1K");
        assert_eq!(nicenum(1536, false), "1.50K");
        assert_eq!(nicenum(10239, false), "10.0K");
        assert_eq!(nicenum(3_164_632, false), "3.02M");
    }
}
