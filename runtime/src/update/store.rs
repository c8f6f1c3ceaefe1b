//! The update store: A/B delta slots per department and an append-only journal on NOR flash.
//!
//! Applying an update: [`UpdateStore::begin`] checks the package header (department, base id,
//! size, version against the current one and the security counter) and appends a `Begin`
//! record; [`UpdateStore::write`] streams chunks into the department's inactive slot, erasing
//! each page just before its first write and appending a `Progress` record per completed
//! page; [`UpdateStore::finish`] re-reads the slot, checks SHA-256, signature and the blob
//! (through [`UpdateBase::check_blob`]) and commits with one `Commit` record. Until that record
//! is on flash the department runs its previous version, which stays in the other slot (or
//! in the bundle) until the next commit. After a reset, `begin` with the same header resumes
//! at the last recorded page (see [`UpdateStore::resume_point`]).
//!
//! When a bank is full the live state (commits, counters, the pending update) is written to
//! the other bank, whose header (written last) carries a higher sequence number.
use super::journal::{self, Record, RECORD};
use super::package::{self, PackageHeader, HEADER_LEN};
use super::{UpdateBase, UpdateError};
use crate::format::Bundle;
use embedded_storage::nor_flash::{NorFlash, NorFlashError};
use sha2::{Digest, Sha256};

/// Largest supported `NorFlash::WRITE_SIZE` (a record is one 64-byte unit).
pub const MAX_WRITE: usize = RECORD;

/// Where the journal and the slots lie on the flash (byte offsets; all erase-aligned).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Layout {
    /// Journal bank 0; bank 1 follows at `journal + bank_size`.
    pub journal: u32,
    /// Bytes per journal bank (a multiple of `ERASE_SIZE`).
    pub bank_size: u32,
    /// First slot: department `d`, slot `s` (0 = A, 1 = B) at `slots + (2·d + s)·slot_size`.
    pub slots: u32,
    /// Bytes per slot (a multiple of `ERASE_SIZE`); the largest package it takes.
    pub slot_size: u32,
    /// Number of departments (that of the bundle).
    pub departments: u16,
    /// Slot pairs reserved for departments added in the field (indices `departments ..
    /// departments + added`); how many a device can ever add is fixed here.
    pub added: u16,
}

impl Layout {
    /// Added-department slot pairs [`Layout::for_bundle`] reserves (the host images', the
    /// demo's and the firmware's layout).
    pub const STANDARD_ADDED: u16 = 2;

    /// The layout the host tools and the demo use: the bundle at offset 0, then the two
    /// journal banks, then the slots (the bundle's departments', then `added` pairs for
    /// departments added in the field), each slot twice the largest delta package of the
    /// bundle (room for more classes or a bigger rank).
    pub fn standard(
        bundle_len: usize,
        departments: u16,
        added: u16,
        max_blob_len: usize,
        erase_size: usize,
    ) -> Layout {
        let up = |n: usize| n.div_ceil(erase_size) * erase_size;
        let journal = up(bundle_len);
        let all = departments as usize + added as usize;
        let bank_size = up((3 * all + 3 + 64) * RECORD);
        let slot_size = up(2 * (max_blob_len + HEADER_LEN));
        Layout {
            journal: journal as u32,
            bank_size: bank_size as u32,
            slots: (journal + 2 * bank_size) as u32,
            slot_size: slot_size as u32,
            departments,
            added,
        }
    }

    /// [`Layout::standard`] for `bundle`, its update regions from flash offset `start` (the
    /// bundle's length when it lies at offset 0 of the same flash, 0 when the store has a flash
    /// of its own). The host tools (flash images) and the firmware both lay out the store
    /// through this, so a host-written image is what the device reads.
    pub fn for_bundle(bundle: &Bundle<'_>, start: usize, erase_size: usize) -> Layout {
        let max_blob = (0..bundle.department_count())
            .filter_map(|i| bundle.department_blob(i))
            .map(<[u8]>::len)
            .max()
            .unwrap_or(0);
        Layout::standard(
            start,
            bundle.department_count() as u16,
            Self::STANDARD_ADDED,
            max_blob,
            erase_size,
        )
    }

    /// Department indices the store tracks: the bundle's, then the added slot pairs.
    pub fn total(&self) -> usize {
        self.departments as usize + self.added as usize
    }

    /// First byte after the last slot.
    pub fn end(&self) -> u64 {
        self.slots as u64 + 2 * self.total() as u64 * self.slot_size as u64
    }

    /// Flash offset of a department's slot.
    pub fn slot_offset(&self, dept: usize, slot: u8) -> u32 {
        self.slots + (2 * dept as u32 + slot as u32) * self.slot_size
    }

    /// The bytes a journal bank header stores to recognise its layout.
    pub fn fingerprint(&self) -> [u8; 32] {
        let mut f = [0u8; 32];
        f[..4].copy_from_slice(&self.journal.to_le_bytes());
        f[4..8].copy_from_slice(&self.bank_size.to_le_bytes());
        f[8..12].copy_from_slice(&self.slots.to_le_bytes());
        f[12..16].copy_from_slice(&self.slot_size.to_le_bytes());
        f[16..18].copy_from_slice(&self.departments.to_le_bytes());
        // Zero for a layout without added departments: such journals read as before.
        f[18..20].copy_from_slice(&self.added.to_le_bytes());
        f
    }

    fn check<F: NorFlash>(&self, capacity: usize, max_depts: usize) -> Result<(), UpdateError> {
        let (e, w) = (F::ERASE_SIZE as u64, F::WRITE_SIZE as u64);
        let d = self.total() as u64;
        let records = self.bank_size as u64 / RECORD as u64;
        let ok = w > 0
            && w <= MAX_WRITE as u64
            && (RECORD as u64).is_multiple_of(w)
            && e.is_multiple_of(RECORD as u64)
            && self.departments > 0
            && d as usize <= max_depts
            && (self.journal as u64).is_multiple_of(e)
            && (self.bank_size as u64).is_multiple_of(e)
            && (self.slots as u64).is_multiple_of(e)
            && (self.slot_size as u64).is_multiple_of(e)
            && self.slot_size as usize > HEADER_LEN
            // The compacted state (≤ 3 records per department + a pending update) must fit
            // in a bank with room to append.
            && records >= 3 * d + 4
            && self.end() <= capacity as u64
            && (self.journal as u64 + 2 * self.bank_size as u64 <= self.slots as u64
                || self.end() <= self.journal as u64);
        if ok {
            Ok(())
        } else {
            Err(UpdateError::Layout)
        }
    }
}

/// What a department runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Active {
    /// The delta blob inside the bundle.
    Factory {
        /// The bundle's version of the department.
        version: u32,
    },
    /// A committed, verified slot; its blob is `blob_len` bytes at flash offset `blob_offset`.
    Slot {
        /// Slot (0 = A, 1 = B).
        slot: u8,
        /// The committed version.
        version: u32,
        /// Flash offset of the delta blob.
        blob_offset: u32,
        /// Bytes of the delta blob.
        blob_len: u32,
    },
    /// No version at or above the security counter is available.
    Unavailable,
    /// An added-department slot pair that holds no department (none was added there).
    Absent,
    /// An added department removed by a signed removal package (`package::FLAG_REMOVE`) at
    /// `version`: nothing runs; its pair stays bound to its name (and counter).
    Removed {
        /// The removal's version.
        version: u32,
    },
}

impl Active {
    /// The version that runs, if any.
    pub fn version(&self) -> Option<u32> {
        match *self {
            Active::Factory { version } | Active::Slot { version, .. } => Some(version),
            Active::Unavailable | Active::Absent | Active::Removed { .. } => None,
        }
    }

    /// The newest version installed, removals included (what a new package must exceed).
    pub fn installed(&self) -> Option<u32> {
        match *self {
            Active::Removed { version } => Some(version),
            a => a.version(),
        }
    }
}

/// What a journal on flash holds ([`UpdateStore::probe`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum JournalState {
    /// A valid bank header for this layout.
    Valid,
    /// A valid bank header written for another layout.
    OtherLayout,
    /// No valid bank header and no valid record: a new device (`open` formats it).
    Blank,
    /// No valid bank header but records: `open` refuses, [`UpdateStore::format`] is explicit.
    Damaged,
}

/// Where an interrupted update can continue.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ResumePoint {
    /// Department index.
    pub dept: u16,
    /// The slot the package streams into (at `Layout::slot_offset(dept, slot)`), where the
    /// bytes before `offset` can be read back (a device re-reads the header from there).
    pub slot: u8,
    /// The package's version.
    pub version: u32,
    /// Send the package from this byte on, after `begin` with the same header.
    pub offset: u32,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum SlotState {
    Empty,
    Writing,
    Committed {
        version: u32,
        len: u32,
        digest: [u8; 32],
        intact: bool,
    },
}

#[derive(Clone, Copy, Debug)]
struct Pending {
    dept: u16,
    slot: u8,
    version: u32,
    len: u32,
    header_hash: [u8; 32],
    pages: u32,
}

/// The name of an added department, from its signed package header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Name {
    bytes: [u8; package::NAME_MAX],
    len: u8,
}

impl Name {
    const NONE: Name = Name {
        bytes: [0; package::NAME_MAX],
        len: 0,
    };

    fn of(h: &PackageHeader) -> Name {
        let mut n = Name::NONE;
        let b = h.name().as_bytes();
        n.bytes[..b.len()].copy_from_slice(b);
        n.len = b.len() as u8;
        n
    }

    fn as_str(&self) -> Option<&str> {
        if self.len == 0 {
            return None;
        }
        core::str::from_utf8(&self.bytes[..self.len as usize]).ok()
    }
}

#[derive(Clone, Copy, Debug)]
struct Live {
    header: PackageHeader,
    /// The authenticated header as received (fields and signature): the slot must start
    /// with exactly these bytes at `finish`.
    header_bytes: [u8; HEADER_LEN],
    /// Package bytes accepted (on flash or in `tail`).
    received: u32,
    /// Package bytes programmed (a multiple of `WRITE_SIZE`).
    flushed: u32,
    /// Pages erased by this session, from the slot start.
    erased: u32,
    tail: [u8; MAX_WRITE],
}

/// The update store over a NOR flash, for up to `D` department indices (the bundle's plus
/// the layout's added slot pairs). Needs no allocator: the state is a few hundred bytes plus
/// `D` small entries; `finish` borrows a caller buffer for the blob check.
pub struct UpdateStore<F: NorFlash, const D: usize = 16> {
    flash: F,
    layout: Layout,
    pubkey: [u8; 32],
    bank: u8,
    seq: u32,
    next: u32,
    slots: [[SlotState; 2]; D],
    /// Why a committed slot may not run (found at open, or reported by `reject_active`).
    why: [[Option<UpdateError>; 2]; D],
    counter: [u32; D],
    /// The bundle's version per department; `None` for the added slot pairs.
    factory: [Option<u32>; D],
    /// Added departments' names (from their committed, signed headers).
    names: [Name; D],
    /// Most classes an added department's head may have.
    max_classes: usize,
    active: [Active; D],
    pending: Option<Pending>,
    live: Option<Live>,
    /// The bank not in charge is known erased (this boot erased it after a compaction), so
    /// the next compaction need not erase it again.
    spare_erased: bool,
}

fn flash_err<E: NorFlashError>(e: E) -> UpdateError {
    UpdateError::Flash(e.kind())
}

impl<F: NorFlash, const D: usize> UpdateStore<F, D> {
    /// Opens the store: checks the layout, replays the journal (formatting it only on a
    /// blank journal: no bank header and no record anywhere), re-checks every committed slot
    /// (its digest, its header's signature, its blob hash) and picks each department's newest
    /// committed intact slot at or above its security counter (else the bundle's own blob).
    ///
    /// A journal whose bank headers are both invalid but which still holds records is
    /// refused (`JournalDamaged`), never silently reformatted: that would forget every
    /// commit and security counter. [`Self::probe`] tells it apart without writing;
    /// [`Self::format`] is the explicit way out.
    ///
    /// # Errors
    /// `Layout`, `LayoutMismatch`, `JournalDamaged`, `Flash`.
    pub fn open<B: UpdateBase>(
        flash: F,
        layout: Layout,
        pubkey: [u8; 32],
        base: &B,
    ) -> Result<Self, UpdateError> {
        Self::start(flash, layout, pubkey, base, false).map_err(|(_, e)| e)
    }

    /// As [`Self::open`], giving the flash back with the refusal (a device keeps it to run
    /// its factory departments, and to format on an explicit command).
    ///
    /// # Errors
    /// As [`Self::open`].
    pub fn try_open<B: UpdateBase>(
        flash: F,
        layout: Layout,
        pubkey: [u8; 32],
        base: &B,
    ) -> Result<Self, (F, UpdateError)> {
        Self::start(flash, layout, pubkey, base, false)
    }

    /// Formats the journal explicitly (the answer to `JournalDamaged`): both banks are
    /// erased and a fresh journal written, carrying over the highest security counter of
    /// every department found in any CRC-valid record of either bank, so the counters that
    /// can still be read never go down. Committed slots are forgotten: departments run their
    /// factory blob (if it passes its counter) until updated again.
    ///
    /// # Errors
    /// `Layout`, `Flash`.
    pub fn format<B: UpdateBase>(
        flash: F,
        layout: Layout,
        pubkey: [u8; 32],
        base: &B,
    ) -> Result<Self, UpdateError> {
        Self::start(flash, layout, pubkey, base, true).map_err(|(_, e)| e)
    }

    /// As [`Self::format`], giving the flash back with a refusal.
    ///
    /// # Errors
    /// As [`Self::format`].
    pub fn try_format<B: UpdateBase>(
        flash: F,
        layout: Layout,
        pubkey: [u8; 32],
        base: &B,
    ) -> Result<Self, (F, UpdateError)> {
        Self::start(flash, layout, pubkey, base, true)
    }

    /// What the journal on `flash` holds, read only.
    ///
    /// # Errors
    /// `Layout`, `Flash`.
    pub fn probe(flash: &mut F, layout: &Layout) -> Result<JournalState, UpdateError> {
        layout.check::<F>(flash.capacity(), D)?;
        let mut any = false;
        for bank in 0..2u32 {
            let at = layout.journal + bank * layout.bank_size;
            let mut h = [0u8; RECORD];
            flash.read(at, &mut h).map_err(flash_err)?;
            if let Some((_, fp)) = journal::decode_bank(&h) {
                return Ok(if fp == layout.fingerprint() {
                    JournalState::Valid
                } else {
                    JournalState::OtherLayout
                });
            }
            for i in 1..layout.bank_size / RECORD as u32 {
                flash
                    .read(at + i * RECORD as u32, &mut h)
                    .map_err(flash_err)?;
                any |= matches!(Record::decode(&h), journal::Slot::Valid(_));
            }
        }
        Ok(if any {
            JournalState::Damaged
        } else {
            JournalState::Blank
        })
    }

    fn start<B: UpdateBase>(
        mut flash: F,
        layout: Layout,
        pubkey: [u8; 32],
        base: &B,
        force_format: bool,
    ) -> Result<Self, (F, UpdateError)> {
        let n = base.department_count();
        if n != layout.departments as usize {
            return Err((flash, UpdateError::Layout));
        }
        let state = match Self::probe(&mut flash, &layout) {
            Ok(st) => st,
            Err(e) => return Err((flash, e)),
        };
        let mut factory = [None; D];
        for (d, f) in factory.iter_mut().enumerate().take(n) {
            *f = Some(base.factory_version(d));
        }
        let mut s = UpdateStore {
            flash,
            layout,
            pubkey,
            bank: 0,
            seq: 0,
            next: 1,
            slots: [[SlotState::Empty; 2]; D],
            why: [[None; 2]; D],
            counter: [0; D],
            factory,
            names: [Name::NONE; D],
            max_classes: crate::format::validate::MAX_CLASSES,
            active: [Active::Unavailable; D],
            pending: None,
            live: None,
            spare_erased: false,
        };
        match s.load(state, force_format, n, base) {
            Ok(()) => Ok(s),
            Err(e) => Err((s.flash, e)),
        }
    }

    fn load<B: UpdateBase>(
        &mut self,
        state: JournalState,
        force_format: bool,
        n: usize,
        base: &B,
    ) -> Result<(), UpdateError> {
        let s = self;
        let layout = s.layout;
        match (state, force_format) {
            (_, true) => {
                s.salvage_counters()?;
                s.format_banks()?;
            }
            (JournalState::Blank, false) => s.format_banks()?,
            (JournalState::Damaged, false) => return Err(UpdateError::JournalDamaged),
            (JournalState::OtherLayout, false) => return Err(UpdateError::LayoutMismatch),
            (JournalState::Valid, false) => {
                let mut best: Option<(u8, u32)> = None;
                for bank in 0..2u8 {
                    let mut h = [0u8; RECORD];
                    s.flash
                        .read(s.bank_offset(bank), &mut h)
                        .map_err(flash_err)?;
                    if let Some((seq, fp)) = journal::decode_bank(&h) {
                        if fp != layout.fingerprint() {
                            return Err(UpdateError::LayoutMismatch);
                        }
                        if best.is_none_or(|(_, b)| seq > b) {
                            best = Some((bank, seq));
                        }
                    }
                }
                let (bank, seq) = best.ok_or(UpdateError::JournalDamaged)?;
                s.bank = bank;
                s.seq = seq;
                s.replay()?;
            }
        }
        for d in 0..layout.total() {
            let added = d >= n;
            // An added pair's name: that of its newest committed slot with a vendor-signed
            // header for an added department (intact slots first).
            let mut named: Option<(bool, u32, Name)> = None;
            let mut heads = [None; 2];
            for slot in 0..2u8 {
                if let SlotState::Committed {
                    version,
                    len,
                    digest,
                    ..
                } = s.slots[d][slot as usize]
                {
                    let (h, mut why) = s.slot_intact(d, slot, version, len, &digest)?;
                    if let Some(h) = h {
                        // A slot of a bundle department holds its update, an added pair's
                        // an added department that is not one of the bundle's.
                        let kind_ok = if added {
                            h.is_added() && base.department_index(h.name()).is_none()
                        } else {
                            !h.is_added()
                        };
                        if !kind_ok {
                            why = why.or(Some(UpdateError::HeaderMismatch));
                        } else if added {
                            let key = (why.is_none(), version);
                            if named.is_none_or(|(i, v, _)| key > (i, v)) {
                                named = Some((key.0, key.1, Name::of(&h)));
                            }
                        }
                        heads[slot as usize] = Some(Name::of(&h));
                    }
                    s.why[d][slot as usize] = why;
                    if let SlotState::Committed { intact: i, .. } = &mut s.slots[d][slot as usize] {
                        *i = why.is_none();
                    }
                }
            }
            if let Some((_, _, name)) = named {
                s.names[d] = name;
                // Both slots of a pair carry the same department.
                for (slot, head) in heads.iter().enumerate() {
                    if head.is_some_and(|h| h != name) {
                        if let SlotState::Committed { intact, .. } = &mut s.slots[d][slot] {
                            *intact = false;
                            s.why[d][slot] = Some(UpdateError::HeaderMismatch);
                        }
                    }
                }
            }
            s.pick_active(d);
        }
        Ok(())
    }

    /// Stops running department `dept`'s active slot until the next boot (its blob was
    /// found unusable by the caller, e.g. it does not parse): the department falls back to
    /// its other committed slot or its factory blob, whichever passes the security counter.
    /// Returns what it runs now. Writes nothing.
    pub fn reject_active(&mut self, dept: usize, why: UpdateError) -> Active {
        if let Some(Active::Slot { slot, .. }) = self.active.get(dept).copied() {
            if let SlotState::Committed { intact, .. } = &mut self.slots[dept][slot as usize] {
                *intact = false;
            }
            self.why[dept][slot as usize] = Some(why);
            self.pick_active(dept);
        }
        self.active(dept)
    }

    /// Why department `dept` does not run its newest committed version, when it does not:
    /// the slot failed its check at open (`HashMismatch`, `SignatureInvalid`,
    /// `HeaderMismatch`) or was rejected by the caller (`reject_active`).
    pub fn fault(&self, dept: usize) -> Option<UpdateError> {
        let running = self.active(dept).version();
        let mut out: Option<(u32, UpdateError)> = None;
        for slot in 0..2 {
            let st = self.slots.get(dept)?[slot];
            if let (SlotState::Committed { version, .. }, Some(e)) = (st, self.why[dept][slot]) {
                if running.is_none_or(|r| version > r) && out.is_none_or(|(v, _)| version > v) {
                    out = Some((version, e));
                }
            }
        }
        out.map(|(_, e)| e)
    }

    /// The layout in use.
    pub fn layout(&self) -> &Layout {
        &self.layout
    }

    /// What department `dept` runs (`Unavailable` for an index past the bundle's).
    pub fn active(&self, dept: usize) -> Active {
        self.active
            .get(dept)
            .copied()
            .unwrap_or(Active::Unavailable)
    }

    /// Department `dept`'s persisted security counter.
    pub fn security_counter(&self, dept: usize) -> u32 {
        self.counter.get(dept).copied().unwrap_or(0)
    }

    /// Sequence number of the journal bank in charge (1 after formatting, +1 per compaction).
    pub fn journal_generation(&self) -> u32 {
        self.seq
    }

    /// The interrupted update recorded in the journal, if any.
    pub fn resume_point(&self) -> Option<ResumePoint> {
        self.pending.map(|p| ResumePoint {
            dept: p.dept,
            slot: p.slot,
            version: p.version,
            offset: resume_offset(p.pages, F::ERASE_SIZE, p.len),
        })
    }

    /// Reads the active slot's blob of `dept` into `buf`: `None` when the department runs
    /// the bundle's own blob (or nothing).
    ///
    /// # Errors
    /// `ScratchTooSmall`, `Flash`.
    pub fn read_active_blob<'b>(
        &mut self,
        dept: usize,
        buf: &'b mut [u8],
    ) -> Result<Option<&'b [u8]>, UpdateError> {
        match self.active(dept) {
            Active::Slot {
                blob_offset,
                blob_len,
                ..
            } => {
                let out = buf
                    .get_mut(..blob_len as usize)
                    .ok_or(UpdateError::ScratchTooSmall)?;
                self.flash.read(blob_offset, out).map_err(flash_err)?;
                Ok(Some(out))
            }
            _ => Ok(None),
        }
    }

    /// The flash (for tests and for reading the bundle beside the store).
    pub fn flash_mut(&mut self) -> &mut F {
        &mut self.flash
    }

    /// Gives the flash back.
    pub fn into_flash(self) -> F {
        self.flash
    }

    /// Raises `dept`'s security counter (never lowers it) with one journal record.
    ///
    /// # Errors
    /// `UnknownDepartment`, `Flash`.
    pub fn raise_security_counter(&mut self, dept: usize, counter: u32) -> Result<(), UpdateError> {
        if dept >= self.layout.total() {
            return Err(UpdateError::UnknownDepartment);
        }
        if counter <= self.counter[dept] {
            return Ok(());
        }
        self.append(Record::Counter {
            dept: dept as u16,
            counter,
        })?;
        self.counter[dept] = counter;
        self.pick_active(dept);
        Ok(())
    }

    /// Caps the class count of an added department's head (the format's `MAX_CLASSES` by
    /// default; a device whose protocol or buffers take fewer sets its own). Checked at
    /// `begin` from the signed header, before anything is written.
    pub fn set_max_classes(&mut self, classes: usize) {
        self.max_classes = classes;
    }

    /// Department indices the store tracks: the bundle's `0..departments`, then the added
    /// slot pairs (see [`Self::added_name`] for which hold a department).
    pub fn department_slots(&self) -> usize {
        self.layout.total()
    }

    /// The name of the department added in the field at index `dept` (≥ the bundle's
    /// department count), from its signed package; `None` for a bundle department or a
    /// pair that holds none.
    pub fn added_name(&self, dept: usize) -> Option<&str> {
        if dept < self.layout.departments as usize {
            return None;
        }
        self.names.get(dept)?.as_str()
    }

    /// The indices of the departments added in the field (not removed), in slot order.
    pub fn added(&self) -> impl Iterator<Item = usize> + '_ {
        (self.layout.departments as usize..self.layout.total()).filter(move |&d| {
            self.names[d].len > 0 && !matches!(self.active[d], Active::Removed { .. })
        })
    }

    /// Index of the added department called `name` (not removed).
    pub fn find_added(&self, name: &str) -> Option<usize> {
        self.added().find(|&d| self.names[d].as_str() == Some(name))
    }

    /// The pair bound to `name`, removed or not.
    fn find_named(&self, name: &str) -> Option<usize> {
        (self.layout.departments as usize..self.layout.total())
            .find(|&d| self.names[d].as_str() == Some(name))
    }

    /// Where an added department's package goes: the pair that already holds that
    /// department, else the pair an interrupted add of this very header was streaming into,
    /// else the first free pair.
    fn added_index(&self, h: &PackageHeader) -> Result<usize, UpdateError> {
        if let Some(d) = self.find_named(h.name()) {
            return Ok(d);
        }
        let n = self.layout.departments as usize;
        let hh = package::digest(&h.encode());
        if let Some(p) = self.pending {
            let d = p.dept as usize;
            if d >= n && d < self.layout.total() && p.header_hash == hh && self.names[d].len == 0 {
                return Ok(d);
            }
        }
        (n..self.layout.total())
            .find(|&d| {
                self.names[d].len == 0
                    && self.counter[d] == 0
                    && !self.slots[d]
                        .iter()
                        .any(|s| matches!(s, SlotState::Committed { .. }))
            })
            .ok_or(UpdateError::TooManyDepartments)
    }

    /// Checks a package header against the bundle and the department's state; writes nothing.
    fn precheck<B: UpdateBase>(&self, h: &PackageHeader, base: &B) -> Result<usize, UpdateError> {
        if h.is_added() && base.department_index(h.name()).is_some() {
            return Err(UpdateError::NameClash);
        }
        if h.base_id != base.base_id() {
            return Err(UpdateError::BaseMismatch);
        }
        if h.package_len() > self.layout.slot_size {
            return Err(UpdateError::TooLarge);
        }
        let d = match h.added_classes() {
            Some(c) if c as usize > self.max_classes => return Err(UpdateError::TooManyClasses),
            Some(_) => self.added_index(h)?,
            // Only a department that was added can be removed.
            None if h.is_removal() => self
                .find_named(h.name())
                .ok_or(UpdateError::UnknownDepartment)?,
            None => {
                let d = base
                    .department_index(h.name())
                    .ok_or(UpdateError::UnknownDepartment)?;
                if d >= self.layout.departments as usize {
                    return Err(UpdateError::UnknownDepartment);
                }
                d
            }
        };
        if let Some(cur) = self.active[d].installed() {
            if h.version < cur {
                return Err(UpdateError::VersionOld);
            }
            if h.version == cur {
                return Err(UpdateError::VersionCurrent);
            }
        }
        if h.version < self.counter[d] {
            return Err(UpdateError::VersionBelowCounter);
        }
        Ok(d)
    }

    /// Starts (or resumes) an update from the package's first [`HEADER_LEN`] bytes and
    /// returns the package offset the next chunk must start at (0, or the resume point).
    /// Every refusal happens before anything is written.
    ///
    /// # Errors
    /// The header's errors, `UnknownDepartment`, `BaseMismatch`, `TooLarge`, `VersionOld`,
    /// `VersionCurrent`, `VersionBelowCounter`, `Flash`.
    pub fn begin<B: UpdateBase>(&mut self, header: &[u8], base: &B) -> Result<u32, UpdateError> {
        self.begin_inner(header, base, true)
    }

    /// As [`Self::begin`], but never resumes: the update starts at package offset 0 even when
    /// the journal holds an interrupted one with the same header (whose bytes a device found
    /// to differ from what its host is sending, e.g. by a transport CRC).
    ///
    /// # Errors
    /// As [`Self::begin`].
    pub fn begin_fresh<B: UpdateBase>(
        &mut self,
        header: &[u8],
        base: &B,
    ) -> Result<(), UpdateError> {
        self.begin_inner(header, base, false).map(|_| ())
    }

    fn begin_inner<B: UpdateBase>(
        &mut self,
        header: &[u8],
        base: &B,
        resume: bool,
    ) -> Result<u32, UpdateError> {
        // Authenticated before anything else: an unsigned or wrongly signed header is refused
        // before the journal or a slot is touched.
        let h = PackageHeader::parse_signed(header, &self.pubkey)?;
        let d = self.precheck(&h, base)?;
        let mut header_bytes = [0u8; HEADER_LEN];
        header_bytes.copy_from_slice(&header[..HEADER_LEN]);
        let header_hash = package::digest(&h.encode());
        let len = h.package_len();
        self.live = None;
        if let Some(p) = self.pending.filter(|_| resume) {
            let active_slot = match self.active[d] {
                Active::Slot { slot, .. } => Some(slot),
                _ => None,
            };
            if p.dept as usize == d
                && p.version == h.version
                && p.len == len
                && p.header_hash == header_hash
                && active_slot != Some(p.slot)
            {
                let at = resume_offset(p.pages, F::ERASE_SIZE, len);
                self.live = Some(Live {
                    header: h,
                    header_bytes,
                    received: at,
                    flushed: at,
                    erased: at / F::ERASE_SIZE as u32,
                    tail: [0xFF; MAX_WRITE],
                });
                return Ok(at);
            }
        }
        let slot = self.inactive_slot(d);
        let rec = Record::Begin {
            dept: d as u16,
            slot,
            version: h.version,
            len,
            header_hash,
        };
        self.append(rec)?;
        self.slots[d][slot as usize] = SlotState::Writing;
        self.why[d][slot as usize] = None;
        self.pending = Some(Pending {
            dept: d as u16,
            slot,
            version: h.version,
            len,
            header_hash,
            pages: 0,
        });
        self.live = Some(Live {
            header: h,
            header_bytes,
            received: 0,
            flushed: 0,
            erased: 0,
            tail: [0xFF; MAX_WRITE],
        });
        Ok(0)
    }

    /// Streams the package bytes `data` found at package offset `offset` into the slot.
    ///
    /// # Errors
    /// `NoUpdate`, `OutOfOrder`, `Overflow`, `Flash` (after which `begin` must be called
    /// again; it resumes).
    pub fn write(&mut self, offset: u32, data: &[u8]) -> Result<(), UpdateError> {
        let live = self.live.as_ref().ok_or(UpdateError::NoUpdate)?;
        let p = self.pending.ok_or(UpdateError::NoUpdate)?;
        if offset != live.received {
            return Err(UpdateError::OutOfOrder);
        }
        if offset as u64 + data.len() as u64 > p.len as u64 {
            return Err(UpdateError::Overflow);
        }
        let r = self.write_inner(data);
        if r.is_err() {
            self.live = None;
        }
        r
    }

    fn write_inner(&mut self, mut data: &[u8]) -> Result<(), UpdateError> {
        let w = F::WRITE_SIZE;
        let e = F::ERASE_SIZE as u32;
        let Some(mut live) = self.live else {
            return Err(UpdateError::NoUpdate);
        };
        live.received += data.len() as u32;
        let have = (live.received - data.len() as u32 - live.flushed) as usize;
        if have > 0 {
            let take = (w - have).min(data.len());
            live.tail[have..have + take].copy_from_slice(&data[..take]);
            data = &data[take..];
            if have + take == w {
                let tail = live.tail;
                self.program(&mut live, &tail[..w])?;
            }
        }
        while data.len() >= w {
            let page_left = (e - live.flushed % e) as usize;
            let run = (data.len() / w * w).min(page_left);
            self.program(&mut live, &data[..run])?;
            data = &data[run..];
        }
        live.tail[..data.len()].copy_from_slice(data);
        self.live = Some(live);
        Ok(())
    }

    /// Programs `bytes` (whole write units, within one page) at `live.flushed`, erasing the
    /// page first if this session has not, and records completed pages.
    fn program(&mut self, live: &mut Live, bytes: &[u8]) -> Result<(), UpdateError> {
        let p = self.pending.ok_or(UpdateError::NoUpdate)?;
        let e = F::ERASE_SIZE as u32;
        let base = self.layout.slot_offset(p.dept as usize, p.slot);
        let end = live.flushed + bytes.len() as u32;
        while live.erased * e < end {
            let from = base + live.erased * e;
            self.flash.erase(from, from + e).map_err(flash_err)?;
            live.erased += 1;
        }
        self.flash
            .write(base + live.flushed, bytes)
            .map_err(flash_err)?;
        live.flushed = end;
        let pages = live.flushed / e;
        if pages > p.pages {
            self.append(Record::Progress {
                dept: p.dept,
                slot: p.slot,
                pages,
            })?;
            if let Some(pp) = self.pending.as_mut() {
                pp.pages = pages;
            }
        }
        Ok(())
    }

    /// Verifies the streamed package from flash (header, SHA-256, signature, blob against the
    /// bundle, read into `scratch`) and commits it. Returns the department index. On a refusal
    /// the department keeps its version; a later `begin` starts the update afresh.
    ///
    /// # Errors
    /// `NoUpdate`, `Incomplete`, `HeaderMismatch`, `HashMismatch`, `BadKey`, `SignatureInvalid`,
    /// `ScratchTooSmall`, `Blob`, `BlobMismatch`, `Flash`.
    pub fn finish<B: UpdateBase>(
        &mut self,
        base: &B,
        scratch: &mut [u8],
    ) -> Result<usize, UpdateError> {
        let r = self.finish_inner(base, scratch);
        self.live = None;
        if matches!(r, Err(e) if !matches!(e, UpdateError::Flash(_) | UpdateError::Incomplete)) {
            // Do not resume into a package that failed verification.
            self.pending = None;
        }
        r
    }

    fn finish_inner<B: UpdateBase>(
        &mut self,
        base: &B,
        scratch: &mut [u8],
    ) -> Result<usize, UpdateError> {
        let mut live = self.live.ok_or(UpdateError::NoUpdate)?;
        let p = self.pending.ok_or(UpdateError::NoUpdate)?;
        if live.received != p.len {
            return Err(UpdateError::Incomplete);
        }
        let have = (live.received - live.flushed) as usize;
        if have > 0 {
            let mut tail = live.tail;
            tail[have..].fill(0xFF);
            self.program(&mut live, &tail[..F::WRITE_SIZE])?;
        }
        let (d, slot) = (p.dept as usize, p.slot);
        let at = self.layout.slot_offset(d, slot);
        let mut hb = [0u8; HEADER_LEN];
        self.flash.read(at, &mut hb).map_err(flash_err)?;
        if hb != live.header_bytes {
            return Err(UpdateError::HeaderMismatch);
        }
        // The blob as it lies on flash must be the one the signed header names.
        let (digest, blob_hash) = self.hash_slot(d, slot, p.len)?;
        if blob_hash != live.header.blob_sha256 {
            return Err(UpdateError::HashMismatch);
        }
        let blob_len = live.header.blob_len as usize;
        let blob = scratch
            .get_mut(..blob_len)
            .ok_or(UpdateError::ScratchTooSmall)?;
        self.flash
            .read(at + HEADER_LEN as u32, blob)
            .map_err(flash_err)?;
        check_blob(base, d, &live.header, blob)?;
        let counter = self.counter[d].max(live.header.security_counter);
        let version = live.header.version;
        self.append(Record::Commit {
            dept: d as u16,
            slot,
            version,
            len: p.len,
            counter,
            digest,
        })?;
        self.slots[d][slot as usize] = SlotState::Committed {
            version,
            len: p.len,
            digest,
            intact: true,
        };
        if live.header.is_added() {
            self.names[d] = Name::of(&live.header);
        }
        self.why[d][slot as usize] = None;
        self.counter[d] = counter;
        self.pending = None;
        self.pick_active(d);
        Ok(d)
    }

    /// Applies a whole package held in memory: every check (structure, SHA-256, signature,
    /// department, base id, size, version, counter, blob) runs before the first flash
    /// write, so a refused package changes nothing on flash. Returns the department index.
    ///
    /// # Errors
    /// Any refusal of [`package::Package::parse`], [`Self::begin`] and [`Self::finish`].
    pub fn apply<B: UpdateBase>(
        &mut self,
        pkg: &[u8],
        base: &B,
        scratch: &mut [u8],
    ) -> Result<usize, UpdateError> {
        let p = package::Package::parse(pkg)?;
        p.verify(&self.pubkey)?;
        let d = self.precheck(&p.header, base)?;
        check_blob(base, d, &p.header, p.blob())?;
        let from = self.begin(pkg, base)?;
        self.write(from, &pkg[from as usize..])?;
        self.finish(base, scratch)
    }

    fn bank_offset(&self, bank: u8) -> u32 {
        self.layout.journal + bank as u32 * self.layout.bank_size
    }

    fn capacity_records(&self) -> u32 {
        self.layout.bank_size / RECORD as u32
    }

    /// Reads the highest security counter per department from every CRC-valid record of
    /// both banks (whatever their headers say).
    fn salvage_counters(&mut self) -> Result<(), UpdateError> {
        let n = self.layout.total();
        for bank in 0..2u8 {
            let at = self.bank_offset(bank);
            for i in 1..self.capacity_records() {
                let mut b = [0u8; RECORD];
                self.flash
                    .read(at + i * RECORD as u32, &mut b)
                    .map_err(flash_err)?;
                if let journal::Slot::Valid(
                    Record::Commit { dept, counter, .. } | Record::Counter { dept, counter },
                ) = Record::decode(&b)
                {
                    if (dept as usize) < n {
                        let c = &mut self.counter[dept as usize];
                        *c = (*c).max(counter);
                    }
                }
            }
        }
        Ok(())
    }

    /// Erases both banks and writes a fresh journal holding the counters in RAM; the bank
    /// header goes last, so a cut leaves either the counters' records (refused as damaged,
    /// salvaged by the next explicit format) or a complete journal.
    fn format_banks(&mut self) -> Result<(), UpdateError> {
        for bank in [1u8, 0] {
            let at = self.bank_offset(bank);
            self.flash
                .erase(at, at + self.layout.bank_size)
                .map_err(flash_err)?;
        }
        let at = self.bank_offset(0);
        let mut i = 1u32;
        for d in 0..self.layout.total() {
            if self.counter[d] > 0 {
                let r = Record::Counter {
                    dept: d as u16,
                    counter: self.counter[d],
                };
                self.flash
                    .write(at + i * RECORD as u32, &r.encode())
                    .map_err(flash_err)?;
                i += 1;
            }
        }
        self.flash
            .write(at, &journal::encode_bank(1, &self.layout.fingerprint()))
            .map_err(flash_err)?;
        self.bank = 0;
        self.seq = 1;
        self.next = i;
        self.spare_erased = true;
        Ok(())
    }

    /// Replays every valid record of the bank in charge. Free records in the middle are
    /// holes a failed write left (the append after it went on to the next record), not the
    /// end: the journal ends after its last non-free record.
    fn replay(&mut self) -> Result<(), UpdateError> {
        let cap = self.capacity_records();
        let base = self.bank_offset(self.bank);
        self.next = 1;
        for i in 1..cap {
            let mut b = [0u8; RECORD];
            self.flash
                .read(base + i * RECORD as u32, &mut b)
                .map_err(flash_err)?;
            match Record::decode(&b) {
                journal::Slot::Free => continue,
                journal::Slot::Garbage => {}
                journal::Slot::Valid(r) => self.apply_record(r),
            }
            self.next = i + 1;
        }
        Ok(())
    }

    fn apply_record(&mut self, r: Record) {
        let n = self.layout.total();
        let slot_size = self.layout.slot_size;
        // A removal is a bare header (192 bytes); anything else carries a blob.
        let len_ok = |len: u32| len as usize >= HEADER_LEN && len <= slot_size;
        match r {
            // A CRC-valid record can still be nonsense (crafted or a CRC collision): never
            // let it describe a package that cannot fit its slot.
            Record::Begin { len, .. } | Record::Commit { len, .. } if !len_ok(len) => {}
            Record::Begin {
                dept,
                slot,
                version,
                len,
                header_hash,
            } if (dept as usize) < n => {
                self.slots[dept as usize][slot as usize] = SlotState::Writing;
                self.pending = Some(Pending {
                    dept,
                    slot,
                    version,
                    len,
                    header_hash,
                    pages: 0,
                });
            }
            Record::Progress { dept, slot, pages } => {
                if let Some(p) = self.pending.as_mut() {
                    // Never more pages than the package has (a crafted count would
                    // otherwise overflow `pages * ERASE_SIZE` on a 32-bit target).
                    let most = p.len.div_ceil(F::ERASE_SIZE as u32);
                    if p.dept == dept && p.slot == slot && pages <= most {
                        p.pages = p.pages.max(pages);
                    }
                }
            }
            Record::Commit {
                dept,
                slot,
                version,
                len,
                counter,
                digest,
            } if (dept as usize) < n => {
                let d = dept as usize;
                self.slots[d][slot as usize] = SlotState::Committed {
                    version,
                    len,
                    digest,
                    intact: false,
                };
                self.counter[d] = self.counter[d].max(counter);
                if matches!(self.pending, Some(p) if p.dept == dept && p.slot == slot) {
                    self.pending = None;
                }
            }
            Record::Counter { dept, counter } if (dept as usize) < n => {
                let d = dept as usize;
                self.counter[d] = self.counter[d].max(counter);
            }
            _ => {}
        }
    }

    /// Appends a record, compacting into the other bank first when this one is full.
    fn append(&mut self, r: Record) -> Result<(), UpdateError> {
        if self.next >= self.capacity_records() {
            self.compact()?;
        }
        let at = self.bank_offset(self.bank) + self.next * RECORD as u32;
        // The slot is used whether or not the write completes: a torn record is skipped by
        // replay, and so is a slot the failed write left free (replay reads past holes).
        self.next += 1;
        self.flash.write(at, &r.encode()).map_err(flash_err)
    }

    /// Writes the live state into the other bank; its header goes last, so a cut leaves
    /// the current bank in charge.
    fn compact(&mut self) -> Result<(), UpdateError> {
        let target = 1 - self.bank;
        let base = self.bank_offset(target);
        if !self.spare_erased {
            self.flash
                .erase(base, base + self.layout.bank_size)
                .map_err(flash_err)?;
        }
        self.spare_erased = false;
        let mut i = 1u32;
        let mut put = |flash: &mut F, r: Record| -> Result<(), UpdateError> {
            flash
                .write(base + i * RECORD as u32, &r.encode())
                .map_err(flash_err)?;
            i += 1;
            Ok(())
        };
        for d in 0..self.layout.total() {
            for slot in 0..2u8 {
                if let SlotState::Committed {
                    version,
                    len,
                    digest,
                    ..
                } = self.slots[d][slot as usize]
                {
                    let counter = self.counter[d];
                    put(
                        &mut self.flash,
                        Record::Commit {
                            dept: d as u16,
                            slot,
                            version,
                            len,
                            counter,
                            digest,
                        },
                    )?;
                }
            }
            if self.counter[d] > 0 {
                put(
                    &mut self.flash,
                    Record::Counter {
                        dept: d as u16,
                        counter: self.counter[d],
                    },
                )?;
            }
        }
        if let Some(p) = self.pending {
            let (dept, slot) = (p.dept, p.slot);
            let begin = Record::Begin {
                dept,
                slot,
                version: p.version,
                len: p.len,
                header_hash: p.header_hash,
            };
            put(&mut self.flash, begin)?;
            if p.pages > 0 {
                put(
                    &mut self.flash,
                    Record::Progress {
                        dept,
                        slot,
                        pages: p.pages,
                    },
                )?;
            }
        }
        let seq = self.seq + 1;
        self.flash
            .write(base, &journal::encode_bank(seq, &self.layout.fingerprint()))
            .map_err(flash_err)?;
        let stale = self.bank_offset(self.bank);
        self.bank = target;
        self.seq = seq;
        self.next = i;
        // Erase the bank just left: while its header stays valid, one bit flipped in the new
        // header would put the older journal back in charge at the next boot (commits and
        // security counters silently rolled back). With it erased, that flip leaves no valid
        // header and `open` refuses (`JournalDamaged`) instead. The erase is the one the next
        // compaction would do anyway; if it fails the new bank is still in charge, and the
        // next compaction erases it as before.
        self.spare_erased = self
            .flash
            .erase(stale, stale + self.layout.bank_size)
            .is_ok();
        Ok(())
    }

    /// SHA-256 over a slot's whole package (`len` bytes), and over its blob alone.
    fn hash_slot(
        &mut self,
        dept: usize,
        slot: u8,
        len: u32,
    ) -> Result<([u8; 32], [u8; 32]), UpdateError> {
        let at = self.layout.slot_offset(dept, slot);
        let len = len.min(self.layout.slot_size);
        let (mut all, mut blob) = (Sha256::new(), Sha256::new());
        let mut buf = [0u8; 256];
        let mut o = 0u32;
        while o < len {
            let n = (len - o).min(buf.len() as u32) as usize;
            self.flash.read(at + o, &mut buf[..n]).map_err(flash_err)?;
            all.update(&buf[..n]);
            // Reads are split at the header's end (256 > HEADER_LEN), so a chunk is either
            // header, or blob, or header then blob.
            let h = (HEADER_LEN as u32).saturating_sub(o).min(n as u32) as usize;
            blob.update(&buf[h..n]);
            o += n as u32;
        }
        Ok((all.finalize().into(), blob.finalize().into()))
    }

    /// A committed slot may run: its bytes hash to the committed digest, its header is
    /// signed by the device key, describes the committed version and length, and its blob
    /// hashes to the header's blob digest (the flash may have been written by anyone).
    /// Also returns the slot's header when it is signed by the device key.
    fn slot_intact(
        &mut self,
        dept: usize,
        slot: u8,
        version: u32,
        len: u32,
        digest: &[u8; 32],
    ) -> Result<(Option<PackageHeader>, Option<UpdateError>), UpdateError> {
        let at = self.layout.slot_offset(dept, slot);
        let mut hb = [0u8; HEADER_LEN];
        self.flash.read(at, &mut hb).map_err(flash_err)?;
        let h = match PackageHeader::parse_signed(&hb, &self.pubkey) {
            Ok(h) => h,
            Err(e) => return Ok((None, Some(e))),
        };
        if h.version != version || h.package_len() != len {
            return Ok((Some(h), Some(UpdateError::HeaderMismatch)));
        }
        let (all, blob) = self.hash_slot(dept, slot, len)?;
        if all != *digest || blob != h.blob_sha256 {
            return Ok((Some(h), Some(UpdateError::HashMismatch)));
        }
        Ok((Some(h), None))
    }

    fn inactive_slot(&self, d: usize) -> u8 {
        if let Active::Slot { slot, .. } = self.active[d] {
            return 1 - slot;
        }
        match self.slots[d] {
            [SlotState::Committed { version: a, .. }, SlotState::Committed { version: b, .. }] => {
                u8::from(b < a)
            }
            [SlotState::Committed { .. }, _] => 1,
            _ => 0,
        }
    }

    fn pick_active(&mut self, d: usize) {
        let floor = self.counter[d];
        let mut best = None;
        for slot in 0..2u8 {
            if let SlotState::Committed {
                version,
                len,
                intact: true,
                ..
            } = self.slots[d][slot as usize]
            {
                if version >= floor && best.is_none_or(|(_, v, _)| version > v) {
                    best = Some((slot, version, len));
                }
            }
        }
        self.active[d] = match best {
            Some((_, version, len)) if len as usize == HEADER_LEN => Active::Removed { version },
            Some((slot, version, len)) => Active::Slot {
                slot,
                version,
                blob_offset: self.layout.slot_offset(d, slot) + HEADER_LEN as u32,
                blob_len: len - HEADER_LEN as u32,
            },
            None => match self.factory[d] {
                Some(version) if version >= floor => Active::Factory { version },
                Some(_) => Active::Unavailable,
                // An added pair: a department that exists but cannot run, or none at all.
                None if self.names[d].len > 0 => Active::Unavailable,
                None => Active::Absent,
            },
        };
    }
}

/// Where an update with `pages` recorded erase pages resumes: the last whole page within
/// the package (`len` bytes), computed without overflow whatever `pages` says.
fn resume_offset(pages: u32, erase: usize, len: u32) -> u32 {
    let at = (u64::from(pages) * erase as u64).min(u64::from(len));
    (at - at % erase as u64) as u32
}

fn check_blob<B: UpdateBase>(
    base: &B,
    d: usize,
    h: &PackageHeader,
    blob: &[u8],
) -> Result<(), UpdateError> {
    if h.is_removal() {
        // Nothing to parse: the signed header is the whole removal.
        return if blob.is_empty() {
            Ok(())
        } else {
            Err(UpdateError::BlobMismatch)
        };
    }
    let (version, base_id) = match h.added_classes() {
        Some(classes) => {
            let (v, id, c) = base.check_added_blob(h.name(), blob)?;
            if c != classes as usize {
                return Err(UpdateError::BlobMismatch);
            }
            (v, id)
        }
        None => base.check_blob(d, blob)?,
    };
    if version != h.version || base_id != h.base_id {
        return Err(UpdateError::BlobMismatch);
    }
    Ok(())
}
