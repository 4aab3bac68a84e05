//! The `zfs` command the wrappers drive: how to run it (`--zfs`, `ZPIPE_ZFS`),
//! what it supports (OpenZFS 2.x versus older implementations such as
//! zfs-fuse), and the read-only queries both wrappers need (snapshots with
//! guids, properties, resume tokens, send size estimates).
//!
//! Capabilities are read from the usage text `zfs send` and `zfs receive`
//! print when called without arguments: the flag letters inside `[-…]`
//! groups, and the `-t <token>` / `receive -A` forms. That works for every
//! implementation and runs nothing that could change a pool.

use anyhow::Context;
use std::collections::BTreeSet;
use std::ffi::OsString;
use zpipe_core::child::{self, Child, Io};
use zpipe_core::exit;

/// Environment variable naming the zfs command (like `--zfs`).
pub const ZFS_ENV: &str = "ZPIPE_ZFS";

/// How to run `zfs`: a command prefix such as `zfs` or `sudo zfs`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Zfs {
    prefix: Vec<OsString>,
}

/// What the `zfs` in use can do.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Caps {
    /// Flag letters `zfs send` accepts.
    pub send_flags: BTreeSet<char>,
    /// Flag letters `zfs receive` accepts.
    pub recv_flags: BTreeSet<char>,
    /// `zfs send -t TOKEN` (resume a send).
    pub send_resume: bool,
    /// `zfs receive -A` (abort a resumable receive).
    pub recv_abort: bool,
}

impl Caps {
    /// True when `zfs send` takes `-<flag>`.
    pub fn send(&self, flag: char) -> bool {
        self.send_flags.contains(&flag)
    }

    /// True when `zfs receive` takes `-<flag>`.
    pub fn recv(&self, flag: char) -> bool {
        self.recv_flags.contains(&flag)
    }

    /// `zfs send -nvP` size estimates.
    pub fn estimate(&self) -> bool {
        self.send('n') && self.send('v') && self.send('P')
    }

    /// Resumable receives (`receive -s`, and the `receive_resume_token` property).
    pub fn resumable(&self) -> bool {
        self.recv('s')
    }

    /// Parses the usage texts of `zfs send` and `zfs receive`.
    pub fn from_usage(send_usage: &str, recv_usage: &str) -> Caps {
        let mut caps = Caps {
            send_flags: flags_in(send_usage, &["send"]),
            recv_flags: flags_in(recv_usage, &["receive", "recv"]),
            ..Caps::default()
        };
        caps.send_resume = send_usage
            .lines()
            .any(|l| l.trim_start().starts_with("send") && l.contains("-t <"));
        caps.recv_abort = recv_usage.lines().any(|l| {
            let l = l.trim_start();
            l.starts_with("receive -A") || l.starts_with("recv -A")
        });
        caps
    }
}

/// Letters inside `[-abc]` groups (and lone `-x` words) on usage lines that
/// start with one of `verbs`.
fn flags_in(usage: &str, verbs: &[&str]) -> BTreeSet<char> {
    let mut set = BTreeSet::new();
    let mut in_verb = false;
    for line in usage.lines() {
        let t = line.trim_start();
        let starts_entry = verbs.iter().any(|v| t.starts_with(&format!("{v} ")));
        // Wrapped usage entries continue on lines indented past the tab.
        let continues = line.starts_with("\t ") || line.starts_with("     ");
        if starts_entry {
            in_verb = true;
        } else if !continues {
            in_verb = false;
        }
        if !in_verb {
            continue;
        }
        let t = t.replace("-[", "-");
        for word in t.split(|c: char| c.is_whitespace() || c == '[' || c == ']' || c == '|') {
            if let Some(letters) = word.strip_prefix('-') {
                if !letters.starts_with('-') && letters.chars().all(|c| c.is_ascii_alphabetic()) {
                    set.extend(letters.chars());
                }
            }
        }
    }
    set
}

/// One snapshot of a dataset, with the identity that matters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    /// Full name, `pool/fs@snap`.
    pub name: String,
    /// The snapshot's guid: the same on every copy of it.
    pub guid: u64,
    /// Transaction group it was created in (orders snapshots).
    pub createtxg: u64,
    /// Creation time, seconds since the epoch.
    pub creation: u64,
    /// Number of user holds (`userrefs`; 0 when not listed).
    pub userrefs: u64,
    /// Marked with [`PULLED_PROP`] (set by pull mode on the destination).
    pub pulled: bool,
}

/// User property pull mode sets on destination snapshots it has proven (by
/// guid) to be copies of source snapshots. A snapshot after the common one
/// that carries it was deleted on the source since; one without it was
/// made on the destination.
pub const PULLED_PROP: &str = "zpipe:pulled";

impl Snapshot {
    /// The part after `@`.
    pub fn short_name(&self) -> &str {
        self.name.split_once('@').map_or(&self.name, |(_, s)| s)
    }
}

impl Zfs {
    /// From `--zfs` if given, else `$ZPIPE_ZFS`, else `zfs`. The value is
    /// split into words like a shell would (`sudo zfs`), without running one.
    pub fn from_option(opt: Option<&str>) -> anyhow::Result<Zfs> {
        let env = std::env::var(ZFS_ENV).ok();
        let spec = opt.or(env.as_deref()).unwrap_or("zfs");
        let words = shlex::split(spec)
            .filter(|w| !w.is_empty())
            .ok_or_else(|| exit::usage(format!("--zfs: cannot split '{spec}' into words")))?;
        Ok(Zfs {
            prefix: words.into_iter().map(OsString::from).collect(),
        })
    }

    /// A zfs command from explicit words.
    pub fn new<S: Into<OsString>>(words: impl IntoIterator<Item = S>) -> Zfs {
        Zfs {
            prefix: words.into_iter().map(Into::into).collect(),
        }
    }

    /// The full argv for `zfs <args…>`.
    pub fn argv<S: Into<OsString>>(&self, args: impl IntoIterator<Item = S>) -> Vec<OsString> {
        let mut v = self.prefix.clone();
        v.extend(args.into_iter().map(Into::into));
        v
    }

    /// The command prefix, quoted, for messages.
    pub fn display(&self) -> String {
        child::quote_argv(&self.prefix)
    }

    /// Runs `zfs <args>` and returns stdout as text; failure is exit 4.
    pub fn run<S: Into<OsString>>(
        &self,
        args: impl IntoIterator<Item = S>,
    ) -> anyhow::Result<String> {
        let out = child::output(&self.argv(args))?;
        Ok(String::from_utf8_lossy(&out).into_owned())
    }

    /// Finds out what this zfs supports.
    pub fn capabilities(&self) -> anyhow::Result<Caps> {
        let send = self.usage("send")?;
        let recv = self.usage("receive")?;
        Ok(Caps::from_usage(&send, &recv))
    }

    fn usage(&self, verb: &str) -> anyhow::Result<String> {
        let mut c = Child::spawn(&self.argv([verb]), Io::Null, Io::Pipe, false)
            .with_context(|| format!("asking {} what it supports", self.display()))?;
        let mut out = String::new();
        if let Some(so) = c.take_stdout() {
            out = String::from_utf8_lossy(&child::read_output(so, &self.display())?).into_owned();
        }
        let _ = c.wait();
        // Usage goes to stderr; keep line structure for the parser.
        let err = c.stderr_raw();
        Ok(out + &err)
    }

    /// Snapshots of `dataset` (direct children only), oldest first by createtxg.
    pub fn snapshots(&self, dataset: &str) -> anyhow::Result<Vec<Snapshot>> {
        let text = self.run(list_args(dataset))?;
        parse_snapshot_props(&text)
    }

    /// One property's raw value (`zfs get -Hp -o value PROP NAME`).
    pub fn get(&self, prop: &str, name: &str) -> anyhow::Result<String> {
        let text = self.run(["get", "-Hp", "-o", "value", prop, name])?;
        Ok(text.trim_end_matches('\n').to_string())
    }

    /// True when the dataset, snapshot or volume exists.
    pub fn exists(&self, name: &str) -> bool {
        self.get("guid", name).is_ok()
    }

    /// The guid of a dataset or snapshot.
    pub fn guid(&self, name: &str) -> anyhow::Result<u64> {
        let v = self.get("guid", name)?;
        v.trim()
            .parse()
            .map_err(|_| exit::child(format!("zfs printed guid '{v}' for {name}: not a number")))
    }

    /// The receive resume token of `dataset`, if it holds partial state.
    pub fn resume_token(&self, dataset: &str) -> anyhow::Result<Option<String>> {
        let v = self.get("receive_resume_token", dataset)?;
        let v = v.trim();
        Ok(if v.is_empty() || v == "-" {
            None
        } else {
            Some(v.to_string())
        })
    }

    /// The size `zfs send -nvP <send_args>` estimates, if it gives a usable one.
    pub fn estimate(&self, send_args: &[OsString]) -> anyhow::Result<Option<u64>> {
        let mut args: Vec<OsString> = vec!["send".into(), "-nvP".into()];
        args.extend(send_args.iter().cloned());
        let mut c = Child::spawn(&self.argv(args), Io::Null, Io::Pipe, false)?;
        let mut out = String::new();
        if let Some(so) = c.take_stdout() {
            out = String::from_utf8_lossy(&child::read_output(so, &self.display())?).into_owned();
        }
        c.check()?;
        // Older OpenZFS prints the estimate on stderr.
        Ok(parse_estimate(&out).or_else(|| parse_estimate(&c.stderr_raw())))
    }
}

/// The properties listed for each snapshot (guid identifies it, createtxg
/// orders it, userrefs protects it from pruning).
pub const SNAPSHOT_PROPS: &str = "guid,createtxg,creation,userrefs";

/// The words after `zfs` that list a dataset's snapshots with
/// [`SNAPSHOT_PROPS`]: `get -Hp -o name,property,value -d 1 PROPS DS`. It
/// works on zfs-fuse (no `zfs list -p` there) and on OpenZFS alike.
pub fn list_args(dataset: &str) -> Vec<String> {
    [
        "get",
        "-Hp",
        "-o",
        "name,property,value",
        "-d",
        "1",
        SNAPSHOT_PROPS,
        dataset,
    ]
    .map(str::to_string)
    .to_vec()
}

/// Parses `zfs send -nvP` output: the `size` line (tab-separated), else the
/// sum of the `full`/`incremental` lines. 0 or absurd values mean unknown.
pub fn parse_estimate(text: &str) -> Option<u64> {
    let mut total = None;
    let mut sum = 0u64;
    let mut any = false;
    for line in text.lines() {
        let fields: Vec<&str> = line.split('\t').collect();
        match fields.first().copied() {
            Some("size") => total = fields.get(1).and_then(|v| v.trim().parse::<u64>().ok()),
            Some("full" | "incremental") => {
                if let Some(v) = fields.last().and_then(|v| v.trim().parse::<u64>().ok()) {
                    sum = sum.saturating_add(v);
                    any = true;
                }
            }
            _ => {}
        }
    }
    let v = total.or(any.then_some(sum))?;
    (v > 0 && v <= zpipe_core::parse::MAX_SIZE).then_some(v)
}

/// Parses `zfs get -Hp -o name,property,value guid,createtxg,creation[,userrefs][,zpipe:pulled]`
/// rows into snapshots, oldest first (rows of non-snapshots are skipped).
pub fn parse_snapshot_props(text: &str) -> anyhow::Result<Vec<Snapshot>> {
    let mut snaps: Vec<Snapshot> = Vec::new();
    for line in text.lines().filter(|l| !l.is_empty()) {
        let mut f = line.rsplitn(3, '\t');
        let (Some(value), Some(prop), Some(name)) = (f.next(), f.next(), f.next()) else {
            return Err(exit::child(format!(
                "unexpected line from zfs get: {line:?}"
            )));
        };
        if !name.contains('@') {
            continue;
        }
        let idx = match snaps.iter().position(|s| s.name == name) {
            Some(i) => i,
            None => {
                snaps.push(Snapshot {
                    name: name.to_string(),
                    guid: 0,
                    createtxg: 0,
                    creation: 0,
                    userrefs: 0,
                    pulled: false,
                });
                snaps.len() - 1
            }
        };
        let s = &mut snaps[idx];
        if prop == PULLED_PROP {
            s.pulled = !matches!(value, "" | "-");
            continue;
        }
        let n: u64 = value
            .parse()
            .map_err(|_| exit::child(format!("zfs get printed {prop}={value:?} for {name}")))?;
        match prop {
            "guid" => s.guid = n,
            "createtxg" => s.createtxg = n,
            "creation" => s.creation = n,
            "userrefs" => s.userrefs = n,
            _ => {}
        }
    }
    snaps.sort_by_key(|s| s.createtxg);
    Ok(snaps)
}

#[cfg(test)]
mod tests {
    use super::*;

    const FUSE_SEND: &str = "missing snapshot argument\nusage:\n\tsend [-RDp] [-[iI] snapshot] <snapshot>\n\nFor the property list, run: zfs set|get\n";
    const FUSE_RECV: &str = "missing snapshot argument\nusage:\n\treceive [-vnF] <filesystem|volume|snapshot>\n\treceive [-vnF] -d <filesystem>\n";
    const OPENZFS_SEND: &str = "missing snapshot argument\nusage:\n\tsend [-DLPbcehnpsVvw] [-i|-I snapshot]\n\t     [-R [-X dataset[,dataset]...]]     <snapshot>\n\tsend [-DnVvPLecw] [-i snapshot|bookmark] <filesystem|volume|snapshot>\n\tsend [-DnPpVvLec] [-i bookmark|snapshot] --redact <bookmark> <snapshot>\n\tsend [-nVvPe] -t <receive_resume_token>\n\tsend [-PnVv] --saved filesystem\n";
    const OPENZFS_RECV: &str = "usage:\n\treceive [-FhMnsuv] [-o <property=value>] ... [-x <property>] ... <filesystem|volume|snapshot>\n\treceive [-FhMnsuv] [-d | -e] [-o <property=value>] ... [-x <property>] ... <filesystem>\n\treceive -A <filesystem|volume>\n";

    #[test]
    fn zfs_fuse_lacks_openzfs_flags() {
        let c = Caps::from_usage(FUSE_SEND, FUSE_RECV);
        for f in ['R', 'D', 'p', 'i', 'I'] {
            assert!(c.send(f), "{f}");
        }
        for f in ['w', 'c', 'L', 'e', 't', 'n'] {
            assert!(!c.send(f), "{f}");
        }
        assert!(!c.send_resume && !c.recv_abort && !c.resumable() && !c.estimate());
        assert!(c.recv('F') && c.recv('d') && !c.recv('u') && !c.recv('s'));
    }

    #[test]
    fn openzfs_has_them() {
        let c = Caps::from_usage(OPENZFS_SEND, OPENZFS_RECV);
        for f in ['w', 'c', 'L', 'e', 'p', 'R', 'i', 'I', 'D'] {
            assert!(c.send(f), "{f}");
        }
        assert!(c.send_resume && c.recv_abort && c.resumable() && c.estimate());
        for f in ['F', 'u', 'd', 'e', 'o', 'x', 's'] {
            assert!(c.recv(f), "{f}");
        }
    }

    #[test]
    fn estimates() {
        assert_eq!(
            parse_estimate("full\tp/ds@s\t12345\nsize\t12345\n"),
            Some(12345)
        );
        assert_eq!(
            parse_estimate("incremental\ta\tb\t100\nincremental\tb\tc\t50\n"),
            Some(150)
        );
        assert_eq!(parse_estimate("size\t0\n"), None);
        assert_eq!(parse_estimate("size\t18446744073709551615\n"), None);
        assert_eq!(parse_estimate("garbage"), None);
    }

    #[test]
    fn snapshot_rows_with_odd_names() {
        let text = "p/my ds\tguid\t1\np/my ds@a b\tguid\t42\np/my ds@a b\tcreatetxg\t7\np/my ds@a b\tcreation\t99\np/my ds@x:y\tguid\t43\np/my ds@x:y\tcreatetxg\t5\n";
        let s = parse_snapshot_props(text).unwrap();
        assert_eq!(s.len(), 2);
        assert_eq!(s[0].name, "p/my ds@x:y");
        assert_eq!(s[1].guid, 42);
        assert_eq!(s[1].short_name(), "a b");
    }

    #[test]
    fn zfs_option_splits_words() {
        let z = Zfs::from_option(Some("sudo -n zfs")).unwrap();
        assert_eq!(
            z.argv(["list"]),
            ["sudo", "-n", "zfs", "list"].map(OsString::from)
        );
        assert!(Zfs::from_option(Some("'unterminated")).is_err());
    }
}
