//! The self-check fixture a board image embeds (`firmware/run-qemu` writes it with
//! `cargo run -p lorkd-firmware --example qemu-fixture`): a bundle, test images, and the
//! scores the host computed for every department and image.
//!
//! | offset | field (u32 LE unless noted)                                                  |
//! |--------|------------------------------------------------------------------------------|
//! | 0      | magic `LKFX`                                                                  |
//! | 4      | departments `D`                                                               |
//! | 8      | images `N`                                                                    |
//! | 12     | f32 values per image `L` (CHW)                                                |
//! | 16     | score slots per expectation `C` (the most classes of any department)          |
//! | 20, 24 | bundle offset (16-aligned), length                                            |
//! | 28     | images offset: `N × L` f32                                                     |
//! | 32     | expectations offset: for `d < D`, `n < N`: top-1 u32, then `C` f32 scores    |
//! | 36..64 | reserved (0)                                                                  |

/// First bytes of a fixture.
pub const MAGIC: [u8; 4] = *b"LKFX";
/// Bytes of the header.
pub const HEADER_LEN: usize = 64;

/// A fixture, every range checked against the bytes.
#[derive(Clone, Copy, Debug)]
pub struct Fixture<'a> {
    pub departments: usize,
    pub images: usize,
    pub input_len: usize,
    pub classes: usize,
    pub bundle: &'a [u8],
    images_bytes: &'a [u8],
    expect_bytes: &'a [u8],
}

fn u32_at(b: &[u8], o: usize) -> Option<usize> {
    Some(u32::from_le_bytes(b.get(o..o + 4)?.try_into().ok()?) as usize)
}

fn f32_at(b: &[u8], i: usize) -> f32 {
    f32::from_le_bytes([b[4 * i], b[4 * i + 1], b[4 * i + 2], b[4 * i + 3]])
}

impl<'a> Fixture<'a> {
    /// Parses a fixture; `None` when anything is out of range.
    pub fn parse(b: &'a [u8]) -> Option<Self> {
        if b.get(..4)? != MAGIC {
            return None;
        }
        let (d, n, l, c) = (u32_at(b, 4)?, u32_at(b, 8)?, u32_at(b, 12)?, u32_at(b, 16)?);
        let range = |off: usize, len: usize| b.get(off..off.checked_add(len)?);
        let bundle = range(u32_at(b, 20)?, u32_at(b, 24)?)?;
        let images_bytes = range(u32_at(b, 28)?, n.checked_mul(l)?.checked_mul(4)?)?;
        let per = c.checked_add(1)?.checked_mul(4)?;
        let expect_bytes = range(u32_at(b, 32)?, d.checked_mul(n)?.checked_mul(per)?)?;
        Some(Fixture {
            departments: d,
            images: n,
            input_len: l,
            classes: c,
            bundle,
            images_bytes,
            expect_bytes,
        })
    }

    /// Image `n`, decoded into `out` (`input_len` values).
    pub fn image(&self, n: usize, out: &mut [f32]) {
        let b = &self.images_bytes[n * self.input_len * 4..(n + 1) * self.input_len * 4];
        for (i, o) in out.iter_mut().enumerate().take(self.input_len) {
            *o = f32_at(b, i);
        }
    }

    /// The host's top-1 for department `d` on image `n`, and its score `k`.
    pub fn expected(&self, d: usize, n: usize, k: usize) -> (usize, f32) {
        let per = (self.classes + 1) * 4;
        let e = &self.expect_bytes[(d * self.images + n) * per..][..per];
        (u32_at(e, 0).unwrap_or(usize::MAX), f32_at(&e[4..], k))
    }
}
