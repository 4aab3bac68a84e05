//! Smoke test of the real parts together: a plain
//! `zfs send pool/ds@s | ssh root@127.0.0.1 'zfs recv pool2/ds'` between two
//! zfs-fuse pools through the kit's sshd, checked by guid and file content.

use std::process::{Command, Stdio};
use zpipe_tests::{require, shell_quote, zfs, Pool, Sshd};

/// Size of the file written before the snapshot (several records).
const FILE_LEN: u32 = 300_000;

fn pattern() -> Vec<u8> {
    (0..FILE_LEN)
        .map(|i| (i.wrapping_mul(7) % 251) as u8)
        .collect()
}

/// Sends `src_rel@s1` from one pool to `dst_rel` of another over ssh with
/// plain commands and checks guid and content.
fn send_over_ssh(src_rel: &str, dst_rel: &str) {
    let src = Pool::create().unwrap();
    let dst = Pool::create().unwrap();
    let sshd = Sshd::start().unwrap();
    let ds = src.create_dataset(src_rel);
    let data = pattern();
    src.write_file(&ds, "dir/file.bin", &data);
    let snap = src.snapshot(&format!("{ds}@s1"));
    let target = dst.ds(dst_rel);

    let mut send = Command::new(zfs::zfs_program())
        .args(["send", &snap])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let recv = sshd
        .ssh(&format!("zfs recv {}", shell_quote(&target)))
        .stdin(send.stdout.take().unwrap())
        .output()
        .unwrap();
    let send_status = send.wait().unwrap();
    assert!(send_status.success(), "zfs send failed: {send_status}");
    assert!(
        recv.status.success(),
        "ssh … zfs recv failed ({}): {}\nsshd log:\n{}",
        recv.status,
        String::from_utf8_lossy(&recv.stderr),
        sshd.log()
    );

    let received = format!("{target}@s1");
    assert_eq!(dst.guid(&received), src.guid(&snap));
    assert_eq!(dst.snapshots(&target).len(), 1);
    assert!(dst.read_file(&target, "dir/file.bin") == data);
}

#[test]
fn plain_send_over_ssh_keeps_guid_and_data() {
    require!(zfs, sshd);
    send_over_ssh("data", "copy");
}

#[test]
fn dataset_name_with_space_survives_remote_quoting() {
    require!(zfs, sshd);
    send_over_ssh("my data", "my copy");
}
