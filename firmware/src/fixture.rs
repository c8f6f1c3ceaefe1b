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
//! | 36, 40 | update package (`.lkdu`, signed) offset, length                                |
//! | 44     | department the update replaces                                                |
//! | 48     | its new version                                                               |
//! | 52     | expectations after the update: for `n < N`: top-1 u32, then `C` f32 scores    |
//! | 56, 60 | a crafted, correctly signed package header (`blob_len` = `MAX_BLOB`): offset, length |
//! | 64     | ed25519 public key the package is signed with (32 bytes)                      |
//! | 96, 100| a signed package (new version of the same department) whose blob does not parse: offset, length |
//! | 104, 108| a signed package adding a department the bundle lacks: offset, length (0: none) |
//! | 112    | the added department's classes (≤ `C`)                                        |
//! | 116    | expectations for the added department: for `n < N`: top-1 u32, then `C` f32 scores |
//! | 120..128| reserved (0)                                                                 |

/// First bytes of a fixture.
pub const MAGIC: [u8; 4] = *b"LKFX";
/// Bytes of the header.
pub const HEADER_LEN: usize = 128;

/// A fixture, every range checked against the bytes.
#[derive(Clone, Copy, Debug)]
pub struct Fixture<'a> {
    pub departments: usize,
    pub images: usize,
    pub input_len: usize,
    pub classes: usize,
    pub bundle: &'a [u8],
    /// The signed update package, the department it replaces and its new version.
    pub update: &'a [u8],
    pub update_dept: usize,
    pub update_version: u32,
    /// The key the package is signed with.
    pub pubkey: [u8; 32],
    /// A signed package header declaring the largest blob length (32-bit arithmetic checks).
    pub crafted_header: &'a [u8],
    /// A signed package whose blob does not parse (a bad committed slot, for the fallback).
    pub bad_update: &'a [u8],
    /// A signed package adding a department the bundle lacks (empty: none), and its classes.
    pub added: &'a [u8],
    pub added_classes: usize,
    added_bytes: &'a [u8],
    images_bytes: &'a [u8],
    expect_bytes: &'a [u8],
    updated_bytes: &'a [u8],
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
        let update = range(u32_at(b, 36)?, u32_at(b, 40)?)?;
        let updated_bytes = range(u32_at(b, 52)?, n.checked_mul(per)?)?;
        let crafted_header = range(u32_at(b, 56)?, u32_at(b, 60)?)?;
        let bad_update = range(u32_at(b, 96)?, u32_at(b, 100)?)?;
        let added = range(u32_at(b, 104)?, u32_at(b, 108)?)?;
        let added_classes = u32_at(b, 112)?;
        if added_classes > c {
            return None;
        }
        let added_bytes = if added.is_empty() {
            &[][..]
        } else {
            range(u32_at(b, 116)?, n.checked_mul(per)?)?
        };
        Some(Fixture {
            added,
            added_classes,
            added_bytes,
            update,
            update_dept: u32_at(b, 44)?,
            update_version: u32_at(b, 48)? as u32,
            pubkey: b.get(64..96)?.try_into().ok()?,
            crafted_header,
            bad_update,
            updated_bytes,
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

    /// As [`Fixture::expected`], for the added department (after the add package).
    pub fn expected_added(&self, n: usize, k: usize) -> (usize, f32) {
        let per = (self.classes + 1) * 4;
        match self.added_bytes.get(n * per..n * per + per) {
            Some(e) => (u32_at(e, 0).unwrap_or(usize::MAX), f32_at(&e[4..], k)),
            None => (usize::MAX, 0.0),
        }
    }

    /// As [`Fixture::expected`], for the updated department after the update.
    pub fn expected_updated(&self, n: usize, k: usize) -> (usize, f32) {
        let per = (self.classes + 1) * 4;
        let e = &self.updated_bytes[n * per..][..per];
        (u32_at(e, 0).unwrap_or(usize::MAX), f32_at(&e[4..], k))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> std::vec::Vec<u8> {
        let (d, n, l, c) = (2usize, 2usize, 3usize, 2usize);
        let mut f = std::vec![0u8; HEADER_LEN];
        let bundle_off = f.len();
        f.extend_from_slice(&[7u8; 16]);
        let images_off = f.len();
        for i in 0..n * l {
            f.extend_from_slice(&(i as f32).to_le_bytes());
        }
        let expect_off = f.len();
        for i in 0..d * n {
            f.extend_from_slice(&(i as u32).to_le_bytes());
            for k in 0..c {
                f.extend_from_slice(&((10 * i + k) as f32).to_le_bytes());
            }
        }
        let updated_off = f.len();
        f.extend_from_slice(&std::vec![0u8; n * (c + 1) * 4]);
        let update_off = f.len();
        f.extend_from_slice(&[9u8; 5]);
        let crafted_off = f.len();
        f.extend_from_slice(&[3u8; 4]);
        let hdr = [
            d,
            n,
            l,
            c,
            bundle_off,
            16,
            images_off,
            expect_off,
            update_off,
            5,
            1,
            2,
            updated_off,
            crafted_off,
            4,
        ];
        f[..4].copy_from_slice(&MAGIC);
        for (i, v) in hdr.iter().enumerate() {
            f[4 + 4 * i..8 + 4 * i].copy_from_slice(&(*v as u32).to_le_bytes());
        }
        f
    }

    #[test]
    fn parses_and_reads_back() {
        let b = sample();
        let f = Fixture::parse(&b).unwrap();
        assert_eq!(
            (f.departments, f.images, f.input_len, f.classes),
            (2, 2, 3, 2)
        );
        assert_eq!(f.bundle, &[7u8; 16]);
        assert_eq!(
            (f.update, f.update_dept, f.update_version),
            (&[9u8; 5][..], 1, 2)
        );
        let mut x = [0f32; 3];
        f.image(1, &mut x);
        assert_eq!(x, [3.0, 4.0, 5.0]);
        assert_eq!(f.expected(1, 0, 1), (2, 21.0));
    }

    #[test]
    fn truncated_or_corrupt_fixtures_are_none_not_panics() {
        use rand::{Rng, SeedableRng};
        let seed: u64 = rand::random();
        println!("seed {seed}");
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        let b = sample();
        for cut in 0..b.len() {
            assert!(Fixture::parse(&b[..cut]).is_none(), "cut at {cut}");
        }
        for _ in 0..2000 {
            let mut m = b.clone();
            let i = rng.gen_range(0..HEADER_LEN);
            m[i] = rng.gen();
            let _ = Fixture::parse(&m); // any answer but a panic
        }
    }
}
