//! The streaming experts' lane code compiled for AVX2: the portable lane code of
//! [`crate::switch`] (`[f32; 8]` lanes, a product then an add per term) inlined into
//! `#[target_feature(enable = "avx2")]` bodies, so one ymm register holds the 8 lanes the
//! baseline build splits into two SSE2 halves. The same source and no FMA contraction
//! (Rust never fuses `a * b + c`), so the same bits — `switch`'s tests run every table.
use core::arch::x86_64::*;

use crate::format::factor::Factor;
use crate::format::DeltaDType;
use crate::kernels::{Geom, Streaming, SumTile};
use crate::quant::QParams;
use crate::switch::{self, EpilogueI8};

/// The AVX2 [`Streaming`] slots. Install only after AVX2 detection.
pub(super) fn avx2() -> Streaming {
    Streaming {
        u_i8,
        u_f32,
        epilogue_i8,
        add_f32,
        decode,
    }
}

fn u_i8(g: &Geom, x: &[i8], q: QParams, a: &[f32], r: usize, u: &mut [f32]) {
    // SAFETY: installed only after AVX2 detection; the body is safe code.
    unsafe { u_i8_avx2(g, x, q, a, r, u) }
}

/// `switch::lowrank_u_i8` ([`u_i8_tabled`]); where the layer reads at least [`TABLE_FROM`]
/// codes, through [`dequant_table`] (the same values): each input one broadcast load
/// instead of a conversion and a multiply.
#[target_feature(enable = "avx2")]
unsafe fn u_i8_avx2(g: &Geom, x: &[i8], q: QParams, a: &[f32], r: usize, u: &mut [f32]) {
    u_i8_tabled(g, x, q, a, r, u)
}

/// The body of [`u_i8_avx2`] and [`u_i8_avx512`], inlined into each (compiled for its
/// target features).
#[inline(always)]
fn u_i8_tabled(g: &Geom, x: &[i8], q: QParams, a: &[f32], r: usize, u: &mut [f32]) {
    if g.ho * g.wo * g.cin < TABLE_FROM {
        return switch::lowrank_u_i8(g, x, q, a, r, u);
    }
    let t = dequant_table(q);
    switch::lowrank_u_gemm(g, x, |v| t[v as u8 as usize], a, r, u)
}

/// The AVX-512 [`Streaming`] slots: the same lane code compiled with AVX-512F enabled, so
/// the epilogue's 16-value runs (two 8-lane blocks) and the GEMMs' rows run in zmm
/// registers. Install only after AVX-512 detection (`avx512_detected`).
pub(super) fn avx512() -> Streaming {
    Streaming {
        u_i8: u_i8_512,
        u_f32: u_f32_512,
        epilogue_i8: epilogue_i8_512,
        add_f32: add_f32_512,
        ..avx2()
    }
}

fn u_i8_512(g: &Geom, x: &[i8], q: QParams, a: &[f32], r: usize, u: &mut [f32]) {
    // SAFETY: installed only after AVX-512 detection; the body is safe code.
    unsafe { u_i8_avx512(g, x, q, a, r, u) }
}

/// [`u_i8_avx2`] with AVX-512F.
#[target_feature(enable = "avx2,avx512f")]
unsafe fn u_i8_avx512(g: &Geom, x: &[i8], q: QParams, a: &[f32], r: usize, u: &mut [f32]) {
    u_i8_tabled(g, x, q, a, r, u)
}

fn u_f32_512(g: &Geom, x: &[f32], a: &[f32], r: usize, u: &mut [f32]) {
    // SAFETY: installed only after AVX-512 detection; the body is safe code.
    unsafe { u_f32_avx512(g, x, a, r, u) }
}

#[target_feature(enable = "avx2,avx512f")]
unsafe fn u_f32_avx512(g: &Geom, x: &[f32], a: &[f32], r: usize, u: &mut [f32]) {
    switch::lowrank_u_f32(g, x, a, r, u)
}

fn epilogue_i8_512(t: &SumTile<'_>, e: &mut EpilogueI8<'_>) {
    // SAFETY: installed only after AVX-512 detection; the body is safe code.
    unsafe { epilogue_i8_avx512(t, e) }
}

#[target_feature(enable = "avx2,avx512f")]
unsafe fn epilogue_i8_avx512(t: &SumTile<'_>, e: &mut EpilogueI8<'_>) {
    switch::epilogue_i8(t, e)
}

fn add_f32_512(u: &[f32], bt: &[f32], r: usize, cout: usize, relu: bool, y: &mut [f32]) {
    // SAFETY: installed only after AVX-512 detection; the body is safe code.
    unsafe { add_f32_avx512(u, bt, r, cout, relu, y) }
}

#[target_feature(enable = "avx2,avx512f")]
unsafe fn add_f32_avx512(u: &[f32], bt: &[f32], r: usize, cout: usize, relu: bool, y: &mut [f32]) {
    switch::lowrank_add_t_f32(u, bt, r, cout, relu, y)
}

/// Input codes read (per call, counting repeats) from which a dequantisation table of 256
/// values pays (`u_i8`).
const TABLE_FROM: usize = 1024;

/// Every int8 code's `QParams::dequantize` value, indexed by the code's byte (1 KiB, made
/// per call: 256 conversions, against one per input element of the layer).
#[inline(always)]
fn dequant_table(q: QParams) -> [f32; 256] {
    core::array::from_fn(|i| q.dequantize(i as u8 as i8))
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

/// [`switch::decode_lowrank`] with the factors decoded 8×8 at a time: each row's 8 values
/// loaded into one register (int8: widened, converted and times the row's f16 scale,
/// `q as f32 · s`; f16: `vcvtph2ps`; f32: as stored — the spec's values), the 8 rows
/// transposed in registers and stored as 8-lane runs of `Aᵀ`'s / `Bᵀ`'s rows, instead of
/// one scattered store per element.
fn decode(a: &Factor<'_>, b: &Factor<'_>, at: &mut [f32], bt: &mut [f32]) {
    decode_t(a, at);
    decode_t(b, bt);
}

/// [`Factor::decode_transposed_into`]: at least 8 rows and whole 8-column tiles in
/// registers ([`decode_t_avx2`]; the rows past the last 8 by `get`); the rest the spec.
fn decode_t(f: &Factor<'_>, out: &mut [f32]) {
    let (rows, cols) = (f.rows, f.cols);
    if rows < 8 || !cols.is_multiple_of(8) {
        return f.decode_transposed_into(out);
    }
    let out = &mut out[..rows * cols];
    let (bytes, dt) = f.raw();
    // SAFETY (each call): installed only after AVX2 + F16C detection; `bytes` holds
    // `factor_bytes(dt, rows, cols)` (a `Factor` invariant), `out` `rows·cols` values.
    match dt {
        DeltaDType::F32 => unsafe { decode_t_avx2::<4>(bytes, &[], rows, cols, out) },
        DeltaDType::F16 => unsafe { decode_t_avx2::<2>(bytes, &[], rows, cols, out) },
        DeltaDType::I8 => {
            let (q, sc) = bytes.split_at(rows * cols);
            unsafe { decode_t_avx2::<1>(q, sc, rows, cols, out) };
        }
    }
    if rows % 8 != 0 {
        // The rows past the last whole 8, as the spec decodes them.
        let r0 = rows / 8 * 8;
        for j in 0..cols {
            for i in r0..rows {
                out[j * rows + i] = f.get(i, j);
            }
        }
    }
}

/// The whole 8-row blocks of [`decode_t`]: `W` bytes a value (1: int8 codes with the f16
/// row scales `sc`, 2: f16, 4: f32), `cols` a multiple of 8. Eight rows' f16 scales are
/// one `vcvtph2ps` (exact, as every f16 → f32 conversion).
#[target_feature(enable = "avx2,f16c")]
unsafe fn decode_t_avx2<const W: usize>(
    v: &[u8],
    sc: &[u8],
    rows: usize,
    cols: usize,
    out: &mut [f32],
) {
    assert!(v.len() == W * rows * cols && out.len() == rows * cols && cols.is_multiple_of(8));
    assert!(W != 1 || sc.len() == 2 * rows);
    let (vp, op) = (v.as_ptr(), out.as_mut_ptr());
    for i0 in (0..rows / 8 * 8).step_by(8) {
        let mut s = [0.0f32; 8];
        if W == 1 {
            let h = &sc[2 * i0..][..16];
            // SAFETY: `h` holds the 16 bytes (8 little-endian f16) the load reads, `s` the
            // 8 floats the store writes.
            unsafe {
                _mm256_storeu_ps(
                    s.as_mut_ptr(),
                    _mm256_cvtph_ps(_mm_loadu_si128(h.as_ptr().cast())),
                )
            };
        }
        for c0 in (0..cols).step_by(8) {
            // SAFETY (both blocks): `i0 + 8 ≤ rows` and `c0 + 8 ≤ cols` (`cols` a multiple
            // of 8), so each row's 8 values at `W·((i0 + k)·cols + c0)` lie inside `v`
            // (`W·rows·cols` bytes), and each run of 8 floats at `(c0 + j)·rows + i0`
            // inside `out`.
            let r: [__m256; 8] = core::array::from_fn(|k| unsafe {
                let p = vp.add(W * ((i0 + k) * cols + c0));
                match W {
                    1 => _mm256_mul_ps(
                        _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64(p.cast()))),
                        _mm256_set1_ps(s[k]),
                    ),
                    2 => _mm256_cvtph_ps(_mm_loadu_si128(p.cast())),
                    _ => _mm256_loadu_ps(p.cast()),
                }
            });
            for (j, t) in super::transpose8(r).into_iter().enumerate() {
                unsafe { _mm256_storeu_ps(op.add((c0 + j) * rows + i0), t) };
            }
        }
    }
}
