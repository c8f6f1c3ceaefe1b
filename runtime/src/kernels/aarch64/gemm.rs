//! The int8 GEMM the pointwise conv, its streaming sums and the stem share: register tiles
//! of 4 output pixels × 4 output channels (16 of the 32 vector registers accumulate), each a
//! dot product over the `n` input values on the raw bytes, 16 at a time:
//! - `sdot` (with `dotprod`): 4 products per lane, 16 instructions per 256 MACs;
//! - plain NEON: `smull`/`smull2` (i8·i8 fits i16) then `sadalp` into i32, 64 per 256 MACs.
//!
//! `x − zx` does not fit i8, so the zero point comes afterwards as `− zx·Σw`, with `Σw`
//! summed by the first pixel tile of each block of channels and reused by the others. A
//! row tail of `r < 16` bytes reloads the row's last 16 bytes and zeroes the weight lanes
//! already counted (a zero weight adds zero whatever the input); rows shorter than 16 go
//! through zero-padded copies. Sums wrap like the reference's i32 (they are exact for any
//! realistic `n`). Channels go in blocks of [`OB`], outermost, then pixel tiles, then
//! channel tiles: a [`Sink`] gets every tile of a block and derives its per-channel
//! constants once per block.
use core::arch::aarch64::*;

use super::requant::Rq4;
use crate::kernels::{OutQ, SumTile};
use crate::quant::requant;

/// Output pixels per tile.
pub(super) const P: usize = 4;
/// Output channels per tile.
pub(super) const O: usize = 4;
/// Output channels per block (a multiple of [`O`]).
pub(super) const OB: usize = 64;

/// Where the GEMM reads each output pixel's `n` input values.
pub(super) trait Rows {
    /// The input rows of output pixels `p .. p + np` (`np ≤ P`; the others repeat the
    /// last), each at least `n` long.
    fn rows(&mut self, p: usize, np: usize) -> [&[i8]; P];
}

/// Where the GEMM puts its tiles.
pub(super) trait Sink {
    /// Channels `o0 .. o0 + nb` begin (their pixel tiles follow).
    #[inline(always)]
    fn begin(&mut self, _o0: usize, _nb: usize) {}
    /// Lane `j` of `d[i]` is the exact `Σ_k w[o + j][k]·(x_{p + i}[k] − zx)`, for `i < np`,
    /// `j < no`.
    fn tile(&mut self, d: &[int32x4_t; P], np: usize, p: usize, o: usize, no: usize);
    /// Every channel of the block is done for pixels `p .. p + np`.
    #[inline(always)]
    fn end(&mut self, _p: usize, _np: usize) {}
}

/// `Σ_k w[o·n + k]·(x_p[k] − zx)` for every output pixel `p < npix` (its row from `rows`)
/// and channel `o < cout`, handed to `sink` in tiles. `w` holds at least `cout·n` bytes.
///
/// # Safety
/// `DOT` only when the CPU has `dotprod`.
#[inline]
#[target_feature(enable = "neon")]
pub(super) unsafe fn gemm_i8<const DOT: bool>(
    n: usize,
    npix: usize,
    cout: usize,
    w: &[i8],
    zx: i32,
    rows: &mut impl Rows,
    sink: &mut impl Sink,
) {
    let w = &w[..cout * n];
    let mut corr = [vdupq_n_s32(0); OB / O];
    let mut o0 = 0;
    while o0 < cout {
        let nb = OB.min(cout - o0);
        sink.begin(o0, nb);
        let mut p = 0;
        while p < npix {
            let np = P.min(npix - p);
            // Each row checked once to hold `n` bytes; the channel tiles read them unchecked.
            let xs = rows.rows(p, np).map(|r| r[..n].as_ptr());
            let mut o = o0;
            while o < o0 + nb {
                let no = O.min(o0 + nb - o);
                // Rows `o .. o + no` of `w`; missing rows repeat the last (their sums are
                // unused). SAFETY: `o + j.min(no − 1) < cout` and `w` holds `cout·n` bytes.
                let ws: [*const i8; O] =
                    core::array::from_fn(|j| unsafe { w.as_ptr().add((o + j.min(no - 1)) * n) });
                let c = &mut corr[(o - o0) / O];
                // SAFETY: `DOT` only with `dotprod`, by this function's contract; every row
                // pointer starts `n` readable bytes. A lone pixel (the 1x1-pixel layers,
                // tails) takes a one-row tile: no repeated rows. A zero point of 0 (folded
                // into the biases) needs no `Σw`: `corr` stays 0.
                let d = unsafe {
                    match (p == 0 && zx != 0, np == 1) {
                        (true, false) => tile::<DOT, true, P>(xs, ws, n, zx, c),
                        (false, false) => tile::<DOT, false, P>(xs, ws, n, zx, c),
                        (true, true) => [tile::<DOT, true, 1>([xs[0]], ws, n, zx, c)[0]; P],
                        (false, true) => [tile::<DOT, false, 1>([xs[0]], ws, n, zx, c)[0]; P],
                    }
                };
                sink.tile(&d, np, p, o, no);
                o += no;
            }
            sink.end(p, np);
            p += np;
        }
        o0 += nb;
    }
}

/// The lone-pixel conv (the 1x1-pixel layers, a matrix times one vector):
/// `y[o] = requant(Σ_k w[o][k]·(x[k] − zx), rq[o], q)`, 8 channels at a time, each pair of
/// 4-channel tiles requantised and stored together (no per-tile sink). `false`, with nothing
/// written, unless `n ≥ 16`, `cout % 8 = 0`, `q.lo ≤ 127` and the slices are whole.
///
/// # Safety
/// `DOT` only when the CPU has `dotprod`.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
pub(super) unsafe fn matvec_i8<const DOT: bool>(
    n: usize,
    cout: usize,
    w: &[i8],
    zx: i32,
    x: &[i8],
    rq: &[[i32; 3]],
    q: OutQ,
    y: &mut [i8],
) -> bool {
    if n < 16 || cout % 8 != 0 || q.lo > 127 || w.len() < cout * n || x.len() < n {
        return false;
    }
    let (rq, y) = (&rq[..cout], &mut y[..cout]);
    let xp = [x.as_ptr()];
    let mut o = 0;
    while o < cout {
        // SAFETY: rows `o .. o + 8 ≤ cout` of `w` (`cout·n` bytes) and `x` start `n` readable
        // bytes; `DOT` only with `dotprod` (this function's contract); NEON is baseline.
        unsafe {
            let rows = |h: usize| core::array::from_fn(|j| w.as_ptr().add((o + 4 * h + j) * n));
            let (mut c0, mut c1) = (vdupq_n_s32(0), vdupq_n_s32(0));
            // A zero point of 0 (folded into the biases) needs no `Σw`.
            let (d0, d1) = if zx == 0 {
                (
                    tile::<DOT, false, 1>(xp, rows(0), n, zx, &mut c0)[0],
                    tile::<DOT, false, 1>(xp, rows(1), n, zx, &mut c1)[0],
                )
            } else {
                (
                    tile::<DOT, true, 1>(xp, rows(0), n, zx, &mut c0)[0],
                    tile::<DOT, true, 1>(xp, rows(1), n, zx, &mut c1)[0],
                )
            };
            let r = [Rq4::new(&rq[o..], q), Rq4::new(&rq[o + 4..], q)];
            vst1_s8(y[o..o + 8].as_mut_ptr(), Rq4::apply8(&r, d0, d1));
        }
        o += 8;
    }
    true
}

/// Steps of 16 weights whose `Σw` the plain-NEON tile gathers in i16 lanes before widening:
/// each adds two bytes (at most 256 in magnitude) to a lane, so 127 steps stay within i16.
const W16_STEPS: usize = 127;

/// Lane index of each byte.
const LANES: [u8; 16] = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15];

/// Bytes `i .. i + 16` of every row; past `n` the weights read as zero (see the module doc
/// for the tail).
///
/// # Safety
/// `i < n` and every row pointer starts `n` readable bytes.
#[inline(always)]
unsafe fn load16<const NP: usize>(
    xs: &[*const i8; NP],
    ws: &[*const i8; O],
    i: usize,
    n: usize,
) -> ([int8x16_t; NP], [int8x16_t; O]) {
    // SAFETY (every load below): `at + 16 ≤ n` bytes of a row (this function's contract);
    // NEON is baseline on this target (the module is cfg'd on it).
    unsafe {
        if i + 16 <= n {
            (
                xs.map(|r| vld1q_s8(r.add(i))),
                ws.map(|r| vld1q_s8(r.add(i))),
            )
        } else if n >= 16 {
            // Lanes `l < 16 − (n − i)` of the last 16 bytes were counted by the step before.
            let at = n - 16;
            let lanes = vld1q_u8(LANES.as_ptr());
            let keep = vreinterpretq_s8_u8(vcgeq_u8(lanes, vdupq_n_u8((i - at) as u8)));
            (
                xs.map(|r| vld1q_s8(r.add(at))),
                ws.map(|r| vandq_s8(vld1q_s8(r.add(at)), keep)),
            )
        } else {
            let tail = |r: *const i8| padded16(core::slice::from_raw_parts(r.add(i), n - i));
            (xs.map(tail), ws.map(tail))
        }
    }
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

/// `acc += Σ_{k<4} a[4l+k]·b[4l+k]` per i32 lane `l` (one `sdot`).
///
/// # Safety
/// The CPU has `dotprod`.
#[inline(always)]
unsafe fn sdot(acc: int32x4_t, a: int8x16_t, b: int8x16_t) -> int32x4_t {
    let mut acc = acc;
    // `vdotq_s32` is not stable Rust; the instruction itself is one `asm!` line (assembled
    // whatever the build's features; executed only when the caller guarantees dotprod).
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

/// `[Σa[0], Σa[1], Σa[2], Σa[3]]` (each over its 4 lanes), by pairwise adds.
#[inline]
#[target_feature(enable = "neon")]
fn hsum4(a: &[int32x4_t; 4]) -> int32x4_t {
    vpaddq_s32(vpaddq_s32(a[0], a[1]), vpaddq_s32(a[2], a[3]))
}

/// One tile of `NP` pixels: lane `o` of `out[p]` is `Σ_k ws[o][k]·xs[p][k] − corr[o]`; with `WSUM`,
/// `corr = zx·Σ_k ws[o][k]` is computed first (for the channels' next tiles).
///
/// Inlined into [`gemm_i8`] (a call per tile cost ~40 instructions of argument passing,
/// spills and bounds checks); its NEON intrinsics run in this `unsafe fn`'s body, sound
/// because NEON is baseline on this target (the module is cfg'd on it).
///
/// # Safety
/// `DOT` only when the CPU has `dotprod`; every row pointer starts `n` readable bytes.
#[inline(always)]
unsafe fn tile<const DOT: bool, const WSUM: bool, const NP: usize>(
    xs: [*const i8; NP],
    ws: [*const i8; O],
    n: usize,
    zx: i32,
    corr: &mut int32x4_t,
) -> [int32x4_t; NP] {
    let ones = vdupq_n_s8(1);
    let mut acc = [[vdupq_n_s32(0); O]; NP];
    let mut wacc = [vdupq_n_s32(0); O];
    let mut i = 0;
    while i < n {
        // Without `sdot`, `Σw` gathers in i16 lanes, one `sadalp` of byte pairs a step (±256
        // at most), and widens once per [`W16_STEPS`] steps: no overflow, one instruction a
        // step instead of two.
        let mut w16 = [vdupq_n_s16(0); O];
        let end = n.min(i + 16 * W16_STEPS);
        while i < end {
            // SAFETY: `i < n`; every row starts `n` readable bytes (this function's contract).
            let (xv, wv) = unsafe { load16(&xs, &ws, i, n) };
            for o in 0..O {
                if WSUM {
                    if DOT {
                        // SAFETY: `DOT` only with `dotprod`.
                        wacc[o] = unsafe { sdot(wacc[o], wv[o], ones) };
                    } else {
                        w16[o] = vpadalq_s8(w16[o], wv[o]);
                    }
                }
                for p in 0..NP {
                    acc[p][o] = if DOT {
                        // SAFETY: as above.
                        unsafe { sdot(acc[p][o], wv[o], xv[p]) }
                    } else {
                        let lo = vmull_s8(vget_low_s8(wv[o]), vget_low_s8(xv[p]));
                        vpadalq_s16(vpadalq_s16(acc[p][o], lo), vmull_high_s8(wv[o], xv[p]))
                    };
                }
            }
            i += 16;
        }
        if WSUM && !DOT {
            for o in 0..O {
                wacc[o] = vpadalq_s16(wacc[o], w16[o]);
            }
        }
    }
    if WSUM {
        *corr = vmulq_s32(hsum4(&wacc), vdupq_n_s32(zx));
    }
    let mut out = [vdupq_n_s32(0); NP];
    for p in 0..NP {
        out[p] = vsubq_s32(hsum4(&acc[p]), *corr);
    }
    out
}

/// The conv output stage as a [`Sink`]: `y[(p + i)·cout + o + j] = requant(d, rq[o + j], q)`,
/// whole 4-channel tiles with [`Rq4`] (constants derived once per block), the rest (and
/// everything when `q.lo > 127`, where the reference panics) with the scalar one.
pub(super) struct Requant<'y> {
    rq: &'y [[i32; 3]],
    q: OutQ,
    y: &'y mut [i8],
    cout: usize,
    o0: usize,
    r: [Rq4; OB / O],
}

impl<'y> Requant<'y> {
    /// `rq` holds `cout` triples and `y` the whole output (`npix·cout`).
    pub(super) fn new(rq: &'y [[i32; 3]], q: OutQ, y: &'y mut [i8], cout: usize) -> Self {
        Requant {
            rq: &rq[..cout],
            q,
            y,
            cout,
            o0: 0,
            r: [Rq4::default(); OB / O],
        }
    }
}

impl Sink for Requant<'_> {
    #[inline(always)]
    fn begin(&mut self, o0: usize, nb: usize) {
        self.o0 = o0;
        if self.q.lo <= 127 {
            for (t, r) in self.r.iter_mut().enumerate().take(nb / O) {
                // SAFETY: NEON is baseline on this target (the module is cfg'd on it).
                *r = unsafe { Rq4::new(&self.rq[o0 + t * O..][..O], self.q) };
            }
        }
    }
    #[inline(always)]
    fn tile(&mut self, d: &[int32x4_t; P], np: usize, p: usize, o: usize, no: usize) {
        if no == O && np == P && self.q.lo <= 127 {
            let r = &self.r[(o - self.o0) / O];
            // SAFETY: NEON is baseline on this target (the module is cfg'd on it).
            let w = unsafe {
                let words = r.apply4(d);
                [
                    vgetq_lane_u32::<0>(words),
                    vgetq_lane_u32::<1>(words),
                    vgetq_lane_u32::<2>(words),
                    vgetq_lane_u32::<3>(words),
                ]
            };
            // One bounds check for the 4 pixels' runs of 4 bytes, `cout` apart.
            let at = &mut self.y[p * self.cout + o..][..(P - 1) * self.cout + O];
            for (i, w) in w.into_iter().enumerate() {
                // SAFETY: `i·cout + 4 ≤ at.len()`; unaligned (channel offsets are any byte).
                unsafe { (at.as_mut_ptr().add(i * self.cout) as *mut u32).write_unaligned(w) };
            }
        } else if no == O && self.q.lo <= 127 {
            let r = &self.r[(o - self.o0) / O];
            for (i, &v) in d.iter().enumerate().take(np) {
                // SAFETY: NEON is baseline on this target (the module is cfg'd on it).
                let word = unsafe { r.apply(v) };
                let at = &mut self.y[(p + i) * self.cout + o..][..O];
                // SAFETY: `at` holds 4 bytes; unaligned (channel offsets are any byte).
                unsafe { (at.as_mut_ptr() as *mut u32).write_unaligned(word) };
            }
        } else {
            for (i, &v) in d.iter().enumerate().take(np) {
                let mut s = [0i32; O];
                // SAFETY: `s` holds 4 i32.
                unsafe { vst1q_s32(s.as_mut_ptr(), v) };
                let row = &mut self.y[(p + i) * self.cout + o..][..no];
                for (j, yv) in row.iter_mut().enumerate() {
                    *yv = requant(s[j], self.rq[o + j], self.q);
                }
            }
        }
    }
}

/// Raw sums as a [`Sink`]: each block of up to [`P`] pixels × [`OB`] channels gathered,
/// then handed to `out` as one [`SumTile`].
pub(super) struct Sums<'s> {
    acc: [i32; P * OB],
    o0: usize,
    nb: usize,
    out: &'s mut dyn FnMut(SumTile<'_>),
}

impl<'s> Sums<'s> {
    pub(super) fn new(out: &'s mut dyn FnMut(SumTile<'_>)) -> Self {
        Sums {
            acc: [0; P * OB],
            o0: 0,
            nb: 0,
            out,
        }
    }
}

impl Sink for Sums<'_> {
    #[inline(always)]
    fn begin(&mut self, o0: usize, nb: usize) {
        (self.o0, self.nb) = (o0, nb);
    }
    #[inline(always)]
    fn tile(&mut self, d: &[int32x4_t; P], np: usize, _p: usize, o: usize, no: usize) {
        for (i, &v) in d.iter().enumerate().take(np) {
            let dst = &mut self.acc[i * self.nb + o - self.o0..][..no];
            if no == O {
                // SAFETY: `dst` holds 4 i32.
                unsafe { vst1q_s32(dst.as_mut_ptr(), v) };
            } else {
                let mut s = [0i32; O];
                // SAFETY: `s` holds 4 i32.
                unsafe { vst1q_s32(s.as_mut_ptr(), v) };
                for (a, &b) in dst.iter_mut().zip(&s) {
                    *a = b;
                }
            }
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
