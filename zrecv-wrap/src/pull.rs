//! Pull mode (`zrecv-wrap --from [user@]host:SRC DST`): one replication run
//! driven from the backup side.
//!
//! Order of a run: take the source snapshot (`--snapshot FORMAT`); list
//! both sides' snapshots with guids; resume or discard a partial receive;
//! find the newest common snapshot *by guid*; refuse a diverged destination
//! unless `--force`; send full / `-I` / `-i` from the source through `ssh
//! HOST zsend-wrap …` (plain `zfs send` when the source has no zsend-wrap)
//! into [`receive_from`]; check that the newest source snapshot arrived;
//! prune by name time on both sides. `--check` only compares the lists;
//! `--dry-run` prints the plan. `--json FILE` gets a [`Report`].
//!
//! Every remote command is one of the shapes `zsend-wrap --serve` accepts
//! (see [`zsend_wrap::serve`]), so the same run works through a
//! forced-command key.

use crate::prune::{self, SnapInfo, Verdict};
use crate::recv::{receive_from, Args};
use anyhow::Context;
use chrono::{DateTime, Local, TimeZone};
use serde::Serialize;
use std::collections::HashMap;
use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;
use zpipe_core::child::{Child, Io};
use zpipe_core::{exit, Exit};
use zsend_wrap::remote::{RemoteSpec, Ssh};
use zsend_wrap::serve::{self, SendWhat};
use zsend_wrap::zfs::{Caps, Zfs};

/// Exit status of a remote shell that did not find the command.
pub const COMMAND_NOT_FOUND: i32 = 127;
/// Exit status of ssh itself failing (connection, authentication).
pub const SSH_FAILED: i32 = 255;

/// One send of a run, as the `--json` report lists it.
#[derive(Debug, Clone, Serialize)]
pub struct SendReport {
    /// `full`, `incremental` or `resume`.
    pub kind: String,
    /// `-i` or `-I` for incrementals.
    pub flag: Option<String>,
    /// The incremental source snapshot (source side name).
    pub from: Option<String>,
    /// The snapshot sent (for a resume: the token's snapshot).
    pub to: String,
    /// Bytes of ZFS stream received (after decompression and verification).
    pub bytes: u64,
    /// Wall time of the transfer.
    pub seconds: f64,
    /// `zsend-wrap` or `zfs send` (the fallback without framing).
    pub via: String,
}

/// The `--json` summary of one pull run.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Report {
    /// `[user@]host:dataset` of the source.
    pub source: String,
    /// The destination dataset.
    pub destination: String,
    /// Start time, RFC 3339.
    pub started: String,
    /// Wall time of the run.
    pub seconds: f64,
    /// True for `--dry-run` (nothing was changed).
    pub dry_run: bool,
    /// True for `--check`.
    pub check: bool,
    /// `success` or the exit code's name.
    pub result: String,
    /// The process exit status.
    pub exit_code: u8,
    /// The error line, when the run failed.
    pub error: Option<String>,
    /// The snapshot taken on the source (`--snapshot`).
    pub snapshot: Option<String>,
    /// The newest common snapshot before the sends (source name).
    pub common: Option<String>,
    /// A partial receive that was discarded because the source no longer matched.
    pub aborted_partial: Option<String>,
    /// What `--force` discarded on the destination.
    pub discarded: Vec<String>,
    /// The sends, in order.
    pub sends: Vec<SendReport>,
    /// Total bytes of all sends.
    pub bytes: u64,
    /// Snapshots destroyed on the destination.
    pub pruned_destination: Vec<String>,
    /// Snapshots destroyed on the source.
    pub pruned_source: Vec<String>,
}

/// Runs pull mode with the parsed flags (`args.from` is set).
pub fn pull(args: &Args) -> anyhow::Result<Exit> {
    let start = Instant::now();
    let mut report = Report {
        source: args.from.clone().unwrap_or_default(),
        destination: args.dataset.clone(),
        started: Local::now().to_rfc3339(),
        dry_run: args.dry_run,
        check: args.check,
        ..Report::default()
    };
    let result = Pull::new(args).and_then(|mut p| {
        let r = p.run();
        report = Report {
            started: report.started.clone(),
            ..p.report.clone()
        };
        r
    });
    report.seconds = start.elapsed().as_secs_f64();
    let code = match &result {
        Ok(e) => *e,
        Err(e) => exit::classify(e),
    };
    report.result = code.name().to_string();
    report.exit_code = code.code();
    report.error = result.as_ref().err().map(exit::one_line);
    if let Some(path) = &args.meter.json {
        let mut text = serde_json::to_string_pretty(&report)?;
        text.push('\n');
        std::fs::write(path, text)
            .map_err(|e| exit::io(format!("writing --json {}: {e}", path.display())))?;
    }
    result
}

/// The state of one pull run.
struct Pull<'a> {
    args: &'a Args,
    src: RemoteSpec,
    ssh: Ssh,
    remote_zfs: Vec<String>,
    zfs: Zfs,
    caps: Caps,
    now: DateTime<Local>,
    /// Plain `zfs send` on the source (no zsend-wrap there).
    plain: bool,
    report: Report,
    out: Box<dyn Write>,
    err: Box<dyn Write>,
}

/// A planned send.
#[derive(Debug, Clone)]
struct Step {
    what: SendWhat,
    kind: &'static str,
}

impl<'a> Pull<'a> {
    fn new(args: &'a Args) -> anyhow::Result<Pull<'a>> {
        let src = RemoteSpec::parse(args.from.as_deref().unwrap_or_default()).context("--from")?;
        if src.dataset.contains('@') {
            return Err(exit::usage(format!(
                "--from: '{}' is a snapshot; give the source dataset",
                src.dataset
            )));
        }
        if args.dataset.contains('@') {
            return Err(exit::usage(format!(
                "pull mode receives into a dataset, not the snapshot '{}'",
                args.dataset
            )));
        }
        let ssh = Ssh::new(args.ssh.as_deref(), args.ssh_cipher.as_deref())?;
        let remote_zfs = shlex::split(&args.remote_zfs)
            .filter(|w| !w.is_empty())
            .ok_or_else(|| exit::usage("--remote-zfs: cannot split it into words"))?;
        let zfs = Zfs::from_option(args.zfs.as_deref())?;
        let caps = zfs.capabilities()?;
        let now = match &args.snapshot_time {
            Some(t) => parse_time(t)?,
            None => Local::now(),
        };
        Ok(Pull {
            args,
            report: Report {
                source: format!("{}:{}", src.host, src.dataset),
                destination: args.dataset.clone(),
                dry_run: args.dry_run,
                check: args.check,
                ..Report::default()
            },
            src,
            ssh,
            remote_zfs,
            zfs,
            caps,
            now,
            plain: false,
            out: Box::new(std::io::stdout()),
            err: Box::new(std::io::stderr()),
        })
    }

    /// The name format pruning reads: `--prune-format`, else `--snapshot`.
    fn prune_format(&self) -> Option<String> {
        self.args
            .prune_format
            .clone()
            .or_else(|| self.args.snapshot.clone())
    }

    fn dst(&self) -> &str {
        &self.args.dataset
    }

    /// A note on stderr (not with --quiet).
    fn note(&mut self, text: &str) {
        if !self.args.meter.quiet {
            let _ = writeln!(self.err, "zrecv-wrap: {text}");
        }
    }

    /// A line of the dry-run plan (stdout).
    fn plan(&mut self, text: &str) {
        let _ = writeln!(self.out, "{text}");
    }

    fn run(&mut self) -> anyhow::Result<Exit> {
        if self.args.check {
            return self.check();
        }
        let pruning =
            self.args.prune_older_than.is_some() || self.args.prune_source_older_than.is_some();
        if pruning && self.prune_format().is_none() {
            return Err(exit::usage(
                "pruning needs the name format: --snapshot FORMAT or --prune-format FORMAT",
            ));
        }
        let dry = self.args.dry_run;
        // 1. The new source snapshot.
        let mut taken: Option<SnapInfo> = None;
        if let Some(fmt) = self.args.snapshot.clone() {
            let short = prune::format_name(&self.now, &fmt)?;
            if (self.args.prune_older_than.is_some() || self.args.prune_source_older_than.is_some())
                && self
                    .prune_format()
                    .is_some_and(|p| prune::name_time(&short, &p).is_none())
            {
                return Err(exit::usage(format!(
                    "--snapshot: names made by '{fmt}' (e.g. '{short}') cannot be read back for \
                     pruning"
                )));
            }
            let name = format!("{}@{short}", self.src.dataset);
            if dry {
                self.plan(&format!("snapshot {}:{name}", self.src.host));
                taken = Some(SnapInfo {
                    name: name.clone(),
                    guid: 0,
                    createtxg: u64::MAX,
                    creation: self.now.timestamp().max(0) as u64,
                    userrefs: 0,
                    pulled: false,
                });
            } else {
                self.remote_zfs_run(&["snapshot".to_string(), name.clone()])?;
            }
            self.report.snapshot = Some(name);
        }
        // 2. Both lists.
        let mut src = self.source_list()?;
        src.extend(taken);
        if src.is_empty() {
            return Err(exit::usage(format!(
                "{}:{} has no snapshots to send (use --snapshot FORMAT to take one)",
                self.src.host, self.src.dataset
            )));
        }
        // 3. A partial receive: resume it or discard it.
        let resumed = self.resume_or_abort(&src)?;
        let mut dst = self.dest_list()?;
        if let Some(guid) = resumed {
            // Dry run: plan as if the resume had completed.
            let s = src.iter().find(|s| s.guid == guid).cloned();
            dst.extend(s.map(|s| SnapInfo {
                createtxg: u64::MAX,
                pulled: true,
                ..s
            }));
        }
        // 4. Common snapshot and divergence.
        let by_guid: HashMap<u64, &SnapInfo> = src.iter().map(|s| (s.guid, s)).collect();
        let common_dst = dst
            .iter()
            .rev()
            .find(|d| by_guid.contains_key(&d.guid))
            .cloned();
        let common = common_dst.as_ref().map(|d| by_guid[&d.guid].clone());
        self.report.common = common.as_ref().map(|c| c.name.clone());
        let mut force = self.args.force;
        match &common_dst {
            Some(c) => self.settle_divergence(c, &mut dst)?,
            None if !dst.is_empty() => {
                let names: Vec<&str> = dst.iter().map(SnapInfo::short_name).collect();
                return Err(exit::usage(format!(
                    "{} has snapshots ({}) but none in common with {}:{} (compared by guid): \
                     refusing to overwrite it, even with --force; destroy it or replicate into \
                     another dataset",
                    self.dst(),
                    names.join(", "),
                    self.src.host,
                    self.src.dataset
                )));
            }
            None => {
                if self.zfs.exists(self.dst()) && !force {
                    return Err(exit::usage(format!(
                        "{} exists but has no snapshots: a full receive would overwrite it; \
                         re-run with --force (zfs recv -F) or pick a new dataset",
                        self.dst()
                    )));
                }
                force = force && self.zfs.exists(self.dst());
            }
        }
        // 5. The sends.
        let steps = plan_steps(&src, common.as_ref(), self.args.incremental_mode == "i");
        if steps.is_empty() {
            if dry {
                self.plan("nothing to send: the destination is up to date");
            } else {
                self.note(&format!("{} is up to date", self.dst()));
            }
        }
        for step in &steps {
            if dry {
                let words = serve::send_what_args(&step.what);
                let size = self.estimate(&step.what).map_or_else(
                    || "size unknown".to_string(),
                    |n| format!("estimated {}", zpipe_core::parse::human_bytes(n)),
                );
                self.plan(&format!("send {} {} ({size})", step.kind, words.join(" ")));
                continue;
            }
            self.transfer(step, force)?;
        }
        // 6. Did the newest source snapshot arrive?
        let Some(newest) = src.last().cloned() else {
            return Err(exit::usage("the source has no snapshots"));
        };
        let mut dst_after = if dry {
            let mut d = dst.clone();
            d.extend(received_by(&steps, &src, common.as_ref()));
            d
        } else {
            self.dest_list()?
        };
        if !dry && !dst_after.iter().any(|d| d.guid == newest.guid) {
            return Err(exit::integrity(format!(
                "after the run {} lacks the newest source snapshot {} (guid {})",
                self.dst(),
                newest.name,
                newest.guid
            )));
        }
        if !dry {
            self.mark_pulled(&dst_after, &src);
        }
        // 7. Pruning.
        self.prune(&mut dst_after, &src, newest.guid)?;
        if !dry {
            let bytes = zpipe_core::parse::human_bytes(self.report.bytes);
            let n = self.report.sends.len();
            self.note(&format!(
                "{} is at {} ({n} send{}, {bytes})",
                self.dst(),
                newest.short_name(),
                if n == 1 { "" } else { "s" }
            ));
        }
        Ok(Exit::Success)
    }

    /// Decides what happens to the destination's state after the common
    /// snapshot `c`: snapshots made there, or changes (`written`), are a
    /// divergence, refused without `--force`; copies of snapshots the
    /// source has deleted since (marked [`prune::PULLED_PROP`]) are rolled
    /// back, with a note, so the run continues from `c`.
    fn settle_divergence(&mut self, c: &SnapInfo, dst: &mut Vec<SnapInfo>) -> anyhow::Result<()> {
        let newer: Vec<SnapInfo> = dst
            .iter()
            .filter(|d| d.createtxg > c.createtxg)
            .cloned()
            .collect();
        let (gone, foreign): (Vec<&SnapInfo>, Vec<&SnapInfo>) =
            newer.iter().partition(|d| d.pulled);
        let written = self.written().filter(|&w| w > 0);
        let names = |v: &[&SnapInfo]| {
            v.iter()
                .map(|s| s.short_name())
                .collect::<Vec<_>>()
                .join(", ")
        };
        let mut what = Vec::new();
        if !foreign.is_empty() {
            what.push(format!(
                "snapshots made there that the source does not have ({})",
                names(&foreign)
            ));
        }
        if let Some(w) = written {
            let newest = dst.last().map_or("", |d| d.short_name());
            what.push(format!(
                "{} written since {newest}",
                zpipe_core::parse::human_bytes(w)
            ));
        }
        if !what.is_empty() && !self.args.force {
            return Err(exit::usage(format!(
                "{} has diverged from {}:{} after the common snapshot {} (guid {}): it has {}; \
                 refusing to overwrite it. Re-run with --force to roll it back to {}, destroying \
                 that, or replicate into another dataset",
                self.dst(),
                self.src.host,
                self.src.dataset,
                c.short_name(),
                c.guid,
                what.join(" and "),
                c.name
            )));
        }
        if newer.is_empty() && what.is_empty() {
            if self.args.force {
                self.note(&format!(
                    "--force: zfs recv -F discards any change on {} since {}",
                    self.dst(),
                    c.short_name()
                ));
            }
            return Ok(());
        }
        if !gone.is_empty() {
            what.push(format!(
                "the copies of {} (deleted on the source since they were pulled)",
                names(&gone)
            ));
        }
        let what = what.join(" and ");
        self.report.discarded = newer.iter().map(|s| s.name.clone()).collect();
        if written.is_some() {
            self.report
                .discarded
                .push(format!("changes on {}", self.dst()));
        }
        let why = if self.args.force { "--force: " } else { "" };
        if self.args.dry_run {
            self.plan(&format!("rollback -r {} ({why}discards {what})", c.name));
        } else {
            self.note(&format!(
                "{why}rolling back {} to {}, discarding {what}",
                self.dst(),
                c.short_name()
            ));
            self.zfs.run(["rollback", "-r", c.name.as_str()])?;
        }
        dst.retain(|d| d.createtxg <= c.createtxg);
        Ok(())
    }

    /// Marks the destination's copies of source snapshots with
    /// [`prune::PULLED_PROP`] (a failure is only a note: the mark is what
    /// tells a snapshot deleted on the source from one made here).
    fn mark_pulled(&mut self, dst: &[SnapInfo], src: &[SnapInfo]) {
        let value = format!(
            "{}={}:{}",
            prune::PULLED_PROP,
            self.src.host,
            self.src.dataset
        );
        for d in dst.iter().filter(|d| !d.pulled) {
            if !src.iter().any(|s| s.guid == d.guid) {
                continue;
            }
            if let Err(e) = self.zfs.run(["set", value.as_str(), d.name.as_str()]) {
                self.note(&format!(
                    "cannot mark {} as pulled (zfs allow userprop?): {}",
                    d.name,
                    exit::one_line(&e)
                ));
                return;
            }
        }
    }

    /// `--check`: the newest source snapshot must be here (by guid), and
    /// snapshots with the same name must have the same guid.
    fn check(&mut self) -> anyhow::Result<Exit> {
        let src = self.source_list()?;
        let dst = self.dest_list()?;
        let Some(newest) = src.last() else {
            return Err(exit::usage(format!(
                "{}:{} has no snapshots",
                self.src.host, self.src.dataset
            )));
        };
        let src_names: HashMap<&str, u64> = src.iter().map(|s| (s.short_name(), s.guid)).collect();
        let clashes: Vec<String> = dst
            .iter()
            .filter(|d| src_names.get(d.short_name()).is_some_and(|&g| g != d.guid))
            .map(|d| d.short_name().to_string())
            .collect();
        if !clashes.is_empty() {
            return Err(exit::integrity(format!(
                "check: snapshots with the same name but another guid on {}: {} (not copies of \
                 the source's)",
                self.dst(),
                clashes.join(", ")
            )));
        }
        let src_guids: HashMap<u64, &SnapInfo> = src.iter().map(|s| (s.guid, s)).collect();
        let common = dst
            .iter()
            .filter(|d| src_guids.contains_key(&d.guid))
            .count();
        self.report.common = dst
            .iter()
            .rev()
            .find(|d| src_guids.contains_key(&d.guid))
            .map(|d| src_guids[&d.guid].name.clone());
        if !dst.iter().any(|d| d.guid == newest.guid) {
            return Err(exit::integrity(format!(
                "check: the newest source snapshot {} (guid {}) is missing on {}; newest common: {}",
                newest.name,
                newest.guid,
                self.dst(),
                self.report.common.as_deref().unwrap_or("none")
            )));
        }
        let line = format!(
            "check: {} has the newest source snapshot {} (guid {}); {common} snapshots in common",
            self.dst(),
            newest.short_name(),
            newest.guid
        );
        self.plan(&line);
        Ok(Exit::Success)
    }

    /// Resumes the destination's partial receive when its token still
    /// matches the source, else discards it (`zfs recv -A`). In a dry run,
    /// returns the guid a resume would bring.
    fn resume_or_abort(&mut self, src: &[SnapInfo]) -> anyhow::Result<Option<u64>> {
        if !self.caps.resumable() || !self.zfs.exists(self.dst()) {
            return Ok(None);
        }
        let Some(text) = self.zfs.resume_token(self.dst())? else {
            return Ok(None);
        };
        let toguid = crate::token::decode(&text).ok().map(|t| t.toguid);
        let matches = match crate::token::decode(&text) {
            Ok(t) => {
                src.iter().any(|s| s.guid == t.toguid)
                    && t.fromguid
                        .filter(|&g| g != 0)
                        .map_or(true, |g| src.iter().any(|s| s.guid == g))
            }
            Err(_) => false,
        };
        if matches {
            let step = Step {
                what: SendWhat::Token(text),
                kind: "resume",
            };
            if self.args.dry_run {
                self.plan(&format!(
                    "resume the partial receive into {} (zsend-wrap -t TOKEN)",
                    self.dst()
                ));
                return Ok(toguid);
            }
            self.note(&format!("resuming the partial receive into {}", self.dst()));
            return self.transfer(&step, false).map(|()| None);
        }
        if self.args.dry_run {
            self.plan(&format!(
                "receive -A {} (its partial receive no longer matches the source)",
                self.dst()
            ));
            return Ok(None);
        }
        if !self.caps.recv_abort {
            return Err(exit::usage(format!(
                "{} holds a partial receive that no longer matches the source, and {} cannot \
                 discard it (zfs recv -A)",
                self.dst(),
                self.zfs.display()
            )));
        }
        self.note(&format!(
            "discarding the partial receive of {}: its snapshot is no longer on the source",
            self.dst()
        ));
        self.zfs.run(["receive", "-A", self.dst()])?;
        self.report.aborted_partial = Some(self.dst().to_string());
        Ok(None)
    }

    /// Bytes written to the destination since its newest snapshot, when
    /// this zfs has the `written` property (zfs-fuse does not).
    fn written(&mut self) -> Option<u64> {
        match self.zfs.get("written", self.dst()) {
            Ok(v) => v.trim().parse().ok(),
            Err(_) => None,
        }
    }

    /// The destination's snapshots (none when it does not exist).
    fn dest_list(&self) -> anyhow::Result<Vec<SnapInfo>> {
        if !self.zfs.exists(self.dst()) {
            return Ok(Vec::new());
        }
        let mut words = serve::list_args(self.dst());
        let props = words.len() - 2;
        words[props] = format!("{},{}", serve::SNAPSHOT_PROPS, prune::PULLED_PROP);
        prune::parse_list(&self.zfs.run(words)?)
    }

    /// The source's snapshots, through ssh.
    fn source_list(&self) -> anyhow::Result<Vec<SnapInfo>> {
        let text = self.remote_zfs_run(&serve::list_args(&self.src.dataset))?;
        prune::parse_list(&text)
    }

    /// Runs `<remote zfs> <words>` on the source; returns its stdout.
    fn remote_zfs_run(&self, words: &[String]) -> anyhow::Result<String> {
        let mut all = self.remote_zfs.clone();
        all.extend(words.iter().cloned());
        self.remote_output(&all)
    }

    /// Runs `words` on the source through ssh; returns stdout. A failure
    /// names the host and carries the remote error text.
    fn remote_output(&self, words: &[String]) -> anyhow::Result<String> {
        self.remote_output_and_stderr(words).map(|(out, _)| out)
    }

    /// Like [`Pull::remote_output`], with the remote stderr text as well.
    fn remote_output_and_stderr(&self, words: &[String]) -> anyhow::Result<(String, String)> {
        let argv = self.ssh.argv(&self.src.host, words);
        let mut c = Child::spawn(&argv, Io::Null, Io::Pipe, false)?;
        let mut out = Vec::new();
        if let Some(so) = c.take_stdout() {
            // Bounded: a hostile source must not exhaust the backup host.
            out = zpipe_core::child::read_output(so, &format!("ssh {}", self.src.host))?;
        }
        let status = c.wait()?;
        if !status.success() {
            return Err(self.remote_failure(words, status.code(), &c.stderr_text()));
        }
        Ok((String::from_utf8_lossy(&out).into_owned(), c.stderr_raw()))
    }

    /// The source's `zfs send -nvP` estimate for `what`, when its zfs has
    /// one (zfs-fuse does not; absurd values count as unknown).
    fn estimate(&self, what: &SendWhat) -> Option<u64> {
        let mut words = self.remote_zfs.clone();
        words.extend(["send".to_string(), "-nvP".to_string()]);
        words.extend(serve::send_what_args(what));
        let (out, err) = self.remote_output_and_stderr(&words).ok()?;
        // Older OpenZFS prints the estimate on stderr.
        zsend_wrap::zfs::parse_estimate(&out).or_else(|| zsend_wrap::zfs::parse_estimate(&err))
    }

    /// The error for a failed remote command: refused by serve mode (exit
    /// 1) is a usage error, anything else a child failure.
    fn remote_failure(&self, words: &[String], code: Option<i32>, stderr: &str) -> anyhow::Error {
        let cmd = zpipe_core::child::quote_argv(words);
        let how = match code {
            Some(SSH_FAILED) => "ssh failed (exit 255)".to_string(),
            Some(c) => format!("exit {c}"),
            None => "killed by a signal".to_string(),
        };
        let msg = if stderr.is_empty() {
            format!("on {}: {cmd}: {how}", self.src.host)
        } else {
            format!("on {}: {cmd}: {how}: {stderr}", self.src.host)
        };
        match code {
            Some(1) if stderr.contains("serve: refused") => exit::usage(msg),
            _ => exit::child(msg),
        }
    }

    /// The remote words that send `what`.
    fn send_words(&self, what: &SendWhat) -> Vec<String> {
        let mut w = if self.plain {
            let mut w = self.remote_zfs.clone();
            w.push("send".into());
            w
        } else {
            let mut w = shlex::split(&self.args.remote_zsend).unwrap_or_default();
            if w.is_empty() {
                w.push(self.args.remote_zsend.clone());
            }
            w.push("--quiet".into());
            if self.args.remote_zfs != "zfs" {
                w.push(format!("--zfs={}", self.args.remote_zfs));
            }
            w
        };
        w.extend(serve::send_what_args(what));
        w
    }

    /// One send through ssh into `receive_from`; falls back to plain `zfs
    /// send` once when the source has no zsend-wrap (exit 127).
    fn transfer(&mut self, step: &Step, force: bool) -> anyhow::Result<()> {
        loop {
            let words = self.send_words(&step.what);
            let argv = self.ssh.argv(&self.src.host, &words);
            let start = Instant::now();
            let mut c = Child::spawn(&argv, Io::Null, Io::Pipe, false)?;
            let stdout = c.take_stdout().context("ssh stdout")?;
            let stats = temp_path("meter");
            let mut rargs = self.args.clone();
            rargs.from = None;
            rargs.force = force;
            rargs.allow_unverified = self.plain;
            rargs.meter.json = Some(stats.clone());
            // The size for the progress display's percentage and ETA.
            if !rargs.meter.quiet && rargs.meter.size.is_none() && rargs.meter.size_file.is_none() {
                rargs.meter.size = self.estimate(&step.what);
            }
            let result = receive_from(
                &rargs,
                &self.zfs,
                &self.caps,
                rustix::fd::OwnedFd::from(stdout),
            );
            // Our own I/O failure (a stall) that is not the echo of the
            // remote side's: ssh may wait on a hung peer forever.
            let stopped = result
                .as_ref()
                .is_err_and(|e| exit::classify(e) == Exit::Io && !exit::is_broken_pipe(e));
            if stopped {
                c.stop();
            }
            let status = c.wait()?;
            let bytes = read_meter_bytes(&stats);
            let _ = std::fs::remove_file(&stats);
            if !self.plain && status.code() == Some(COMMAND_NOT_FOUND) {
                self.note(&format!(
                    "{} not found on {}: falling back to plain zfs send (stages on this side \
                     only; the stream is checked here but not framed)",
                    self.args.remote_zsend, self.src.host
                ));
                self.plain = true;
                continue;
            }
            let remote = (!status.success())
                .then(|| self.remote_failure(&words, status.code(), &c.stderr_text()));
            match (result, remote) {
                (Ok(_), None) => {}
                (Ok(_), Some(r)) => return Err(r),
                // We stopped ssh: its failure is our echo.
                (Err(e), _) if stopped => return Err(e),
                // Nothing arrived: the remote side's own words explain why.
                (Err(e), Some(r)) if format!("{e:#}").contains("the stream is empty") => {
                    return Err(r)
                }
                // A failed ssh (a dead link, exit 255) says why in its stderr.
                (Err(e), Some(_)) if !c.stderr_text().is_empty() => {
                    return Err(e.context(format!("(on {}: {})", self.src.host, c.stderr_text())))
                }
                (Err(e), _) => return Err(e),
            }
            let (flag, from, to) = match &step.what {
                SendWhat::Snap { from, snap } => (
                    from.as_ref().map(|f| f.0.clone()),
                    from.as_ref().map(|f| f.1.clone()),
                    snap.clone(),
                ),
                SendWhat::Token(t) => (
                    None,
                    None,
                    crate::token::decode(t)
                        .map(|t| t.toname)
                        .unwrap_or_default(),
                ),
            };
            self.report.bytes += bytes;
            self.report.sends.push(SendReport {
                kind: step.kind.to_string(),
                flag,
                from,
                to,
                bytes,
                seconds: start.elapsed().as_secs_f64(),
                via: if self.plain { "zfs send" } else { "zsend-wrap" }.to_string(),
            });
            return Ok(());
        }
    }

    /// Prunes both sides by name time (after a successful run; in a dry run
    /// on the planned lists). `protect` is the newest common snapshot's guid.
    fn prune(
        &mut self,
        dst: &mut [SnapInfo],
        src: &[SnapInfo],
        protect: u64,
    ) -> anyhow::Result<()> {
        if self.args.prune_older_than.is_none() && self.args.prune_source_older_than.is_none() {
            return Ok(());
        }
        let Some(fmt) = self.prune_format() else {
            return Err(exit::usage(
                "pruning needs the name format: --snapshot FORMAT or --prune-format FORMAT",
            ));
        };
        let dry = self.args.dry_run;
        if let Some(age) = self.args.prune_older_than {
            let cutoff = cutoff(self.now, age);
            for (s, v) in prune::select(dst, &fmt, cutoff, Some(protect)) {
                match v {
                    Verdict::Destroy if dry => self.plan(&format!("destroy {}", s.name)),
                    Verdict::Destroy => {
                        self.zfs.run(["destroy", s.name.as_str()])?;
                        self.report.pruned_destination.push(s.name.clone());
                    }
                    Verdict::KeepCommon => {
                        self.keep_note(&format!("keep {} (newest common snapshot)", s.name))
                    }
                    Verdict::KeepHeld(n) => {
                        self.keep_note(&format!("keep {} ({n} hold(s))", s.name))
                    }
                }
            }
        }
        if let Some(age) = self.args.prune_source_older_than {
            let cutoff = cutoff(self.now, age);
            let src_now = if dry {
                src.to_vec()
            } else {
                self.source_list()?
            };
            for (s, v) in prune::select(&src_now, &fmt, cutoff, Some(protect)) {
                match v {
                    Verdict::Destroy if dry => {
                        self.plan(&format!("destroy {}:{}", self.src.host, s.name))
                    }
                    Verdict::Destroy => {
                        self.remote_zfs_run(&["destroy".to_string(), s.name.clone()])?;
                        self.report.pruned_source.push(s.name.clone());
                    }
                    Verdict::KeepCommon => self.keep_note(&format!(
                        "keep {}:{} (newest common snapshot)",
                        self.src.host, s.name
                    )),
                    Verdict::KeepHeld(n) => {
                        self.keep_note(&format!("keep {}:{} ({n} hold(s))", self.src.host, s.name))
                    }
                }
            }
        }
        Ok(())
    }

    /// Why an old snapshot stays: a plan line in a dry run, else a note.
    fn keep_note(&mut self, text: &str) {
        if self.args.dry_run {
            self.plan(text);
        } else {
            self.note(text);
        }
    }
}

/// The sends that bring the destination from `common` to the newest
/// source snapshot: `-I common newest` (or `-i` when `only_newest`), or a
/// full send of the oldest (newest with `-i`) followed by `-I`.
fn plan_steps(src: &[SnapInfo], common: Option<&SnapInfo>, only_newest: bool) -> Vec<Step> {
    let newer: Vec<&SnapInfo> = match common {
        Some(c) => src.iter().filter(|s| s.createtxg > c.createtxg).collect(),
        None => src.iter().collect(),
    };
    let Some(newest) = newer.last() else {
        return Vec::new();
    };
    let incr = |from: &SnapInfo, flag: &str| Step {
        what: SendWhat::Snap {
            from: Some((flag.to_string(), from.name.clone())),
            snap: newest.name.clone(),
        },
        kind: "incremental",
    };
    let full = |s: &SnapInfo| Step {
        what: SendWhat::Snap {
            from: None,
            snap: s.name.clone(),
        },
        kind: "full",
    };
    let flag = if only_newest || newer.len() == 1 {
        "-i"
    } else {
        "-I"
    };
    match common {
        Some(c) => vec![incr(c, flag)],
        None if only_newest || newer.len() == 1 => vec![full(newest)],
        None => {
            let flag = if newer.len() == 2 { "-i" } else { "-I" };
            vec![full(newer[0]), incr(newer[0], flag)]
        }
    }
}

/// The source snapshots the planned steps bring over (for the dry run's
/// pruning plan).
fn received_by(steps: &[Step], src: &[SnapInfo], common: Option<&SnapInfo>) -> Vec<SnapInfo> {
    let base = common.map_or(0, |c| c.createtxg);
    let all_between = steps
        .iter()
        .any(|s| matches!(&s.what, SendWhat::Snap { from: Some((f, _)), .. } if f == "-I"));
    src.iter()
        .filter(|s| s.createtxg > base)
        .filter(|s| {
            all_between
                || steps
                    .iter()
                    .any(|st| matches!(&st.what, SendWhat::Snap { snap, .. } if *snap == s.name))
        })
        .cloned()
        .collect()
}

/// `now - age`; the earliest time there is when that underflows.
fn cutoff(now: DateTime<Local>, age: std::time::Duration) -> DateTime<Local> {
    chrono::Duration::from_std(age)
        .ok()
        .and_then(|d| now.checked_sub_signed(d))
        .unwrap_or(DateTime::<chrono::Utc>::MIN_UTC.with_timezone(&Local))
}

/// `--snapshot-time`: RFC 3339, or `@EPOCH` seconds.
fn parse_time(s: &str) -> anyhow::Result<DateTime<Local>> {
    let bad = || {
        exit::usage(format!(
            "--snapshot-time: '{s}' is neither RFC 3339 (2026-01-05T10:30:00Z) nor @EPOCH"
        ))
    };
    if let Some(secs) = s.strip_prefix('@') {
        let n: i64 = secs.parse().map_err(|_| bad())?;
        return Local.timestamp_opt(n, 0).single().ok_or_else(bad);
    }
    DateTime::parse_from_rfc3339(s)
        .map(|t| t.with_timezone(&Local))
        .map_err(|_| bad())
}

/// A fresh path in the temp dir for this process.
fn temp_path(what: &str) -> PathBuf {
    static N: AtomicU64 = AtomicU64::new(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    std::env::temp_dir().join(format!(
        "zrecv-wrap-pull-{}-{n}-{what}.json",
        std::process::id()
    ))
}

/// The `bytes` the meter wrote to its `--json` file (0 when unreadable).
fn read_meter_bytes(path: &PathBuf) -> u64 {
    std::fs::read_to_string(path)
        .ok()
        .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
        .and_then(|v| v.get("bytes").and_then(serde_json::Value::as_u64))
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(name: &str, txg: u64) -> SnapInfo {
        SnapInfo {
            name: format!("t/a@{name}"),
            guid: txg * 100,
            createtxg: txg,
            creation: 0,
            userrefs: 0,
            pulled: false,
        }
    }

    fn show(steps: &[Step]) -> Vec<String> {
        steps
            .iter()
            .map(|st| format!("{} {}", st.kind, serve::send_what_args(&st.what).join(" ")))
            .collect()
    }

    #[test]
    fn plans() {
        let src = [s("a", 1), s("b", 2), s("c", 3)];
        assert_eq!(
            show(&plan_steps(&src, None, false)),
            ["full t/a@a", "incremental -I t/a@a t/a@c"]
        );
        assert_eq!(show(&plan_steps(&src, None, true)), ["full t/a@c"]);
        assert_eq!(
            show(&plan_steps(&src, Some(&src[0]), false)),
            ["incremental -I t/a@a t/a@c"]
        );
        assert_eq!(
            show(&plan_steps(&src, Some(&src[0]), true)),
            ["incremental -i t/a@a t/a@c"]
        );
        assert_eq!(
            show(&plan_steps(&src, Some(&src[1]), false)),
            ["incremental -i t/a@b t/a@c"]
        );
        assert!(plan_steps(&src, Some(&src[2]), false).is_empty());
        assert_eq!(
            show(&plan_steps(&src[..2], None, false)),
            ["full t/a@a", "incremental -i t/a@a t/a@b"]
        );
        let steps = plan_steps(&src, Some(&src[0]), true);
        let got: Vec<String> = received_by(&steps, &src, Some(&src[0]))
            .iter()
            .map(|x| x.short_name().to_string())
            .collect();
        assert_eq!(got, ["c"]);
    }

    #[test]
    fn times() {
        assert_eq!(parse_time("@0").unwrap().timestamp(), 0);
        assert_eq!(
            parse_time("2026-01-05T10:30:00Z").unwrap().timestamp(),
            1_767_609_000
        );
        assert!(parse_time("yesterday").is_err());
    }
}
