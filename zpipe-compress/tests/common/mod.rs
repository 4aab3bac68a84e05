//! Helpers for the integration tests: run the real binaries with stdin fed
//! from a thread, and make test data.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::process::{Command, Stdio};

pub const BIN: &str = env!("CARGO_BIN_EXE_zpipe-compress");

/// What a finished process left behind.
pub struct Outcome {
    pub code: i32,
    pub stdout: Vec<u8>,
    pub stderr: String,
}

/// Runs `prog args` with `input` on stdin.
pub fn run_prog(prog: &str, args: &[&str], input: &[u8]) -> Outcome {
    let mut child = Command::new(prog)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("spawning {prog}: {e}"));
    let mut stdin = child.stdin.take().unwrap();
    let data = input.to_vec();
    let feeder = std::thread::spawn(move || {
        let _ = stdin.write_all(&data);
    });
    let mut stdout = Vec::new();
    child
        .stdout
        .take()
        .unwrap()
        .read_to_end(&mut stdout)
        .unwrap();
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    let status = child.wait().unwrap();
    feeder.join().unwrap();
    Outcome {
        code: status.code().unwrap_or(-1),
        stdout,
        stderr,
    }
}

/// Runs zpipe-compress.
pub fn zc(args: &[&str], input: &[u8]) -> Outcome {
    run_prog(BIN, args, input)
}

/// Runs zpipe-compress and insists on success.
pub fn zc_ok(args: &[&str], input: &[u8]) -> Vec<u8> {
    let o = zc(args, input);
    assert_eq!(o.code, 0, "zpipe-compress {args:?}: {}", o.stderr);
    o.stdout
}

/// Runs another program and insists on success.
pub fn prog_ok(prog: &str, args: &[&str], input: &[u8]) -> Vec<u8> {
    let o = run_prog(prog, args, input);
    assert_eq!(o.code, 0, "{prog} {args:?}: {}", o.stderr);
    o.stdout
}

/// Compressible, text-like bytes.
pub fn text(n: usize, seed: u64) -> Vec<u8> {
    let words = [
        "zfs ",
        "send ",
        "recv ",
        "snapshot ",
        "pool/",
        "dataset\n",
        "@daily-",
        "1234 ",
    ];
    let mut v = Vec::with_capacity(n + 16);
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    while v.len() < n {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        v.extend_from_slice(words[(x % words.len() as u64) as usize].as_bytes());
    }
    v.truncate(n);
    v
}

/// Incompressible bytes.
pub fn random(n: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x2545_F491_4F6C_DD1D) | 1;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 32) as u8
        })
        .collect()
}

/// Bytes drawn from 64 symbols: compressible (about 6 bits a byte) but with
/// little for the match finder, so it costs little CPU at any level.
pub fn base64ish(n: usize, seed: u64) -> Vec<u8> {
    const SYMBOLS: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    random(n, seed)
        .iter()
        .map(|b| SYMBOLS[usize::from(b & 63)])
        .collect()
}
