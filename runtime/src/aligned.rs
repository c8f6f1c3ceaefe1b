//! 16-aligned owned bytes (`std`): the engine reads the bundle and the arena in place, so
//! hosts load files into these.
use std::vec::Vec;

/// Bytes with a 16-aligned start (what `Engine` needs for zero-copy reads).
pub struct AlignedBytes {
    buf: Vec<u128>,
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
        AlignedBytes {
            buf: vec![0u128; len.div_ceil(16)],
            len,
        }
    }
    /// The bytes.
    pub fn as_slice(&self) -> &[u8] {
        &bytemuck::cast_slice(&self.buf)[..self.len]
    }
    /// The bytes, mutable.
    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        &mut bytemuck::cast_slice_mut(&mut self.buf)[..self.len]
    }
}
