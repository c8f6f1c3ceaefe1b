//! The streaming experts' lane code compiled for AVX2: the portable lane code of
//! [`crate::switch`] (`[f32; 8]` lanes, a product then an add per term) inlined into
//! `#[target_feature(enable = "avx2")]` bodies, so one ymm register holds the 8 lanes the
//! baseline build splits into two SSE2 halves. The same source and no FMA contraction
//! (Rust never fuses `a * b + c`), so the same bits — `switch`'s tests run every table.
use crate::kernels::{Geom, Streaming, SumTile};
use crate::quant::QParams;
use crate::switch::{self, Delta, EpilogueI8, StreamI8};

/// The AVX2 [`Streaming`] slots. Install only after AVX2 detection.
pub(super) fn avx2() -> Streaming {
    Streaming {
        u_i8,
        u_f32,
        epilogue_i8,
        add_f32,
        conv_i8,
        conv_add_f32,
    }
}

fn u_i8(g: &Geom, x: &[i8], q: QParams, a: &[f32], r: usize, u: &mut [f32]) {
    // SAFETY: installed only after AVX2 detection; the body is safe code.
    unsafe { u_i8_avx2(g, x, q, a, r, u) }
}

#[target_feature(enable = "avx2")]
unsafe fn u_i8_avx2(g: &Geom, x: &[i8], q: QParams, a: &[f32], r: usize, u: &mut [f32]) {
    switch::lowrank_u_i8(g, x, q, a, r, u)
}

fn u_f32(g: &Geom, x: &[f32], a: &[f32], r: usize, u: &mut [f32]) {
    // SAFETY: installed only after AVX2 detection; the body is safe code.
    unsafe { u_f32_avx2(g, x, a, r, u) }
}

#[target_feature(enable = "avx2")]
unsafe fn u_f32_avx2(g: &Geom, x: &[f32], a: &[f32], r: usize, u: &mut [f32]) {
    switch::lowrank_u_f32(g, x, a, r, u)
}

fn epilogue_i8(t: &SumTile<'_>, e: &mut EpilogueI8<'_>) {
    // SAFETY: installed only after AVX2 detection; the body is safe code.
    unsafe { epilogue_i8_avx2(t, e) }
}

#[target_feature(enable = "avx2")]
unsafe fn epilogue_i8_avx2(t: &SumTile<'_>, e: &mut EpilogueI8<'_>) {
    switch::epilogue_i8(t, e)
}

fn add_f32(u: &[f32], bt: &[f32], r: usize, cout: usize, relu: bool, y: &mut [f32]) {
    // SAFETY: installed only after AVX2 detection; the body is safe code.
    unsafe { add_f32_avx2(u, bt, r, cout, relu, y) }
}

#[target_feature(enable = "avx2")]
unsafe fn add_f32_avx2(u: &[f32], bt: &[f32], r: usize, cout: usize, relu: bool, y: &mut [f32]) {
    switch::lowrank_add_t_f32(u, bt, r, cout, relu, y)
}

#[allow(clippy::too_many_arguments)]
fn conv_i8(
    g: &Geom,
    x: &[i8],
    w0: &[i8],
    ws: &[f32],
    bias: &[f32],
    d: &Delta<'_>,
    st: StreamI8,
    wbuf: &mut [f32],
    y: &mut [i8],
) {
    // SAFETY: installed only after AVX2 detection; the body is safe code.
    unsafe { conv_i8_avx2(g, x, w0, ws, bias, d, st, wbuf, y) }
}

#[allow(clippy::too_many_arguments)]
#[target_feature(enable = "avx2")]
unsafe fn conv_i8_avx2(
    g: &Geom,
    x: &[i8],
    w0: &[i8],
    ws: &[f32],
    bias: &[f32],
    d: &Delta<'_>,
    st: StreamI8,
    wbuf: &mut [f32],
    y: &mut [i8],
) {
    switch::stream_conv_i8_lanes(g, x, w0, ws, bias, d, st, wbuf, y)
}

fn conv_add_f32(g: &Geom, x: &[f32], d: &Delta<'_>, relu: bool, wbuf: &mut [f32], y: &mut [f32]) {
    // SAFETY: installed only after AVX2 detection; the body is safe code.
    unsafe { conv_add_f32_avx2(g, x, d, relu, wbuf, y) }
}

#[target_feature(enable = "avx2")]
unsafe fn conv_add_f32_avx2(
    g: &Geom,
    x: &[f32],
    d: &Delta<'_>,
    relu: bool,
    wbuf: &mut [f32],
    y: &mut [f32],
) {
    switch::stream_conv_add_f32_lanes(g, x, d, relu, wbuf, y)
}
