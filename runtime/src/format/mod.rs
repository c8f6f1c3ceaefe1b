//! The bundle format v1 (specified field by field in `docs/bundle-format.md`).
//!
//! ```text
//! [Header 256 B] [shared manifest] [shared payload] [delta blob 0] … [delta blob T-1] [department table] [signature 64 B]?
//! ```
//! A delta blob is self-contained (`DeltaHeader`, postcard `DeptManifest`, payload) and is
//! exactly what a field update (`.lkdu`) carries, so an update replaces one blob.
//! `header` holds the fixed-size headers, `manifest` the postcard types, `view` the
//! validating parser ([`Bundle::parse`]), `write` (feature `std`) the writer.

pub mod error;
pub mod factor;
pub mod header;
pub mod layout;
pub mod manifest;
pub mod plan;
pub mod validate;
pub mod view;
mod wire;
#[cfg(feature = "std")]
pub mod write;

pub use error::FormatError;
pub use manifest::*;
pub use view::{Bundle, Dept};

/// Alignment of every payload section and tensor (bytes): enough for f32 / i32 zero-copy
/// reads and for 128-bit SIMD loads.
pub const ALIGN: usize = 16;

/// How a department's weights are applied (see `engine`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Mode {
    /// `select` rebuilds each expert conv's weight `W0 + B·A` into the arena.
    Materialized,
    /// No weight RAM: 1x1 convs run on `W0` from flash plus the low-rank path `B·(A·x)`; a
    /// k×k expert (the stem: few weights, many pixels) is rebuilt into scratch at each
    /// inference, the bytes a switch would rebuild — and so, where the plan prices that
    /// cheaper and it fits the same scratch, is a 1x1 one
    /// ([`plan::Plan::rebuilds_per_inference`]; x86_64 and aarch64).
    Streaming,
    /// Per expert conv, whichever costs less ([`plan::Plan`]): `select` rebuilds the experts
    /// with many output pixels and the rest stream, so a switch is cheap at every size and
    /// an inference stays within a few percent of Materialized.
    Auto,
}

impl Mode {
    /// Every mode, in the order reports list them.
    pub const ALL: [Mode; 3] = [Mode::Materialized, Mode::Streaming, Mode::Auto];

    /// The mode's name on command lines and in reports.
    pub const fn name(self) -> &'static str {
        match self {
            Mode::Materialized => "materialized",
            Mode::Streaming => "streaming",
            Mode::Auto => "auto",
        }
    }
}
