//! NEON pointwise conv: register tiles of 4 output pixels × 4 output channels (16 of the 32
//! vector registers accumulate), each a dot product over `cin`; a tile's 4 sums per pixel
//! are reduced together with pairwise adds. Row tails go through zero-padded copies (a zero
//! weight adds zero whatever the input).
//!
//! f32: `vfmaq_f32`, 4 lanes — reassociation + FMA only (`|Δ| ≤ 2·cin·ε·(|b| + Σ|w·x|)`).
//! int8 without `dotprod`: `w` and `x − zx` widened to i16, `vmlal_s16` into i32 — exact.
//! int8 with `dotprod`: `sdot` on the raw bytes gives `Σ w·x` exactly (4 products per lane);
//! `x − zx` does not fit i8, so the zero point is applied afterwards as `− zx·Σw`, with `Σw`
//! from a second `sdot` against ones. Both int8 paths are bit-exact to the reference.
use core::arch::aarch64::*;

use super::requant::requant4;
use crate::kernels::{reference, Geom, OutQ, SumTile};
use crate::quant::requant;

/// Output pixels per tile.
pub(super) const P: usize = 4;
/// Output channels per tile.
pub(super) const O: usize = 4;

/// Start of output pixel `p`'s input channels.
#[inline]
fn src(g: &Geom, p: usize) -> usize {
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
pub(super) fn wrows<T>(w: &[T], n: usize, o: usize, no: usize) -> [&[T]; O] {
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

/// Output channels per block of sums a [`Sink`] completes at once (a multiple of [`O`]).
pub(super) const OB: usize = 64;

/// Where the int8 GEMM ([`gemm_i8`]) puts its tiles: the conv's output stage
/// ([`Requant`]) or raw sums for the streaming experts ([`Sums`]).
pub(super) trait Sink {
    /// Channels `o0 .. o0 + nb` of the current pixels begin.
    #[inline(always)]
    fn begin(&mut self, _o0: usize, _nb: usize) {}
    /// `d[i][j]`, exact `Σ_k w[o + j][k]·(x_{p + i}[k] − zx)`, for `i < np`, `j < no`.
    fn tile(&mut self, d: &[[i32; O]; P], np: usize, p: usize, o: usize, no: usize);
    /// The channels begun last are complete for pixels `p .. p + np`.
    #[inline(always)]
    fn end(&mut self, _p: usize, _np: usize) {}
}

/// The int8 pointwise GEMM both the conv and the sums slots run: tiles of [`P`] pixels ×
/// [`O`] channels ([`tile_sdot`] when `DOT`, else [`tile_i8`]), pixels outermost, channels
/// in blocks of [`OB`] (the same tiles and order whatever the sink).
///
/// # Safety
/// `DOT` only when the CPU has `dotprod`.
#[inline(always)]
unsafe fn gemm_i8<const DOT: bool>(g: &Geom, x: &[i8], zx: i32, w: &[i8], sink: &mut impl Sink) {
    let n = g.cin;
    let w = &w[..g.cout * n];
    let npix = g.ho * g.wo;
    let mut p = 0;
    while p < npix {
        let np = P.min(npix - p);
        let xs = [0, 1, 2, 3].map(|i| &x[src(g, p + i.min(np - 1))..][..n]);
        let mut o0 = 0;
        while o0 < g.cout {
            let nb = OB.min(g.cout - o0);
            sink.begin(o0, nb);
            let mut o = o0;
            while o < o0 + nb {
                let no = O.min(o0 + nb - o);
                let ws = wrows(w, n, o, no);
                let d = if DOT {
                    // SAFETY: `dotprod` by this function's contract; rows are `n` long.
                    unsafe { tile_sdot(xs, ws, n, zx) }
                } else {
                    // SAFETY: NEON is baseline on this target (the module is cfg'd on it).
                    unsafe { tile_i8(xs, ws, n, zx) }
                };
                sink.tile(&d, np, p, o, no);
                o += no;
            }
            sink.end(p, np);
            o0 += nb;
        }
        p += np;
    }
}

/// The conv's output stage as a [`Sink`]: [`store_i8`].
struct Requant<'y> {
    rq: &'y [[i32; 3]],
    q: OutQ,
    y: &'y mut [i8],
    cout: usize,
}

impl Sink for Requant<'_> {
    #[inline(always)]
    fn tile(&mut self, d: &[[i32; O]; P], np: usize, p: usize, o: usize, no: usize) {
        store_i8(d, np, no, p, o, self.cout, self.rq, self.q, self.y);
    }
}

/// The conv: `rq` and `y` sliced to the geometry, then [`gemm_i8`] into [`Requant`].
/// `x − zx` is formed in i16 on the `vmlal` path, so a zero point outside i8 (never from
/// a validated bundle) takes the reference.
#[allow(clippy::too_many_arguments)]
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
    if !DOT && !(-128..=127).contains(&zx) {
        return reference::conv1x1::conv1x1_i8(g, x, zx, w, rq, q, y);
    }
    let mut out = Requant {
        rq: &rq[..g.cout],
        q,
        y: &mut y[..g.ho * g.wo * g.cout],
        cout: g.cout,
    };
    // SAFETY: `DOT` only from the sdot entry points, installed only with `dotprod`.
    unsafe { gemm_i8::<DOT>(g, x, zx, w, &mut out) }
}

/// NEON int8 pointwise conv (widening multiply-accumulate); bit-exact twin of
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

/// Raw sums as a [`Sink`]: each block of up to [`P`] pixels × [`OB`] channels gathered,
/// then handed to `out` as one [`SumTile`].
struct Sums<'s> {
    acc: [i32; P * OB],
    o0: usize,
    nb: usize,
    out: &'s mut dyn FnMut(SumTile<'_>),
}

impl Sink for Sums<'_> {
    #[inline(always)]
    fn begin(&mut self, o0: usize, nb: usize) {
        (self.o0, self.nb) = (o0, nb);
    }
    #[inline(always)]
    fn tile(&mut self, d: &[[i32; O]; P], np: usize, _p: usize, o: usize, no: usize) {
        for (i, dp) in d.iter().enumerate().take(np) {
            self.acc[i * self.nb + o - self.o0..][..no].copy_from_slice(&dp[..no]);
        }
    }
    #[inline(always)]
    fn end(&mut self, p: usize, np: usize) {
        (self.out)(SumTile {
            p0: p,
            np,
            o0: self.o0,
            no: self.nb,
            acc: &self.acc[..np * self.nb],
        });
    }
}

/// The sums: [`gemm_i8`] into [`Sums`] (the reference for a zero point outside i8 on
/// the `vmlal` path, as the conv).
#[inline(always)]
fn sums_i8<const DOT: bool>(
    g: &Geom,
    x: &[i8],
    zx: i32,
    w: &[i8],
    sink: &mut dyn FnMut(SumTile<'_>),
) {
    if !DOT && !(-128..=127).contains(&zx) {
        return reference::conv1x1::conv1x1_sums_i8(g, x, zx, w, sink);
    }
    let mut out = Sums {
        acc: [0; P * OB],
        o0: 0,
        nb: 0,
        out: sink,
    };
    // SAFETY: `DOT` only from the sdot entry point, installed only with `dotprod`.
    unsafe { gemm_i8::<DOT>(g, x, zx, w, &mut out) }
}

/// NEON twin of `reference::conv1x1::conv1x1_sums_i8` (the streaming experts' `W0` sums,
/// exact, so equal): the conv's `vmlal` tiles, handed out in blocks of up to 4 pixels ×
/// 64 channels.
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

/// Requantises a tile into `y`: whole 4-channel rows with the NEON output stage, the rest
/// (and every row when `q.lo > 127`, where the reference panics) with the scalar one.
#[allow(clippy::too_many_arguments)]
#[inline]
pub(super) fn store_i8(
    d: &[[i32; O]; P],
    np: usize,
    no: usize,
    p: usize,
    o: usize,
    cout: usize,
    rq: &[[i32; 3]],
    q: OutQ,
    y: &mut [i8],
) {
    for (i, dp) in d.iter().enumerate().take(np) {
        let row = &mut y[(p + i) * cout + o..][..no];
        if no == O && q.lo <= 127 {
            // SAFETY: NEON is baseline here; `rq[o..]` and `row` hold 4 elements; `q.lo ≤ 127`.
            unsafe { requant4(vld1q_s32(dp.as_ptr()), &rq[o..o + O], q, row) };
        } else {
            for (j, (&v, yv)) in dp.iter().zip(row.iter_mut()).enumerate() {
                *yv = requant(v, rq[o + j], q);
            }
        }
    }
}

/// Exact `out[p][o] = Σ_i ws[o][i]·(xs[p][i] − zx)`, 8 bytes per step widened to i16.
#[target_feature(enable = "neon")]
pub(super) fn tile_i8(xs: [&[i8]; P], ws: [&[i8]; O], n: usize, zx: i32) -> [[i32; O]; P] {
    let z = vdupq_n_s16(zx as i16);
    let mut acc = [[vdupq_n_s32(0); O]; P];
    let (mut xv, mut wv) = ([vdup_n_s8(0); P], [vdup_n_s8(0); O]);
    let mut i = 0;
    while i < n {
        if i + 8 <= n {
            for p in 0..P {
                // SAFETY: `i + 8 <= n` and every row holds at least `n` bytes.
                xv[p] = unsafe { vld1_s8(xs[p].as_ptr().add(i)) };
            }
            for o in 0..O {
                // SAFETY: as above.
                wv[o] = unsafe { vld1_s8(ws[o].as_ptr().add(i)) };
            }
        } else {
            for p in 0..P {
                xv[p] = padded8(&xs[p][i..n]);
            }
            for o in 0..O {
                wv[o] = padded8(&ws[o][i..n]);
            }
        }
        let mut w16 = [vdupq_n_s16(0); O];
        for o in 0..O {
            w16[o] = vmovl_s8(wv[o]);
        }
        for p in 0..P {
            // x − zx ∈ [−255, 255] fits i16.
            let x16 = vsubq_s16(vmovl_s8(xv[p]), z);
            for o in 0..O {
                acc[p][o] = vmlal_s16(acc[p][o], vget_low_s16(w16[o]), vget_low_s16(x16));
                acc[p][o] = vmlal_high_s16(acc[p][o], w16[o], x16);
            }
        }
        i += 8;
    }
    reduce_i32(acc)
}

/// Up to 8 bytes as one vector, zero-padded.
#[inline]
#[target_feature(enable = "neon")]
fn padded8(r: &[i8]) -> int8x8_t {
    let mut b = [0i8; 8];
    b[..r.len()].copy_from_slice(r);
    // SAFETY: `b` holds 8 bytes.
    unsafe { vld1_s8(b.as_ptr()) }
}

/// `[Σacc[p][0], …, Σacc[p][3]]` per pixel, by pairwise adds.
#[inline]
#[target_feature(enable = "neon")]
fn reduce_i32(acc: [[int32x4_t; O]; P]) -> [[i32; O]; P] {
    let mut out = [[0i32; O]; P];
    for p in 0..P {
        let s = vpaddq_s32(
            vpaddq_s32(acc[p][0], acc[p][1]),
            vpaddq_s32(acc[p][2], acc[p][3]),
        );
        // SAFETY: `out[p]` holds 4 i32.
        unsafe { vst1q_s32(out[p].as_mut_ptr(), s) };
    }
    out
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

/// `acc += Σ_{k<4} a[4l+k]·b[4l+k]` per i32 lane `l` (one `sdot`).
///
/// # Safety
/// The CPU has `dotprod`.
#[inline]
#[target_feature(enable = "neon,dotprod")]
unsafe fn sdot(acc: int32x4_t, a: int8x16_t, b: int8x16_t) -> int32x4_t {
    let mut acc = acc;
    // `vdotq_s32` is not stable Rust; the instruction itself is one `asm!` line.
    // SAFETY: `sdot` reads and writes only these registers; the caller guarantees dotprod.
    unsafe {
        core::arch::asm!(
            ".arch_extension dotprod",
            "sdot {acc:v}.4s, {a:v}.16b, {b:v}.16b",
            acc = inout(vreg) acc,
            a = in(vreg) a,
            b = in(vreg) b,
            options(pure, nomem, nostack, preserves_flags),
        );
    }
    acc
}

/// Exact `out[p][o] = Σ_i ws[o][i]·xs[p][i] − zx·Σ_i ws[o][i]`, 16 bytes per step.
///
/// # Safety
/// The CPU has `dotprod`; every row holds at least `n` bytes.
#[target_feature(enable = "neon,dotprod")]
pub(super) unsafe fn tile_sdot(xs: [&[i8]; P], ws: [&[i8]; O], n: usize, zx: i32) -> [[i32; O]; P] {
    let ones = vdupq_n_s8(1);
    let mut acc = [[vdupq_n_s32(0); O]; P];
    let mut wsum = [vdupq_n_s32(0); O];
    macro_rules! step {
        ($xv:expr, $wv:expr) => {{
            let (xv, wv): ([int8x16_t; P], [int8x16_t; O]) = ($xv, $wv);
            for o in 0..O {
                // SAFETY: dotprod by this function's contract.
                wsum[o] = unsafe { sdot(wsum[o], wv[o], ones) };
                for p in 0..P {
                    // SAFETY: as above.
                    acc[p][o] = unsafe { sdot(acc[p][o], wv[o], xv[p]) };
                }
            }
        }};
    }
    let body = n & !15;
    let mut i = 0;
    while i < body {
        let (mut xv, mut wv) = ([vdupq_n_s8(0); P], [vdupq_n_s8(0); O]);
        for p in 0..P {
            // SAFETY: `i + 16 <= n` and every row holds at least `n` bytes.
            xv[p] = unsafe { vld1q_s8(xs[p].as_ptr().add(i)) };
        }
        for o in 0..O {
            // SAFETY: as above.
            wv[o] = unsafe { vld1q_s8(ws[o].as_ptr().add(i)) };
        }
        step!(xv, wv);
        i += 16;
    }
    if i < n {
        let (mut xv, mut wv) = ([vdupq_n_s8(0); P], [vdupq_n_s8(0); O]);
        for p in 0..P {
            xv[p] = padded16(&xs[p][i..n]);
        }
        for o in 0..O {
            wv[o] = padded16(&ws[o][i..n]);
        }
        step!(xv, wv);
    }
    let mut out = reduce_i32(acc);
    let mut sw = [0i32; O];
    // SAFETY: `sw` holds 4 i32.
    unsafe {
        vst1q_s32(
            sw.as_mut_ptr(),
            vpaddq_s32(vpaddq_s32(wsum[0], wsum[1]), vpaddq_s32(wsum[2], wsum[3])),
        )
    };
    for row in out.iter_mut() {
        for (v, &s) in row.iter_mut().zip(&sw) {
            *v = v.wrapping_sub(zx.wrapping_mul(s));
        }
    }
    out
}

/// Up to 16 bytes as one vector, zero-padded.
#[inline]
#[target_feature(enable = "neon")]
fn padded16(r: &[i8]) -> int8x16_t {
    let mut b = [0i8; 16];
    b[..r.len()].copy_from_slice(r);
    // SAFETY: `b` holds 16 bytes.
    unsafe { vld1q_s8(b.as_ptr()) }
}
