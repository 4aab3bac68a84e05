//! Shell injection: dataset names, snapshot names, host strings and
//! serve-mode commands carrying `$()`, backticks, `;`, `|`, `&&`, `||`,
//! `&`, quotes, redirections, spaces and newlines never run a command. Each
//! evil word embeds a command that would create a canary file; the tests
//! check the canary never appears and that the word reached `zfs`/`ssh`/the
//! remote tool intact, as ONE argv word (so nothing was split or
//! interpreted on the way).
//!
//! `zfs`, the remote `zrecv-wrap` and the remote `zfs` are recording
//! stand-ins (shell scripts that log their argv), so no pool is needed.
//! Locally a stand-in `ssh` does what sshd does with the remote command:
//! hands it to `sh -c`. Through the kit's real loopback sshd, the remote
//! user's real login shell parses it. Existing tests cover the rest:
//! serve.rs (refusals through a forced-command key, with zfs-fuse) and
//! wrappers.rs (`--to` targets that zfs-fuse then refuses).

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use zpipe_tests::{bin, require, shell_join, Sshd};

/// A scratch directory with a canary path and recording stand-ins.
struct Scene {
    dir: tempfile::TempDir,
}

impl Scene {
    fn new() -> Scene {
        let dir = tempfile::Builder::new()
            .prefix("zpipe-hostile-")
            .tempdir()
            .unwrap();
        let s = Scene { dir };
        // Every stand-in logs its argv (NUL after each word, \x01 after
        // each call) and swallows stdin so a stream writer never blocks.
        for name in ["zfs", "remote-zfs", "remote-zrecv"] {
            s.script(
                name,
                &format!(
                    "#!/bin/sh\n{{ printf '%s\\0' \"$@\"; printf '\\001'; }} >> '{}'\ncat > /dev/null\nexit 1\n",
                    s.log(name).display()
                ),
            );
        }
        // ssh: log argv, then run the last argument like sshd does.
        s.script(
            "ssh",
            &format!(
                "#!/bin/sh\n{{ printf '%s\\0' \"$@\"; printf '\\001'; }} >> '{}'\nfor last; do :; done\nexec sh -c \"$last\"\n",
                s.log("ssh").display()
            ),
        );
        s
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn log(&self, name: &str) -> PathBuf {
        self.path(&format!("{name}.log"))
    }

    fn script(&self, name: &str, body: &str) {
        let p = self.path(name);
        zpipe_tests::write_script(&p, body).unwrap();
    }

    fn program(&self, name: &str) -> String {
        self.path(name).display().to_string()
    }

    /// The file a successful injection would create.
    fn canary(&self) -> PathBuf {
        self.path("CANARY")
    }

    /// Every call a stand-in recorded: its argv words.
    fn calls(&self, name: &str) -> Vec<Vec<String>> {
        let Ok(bytes) = std::fs::read(self.log(name)) else {
            return Vec::new();
        };
        bytes
            .split(|&b| b == 1)
            .filter(|c| !c.is_empty())
            .map(|c| {
                c.split(|&b| b == 0)
                    .filter(|w| !w.is_empty())
                    .map(|w| String::from_utf8_lossy(w).into_owned())
                    .collect()
            })
            .collect()
    }

    fn clear(&self) {
        for name in ["zfs", "remote-zfs", "remote-zrecv", "ssh"] {
            let _ = std::fs::remove_file(self.log(name));
        }
    }

    /// Words that would run `touch CANARY` (or create it by redirection)
    /// if any shell interpreted them.
    fn evil_words(&self) -> Vec<String> {
        let c = self.canary().display().to_string();
        vec![
            format!("a$(touch {c})b"),
            format!("a`touch {c}`b"),
            format!("a;touch {c}"),
            format!("a|touch {c}"),
            format!("a&&touch {c}"),
            format!("a||touch {c}"),
            format!("a&touch {c}&"),
            format!("a' ; touch {c}; '"),
            format!("a\" ; touch {c}; \""),
            format!("a\ntouch {c}"),
            format!("a b;touch {c} #"),
            format!("a>{c}"),
            format!("a;${{IFS}}touch${{IFS}}{c}"),
        ]
    }
}

fn text(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// True when some recorded call has `word` as one of its words.
fn has_word(calls: &[Vec<String>], word: &str) -> bool {
    calls.iter().any(|c| c.iter().any(|w| w == word))
}

#[test]
fn evil_snapshot_names_reach_zfs_send_as_one_word() {
    let s = Scene::new();
    for evil in s.evil_words() {
        s.clear();
        let snap = format!("pool/fs@{evil}");
        let o = Command::new(bin("zsend-wrap"))
            .args(["--quiet", "--zfs", &s.program("zfs"), &snap])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .output()
            .unwrap();
        assert!(!o.status.success(), "{evil:?}: {}", text(&o));
        assert!(!s.canary().exists(), "{evil:?} ran a command");
        assert!(
            has_word(&s.calls("zfs"), &snap),
            "{evil:?}: zfs never got the name intact: {:?}",
            s.calls("zfs")
        );
    }
}

#[test]
fn evil_target_names_reach_zfs_receive_as_one_word() {
    let s = Scene::new();
    // A valid framed stream, so zrecv-wrap goes as far as `zfs receive`.
    let mut stream = Vec::new();
    let mut e = zpipe_verify::Encoder::new(&mut stream, &Default::default()).unwrap();
    e.write_all(b"not really zfs").unwrap();
    e.finish().unwrap();
    for evil in s.evil_words() {
        s.clear();
        let target = format!("pool/{evil}");
        let mut child = Command::new(bin("zrecv-wrap"))
            .args(["--quiet", "--zfs", &s.program("zfs"), &target])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut stdin = child.stdin.take().unwrap();
        let _ = std::io::Write::write_all(&mut stdin, &stream);
        drop(stdin);
        let o = child.wait_with_output().unwrap();
        assert!(!o.status.success(), "{evil:?}: {}", text(&o));
        assert!(!s.canary().exists(), "{evil:?} ran a command");
        assert!(
            has_word(&s.calls("zfs"), &target),
            "{evil:?}: zfs never got the target intact: {:?} ({})",
            s.calls("zfs"),
            text(&o)
        );
    }
}

/// `zsend-wrap … --to HOST:DATASET` through `ssh_line`; the remote
/// zrecv-wrap is the recording stand-in.
fn send_to(s: &Scene, ssh_line: &str, to: &str) -> Output {
    Command::new(bin("zsend-wrap"))
        .args(["--quiet", "--zfs", &s.program("zfs"), "--ssh", ssh_line])
        .args(["--remote-zrecv", &s.program("remote-zrecv")])
        .args(["pool/fs@s1", "--to", to])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .output()
        .unwrap()
}

/// `zrecv-wrap --from HOST:DATASET` through `ssh_line`; the remote zfs is
/// the recording stand-in.
fn pull_from(s: &Scene, ssh_line: &str, from: &str) -> Output {
    Command::new(bin("zrecv-wrap"))
        .args(["--quiet", "--zfs", &s.program("zfs"), "--ssh", ssh_line])
        .args(["--remote-zfs", &s.program("remote-zfs")])
        .args(["--from", from, "pool/copy"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .output()
        .unwrap()
}

#[test]
fn evil_remote_datasets_and_hosts_are_quoted_once_for_the_remote_shell() {
    let s = Scene::new();
    let ssh = s.program("ssh");
    let evil = s.evil_words();
    // --to: every evil word is its own remote word (--recv-arg), and the
    // dataset is evil too; all go into the one remote command line.
    let ds = format!("pool/{}", evil[0]);
    s.clear();
    let o = Command::new(bin("zsend-wrap"))
        .args(["--quiet", "--zfs", &s.program("zfs"), "--ssh", &ssh])
        .args(["--remote-zrecv", &s.program("remote-zrecv")])
        .args(evil.iter().map(|e| format!("--recv-arg={e}")))
        .args(["pool/fs@s1", "--to", &format!("host:{ds}")])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .output()
        .unwrap();
    assert!(!s.canary().exists(), "--to ran a command");
    let calls = s.calls("remote-zrecv");
    assert!(has_word(&calls, &ds), "{calls:?} ({})", text(&o));
    for e in &evil {
        assert!(
            has_word(&calls, e),
            "--recv-arg {e:?} not intact: {calls:?}"
        );
    }
    // --from: the dataset goes into the remote zfs command line.
    for ds in [
        format!("pool/{}", evil[0]),
        format!("pool/{}", evil.concat()),
    ] {
        s.clear();
        let o = pull_from(&s, &ssh, &format!("host:{ds}"));
        assert!(!s.canary().exists(), "--from {ds:?} ran a command");
        let calls = s.calls("remote-zfs");
        assert!(
            has_word(&calls, &ds),
            "--from {ds:?}: {calls:?} ({})",
            text(&o)
        );
    }
    // The host is ssh's own argv word, never part of a command line.
    let host = format!("u@{}", evil.concat()).replace('/', "");
    s.clear();
    let _ = send_to(&s, &ssh, &format!("{host}:pool/x"));
    assert!(!s.canary().exists(), "--to host ran a command");
    let calls = s.calls("ssh");
    assert!(has_word(&calls, &host), "--to host: {calls:?}");
    s.clear();
    let _ = pull_from(&s, &ssh, &format!("{host}:pool/x"));
    assert!(!s.canary().exists(), "--from host ran a command");
    let calls = s.calls("ssh");
    assert!(has_word(&calls, &host), "--from host: {calls:?}");
}

#[test]
fn evil_remote_datasets_through_the_real_sshd_run_nothing() {
    require!(sshd);
    let s = Scene::new();
    let sshd = Sshd::start().unwrap();
    let mut argv = vec!["ssh".to_string()];
    argv.extend(sshd.ssh_options());
    let ssh = shell_join(&argv);
    let dest = sshd.destination();
    let evil = s.evil_words();
    // Two connections: every evil word rides along as its own remote word
    // (--recv-arg), and the dataset names are evil too.
    let ds = format!("pool/{}", evil[0]);
    s.clear();
    let o = Command::new(bin("zsend-wrap"))
        .args(["--quiet", "--zfs", &s.program("zfs"), "--ssh", &ssh])
        .args(["--remote-zrecv", &s.program("remote-zrecv")])
        .args(evil.iter().map(|e| format!("--recv-arg={e}")))
        .args(["pool/fs@s1", "--to", &format!("{dest}:{ds}")])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .output()
        .unwrap();
    assert!(!s.canary().exists(), "--to ran a command");
    let calls = s.calls("remote-zrecv");
    assert!(has_word(&calls, &ds), "{calls:?} ({})", text(&o));
    for e in &evil {
        assert!(has_word(&calls, e), "{e:?} not intact: {calls:?}");
    }
    let ds = format!("pool/{}", evil[1..].concat());
    s.clear();
    let o = pull_from(&s, &ssh, &format!("{dest}:{ds}"));
    assert!(!s.canary().exists(), "--from ran a command");
    let calls = s.calls("remote-zfs");
    assert!(has_word(&calls, &ds), "{calls:?} ({})", text(&o));
}

/// Runs serve mode locally with `SSH_ORIGINAL_COMMAND=command`.
fn serve(s: &Scene, command: &str) -> Output {
    Command::new(bin("zsend-wrap"))
        .args(["--serve", "--allow", "tank/home", "--allow", "tank/my ds"])
        .args(["--allow-snapshot", "--allow-prune"])
        .args(["--zfs", &s.program("zfs")])
        .env("SSH_ORIGINAL_COMMAND", command)
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

#[test]
fn serve_mode_refuses_every_shell_construct_and_runs_nothing() {
    let s = Scene::new();
    let c = s.canary().display().to_string();
    let refused = [
        format!("zfs send tank/home@a; touch {c}"),
        format!("zfs send tank/home@a;touch {c}"),
        format!("zfs send tank/home@a && touch {c}"),
        format!("zfs send tank/home@a || touch {c}"),
        format!("zfs send tank/home@a | touch {c}"),
        format!("zfs send tank/home@a & touch {c}"),
        format!("zfs send tank/home@a > {c}"),
        format!("zfs send tank/home@a < {c}"),
        format!("zfs send tank/home@$(touch {c})"),
        format!("zfs send \"tank/home@a$(touch {c})\""),
        format!("zfs send tank/home@`touch {c}`"),
        format!("zfs send 'tank/home@a'\"; touch {c}\""),
        format!("zfs send 'tank/home@a; touch {c}'"),
        format!("zfs send tank/home@a\ntouch {c}"),
        format!("zfs send tank/home@a\rtouch {c}"),
        format!("zfs send tank/home@a #; touch {c}"),
        format!("zfs snapshot tank/home@a${{IFS}}b;touch${{IFS}}{c}"),
        format!("zfs send -t $(touch {c})"),
        format!("zfs send -nvP tank/home@a;touch {c}"),
        format!("zfs destroy 'tank/home@a' ';' touch {c}"),
        format!("zsend-wrap --zfs 'touch {c}' tank/home@a"),
        format!("zsend-wrap --ssh 'touch {c}' tank/home@a"),
        format!("zsend-wrap --compress \"3;touch {c}\" tank/home@a"),
        format!("sh -c 'touch {c}'"),
        format!("touch {c}"),
        format!("./zfs send tank/home@a; touch {c}"),
        format!("{} send tank/home@a", s.program("zfs")),
        "zfs send 'tank/home@a".to_string(),
        String::new(),
        format!("zfs send tank/home@{}", "a".repeat(100_000)),
    ];
    for cmd in &refused {
        let o = serve(&s, cmd);
        let err = text(&o);
        let what: String = cmd.chars().take(80).collect();
        assert_eq!(o.status.code(), Some(1), "{what:?}: {err}");
        assert_eq!(err.lines().count(), 1, "{what:?}: {err}");
        assert!(
            err.starts_with("zsend-wrap: serve: refused"),
            "{what:?}: {err}"
        );
        assert!(err.len() < 1024, "{what:?}: the log line is not bounded");
        assert!(!s.canary().exists(), "{what:?} ran a command");
        assert!(s.calls("zfs").is_empty(), "{what:?} ran zfs");
    }
}

#[test]
fn serve_mode_passes_names_with_spaces_as_one_word() {
    let s = Scene::new();
    for (cmd, want) in [
        (
            "zfs snapshot 'tank/my ds/x@snap one'",
            vec!["snapshot", "tank/my ds/x@snap one"],
        ),
        (
            "zfs destroy \"tank/my ds@old snap\"",
            vec!["destroy", "tank/my ds@old snap"],
        ),
        (
            "zfs send -i 'tank/my ds@a b' 'tank/my ds@c:d'",
            vec!["send", "-i", "tank/my ds@a b", "tank/my ds@c:d"],
        ),
    ] {
        s.clear();
        let o = serve(&s, cmd);
        // The stand-in fails (exit 1), after being run with the words.
        assert_eq!(o.status.code(), Some(4), "{cmd}: {}", text(&o));
        assert_eq!(s.calls("zfs"), [want], "{cmd}");
    }
}

#[test]
fn recorder_sees_what_a_shell_would_have_split() {
    // Self-test of the stand-ins: one call, words kept whole.
    let s = Scene::new();
    let o = Command::new(s.program("zfs"))
        .args(["a b", "c\nd", "$(x)"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1));
    assert_eq!(s.calls("zfs"), [vec!["a b", "c\nd", "$(x)"]]);
    assert!(Path::new(&s.log("zfs")).exists());
}
