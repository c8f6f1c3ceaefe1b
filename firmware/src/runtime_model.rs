//! [`Model`] over `lorkd_runtime`: the bundle parsed in place from memory-mapped flash, an
//! [`Engine`] on a caller's static arena (checked against `bundle.arena_bytes(mode)` at
//! start), and the A/B [`UpdateStore`] on NOR flash.
//!
//! - Departments: each runs what the store picked at boot — the newest committed slot whose
//!   bytes still hash to their committed digest and whose version passes the security
//!   counter, else the bundle's own delta. The bundle's departments come first, then those
//!   added in the field (the store's added slot pairs that hold one, in slot order): `Hello`
//!   lists them all and `Select` takes any. A slot's blob is parsed in place from the mapped
//!   flash ([`MappedFlash`]) once, at start and after each commit, not copied to RAM.
//! - Verified boot: [`verify_bundle`] parses the bundle only with a valid signature by the
//!   vendor key the board was built with; a refused bundle boots [`Halted`] ([`Device`]),
//!   which runs nothing and says why over the protocol.
//! - A committed slot whose header signature, hashes or blob fail at boot falls back (to
//!   the other slot or the bundle's own delta); `Status` names the department and why.
//! - A refused update store (both journal bank headers invalid) is never formatted
//!   implicitly: the bundle's departments run, updates are refused, `FormatStore` formats.
//! - Updates: the package streams into the department's inactive slot as it arrives
//!   ([`UpdateStore::begin_fresh`] once the 192-byte signed header is in, then
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
pub use crate::model::Halted;
use crate::model::{Model, ModelError, PendingUpdate, UPDATE_HEADER_LEN};
use crate::proto::{DeptFault, Health, MAX_CLASSES, MAX_DEPTS};
use embedded_storage::nor_flash::NorFlash;
use lorkd_runtime::engine::{Engine, EngineError};
use lorkd_runtime::format::{Bundle, Dept, FormatError, Mode};
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
    (layout.slot_size as usize).saturating_sub(UPDATE_HEADER_LEN)
}

/// The reason code of a refused bundle ([`Health::BundleRefused`]).
pub fn bundle_code(e: &FormatError) -> u32 {
    match e {
        FormatError::SignatureMissing => 1,
        FormatError::SignatureInvalid => 2,
        FormatError::SignatureBadKey => 3,
        _ => 4,
    }
}

/// Verified boot: the bundle in place, only if it carries a valid ed25519 signature by
/// `vendor_key` (the key the board was built with); else the [`Halted`] model that says why.
///
/// # Errors
/// `Halted` with [`bundle_code`]: unsigned (1), bad signature (2), bad key (3), damaged (4).
pub fn verify_bundle<'m>(bytes: &'m [u8], vendor_key: &[u8; 32]) -> Result<Bundle<'m>, Halted> {
    Bundle::parse_signed(bytes, vendor_key).map_err(|e| Halted {
        reason: bundle_code(&e),
    })
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
        JournalDamaged => 26,
        NameClash => 27,
        TooManyDepartments => 28,
        TooManyClasses => 29,
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

/// The update store as the device found it at boot.
// No allocator to box the store; the model lives in a static, so the size costs nothing.
#[allow(clippy::large_enum_variant)]
enum StoreState<F: NorFlash, const D: usize> {
    Open(UpdateStore<F, D>),
    /// `UpdateStore::try_open` refused: the flash is kept for an explicit format.
    Refused {
        flash: F,
        error: UpdateError,
    },
    /// Moved out for the length of a format.
    Moving,
}

/// The device model over `lorkd_runtime`, for bundles of up to `D` departments.
pub struct RuntimeModel<'m, F: NorFlash, const D: usize = 16> {
    bundle: &'m Bundle<'m>,
    engine: Engine<'m, 'm>,
    store: StoreState<F, D>,
    layout: Layout,
    pubkey: [u8; 32],
    scratch: &'m mut [u8],
    /// Departments running a committed slot (by store index): its blob, parsed in place.
    slots: [Option<Dept<'m>>; D],
    /// The active department (model index: the bundle's, then the added ones).
    active: usize,
    input_len: usize,
}

impl<'m, F: MappedFlash<'m>, const D: usize> RuntimeModel<'m, F, D> {
    /// Starts the model: checks `arena` against `bundle.arena_bytes(mode)` and `scratch`
    /// against [`scratch_bytes`], opens the update store on `flash` (`layout`, packages
    /// signed by `pubkey`), maps every department's committed slot (one that does not parse
    /// falls back, see [`Model::faults`]), and selects the first department that has a
    /// version to run. A store that refuses to open leaves the bundle's departments running
    /// ([`Model::health`]). `bundle` should come from [`verify_bundle`].
    ///
    /// # Errors
    /// `Engine(1)` (arena too small) and the engine's other errors, `Update(25)` (scratch too
    /// small), `BadDepartment` when the bundle has more than `D` departments or none can run.
    pub fn new(
        bundle: &'m Bundle<'m>,
        arena: &'m mut [u8],
        mode: Mode,
        flash: F,
        layout: Layout,
        pubkey: [u8; 32],
        scratch: &'m mut [u8],
    ) -> Result<Self, ModelError> {
        let needed = bundle.arena_bytes(mode);
        if arena.len() < needed {
            return Err(engine_err(EngineError::ArenaTooSmall {
                needed,
                got: arena.len(),
            }));
        }
        if scratch.len() < scratch_bytes(&layout) {
            return Err(update_err(UpdateError::ScratchTooSmall));
        }
        let n = bundle.department_count();
        if n == 0 || n > D {
            return Err(ModelError::BadDepartment);
        }
        let engine = Engine::new(bundle, arena, mode).map_err(engine_err)?;
        let input = bundle.manifest().input;
        let input_len = input.channels as usize * input.size as usize * input.size as usize;
        let store = match UpdateStore::try_open(flash, layout, pubkey, bundle) {
            Ok(mut s) => {
                // A head must fit the protocol's score frame.
                s.set_max_classes(MAX_CLASSES);
                StoreState::Open(s)
            }
            Err((flash, error)) => StoreState::Refused { flash, error },
        };
        let mut m = RuntimeModel {
            bundle,
            engine,
            store,
            layout,
            pubkey,
            scratch,
            slots: [None; D],
            active: 0,
            input_len,
        };
        m.map_all();
        let first = (0..n).find(|&d| m.select(d).is_ok());
        first.ok_or(ModelError::BadDepartment)?;
        Ok(m)
    }

    /// The update store, when it opened.
    pub fn store(&mut self) -> Option<&mut UpdateStore<F, D>> {
        match &mut self.store {
            StoreState::Open(s) => Some(s),
            _ => None,
        }
    }

    /// The engine (for board self-checks that drive it directly).
    pub fn engine(&mut self) -> &mut Engine<'m, 'm> {
        &mut self.engine
    }

    /// The bundle.
    pub fn bundle(&self) -> &'m Bundle<'m> {
        self.bundle
    }

    fn open_store(&mut self) -> Result<&mut UpdateStore<F, D>, ModelError> {
        match &mut self.store {
            StoreState::Open(s) => Ok(s),
            StoreState::Refused { error, .. } => Err(update_err(*error)),
            StoreState::Moving => Err(ModelError::BadState),
        }
    }

    /// The store index of model department `i` (the bundle's departments, then the added
    /// ones that exist, in slot order).
    fn store_index(&self, i: usize) -> Option<usize> {
        let n = self.bundle.department_count();
        if i < n {
            return Some(i);
        }
        match &self.store {
            StoreState::Open(s) => s.added().nth(i - n),
            _ => None,
        }
    }

    /// The model index of store index `d`.
    fn model_index(&self, d: usize) -> usize {
        let n = self.bundle.department_count();
        match &self.store {
            StoreState::Open(s) if d >= n => n + s.added().take_while(|&x| x != d).count(),
            _ => d,
        }
    }

    /// What store department `d` runs: the store's pick, or the bundle's own blob when the
    /// store did not open.
    fn active_of(&self, d: usize) -> Active {
        match &self.store {
            StoreState::Open(s) => s.active(d),
            _ => Active::Factory {
                version: self.bundle.department(d).map_or(0, |x| x.manifest.version),
            },
        }
    }

    /// Maps every department's committed slot; one whose blob does not parse is rejected
    /// (the store falls back to the other slot or the bundle's blob) and the next tried.
    fn map_all(&mut self) {
        let total = match &self.store {
            StoreState::Open(s) => s.department_slots().min(D),
            _ => self.bundle.department_count(),
        };
        for d in 0..total {
            self.slots[d] = None;
            // At most two slots to reject, then the bundle's own blob (never mapped).
            for _ in 0..3 {
                match self.map_slot(d) {
                    Ok(dept) => {
                        self.slots[d] = dept;
                        break;
                    }
                    Err(e) => {
                        if let StoreState::Open(s) = &mut self.store {
                            s.reject_active(d, e);
                        }
                    }
                }
            }
        }
    }

    /// Department `d`'s committed slot blob, parsed in place, when it runs one.
    fn map_slot(&mut self, d: usize) -> Result<Option<Dept<'m>>, UpdateError> {
        let StoreState::Open(store) = &mut self.store else {
            return Ok(None);
        };
        let Active::Slot {
            blob_offset,
            blob_len,
            ..
        } = store.active(d)
        else {
            return Ok(None);
        };
        let blob = store
            .flash_mut()
            .map(blob_offset, blob_len)
            .ok_or(UpdateError::Layout)?;
        let m = self.bundle.manifest();
        let dept = Dept::parse_blob(blob, m, self.bundle.base_id()).map_err(UpdateError::Blob)?;
        // A blob of another department (or version) than the committed one never runs.
        let name = match self.bundle.department(d) {
            Some(x) => Some(x.manifest.name),
            None => store.added_name(d),
        };
        if name != Some(dept.manifest.name)
            || store.active(d).version() != Some(dept.manifest.version)
        {
            return Err(UpdateError::BlobMismatch);
        }
        Ok(Some(dept))
    }

    /// The pending update's header as it lies in its slot, and where the package resumes.
    fn pending_header(&mut self) -> Option<([u8; UPDATE_HEADER_LEN], u32, u32)> {
        let StoreState::Open(store) = &mut self.store else {
            return None;
        };
        let rp = store.resume_point()?;
        let at = store.layout().slot_offset(rp.dept as usize, rp.slot);
        let mut h = [0u8; UPDATE_HEADER_LEN];
        store.flash_mut().read(at, &mut h).ok()?;
        let len = PackageHeader::parse(&h).ok()?.package_len();
        // As `UpdateStore::begin` resumes: at the last whole erase page, within the package.
        let e = F::ERASE_SIZE as u32;
        let offset = rp.offset.min(len) / e * e;
        (offset > 0).then_some((h, len, offset))
    }
}

impl<'m, F: MappedFlash<'m>, const D: usize> Model for RuntimeModel<'m, F, D> {
    fn departments(&self) -> usize {
        let added = match &self.store {
            StoreState::Open(s) => s.added().count(),
            _ => 0,
        };
        self.bundle.department_count() + added
    }

    fn name(&self, i: usize) -> &str {
        if let Some(d) = self.bundle.department(i) {
            return d.manifest.name;
        }
        match (&self.store, self.store_index(i)) {
            (StoreState::Open(s), Some(d)) => s.added_name(d).unwrap_or(""),
            _ => "",
        }
    }

    fn version(&self, i: usize) -> u32 {
        self.store_index(i)
            .and_then(|d| self.active_of(d).version())
            .unwrap_or(0)
    }

    fn active(&self) -> usize {
        self.active
    }

    fn select(&mut self, i: usize) -> Result<(), ModelError> {
        let d = self.store_index(i).ok_or(ModelError::BadDepartment)?;
        if d >= D {
            return Err(ModelError::BadDepartment);
        }
        let r = match (self.slots[d], self.active_of(d)) {
            (Some(dept), _) => self.engine.select_blob(dept),
            (None, Active::Factory { .. }) => self.engine.select(d),
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
        self.layout.slot_size
    }

    fn update_pending(&mut self) -> Option<PendingUpdate> {
        let (_, len, offset) = self.pending_header()?;
        let store = self.store()?;
        let rp = store.resume_point()?;
        let at = store.layout().slot_offset(rp.dept as usize, rp.slot);
        let mut crc = Crc32::new();
        let mut buf = [0u8; 256];
        let mut o = 0;
        while o < offset {
            let n = (offset - o).min(buf.len() as u32) as usize;
            store.flash_mut().read(at + o, &mut buf[..n]).ok()?;
            crc.update(&buf[..n]);
            o += n as u32;
        }
        Some(PendingUpdate { len, offset, crc })
    }

    fn update_resume(&mut self) -> Result<u32, ModelError> {
        let (h, _, _) = self
            .pending_header()
            .ok_or(update_err(UpdateError::NoUpdate))?;
        let bundle = self.bundle;
        self.open_store()?.begin(&h, bundle).map_err(update_err)
    }

    fn update_begin(&mut self, header: &[u8]) -> Result<(), ModelError> {
        let bundle = self.bundle;
        self.open_store()?
            .begin_fresh(header, bundle)
            .map_err(update_err)
    }

    fn update_write(&mut self, offset: u32, data: &[u8]) -> Result<(), ModelError> {
        self.open_store()?.write(offset, data).map_err(update_err)
    }

    fn update_commit(&mut self) -> Result<(usize, u32), ModelError> {
        let bundle = self.bundle;
        let d = match &mut self.store {
            StoreState::Open(store) => store.finish(bundle, self.scratch).map_err(update_err)?,
            StoreState::Refused { error, .. } => return Err(update_err(*error)),
            StoreState::Moving => return Err(ModelError::BadState),
        };
        if d >= D {
            return Err(ModelError::BadDepartment);
        }
        if matches!(self.active_of(d), Active::Removed { .. }) {
            // A removal: the department is gone (model indices after it shift down); a
            // device running an added department falls back to the bundle's first.
            let i = self.model_index(d);
            self.slots[d] = None;
            if self.active >= self.bundle.department_count() {
                self.select(0)?;
            }
            return Ok((i, 0));
        }
        // Committed: map the new slot; the one it replaces is no longer referenced once the
        // engine re-selects (before any later update can write there).
        let i = self.model_index(d);
        match self.map_slot(d) {
            Ok(dept) => self.slots[d] = dept,
            Err(e) => {
                // Cannot happen for a blob `finish` just checked; still, never keep running
                // from the replaced slot: fall back and report it.
                self.slots[d] = None;
                if let StoreState::Open(s) = &mut self.store {
                    s.reject_active(d, e);
                }
                if i == self.active {
                    let _ = self.select(i);
                }
                return Err(update_err(e));
            }
        }
        if i == self.active {
            self.select(i)?;
        }
        Ok((i, self.version(i)))
    }

    fn health(&self) -> Health {
        match &self.store {
            StoreState::Refused { error, .. } => Health::StoreRefused(update_code(error)),
            _ => Health::Ok,
        }
    }

    fn faults(&self) -> heapless::Vec<DeptFault, MAX_DEPTS> {
        let mut out = heapless::Vec::new();
        if let StoreState::Open(s) = &self.store {
            for i in 0..self.departments().min(MAX_DEPTS) {
                if let Some(e) = self.store_index(i).and_then(|d| s.fault(d)) {
                    let _ = out.push(DeptFault {
                        dept: i as u8,
                        code: update_code(&e),
                    });
                }
            }
        }
        out
    }

    fn format_store(&mut self) -> Result<(), ModelError> {
        if !matches!(self.store, StoreState::Refused { .. }) {
            // Formatting a working journal would forget its commits: only a refused one.
            return Err(ModelError::BadState);
        }
        let StoreState::Refused { flash, .. } =
            core::mem::replace(&mut self.store, StoreState::Moving)
        else {
            return Err(ModelError::BadState);
        };
        match UpdateStore::try_format(flash, self.layout, self.pubkey, self.bundle) {
            Ok(s) => self.store = StoreState::Open(s),
            Err((flash, error)) => {
                self.store = StoreState::Refused { flash, error };
                return Err(update_err(error));
            }
        }
        self.map_all();
        let a = self.active;
        if self.select(a).is_err() {
            let first = (0..self.departments()).find(|&d| self.select(d).is_ok());
            first.ok_or(ModelError::BadDepartment)?;
        }
        Ok(())
    }
}

/// What a board boots into: the model over a verified bundle, or [`Halted`] when the
/// bundle was refused (one `App` type either way).
// No allocator to box the model; it lives in a static, so the size costs nothing.
#[allow(clippy::large_enum_variant)]
pub enum Device<'m, F: NorFlash, const D: usize = 16> {
    Running(RuntimeModel<'m, F, D>),
    Halted(Halted),
}

impl<'m, F: MappedFlash<'m>, const D: usize> Device<'m, F, D> {
    /// The running model, if the bundle verified.
    pub fn running(&mut self) -> Option<&mut RuntimeModel<'m, F, D>> {
        match self {
            Device::Running(m) => Some(m),
            Device::Halted(_) => None,
        }
    }
}

macro_rules! delegate {
    ($self:ident, $m:ident => $e:expr) => {
        match $self {
            Device::Running($m) => $e,
            Device::Halted($m) => $e,
        }
    };
}

impl<'m, F: MappedFlash<'m>, const D: usize> Model for Device<'m, F, D> {
    fn departments(&self) -> usize {
        delegate!(self, m => m.departments())
    }
    fn name(&self, i: usize) -> &str {
        delegate!(self, m => m.name(i))
    }
    fn version(&self, i: usize) -> u32 {
        delegate!(self, m => m.version(i))
    }
    fn active(&self) -> usize {
        delegate!(self, m => m.active())
    }
    fn select(&mut self, i: usize) -> Result<(), ModelError> {
        delegate!(self, m => m.select(i))
    }
    fn input_len(&self) -> usize {
        delegate!(self, m => m.input_len())
    }
    fn classes(&self) -> usize {
        delegate!(self, m => m.classes())
    }
    fn infer(&mut self, chw: &[f32], scores: &mut [f32]) -> Result<(), ModelError> {
        delegate!(self, m => m.infer(chw, scores))
    }
    fn update_capacity(&self) -> u32 {
        delegate!(self, m => m.update_capacity())
    }
    fn update_pending(&mut self) -> Option<PendingUpdate> {
        delegate!(self, m => m.update_pending())
    }
    fn update_resume(&mut self) -> Result<u32, ModelError> {
        delegate!(self, m => m.update_resume())
    }
    fn update_begin(&mut self, header: &[u8]) -> Result<(), ModelError> {
        delegate!(self, m => m.update_begin(header))
    }
    fn update_write(&mut self, offset: u32, data: &[u8]) -> Result<(), ModelError> {
        delegate!(self, m => m.update_write(offset, data))
    }
    fn update_commit(&mut self) -> Result<(usize, u32), ModelError> {
        delegate!(self, m => m.update_commit())
    }
    fn health(&self) -> Health {
        delegate!(self, m => m.health())
    }
    fn faults(&self) -> heapless::Vec<DeptFault, MAX_DEPTS> {
        delegate!(self, m => m.faults())
    }
    fn format_store(&mut self) -> Result<(), ModelError> {
        delegate!(self, m => m.format_store())
    }
}
