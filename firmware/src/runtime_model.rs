//! [`Model`] over `lorkd_runtime`: the bundle parsed in place from memory-mapped flash, an
//! [`Engine`] on a caller's static arena (checked against `bundle.arena_bytes(mode)` at
//! start), and the A/B [`UpdateStore`] on NOR flash.
//!
//! - Departments: each runs what the store picked at boot — the newest committed slot whose
//!   bytes still hash to their committed digest and whose version passes the security
//!   counter, else the bundle's own delta. A slot's blob is parsed in place from the mapped
//!   flash ([`MappedFlash`]) once, at start and after each commit, not copied to RAM.
//! - Updates: the package streams into the department's inactive slot as it arrives
//!   ([`UpdateStore::begin_fresh`] once the 128-byte header is in, then
//!   [`UpdateStore::write`]); after a reset the journal says where it stopped and the header
//!   is read back from the slot ([`UpdateStore::begin`] resumes). The commit verifies and
//!   appends one journal record; a department that runs the updated one is re-selected
//!   right away, so the next inference runs the new version.
//!
//! In-place reads are sound because nothing is ever written under a mapped slice: the bundle
//! is not in the store's regions, and the store writes only a department's *inactive* slot
//! (and its journal); the active slot it replaces at a commit is re-mapped before the next
//! write can reach it.
use crate::crc::Crc32;
use crate::model::{Model, ModelError, PendingUpdate, UPDATE_HEADER_LEN};
use embedded_storage::nor_flash::NorFlash;
use lorkd_runtime::engine::{Engine, EngineError};
use lorkd_runtime::format::{Bundle, Dept, Mode};
use lorkd_runtime::update::package::TRAILER_LEN;
use lorkd_runtime::update::{Active, Layout, PackageHeader, UpdateError, UpdateStore};

/// A NOR flash the CPU can also read through its address space (an MCU's internal flash, a
/// QSPI flash in XIP mode): update slots are read in place.
///
/// # Safety
/// `map(offset, len)` must return exactly the `len` bytes at flash `offset` as they are
/// stored, as a slice valid for `'m`, or `None` when the range is out of bounds; those bytes
/// may change only through `erase` / `write` of this flash (or of another handle to the same
/// flash). The user promises not to erase or write a range while a slice mapped from it is
/// in use ([`RuntimeModel`] keeps to that, see the module docs).
pub unsafe trait MappedFlash<'m>: NorFlash {
    /// The bytes at `offset .. offset + len`.
    fn map(&self, offset: u32, len: u32) -> Option<&'m [u8]>;
}

/// Bytes of scratch RAM [`RuntimeModel::new`] needs for a layout: the largest blob a slot
/// takes (the store reads a finished package's blob into it to check it against the bundle).
pub fn scratch_bytes(layout: &Layout) -> usize {
    (layout.slot_size as usize).saturating_sub(UPDATE_HEADER_LEN + TRAILER_LEN)
}

/// The error frame `detail` for an engine error.
pub fn engine_code(e: &EngineError) -> u32 {
    match e {
        EngineError::ArenaTooSmall { .. } => 1,
        EngineError::Misaligned => 2,
        EngineError::UnknownDepartment { .. } => 3,
        EngineError::NoDepartment => 4,
        EngineError::InputSize { .. } => 5,
        EngineError::LogitsSize { .. } => 6,
        EngineError::Malformed { .. } => 7,
        EngineError::DeptMismatch => 8,
        _ => 0xFF,
    }
}

/// The error frame `detail` for an update store error (`UpdateRejected`).
pub fn update_code(e: &UpdateError) -> u32 {
    use UpdateError::*;
    match e {
        Flash(_) => 1,
        Layout => 2,
        LayoutMismatch => 3,
        PackageBadMagic => 4,
        PackageUnsupportedVersion => 5,
        PackageBadHeader => 6,
        PackageTruncated => 7,
        PackageTrailing => 8,
        HashMismatch => 9,
        BadKey => 10,
        SignatureInvalid => 11,
        UnknownDepartment => 12,
        BaseMismatch => 13,
        TooLarge => 14,
        VersionOld => 15,
        VersionCurrent => 16,
        VersionBelowCounter => 17,
        Blob(_) => 18,
        BlobMismatch => 19,
        HeaderMismatch => 20,
        NoUpdate => 21,
        OutOfOrder => 22,
        Overflow => 23,
        Incomplete => 24,
        ScratchTooSmall => 25,
        _ => 0xFF,
    }
}

fn engine_err(e: EngineError) -> ModelError {
    ModelError::Engine(engine_code(&e))
}

fn update_err(e: UpdateError) -> ModelError {
    match e {
        UpdateError::Flash(_) => ModelError::Flash,
        e => ModelError::Update(update_code(&e)),
    }
}

/// The device model over `lorkd_runtime`, for bundles of up to `D` departments.
pub struct RuntimeModel<'m, F: NorFlash, const D: usize = 16> {
    bundle: &'m Bundle<'m>,
    engine: Engine<'m, 'm>,
    store: UpdateStore<F, D>,
    scratch: &'m mut [u8],
    /// Departments running a committed slot: its blob, parsed in place from the flash.
    slots: [Option<Dept<'m>>; D],
    active: usize,
    input_len: usize,
}

impl<'m, F: MappedFlash<'m>, const D: usize> RuntimeModel<'m, F, D> {
    /// Starts the model: checks `arena` against `bundle.arena_bytes(mode)` and `scratch`
    /// against [`scratch_bytes`], maps every department's committed slot, and selects the
    /// first department that has a version to run. `store` must have been opened on this
    /// bundle (`UpdateStore::open`).
    ///
    /// # Errors
    /// `Engine(1)` (arena too small) and the engine's other errors, `Update(25)` (scratch too
    /// small), `Update(..)` when a committed slot's blob does not parse, `BadDepartment`
    /// when the bundle has more than `D` departments or none can run.
    pub fn new(
        bundle: &'m Bundle<'m>,
        arena: &'m mut [u8],
        mode: Mode,
        store: UpdateStore<F, D>,
        scratch: &'m mut [u8],
    ) -> Result<Self, ModelError> {
        let needed = bundle.arena_bytes(mode);
        if arena.len() < needed {
            return Err(engine_err(EngineError::ArenaTooSmall {
                needed,
                got: arena.len(),
            }));
        }
        if scratch.len() < scratch_bytes(store.layout()) {
            return Err(update_err(UpdateError::ScratchTooSmall));
        }
        let n = bundle.department_count();
        if n == 0 || n > D {
            return Err(ModelError::BadDepartment);
        }
        let engine = Engine::new(bundle, arena, mode).map_err(engine_err)?;
        let input = bundle.manifest().input;
        let input_len = input.channels as usize * input.size as usize * input.size as usize;
        let mut m = RuntimeModel {
            bundle,
            engine,
            store,
            scratch,
            slots: [None; D],
            active: 0,
            input_len,
        };
        for d in 0..n {
            m.slots[d] = m.map_slot(d)?;
        }
        let first = (0..n).find(|&d| m.select(d).is_ok());
        first.ok_or(ModelError::BadDepartment)?;
        Ok(m)
    }

    /// The update store (what each department runs, the security counters, the journal).
    pub fn store(&mut self) -> &mut UpdateStore<F, D> {
        &mut self.store
    }

    /// The engine (for board self-checks that drive it directly).
    pub fn engine(&mut self) -> &mut Engine<'m, 'm> {
        &mut self.engine
    }

    /// The bundle.
    pub fn bundle(&self) -> &'m Bundle<'m> {
        self.bundle
    }

    /// Department `d`'s committed slot blob, parsed in place, when it runs one.
    fn map_slot(&mut self, d: usize) -> Result<Option<Dept<'m>>, ModelError> {
        let Active::Slot {
            blob_offset,
            blob_len,
            ..
        } = self.store.active(d)
        else {
            return Ok(None);
        };
        let blob = self
            .store
            .flash_mut()
            .map(blob_offset, blob_len)
            .ok_or(update_err(UpdateError::Layout))?;
        let m = self.bundle.manifest();
        Dept::parse_blob(blob, m, self.bundle.base_id())
            .map(Some)
            .map_err(|e| update_err(UpdateError::Blob(e)))
    }

    /// The pending update's header as it lies in its slot, and where the package resumes.
    fn pending_header(&mut self) -> Option<([u8; UPDATE_HEADER_LEN], u32, u32)> {
        let rp = self.store.resume_point()?;
        let at = self.store.layout().slot_offset(rp.dept as usize, rp.slot);
        let mut h = [0u8; UPDATE_HEADER_LEN];
        self.store.flash_mut().read(at, &mut h).ok()?;
        let len = PackageHeader::parse(&h).ok()?.package_len() as u32;
        // As `UpdateStore::begin` resumes: at the last whole erase page, within the package.
        let e = F::ERASE_SIZE as u32;
        let offset = rp.offset.min(len) / e * e;
        (offset > 0).then_some((h, len, offset))
    }
}

impl<'m, F: MappedFlash<'m>, const D: usize> Model for RuntimeModel<'m, F, D> {
    fn departments(&self) -> usize {
        self.bundle.department_count()
    }

    fn name(&self, i: usize) -> &str {
        self.bundle.department(i).map_or("", |d| d.manifest.name)
    }

    fn version(&self, i: usize) -> u32 {
        if i >= self.departments() {
            return 0;
        }
        self.store.active(i).version().unwrap_or(0)
    }

    fn active(&self) -> usize {
        self.active
    }

    fn select(&mut self, i: usize) -> Result<(), ModelError> {
        if i >= self.departments() {
            return Err(ModelError::BadDepartment);
        }
        let r = match (self.slots[i], self.store.active(i)) {
            (Some(dept), _) => self.engine.select_blob(dept),
            (None, Active::Factory { .. }) => self.engine.select(i),
            (None, _) => return Err(update_err(UpdateError::VersionBelowCounter)),
        };
        r.map_err(engine_err)?;
        self.active = i;
        Ok(())
    }

    fn input_len(&self) -> usize {
        self.input_len
    }

    fn classes(&self) -> usize {
        self.engine.department().map_or(0, |d| d.classes())
    }

    fn infer(&mut self, chw: &[f32], scores: &mut [f32]) -> Result<(), ModelError> {
        if chw.len() != self.input_len || scores.len() != self.classes() {
            return Err(ModelError::Shape);
        }
        // The protocol's CHW f32 frame is what the engine takes (it quantises the input
        // itself for int8 bundles).
        self.engine.infer(chw, scores).map_err(engine_err)?;
        Ok(())
    }

    fn update_capacity(&self) -> u32 {
        self.store.layout().slot_size
    }

    fn update_pending(&mut self) -> Option<PendingUpdate> {
        let (_, len, offset) = self.pending_header()?;
        let rp = self.store.resume_point()?;
        let at = self.store.layout().slot_offset(rp.dept as usize, rp.slot);
        let mut crc = Crc32::new();
        let mut buf = [0u8; 256];
        let mut o = 0;
        while o < offset {
            let n = (offset - o).min(buf.len() as u32) as usize;
            self.store.flash_mut().read(at + o, &mut buf[..n]).ok()?;
            crc.update(&buf[..n]);
            o += n as u32;
        }
        Some(PendingUpdate { len, offset, crc })
    }

    fn update_resume(&mut self) -> Result<u32, ModelError> {
        let (h, _, _) = self
            .pending_header()
            .ok_or(update_err(UpdateError::NoUpdate))?;
        self.store.begin(&h, self.bundle).map_err(update_err)
    }

    fn update_begin(&mut self, header: &[u8]) -> Result<(), ModelError> {
        self.store
            .begin_fresh(header, self.bundle)
            .map_err(update_err)
    }

    fn update_write(&mut self, offset: u32, data: &[u8]) -> Result<(), ModelError> {
        self.store.write(offset, data).map_err(update_err)
    }

    fn update_commit(&mut self) -> Result<(usize, u32), ModelError> {
        let d = self
            .store
            .finish(self.bundle, self.scratch)
            .map_err(update_err)?;
        // Committed: map the new slot; the one it replaces is no longer referenced once the
        // engine re-selects (before any later update can write there).
        match self.map_slot(d) {
            Ok(dept) => self.slots[d] = dept,
            Err(e) => {
                // Cannot happen for a blob `finish` just checked; still, never keep running
                // from the replaced slot: fall back to the bundle's own blob.
                self.slots[d] = None;
                if d == self.active {
                    let _ = self.engine.select(d);
                }
                return Err(e);
            }
        }
        if d == self.active {
            self.select(d)?;
        }
        Ok((d, self.version(d)))
    }
}
