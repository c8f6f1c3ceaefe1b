//! AVX2 ungrouped k×k conv with a short patch (ShuffleNetV2's 3x3 stride-2 stem: `cin·k·k`
//! = 27, 24 outputs). The weights are transposed once per call to `[cin·k·k, cout]` (padded
//! to 8 outputs) on the stack, so each output pixel is its im2col patch times that matrix:
//! one broadcast per patch element, 8 output channels per lane vector, 4 pixels a tile, so
//! each weight vector loaded feeds 4 FMAs / multiply-adds. The patch is tap-major
//! (`(ky, kx, c)`, not the weights' `(c, ky, kx)`): each tap's channels are one run of the
//! NHWC input. Larger problems fall back to the reference.
//!
//! f32: bias, then FMAs over the tap-major patch: only the order and FMA's single rounding
//! differ from the reference, `|Δ| ≤ 2·n·ε·(|b| + Σ|w·x|)`. int8: the patch `x − zx` as i16
//! pairs and the weights as matching i16 pairs, `_mm256_madd_epi16` into i32: exact.
use core::arch::x86_64::*;

use super::requant::{Requant, RqCols};
use crate::kernels::reference::conv::{self as refconv, PATCH};
use crate::kernels::{Geom, OutQ};

/// Largest transposed weight (`n · cout` rounded up to 8 outputs) kept on the stack.
const WT: usize = 2048;
/// Most output channels handled (the padded bias / output row on the stack).
const MAXC: usize = 128;

/// Output channels rounded up to whole 8-lane vectors, if the problem fits the stack tiles.
fn padded_cout(g: &Geom, n: usize) -> Option<usize> {
    let cp = g.cout.div_ceil(8) * 8;
    (n <= PATCH && cp <= MAXC && n.div_ceil(2) * 2 * cp <= WT).then_some(cp)
}

/// AVX2 f32 conv; same contract as `reference::conv::conv_f32`.
pub(crate) fn conv_f32(g: &Geom, x: &[f32], w: &[f32], bias: &[f32], relu: bool, y: &mut [f32]) {
    let n = g.cin * g.k * g.k;
    let Some(cp) = padded_cout(g, n) else {
        return refconv::conv_f32(g, x, w, bias, relu, y);
    };
    // wt[e, o] = w[o, e] with `e` tap-major, as the patch.
    let mut wt = [0.0f32; WT];
    for (o, row) in w[..g.cout * n].chunks_exact(n).enumerate() {
        for e in 0..n {
            wt[e * cp + o] = row[oihw(g, e)];
        }
    }
    let mut b = [0.0f32; MAXC];
    b[..g.cout].copy_from_slice(&bias[..g.cout]);
    // Tiles of `PT` pixels along a row: every weight vector loaded feeds `PT` FMAs.
    let (mut patch, mut tmp) = ([[0.0f32; PATCH]; PT], [[0.0f32; MAXC]; PT]);
    for oy in 0..g.ho {
        let mut ox = 0;
        while ox < g.wo {
            let np = PT.min(g.wo - ox);
            for (t, p) in patch.iter_mut().enumerate().take(np) {
                gather_tap_major(g, x, oy, ox + t, 0.0, |v| v, p);
            }
            // SAFETY: only installed after AVX2+FMA detection; `wt` holds `n·cp`, `b` and
            // every `tmp` row `cp ≤ MAXC`, every patch row `n ≤ PATCH`.
            unsafe { tile_f32(&patch, n, &wt[..n * cp], &b[..cp], relu, &mut tmp, cp) };
            for (t, out) in tmp.iter().enumerate().take(np) {
                y[(oy * g.wo + ox + t) * g.cout..][..g.cout].copy_from_slice(&out[..g.cout]);
            }
            ox += np;
        }
    }
}

/// Output pixels per stem tile (f32 and int8).
const PT: usize = 4;

/// The AVX-512 table's f32 stem: [`conv_f32`] with 16-lane accumulators, [`PT5`] pixels
/// a tile (32 registers hold 8 pixels × 2 blocks without spilling), every lane summed as
/// there (from the bias, FMA over the tap-major patch in order), so the AVX2 twin's bits.
pub(crate) fn conv_f32_avx512(
    g: &Geom,
    x: &[f32],
    w: &[f32],
    bias: &[f32],
    relu: bool,
    y: &mut [f32],
) {
    let n = g.cin * g.k * g.k;
    let cp = g.cout.div_ceil(16) * 16;
    if n > PATCH || cp > MAXC || n * cp > WT {
        return conv_f32(g, x, w, bias, relu, y);
    }
    let mut wt = [0.0f32; WT];
    for (o, row) in w[..g.cout * n].chunks_exact(n).enumerate() {
        for e in 0..n {
            wt[e * cp + o] = row[oihw(g, e)];
        }
    }
    let mut b = [0.0f32; MAXC];
    b[..g.cout].copy_from_slice(&bias[..g.cout]);
    let mut patch = [[0.0f32; PATCH]; PT5];
    for oy in 0..g.ho {
        let mut ox = 0;
        while ox < g.wo {
            let np = PT5.min(g.wo - ox);
            for (t, p) in patch.iter_mut().enumerate().take(np) {
                gather_tap_major(g, x, oy, ox + t, 0.0, |v| v, p);
            }
            let out = &mut y[(oy * g.wo + ox) * g.cout..][..np * g.cout];
            // SAFETY: only installed after AVX-512 detection; `wt` holds `n·cp`, `b`
            // `cp ≤ MAXC`, every patch row `n ≤ PATCH`; `out` `np` pixels of `cout`.
            unsafe { tile_f32_512(&patch, np, n, &wt[..n * cp], &b[..cp], relu, out, g.cout) };
            ox += np;
        }
    }
}

/// Output pixels per AVX-512 f32 stem tile.
const PT5: usize = 8;

/// `out[p][o] = b[o] + Σ_t patch[p][t]·wt[t, o]` (then ReLU) for the first `np` patches,
/// `o` in 16-lane blocks two at a time where there are, stored straight into the output
/// rows (`cout` apart, the lanes past `cout` masked off).
///
/// # Safety
/// AVX-512F available; `cp = b.len()` a multiple of 16 and at least `cout`, `n ≤ PATCH`,
/// `wt.len() ≥ n · cp`; `out` holds `np·cout`.
#[allow(clippy::too_many_arguments)]
#[target_feature(enable = "avx2,fma,avx512f")]
unsafe fn tile_f32_512(
    patch: &[[f32; PATCH]; PT5],
    np: usize,
    n: usize,
    wt: &[f32],
    b: &[f32],
    relu: bool,
    out: &mut [f32],
    cout: usize,
) {
    let cp = b.len();
    debug_assert!(cp.is_multiple_of(16) && cp >= cout && wt.len() >= n * cp);
    debug_assert!(out.len() >= np * cout);
    let mut c0 = 0;
    while c0 < cp {
        let nb = if c0 + 32 <= cp { 2 } else { 1 };
        // SAFETY: the blocks `c0 .. c0 + 16·nb ≤ cp` are inside `b` and every `wt` row.
        let acc = unsafe {
            if nb == 2 {
                blocks_f32_512::<2>(patch, n, wt, b, cp, c0)
            } else {
                let a = blocks_f32_512::<1>(patch, n, wt, b, cp, c0);
                a.map(|r| [r[0], _mm512_setzero_ps()])
            }
        };
        for (p, ap) in acc.iter().enumerate().take(np) {
            for (k, &a) in ap.iter().enumerate().take(nb) {
                let o = c0 + 16 * k;
                if o >= cout {
                    break;
                }
                let a = if relu {
                    _mm512_max_ps(a, _mm512_setzero_ps())
                } else {
                    a
                };
                let keep = super::first16(cout - o);
                // SAFETY: the lanes `keep` selects are channels `o .. min(o + 16, cout)` of
                // pixel `p < np` (`out` holds `np·cout`).
                unsafe { _mm512_mask_storeu_ps(out.as_mut_ptr().add(p * cout + o), keep, a) };
            }
        }
        c0 += 16 * nb;
    }
}

/// `B` 16-lane blocks from `c0` of [`tile_f32_512`], for all [`PT5`] patches.
///
/// # Safety
/// As [`tile_f32_512`], and `c0 + 16·B ≤ cp`.
#[inline]
#[target_feature(enable = "avx2,fma,avx512f")]
// `t` indexes the patches and the weight rows alike.
#[allow(clippy::needless_range_loop)]
unsafe fn blocks_f32_512<const B: usize>(
    patch: &[[f32; PATCH]; PT5],
    n: usize,
    wt: &[f32],
    b: &[f32],
    cp: usize,
    c0: usize,
) -> [[__m512; B]; PT5] {
    // SAFETY: `c0 + 16k + 16 ≤ cp ≤ b.len()`.
    let bv: [__m512; B] =
        core::array::from_fn(|k| unsafe { _mm512_loadu_ps(b.as_ptr().add(c0 + 16 * k)) });
    let mut acc = [bv; PT5];
    for t in 0..n {
        // SAFETY: row `t` of `wt` spans `t·cp .. t·cp + cp`, `c0 + 16k + 16 ≤ cp`.
        let wv: [__m512; B] = core::array::from_fn(|k| unsafe {
            _mm512_loadu_ps(wt.as_ptr().add(t * cp + c0 + 16 * k))
        });
        for (p, ap) in acc.iter_mut().enumerate() {
            let xv = _mm512_set1_ps(patch[p][t]);
            for (a, &w) in ap.iter_mut().zip(&wv) {
                *a = _mm512_fmadd_ps(xv, w, *a);
            }
        }
    }
    acc
}

/// `out[p][o] = b[o] + Σ_t patch[p][t]·wt[t, o]` (then ReLU) for the [`PT`] patches, `o` in
/// 8-lane blocks, three blocks at a time where there are (3 × 4 accumulators); per pixel
/// the FMAs run in the patch's order, as one pixel at a time would.
///
/// # Safety
/// AVX2 and FMA available; `cp` a multiple of 8 and at most `MAXC`, `n ≤ PATCH`,
/// `wt.len() ≥ n · cp`, `b.len() ≥ cp`.
#[target_feature(enable = "avx2,fma")]
unsafe fn tile_f32(
    patch: &[[f32; PATCH]; PT],
    n: usize,
    wt: &[f32],
    b: &[f32],
    relu: bool,
    out: &mut [[f32; MAXC]; PT],
    cp: usize,
) {
    debug_assert!(cp.is_multiple_of(8) && cp <= MAXC && n <= PATCH && wt.len() >= n * cp);
    let mut c0 = 0;
    while c0 < cp {
        // SAFETY: the blocks `c0 .. c0 + 8·B ≤ cp` are inside `b`, every `wt` row and
        // every `out` row; taps `t < n ≤ PATCH`.
        unsafe {
            if c0 + 24 <= cp {
                blocks_f32::<3>(patch, n, wt, b, relu, out, cp, c0);
                c0 += 24;
            } else {
                blocks_f32::<1>(patch, n, wt, b, relu, out, cp, c0);
                c0 += 8;
            }
        }
    }
}

/// `B` 8-channel blocks from `c0` of [`tile_f32`].
///
/// # Safety
/// As [`tile_f32`], and `c0 + 8·B ≤ cp`.
#[target_feature(enable = "avx2,fma")]
// `t` indexes the patches and the weight rows alike.
#[allow(clippy::too_many_arguments, clippy::needless_range_loop)]
unsafe fn blocks_f32<const B: usize>(
    patch: &[[f32; PATCH]; PT],
    n: usize,
    wt: &[f32],
    b: &[f32],
    relu: bool,
    out: &mut [[f32; MAXC]; PT],
    cp: usize,
    c0: usize,
) {
    let mut acc = [[_mm256_setzero_ps(); B]; PT];
    for ap in acc.iter_mut() {
        for (k, a) in ap.iter_mut().enumerate() {
            // SAFETY: `c0 + 8k + 8 ≤ cp ≤ b.len()`.
            *a = unsafe { _mm256_loadu_ps(b.as_ptr().add(c0 + 8 * k)) };
        }
    }
    for t in 0..n {
        let mut wv = [_mm256_setzero_ps(); B];
        for (k, v) in wv.iter_mut().enumerate() {
            // SAFETY: row `t` of `wt` spans `t·cp .. t·cp + cp`, `c0 + 8k + 8 ≤ cp`.
            *v = unsafe { _mm256_loadu_ps(wt.as_ptr().add(t * cp + c0 + 8 * k)) };
        }
        for (p, ap) in acc.iter_mut().enumerate() {
            let xv = _mm256_set1_ps(patch[p][t]);
            for (a, &w) in ap.iter_mut().zip(&wv) {
                *a = _mm256_fmadd_ps(xv, w, *a);
            }
        }
    }
    for (ap, o) in acc.iter().zip(out.iter_mut()) {
        for (k, &a) in ap.iter().enumerate() {
            let a = if relu {
                _mm256_max_ps(a, _mm256_setzero_ps())
            } else {
                a
            };
            // SAFETY: `c0 + 8k + 8 ≤ cp ≤ MAXC`.
            unsafe { _mm256_storeu_ps(o.as_mut_ptr().add(c0 + 8 * k), a) };
        }
    }
}

/// AVX2 int8 conv; bit-exact twin of `reference::conv::conv_i8`.
pub(crate) fn conv_i8(
    g: &Geom,
    x: &[i8],
    zx: i32,
    w: &[i8],
    rq: &[[i32; 3]],
    q: OutQ,
    y: &mut [i8],
) {
    let n = g.cin * g.k * g.k;
    let Some(cp) = padded_cout(g, n) else {
        return refconv::conv_i8(g, x, zx, w, rq, q, y);
    };
    // The patch in tap-major order `e = (ky·k + kx)·cin + c` (exact integer sums: any
    // order gives the reference's bits), so its rows are runs of the input. wt[tp, o] =
    // (w[o, e = 2tp], w[o, e = 2tp + 1]) as an i16 pair (low, high) in one i32.
    let np = n.div_ceil(2);
    let mut wt = [0i32; WT / 2];
    for (o, row) in w[..g.cout * n].chunks_exact(n).enumerate() {
        for tp in 0..np {
            let lo = row[oihw(g, 2 * tp)] as i16 as u16 as u32;
            let hi = if 2 * tp + 1 < n {
                row[oihw(g, 2 * tp + 1)] as i16 as u16 as u32
            } else {
                0
            };
            wt[tp * cp + o] = (lo | hi << 16) as i32;
        }
    }
    let mut cols = RqCols::new();
    let req = Requant::new(&rq[..g.cout], &mut cols);
    // Per pixel the patch `x − zx` as i16 (∈ [−255, 255]; padding 0); element pairs read
    // as one i32 each. An odd `n`'s last pair reads one element past the patch (whatever a
    // run left there) against a 0 weight.
    let mut patch = [[0i16; PATCH]; PT];
    let mut acc = [[0i32; MAXC]; PT];
    for oy in 0..g.ho {
        let mut ox = 0;
        while ox < g.wo {
            let npx = PT.min(g.wo - ox);
            for (t, p) in patch.iter_mut().enumerate().take(npx) {
                // SAFETY: only installed after AVX2 detection; `n ≤ PATCH`.
                unsafe { gather_i16(g, x, zx, oy, ox + t, p) };
            }
            // SAFETY: only installed after AVX2 detection; `wt` holds `np·cp`, every `acc`
            // row `cp ≤ MAXC`, every patch row `2·np ≤ PATCH` elements.
            unsafe { tile_i8(&patch, np, &wt[..np * cp], &mut acc, cp) };
            for (t, a) in acc.iter().enumerate().take(npx) {
                let out = &mut y[(oy * g.wo + ox + t) * g.cout..][..g.cout];
                // SAFETY: only installed after AVX2 detection.
                unsafe { req.row(0, &a[..g.cout], q, out) };
            }
            ox += npx;
        }
    }
}

/// Where the tap-major patch element `e = (ky·k + kx)·cin + c` sits in an OIHW weight row.
pub(super) fn oihw(g: &Geom, e: usize) -> usize {
    (e % g.cin) * g.k * g.k + e / g.cin
}

/// `p[(ky·k + kx)·cin + c] = load(x[iy, ix, c_off + c])` for the taps of output pixel
/// `(oy, ox)`, `pad` outside the image: tap-major, so each tap is one run of `cin` inputs.
fn gather_tap_major<T: Copy, U: Copy>(
    g: &Geom,
    x: &[T],
    oy: usize,
    ox: usize,
    pad: U,
    load: impl Fn(T) -> U,
    p: &mut [U],
) {
    let (k, cin) = (g.k, g.cin);
    let (iy0, ix0) = (oy * g.stride, ox * g.stride);
    if iy0 >= g.pad && ix0 >= g.pad && iy0 - g.pad + k <= g.h && ix0 - g.pad + k <= g.w {
        // Every tap inside: per `ky` the `k` taps' channel runs, one copy when dense.
        let run = (k - 1) * g.in_stride + cin;
        for ky in 0..k {
            let s = ((iy0 - g.pad + ky) * g.w + ix0 - g.pad) * g.in_stride + g.c_off;
            let src = &x[s..s + run];
            let dst = &mut p[ky * k * cin..][..k * cin];
            if g.in_stride == cin {
                for (d, &v) in dst.iter_mut().zip(src) {
                    *d = load(v);
                }
            } else {
                for (d, px) in dst.chunks_exact_mut(cin).zip(src.chunks(g.in_stride)) {
                    for (d, &v) in d.iter_mut().zip(px) {
                        *d = load(v);
                    }
                }
            }
        }
        return;
    }
    for ky in 0..k {
        let iy = Geom::tap(oy, ky, g.stride, g.pad, g.h);
        for kx in 0..k {
            let dst = &mut p[(ky * k + kx) * cin..][..cin];
            match (iy, Geom::tap(ox, kx, g.stride, g.pad, g.w)) {
                (Some(iy), Some(ix)) => {
                    let px = &x[(iy * g.w + ix) * g.in_stride + g.c_off..][..cin];
                    for (d, &v) in dst.iter_mut().zip(px) {
                        *d = load(v);
                    }
                }
                _ => dst.fill(pad),
            }
        }
    }
}

/// `p[(ky·k + kx)·cin + c] = x[iy, ix, c_off + c] − zx` for the taps of output pixel
/// `(oy, ox)`, 0 outside the image. Where every tap is inside and the pixels are dense
/// (`in_stride = cin`, so each `ky`'s taps are one run of `k·cin ≤ 16` bytes), a run is one
/// 16-byte load widened to i16: its 16 − `k·cin` extra elements land past the run, where the
/// next run (or nothing the weights read but against 0) overwrites them.
///
/// # Safety
/// AVX2 available; `g.cin · g.k² ≤ PATCH`.
#[target_feature(enable = "avx2")]
unsafe fn gather_i16(g: &Geom, x: &[i8], zx: i32, oy: usize, ox: usize, p: &mut [i16; PATCH]) {
    let (k, cin) = (g.k, g.cin);
    let run = k * cin;
    let (iy0, ix0) = (oy * g.stride, ox * g.stride);
    let inside = iy0 >= g.pad && ix0 >= g.pad && iy0 - g.pad + k <= g.h && ix0 - g.pad + k <= g.w;
    if inside && g.in_stride == cin && run <= 16 && (k - 1) * run + 16 <= PATCH {
        let z = _mm256_set1_epi16(zx as i16);
        for ky in 0..k {
            // `in_stride = cin` leaves no room for a channel offset: `c_off = 0`.
            let s = ((iy0 - g.pad + ky) * g.w + ix0 - g.pad) * cin;
            if s + 16 <= x.len() {
                // SAFETY: `x[s .. s + 16]` is in bounds; `p[ky·run .. ky·run + 16]` within
                // `PATCH` by the condition above.
                unsafe {
                    let v = _mm_loadu_si128(x.as_ptr().add(s).cast());
                    let v = _mm256_sub_epi16(_mm256_cvtepi8_epi16(v), z);
                    _mm256_storeu_si256(p.as_mut_ptr().add(ky * run).cast(), v);
                }
            } else {
                for (d, &v) in p[ky * run..][..run].iter_mut().zip(&x[s..s + run]) {
                    *d = (v as i32 - zx) as i16;
                }
            }
        }
        return;
    }
    gather_tap_major(g, x, oy, ox, 0, |v| (v as i32 - zx) as i16, p);
}

/// `acc[p][o] = Σ_tp madd(pair tp of patch[p], wt[tp, o])` for the [`PT`] patches, `o` in
/// 8-lane blocks, three at a time where there are (each weight vector loaded feeds `PT`
/// multiply-adds).
///
/// # Safety
/// AVX2 available; `cp` a multiple of 8 and at most `MAXC`, `2·np ≤ PATCH`,
/// `wt.len() ≥ np · cp`.
#[target_feature(enable = "avx2")]
unsafe fn tile_i8(
    patch: &[[i16; PATCH]; PT],
    np: usize,
    wt: &[i32],
    acc: &mut [[i32; MAXC]; PT],
    cp: usize,
) {
    debug_assert!(cp.is_multiple_of(8) && cp <= MAXC && 2 * np <= PATCH && wt.len() >= np * cp);
    let mut c0 = 0;
    while c0 < cp {
        // SAFETY: the blocks `c0 .. c0 + 8·B ≤ cp` are inside every `wt` row and `acc` row.
        unsafe {
            if c0 + 24 <= cp {
                blocks_i8::<3>(patch, np, wt, acc, cp, c0);
                c0 += 24;
            } else {
                blocks_i8::<1>(patch, np, wt, acc, cp, c0);
                c0 += 8;
            }
        }
    }
}

/// `B` 8-channel blocks from `c0` of [`tile_i8`].
///
/// # Safety
/// As [`tile_i8`], and `c0 + 8·B ≤ cp`.
#[target_feature(enable = "avx2")]
unsafe fn blocks_i8<const B: usize>(
    patch: &[[i16; PATCH]; PT],
    np: usize,
    wt: &[i32],
    acc: &mut [[i32; MAXC]; PT],
    cp: usize,
    c0: usize,
) {
    let mut a = [[_mm256_setzero_si256(); B]; PT];
    for tp in 0..np {
        let mut wv = [_mm256_setzero_si256(); B];
        for (k, v) in wv.iter_mut().enumerate() {
            // SAFETY: row `tp` of `wt` spans `tp·cp .. tp·cp + cp`, `c0 + 8k + 8 ≤ cp`.
            *v = unsafe { _mm256_loadu_si256(wt.as_ptr().add(tp * cp + c0 + 8 * k).cast()) };
        }
        for (ap, p) in a.iter_mut().zip(patch) {
            // SAFETY: elements `2tp, 2tp + 1 < 2·np ≤ PATCH`: one unaligned i32.
            let pair = unsafe { p.as_ptr().add(2 * tp).cast::<i32>().read_unaligned() };
            let xv = _mm256_set1_epi32(pair);
            for (s, &w) in ap.iter_mut().zip(&wv) {
                *s = _mm256_add_epi32(*s, _mm256_madd_epi16(xv, w));
            }
        }
    }
    for (ap, o) in a.iter().zip(acc.iter_mut()) {
        for (k, &v) in ap.iter().enumerate() {
            // SAFETY: `c0 + 8k + 8 ≤ cp ≤ MAXC`.
            unsafe { _mm256_storeu_si256(o.as_mut_ptr().add(c0 + 8 * k).cast(), v) };
        }
    }
}
