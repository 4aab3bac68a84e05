//! XXH64, the checksum zstd frames carry (RFC 8878 §3.1.1: the low 32 bits
//! of XXH64 with seed 0 over the decompressed content).
//!
//! Needed because hand-built raw frames must carry the same content checksum
//! libzstd writes, and libzstd keeps its own xxhash private.

const P1: u64 = 0x9E37_79B1_85EB_CA87;
const P2: u64 = 0xC2B2_AE3D_27D4_EB4F;
const P3: u64 = 0x1656_67B1_9E37_79F9;
const P4: u64 = 0x85EB_CA77_C2B2_AE63;
const P5: u64 = 0x27D4_EB2F_1656_67C5;
/// Bytes consumed per round of the four accumulators.
const STRIPE: usize = 32;

fn read64(b: &[u8]) -> u64 {
    u64::from_le_bytes(b[..8].try_into().expect("8 bytes"))
}

fn read32(b: &[u8]) -> u32 {
    u32::from_le_bytes(b[..4].try_into().expect("4 bytes"))
}

#[inline(always)]
fn round(acc: u64, input: u64) -> u64 {
    acc.wrapping_add(input.wrapping_mul(P2))
        .rotate_left(31)
        .wrapping_mul(P1)
}

#[inline(always)]
fn merge(acc: u64, val: u64) -> u64 {
    (acc ^ round(0, val)).wrapping_mul(P1).wrapping_add(P4)
}

/// XXH64 of `data` with `seed`.
pub fn xxh64(data: &[u8], seed: u64) -> u64 {
    let len = data.len();
    let mut rest = data;
    let mut h = if len >= STRIPE {
        let mut v1 = seed.wrapping_add(P1).wrapping_add(P2);
        let mut v2 = seed.wrapping_add(P2);
        let mut v3 = seed;
        let mut v4 = seed.wrapping_sub(P1);
        let mut stripes = rest.chunks_exact(STRIPE);
        for s in &mut stripes {
            v1 = round(v1, read64(&s[0..]));
            v2 = round(v2, read64(&s[8..]));
            v3 = round(v3, read64(&s[16..]));
            v4 = round(v4, read64(&s[24..]));
        }
        rest = stripes.remainder();
        let mut h = v1
            .rotate_left(1)
            .wrapping_add(v2.rotate_left(7))
            .wrapping_add(v3.rotate_left(12))
            .wrapping_add(v4.rotate_left(18));
        h = merge(h, v1);
        h = merge(h, v2);
        h = merge(h, v3);
        merge(h, v4)
    } else {
        seed.wrapping_add(P5)
    };
    h = h.wrapping_add(len as u64);
    while rest.len() >= 8 {
        h ^= round(0, read64(rest));
        h = h.rotate_left(27).wrapping_mul(P1).wrapping_add(P4);
        rest = &rest[8..];
    }
    if rest.len() >= 4 {
        h ^= u64::from(read32(rest)).wrapping_mul(P1);
        h = h.rotate_left(23).wrapping_mul(P2).wrapping_add(P3);
        rest = &rest[4..];
    }
    for &b in rest {
        h ^= u64::from(b).wrapping_mul(P5);
        h = h.rotate_left(11).wrapping_mul(P1);
    }
    h ^= h >> 33;
    h = h.wrapping_mul(P2);
    h ^= h >> 29;
    h = h.wrapping_mul(P3);
    h ^ (h >> 32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_vectors() {
        // Reference values from the xxHash project.
        assert_eq!(xxh64(b"", 0), 0xEF46_DB37_51D8_E999);
        assert_eq!(xxh64(b"a", 0), 0xD24E_C4F1_A98C_6E5B);
        assert_eq!(xxh64(b"abc", 0), 0x44BC_2CF5_AD77_0999);
    }

    #[test]
    fn matches_the_checksum_libzstd_writes() {
        // libzstd's frames end with the low 32 bits of XXH64 of the content.
        for len in [0usize, 1, 3, 4, 7, 8, 31, 32, 33, 64, 100, 1000, 4099] {
            let data: Vec<u8> = (0..len).map(|i| (i * 7 + i / 5) as u8).collect();
            let mut cctx = zstd::zstd_safe::CCtx::create();
            cctx.set_parameter(zstd::zstd_safe::CParameter::ChecksumFlag(true))
                .unwrap();
            let mut out = Vec::with_capacity(zstd::zstd_safe::compress_bound(len) + 64);
            cctx.compress2(&mut out, &data).unwrap();
            let tail: [u8; 4] = out[out.len() - 4..].try_into().unwrap();
            assert_eq!(
                u32::from_le_bytes(tail),
                xxh64(&data, 0) as u32,
                "len {len}"
            );
        }
    }
}
