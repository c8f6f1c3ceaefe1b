//! What the application needs from the model side, so that the protocol, framing and button
//! logic do not depend on how the bundle is stored or which engine runs it.
//! [`crate::runtime_model`] implements it with `lorkd_runtime`.
use embedded_storage::nor_flash::ReadNorFlash;

/// A model failure, with a code for the error frame's `detail`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ModelError {
    /// No such department.
    BadDepartment,
    /// An input or output buffer of the wrong length.
    Shape,
    /// The engine failed (its error code).
    Engine(u32),
    /// The update store refused the package (its error code).
    Update(u32),
}

/// The device's model: a bundle of departments, one active.
pub trait Model {
    /// Number of departments.
    fn departments(&self) -> usize;
    /// Name of department `i` (`""` when out of range).
    fn name(&self, i: usize) -> &str;
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
    /// Verifies and applies the update package at `flash[offset .. offset + len]` (staged and
    /// CRC-checked by the application); returns the department it replaced and its version.
    fn apply_update<F: ReadNorFlash>(
        &mut self,
        flash: &mut F,
        offset: u32,
        len: u32,
    ) -> Result<(usize, u32), ModelError>;
}
