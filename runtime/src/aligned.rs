//! 64-aligned owned bytes (`std`): the engine reads the bundle and the arena in place, so
//! hosts load files into these.
use std::vec::Vec;

/// Bytes with a 64-aligned start: 16 is what `Engine` needs for zero-copy reads; a cache
/// line is what the arena plan assumes (values and the parts of a split op start on a line
/// boundary, and 64-byte vector loads do not straddle two lines).
pub struct AlignedBytes {
    buf: Vec<u128>,
    /// Where the bytes start in `buf` (the first 64-aligned byte).
    off: usize,
    len: usize,
}

impl AlignedBytes {
    /// A copy of `b`.
    pub fn new(b: &[u8]) -> Self {
        let mut a = Self::zeroed(b.len());
        a.as_mut_slice().copy_from_slice(b);
        a
    }
    /// `len` zero bytes.
    pub fn zeroed(len: usize) -> Self {
        // A large buffer comes from `mmap` 16 bytes past a page start: three more words
        // leave room to start on a line (the buffer never moves: it is never resized).
        let buf = vec![0u128; len.div_ceil(16) + 3];
        let off = (buf.as_ptr() as usize).wrapping_neg() % 64;
        AlignedBytes { buf, off, len }
    }
    /// The bytes.
    pub fn as_slice(&self) -> &[u8] {
        &bytemuck::cast_slice(&self.buf)[self.off..self.off + self.len]
    }
    /// The bytes, mutable.
    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        &mut bytemuck::cast_slice_mut(&mut self.buf)[self.off..self.off + self.len]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every size starts on a cache line and holds exactly its bytes: zeroed, or a copy.
    #[test]
    fn starts_on_a_line_and_holds_the_bytes() {
        let mut r = crate::engine::testnet::Rng::new(crate::test_seed());
        for len in [0, 1, 15, 16, 63, 64, 65, 4096, 200_000, 2_000_000] {
            let z = AlignedBytes::zeroed(len);
            assert_eq!(z.as_slice().len(), len);
            assert_eq!(z.as_slice().as_ptr() as usize % 64, 0, "{len}");
            assert!(z.as_slice().iter().all(|&b| b == 0));
            let b: std::vec::Vec<u8> = (0..len).map(|_| r.below(256) as u8).collect();
            let mut a = AlignedBytes::new(&b);
            assert_eq!(a.as_slice(), &b[..]);
            assert_eq!(a.as_mut_slice().as_ptr() as usize % 64, 0, "{len}");
        }
    }
}
