//! Self-tests of the test kit: pools are destroyed even when a test panics,
//! names are unique, stale pools are swept, sshd is reachable with the
//! kit's PATH and forced commands, and network namespaces are shaped to the
//! configured rate and deleted.

use std::path::PathBuf;
use std::process::Command;
use std::sync::Mutex;
use std::time::Duration;
use zpipe_tests::{bin_dir, netns, require, run_ok, zfs, Netns, Pool, Sshd};

/// Env var that makes [`child_panics_holding_a_pool`] do its work.
const CHILD_ENV: &str = "ZPIPE_KIT_SELFTEST_CHILD";

/// Runs the ignored test `name` of this binary alone, in a child process,
/// with `env` naming the file it reports to.
fn run_child_test(name: &str, env: &str, report: &std::path::Path) -> std::process::Output {
    Command::new(std::env::current_exe().unwrap())
        .args(["--ignored", "--exact", name])
        .args(["--test-threads", "1"])
        .env(env, report)
        .output()
        .unwrap()
}

fn pool_exists(name: &str) -> bool {
    zfs::pools().iter().any(|p| p == name)
}

#[test]
fn pool_is_destroyed_when_its_test_panics() {
    require!(zfs);
    let _shared = shared_daemon();
    let seen: Mutex<Option<(String, PathBuf)>> = Mutex::new(None);
    let result = std::panic::catch_unwind(|| {
        let pool = Pool::create().unwrap();
        *seen.lock().unwrap() = Some((pool.name().to_string(), pool.dir().to_path_buf()));
        pool.create_dataset("x");
        panic!("test failure while holding a pool");
    });
    assert!(result.is_err());
    let (name, dir) = seen.into_inner().unwrap().expect("pool was created");
    assert!(!pool_exists(&name), "{name} survived the panic");
    assert!(!dir.exists(), "{} survived the panic", dir.display());
}

/// Run only as a child of [`pool_is_destroyed_when_a_test_process_fails`]:
/// creates a pool, reports its name, and fails.
#[test]
#[ignore = "run as a child process by pool_is_destroyed_when_a_test_process_fails"]
fn child_panics_holding_a_pool() {
    let Some(report) = std::env::var_os(CHILD_ENV) else {
        return;
    };
    let pool = Pool::create().unwrap();
    std::fs::write(report, pool.name()).unwrap();
    panic!("failing on purpose with {}", pool.name());
}

#[test]
fn pool_is_destroyed_when_a_test_process_fails() {
    require!(zfs);
    let _shared = shared_daemon();
    let tmp = tempfile::tempdir().unwrap();
    let report = tmp.path().join("name");
    let out = run_child_test("child_panics_holding_a_pool", CHILD_ENV, &report);
    assert!(!out.status.success(), "the child test should fail");
    let name = std::fs::read_to_string(&report).expect("child reported its pool");
    assert!(name.starts_with(zfs::POOL_PREFIX), "{name}");
    assert!(
        !pool_exists(&name),
        "{name} survived the failed test process"
    );
}

/// Env var that makes [`child_hangs_past_its_watchdog`] do its work.
const HANG_ENV: &str = "ZPIPE_KIT_SELFTEST_HANG";

/// Run only as a child of [`a_hanging_test_is_ended_with_a_process_dump`]:
/// starts a long `sleep`, reports its pid, and hangs past a 1 s watchdog.
#[test]
#[ignore = "run as a child process by a_hanging_test_is_ended_with_a_process_dump"]
fn child_hangs_past_its_watchdog() {
    let Some(report) = std::env::var_os(HANG_ENV) else {
        return;
    };
    let _w = zpipe_tests::watchdog::Watchdog::arm_for("hang", Duration::from_secs(1));
    let mut sleeper = Command::new("sleep").arg("300").spawn().unwrap();
    std::fs::write(report, sleeper.id().to_string()).unwrap();
    let _ = sleeper.wait();
}

#[test]
fn a_hanging_test_is_ended_with_a_process_dump() {
    let tmp = tempfile::tempdir().unwrap();
    let report = tmp.path().join("pid");
    let start = std::time::Instant::now();
    let out = run_child_test("child_hangs_past_its_watchdog", HANG_ENV, &report);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(zpipe_tests::watchdog::EXIT_TIMEOUT),
        "{err}"
    );
    assert!(start.elapsed() < Duration::from_secs(60));
    assert!(
        err.contains("WATCHDOG hang: still running after 1 s"),
        "{err}"
    );
    assert!(err.contains("sleep 300"), "the dump names the child: {err}");
    assert!(
        err.contains("state S"),
        "the dump shows thread states: {err}"
    );
    let pid: u32 = std::fs::read_to_string(&report).unwrap().parse().unwrap();
    assert!(
        zpipe_tests::faults::wait_until(Duration::from_secs(5), || {
            !zpipe_tests::faults::live(pid)
        }),
        "the hanging test's child {pid} was not killed"
    );
}

/// Tests on zfs take it shared; renewing the daemon takes it alone, so no
/// pool of this process lives while the daemon is replaced.
static DAEMON_USERS: std::sync::RwLock<()> = std::sync::RwLock::new(());

fn shared_daemon() -> std::sync::RwLockReadGuard<'static, ()> {
    DAEMON_USERS.read().unwrap_or_else(|e| e.into_inner())
}

#[test]
fn an_aged_idle_daemon_is_replaced_and_works() {
    require!(zfs);
    let _alone = DAEMON_USERS.write().unwrap_or_else(|e| e.into_inner());
    zfs::sweep_stale_pools();
    let before = zfs::daemon_pids();
    assert!(
        zfs::renew_daemon_above(0).unwrap(),
        "nothing imported: renewed"
    );
    let after = zfs::daemon_pids();
    assert_eq!(after.len(), 1, "{after:?}");
    assert!(!before.contains(&after[0]), "{before:?} -> {after:?}");
    assert!(zfs::leftover_fuse_mounts()
        .iter()
        .all(|m| m.as_os_str() == "/zfs-kstat"));
    let pool = Pool::create().unwrap();
    let ds = pool.create_dataset("a b");
    pool.write_file(&ds, "f", b"fresh");
    assert_eq!(pool.read_file(&ds, "f"), b"fresh");
    // A daemon in use is never replaced.
    assert!(!zfs::renew_daemon_above(0).unwrap());
    assert_eq!(zfs::daemon_pids(), after);
}

#[test]
fn mount_points_are_unescaped() {
    assert_eq!(
        zfs::unescape_mount("/tmp/a\\040b\\011c\\134d"),
        PathBuf::from("/tmp/a b\tc\\d")
    );
    assert_eq!(zfs::unescape_mount("/x\\9"), PathBuf::from("/x\\9"));
}

#[test]
fn a_pool_image_too_big_for_the_disk_is_refused_up_front() {
    require!(root);
    let tmp = tempfile::tempdir().unwrap();
    let mnt = tmp.path().join("small");
    std::fs::create_dir(&mnt).unwrap();
    run_ok(
        Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=64m", "tmpfs"])
            .arg(&mnt),
    );
    let fits = zfs::reserve_image(&mnt.join("fits.img"), 16 << 20);
    let too_big = zfs::reserve_image(&mnt.join("big.img"), 256 << 20);
    let _ = Command::new("umount").arg(&mnt).status();
    fits.unwrap();
    let err = format!("{:#}", too_big.unwrap_err());
    assert!(
        err.contains("not enough disk for a 256 MiB test pool"),
        "{err}"
    );
    assert!(err.contains("MiB free"), "{err}");
}

#[test]
fn pool_names_are_unique_and_pools_work_in_parallel() {
    require!(zfs);
    let _shared = shared_daemon();
    let handles: Vec<_> = (0..4)
        .map(|i| {
            std::thread::spawn(move || {
                let pool = Pool::create().unwrap();
                let ds = pool.create_dataset(&format!("ds{i}"));
                pool.write_file(&ds, "f", format!("content {i}").as_bytes());
                pool.snapshot(&format!("{ds}@a"));
                pool.snapshot(&format!("{ds}@b"));
                let snaps = pool.snapshots(&ds);
                assert_eq!(snaps.len(), 2);
                assert_eq!(snaps[0].0, format!("{ds}@a"));
                assert!(snaps[0].2 < snaps[1].2, "createtxg grows: {snaps:?}");
                assert_eq!(snaps[1].1, pool.guid(&format!("{ds}@b")));
                assert_eq!(pool.read_file(&ds, "f"), format!("content {i}").as_bytes());
                assert!(pool.mountpoint().join(format!("ds{i}/f")).is_file());
                pool.name().to_string()
            })
        })
        .collect();
    let names: Vec<String> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    let mut unique = names.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), names.len(), "duplicate pool names: {names:?}");
    let pid = std::process::id();
    for name in &names {
        assert_eq!(zpipe_tests::owner_pid(zfs::POOL_PREFIX, name), Some(pid));
        assert!(!pool_exists(name), "{name} not destroyed");
    }
}

#[test]
fn relative_and_full_dataset_names_agree() {
    require!(zfs);
    let _shared = shared_daemon();
    let pool = Pool::create().unwrap();
    let full = pool.create_dataset("a/b c");
    assert_eq!(full, format!("{}/a/b c", pool.name()));
    assert_eq!(pool.ds(&full), full);
    assert_eq!(pool.ds(""), pool.name());
    assert_eq!(pool.ds("@s"), format!("{}@s", pool.name()));
    pool.write_file("a/b c", "x/y", b"1");
    assert_eq!(pool.read_file(&full, "x/y"), b"1");
    let snap = pool.snapshot("a/b c@s");
    assert_eq!(pool.guid(&snap), zfs::guid(&snap));
    assert!(zfs::createtxg(&snap) > zfs::createtxg(pool.name()));
}

/// Creates a pool named like one of the kit's owned by `owner_pid`, outside
/// the kit's bookkeeping; returns its name and backing dir.
fn orphan_pool(owner_pid: u32, tag: &str) -> (String, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let image = dir.path().join("orphan.img");
    std::fs::File::create(&image)
        .unwrap()
        .set_len(zfs::POOL_FILE_SIZE)
        .unwrap();
    let name = format!("{}-{owner_pid}-{tag}", zfs::POOL_PREFIX);
    let mnt = dir.path().join("mnt");
    let out = zfs::zpool([
        "create".as_ref(),
        "-m".as_ref(),
        mnt.as_os_str(),
        name.as_ref(),
        image.as_os_str(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    (name, dir)
}

#[test]
fn stale_pools_are_swept() {
    require!(zfs);
    let _shared = shared_daemon();
    // Above the kernel's pid_max: never a live process.
    const DEAD_PID: u32 = 999_999_999;
    let (dead_owner, _keep) = orphan_pool(DEAD_PID, "orphan");
    let (file_gone, dir) = orphan_pool(std::process::id(), "filegone");
    std::fs::remove_file(dir.path().join("orphan.img")).unwrap();
    let swept = zfs::sweep_stale_pools();
    assert!(swept.contains(&dead_owner), "{swept:?}");
    assert!(swept.contains(&file_gone), "{swept:?}");
    assert!(!pool_exists(&dead_owner) && !pool_exists(&file_gone));
}

#[test]
fn sshd_runs_commands_as_root_with_the_kit_path() {
    require!(sshd);
    let sshd = Sshd::start().unwrap();
    let out = run_ok(sshd.ssh("id -u; printf '%s\\n' \"$PATH\""));
    let mut lines = out.lines();
    assert_eq!(lines.next(), Some("0"), "{out}");
    let path = lines.next().unwrap_or_default();
    let kit = bin_dir().display().to_string();
    let sbin = path.split(':').position(|d| d == "/usr/sbin");
    let bins = path.split(':').position(|d| d == kit);
    assert!(bins.is_some() && bins < sbin, "remote PATH {path}");

    // A stand-in program in a dir given to set_env_path wins over the system's.
    let stand_in = tempfile::tempdir().unwrap();
    let zfs = stand_in.path().join("zfs");
    zpipe_tests::write_script(&zfs, "#!/bin/sh\necho stand-in zfs \"$@\"\n").unwrap();
    sshd.set_env_path(&[stand_in.path().to_path_buf(), bin_dir()])
        .unwrap();
    assert_eq!(
        run_ok(sshd.ssh("zfs list 'a b'")),
        "stand-in zfs list a b\n"
    );
}

#[test]
fn forced_command_key_runs_only_its_command() {
    require!(sshd);
    let sshd = Sshd::start().unwrap();
    let key = sshd
        .add_key(r#"restrict,command="echo forced: $SSH_ORIGINAL_COMMAND""#)
        .unwrap();
    let out = run_ok(sshd.ssh_with_key(&key, "id -u"));
    assert_eq!(out, "forced: id -u\n");
    // The argv form reaches the same key.
    let argv = sshd.ssh_argv_with_key(&key);
    let out = run_ok(Command::new(&argv[0]).args(&argv[1..]).arg("zfs list"));
    assert_eq!(out, "forced: zfs list\n");
    // The default key still runs what it is asked.
    assert_eq!(run_ok(sshd.ssh("echo free")), "free\n");
}

#[test]
fn sshd_is_stopped_on_drop() {
    require!(sshd);
    let sshd = Sshd::start().unwrap();
    let port = sshd.port();
    let pid_file = sshd.dir().join("sshd.pid");
    let pid: u32 = std::fs::read_to_string(&pid_file)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(zpipe_tests::pid_alive(pid));
    drop(sshd);
    assert!(!zpipe_tests::pid_alive(pid), "sshd {pid} still runs");
    assert!(std::net::TcpStream::connect(("127.0.0.1", port)).is_err());
}

#[test]
fn netns_link_is_shaped_to_the_configured_rate() {
    require!(netns);
    // 20 mbit/s = 2.5 MB/s: 2.5 MB take about one second.
    const RATE_BYTES_PER_SEC: f64 = 2.5e6;
    const BYTES: u64 = 2_500_000;
    let ns = Netns::pair("20mbit").unwrap();
    let (a, b) = (ns.a().to_string(), ns.b().to_string());
    assert!(netns::list().contains(&a) && netns::list().contains(&b));
    let rate = ns.transfer_rate(BYTES).unwrap();
    let ratio = rate / RATE_BYTES_PER_SEC;
    eprintln!("shaped link: {rate:.0} B/s = {ratio:.2} × configured");
    assert!(
        (0.5..=1.3).contains(&ratio),
        "shaped link ran at {rate:.0} B/s, {ratio:.2} × the configured rate"
    );
    let out = run_ok(ns.command_a("ip").args(["-br", "addr"]));
    assert!(out.contains(&ns.addr_a().to_string()), "{out}");
    drop(ns);
    assert!(!netns::list().contains(&a) && !netns::list().contains(&b));
}

#[test]
fn sshd_in_netns_is_reached_across_the_link() {
    require!(netns, sshd);
    let ns = Netns::pair("100mbit").unwrap();
    let sshd = Sshd::start_in(&ns).unwrap();
    let out = run_ok(sshd.ssh("echo \"$SSH_CONNECTION\""));
    // SSH_CONNECTION = client-ip client-port server-ip server-port
    let words: Vec<&str> = out.split_whitespace().collect();
    assert_eq!(
        words.first().copied(),
        Some(ns.addr_a().to_string().as_str()),
        "{out}"
    );
    assert_eq!(
        words.get(2).copied(),
        Some(ns.addr_b().to_string().as_str()),
        "{out}"
    );
}
