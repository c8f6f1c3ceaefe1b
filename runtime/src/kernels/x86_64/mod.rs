//! x86_64 AVX2 + FMA twins of the pointwise conv (the GEMM that dominates ShuffleNetV2),
//! installed by `Kernels::best` only after runtime detection (`std`) or when the build
//! targets AVX2 (`no_std`). int8 is bit-exact to the reference (exact i32 sums); f32 sums
//! in 8 lanes, so it differs from the sequential reference by reassociation only
//! (bounded by `cin · ε · Σ|w·x|`).
#![allow(unsafe_code)]

use core::arch::x86_64::*;

use crate::kernels::{Geom, OutQ};
use crate::quant::requant;

#[inline]
fn src(g: &Geom, oy: usize, ox: usize) -> usize {
    (oy * g.stride * g.w + ox * g.stride) * g.in_stride + g.c_off
}

/// AVX2 f32 pointwise conv; same contract as `reference::conv1x1::conv1x1_f32`.
pub(crate) fn conv1x1_f32(g: &Geom, x: &[f32], w: &[f32], bias: &[f32], relu: bool, y: &mut [f32]) {
    for oy in 0..g.ho {
        for ox in 0..g.wo {
            let px = &x[src(g, oy, ox)..][..g.cin];
            let out = &mut y[(oy * g.wo + ox) * g.cout..][..g.cout];
            let n = g.cin;
            let mut o = 0;
            while o + 4 <= g.cout {
                let rows = [
                    &w[o * n..][..n],
                    &w[(o + 1) * n..][..n],
                    &w[(o + 2) * n..][..n],
                    &w[(o + 3) * n..][..n],
                ];
                // SAFETY: installed in the kernel table only when AVX2 and FMA are available
                // (`Kernels::best`); reads only through the given slices.
                let d = unsafe { dot4_f32(rows, px) };
                for i in 0..4 {
                    let acc = bias[o + i] + d[i];
                    out[o + i] = if relu { acc.max(0.0) } else { acc };
                }
                o += 4;
            }
            for (oo, yo) in out.iter_mut().enumerate().skip(o) {
                // SAFETY: as above.
                let acc = bias[oo] + unsafe { dot_f32(&w[oo * n..][..n], px) };
                *yo = if relu { acc.max(0.0) } else { acc };
            }
        }
    }
}

/// `Σ a[i]·b[i]` in 8-lane FMA, two accumulators, scalar tail (`a.len() == b.len()`).
#[target_feature(enable = "avx2,fma")]
unsafe fn dot_f32(a: &[f32], b: &[f32]) -> f32 {
    let n = a.len().min(b.len());
    let (a, b) = (&a[..n], &b[..n]);
    let mut acc0 = _mm256_setzero_ps();
    let mut acc1 = _mm256_setzero_ps();
    let mut ca = a.chunks_exact(16);
    let mut cb = b.chunks_exact(16);
    for (x, y) in (&mut ca).zip(&mut cb) {
        // SAFETY: each chunk holds 16 f32, so both 8-lane unaligned loads are in bounds.
        unsafe {
            acc0 = _mm256_fmadd_ps(
                _mm256_loadu_ps(x.as_ptr()),
                _mm256_loadu_ps(y.as_ptr()),
                acc0,
            );
            acc1 = _mm256_fmadd_ps(
                _mm256_loadu_ps(x.as_ptr().add(8)),
                _mm256_loadu_ps(y.as_ptr().add(8)),
                acc1,
            );
        }
    }
    let (ra, rb) = (ca.remainder(), cb.remainder());
    let mut i = 0;
    if ra.len() >= 8 {
        // SAFETY: at least 8 f32 remain in both.
        unsafe {
            acc0 = _mm256_fmadd_ps(
                _mm256_loadu_ps(ra.as_ptr()),
                _mm256_loadu_ps(rb.as_ptr()),
                acc0,
            )
        };
        i = 8;
    }
    // SAFETY: same target features as this function.
    let s = unsafe { hsum_ps(_mm256_add_ps(acc0, acc1)) };
    s + ra[i..]
        .iter()
        .zip(&rb[i..])
        .map(|(p, q)| p * q)
        .sum::<f32>()
}

/// Four dot products sharing the loads of `x` (each row as long as `x`), 8 lanes each.
#[target_feature(enable = "avx2,fma")]
unsafe fn dot4_f32(w: [&[f32]; 4], x: &[f32]) -> [f32; 4] {
    let n = x.len();
    let mut acc = [_mm256_setzero_ps(); 4];
    let body = n - n % 8;
    let mut i = 0;
    while i < body {
        // SAFETY: `i + 8 <= n` and every row holds `n` elements.
        unsafe {
            let xv = _mm256_loadu_ps(x.as_ptr().add(i));
            for k in 0..4 {
                acc[k] = _mm256_fmadd_ps(_mm256_loadu_ps(w[k][..n].as_ptr().add(i)), xv, acc[k]);
            }
        }
        i += 8;
    }
    let mut out = [0.0f32; 4];
    for k in 0..4 {
        // SAFETY: same target features as this function.
        out[k] = unsafe { hsum_ps(acc[k]) }
            + w[k][body..n]
                .iter()
                .zip(&x[body..])
                .map(|(p, q)| p * q)
                .sum::<f32>();
    }
    out
}

#[target_feature(enable = "avx2,fma")]
unsafe fn hsum_ps(v: __m256) -> f32 {
    let lo = _mm256_castps256_ps128(v);
    let hi = _mm256_extractf128_ps(v, 1);
    let s = _mm_add_ps(lo, hi);
    let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    let s = _mm_add_ss(s, _mm_shuffle_ps(s, s, 1));
    _mm_cvtss_f32(s)
}

/// AVX2 int8 pointwise conv; bit-exact twin of `reference::conv1x1::conv1x1_i8`.
pub(crate) fn conv1x1_i8(
    g: &Geom,
    x: &[i8],
    zx: i32,
    w: &[i8],
    rq: &[[i32; 3]],
    q: OutQ,
    y: &mut [i8],
) {
    for oy in 0..g.ho {
        for ox in 0..g.wo {
            let px = &x[src(g, oy, ox)..][..g.cin];
            let out = &mut y[(oy * g.wo + ox) * g.cout..][..g.cout];
            let n = g.cin;
            let mut o = 0;
            while o + 4 <= g.cout {
                let rows = [
                    &w[o * n..][..n],
                    &w[(o + 1) * n..][..n],
                    &w[(o + 2) * n..][..n],
                    &w[(o + 3) * n..][..n],
                ];
                // SAFETY: installed only when AVX2 is available (`Kernels::best`); reads only
                // through the given slices.
                let d = unsafe { dot4_i8(rows, px, zx) };
                for i in 0..4 {
                    out[o + i] = requant(d[i], rq[o + i], q);
                }
                o += 4;
            }
            for (oo, yo) in out.iter_mut().enumerate().skip(o) {
                // SAFETY: as above.
                let acc = unsafe { dot_i8(&w[oo * n..][..n], px, zx) };
                *yo = requant(acc, rq[oo], q);
            }
        }
    }
}

/// Four exact int8 dot products sharing the widened `x − zx` (each row as long as `x`).
#[target_feature(enable = "avx2")]
unsafe fn dot4_i8(w: [&[i8]; 4], x: &[i8], zx: i32) -> [i32; 4] {
    let n = x.len();
    let z = _mm256_set1_epi16(zx as i16);
    let mut acc = [_mm256_setzero_si256(); 4];
    let body = n - n % 16;
    let mut i = 0;
    while i < body {
        // SAFETY: `i + 16 <= n` and every row holds `n` bytes: 128-bit unaligned loads.
        unsafe {
            let xv = _mm256_sub_epi16(
                _mm256_cvtepi8_epi16(_mm_loadu_si128(x.as_ptr().add(i).cast())),
                z,
            );
            for k in 0..4 {
                let wv = _mm256_cvtepi8_epi16(_mm_loadu_si128(w[k][..n].as_ptr().add(i).cast()));
                acc[k] = _mm256_add_epi32(acc[k], _mm256_madd_epi16(wv, xv));
            }
        }
        i += 16;
    }
    let mut out = [0i32; 4];
    for k in 0..4 {
        // SAFETY: same target features as this function.
        let mut t = unsafe { hsum_epi32(acc[k]) };
        for (&a, &b) in w[k][body..n].iter().zip(&x[body..]) {
            t += a as i32 * (b as i32 - zx);
        }
        out[k] = t;
    }
    out
}

#[target_feature(enable = "avx2")]
unsafe fn hsum_epi32(acc: __m256i) -> i32 {
    let lo = _mm256_castsi256_si128(acc);
    let hi = _mm256_extracti128_si256(acc, 1);
    let s = _mm_add_epi32(lo, hi);
    let s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0b01_00_11_10));
    let s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0b10_11_00_01));
    _mm_cvtsi128_si32(s)
}

/// `Σ w[i]·(x[i] − zx)` exactly: 16 lanes of i16 (`|x − zx| ≤ 255`, `|w| ≤ 128`), pairwise
/// `madd` into i32.
#[target_feature(enable = "avx2")]
unsafe fn dot_i8(w: &[i8], x: &[i8], zx: i32) -> i32 {
    let n = w.len().min(x.len());
    let (w, x) = (&w[..n], &x[..n]);
    let z = _mm256_set1_epi16(zx as i16);
    let mut acc = _mm256_setzero_si256();
    let mut cw = w.chunks_exact(16);
    let mut cx = x.chunks_exact(16);
    for (a, b) in (&mut cw).zip(&mut cx) {
        // SAFETY: each chunk holds 16 bytes: one unaligned 128-bit load each.
        let (a, b) = unsafe {
            (
                _mm_loadu_si128(a.as_ptr().cast()),
                _mm_loadu_si128(b.as_ptr().cast()),
            )
        };
        let a16 = _mm256_cvtepi8_epi16(a);
        let b16 = _mm256_sub_epi16(_mm256_cvtepi8_epi16(b), z);
        acc = _mm256_add_epi32(acc, _mm256_madd_epi16(a16, b16));
    }
    let lo = _mm256_castsi256_si128(acc);
    let hi = _mm256_extracti128_si256(acc, 1);
    let s = _mm_add_epi32(lo, hi);
    let s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0b01_00_11_10));
    let s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0b10_11_00_01));
    let mut total = _mm_cvtsi128_si32(s);
    for (&a, &b) in cw.remainder().iter().zip(cx.remainder()) {
        total += a as i32 * (b as i32 - zx);
    }
    total
}
