//! NEON pointwise conv. f32: register tiles of 4 output pixels × 4 output channels (16 of
//! the 32 vector registers accumulate), each a dot product over `cin` with `vfmaq_f32`, 4
//! lanes — reassociation + FMA only (`|Δ| ≤ 2·cin·ε·(|b| + Σ|w·x|)`); a tile's 4 sums per
//! pixel are reduced together with pairwise adds; row tails go through zero-padded copies.
//! int8 (the conv and the streaming experts' `W0` sums): the shared GEMM of `gemm.rs`
//! (`sdot`, or `smull`/`sadalp`), exact, so bit-identical to the reference.
use core::arch::aarch64::*;

use super::gemm::{gemm_i8, matvec_i8, Requant, Rows, Sums, P as GP};
use super::packed;
use crate::kernels::{Geom, OutQ, SumTile};

/// Output pixels per f32 tile.
const P: usize = 4;
/// Output channels per f32 tile.
const O: usize = 4;

/// Start of output pixel `p`'s input channels.
#[inline]
pub(super) fn src(g: &Geom, p: usize) -> usize {
    let (oy, ox) = (p / g.wo, p % g.wo);
    (oy * g.stride * g.w + ox * g.stride) * g.in_stride + g.c_off
}

/// Walks the output in tiles: `tile(xs, np, o, no)` for up to `P` pixel rows (`np` real,
/// the others repeat the last) and output channels `o .. o + no` (`no` ≤ `O`).
#[inline]
fn tiles<T>(g: &Geom, x: &[T], mut tile: impl FnMut([&[T]; P], usize, usize, usize, usize)) {
    let (n, npix) = (g.cin, g.ho * g.wo);
    let mut p = 0;
    while p < npix {
        let np = P.min(npix - p);
        let xs = [0, 1, 2, 3].map(|i| &x[src(g, p + i.min(np - 1))..][..n]);
        let mut o = 0;
        while o < g.cout {
            let no = O.min(g.cout - o);
            tile(xs, np, p, o, no);
            o += no;
        }
        p += np;
    }
}

/// Rows `o .. o + no` of `w` (`n` each); missing rows repeat the last (their sums are unused).
#[inline]
fn wrows<T>(w: &[T], n: usize, o: usize, no: usize) -> [&[T]; O] {
    [0, 1, 2, 3].map(|j| &w[(o + j.min(no - 1)) * n..][..n])
}

/// NEON f32 pointwise conv; same contract as `reference::conv1x1::conv1x1_f32`.
pub(crate) fn conv1x1_f32(g: &Geom, x: &[f32], w: &[f32], bias: &[f32], relu: bool, y: &mut [f32]) {
    let n = g.cin;
    let (w, bias) = (&w[..g.cout * n], &bias[..g.cout]);
    let y = &mut y[..g.ho * g.wo * g.cout];
    tiles(g, x, |xs, np, p, o, no| {
        // SAFETY: NEON is baseline on this target (the module is cfg'd on it); rows are `n`.
        let d = unsafe { tile_f32(xs, wrows(w, n, o, no), n) };
        for (i, dp) in d.iter().enumerate().take(np) {
            for (j, v) in dp.iter().enumerate().take(no) {
                let acc = bias[o + j] + v;
                y[(p + i) * g.cout + o + j] = if relu { acc.max(0.0) } else { acc };
            }
        }
    });
}

/// `out[p][o] = Σ_i xs[p][i]·ws[o][i]` over `n` (every row at least `n` long).
#[target_feature(enable = "neon")]
fn tile_f32(xs: [&[f32]; P], ws: [&[f32]; O], n: usize) -> [[f32; O]; P] {
    let mut acc = [[vdupq_n_f32(0.0); O]; P];
    let (mut xv, mut wv) = ([vdupq_n_f32(0.0); P], [vdupq_n_f32(0.0); O]);
    let mut i = 0;
    while i < n {
        if i + 4 <= n {
            for p in 0..P {
                // SAFETY: `i + 4 <= n` and every row holds at least `n` elements.
                xv[p] = unsafe { vld1q_f32(xs[p].as_ptr().add(i)) };
            }
            for o in 0..O {
                // SAFETY: as above.
                wv[o] = unsafe { vld1q_f32(ws[o].as_ptr().add(i)) };
            }
        } else {
            for p in 0..P {
                xv[p] = padded_f32(&xs[p][i..n]);
            }
            for o in 0..O {
                wv[o] = padded_f32(&ws[o][i..n]);
            }
        }
        for p in 0..P {
            for o in 0..O {
                acc[p][o] = vfmaq_f32(acc[p][o], wv[o], xv[p]);
            }
        }
        i += 4;
    }
    let mut out = [[0.0f32; O]; P];
    for p in 0..P {
        let s = vpaddq_f32(
            vpaddq_f32(acc[p][0], acc[p][1]),
            vpaddq_f32(acc[p][2], acc[p][3]),
        );
        // SAFETY: `out[p]` holds 4 f32.
        unsafe { vst1q_f32(out[p].as_mut_ptr(), s) };
    }
    out
}

/// Up to 4 f32 as one vector, zero-padded.
#[inline]
#[target_feature(enable = "neon")]
fn padded_f32(r: &[f32]) -> float32x4_t {
    let mut b = [0.0f32; 4];
    b[..r.len()].copy_from_slice(r);
    // SAFETY: `b` holds 4 f32.
    unsafe { vld1q_f32(b.as_ptr()) }
}

/// The pointwise conv's input rows for the GEMM: output pixel `p`'s `cin` channels.
struct Pixels<'a> {
    g: &'a Geom,
    x: &'a [i8],
}

impl Rows for Pixels<'_> {
    #[inline(always)]
    fn rows(&mut self, p: usize, np: usize) -> [&[i8]; GP] {
        let (g, x) = (self.g, self.x);
        let r = |i: usize| &x[src(g, p + i.min(np - 1))..][..g.cin];
        [r(0), r(1), r(2), r(3)]
    }
}

/// The int8 conv: [`gemm_i8`] into the [`Requant`] output stage.
#[inline(always)]
fn conv_i8<const DOT: bool>(
    g: &Geom,
    x: &[i8],
    zx: i32,
    w: &[i8],
    rq: &[[i32; 3]],
    q: OutQ,
    y: &mut [i8],
) {
    // SAFETY: `DOT` only from the sdot entry points, installed only with `dotprod`.
    if unsafe { packed::conv1x1_i8::<DOT>(g, x, zx, w, rq, q, y) } {
        return;
    }
    let npix = g.ho * g.wo;
    // SAFETY: as above.
    if npix == 1 && unsafe { matvec_i8::<DOT>(g.cin, g.cout, w, zx, &x[src(g, 0)..], rq, q, y) } {
        return;
    }
    let mut out = Requant::new(rq, q, &mut y[..npix * g.cout], g.cout);
    // SAFETY: as above.
    unsafe { gemm_i8::<DOT>(g.cin, npix, g.cout, w, zx, &mut Pixels { g, x }, &mut out) }
}

/// NEON int8 pointwise conv (`smull`/`sadalp`); bit-exact twin of
/// `reference::conv1x1::conv1x1_i8`.
pub(crate) fn conv1x1_i8(
    g: &Geom,
    x: &[i8],
    zx: i32,
    w: &[i8],
    rq: &[[i32; 3]],
    q: OutQ,
    y: &mut [i8],
) {
    conv_i8::<false>(g, x, zx, w, rq, q, y)
}

/// NEON int8 pointwise conv on `sdot`; bit-exact twin of `reference::conv1x1::conv1x1_i8`.
/// Installed only when `dotprod` is detected (`aarch64::neon(_, true)`).
pub(crate) fn conv1x1_i8_sdot(
    g: &Geom,
    x: &[i8],
    zx: i32,
    w: &[i8],
    rq: &[[i32; 3]],
    q: OutQ,
    y: &mut [i8],
) {
    conv_i8::<true>(g, x, zx, w, rq, q, y)
}

/// The sums: [`gemm_i8`] into [`Sums`].
#[inline(always)]
fn sums_i8<const DOT: bool>(
    g: &Geom,
    x: &[i8],
    zx: i32,
    w: &[i8],
    sink: &mut dyn FnMut(SumTile<'_>),
) {
    let mut out = Sums::new(sink);
    let (n, npix) = (g.cin, g.ho * g.wo);
    // SAFETY: `DOT` only from the sdot entry point, installed only with `dotprod`.
    unsafe { gemm_i8::<DOT>(n, npix, g.cout, w, zx, &mut Pixels { g, x }, &mut out) }
}

/// NEON twin of `reference::conv1x1::conv1x1_sums_i8` (the streaming experts' `W0` sums,
/// exact, so equal): the conv's GEMM tiles, handed out in blocks of up to 4 pixels × 64
/// channels.
pub(crate) fn conv1x1_sums_i8(
    g: &Geom,
    x: &[i8],
    zx: i32,
    w: &[i8],
    sink: &mut dyn FnMut(SumTile<'_>),
) {
    sums_i8::<false>(g, x, zx, w, sink)
}

/// [`conv1x1_sums_i8`] on the `sdot` tiles; installed only when `dotprod` is detected.
pub(crate) fn conv1x1_sums_i8_sdot(
    g: &Geom,
    x: &[i8],
    zx: i32,
    w: &[i8],
    sink: &mut dyn FnMut(SumTile<'_>),
) {
    sums_i8::<true>(g, x, zx, w, sink)
}
