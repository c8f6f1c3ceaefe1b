//! lorkd-runtime: parses a LoRKD bundle in place (zero-copy, from flash), switches department
//! (`W_t = W0 + B_t·A_t`, always from the pristine `W0`) and runs int8 / f32 inference with a
//! caller-owned arena. `no_std`, no allocator; the `std` feature adds host conveniences.
#![cfg_attr(not(any(test, feature = "std")), no_std)]
#![warn(missing_docs)]
// Unsafe code only in the SIMD kernel modules (`kernels::x86_64`, `kernels::aarch64`,
// `kernels::thumbv7em`), two NEON helpers (`engine::interleave3_neon`,
// `switch::quantize_row_neon`) and the engine's worker pool (`engine::pool`, one block),
// each block with a `SAFETY:` reason; they `allow` it, everything else is checked here.
#![deny(unsafe_code)]

#[cfg(feature = "std")]
pub mod aligned;
pub mod engine;
pub mod format;
pub mod kernels;
pub mod quant;
pub mod switch;
pub mod update;

#[cfg(feature = "std")]
pub use aligned::AlignedBytes;

/// The seed of a randomised unit test: `LORKD_SEED` when set (to replay a failure), else
/// drawn from the clock; printed either way.
#[cfg(test)]
pub(crate) fn test_seed() -> u64 {
    let seed = std::env::var("LORKD_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(7, |d| d.as_nanos() as u64)
        });
    println!("seed {seed} (replay with LORKD_SEED={seed})");
    seed
}
