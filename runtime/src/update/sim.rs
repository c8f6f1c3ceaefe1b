//! A RAM NOR flash that keeps NOR's rules and can lose power at any operation (host only).
//!
//! - erase works on whole `E`-byte blocks and sets them to `0xFF`;
//! - writes are `W`-aligned in offset and length and may only program words that were
//!   erased since they were last programmed (no double programming, as on flash with ECC);
//!   a violation fails the write and is counted (`violations`), so tests catch a store that
//!   relies on rewriting;
//! - [`SimFlash::cut_at`] makes the `n`-th operation the one during which power fails: an
//!   interrupted write completes a random prefix of its words (possibly all of them) and
//!   leaves the rest random (programmed, so they need an erase); an interrupted erase erases
//!   a random prefix of its blocks, leaves the block in flight random and the rest untouched. Every later operation
//!   fails until [`SimFlash::reboot`]. This is the MCUboot simulator's model of a power cut.
//! - [`SimFlash::fail_at`] makes the `n`-th operation fail *transiently* and return an
//!   error: half the time before it touched anything (the driver refused or timed out
//!   first), else after the damage a cut does (a random prefix done, the rest random); the
//!   device keeps running and later operations work.
//! - [`SimFlash::flip_bit`] flips one stored bit (retention loss, disturb): the data
//!   changes under the store without any operation.
//!
//! Self-contained (std + embedded-storage) so integration tests can also include it by path.
use embedded_storage::nor_flash::{ErrorType, NorFlash, NorFlashErrorKind, ReadNorFlash};

/// A simulated NOR flash with `W`-byte write units and `E`-byte erase blocks.
#[derive(Clone)]
pub struct SimFlash<const W: usize, const E: usize> {
    mem: Vec<u8>,
    programmed: Vec<bool>,
    ops: u64,
    cut: Option<u64>,
    fail: Option<u64>,
    failures: u64,
    dead: bool,
    violations: u64,
    rng: u64,
}

impl<const W: usize, const E: usize> SimFlash<W, E> {
    /// An erased flash of `capacity` bytes (rounded up to whole blocks); `seed` drives the
    /// undefined bytes of interrupted operations.
    pub fn new(capacity: usize, seed: u64) -> Self {
        let capacity = capacity.div_ceil(E) * E;
        SimFlash {
            mem: vec![0xFF; capacity],
            programmed: vec![false; capacity / W],
            ops: 0,
            cut: None,
            fail: None,
            failures: 0,
            dead: false,
            violations: 0,
            rng: seed ^ 0x9E37_79B9_7F4A_7C15,
        }
    }

    /// A flash holding `image` (padded with erased bytes to whole blocks). Words that read
    /// all `0xFF` count as erased.
    pub fn from_image(image: &[u8], seed: u64) -> Self {
        let mut f = Self::new(image.len(), seed);
        f.mem[..image.len()].copy_from_slice(image);
        for (i, p) in f.programmed.iter_mut().enumerate() {
            *p = f.mem[i * W..(i + 1) * W].iter().any(|&b| b != 0xFF);
        }
        f
    }

    /// The flash contents.
    pub fn image(&self) -> &[u8] {
        &self.mem
    }

    /// Erase and write operations so far (reads are not counted).
    pub fn ops(&self) -> u64 {
        self.ops
    }

    /// Replaces the seed of the undefined bytes (to vary what a cut leaves behind).
    pub fn reseed(&mut self, seed: u64) {
        self.rng = seed ^ 0x9E37_79B9_7F4A_7C15;
    }

    /// Makes operation number `op` (as counted by [`Self::ops`]) lose power.
    pub fn cut_at(&mut self, op: u64) {
        self.cut = Some(op);
    }

    /// Makes operation number `op` fail transiently (partial damage, an error, the flash
    /// keeps working).
    pub fn fail_at(&mut self, op: u64) {
        self.fail = Some(op);
    }

    /// Transient failures injected so far.
    pub fn failures(&self) -> u64 {
        self.failures
    }

    /// Flips bit `bit` (0..8) of the byte at `offset`, as a retention error would.
    pub fn flip_bit(&mut self, offset: usize, bit: u8) {
        self.mem[offset] ^= 1 << (bit % 8);
        let w = offset / W;
        self.programmed[w] = self.mem[w * W..(w + 1) * W].iter().any(|&b| b != 0xFF);
    }

    /// Power comes back: operations work again and no cut is armed.
    pub fn reboot(&mut self) {
        self.dead = false;
        self.cut = None;
    }

    /// True after a cut, until [`Self::reboot`].
    pub fn is_dead(&self) -> bool {
        self.dead
    }

    /// Writes refused because they would have programmed a word twice without an erase.
    pub fn violations(&self) -> u64 {
        self.violations
    }

    fn next(&mut self) -> u64 {
        // splitmix64
        self.rng = self.rng.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.rng;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn scramble(&mut self, from: usize, to: usize) {
        for i in from..to {
            self.mem[i] = self.next() as u8;
        }
        for w in from / W..to / W {
            self.programmed[w] = true;
        }
    }

    /// Starts an operation; `Ok(Some(cut))` when it fails part-way: `cut` when power is
    /// lost, else a transient failure.
    fn begin_op(&mut self) -> Result<Option<bool>, NorFlashErrorKind> {
        if self.dead {
            return Err(NorFlashErrorKind::Other);
        }
        let this = self.ops;
        self.ops += 1;
        if self.cut == Some(this) {
            return Ok(Some(true));
        }
        if self.fail == Some(this) {
            self.failures += 1;
            return Ok(Some(false));
        }
        Ok(None)
    }
}

impl<const W: usize, const E: usize> ErrorType for SimFlash<W, E> {
    type Error = NorFlashErrorKind;
}

impl<const W: usize, const E: usize> ReadNorFlash for SimFlash<W, E> {
    const READ_SIZE: usize = 1;

    fn read(&mut self, offset: u32, bytes: &mut [u8]) -> Result<(), Self::Error> {
        if self.dead {
            return Err(NorFlashErrorKind::Other);
        }
        let o = offset as usize;
        let src = o
            .checked_add(bytes.len())
            .and_then(|e| self.mem.get(o..e))
            .ok_or(NorFlashErrorKind::OutOfBounds)?;
        bytes.copy_from_slice(src);
        Ok(())
    }

    fn capacity(&self) -> usize {
        self.mem.len()
    }
}

impl<const W: usize, const E: usize> NorFlash for SimFlash<W, E> {
    const WRITE_SIZE: usize = W;
    const ERASE_SIZE: usize = E;

    fn erase(&mut self, from: u32, to: u32) -> Result<(), Self::Error> {
        let (from, to) = (from as usize, to as usize);
        if from > to || to > self.mem.len() {
            return Err(NorFlashErrorKind::OutOfBounds);
        }
        if !from.is_multiple_of(E) || !to.is_multiple_of(E) {
            return Err(NorFlashErrorKind::NotAligned);
        }
        let fault = self.begin_op()?;
        let cut = fault.is_some();
        if fault == Some(false) && self.next() & 1 == 0 {
            return Err(NorFlashErrorKind::Other);
        }
        let blocks = (to - from) / E;
        // An interrupted erase may have finished (or not started) any of its blocks.
        let done = if cut {
            (self.next() % (blocks as u64 + 1)) as usize
        } else {
            blocks
        };
        let end = from + done * E;
        self.mem[from..end].fill(0xFF);
        self.programmed[from / W..end / W].fill(false);
        if cut {
            if done < blocks {
                self.scramble(end, end + E);
            }
            self.dead = fault == Some(true);
            return Err(NorFlashErrorKind::Other);
        }
        Ok(())
    }

    fn write(&mut self, offset: u32, bytes: &[u8]) -> Result<(), Self::Error> {
        let o = offset as usize;
        let end = o
            .checked_add(bytes.len())
            .ok_or(NorFlashErrorKind::OutOfBounds)?;
        if end > self.mem.len() {
            return Err(NorFlashErrorKind::OutOfBounds);
        }
        if !o.is_multiple_of(W) || !bytes.len().is_multiple_of(W) {
            return Err(NorFlashErrorKind::NotAligned);
        }
        if self.dead {
            return Err(NorFlashErrorKind::Other);
        }
        if self.programmed[o / W..end / W].iter().any(|&p| p) {
            self.violations += 1;
            return Err(NorFlashErrorKind::Other);
        }
        let fault = self.begin_op()?;
        let cut = fault.is_some();
        if fault == Some(false) && self.next() & 1 == 0 {
            return Err(NorFlashErrorKind::Other);
        }
        let words = bytes.len() / W;
        // An interrupted write may have programmed any prefix of its words, all included.
        let done = if cut {
            (self.next() % (words as u64 + 1)) as usize
        } else {
            words
        };
        let mid = o + done * W;
        self.mem[o..mid].copy_from_slice(&bytes[..done * W]);
        self.programmed[o / W..mid / W].fill(true);
        if cut {
            self.scramble(mid, end);
            self.dead = fault == Some(true);
            return Err(NorFlashErrorKind::Other);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nor_rules_are_enforced() {
        let mut f = SimFlash::<4, 64>::new(256, 1);
        assert_eq!(f.write(2, &[0; 4]), Err(NorFlashErrorKind::NotAligned));
        assert_eq!(f.write(0, &[0; 3]), Err(NorFlashErrorKind::NotAligned));
        assert_eq!(f.erase(0, 32), Err(NorFlashErrorKind::NotAligned));
        assert_eq!(f.write(256, &[0; 4]), Err(NorFlashErrorKind::OutOfBounds));
        f.write(0, &[0xFF, 1, 2, 3]).unwrap();
        // Programmed once, even with 0xFF bytes: a second write needs an erase.
        assert_eq!(f.write(0, &[0xFF, 1, 2, 3]), Err(NorFlashErrorKind::Other));
        assert_eq!(f.violations(), 1);
        f.erase(0, 64).unwrap();
        f.write(0, &[9; 8]).unwrap();
        let mut b = [0u8; 8];
        f.read(0, &mut b).unwrap();
        assert_eq!(b, [9; 8]);
        assert_eq!(f.ops(), 3);
    }

    #[test]
    fn a_transient_failure_damages_like_a_cut_but_the_flash_keeps_working() {
        for seed in 0..32 {
            let mut f = SimFlash::<4, 64>::new(256, seed);
            f.fail_at(1);
            f.write(0, &[1; 4]).unwrap();
            assert_eq!(f.write(64, &[0u8; 64]), Err(NorFlashErrorKind::Other));
            assert!(!f.is_dead());
            assert_eq!(f.failures(), 1);
            // Later operations work without a reboot.
            f.erase(64, 128).unwrap();
            f.write(64, &[2; 64]).unwrap();
            assert_eq!(f.image()[64..128], [2; 64]);
            f.flip_bit(65, 3);
            assert_eq!(f.image()[65], 2 ^ 8);
        }
    }

    #[test]
    fn a_cut_leaves_words_programmed_and_powers_off() {
        for seed in 0..32 {
            let mut f = SimFlash::<4, 64>::new(256, seed);
            f.cut_at(0);
            assert_eq!(f.write(64, &[0u8; 64]), Err(NorFlashErrorKind::Other));
            assert!(f.is_dead());
            let mut b = [0u8; 4];
            assert_eq!(f.read(0, &mut b), Err(NorFlashErrorKind::Other));
            f.reboot();
            // Whatever the cut left, the range needs an erase before it is written again
            // unless the write completed, and the words before it are untouched.
            assert!(f.image()[..64].iter().all(|&x| x == 0xFF));
            let complete = f.image()[64..128].iter().all(|&x| x == 0);
            assert!(
                f.write(124, &[1; 4]).is_err(),
                "seed {seed}, complete {complete}"
            );
            f.erase(64, 128).unwrap();
            f.write(64, &[1; 64]).unwrap();
        }
    }
}
