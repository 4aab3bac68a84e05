//! Deterministic test data: a seeded generator ([`Rng`]), bytes that do
//! not compress ([`noise`]) and log-like text that does ([`text`]), shared
//! by the tests, the fault suite and `cargo xtask bench`/`soak`, so every
//! corpus is made the same way everywhere.

use std::io::Write;

/// A seeded SplitMix64 generator: the same seed gives the same data.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A generator for `seed`.
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number in `0..n` (`n` > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }

    /// Fills `out` with random bytes.
    pub fn fill(&mut self, out: &mut [u8]) {
        for chunk in out.chunks_mut(8) {
            let b = self.next_u64().to_le_bytes();
            chunk.copy_from_slice(&b[..chunk.len()]);
        }
    }
}

/// `len` deterministic bytes that zstd cannot shrink.
pub fn noise(seed: u64, len: usize) -> Vec<u8> {
    let mut v = vec![0u8; len];
    Rng::new(seed).fill(&mut v);
    v
}

/// Vocabulary of the generated text (log-like words).
const WORDS: [&str; 48] = [
    "zfs",
    "send",
    "receive",
    "snapshot",
    "pool",
    "dataset",
    "the",
    "of",
    "to",
    "and",
    "stream",
    "record",
    "checksum",
    "guid",
    "backup",
    "tank/home",
    "error",
    "warning",
    "info",
    "debug",
    "kernel",
    "sshd",
    "session",
    "opened",
    "closed",
    "for",
    "user",
    "root",
    "from",
    "port",
    "bytes",
    "written",
    "read",
    "compress",
    "level",
    "frame",
    "ok",
    "failed",
    "retry",
    "cron",
    "daily",
    "replication",
    "incremental",
    "resume",
    "token",
    "mbuffer",
    "pv",
    "zstd",
];

/// Appends about `len` bytes of pseudo-text seeded by `seed` to `out`
/// (exactly `len`: the last line is cut).
pub fn text(seed: u64, len: usize, out: &mut Vec<u8>) {
    let mut rng = Rng::new(seed);
    let start = out.len();
    let mut t = 1_764_000_000 + rng.below(1_000_000);
    while out.len() - start < len {
        t += rng.below(5);
        let r = rng.next_u64();
        let _ = write!(
            out,
            "{} host{} {}[{}]: ",
            t,
            r & 7,
            WORDS[(r >> 3) as usize % 24],
            (r >> 8) & 0xffff
        );
        let words = 4 + rng.below(12);
        for _ in 0..words {
            let r = rng.next_u64();
            // Skewed choice: small indexes are more frequent.
            let i = ((r & 0xff) * ((r >> 8) & 0xff) / 256) as usize % WORDS.len();
            out.extend_from_slice(WORDS[i].as_bytes());
            if r >> 60 == 0 {
                let _ = write!(out, "={}", (r >> 20) & 0xfffff);
            }
            out.push(b' ');
        }
        out.push(b'\n');
    }
    out.truncate(start + len);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_is_exact_deterministic_and_line_shaped() {
        let (mut a, mut b) = (b"x".to_vec(), Vec::new());
        text(3, 10_000, &mut a);
        text(3, 9_999, &mut b);
        assert_eq!(a.len(), 10_001);
        assert_eq!(&a[1..10_000], &b[..]);
        assert!(a.iter().filter(|&&c| c == b'\n').count() > 50);
    }

    #[test]
    fn noise_depends_on_the_seed_only() {
        assert_eq!(noise(1, 1000), noise(1, 1000));
        assert_ne!(noise(1, 1000), noise(2, 1000));
        assert_eq!(noise(1, 13), noise(1, 1000)[..13]);
    }
}
