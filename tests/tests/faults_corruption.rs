//! Corruption on the wire, seeded: one flipped bit, a cut, or a duplicated
//! block at a random offset. Every case must be detected, and nothing after
//! the damage may be handed on:
//!
//! - 1000 runs through the verify decoder in-process (what it writes must
//!   be a prefix of the true payload);
//! - 20 runs (more with `ZPIPE_FAULT_RUNS=N`) through the whole pipeline,
//!   `zsend-wrap | damage | zrecv-wrap` into real zfs-fuse, where a
//!   recording `zfs` keeps exactly what `zfs recv` read: it must be a
//!   prefix of the true `zfs send` stream, the receiver must fail, and the
//!   snapshot must not appear.

use std::process::{Command, Stdio};
use zpipe_tests::data::noise;
use zpipe_tests::faults::{Damage, RecordingZfs};
use zpipe_tests::{bin, require, Pool};
use zpipe_verify::{Decoder, Encoder, VerifyConfig};

/// Seeded runs on the decoder.
const DECODER_RUNS: u64 = 1000;
/// Seeded runs through the wrappers and zfs recv, unless ZPIPE_FAULT_RUNS says.
const PIPELINE_RUNS: u64 = 20;
/// Payload of the decoder runs, framed in 16 KiB frames (64 frames).
const DECODER_PAYLOAD: usize = 1 << 20;
/// File data of the pipeline runs.
const PIPELINE_PAYLOAD: usize = 8 << 20;

fn cfg(frame_size: usize) -> VerifyConfig {
    VerifyConfig {
        frame_size,
        workers: 2,
        follow_zfs: false,
    }
}

#[test]
fn verify_decoder_detects_every_seeded_damage_and_passes_nothing_after_it() {
    let payload = noise(42, DECODER_PAYLOAD);
    let mut framed = Vec::new();
    let mut enc = Encoder::new(&mut framed, &cfg(16 << 10)).unwrap();
    enc.write_all(&payload).unwrap();
    enc.finish().unwrap();
    // The clean stream decodes to the payload.
    let mut out = Vec::new();
    Decoder::new(&framed[..], &cfg(16 << 10))
        .decode_to(&mut out)
        .unwrap();
    assert!(out == payload);

    let mut kinds = [0u32; 3];
    for seed in 0..DECODER_RUNS {
        let damage = Damage::pick(seed, framed.len() as u64);
        kinds[(seed % 3) as usize] += 1;
        let bad = damage.apply(&framed);
        let mut out = Vec::new();
        let result = Decoder::new(&bad[..], &cfg(16 << 10)).decode_to(&mut out);
        let err = match result {
            Ok(d) => panic!("seed {seed}: {damage:?} not detected (digest {})", d.hex()),
            Err(e) => e,
        };
        assert_eq!(
            zpipe_core::exit::classify(&err),
            zpipe_core::Exit::Integrity,
            "seed {seed}: {damage:?}: {err:#}"
        );
        assert!(
            payload.starts_with(&out),
            "seed {seed}: {damage:?}: the decoder passed on damaged bytes ({} of them)",
            out.len()
        );
    }
    assert!(kinds.iter().all(|&k| k >= 300), "{kinds:?}");
}

fn runs() -> u64 {
    std::env::var("ZPIPE_FAULT_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(PIPELINE_RUNS)
}

/// `zsend-wrap <args>` to memory.
fn send_bytes(args: &[&str]) -> Vec<u8> {
    let out = Command::new(bin("zsend-wrap"))
        .args(args)
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// Destroys `ds` and its snapshots, retrying while zfs-fuse says busy.
fn destroy(ds: &str) {
    let gone = zpipe_tests::faults::wait_until(std::time::Duration::from_secs(20), || {
        let _ = zpipe_tests::zfs::zfs(["destroy", "-r", ds]);
        !zpipe_tests::zfs::zfs(["list", ds]).status.success()
    });
    assert!(gone, "cannot destroy {ds}");
}

#[test]
fn wrapper_pipeline_detects_seeded_damage_before_zfs_recv_sees_it() {
    require!(zfs);
    let src = Pool::create().unwrap();
    let dst = Pool::create().unwrap();
    let ds = src.create_dataset("data");
    src.write_file(&ds, "big.bin", &noise(1, PIPELINE_PAYLOAD));
    src.write_file(&ds, "small.txt", b"a small file\n");
    let snap = src.snapshot(&format!("{ds}@s1"));
    let target = dst.ds("copy");
    let real = zpipe_tests::zfs::zfs_program().display().to_string();
    let rec = RecordingZfs::new(&dst.dir().join("recording"), &real);
    let zfs_arg = rec.program().display().to_string();

    // The true ZFS stream; zfs-fuse sends the same bytes every time.
    let truth = zpipe_tests::zfs::zfs(["send", &snap]).stdout;
    assert!(truth.len() > PIPELINE_PAYLOAD);
    assert!(zpipe_tests::zfs::zfs(["send", &snap]).stdout == truth);

    // Two wire formats: framed only, and framed + zstd (level 3 is
    // deterministic; auto adapts to timing). Their clean lengths place the
    // damage inside the stream.
    let modes: [&[&str]; 2] = [
        &["--compress", "off", "--frame-size", "256K"],
        &["--compress", "3", "--frame-size", "256K"],
    ];
    let mut lens = Vec::new();
    for m in modes {
        let mut args = vec!["--quiet", "--zfs", &real];
        args.extend_from_slice(m);
        args.push(&snap);
        lens.push(send_bytes(&args).len() as u64);
    }

    // A clean run through the recording zfs: it records the whole stream.
    let recv = |input: Stdio| {
        Command::new(bin("zrecv-wrap"))
            .args(["--quiet", "--zfs", &zfs_arg, &target])
            .stdin(input)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let run = |mode: usize, damage: Option<Damage>| {
        let mut s = Command::new(bin("zsend-wrap"))
            .args(["--quiet", "--zfs", &real])
            .args(modes[mode])
            .arg(&snap)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut from = s.stdout.take().unwrap();
        let mut r = recv(Stdio::piped());
        let mut to = r.stdin.take().unwrap();
        let copier = std::thread::spawn(move || match damage {
            Some(d) => {
                let _ = d.copy(&mut from, &mut to);
            }
            None => {
                let _ = std::io::copy(&mut from, &mut to);
            }
        });
        let r_out = r.wait_with_output().unwrap();
        copier.join().unwrap();
        let _ = s.wait_with_output().unwrap();
        r_out
    };
    let o = run(1, None);
    assert!(
        o.status.success(),
        "clean run: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    let records = rec.records();
    assert_eq!(records.len(), 1, "one zfs receive ran");
    assert!(records[0] == truth, "the recording zfs records the stream");
    destroy(&target);

    let n = runs();
    for seed in 0..n {
        rec.clear();
        let mode = (seed / 3 % 2) as usize;
        let damage = Damage::pick(seed, lens[mode]);
        let o = run(mode, Some(damage));
        let err = String::from_utf8_lossy(&o.stderr).into_owned();
        let code = o.status.code();
        assert!(
            matches!(code, Some(1) | Some(2)),
            "seed {seed} mode {mode} {damage:?}: exit {code:?}: {err}"
        );
        assert!(err.starts_with("zrecv-wrap: "), "seed {seed}: {err}");
        assert_eq!(err.trim().lines().count(), 1, "seed {seed}: {err}");
        // The error names the layer that was damaged: with compression the
        // zstd decoder meets damage to the zstd structure first, and its
        // error must win over the end of input that its failure causes
        // further down. zsend-wrap's zstd frames carry no checksum of their
        // own (the SHA-256 frames inside check every byte), so damage that
        // still decodes is the verify layer's to name.
        let names_layer = if mode == 1 {
            err.contains("zstd")
                || err.contains("truncated input")
                || err.contains("payload checksum mismatch")
        } else {
            !err.contains("zstd") && !err.contains("empty input")
        };
        assert!(
            names_layer,
            "seed {seed} mode {mode} {damage:?}: misleading error: {err}"
        );
        let got: Vec<usize> = rec.records().iter().map(Vec::len).collect();
        eprintln!(
            "seed {seed} mode {mode} {damage:?}: exit {code:?}, zfs recv read {got:?} of {} true bytes: {}",
            truth.len(),
            err.trim()
        );
        for r in rec.records() {
            assert!(
                truth.starts_with(&r),
                "seed {seed} mode {mode} {damage:?}: zfs recv read {} bytes that are not a prefix of the true stream",
                r.len()
            );
            assert!(
                r.len() < truth.len(),
                "seed {seed}: the whole stream got through"
            );
        }
        let listed = zpipe_tests::zfs::zfs([
            "list",
            "-H",
            "-o",
            "name",
            "-t",
            "snapshot",
            "-r",
            dst.name(),
        ]);
        let listed = String::from_utf8_lossy(&listed.stdout).into_owned();
        assert!(
            !listed.contains(&format!("{target}@s1")),
            "seed {seed} {damage:?}: the snapshot appeared: {listed}"
        );
        // A partial full receive leaves nothing on zfs-fuse; clean anyway.
        destroy(&target);
    }
}
