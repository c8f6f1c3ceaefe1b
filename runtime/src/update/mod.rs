//! Field updates of one department's delta: the signed `.lkdu` package
//! (`docs/update-format.md`) and the power-cut-safe update store on NOR flash.
//!
//! The device flash, as [`Layout::standard`] lays it out (every region erase-aligned):
//!
//! | region            | offset                               | size                | written by            |
//! |-------------------|--------------------------------------|---------------------|-----------------------|
//! | bundle            | 0                                    | bundle length       | factory (read-only)   |
//! | journal bank 0    | `journal`                            | `bank_size`         | store (append-only)   |
//! | journal bank 1    | `journal + bank_size`                | `bank_size`         | store (compaction)    |
//! | dept `d` slot A/B | `slots + (2·d + s)·slot_size`        | `slot_size` each    | store (one update)    |
//!
//! Department indices `0..departments` are the bundle's; `departments..departments + added`
//! are the slot pairs reserved for departments added in the field (`Layout::added`, fixed
//! by the layout). An added department exists once a package carrying it (flag
//! `package::FLAG_ADDED`) is committed; its name, classes, head and factors come from the
//! signed package in its slot.
//!
//! A journal bank: record 0 is the bank header (`LKJB`, sequence number, layout
//! fingerprint; written last when a bank is filled by compaction), records 1.. are 64-byte
//! CRC-checked entries (`Begin`, `Progress`, `Commit`, `Counter`; see [`journal`]). The
//! valid bank with the higher sequence number is in charge. A slot holds one whole `.lkdu`
//! package from its first byte, so the blob lies at slot offset 128 (16-aligned, zero-copy).
//!
//! Boot picks, per department, the newest committed slot whose bytes still hash to the
//! committed digest and whose version is at least the persisted security counter; else the
//! bundle's own blob if its version passes the counter; else nothing (`Active::Unavailable`).
mod error;
pub mod journal;
pub mod package;
#[cfg(feature = "std")]
pub mod sim;
pub mod store;

pub use error::UpdateError;
pub use package::{Package, PackageHeader};
pub use store::{Active, JournalState, Layout, ResumePoint, UpdateStore};

/// What the store needs from the bundle it updates: identity, departments and the blob
/// parser (the bundle's own, so an update is validated exactly as a bundle's blob is).
pub trait UpdateBase {
    /// The bundle's base id (SHA-256 of its shared part).
    fn base_id(&self) -> [u8; 32];
    /// Number of departments.
    fn department_count(&self) -> usize;
    /// Index of the department called `name`.
    fn department_index(&self, name: &str) -> Option<usize>;
    /// Version of the department's blob inside the bundle.
    fn factory_version(&self, dept: usize) -> u32;
    /// Parses `blob` as department `dept`'s delta blob against the shared part and returns
    /// its `(version, base_id)`.
    ///
    /// # Errors
    /// `UpdateError::Blob` when the blob does not parse against the shared part,
    /// `UpdateError::BlobMismatch` when it names another department.
    fn check_blob(&self, dept: usize, blob: &[u8]) -> Result<(u32, [u8; 32]), UpdateError>;
    /// Parses `blob` as the delta blob of a department added in the field called `name`
    /// against the shared part — its factors must have the shapes of the shared graph's
    /// expert convs, so the bundle's arena plan (which depends on the graph alone) covers
    /// it — and returns its `(version, base_id, classes)`.
    ///
    /// # Errors
    /// `UpdateError::Blob` when the blob does not parse against the shared part,
    /// `UpdateError::BlobMismatch` when it names another department.
    fn check_added_blob(
        &self,
        name: &str,
        blob: &[u8],
    ) -> Result<(u32, [u8; 32], usize), UpdateError>;
}

impl UpdateBase for crate::format::Bundle<'_> {
    fn base_id(&self) -> [u8; 32] {
        *crate::format::Bundle::base_id(self)
    }

    fn department_count(&self) -> usize {
        crate::format::Bundle::department_count(self)
    }

    fn department_index(&self, name: &str) -> Option<usize> {
        self.find_department(name)
    }

    fn factory_version(&self, dept: usize) -> u32 {
        self.department(dept).map_or(0, |d| d.manifest.version)
    }

    fn check_blob(&self, dept: usize, blob: &[u8]) -> Result<(u32, [u8; 32]), UpdateError> {
        let d = crate::format::Dept::parse_blob(
            blob,
            self.manifest(),
            crate::format::Bundle::base_id(self),
        )?;
        let name = self.department(dept).map(|x| x.manifest.name);
        if name != Some(d.manifest.name) {
            return Err(UpdateError::BlobMismatch);
        }
        Ok((d.manifest.version, d.manifest.base_id))
    }

    fn check_added_blob(
        &self,
        name: &str,
        blob: &[u8],
    ) -> Result<(u32, [u8; 32], usize), UpdateError> {
        let d = crate::format::Dept::parse_blob(
            blob,
            self.manifest(),
            crate::format::Bundle::base_id(self),
        )?;
        if d.manifest.name != name {
            return Err(UpdateError::BlobMismatch);
        }
        Ok((d.manifest.version, d.manifest.base_id, d.classes()))
    }
}
