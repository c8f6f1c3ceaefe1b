//! Resumable download of an update package into a NorFlash region, surviving resets.
//!
//! Region layout (offsets from `base`; `S` = `max(4, WRITE_SIZE)`, one write unit per slot):
//!
//! | offset            | content                                                        |
//! |-------------------|----------------------------------------------------------------|
//! | 0                 | magic `STAGE_MAGIC` (written last by `begin`: a cut begin is no begin) |
//! | S                 | announced length (u32 LE)                                      |
//! | 2·S               | announced CRC-32 (u32 LE)                                      |
//! | 3·S …  ERASE_SIZE | progress log: one slot per written chunk, the byte count staged so far |
//! | ERASE_SIZE …      | the package bytes                                              |
//!
//! NOR flash only clears bits, so progress is appended, never rewritten: the staged length is
//! the last non-erased log slot. A chunk's data is written before its log slot, so after a
//! power cut the log never claims bytes that are not in flash; a resume restarts at the
//! erase sector holding the staged length, erased afresh (a cut chunk may have left bytes
//! beyond it that NOR could not overwrite).
use embedded_storage::nor_flash::NorFlash;

/// Marks a valid staging header ("LKDS").
pub const STAGE_MAGIC: u32 = 0x5344_4B4C;
const ERASED: u32 = 0xFFFF_FFFF;

/// A staging failure.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StageError {
    /// The flash driver failed.
    Flash,
    /// No `begin` yet (or the staged package was consumed).
    NotStarted,
    /// A chunk not at the expected offset.
    BadOffset { expected: u32 },
    /// The package (or a chunk) does not fit; `limit` is the most the device takes.
    TooLarge { limit: u32 },
    /// A non-final chunk whose length is not a multiple of the flash write size.
    Unaligned,
    /// Commit before every byte arrived.
    Incomplete,
    /// The staged bytes do not match the announced CRC.
    Crc,
}

/// A staging area over `flash[base .. base + size]` (`base`, `size` multiples of ERASE_SIZE).
pub struct Staging<F> {
    flash: F,
    base: u32,
    size: u32,
    header: Option<(u32, u32)>,
    staged: u32,
    log_used: u32,
}

impl<F: NorFlash> Staging<F> {
    const SLOT: u32 = if F::WRITE_SIZE > 4 {
        F::WRITE_SIZE as u32
    } else {
        4
    };
    const LOG_SLOTS: u32 = F::ERASE_SIZE as u32 / Self::SLOT - 3;
    /// Reads and writes go through 64-byte buffers at 64-aligned offsets, which suits any
    /// flash whose read and write sizes divide 64.
    const FITS: () =
        assert!(64usize.is_multiple_of(F::WRITE_SIZE) && 64usize.is_multiple_of(F::READ_SIZE));

    /// Opens the region and recovers a staging in progress.
    pub fn open(flash: F, base: u32, size: u32) -> Result<Self, StageError> {
        #[allow(clippy::let_unit_value)]
        let () = Self::FITS;
        let mut s = Staging {
            flash,
            base,
            size,
            header: None,
            staged: 0,
            log_used: 0,
        };
        if s.read_u32(0)? == STAGE_MAGIC {
            let len = s.read_u32(Self::SLOT)?;
            let crc = s.read_u32(2 * Self::SLOT)?;
            s.header = Some((len, crc));
            for i in 0..Self::LOG_SLOTS {
                let v = s.read_u32((3 + i) * Self::SLOT)?;
                if v == ERASED {
                    break;
                }
                s.staged = v.min(len);
                s.log_used = i + 1;
            }
        }
        Ok(s)
    }

    /// Most package bytes the region holds.
    pub fn capacity(&self) -> u32 {
        self.size.saturating_sub(F::ERASE_SIZE as u32)
    }

    /// `(staged, len)` of the package in progress, if any.
    pub fn progress(&self) -> Option<(u32, u32)> {
        self.header.map(|(len, _)| (self.staged, len))
    }

    /// Starts staging a package, or resumes the one with the same length and CRC; returns
    /// the offset to continue from.
    pub fn begin(&mut self, len: u32, crc: u32) -> Result<u32, StageError> {
        let e = F::ERASE_SIZE as u32;
        if self.header == Some((len, crc)) && self.log_used < Self::LOG_SLOTS {
            // A cut during the chunk after `staged` may have left some of its bytes in flash,
            // which NOR cannot overwrite: restart from the sector holding `staged`, erased.
            let resume = self.staged / e * e;
            let data = self.base + e;
            let end = data + len.div_ceil(e) * e;
            if data + resume < end {
                self.flash
                    .erase(data + resume, end)
                    .map_err(|_| StageError::Flash)?;
            }
            if resume != self.staged {
                self.append_log(resume)?;
            }
            return Ok(resume);
        }
        if len > self.capacity() {
            return Err(StageError::TooLarge {
                limit: self.capacity(),
            });
        }
        self.header = None;
        let end = e + len.div_ceil(e) * e;
        self.flash
            .erase(self.base, self.base + end)
            .map_err(|_| StageError::Flash)?;
        self.write_u32(Self::SLOT, len)?;
        self.write_u32(2 * Self::SLOT, crc)?;
        self.write_u32(0, STAGE_MAGIC)?;
        self.header = Some((len, crc));
        self.staged = 0;
        self.log_used = 0;
        Ok(0)
    }

    /// Writes the next chunk; returns the next offset expected.
    pub fn write(&mut self, offset: u32, data: &[u8]) -> Result<u32, StageError> {
        let (len, _) = self.header.ok_or(StageError::NotStarted)?;
        if offset != self.staged {
            return Err(StageError::BadOffset {
                expected: self.staged,
            });
        }
        let end = offset as u64 + data.len() as u64;
        if end > len as u64 {
            return Err(StageError::TooLarge { limit: len });
        }
        if self.log_used >= Self::LOG_SLOTS {
            // Each chunk takes a log slot; a host sending tiny chunks runs out of them.
            return Err(StageError::TooLarge { limit: self.staged });
        }
        let end = end as u32;
        let w = F::WRITE_SIZE;
        let whole = data.len() / w * w;
        if whole != data.len() && end != len {
            return Err(StageError::Unaligned);
        }
        let at = self.base + F::ERASE_SIZE as u32 + offset;
        if whole > 0 {
            self.flash
                .write(at, &data[..whole])
                .map_err(|_| StageError::Flash)?;
        }
        if whole != data.len() {
            // The last chunk's tail, padded with the erased value.
            let mut pad = [0xFFu8; 64];
            let tail = &data[whole..];
            pad[..tail.len()].copy_from_slice(tail);
            self.flash
                .write(at + whole as u32, &pad[..w])
                .map_err(|_| StageError::Flash)?;
        }
        self.append_log(end)?;
        Ok(end)
    }

    /// Records `staged` as the progress (the last log slot wins, so it may go back).
    fn append_log(&mut self, staged: u32) -> Result<(), StageError> {
        self.write_u32((3 + self.log_used) * Self::SLOT, staged)?;
        self.log_used += 1;
        self.staged = staged;
        Ok(())
    }

    /// Checks that the package is complete and matches its CRC; returns its flash offset
    /// and length. A CRC mismatch drops the staging (the next `begin` starts over).
    pub fn verify(&mut self) -> Result<(u32, u32), StageError> {
        let (len, crc) = self.header.ok_or(StageError::NotStarted)?;
        if self.staged != len {
            return Err(StageError::Incomplete);
        }
        let start = self.base + F::ERASE_SIZE as u32;
        let mut c = crate::crc::Crc32::new();
        let mut buf = [0u8; 64];
        let mut off = 0;
        while off < len {
            let n = (len - off).min(buf.len() as u32);
            self.flash
                .read(start + off, &mut buf[..])
                .map_err(|_| StageError::Flash)?;
            c.update(&buf[..n as usize]);
            off += n;
        }
        if c.finish() != crc {
            self.header = None;
            return Err(StageError::Crc);
        }
        Ok((start, len))
    }

    /// Forgets the staged package (after it was applied): erases the header sector.
    pub fn clear(&mut self) -> Result<(), StageError> {
        self.header = None;
        self.staged = 0;
        self.log_used = 0;
        self.flash
            .erase(self.base, self.base + F::ERASE_SIZE as u32)
            .map_err(|_| StageError::Flash)
    }

    /// The flash, for the update store to read the staged package from.
    pub fn flash(&mut self) -> &mut F {
        &mut self.flash
    }

    /// Gives the flash back.
    pub fn release(self) -> F {
        self.flash
    }

    fn read_u32(&mut self, off: u32) -> Result<u32, StageError> {
        let mut b = [0u8; 64];
        let n = Self::SLOT as usize;
        self.flash
            .read(self.base + off, &mut b[..n.max(F::READ_SIZE)])
            .map_err(|_| StageError::Flash)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn write_u32(&mut self, off: u32, v: u32) -> Result<(), StageError> {
        let mut b = [0xFFu8; 64];
        b[..4].copy_from_slice(&v.to_le_bytes());
        self.flash
            .write(self.base + off, &b[..Self::SLOT as usize])
            .map_err(|_| StageError::Flash)
    }
}
