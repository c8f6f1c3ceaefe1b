//! aarch64 NEON twins (NEON is baseline on aarch64); the int8 GEMM the pointwise conv, the
//! streaming experts' `W0` sums and the stem share (`gemm.rs`) runs on `sdot` when the
//! `dotprod` extension is present: detected at run time with `std`, from the build's target
//! features without it. One op per file (plus that shared GEMM); each public fn is a safe
//! wrapper with the reference's contract that slices whole rows and hands them to the
//! vector bodies.
//! int8 is bit-exact to the reference; f32 differs by reassociation / FMA only.
#![allow(unsafe_code)]

mod concat;
mod conv1x1;
mod dw3x3;
mod gemm;
mod linear;
mod maxpool;
mod packed;
mod rebuild;
mod requant;
mod stem;
mod streaming;

use super::{Kernels, Streaming};

/// The `dotprod` extension (`sdot`/`udot`) is usable.
pub(crate) fn dotprod_detected() -> bool {
    #[cfg(feature = "std")]
    {
        std::arch::is_aarch64_feature_detected!("dotprod")
    }
    #[cfg(not(feature = "std"))]
    {
        cfg!(target_feature = "dotprod")
    }
}

/// `base` with the NEON twins plugged in; the int8 GEMMs (conv and streaming sums) on `sdot` when `dotprod` (install
/// that table only when [`dotprod_detected`]). The f32 stem keeps `base`'s kernel.
pub(crate) fn neon(base: Kernels, dotprod: bool) -> Kernels {
    Kernels {
        conv1x1_f32: conv1x1::conv1x1_f32,
        conv1x1_i8: if dotprod {
            conv1x1::conv1x1_i8_sdot
        } else {
            conv1x1::conv1x1_i8
        },
        // The `sdot` and product-pair packings are the weights' length, so the switch lays
        // them out in place (the widened one is twice that and stays per call).
        conv1x1_i8_packed: Some(if dotprod {
            super::PackedConv1x1I8 {
                pack: packed::pack_conv1x1_i8,
                conv: packed::conv1x1_i8_prepacked,
                min_pixels: packed::SDOT_MIN_PIXELS,
            }
        } else {
            super::PackedConv1x1I8 {
                pack: packed::pack_conv1x1_i8_pairs,
                conv: packed::conv1x1_i8_prepacked_pairs,
                min_pixels: packed::PAIRS_MIN_PIXELS,
            }
        }),
        conv_i8: if dotprod {
            stem::conv_i8_sdot
        } else {
            stem::conv_i8
        },
        conv1x1_sums_i8: if dotprod {
            conv1x1::conv1x1_sums_i8_sdot
        } else {
            conv1x1::conv1x1_sums_i8
        },
        dwconv3x3_f32: dw3x3::dwconv3x3_f32,
        dwconv3x3_i8: dw3x3::dwconv3x3_i8,
        // (Its rows alone are not written: a thread's rows start a row early.)
        conv_i8_pixels: None,
        dwconv3x3_i8_pixels: None,
        requant_weights: rebuild::requant_weights,
        rebuild_i8: Some(rebuild::rebuild_i8),
        rebuild_layer_i8: Some(rebuild::rebuild_layer_i8),
        materialize_f32: crate::switch::materialize_f32,
        requant_table: requant::requant_table,
        maxpool_i8: maxpool::maxpool3x3s2_i8,
        maxpool_i8_pixels: None,
        maxpool_f32: crate::kernels::reference::maxpool::maxpool3x3s2::<f32>,
        linear_f32: linear::linear_f32,
        gap_i8: crate::kernels::reference::gap::gap_i8,
        concat_shuffle_i8: Some(concat::concat_shuffle_i8),
        quantize_rgb_i8: None,
        streaming: Streaming {
            decode: streaming::decode,
            ..base.streaming
        },
        isa: if dotprod {
            "aarch64-neon-dotprod"
        } else {
            "aarch64-neon"
        },
        ..base
    }
}
