//! `zsend-wrap --serve` behind a real sshd forced-command key: a table of
//! commands a client might try is refused (exit 1, one line, nothing run),
//! while `zrecv-wrap --from` works through the very same key, and source
//! pruning works only with `--allow-prune`.

use std::path::Path;
use std::process::{Command, Output, Stdio};
use zpipe_tests::{bin, require, shell_join, Pool, Sshd};

fn text(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// A forced-command key running serve mode with `flags`.
fn serve_key(sshd: &Sshd, flags: &str) -> std::path::PathBuf {
    sshd.add_key(&format!("restrict,command=\"zsend-wrap --serve {flags}\""))
        .unwrap()
}

fn ssh_line(sshd: &Sshd, key: &Path) -> String {
    let mut argv = vec!["ssh".to_string()];
    argv.extend(sshd.ssh_options_with_key(key));
    shell_join(&argv)
}

#[test]
fn serve_refuses_everything_but_pull_and_pull_works_through_the_same_key() {
    require!(zfs, sshd);
    let src = Pool::create().unwrap();
    let dst = Pool::create().unwrap();
    // Reading received files must not count as a change (atime).
    zpipe_tests::run_ok(Command::new(zpipe_tests::zfs::zfs_program()).args([
        "set",
        "atime=off",
        dst.name(),
    ]));
    let sshd = Sshd::start().unwrap();
    let ds = src.create_dataset("home");
    src.write_file(&ds, "f", b"home data");
    src.snapshot(&format!("{ds}@s1"));
    let other = src.create_dataset("other");
    src.write_file(&other, "secret", b"not for the backup");
    src.snapshot(&format!("{other}@s1"));
    let key = serve_key(&sshd, &format!("--allow {ds} --allow-snapshot"));
    let marker = src.dir().join("pwned");
    let m = marker.display();
    let list = |d: &str| {
        format!("zfs get -Hp -o name,property,value -d 1 guid,createtxg,creation,userrefs {d}")
    };
    let host = sshd.destination();
    let refused: Vec<(&str, String)> = vec![
        ("another dataset", list(&other)),
        ("a sibling with the same prefix", list(&format!("{ds}x"))),
        ("zfs list", "zfs list".into()),
        ("zfs get all", format!("zfs get all {ds}")),
        (
            "destroy without --allow-prune",
            format!("zfs destroy {ds}@s1"),
        ),
        ("recursive destroy", format!("zfs destroy -r {ds}")),
        ("a shell", "sh -c id".into()),
        ("a shell by path", format!("/bin/sh -c 'touch {m}'")),
        ("semicolon", format!("zfs send {ds}@s1; touch {m}")),
        ("pipe", format!("zfs send {ds}@s1 | touch {m}")),
        (
            "command substitution",
            format!("zfs send '{ds}@s1$(touch {m})'"),
        ),
        ("backticks", format!("zfs send {ds}@`touch {m}`")),
        ("newline", format!("zfs send {ds}@s1\ntouch {m}")),
        (
            "send of a non-allowed dataset",
            format!("zfs send {other}@s1"),
        ),
        (
            "zsend-wrap of a non-allowed dataset",
            format!("zsend-wrap {other}@s1"),
        ),
        (
            "zsend-wrap --to",
            format!("zsend-wrap --to {host}:x/y {ds}@s1"),
        ),
        (
            "zsend-wrap --ssh",
            format!("zsend-wrap --ssh 'touch {m}' {ds}@s1"),
        ),
        (
            "zsend-wrap --zfs",
            format!("zsend-wrap --zfs 'touch {m}' {ds}@s1"),
        ),
        (
            "ssh option injection",
            format!("zsend-wrap -o ProxyCommand=touch {ds}@s1"),
        ),
        ("option as snapshot", "zfs send -oProxyCommand=x".into()),
        ("rename", format!("zfs rename {ds}@s1 {ds}@s9")),
        ("snapshot elsewhere", format!("zfs snapshot {other}@new")),
        ("zfs recv", format!("zfs recv -F {ds}")),
        ("overlong", format!("zfs send {ds}@{}", "a".repeat(5000))),
        ("no command", String::new()),
    ];
    for (what, cmd) in &refused {
        let o = sshd
            .ssh_with_key(&key, cmd)
            .stdin(Stdio::null())
            .output()
            .unwrap();
        let err = text(&o);
        assert_eq!(o.status.code(), Some(1), "{what}: {err}");
        assert_eq!(err.lines().count(), 1, "{what}: {err}");
        assert!(
            err.starts_with("zsend-wrap: serve: refused"),
            "{what}: {err}"
        );
        assert!(o.stdout.is_empty(), "{what} printed something");
        assert!(!marker.exists(), "{what} ran a command");
    }
    assert_eq!(src.snapshots(&other).len(), 1);
    assert_eq!(src.snapshots(&ds).len(), 1);

    // The pull run, snapshot included, through the same key.
    let target = dst.ds("home");
    let ssh = ssh_line(&sshd, &key);
    let from = format!("{host}:{ds}");
    let pull = |ssh: &str, extra: &[&str]| {
        Command::new(bin("zrecv-wrap"))
            .args(["--quiet", "--ssh", ssh, "--from", &from])
            .args(["--snapshot", "zpipe-%Y%m%d-%H%M%S"])
            .env("TZ", "UTC")
            .args(extra)
            .arg(&target)
            .stdin(Stdio::null())
            .output()
            .unwrap()
    };
    let o = pull(&ssh, &["--snapshot-time", "2026-01-01T00:00:00Z"]);
    assert!(o.status.success(), "pull through serve: {}", text(&o));
    let got: Vec<(String, u64)> = dst
        .snapshots(&target)
        .into_iter()
        .map(|(n, g, _)| (n.split_once('@').unwrap().1.to_string(), g))
        .collect();
    let want: Vec<(String, u64)> = src
        .snapshots(&ds)
        .into_iter()
        .map(|(n, g, _)| (n.split_once('@').unwrap().1.to_string(), g))
        .collect();
    assert_eq!(got, want);
    assert_eq!(want[1].0, "zpipe-20260101-000000");
    assert!(dst.read_file(&target, "f") == b"home data");

    // Source pruning needs --allow-prune on the server…
    let prune = ["--prune-source-older-than", "30d"];
    let mut args = vec!["--snapshot-time", "2026-03-01T00:00:00Z"];
    args.extend(prune);
    let o = pull(&ssh, &args);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(text(&o).contains("--allow-prune"), "{}", text(&o));
    // …and works with it; the newest common snapshot stays.
    let key2 = serve_key(
        &sshd,
        &format!("--allow {ds} --allow-snapshot --allow-prune"),
    );
    let mut args = vec!["--snapshot-time", "2026-04-15T00:00:00Z"];
    args.extend(prune);
    let o = pull(&ssh_line(&sshd, &key2), &args);
    assert!(o.status.success(), "pull with pruning: {}", text(&o));
    let names: Vec<String> = src
        .snapshots(&ds)
        .into_iter()
        .map(|(n, _, _)| n.split_once('@').unwrap().1.to_string())
        .collect();
    assert_eq!(names, ["s1", "zpipe-20260415-000000"]);
}
