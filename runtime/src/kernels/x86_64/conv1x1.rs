//! AVX2 pointwise conv (the GEMM that dominates ShuffleNetV2): register tiles of `P` output
//! pixels × 4 output channels, each accumulator a dot product over `cin` in 8 (f32) or
//! 16 (int8) lanes, so every loaded input vector feeds 4 FMAs/`madd`s and every weight
//! vector `P`. The 4 accumulators of one pixel are reduced together by an `hadd` tree.
//!
//! int8: `w` and `x − zx` sign-extended to i16, `_mm256_madd_epi16` into i32 — exact
//! (`|w·(x − zx)| ≤ 128·255`, pair sums far from overflow), so bit-exact to the reference.
//! f32: FMA in 8 lanes: differs from the sequential reference by reassociation only
//! (`|Δ| ≤ 2·cin·ε·(|b| + Σ|w·x|)`, the bound `tests/engine_simd.rs` checks).
use core::arch::x86_64::*;

use super::lane_mask;
use super::requant::{Requant, RqCols};
use crate::kernels::{Geom, OutQ};

/// Output pixels per f32 tile: 3×4 accumulators + 4 weight vectors fill the 16 registers.
const PF: usize = 3;
/// Output pixels per int8 tile (8 accumulators, 4 widened weights, the input, `zx`).
const PI: usize = 2;

/// Start of output pixel `p`'s input channels.
#[inline]
fn src(g: &Geom, p: usize) -> usize {
    let (oy, ox) = (p / g.wo, p % g.wo);
    (oy * g.stride * g.w + ox * g.stride) * g.in_stride + g.c_off
}

/// AVX2 f32 pointwise conv; same contract as `reference::conv1x1::conv1x1_f32`.
pub(crate) fn conv1x1_f32(g: &Geom, x: &[f32], w: &[f32], bias: &[f32], relu: bool, y: &mut [f32]) {
    let (n, npix) = (g.cin, g.ho * g.wo);
    let (w, bias, y) = (&w[..g.cout * n], &bias[..g.cout], &mut y[..npix * g.cout]);
    let mut p = 0;
    while p < npix {
        let row = |i: usize| &x[src(g, p + i)..][..n];
        match npix - p {
            1 => rows_f32::<1>([row(0)], w, bias, relu, &mut y[p * g.cout..]),
            2 => rows_f32::<2>([row(0), row(1)], w, bias, relu, &mut y[p * g.cout..]),
            _ => rows_f32::<PF>(
                [row(0), row(1), row(2)],
                w,
                bias,
                relu,
                &mut y[p * g.cout..],
            ),
        }
        p += PF.min(npix - p);
    }
}

/// All output channels of `P` pixels (`xs`, each `cin` long) into `y[..P·cout]`.
#[inline]
fn rows_f32<const P: usize>(xs: [&[f32]; P], w: &[f32], bias: &[f32], relu: bool, y: &mut [f32]) {
    let (n, cout) = (xs[0].len(), bias.len());
    let act = |v: f32| if relu { v.max(0.0) } else { v };
    let mut o = 0;
    while o < cout {
        if o + 4 <= cout {
            let ws = [0, 1, 2, 3].map(|j| &w[(o + j) * n..][..n]);
            // SAFETY: only installed after AVX2+FMA detection (`x86_64::detected`); every
            // row in `xs` and `ws` holds exactly `n` elements.
            let d = unsafe { tile_f32::<P, 4>(xs, ws, n) };
            for (p, dp) in d.iter().enumerate() {
                for (j, v) in dp.iter().enumerate() {
                    y[p * cout + o + j] = act(bias[o + j] + v);
                }
            }
            o += 4;
        } else {
            // SAFETY: as above, one row.
            let d = unsafe { tile_f32::<P, 1>(xs, [&w[o * n..][..n]], n) };
            for (p, dp) in d.iter().enumerate() {
                y[p * cout + o] = act(bias[o] + dp[0]);
            }
            o += 1;
        }
    }
}

/// `P × O` dot products of length `n`: `out[p][o] = Σ_i xs[p][i]·ws[o][i]`.
///
/// # Safety
/// AVX2 and FMA available; every slice in `xs` and `ws` holds at least `n` elements.
#[target_feature(enable = "avx2,fma")]
unsafe fn tile_f32<const P: usize, const O: usize>(
    xs: [&[f32]; P],
    ws: [&[f32]; O],
    n: usize,
) -> [[f32; O]; P] {
    debug_assert!(xs.iter().all(|s| s.len() >= n) && ws.iter().all(|s| s.len() >= n));
    let mut acc = [[_mm256_setzero_ps(); O]; P];
    let body = n & !7;
    let mut i = 0;
    while i < body {
        // SAFETY: `i + 8 <= n` and every row holds `n` elements: unaligned 8-lane loads.
        unsafe {
            let mut wv = [_mm256_setzero_ps(); O];
            for o in 0..O {
                wv[o] = _mm256_loadu_ps(ws[o].as_ptr().add(i));
            }
            for p in 0..P {
                let xv = _mm256_loadu_ps(xs[p].as_ptr().add(i));
                for o in 0..O {
                    acc[p][o] = _mm256_fmadd_ps(wv[o], xv, acc[p][o]);
                }
            }
        }
        i += 8;
    }
    if i < n {
        let m = lane_mask(n - i);
        // SAFETY: the mask enables only lanes `< n − i`, which are in bounds; masked-off
        // lanes are not accessed (and read as 0, so they add 0·0).
        unsafe {
            let m = _mm256_loadu_si256(m.as_ptr().cast());
            let mut wv = [_mm256_setzero_ps(); O];
            for o in 0..O {
                wv[o] = _mm256_maskload_ps(ws[o].as_ptr().add(i), m);
            }
            for p in 0..P {
                let xv = _mm256_maskload_ps(xs[p].as_ptr().add(i), m);
                for o in 0..O {
                    acc[p][o] = _mm256_fmadd_ps(wv[o], xv, acc[p][o]);
                }
            }
        }
    }
    let mut out = [[0.0f32; O]; P];
    for p in 0..P {
        if O == 4 {
            let s = hsum4_ps(acc[p][0], acc[p][1], acc[p][2], acc[p][3]);
            let mut t = [0.0f32; 4];
            // SAFETY: `t` holds 4 f32.
            unsafe { _mm_storeu_ps(t.as_mut_ptr(), s) };
            out[p].copy_from_slice(&t[..O]);
        } else {
            for o in 0..O {
                out[p][o] = hsum_ps(acc[p][o]);
            }
        }
    }
    out
}

/// `[Σa, Σb, Σc, Σd]` of four 8-lane vectors (three `hadd`s and one cross-lane add).
#[inline]
#[target_feature(enable = "avx2,fma")]
fn hsum4_ps(a: __m256, b: __m256, c: __m256, d: __m256) -> __m128 {
    let s = _mm256_hadd_ps(_mm256_hadd_ps(a, b), _mm256_hadd_ps(c, d));
    _mm_add_ps(_mm256_castps256_ps128(s), _mm256_extractf128_ps(s, 1))
}

#[inline]
#[target_feature(enable = "avx2,fma")]
fn hsum_ps(v: __m256) -> f32 {
    let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    _mm_cvtss_f32(_mm_add_ss(s, _mm_shuffle_ps(s, s, 1)))
}

/// AVX2 exact `Σ w·(x − zx)` over the common length; twin of `reference::conv1x1::dot_i8`.
pub(crate) fn dot_i8(w: &[i8], x: &[i8], zx: i32) -> i32 {
    let n = w.len().min(x.len());
    // SAFETY: only installed after AVX2 detection; both slices hold at least `n` bytes.
    unsafe { tile_i8::<1, 1>([&x[..n]], [&w[..n]], n, zx)[0][0] }
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
    let (n, npix) = (g.cin, g.ho * g.wo);
    let (w, y) = (&w[..g.cout * n], &mut y[..npix * g.cout]);
    let mut cols = RqCols::zeroed();
    let req = Requant::new(&rq[..g.cout], &mut cols);
    let mut p = 0;
    while p < npix {
        let row = |i: usize| &x[src(g, p + i)..][..n];
        let y = &mut y[p * g.cout..];
        if npix - p >= PI {
            rows_i8::<PI>([row(0), row(1)], zx, w, g.cout, &req, q, y);
        } else {
            rows_i8::<1>([row(0)], zx, w, g.cout, &req, q, y);
        }
        p += PI.min(npix - p);
    }
}

/// Output channels per requant block.
const OB: usize = 64;

/// All output channels of `P` pixels into `y[..P·cout]`, in blocks of [`OB`] channels: the
/// exact sums into a stack block, then requantised 8 channels at a time.
#[allow(clippy::too_many_arguments)]
#[inline]
fn rows_i8<const P: usize>(
    xs: [&[i8]; P],
    zx: i32,
    w: &[i8],
    cout: usize,
    rq: &Requant<'_>,
    q: OutQ,
    y: &mut [i8],
) {
    let n = xs[0].len();
    let mut acc = [[0i32; OB]; P];
    let mut o0 = 0;
    while o0 < cout {
        let nb = OB.min(cout - o0);
        let mut o = 0;
        while o < nb {
            if o + 4 <= nb {
                let ws = [0, 1, 2, 3].map(|j| &w[(o0 + o + j) * n..][..n]);
                // SAFETY: only installed after AVX2 detection; every row holds `n` bytes.
                let d = unsafe { tile_i8::<P, 4>(xs, ws, n, zx) };
                for (p, dp) in d.iter().enumerate() {
                    acc[p][o..o + 4].copy_from_slice(dp);
                }
                o += 4;
            } else {
                // SAFETY: as above, one row.
                let d = unsafe { tile_i8::<P, 1>(xs, [&w[(o0 + o) * n..][..n]], n, zx) };
                for (p, dp) in d.iter().enumerate() {
                    acc[p][o] = dp[0];
                }
                o += 1;
            }
        }
        for (p, a) in acc.iter().enumerate() {
            let out = &mut y[p * cout + o0..][..nb];
            // SAFETY: only installed after AVX2 detection.
            unsafe { rq.row(o0, &a[..nb], q, out) };
        }
        o0 += nb;
    }
}

/// `P × O` exact sums `out[p][o] = Σ_i ws[o][i]·(xs[p][i] − zx)`.
///
/// # Safety
/// AVX2 available; every slice in `xs` and `ws` holds at least `n` bytes.
#[target_feature(enable = "avx2")]
unsafe fn tile_i8<const P: usize, const O: usize>(
    xs: [&[i8]; P],
    ws: [&[i8]; O],
    n: usize,
    zx: i32,
) -> [[i32; O]; P] {
    debug_assert!(xs.iter().all(|s| s.len() >= n) && ws.iter().all(|s| s.len() >= n));
    let z = _mm256_set1_epi16(zx as i16);
    let mut acc = [[_mm256_setzero_si256(); O]; P];
    // One 16-lane step over rows already loaded as bytes.
    macro_rules! step {
        ($wv:expr, $xv:expr) => {{
            let (wv, xv): ([__m128i; O], [__m128i; P]) = ($wv, $xv);
            let mut w16 = [_mm256_setzero_si256(); O];
            for o in 0..O {
                w16[o] = _mm256_cvtepi8_epi16(wv[o]);
            }
            for p in 0..P {
                let xp = _mm256_sub_epi16(_mm256_cvtepi8_epi16(xv[p]), z);
                for o in 0..O {
                    acc[p][o] = _mm256_add_epi32(acc[p][o], _mm256_madd_epi16(w16[o], xp));
                }
            }
        }};
    }
    let body = n & !15;
    let mut i = 0;
    while i < body {
        let (mut wv, mut xv) = ([_mm_setzero_si128(); O], [_mm_setzero_si128(); P]);
        for o in 0..O {
            // SAFETY: `i + 16 <= n` and every row holds `n` bytes: unaligned 128-bit load.
            wv[o] = unsafe { _mm_loadu_si128(ws[o].as_ptr().add(i).cast()) };
        }
        for p in 0..P {
            // SAFETY: as above.
            xv[p] = unsafe { _mm_loadu_si128(xs[p].as_ptr().add(i).cast()) };
        }
        step!(wv, xv);
        i += 16;
    }
    if i < n {
        // Tail through zero-padded copies: a padded weight of 0 adds 0 whatever the input.
        let (mut wv, mut xv) = ([_mm_setzero_si128(); O], [_mm_setzero_si128(); P]);
        for o in 0..O {
            wv[o] = load_padded(&ws[o][i..n]);
        }
        for p in 0..P {
            xv[p] = load_padded(&xs[p][i..n]);
        }
        step!(wv, xv);
    }
    let mut out = [[0i32; O]; P];
    for p in 0..P {
        if O == 4 {
            let s = _mm256_hadd_epi32(
                _mm256_hadd_epi32(acc[p][0], acc[p][1]),
                _mm256_hadd_epi32(acc[p][2], acc[p][3]),
            );
            let s = _mm_add_epi32(_mm256_castsi256_si128(s), _mm256_extracti128_si256(s, 1));
            let mut t = [0i32; 4];
            // SAFETY: `t` holds 4 i32.
            unsafe { _mm_storeu_si128(t.as_mut_ptr().cast(), s) };
            out[p].copy_from_slice(&t[..O]);
        } else {
            for o in 0..O {
                out[p][o] = hsum_epi32(acc[p][o]);
            }
        }
    }
    out
}

#[inline]
#[target_feature(enable = "avx2")]
fn hsum_epi32(v: __m256i) -> i32 {
    let s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
    let s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0b01_00_11_10));
    let s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0b10_11_00_01));
    _mm_cvtsi128_si32(s)
}

/// Up to 16 bytes as one vector, zero-padded.
#[inline]
#[target_feature(enable = "avx2")]
fn load_padded(r: &[i8]) -> __m128i {
    let mut b = [0i8; 16];
    b[..r.len()].copy_from_slice(r);
    // SAFETY: `b` holds 16 bytes.
    unsafe { _mm_loadu_si128(b.as_ptr().cast()) }
}
