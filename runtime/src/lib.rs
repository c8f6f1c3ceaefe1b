//! lorkd-runtime: parses a LoRKD bundle in place (zero-copy, from flash), switches department
//! (`W_t = W0 + B_t·A_t`, always from the pristine `W0`) and runs int8 / f32 inference with a
//! caller-owned arena. `no_std`, no allocator; the `std` feature adds host conveniences.
#![cfg_attr(not(any(test, feature = "std")), no_std)]
#![warn(missing_docs)]
#![allow(missing_docs)] // TODO: remove once the public API has settled and is documented.

pub mod engine;
pub mod format;
pub mod kernels;
pub mod quant;
pub mod switch;
pub mod update;
