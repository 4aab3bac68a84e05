//! The stand-in `zfs` (tests/standin, docs/STANDIN-ZFS.md) against real
//! zfs-fuse: `send -nvP` sizes are the real stream lengths, a cut stream
//! into `recv -s` leaves a resume token, `send -t` + `recv -s` completes it
//! into the identical snapshot, `recv -A` clears it, and a new stream onto
//! partial state is refused with OpenZFS's text.

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use zpipe_tests::data::noise;
use zpipe_tests::{require, Pool};
use zrecv_wrap::token;

/// Size of the big file in the test dataset: the stream is a few MiB, so a
/// cut at half lands inside data records.
const BIG_FILE: usize = 3 << 20;

struct Env {
    pool: Pool,
    state: PathBuf,
}

impl Env {
    fn new() -> Env {
        let pool = Pool::create().expect("creating a zfs-fuse pool");
        let state = pool.dir().join("standin-state");
        Env { pool, state }
    }

    /// Runs the stand-in with `args`, feeding `input` on stdin from a thread.
    fn run(&self, args: &[&str], input: &[u8]) -> Output {
        let mut child = Command::new(env!("CARGO_BIN_EXE_zfs-standin"))
            .args(args)
            .env("ZPIPE_REAL_ZFS", zpipe_tests::zfs::zfs_program())
            .env("ZPIPE_STANDIN_STATE", &self.state)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("running zfs-standin");
        let mut stdin = child.stdin.take().unwrap();
        let data = input.to_vec();
        let feeder = std::thread::spawn(move || {
            let _ = stdin.write_all(&data);
        });
        let out = child.wait_with_output().unwrap();
        feeder.join().unwrap();
        out
    }

    fn ok(&self, args: &[&str], input: &[u8]) -> Output {
        let out = self.run(args, input);
        assert!(
            out.status.success(),
            "zfs-standin {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }

    fn token(&self, ds: &str) -> String {
        let out = self.ok(
            &["get", "-H", "-o", "value", "receive_resume_token", ds],
            b"",
        );
        String::from_utf8(out.stdout).unwrap().trim().to_string()
    }

    /// `src@s1` (big file) and `src@s2` (a second big file), full names.
    fn source(&self) -> (String, String, String) {
        let src = self.pool.create_dataset("src");
        self.pool.write_file(&src, "big", &noise(1, BIG_FILE));
        self.pool.write_file(&src, "small", b"hello\n");
        let s1 = self.pool.snapshot(&format!("{src}@s1"));
        self.pool.write_file(&src, "big2", &noise(2, BIG_FILE));
        let s2 = self.pool.snapshot(&format!("{src}@s2"));
        (src, s1, s2)
    }

    fn real_send(&self, args: &[&str]) -> Vec<u8> {
        let out = self.pool.zfs(args);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        out.stdout
    }
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn send_nvp_size_is_the_real_stream_length() {
    require!(zfs);
    let env = Env::new();
    let (_src, s1, s2) = env.source();
    let full = env.real_send(&["send", &s1]);
    let out = env.ok(&["send", "-nvP", &s1], b"");
    let text = String::from_utf8(out.stdout).unwrap();
    assert_eq!(
        text,
        format!("full\t{s1}\t{n}\nsize\t{n}\n", n = full.len()),
        "{text}"
    );

    let inc = env.real_send(&["send", "-i", &s1, &s2]);
    let at = format!("@{}", s1.split('@').nth(1).unwrap());
    let out = env.ok(&["send", "-nvP", "-i", &at, &s2], b"");
    let text = String::from_utf8(out.stdout).unwrap();
    assert_eq!(
        text,
        format!("incremental\t{s1}\t{s2}\t{n}\nsize\t{n}\n", n = inc.len())
    );

    let out = env.ok(&["send", "-nv", &s1], b"");
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        text.starts_with(&format!("full send of {s1} estimated size is ")),
        "{text}"
    );
    assert!(text.contains("total estimated size is "), "{text}");
}

#[test]
fn send_accepts_openzfs_stream_flags_and_sends_the_plain_stream() {
    require!(zfs);
    let env = Env::new();
    let (_src, s1, _s2) = env.source();
    let plain = env.real_send(&["send", &s1]);
    let out = env.ok(&["send", "-w", "-c", "-L", "-e", &s1], b"");
    assert_eq!(out.stdout.len(), plain.len());
    assert!(out.stdout == plain, "stream differs from the real one");
}

#[test]
fn cut_full_stream_leaves_a_token_and_send_t_completes_it() {
    require!(zfs);
    let env = Env::new();
    let (src, s1, _s2) = env.source();
    let dst = env.pool.ds("dst");
    assert_eq!(env.token(&src), "-");
    let full = env.real_send(&["send", &s1]);
    let cut = env.run(&["recv", "-s", &dst], &full[..full.len() / 2]);
    assert_eq!(cut.status.code(), Some(1), "{}", stderr(&cut));
    let err = stderr(&cut);
    assert!(
        err.starts_with("cannot receive new filesystem stream: checksum mismatch or incomplete stream.\nPartially received snapshot is saved.\n"),
        "{err}"
    );

    let tok = env.token(&dst);
    assert!(err.contains(&format!("    zfs send -t {tok}")), "{err}");
    let t = token::decode(&tok).unwrap();
    assert_eq!(t.toname, s1);
    assert_eq!(t.toguid, env.pool.guid(&s1));
    assert_eq!(t.fromguid, None);
    assert!(t.bytes > 0 && t.bytes <= full.len() as u64 / 2, "{t:?}");

    // The estimate of the resumed stream, then the stream itself.
    let est = env.ok(&["send", "-nvP", "-t", &tok], b"");
    let est = String::from_utf8(est.stdout).unwrap();
    assert!(
        est.starts_with("resume token contents:\nnvlist version: 0\n"),
        "{est}"
    );
    let resumed = env.ok(&["send", "-t", &tok], b"").stdout;
    assert!(
        est.ends_with(&format!("size\t{}\n", resumed.len())),
        "{est}"
    );
    assert!(resumed.len() < full.len());

    env.ok(&["recv", "-s", &dst], &resumed);
    let got = format!("{dst}@s1");
    assert_eq!(env.pool.guid(&got), env.pool.guid(&s1));
    assert_eq!(env.pool.read_file(&dst, "big"), noise(1, BIG_FILE));
    assert_eq!(env.pool.read_file(&dst, "small"), b"hello\n");
    assert_eq!(env.token(&dst), "-");
}

#[test]
fn cut_incremental_twice_then_complete() {
    require!(zfs);
    let env = Env::new();
    let (_src, s1, s2) = env.source();
    let dst = env.pool.ds("dst");
    env.ok(&["recv", &dst], &env.real_send(&["send", &s1]));
    let inc = env.real_send(&["send", "-i", &s1, &s2]);

    let cut = env.run(&["recv", "-s", &dst], &inc[..inc.len() / 3]);
    assert!(stderr(&cut).starts_with("cannot receive incremental stream: checksum mismatch"));
    let t1 = env.token(&dst);
    assert_eq!(
        token::decode(&t1).unwrap().fromguid,
        Some(env.pool.guid(&s1))
    );

    // The resumed stream is cut again: the state moves forward.
    let resumed = env.ok(&["send", "-t", &t1], b"").stdout;
    let cut = env.run(&["recv", "-s", &dst], &resumed[..resumed.len() / 2]);
    assert_eq!(cut.status.code(), Some(1), "{}", stderr(&cut));
    let t2 = env.token(&dst);
    assert!(token::decode(&t2).unwrap().bytes > token::decode(&t1).unwrap().bytes);

    env.ok(
        &["recv", "-s", &dst],
        &env.ok(&["send", "-t", &t2], b"").stdout,
    );
    assert_eq!(env.pool.guid(&format!("{dst}@s2")), env.pool.guid(&s2));
    assert_eq!(env.pool.read_file(&dst, "big2"), noise(2, BIG_FILE));
    assert_eq!(env.token(&dst), "-");
}

#[test]
fn new_stream_onto_partial_state_is_refused_until_recv_a() {
    require!(zfs);
    let env = Env::new();
    let (_src, s1, _s2) = env.source();
    let dst = env.pool.ds("dst");
    let full = env.real_send(&["send", &s1]);
    env.run(&["recv", "-s", &dst], &full[..full.len() / 2]);

    let again = env.run(&["recv", "-F", &dst], &full);
    assert_eq!(again.status.code(), Some(1));
    assert_eq!(
        stderr(&again).trim_end(),
        format!("cannot receive new filesystem stream: destination {dst} contains partially-complete state from \"zfs receive -s\".")
    );

    env.ok(&["recv", "-A", &dst], b"");
    // The partial filesystem of a full receive goes away, as in OpenZFS.
    assert!(!env.pool.zfs(["list", dst.as_str()]).status.success());
    env.ok(&["recv", &dst], &full);
    assert_eq!(env.pool.guid(&format!("{dst}@s1")), env.pool.guid(&s1));

    let none = env.run(&["recv", "-A", &dst], b"");
    assert_eq!(none.status.code(), Some(1));
    assert_eq!(
        stderr(&none).trim_end(),
        format!("'{dst}' does not have any resumable receive state to abort")
    );
}

#[test]
fn recv_a_on_incremental_keeps_the_dataset() {
    require!(zfs);
    let env = Env::new();
    let (_src, s1, s2) = env.source();
    let dst = env.pool.ds("dst");
    env.ok(&["recv", &dst], &env.real_send(&["send", &s1]));
    let inc = env.real_send(&["send", "-i", &s1, &s2]);
    env.run(&["recv", "-s", &dst], &inc[..inc.len() / 2]);
    assert_ne!(env.token(&dst), "-");
    env.ok(&["recv", "-A", &dst], b"");
    assert_eq!(env.token(&dst), "-");
    assert_eq!(env.pool.guid(&format!("{dst}@s1")), env.pool.guid(&s1));
    env.ok(&["recv", &dst], &inc);
}

#[test]
fn send_t_reports_a_missing_snapshot_like_openzfs() {
    require!(zfs);
    let env = Env::new();
    let (_src, s1, _s2) = env.source();
    let dst = env.pool.ds("dst");
    let full = env.real_send(&["send", &s1]);
    env.run(&["recv", "-s", &dst], &full[..full.len() / 2]);
    let tok = env.token(&dst);
    let out = env.pool.zfs(["destroy", s1.as_str()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let gone = env.run(&["send", "-t", &tok], b"");
    assert_eq!(gone.status.code(), Some(1));
    assert_eq!(
        stderr(&gone).trim_end(),
        format!("cannot resume send: '{s1}' used in the initial send no longer exists")
    );
    let bad = env.run(&["send", "-t", "1-0-0-zz"], b"");
    assert!(stderr(&bad).starts_with("cannot resume send: resume token is corrupt ("));
}

#[test]
fn get_formats_the_token_property() {
    require!(zfs);
    let env = Env::new();
    let (src, _s1, _s2) = env.source();
    let out = env.ok(
        &[
            "get",
            "-Hp",
            "-o",
            "name,property,value,source",
            "receive_resume_token,type",
            &src,
        ],
        b"",
    );
    assert_eq!(
        String::from_utf8(out.stdout).unwrap(),
        format!("{src}\treceive_resume_token\t-\t-\n{src}\ttype\tfilesystem\t-\n")
    );
    let out = env.ok(&["get", "receive_resume_token", &src], b"");
    let text = String::from_utf8(out.stdout).unwrap();
    let mut lines = text.lines();
    assert!(lines.next().unwrap().starts_with("NAME"));
    assert!(lines.next().unwrap().contains("receive_resume_token"));
    // Without the property the real zfs answers alone.
    let out = env.ok(&["get", "-H", "-o", "value", "type", &src], b"");
    assert_eq!(out.stdout, b"filesystem\n");
}

/// The wrappers detect OpenZFS features from these usage texts.
#[test]
fn usage_texts_advertise_the_openzfs_flags() {
    let run = |verb: &str| {
        let out = Command::new(env!("CARGO_BIN_EXE_zfs-standin"))
            .arg(verb)
            .env("ZPIPE_REAL_ZFS", "/nonexistent/zfs")
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2));
        String::from_utf8(out.stderr).unwrap()
    };
    let send = run("send");
    assert!(
        send.starts_with("missing snapshot argument\nusage:\n\tsend [-DLPbcehnpsVvw]"),
        "{send}"
    );
    assert!(
        send.contains("\tsend [-nVvPe] -t <receive_resume_token>\n"),
        "{send}"
    );
    let recv = run("receive");
    assert!(recv.contains("\treceive [-vMnsFhu]"), "{recv}");
    assert!(
        recv.contains("\treceive -A <filesystem|volume>\n"),
        "{recv}"
    );
}
