//! Cortex-M4/M7 (Armv7E-M) twins on the DSP extension, selected at build time (the
//! module is cfg'd on `target_feature = "dsp"`): `SXTB16`/`SXTAB16` widen int8 pairs in
//! registers, `SMLAD` does two 16×16 MACs per instruction (CMSIS-NN's technique, own code).
//! One op per file; each public fn is a safe wrapper with the reference's contract that
//! checks the slices once and defers to the reference for shapes it does not cover.
//! Every twin is bit-exact to the reference (exact i32 sums, `fixed::Rq` ≡ `quant::requant`);
//! the firmware's QEMU self-checks compare them on random shapes and data.
#![allow(unsafe_code)]

mod conv1x1;
mod dsp;
mod dw3x3;
mod gemm;
mod linear;
mod maxpool;
mod rebuild;
mod requant;
mod stem;

pub(crate) use dsp::f16_to_f32;

use super::Kernels;

/// `base` with the DSP twins plugged in.
pub(crate) fn dsp(base: Kernels) -> Kernels {
    Kernels {
        conv1x1_i8: conv1x1::conv1x1_i8,
        conv1x1_sums_i8: conv1x1::conv1x1_sums_i8,
        conv_i8: stem::conv_i8,
        dwconv3x3_i8: dw3x3::dwconv3x3_i8,
        // (Its rows alone are not written: a thread's rows start a row early.)
        conv_i8_pixels: None,
        dwconv3x3_i8_pixels: None,
        requant_weights: rebuild::requant_weights,
        rebuild_i8: Some(rebuild::rebuild_i8),
        rebuild_layer_i8: Some(rebuild::rebuild_layer_i8),
        maxpool_i8: maxpool::maxpool3x3s2_i8,
        maxpool_i8_pixels: None,
        linear_f32: linear::linear_f32,
        gap_i8: crate::kernels::reference::gap::gap_i8,
        requant_table: requant::requant_table,
        isa: "armv7em-dsp",
        ..base
    }
}
