//! What the application needs from the model side, so that the protocol, framing and button
//! logic do not depend on how the bundle is stored or which engine runs it.
//! [`crate::runtime_model::RuntimeModel`] implements it with `lorkd_runtime` (the bundle in
//! place from flash, the engine, the A/B update store).
use crate::crc::Crc32;
use crate::proto::{DeptFault, Health, MAX_DEPTS};

/// Bytes of an update package's fixed header: the model's update starts once they arrived
/// (`lorkd_runtime::update::package::HEADER_LEN`).
pub const UPDATE_HEADER_LEN: usize = lorkd_runtime::update::package::HEADER_LEN;

/// A model failure, with a code for the error frame's `detail`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ModelError {
    /// No such department.
    BadDepartment,
    /// An input or output buffer of the wrong length.
    Shape,
    /// The engine failed (its error code, [`crate::runtime_model::engine_code`]).
    Engine(u32),
    /// The update store refused the package (its error code,
    /// [`crate::runtime_model::update_code`]).
    Update(u32),
    /// The flash under the update store failed (or power was lost): the update can resume.
    Flash,
    /// Nothing runs: the bundle was refused at boot (the reason, as in
    /// [`Health::BundleRefused`]).
    NotRunning(u32),
    /// The request does not fit the model's state (e.g. formatting a store that is fine).
    BadState,
}

/// An update interrupted by a reset that the model can continue.
#[derive(Clone, Copy, Debug)]
pub struct PendingUpdate {
    /// Bytes of the whole package (from its header, read back from flash).
    pub len: u32,
    /// Where it continues (every byte before is on flash).
    pub offset: u32,
    /// CRC-32 of the package bytes before `offset`, read back from flash.
    pub crc: Crc32,
}

/// The device's model: a bundle of departments, one active, updatable one department at a
/// time by a package streamed in chunks.
pub trait Model {
    /// Number of departments.
    fn departments(&self) -> usize;
    /// Name of department `i` (`""` when out of range).
    fn name(&self, i: usize) -> &str;
    /// Version department `i` runs (0 when none or out of range).
    fn version(&self, i: usize) -> u32;
    /// The active department.
    fn active(&self) -> usize;
    /// Makes department `i` active.
    fn select(&mut self, i: usize) -> Result<(), ModelError>;
    /// f32 values of one input frame (CHW).
    fn input_len(&self) -> usize;
    /// Classes of the active department.
    fn classes(&self) -> usize;
    /// Runs the active department on `chw`, writing `classes()` scores into `scores`.
    fn infer(&mut self, chw: &[f32], scores: &mut [f32]) -> Result<(), ModelError>;

    /// Largest update package the model takes (bytes).
    fn update_capacity(&self) -> u32;
    /// The update a reset interrupted, when at least one byte of it can be kept.
    fn update_pending(&mut self) -> Option<PendingUpdate>;
    /// Continues the pending update ([`Model::update_pending`]); returns the package offset
    /// the next bytes go to.
    fn update_resume(&mut self) -> Result<u32, ModelError>;
    /// Starts a new update from its package's first [`UPDATE_HEADER_LEN`] bytes; a refusal
    /// (department, base, version, size) writes nothing. The header bytes themselves follow
    /// with [`Model::update_write`] at offset 0.
    fn update_begin(&mut self, header: &[u8]) -> Result<(), ModelError>;
    /// Streams package bytes at `offset` (in order) to where the update is kept.
    fn update_write(&mut self, offset: u32, data: &[u8]) -> Result<(), ModelError>;
    /// Verifies the complete package and makes it the department's version; returns the
    /// department and its new version. On a refusal every department keeps what it ran.
    fn update_commit(&mut self) -> Result<(usize, u32), ModelError>;

    /// Whether the model runs (bundle verified, update store open).
    fn health(&self) -> Health {
        Health::Ok
    }
    /// Departments that fell back from their committed update at boot, and why.
    fn faults(&self) -> heapless::Vec<DeptFault, MAX_DEPTS> {
        heapless::Vec::new()
    }
    /// Formats a refused update store (the explicit way out of [`Health::StoreRefused`]).
    fn format_store(&mut self) -> Result<(), ModelError> {
        Err(ModelError::BadState)
    }
}

/// The model of a device whose bundle was refused at boot: no departments, every request
/// but `Hello` and `Status` answered `NotRunning` with the reason.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Halted {
    /// Why (as in [`Health::BundleRefused`]).
    pub reason: u32,
}

impl Model for Halted {
    fn departments(&self) -> usize {
        0
    }
    fn name(&self, _: usize) -> &str {
        ""
    }
    fn version(&self, _: usize) -> u32 {
        0
    }
    fn active(&self) -> usize {
        0
    }
    fn select(&mut self, _: usize) -> Result<(), ModelError> {
        Err(ModelError::NotRunning(self.reason))
    }
    fn input_len(&self) -> usize {
        0
    }
    fn classes(&self) -> usize {
        0
    }
    fn infer(&mut self, _: &[f32], _: &mut [f32]) -> Result<(), ModelError> {
        Err(ModelError::NotRunning(self.reason))
    }
    fn update_capacity(&self) -> u32 {
        0
    }
    fn update_pending(&mut self) -> Option<PendingUpdate> {
        None
    }
    fn update_resume(&mut self) -> Result<u32, ModelError> {
        Err(ModelError::NotRunning(self.reason))
    }
    fn update_begin(&mut self, _: &[u8]) -> Result<(), ModelError> {
        Err(ModelError::NotRunning(self.reason))
    }
    fn update_write(&mut self, _: u32, _: &[u8]) -> Result<(), ModelError> {
        Err(ModelError::NotRunning(self.reason))
    }
    fn update_commit(&mut self) -> Result<(usize, u32), ModelError> {
        Err(ModelError::NotRunning(self.reason))
    }
    fn health(&self) -> Health {
        Health::BundleRefused(self.reason)
    }
}
