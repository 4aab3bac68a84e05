//! Fletcher-4, the checksum ZFS uses for send streams and resume tokens.
//!
//! ZFS sums the input as 32-bit words in the byte order of the host that
//! wrote it ("native"); on every machine zpipe targets that is
//! little-endian, so [`Fletcher4::new`] reads little-endian words. A
//! big-endian variant exists for recognising data written by big-endian
//! hosts (SPARC, POWER BE).
//!
//! The four running sums are 64-bit and wrap, exactly like
//! `fletcher_4_scalar_native` in OpenZFS `module/zcommon/zfs_fletcher.c`.
//! Input is consumed as one continuous byte stream across
//! [`Fletcher4::update`] calls; a trailing partial word (fewer than 4
//! bytes) is ignored by [`Fletcher4::sums`], which matches
//! `fletcher_4_native_varsize` (used for resume tokens).

/// Byte order of the 32-bit words being summed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WordOrder {
    /// Little-endian words (x86, arm64): the native order zpipe writes.
    Little,
    /// Big-endian words (SPARC, POWER BE).
    Big,
}

/// An incremental Fletcher-4 checksum.
#[derive(Debug, Clone)]
pub struct Fletcher4 {
    sums: [u64; 4],
    order: WordOrder,
    pending: [u8; 4],
    pending_len: usize,
}

impl Default for Fletcher4 {
    fn default() -> Self {
        Self::new()
    }
}

impl Fletcher4 {
    /// A checksum over little-endian words, starting from zero.
    pub fn new() -> Self {
        Self::with_order(WordOrder::Little)
    }

    /// A checksum over words of the given byte order, starting from zero.
    pub fn with_order(order: WordOrder) -> Self {
        Fletcher4 {
            sums: [0; 4],
            order,
            pending: [0; 4],
            pending_len: 0,
        }
    }

    fn add_word(&mut self, w: [u8; 4]) {
        let v = match self.order {
            WordOrder::Little => u32::from_le_bytes(w),
            WordOrder::Big => u32::from_be_bytes(w),
        };
        let [a, b, c, d] = &mut self.sums;
        *a = a.wrapping_add(u64::from(v));
        *b = b.wrapping_add(*a);
        *c = c.wrapping_add(*b);
        *d = d.wrapping_add(*c);
    }

    /// Feeds more bytes.
    pub fn update(&mut self, mut bytes: &[u8]) {
        if self.pending_len > 0 {
            let take = (4 - self.pending_len).min(bytes.len());
            self.pending[self.pending_len..self.pending_len + take].copy_from_slice(&bytes[..take]);
            self.pending_len += take;
            bytes = &bytes[take..];
            if self.pending_len < 4 {
                return;
            }
            let w = self.pending;
            self.add_word(w);
            self.pending_len = 0;
        }
        let mut words = bytes.chunks_exact(4);
        for w in &mut words {
            self.add_word([w[0], w[1], w[2], w[3]]);
        }
        let rest = words.remainder();
        self.pending[..rest.len()].copy_from_slice(rest);
        self.pending_len = rest.len();
    }

    /// The four sums `[a, b, c, d]` so far (ZFS's `zc_word[0..4]`); a
    /// trailing partial word is not included.
    pub fn sums(&self) -> [u64; 4] {
        self.sums
    }
}

/// Fletcher-4 of `bytes` over little-endian words, ignoring a trailing
/// partial word: OpenZFS's `fletcher_4_native_varsize` on x86.
pub fn varsize(bytes: &[u8]) -> [u64; 4] {
    varsize_with_order(bytes, WordOrder::Little)
}

/// Fletcher-4 of `bytes` over words of the given order, ignoring a
/// trailing partial word.
pub fn varsize_with_order(bytes: &[u8], order: WordOrder) -> [u64; 4] {
    let mut f = Fletcher4::with_order(order);
    f.update(bytes);
    f.sums()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn known_small_input() {
        // words 1 and 2: a = 1+2, b = 1 + 3, c = 1 + 4, d = 1 + 5
        let s = varsize(&[1, 0, 0, 0, 2, 0, 0, 0]);
        assert_eq!(s, [3, 4, 5, 6]);
    }

    #[test]
    fn trailing_partial_word_is_ignored() {
        assert_eq!(varsize(&[1, 0, 0, 0, 9, 9]), varsize(&[1, 0, 0, 0]));
    }

    #[test]
    fn big_endian_words() {
        let s = varsize_with_order(&[0, 0, 0, 7], WordOrder::Big);
        assert_eq!(s[0], 7);
    }

    proptest! {
        #[test]
        fn split_updates_equal_one_update(data in proptest::collection::vec(any::<u8>(), 0..300), cut in 0usize..300) {
            let cut = cut.min(data.len());
            let mut f = Fletcher4::new();
            f.update(&data[..cut]);
            f.update(&data[cut..]);
            prop_assert_eq!(f.sums(), varsize(&data));
        }
    }
}
