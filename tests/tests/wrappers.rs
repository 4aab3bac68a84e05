//! zsend-wrap and zrecv-wrap against real zfs-fuse pools, locally and
//! through the kit's real loopback sshd: full, -i and -I chains, recv -F,
//! restores, missing snapshots, wrong targets, odd names, and names that
//! try to reach a shell.

use std::path::Path;
use std::process::{Command, Output, Stdio};
use zpipe_tests::{bin, require, Pool, Sshd};

/// Runs `zsend-wrap <send>` piped into `zrecv-wrap <recv>`; returns both outputs.
fn pipe(send: &[&str], recv: &[&str]) -> (Output, Output) {
    let mut s = Command::new(bin("zsend-wrap"))
        .args(send)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let r = Command::new(bin("zrecv-wrap"))
        .args(recv)
        .stdin(s.stdout.take().unwrap())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let r = r.wait_with_output().unwrap();
    let s = s.wait_with_output().unwrap();
    (s, r)
}

fn text(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn assert_ok(what: &str, o: &Output) {
    assert!(
        o.status.success(),
        "{what} failed ({}): {}",
        o.status,
        text(o)
    );
}

fn data(seed: u32, len: usize) -> Vec<u8> {
    (0..len as u32)
        .map(|i| (i.wrapping_mul(2654435761).wrapping_add(seed) >> 13) as u8)
        .collect()
}

/// Short names (after `@`) of a dataset's snapshots, oldest first.
fn snap_names(pool: &Pool, ds: &str) -> Vec<String> {
    pool.snapshots(ds)
        .into_iter()
        .map(|(n, _, _)| n.split_once('@').unwrap().1.to_string())
        .collect()
}

#[test]
fn full_then_incremental_chains_keep_guids_and_data() {
    require!(zfs);
    let src = Pool::create().unwrap();
    let dst = Pool::create().unwrap();
    let ds = src.create_dataset("home");
    src.write_file(&ds, "a.bin", &data(1, 3 << 20));
    let s1 = src.snapshot(&format!("{ds}@s1"));
    src.write_file(&ds, "b.bin", &data(2, 1 << 20));
    let s2 = src.snapshot(&format!("{ds}@s2"));
    src.write_file(&ds, "c.bin", &data(3, 1 << 20));
    let s3 = src.snapshot(&format!("{ds}@s3"));
    src.write_file(&ds, "d.bin", &data(4, 1 << 20));
    let s4 = src.snapshot(&format!("{ds}@s4"));
    let target = dst.ds("backup");

    let (s, r) = pipe(&["--quiet", &s1], &["--quiet", &target]);
    assert_ok("full send", &s);
    assert_ok("full receive", &r);
    assert_eq!(dst.guid(&format!("{target}@s1")), src.guid(&s1));

    let (s, r) = pipe(&["--quiet", "-i", &s1, &s2], &["--quiet", &target]);
    assert_ok("-i send", &s);
    assert_ok("-i receive", &r);

    // -I brings every intermediate snapshot.
    let (s, r) = pipe(&["--quiet", "-I", &s2, &s4], &["--quiet", &target]);
    assert_ok("-I send", &s);
    assert_ok("-I receive", &r);
    assert_eq!(snap_names(&dst, &target), ["s1", "s2", "s3", "s4"]);
    for (snap, name) in [(&s2, "s2"), (&s3, "s3"), (&s4, "s4")] {
        assert_eq!(dst.guid(&format!("{target}@{name}")), src.guid(snap));
    }
    for f in ["a.bin", "b.bin", "c.bin", "d.bin"] {
        assert!(
            dst.read_file(&target, f) == src.read_file(&ds, f),
            "{f} differs"
        );
    }
}

#[test]
fn force_rolls_back_a_changed_destination_and_restore_returns_data() {
    require!(zfs);
    let src = Pool::create().unwrap();
    let dst = Pool::create().unwrap();
    let ds = src.create_dataset("data");
    src.write_file(&ds, "f", &data(5, 500_000));
    let s1 = src.snapshot(&format!("{ds}@s1"));
    src.write_file(&ds, "g", &data(6, 200_000));
    let s2 = src.snapshot(&format!("{ds}@s2"));
    let target = dst.ds("copy");
    let (s, r) = pipe(&["--quiet", &s1], &["--quiet", &target]);
    assert_ok("send", &s);
    assert_ok("receive", &r);

    // Someone changes the destination: a plain incremental is refused by zfs…
    dst.write_file(&target, "stray", b"changed on the backup");
    let (s, r) = pipe(&["--quiet", "-i", &s1, &s2], &["--quiet", &target]);
    assert_eq!(r.status.code(), Some(4), "{}", text(&r));
    assert!(text(&r).contains("zfs receive"), "{}", text(&r));
    assert!(text(&r).contains("modified"), "{}", text(&r));
    drop(s);
    // …and -F rolls it back first.
    let (s, r) = pipe(&["--quiet", "-i", &s1, &s2], &["--quiet", "-F", &target]);
    assert_ok("send", &s);
    assert_ok("receive -F", &r);
    let names: Vec<String> = std::fs::read_dir(dst.mountpoint().join("copy"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(!names.iter().any(|n| n == "stray"), "{names:?}");
    assert!(dst.read_file(&target, "g") == data(6, 200_000));

    // Restore: send the backup's snapshot back to the source pool.
    let restored = src.ds("restored");
    let (s, r) = pipe(
        &["--quiet", &format!("{target}@s2")],
        &["--quiet", &restored],
    );
    assert_ok("restore send", &s);
    assert_ok("restore receive", &r);
    assert_eq!(src.guid(&format!("{restored}@s2")), src.guid(&s2));
    assert!(src.read_file(&restored, "f") == data(5, 500_000));
}

#[test]
fn missing_snapshot_aborts_the_stream_with_zfs_error_text() {
    require!(zfs);
    let src = Pool::create().unwrap();
    let dst = Pool::create().unwrap();
    let ds = src.create_dataset("data");
    let missing = format!("{ds}@does-not-exist");
    let (s, r) = pipe(&["--quiet", &missing], &["--quiet", &dst.ds("x")]);
    assert_eq!(s.status.code(), Some(4), "{}", text(&s));
    assert!(text(&s).starts_with("zsend-wrap: "), "{}", text(&s));
    assert!(text(&s).contains("does not exist"), "{}", text(&s));
    // The receiver saw the ABORT trailer: an integrity failure with zfs's words.
    assert_eq!(r.status.code(), Some(2), "{}", text(&r));
    assert!(text(&r).contains("abort"), "{}", text(&r));
    assert!(text(&r).contains("does not exist"), "{}", text(&r));
    assert!(!zpipe_tests::zfs::zfs(["list", &dst.ds("x")])
        .status
        .success());
}

#[test]
fn wrong_target_fails_with_zfs_words_and_stops_the_sender() {
    require!(zfs);
    let src = Pool::create().unwrap();
    let ds = src.create_dataset("data");
    // More than every pipe between the two can hold, so the sender must
    // notice that nobody reads any more.
    let mut noise = vec![0u8; 24 << 20];
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    for b in noise.iter_mut() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        *b = x as u8;
    }
    src.write_file(&ds, "f", &noise);
    let s1 = src.snapshot(&format!("{ds}@s1"));
    let (s, r) = pipe(
        &["--quiet", "--compress", "off", &s1],
        &["--quiet", "nosuchpool-zpipe/x"],
    );
    assert_eq!(r.status.code(), Some(4), "{}", text(&r));
    assert!(text(&r).contains("nosuchpool-zpipe"), "{}", text(&r));
    assert_eq!(text(&r).lines().count(), 1, "{}", text(&r));
    // The sender sees its downstream close: exit 3, and zfs send is stopped.
    assert_eq!(s.status.code(), Some(3), "{}", text(&s));
}

#[test]
fn unsupported_flags_are_refused_before_data_moves() {
    require!(zfs);
    let src = Pool::create().unwrap();
    let ds = src.create_dataset("data");
    let s1 = src.snapshot(&format!("{ds}@s1"));
    // zfs-fuse speaks the old CLI: no raw sends.
    let o = Command::new(bin("zsend-wrap"))
        .args(["--quiet", "-w", &s1])
        .stdout(Stdio::piped())
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(text(&o).contains("-w"), "{}", text(&o));
    assert!(o.stdout.is_empty());
}

#[test]
fn bare_zfs_stream_needs_explicit_consent() {
    require!(zfs);
    let src = Pool::create().unwrap();
    let dst = Pool::create().unwrap();
    let ds = src.create_dataset("data");
    src.write_file(&ds, "f", b"plain");
    let s1 = src.snapshot(&format!("{ds}@s1"));
    let stream = zpipe_tests::zfs::zfs(["send", &s1]).stdout;
    let run = |extra: &[&str]| {
        let mut c = Command::new(bin("zrecv-wrap"))
            .args(extra)
            .arg(dst.ds("bare"))
            .stdin(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut stdin = c.stdin.take().unwrap();
        let s = stream.clone();
        let t = std::thread::spawn(move || {
            use std::io::Write;
            let _ = stdin.write_all(&s);
        });
        let o = c.wait_with_output().unwrap();
        t.join().unwrap();
        o
    };
    let o = run(&["--quiet"]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(text(&o).contains("--allow-unverified"));
    let o = run(&["--quiet", "--allow-unverified"]);
    assert_ok("bare receive", &o);
    assert_eq!(dst.guid(&dst.ds("bare@s1")), src.guid(&s1));
}

/// `zsend-wrap --to` through the real sshd with `--ssh` from the kit.
fn send_to(sshd: &Sshd, send: &[&str], target: &str, recv_args: &[&str]) -> Output {
    let mut args: Vec<String> = vec!["--quiet".into(), "--ssh".into(), ssh_command(sshd)];
    args.push("--remote-zrecv".into());
    args.push(bin("zrecv-wrap").display().to_string());
    for a in recv_args {
        args.push(format!("--recv-arg={a}"));
    }
    args.extend(send.iter().map(|s| s.to_string()));
    args.push("--to".into());
    args.push(format!("{}:{target}", sshd.destination()));
    Command::new(bin("zsend-wrap"))
        .args(&args)
        .stdout(Stdio::piped())
        .output()
        .unwrap()
}

/// The kit's ssh argv without the destination, as one `--ssh` string.
fn ssh_command(sshd: &Sshd) -> String {
    let mut argv = vec!["ssh".to_string()];
    argv.extend(sshd.ssh_options());
    zpipe_tests::shell_join(&argv)
}

#[test]
fn send_to_over_ssh_with_odd_names() {
    require!(zfs, sshd);
    let src = Pool::create().unwrap();
    let dst = Pool::create().unwrap();
    let sshd = Sshd::start().unwrap();
    for (i, name) in ["my data", "colon:dots.dash-1", "under_score. x"]
        .iter()
        .enumerate()
    {
        let ds = src.create_dataset(name);
        src.write_file(&ds, "f", &data(i as u32, 700_000));
        let s1 = src.snapshot(&format!("{ds}@snap one"));
        src.write_file(&ds, "g", &data(i as u32 + 10, 100_000));
        let s2 = src.snapshot(&format!("{ds}@snap:two"));
        let target = dst.ds(&format!("copy {name}"));
        let o = send_to(&sshd, &[&s1], &target, &["--quiet"]);
        assert_ok(&format!("send of {name}"), &o);
        let o = send_to(&sshd, &["-i", &s1, &s2], &target, &["--quiet"]);
        assert_ok(&format!("incremental send of {name}"), &o);
        assert_eq!(dst.guid(&format!("{target}@snap:two")), src.guid(&s2));
        assert!(dst.read_file(&target, "g") == data(i as u32 + 10, 100_000));
    }
}

#[test]
fn unicode_target_gets_zfs_own_refusal_intact() {
    // ZFS allows only ASCII letters, digits and "-_.: " in names; a unicode
    // name must come back as zfs's own error, with the name unmangled.
    require!(zfs, sshd);
    let src = Pool::create().unwrap();
    let dst = Pool::create().unwrap();
    let sshd = Sshd::start().unwrap();
    let ds = src.create_dataset("data");
    let s1 = src.snapshot(&format!("{ds}@s1"));
    let target = dst.ds("ünïcødé ds");
    let o = send_to(&sshd, &[&s1], &target, &["--quiet"]);
    assert_eq!(o.status.code(), Some(4), "{}", text(&o));
    assert!(text(&o).contains("ünïcødé ds"), "{}", text(&o));
}

#[test]
fn names_that_reach_for_a_shell_run_nothing() {
    require!(zfs, sshd);
    let src = Pool::create().unwrap();
    let dst = Pool::create().unwrap();
    let sshd = Sshd::start().unwrap();
    let ds = src.create_dataset("data");
    src.write_file(&ds, "f", b"x");
    let s1 = src.snapshot(&format!("{ds}@s1"));
    let marker = dst.dir().join("pwned");
    let m = marker.display().to_string();
    for evil in [
        format!("a$(touch {m})b"),
        format!("a;touch {m}"),
        format!("a`touch {m}`b"),
        format!("a' ; touch {m}; '"),
        format!("a|touch {m}"),
    ] {
        let target = format!("{}/{evil}", dst.name());
        let o = send_to(&sshd, &[&s1], &target, &["--quiet"]);
        assert!(!o.status.success(), "{evil}: zfs should refuse the name");
        assert!(!Path::new(&marker).exists(), "{evil} ran a command");
        // The remote error (zfs's own words about the name) reaches us.
        assert!(
            text(&o).contains("zrecv-wrap") || text(&o).contains("remote"),
            "{}",
            text(&o)
        );
    }
}
