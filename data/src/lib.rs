//! lorkd-data: the one dataset abstraction of lorkd, yielding (image as normalised f32 CHW,
//! department index, class within department), shared by the trainer (fed to libtorch) and
//! the tools (calibration images, bundle evaluation). Pure Rust: no libtorch.
//!
//! Sources, named by a `--data` string ([`DataSpec::parse`]):
//! - `synthetic[:departments=4,classes=3,size=64,per_class=200,seed=0]` ([`synthetic`]):
//!   deterministic departments whose deciding cue differs, generated on the fly;
//! - `medmnist:DIR[:pathmnist,octmnist,…]` ([`medmnist`]): MedMNIST `.npz` files as distributed;
//! - `folder:DIR` ([`folder`]): ImageFolder `DIR/<department>/<class>/*.png|jpg`, with
//!   `train/ val/ test/` splits when present, else a deterministic hashed split.
//!
//! ```no_run
//! use std::sync::Arc;
//! use lorkd_data::{Dataset, Loader, LoaderConfig, Split, Transform};
//! let ds = Arc::new(Dataset::open_str("synthetic:departments=4,size=32")?);
//! let cfg = LoaderConfig::train(64, Transform::imagenet(32, 3), 0, 0);
//! for batch in Loader::new(ds.clone(), Split::Train, cfg) {
//!     let batch = batch?; // images [n,3,32,32], departments, classes, global_classes
//! }
//! # Ok::<(), lorkd_data::DataError>(())
//! ```
//!
//! For training at speed, [`PreparedImages`] holds a split decoded and resized once as
//! `uint8` (in memory or a memory-mapped cache file reused across runs) and
//! [`Loader::prepared`] gathers batches from it by index; flips and normalisation are left to
//! the consumer (the trainer does them on its device).
//!
//! Bad input (missing file, wrong array shape or dtype, label out of range, empty department,
//! corrupt image) is a [`DataError`] naming the file, never a panic.
#![deny(unsafe_code)]
#![warn(missing_docs)]

pub mod array;
mod cache;
mod dataset;
mod error;
pub mod folder;
mod loader;
pub mod medmnist;
pub mod metrics;
pub mod npy;
#[cfg(feature = "runtime")]
pub mod score;
mod spec;
pub mod synthetic;

pub use array::{flat, into_flat};
pub use cache::{CacheMode, PreparedImages};
pub use dataset::{Dataset, Department, Sample, Split, Transform};
pub use error::DataError;
pub use loader::{epoch_order, Batch, Loader, LoaderConfig};
pub use spec::{DataSpec, SyntheticSpec};
