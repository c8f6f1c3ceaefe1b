//! NEON k×k int8 conv (the stem) as the pointwise GEMM over im2col patches: four output
//! pixels' receptive fields are gathered as raw int8 with the padding set to the zero point
//! (so a padded tap adds `w·(zx − zx) = 0`, exactly as the reference skips it), then the
//! shared GEMM (`gemm.rs`: `smull`/`sadalp`, or `sdot`, with the `− zx·Σw` correction) and
//! the NEON output stage. When the weights fit [`WT`] bytes they are permuted tap-major
//! (`[cout, ky, kx, cin]`, once per call) so that a patch row is one contiguous run of the
//! input (`k·cin` bytes of a dense NHWC row, one 16-byte copy for the usual 3×3×3), else
//! the patches follow the weights' `[cin, ky, kx]` order. The sums are exact integers, so
//! the order does not change them. Patches longer than `conv::PATCH` and zero points
//! outside i8 take the reference.
use core::arch::aarch64::*;

use super::gemm::{gemm_i8, Requant, Rows, P};
use super::requant::Rq4;
use crate::kernels::reference::conv::{gather, PATCH};
use crate::kernels::{reference, Geom, OutQ};

/// The stem's input rows for the GEMM: each output pixel's gathered patch.
struct Patches<'a> {
    g: &'a Geom,
    x: &'a [i8],
    zx: i8,
    buf: [[i8; PATCH]; P],
}

impl Rows for Patches<'_> {
    #[inline(always)]
    fn rows(&mut self, p: usize, np: usize) -> [&[i8]; P] {
        let (g, n) = (self.g, self.g.cin * self.g.k * self.g.k);
        for (i, patch) in self.buf.iter_mut().enumerate().take(np) {
            let pi = p + i;
            gather(
                g,
                self.x,
                pi / g.wo,
                pi % g.wo,
                self.zx,
                |v| v,
                &mut patch[..n],
            );
        }
        // The tile's missing pixels repeat the last real one (their sums are unused).
        let r = |i: usize| &self.buf[i.min(np - 1)][..n];
        [r(0), r(1), r(2), r(3)]
    }
}

/// Largest `cout·cin·k·k` permuted tap-major on the stack.
const WT: usize = 8192;

/// Patch rows with room for a 16-byte store past the last value.
const ROW: usize = PATCH + 16;

/// The stem's input rows, tap-major: `patch[(ky·k + kx)·cin + c] = x[iy, ix, c_off + c]`,
/// `zx` in the padding.
struct TapMajor<'a> {
    g: &'a Geom,
    x: &'a [i8],
    zx: i8,
    buf: [[i8; ROW]; P],
}

/// Output pixel `(oy, ox)`'s tap-major patch into `patch` (`k·k·cin ≤ PATCH`).
#[inline(always)]
fn gather_tm(g: &Geom, x: &[i8], zx: i8, oy: usize, ox: usize, patch: &mut [i8]) {
    let (k, cin) = (g.k, g.cin);
    let run = k * cin;
    let sx = ox * g.stride;
    // The whole kernel row lies inside the image and the input is dense (then
    // `c_off = 0`): each patch row is `run` contiguous input bytes.
    let inside = sx >= g.pad && sx - g.pad + k <= g.w && g.in_stride == cin;
    for ky in 0..k {
        let dst = &mut patch[ky * run..];
        match Geom::tap(oy, ky, g.stride, g.pad, g.h) {
            Some(iy) if inside => {
                let s = (iy * g.w + sx - g.pad) * cin;
                let src = &x[s..][..run];
                if run <= 16 && s + 16 <= x.len() {
                    // SAFETY: 16 bytes from `s` lie inside `x` (checked), and `dst[..16]`
                    // is bounds-checked (callers' rows hold `k·k·cin + 16` bytes). The
                    // bytes past `run` are rewritten by the next patch row or lie past the
                    // `k·k·cin` the GEMM reads.
                    unsafe {
                        let v = vld1q_s8(x.as_ptr().add(s));
                        vst1q_s8(dst[..16].as_mut_ptr(), v);
                    }
                } else {
                    dst[..run].copy_from_slice(src);
                }
            }
            Some(iy) => {
                for kx in 0..k {
                    let d = &mut dst[kx * cin..][..cin];
                    match Geom::tap(ox, kx, g.stride, g.pad, g.w) {
                        Some(ix) => {
                            let at = (iy * g.w + ix) * g.in_stride + g.c_off;
                            d.copy_from_slice(&x[at..][..cin]);
                        }
                        None => d.fill(zx),
                    }
                }
            }
            None => dst[..run].fill(zx),
        }
    }
}

impl Rows for TapMajor<'_> {
    #[inline(always)]
    fn rows(&mut self, p: usize, np: usize) -> [&[i8]; P] {
        let (g, x, zx) = (self.g, self.x, self.zx);
        let (wo, n) = (g.wo, g.cin * g.k * g.k);
        for (i, patch) in self.buf.iter_mut().enumerate().take(np) {
            let pi = p + i;
            gather_tm(g, x, zx, pi / wo, pi % wo, patch);
        }
        // The tile's missing pixels repeat the last real one (their sums are unused).
        let r = |i: usize| &self.buf[i.min(np - 1)][..n];
        [r(0), r(1), r(2), r(3)]
    }
}

#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn run<const DOT: bool>(
    g: &Geom,
    x: &[i8],
    zx: i32,
    w: &[i8],
    rq: &[[i32; 3]],
    q: OutQ,
    y: &mut [i8],
) {
    let n = g.cin * g.k * g.k;
    let npix = g.ho * g.wo;
    if n == 0 || n > PATCH || !(-128..=127).contains(&zx) {
        return reference::conv::conv_i8(g, x, zx, w, rq, q, y);
    }
    let mut out = Requant::new(rq, q, &mut y[..npix * g.cout], g.cout);
    let w = &w[..g.cout * n];
    if w.len() <= WT {
        let (kk, cin) = (g.k * g.k, g.cin);
        let mut wt = [0i8; WT];
        for (src, dst) in w.chunks_exact(n).zip(wt.chunks_exact_mut(n)) {
            for c in 0..cin {
                for t in 0..kk {
                    dst[t * cin + c] = src[c * kk + t];
                }
            }
        }
        let mut rows = TapMajor {
            g,
            x,
            zx: zx as i8,
            buf: [[0; ROW]; P],
        };
        // SAFETY: `DOT` only from `conv_i8_sdot`, installed only when `dotprod` is detected.
        unsafe { gemm_i8::<DOT>(n, npix, g.cout, &wt[..w.len()], zx, &mut rows, &mut out) }
    } else {
        let mut rows = Patches {
            g,
            x,
            zx: zx as i8,
            buf: [[0; PATCH]; P],
        };
        // SAFETY: as above.
        unsafe { gemm_i8::<DOT>(n, npix, g.cout, w, zx, &mut rows, &mut out) }
    }
}

/// NEON stem (`smull`/`sadalp`); same contract as `reference::conv::conv_i8`.
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
    if !lanes_fit(g, n, zx, q) {
        return run::<false>(g, x, zx, w, rq, q, y);
    }
    // SAFETY: NEON is baseline on this target; the shape was checked above.
    unsafe {
        // The model's RGB stem (3×3 over 3 channels into 24) in product pairs, unless a
        // weight is −128.
        if g.k == 3 && g.cin == 3 && g.cout == RGB_COUT && rgb24(g, x, zx, w, rq, q, y) {
            return;
        }
        if g.k == 3 {
            // `lanes_fit`: `9·cin ≤ 32`, so `cin ≤ 3`.
            return match g.cin {
                1 => rows3_h::<3>(g, x, zx, w, rq, q, y),
                2 => rows3_h::<6>(g, x, zx, w, rq, q, y),
                _ => rows3_h::<9>(g, x, zx, w, rq, q, y),
            };
        }
        match n.div_ceil(8) {
            1 => lanes_h::<1>(g, x, zx, w, rq, q, y),
            2 => lanes_h::<2>(g, x, zx, w, rq, q, y),
            3 => lanes_h::<3>(g, x, zx, w, rq, q, y),
            _ => lanes_h::<4>(g, x, zx, w, rq, q, y),
        }
    }
}

/// The shapes [`lanes`] and [`lanes_h`] take: patches of at most 32 values, whole groups of
/// 4 output channels (at most [`LANES_COUT`]), `q.lo ≤ 127`, `zx` in i8.
fn lanes_fit(g: &Geom, n: usize, zx: i32, q: OutQ) -> bool {
    n > 0
        && n <= 32
        && g.cout.is_multiple_of(4)
        && g.cout <= LANES_COUT
        && q.lo <= 127
        && (-128..=127).contains(&zx)
}

/// The 4 pixels' sums of one group of 4 channels over `8·KH` patch values: lane `j` of
/// `out[p]` is `init[j] + Σ_k w[k][j]·x_p[k]`, each weight row (4 halfwords) loaded once for
/// the 4 pixels, each product a by-element `SMLAL` (`x_p[k]` a lane of the widened patch).
///
/// # Safety
/// NEON available (baseline); `w` holds `4·8·KH` halfwords.
#[inline(always)]
unsafe fn dot_h<const KH: usize>(
    init: int32x4_t,
    w: &[i16],
    x: &[[int16x8_t; KH]; 4],
) -> [int32x4_t; 4] {
    let w = &w[..32 * KH];
    let mut a = [init; 4];
    macro_rules! step {
        ($h:literal, $l:literal) => {
            if $h < KH {
                // SAFETY: row `8h + l < 8·KH` of `w` (sliced to `32·KH` halfwords above).
                let wv = unsafe { vld1_s16(w.as_ptr().add(4 * (8 * $h + $l))) };
                for p in 0..4 {
                    a[p] = vmlal_laneq_s16::<$l>(a[p], wv, x[p][$h % KH]);
                }
            }
        };
    }
    macro_rules! reg {
        ($h:literal) => {
            step!($h, 0);
            step!($h, 1);
            step!($h, 2);
            step!($h, 3);
            step!($h, 4);
            step!($h, 5);
            step!($h, 6);
            step!($h, 7);
        };
    }
    reg!(0);
    reg!(1);
    reg!(2);
    reg!(3);
    a
}

/// [`lanes`] without dotprod: the same channels-in-lanes stem on 16-bit lanes. Each patch
/// is widened once to `KH` registers of 8 halfwords (raw `x`: the zero point is again the
/// start `− zx·Σw`); every 4 output channels take one `SMLAL` by element per patch value and
/// pixel, 4 pixels sharing each weight row ([`dot_h`]); the weights are tap-major halfwords,
/// zero past `n`.
///
/// # Safety
/// NEON available (baseline); `0 < cin·k·k ≤ 8·KH ≤ 32` and [`lanes_fit`].
#[target_feature(enable = "neon")]
unsafe fn lanes_h<const KH: usize>(
    g: &Geom,
    x: &[i8],
    zx: i32,
    w: &[i8],
    rq: &[[i32; 3]],
    q: OutQ,
    y: &mut [i8],
) {
    let (kk, cin, cout) = (g.k * g.k, g.cin, g.cout);
    let n = cin * kk;
    let (w, rq) = (&w[..cout * n], &rq[..cout]);
    let npix = g.ho * g.wo;
    let y = &mut y[..npix * cout];
    // `[group][k][channel % 4]` halfwords, `k < 8·KH`; `corr[c] = zx·Σw`.
    let mut wa = [0i16; 32 * LANES_COUT];
    let mut corr = [0i32; LANES_COUT];
    tap_major(g, w, zx, &mut corr, |c, k, v| {
        wa[(c / 4) * 32 * KH + c % 4 + 4 * k] = v as i16
    });
    let zero = vdupq_n_s16(0);
    let mut buf = [[zero; KH]; CHUNK];
    let mut patch = [0i8; LROW];
    let mut p0 = 0;
    while p0 < npix {
        let np = CHUNK.min(npix - p0);
        for (i, b) in buf.iter_mut().enumerate().take(np) {
            gather_tm(g, x, zx as i8, (p0 + i) / g.wo, (p0 + i) % g.wo, &mut patch);
            for (h, v) in b.iter_mut().enumerate() {
                // SAFETY: `8h + 8 ≤ 32 < LROW` bytes of `patch`; bytes past `n` meet zero
                // weights.
                *v = unsafe { vmovl_s8(vld1_s8(patch.as_ptr().add(8 * h))) };
            }
        }
        for cg in 0..cout / 4 {
            let r = Rq4::new(&rq[4 * cg..], q);
            let wg = &wa[cg * 32 * KH..][..32 * KH];
            // SAFETY: `corr` holds at least `4·cg + 4` i32.
            let init = unsafe { vnegq_s32(vld1q_s32(corr.as_ptr().add(4 * cg))) };
            let mut i = 0;
            while i < np {
                // A last group short of 4 pixels repeats its last one (sums unused).
                let m = 4.min(np - i);
                let xs = [
                    buf[i],
                    buf[i + 1.min(m - 1)],
                    buf[i + 2.min(m - 1)],
                    buf[i + 3.min(m - 1)],
                ];
                // SAFETY: NEON; `wg` holds `32·KH` halfwords.
                let acc = unsafe { dot_h::<KH>(init, wg, &xs) };
                if m == 4 {
                    store4(y, (p0 + i) * cout + 4 * cg, cout, r.apply4(&acc));
                } else {
                    for (k, &a) in acc.iter().enumerate().take(m) {
                        store1(y, (p0 + i + k) * cout + 4 * cg, r.apply(a));
                    }
                }
                i += m;
            }
        }
        p0 += np;
    }
}

/// NEON stem on `sdot`; installed only when `dotprod` is detected. Short patches (the
/// usual 3×3×3) take [`lanes`].
pub(crate) fn conv_i8_sdot(
    g: &Geom,
    x: &[i8],
    zx: i32,
    w: &[i8],
    rq: &[[i32; 3]],
    q: OutQ,
    y: &mut [i8],
) {
    let n = g.cin * g.k * g.k;
    if !lanes_fit(g, n, zx, q) {
        return run::<true>(g, x, zx, w, rq, q, y);
    }
    // SAFETY: installed only when `dotprod` is detected; the shape was checked above.
    unsafe {
        // The model's RGB stem (3×3 over 3 channels into 24), two pixels at a time.
        if g.k == 3 && g.cin == 3 && g.cout == RGB_COUT {
            return rgb24_dot(g, x, zx, w, rq, q, y);
        }
        if g.k == 3 {
            // `lanes_fit`: `9·cin ≤ 32`, so `cin ≤ 3` and a kernel row fits 3 groups.
            match g.cin {
                1 => rows3_dot::<1>(g, x, zx, w, rq, q, y),
                2 => rows3_dot::<2>(g, x, zx, w, rq, q, y),
                _ => rows3_dot::<3>(g, x, zx, w, rq, q, y),
            }
        } else if n <= 16 {
            lanes::<4>(g, x, zx, w, rq, q, y)
        } else {
            lanes::<8>(g, x, zx, w, rq, q, y)
        }
    }
}

/// The stem weights `w` (`[cout, cin, k, k]`) visited tap-major for the lanes stems: `put(c,
/// k, v)` for channel `c`'s value `v` at tap-major index `k = (ky·k + kx)·cin + ci`, and
/// `corr[c] = zx·Σ_k w[c][k]` (the sums' start, negated, in [`lanes`] / [`lanes_h`]).
fn tap_major(g: &Geom, w: &[i8], zx: i32, corr: &mut [i32], mut put: impl FnMut(usize, usize, i8)) {
    let (kk, cin) = (g.k * g.k, g.cin);
    for (c, src) in w.chunks_exact(cin * kk).take(g.cout).enumerate() {
        let mut s = 0i32;
        for t in 0..kk {
            for ci in 0..cin {
                let v = src[ci * kk + t];
                s += v as i32;
                put(c, t * cin + ci, v);
            }
        }
        corr[c] = zx * s;
    }
}

/// Four pixels' words of 4 channels each (lane `p` of `words`: pixel `p`'s 4 bytes) into
/// `y` at `at`, `at + cout`, `at + 2·cout`, `at + 3·cout`.
#[inline]
#[target_feature(enable = "neon")]
fn store4(y: &mut [i8], at: usize, cout: usize, words: uint32x4_t) {
    let words = [
        vgetq_lane_u32::<0>(words),
        vgetq_lane_u32::<1>(words),
        vgetq_lane_u32::<2>(words),
        vgetq_lane_u32::<3>(words),
    ];
    let at = &mut y[at..][..3 * cout + 4];
    for (k, wd) in words.into_iter().enumerate() {
        // SAFETY: `k·cout + 4 ≤ at.len()`; unaligned (any channel offset).
        unsafe { (at.as_mut_ptr().add(k * cout) as *mut u32).write_unaligned(wd) };
    }
}

/// One pixel's word of 4 channels into `y[at..at + 4]`.
#[inline(always)]
fn store1(y: &mut [i8], at: usize, word: u32) {
    let at = &mut y[at..][..4];
    // SAFETY: `at` holds 4 bytes; unaligned.
    unsafe { (at.as_mut_ptr() as *mut u32).write_unaligned(word) };
}

/// Output channels of [`rgb24`]: the 0.5x and 1.0x ShuffleNetV2 stems.
const RGB_COUT: usize = 24;

/// [`rgb24`]'s `TBL` indices: input group `m` (patch values `4m .. 4m + 4`, tap-major `k =
/// 9·ky + j` with `j = 3·kx + ci`) of a pixel whose 3 kernel rows are a 3-register table
/// (row `ky` at bytes `16·ky ..`): values `4m`, `4m + 1` in every 16-bit lane of the low
/// half, `4m + 2`, `4m + 3` in the high half (the product-pair layout of `packed.rs`); the
/// 28th value reads 0 (index 255).
const RGB_IDX: [[u8; 16]; 7] = {
    let mut t = [[0u8; 16]; 7];
    let mut m = 0;
    while m < 7 {
        let mut l = 0;
        while l < 16 {
            let k = 4 * m + (l & 1) + if l < 8 { 0 } else { 2 };
            t[m][l] = if k < 27 {
                (16 * (k / 9) + k % 9) as u8
            } else {
                255
            };
            l += 1;
        }
        m += 1;
    }
    t
};

/// Products of one packed weight vector (`w`) with the paired inputs of two pixels (`g0`,
/// `g1`): `smull` + `smlal2` (two products a 16-bit lane) + `sadalp` into the pixels' sums
/// `a0`, `a1` (4 channels each).
#[rustfmt::skip]
macro_rules! rgb_pair2 {
    ($w:literal, $g0:literal, $g1:literal, $a0:literal, $a1:literal) => {
        concat!(
            "smull v28.8h, v", $w, ".8b, v", $g0, ".8b\n",
            "smlal2 v28.8h, v", $w, ".16b, v", $g0, ".16b\n",
            "smull v29.8h, v", $w, ".8b, v", $g1, ".8b\n",
            "smlal2 v29.8h, v", $w, ".16b, v", $g1, ".16b\n",
            "sadalp v", $a0, ".4s, v28.8h\n",
            "sadalp v", $a1, ".4s, v29.8h\n",
        )
    };
}

/// One group of 4 output channels (its 7 packed vectors at `[wp, #o0 ..]`, 16 bytes apart)
/// over the two pixels' 7 paired input groups (`v0..v6`, `v7..v13`) into `a0`, `a1`.
#[rustfmt::skip]
macro_rules! rgb_group {
    ($o0:literal, $o2:literal, $o4:literal, $o6:literal, $a0:literal, $a1:literal) => {
        concat!(
            "ldp q26, q27, [{wp}, #", $o0, "]\n",
            rgb_pair2!("26", "0", "7", $a0, $a1),
            rgb_pair2!("27", "1", "8", $a0, $a1),
            "ldp q26, q27, [{wp}, #", $o2, "]\n",
            rgb_pair2!("26", "2", "9", $a0, $a1),
            rgb_pair2!("27", "3", "10", $a0, $a1),
            "ldp q26, q27, [{wp}, #", $o4, "]\n",
            rgb_pair2!("26", "4", "11", $a0, $a1),
            rgb_pair2!("27", "5", "12", $a0, $a1),
            "ldr q26, [{wp}, #", $o6, "]\n",
            rgb_pair2!("26", "6", "13", $a0, $a1),
        )
    };
}

/// Two pixels' 24 channel sums over their RGB 3×3 patches: `init +` the exact products.
/// `rows[p]`: pixel `p`'s 3 kernel rows (9 values at bytes 0..9 each; the rest is read by
/// no index); `wts`: the 6 groups' 7 packed vectors ([`rgb24`]); `init`: the 6 starting
/// vectors. One `asm!` block on fixed registers: the rows (`v24..v29`, a 3-register `TBL`
/// table per pixel) become 7 paired input groups a pixel (`v0..v13`, by the indices
/// `v16..v22`), then the sums (`v14..v19`, `v20..v25`) take 42 `smull` + `smlal2` +
/// `sadalp` triples a pixel, 2 weight vectors a `ldp` (`v26`, `v27`; products `v28`, `v29`).
///
/// # Safety
/// NEON (baseline); no weight in `wts` is −128 (two products then stay within an i16
/// lane: `2·127·128 = 32512`).
#[inline(always)]
#[rustfmt::skip]
unsafe fn rgb_dot2(
    rows: [[int8x16_t; 3]; 2],
    wts: &[i8; 16 * 42],
    init: &[int32x4_t; 6],
) -> [[int32x4_t; 6]; 2] {
    let (a00, a01, a02, a03, a04, a05): (int32x4_t, int32x4_t, int32x4_t, int32x4_t, int32x4_t, int32x4_t);
    let (a10, a11, a12, a13, a14, a15): (int32x4_t, int32x4_t, int32x4_t, int32x4_t, int32x4_t, int32x4_t);
    // SAFETY: the block reads the 112 index bytes of `RGB_IDX`, the 672 of `wts` and the 96
    // of `init`, and writes only the registers it names (outputs or discarded); NEON.
    unsafe {
        core::arch::asm!(
            "ld1 {{v16.16b, v17.16b, v18.16b, v19.16b}}, [{ip}], #64",
            "ld1 {{v20.16b, v21.16b, v22.16b}}, [{ip}]",
            "tbl v0.16b, {{v24.16b, v25.16b, v26.16b}}, v16.16b",
            "tbl v1.16b, {{v24.16b, v25.16b, v26.16b}}, v17.16b",
            "tbl v2.16b, {{v24.16b, v25.16b, v26.16b}}, v18.16b",
            "tbl v3.16b, {{v24.16b, v25.16b, v26.16b}}, v19.16b",
            "tbl v4.16b, {{v24.16b, v25.16b, v26.16b}}, v20.16b",
            "tbl v5.16b, {{v24.16b, v25.16b, v26.16b}}, v21.16b",
            "tbl v6.16b, {{v24.16b, v25.16b, v26.16b}}, v22.16b",
            "tbl v7.16b, {{v27.16b, v28.16b, v29.16b}}, v16.16b",
            "tbl v8.16b, {{v27.16b, v28.16b, v29.16b}}, v17.16b",
            "tbl v9.16b, {{v27.16b, v28.16b, v29.16b}}, v18.16b",
            "tbl v10.16b, {{v27.16b, v28.16b, v29.16b}}, v19.16b",
            "tbl v11.16b, {{v27.16b, v28.16b, v29.16b}}, v20.16b",
            "tbl v12.16b, {{v27.16b, v28.16b, v29.16b}}, v21.16b",
            "tbl v13.16b, {{v27.16b, v28.16b, v29.16b}}, v22.16b",
            "ld1 {{v14.4s, v15.4s, v16.4s, v17.4s}}, [{bp}]",
            "ld1 {{v20.4s, v21.4s, v22.4s, v23.4s}}, [{bp}]",
            "ldp q18, q19, [{bp}, #64]",
            "ldp q24, q25, [{bp}, #64]",
            rgb_group!("0", "32", "64", "96", "14", "20"),
            rgb_group!("112", "144", "176", "208", "15", "21"),
            rgb_group!("224", "256", "288", "320", "16", "22"),
            rgb_group!("336", "368", "400", "432", "17", "23"),
            rgb_group!("448", "480", "512", "544", "18", "24"),
            rgb_group!("560", "592", "624", "656", "19", "25"),
            ip = inout(reg) RGB_IDX.as_ptr() => _,
            bp = in(reg) init.as_ptr(),
            wp = in(reg) wts.as_ptr(),
            inout("v24") vreinterpretq_s32_s8(rows[0][0]) => a14,
            inout("v25") vreinterpretq_s32_s8(rows[0][1]) => a15,
            inout("v26") rows[0][2] => _,
            inout("v27") rows[1][0] => _,
            inout("v28") rows[1][1] => _,
            inout("v29") rows[1][2] => _,
            out("v14") a00,
            out("v15") a01,
            out("v16") a02,
            out("v17") a03,
            out("v18") a04,
            out("v19") a05,
            out("v20") a10,
            out("v21") a11,
            out("v22") a12,
            out("v23") a13,
            out("v0") _, out("v1") _, out("v2") _, out("v3") _, out("v4") _,
            out("v5") _, out("v6") _, out("v7") _, out("v8") _, out("v9") _,
            out("v10") _, out("v11") _, out("v12") _, out("v13") _,
            options(pure, readonly, nostack, preserves_flags),
        );
    }
    [[a00, a01, a02, a03, a04, a05], [a10, a11, a12, a13, a14, a15]]
}

/// Output pixel `px`'s 3 kernel rows (`iy`: the rows, `None` in the padding) for
/// [`rgb_dot2`] / [`rgb_sdot2`], 9 values at bytes 0..9 each (the zero point `zb` in the
/// padding; the rest is read by no index): a padding row is `zb` throughout; a row of a
/// dense input read straight from `x` where its 16 bytes lie there, from its first column
/// (`ix ≥ 0`) or, one column left of the image (`ix = −1`), shifted in behind 3 bytes of
/// `zb`; otherwise (the right edge, sparse inputs, the last bytes of `x`) gathered 3 values
/// a tap.
#[inline(never)]
fn rgb_rows(g: &Geom, x: &[i8], zb: i8, iy: &[Option<usize>; 3], px: usize) -> [int8x16_t; 3] {
    let dense = g.in_stride == 3 && g.c_off == 0;
    // The first tap's column, +1 (0: one column left of the image).
    let ix1 = (px * g.stride + 1).checked_sub(g.pad);
    // SAFETY: NEON is baseline on this target.
    let mut rows = [unsafe { vdupq_n_s8(zb) }; 3];
    for (ky, v) in rows.iter_mut().enumerate() {
        let Some(iy) = iy[ky] else {
            continue;
        };
        let row = 3 * iy * g.w;
        *v = match ix1 {
            // All 3 taps inside; the row's 16 bytes from column `ix` in `x`.
            Some(ix1) if dense && ix1 >= 1 && ix1 + 2 <= g.w && row + 3 * ix1 + 13 <= x.len() => {
                // SAFETY: `row + 3·(ix1 − 1) + 16 ≤ x.len()` (checked); NEON.
                unsafe { vld1q_s8(x.as_ptr().add(row + 3 * (ix1 - 1))) }
            }
            // Taps 1 and 2 at columns 0 and 1: the row's first 13 bytes behind 3 × `zb`.
            Some(0) if dense && g.w >= 2 && row + 16 <= x.len() => {
                // SAFETY: `row + 16 ≤ x.len()` (checked); NEON.
                unsafe { vextq_s8::<13>(*v, vld1q_s8(x.as_ptr().add(row))) }
            }
            _ => rgb_row_gather(g, x, zb, iy, px),
        };
    }
    rows
}

/// Kernel row `iy` (inside the image) of output pixel `px` gathered 3 values a tap, the zero
/// point `zb` in the padding, into 16 bytes ([`rgb_rows`]' last resort).
#[cold]
#[inline(never)]
fn rgb_row_gather(g: &Geom, x: &[i8], zb: i8, iy: usize, px: usize) -> int8x16_t {
    let mut slot = [zb; 16];
    for kx in 0..3 {
        if let Some(ix) = Geom::tap(px, kx, g.stride, g.pad, g.w) {
            let a = (iy * g.w + ix) * g.in_stride + g.c_off;
            slot[3 * kx..][..3].copy_from_slice(&x[a..][..3]);
        }
    }
    // SAFETY: NEON is baseline on this target; `slot` holds 16 bytes.
    unsafe { vld1q_s8(slot.as_ptr()) }
}

/// The RGB 3×3 stem into 24 channels in product pairs (cortex-a72 class, no `sdot`): the
/// weights packed once a call as 6 groups of 4 channels × 7 input groups of 4 tap-major
/// values (`[c0k0 c0k1 c1k0 c1k1 … | c0k2 c0k3 …]`, as `packed.rs`' pairs; the 28th value
/// 0), two output pixels at a time through [`rgb_dot2`] — `smull` + `smlal2` + `sadalp` per
/// 16 MACs where [`rows3_h`]'s by-element `SMLAL` takes 4 — their kernel rows read straight
/// from a dense input or gathered with the zero point in the padding (as [`rows3`]), the
/// sums starting from `bias − zx·Σw`. `false`, with nothing written, when a weight is −128.
///
/// # Safety
/// NEON (baseline); `k = 3`, `cin = 3`, `cout = RGB_COUT`, [`lanes_fit`].
#[target_feature(enable = "neon")]
unsafe fn rgb24(
    g: &Geom,
    x: &[i8],
    zx: i32,
    w: &[i8],
    rq: &[[i32; 3]],
    q: OutQ,
    y: &mut [i8],
) -> bool {
    const C: usize = RGB_COUT;
    let w = &w[..C * 27];
    if w.contains(&i8::MIN) {
        return false;
    }
    let mut wb = [0i8; 16 * 42];
    let mut corr = [0i32; LANES_COUT];
    tap_major(g, w, zx, &mut corr, |c, k, v| {
        let l = 2 * (c % 4) + (k & 1) + if k % 4 >= 2 { 8 } else { 0 };
        wb[((c / 4) * 7 + k / 4) * 16 + l] = v;
    });
    let (r, init, short) = rgb_stage(rq, q, &corr);
    // SAFETY: no weight is −128 (checked above); NEON; the shape is this function's.
    unsafe {
        rgb_pairs::<false>(
            g,
            x,
            zx,
            y,
            |rows| rgb_out(&r, short, rgb_dot2(rows, &wb, &init)),
            |_, _, _, _| {},
        )
    };
    true
}

/// The 24 channels' output stages of the RGB stems, their sums starting from `bias − zx·Σw`
/// (`corr[c] = zx·Σw`): the constants, the sums' start, and whether every group has the
/// short form.
#[inline(always)]
fn rgb_stage(
    rq: &[[i32; 3]],
    q: OutQ,
    corr: &[i32; LANES_COUT],
) -> ([Rq4; 6], [int32x4_t; 6], bool) {
    let rq = &rq[..RGB_COUT];
    // SAFETY (all three blocks): NEON is baseline on this target.
    let mut r = [Rq4::default(); 6];
    let mut init = [unsafe { vdupq_n_s32(0) }; 6];
    for (cg, (r, init)) in r.iter_mut().zip(&mut init).enumerate() {
        // SAFETY: `corr` holds `LANES_COUT ≥ 24` i32; NEON.
        unsafe {
            let c = vld1q_s32(corr.as_ptr().add(4 * cg));
            *r = Rq4::new(&rq[4 * cg..], q).with_bias(vnegq_s32(c));
            *init = r.take_bias();
        }
    }
    let short = unsafe { Rq4::all_short(&r) };
    (r, init, short)
}

/// Two pixels' 24 sums (from [`rgb_stage`]'s start) through the output stage `r` (its short
/// form when `short`): each pixel's 16 + 8 bytes.
#[inline(always)]
fn rgb_out(r: &[Rq4; 6], short: bool, acc: [[int32x4_t; 6]; 2]) -> [(int8x16_t, int8x8_t); 2] {
    [rgb_out1(r, short, &acc[0]), rgb_out1(r, short, &acc[1])]
}

/// [`rgb_out`] for one pixel (no closure: LLVM kept `map`'s out of line).
#[inline(always)]
fn rgb_out1(r: &[Rq4; 6], short: bool, a: &[int32x4_t; 6]) -> (int8x16_t, int8x8_t) {
    let rs = [&r[0], &r[1], &r[2], &r[3]];
    // SAFETY: NEON is baseline on this target.
    unsafe {
        if short {
            (
                Rq4::apply16_short(rs, [a[0], a[1], a[2], a[3]]),
                Rq4::apply8_short(&[r[4], r[5]], a[4], a[5]),
            )
        } else {
            (
                Rq4::apply16(rs, [a[0], a[1], a[2], a[3]]),
                Rq4::apply8(&[r[4], r[5]], a[4], a[5]),
            )
        }
    }
}

/// The driver of [`rgb24`] and [`rgb24_dot`]: output pixels two at a time along each row,
/// their kernel rows read straight from a dense input or gathered with the zero point in the
/// padding ([`rgb_rows`]), `out2(rows)` giving both pixels' 24 output bytes (16 + 8; a short
/// pair's second is unused), one 16- and one 8-byte store a pixel. With `RUN`, the direct
/// pairs of a row go to `run(rows, step, pairs, out)` at once instead ([`rgb_sdot_run`]:
/// the first pixel's 3 row pointers, the pixel step in bytes, the pair count, the output).
///
/// # Safety
/// NEON (baseline); `k = 3`, `cin = 3`, `cout = RGB_COUT`, [`lanes_fit`].
#[inline(always)]
unsafe fn rgb_pairs<const RUN: bool>(
    g: &Geom,
    x: &[i8],
    zx: i32,
    y: &mut [i8],
    out2: impl Fn([[int8x16_t; 3]; 2]) -> [(int8x16_t, int8x8_t); 2],
    run: impl Fn([*const i8; 3], usize, usize, *mut i8),
) {
    let y = &mut y[..g.ho * g.wo * RGB_COUT];
    let dense = g.in_stride == 3 && g.c_off == 0;
    let zb = zx as i8;
    // The last row start (in bytes) whose 16 bytes lie in `x` (dense inputs).
    let room = x.len().checked_sub(16);
    let step = 3 * g.stride;
    for oy in 0..g.ho {
        let iy: [Option<usize>; 3] =
            core::array::from_fn(|ky| Geom::tap(oy, ky, g.stride, g.pad, g.h));
        // With the 3 rows inside a dense input, a pixel whose kernel rows start at column
        // `ix` (`ix + 3 ≤ w`) reads them straight from `x` while the last row's 16 bytes
        // fit: `at + 3·ix ≤ room`, `at` that row's start. Those are the pixels `px` with
        // `ix = px·stride − pad` in `0 ..= lim`: `lo ≤ px ≤ last`.
        let fast = match (iy, dense, room, g.w.checked_sub(3)) {
            ([Some(a), Some(b), Some(c)], true, Some(room), Some(wl)) => {
                room.checked_sub(3 * c * g.w).map(|rest| {
                    let lim = wl.min(rest / 3);
                    let (lo, last) = (g.pad.div_ceil(g.stride), (lim + g.pad) / g.stride);
                    ([a, b, c].map(|r| 3 * r * g.w), lo, last)
                })
            }
            _ => None,
        };
        // This output row, checked once.
        let yr = y[oy * g.wo * RGB_COUT..][..g.wo * RGB_COUT].as_mut_ptr();
        let mut ox = 0;
        while ox < g.wo {
            if let (true, Some((at, lo, last))) = (RUN, fast) {
                if ox >= lo && ox < last {
                    // The direct pairs from here as one run (`run(rows, step, pairs, out)`).
                    let pairs = (last + 1 - ox) / 2;
                    // SAFETY: as the direct pairs below, for each of the run's pixels
                    // `ox .. ox + 2·pairs ≤ last + 1`; their outputs lie in the row at `yr`.
                    unsafe {
                        let ix = ox * g.stride - g.pad;
                        let p = at.map(|a| x.as_ptr().add(a + 3 * ix));
                        run(p, step, pairs, yr.add(ox * RGB_COUT));
                    }
                    ox += 2 * pairs;
                    continue;
                }
            }
            let m = 2.min(g.wo - ox);
            // The pair's columns: a short pair repeats its pixel (its sums are unused).
            let rows = match fast {
                Some((at, lo, last)) if ox >= lo && ox + m - 1 <= last => {
                    // SAFETY: both pixels' rows start at column `ix` or `ix + stride` (`≤
                    // lim`, `≥ 0`) of rows inside, and their 16 bytes lie in `x` (`fast`).
                    unsafe {
                        let ix = ox * g.stride - g.pad;
                        let p = at.map(|a| x.as_ptr().add(a + 3 * ix));
                        let d = if m == 2 { step } else { 0 };
                        [p.map(|p| vld1q_s8(p)), p.map(|p| vld1q_s8(p.add(d)))]
                    }
                }
                _ => [0, 1].map(|p| rgb_rows(g, x, zb, &iy, ox + p.min(m - 1))),
            };
            for (p, (b16, b8)) in out2(rows).into_iter().enumerate().take(m) {
                // SAFETY: pixel `ox + p < wo`: its 24 bytes lie in the row at `yr`.
                unsafe {
                    let o = yr.add((ox + p) * RGB_COUT);
                    vst1q_s8(o, b16);
                    vst1_s8(o.add(16), b8);
                }
            }
            ox += m;
        }
    }
}

/// One group of 4 output channels on `sdot`: its 7 weight vectors (`v{w0}..`, loaded by the
/// caller) by element over the two pixels' patches (`v0`, `v1`; `v2`, `v3`) into `a0`, `a1`.
#[rustfmt::skip]
macro_rules! rgb_sdot_group {
    ($w0:literal, $w1:literal, $w2:literal, $w3:literal, $w4:literal, $w5:literal, $w6:literal,
     $a0:literal, $a1:literal) => {
        concat!(
            "sdot v", $a0, ".4s, v", $w0, ".16b, v0.4b[0]\n",
            "sdot v", $a1, ".4s, v", $w0, ".16b, v2.4b[0]\n",
            "sdot v", $a0, ".4s, v", $w1, ".16b, v0.4b[1]\n",
            "sdot v", $a1, ".4s, v", $w1, ".16b, v2.4b[1]\n",
            "sdot v", $a0, ".4s, v", $w2, ".16b, v0.4b[2]\n",
            "sdot v", $a1, ".4s, v", $w2, ".16b, v2.4b[2]\n",
            "sdot v", $a0, ".4s, v", $w3, ".16b, v0.4b[3]\n",
            "sdot v", $a1, ".4s, v", $w3, ".16b, v2.4b[3]\n",
            "sdot v", $a0, ".4s, v", $w4, ".16b, v1.4b[0]\n",
            "sdot v", $a1, ".4s, v", $w4, ".16b, v3.4b[0]\n",
            "sdot v", $a0, ".4s, v", $w5, ".16b, v1.4b[1]\n",
            "sdot v", $a1, ".4s, v", $w5, ".16b, v3.4b[1]\n",
            "sdot v", $a0, ".4s, v", $w6, ".16b, v1.4b[2]\n",
            "sdot v", $a1, ".4s, v", $w6, ".16b, v3.4b[2]\n",
        )
    };
}

/// The `sdot` part of [`rgb_sdot2`] and [`rgb_sdot2_short`] (see there), as one string.
#[rustfmt::skip]
macro_rules! rgb_sdot_body {
    () => {
        concat!(
            ".arch_extension dotprod\n",
            "ld1 {{v30.16b, v31.16b}}, [{ip}]\n",
            "tbl v0.16b, {{v24.16b, v25.16b, v26.16b}}, v30.16b\n",
            "tbl v1.16b, {{v24.16b, v25.16b, v26.16b}}, v31.16b\n",
            "tbl v2.16b, {{v27.16b, v28.16b, v29.16b}}, v30.16b\n",
            "tbl v3.16b, {{v27.16b, v28.16b, v29.16b}}, v31.16b\n",
            "ld1 {{v4.4s, v5.4s, v6.4s, v7.4s}}, [{bp}]\n",
            "ld1 {{v10.4s, v11.4s, v12.4s, v13.4s}}, [{bp}]\n",
            "ldp q8, q9, [{bp}, #64]\n",
            "ldp q14, q15, [{bp}, #64]\n",
            "ld1 {{v16.16b, v17.16b, v18.16b, v19.16b}}, [{wp}], #64\n",
            "ld1 {{v20.16b, v21.16b, v22.16b}}, [{wp}], #48\n",
            "ld1 {{v23.16b, v24.16b, v25.16b, v26.16b}}, [{wp}], #64\n",
            "ld1 {{v27.16b, v28.16b, v29.16b}}, [{wp}], #48\n",
            rgb_sdot_group!("16", "17", "18", "19", "20", "21", "22", "4", "10"),
            "ld1 {{v16.16b, v17.16b, v18.16b, v19.16b}}, [{wp}], #64\n",
            "ld1 {{v20.16b, v21.16b, v22.16b}}, [{wp}], #48\n",
            rgb_sdot_group!("23", "24", "25", "26", "27", "28", "29", "5", "11"),
            "ld1 {{v23.16b, v24.16b, v25.16b, v26.16b}}, [{wp}], #64\n",
            "ld1 {{v27.16b, v28.16b, v29.16b}}, [{wp}], #48\n",
            rgb_sdot_group!("16", "17", "18", "19", "20", "21", "22", "6", "12"),
            "ld1 {{v16.16b, v17.16b, v18.16b, v19.16b}}, [{wp}], #64\n",
            "ld1 {{v20.16b, v21.16b, v22.16b}}, [{wp}], #48\n",
            rgb_sdot_group!("23", "24", "25", "26", "27", "28", "29", "7", "13"),
            "ld1 {{v23.16b, v24.16b, v25.16b, v26.16b}}, [{wp}], #64\n",
            "ld1 {{v27.16b, v28.16b, v29.16b}}, [{wp}]\n",
            rgb_sdot_group!("16", "17", "18", "19", "20", "21", "22", "8", "14"),
            rgb_sdot_group!("23", "24", "25", "26", "27", "28", "29", "9", "15"),
        )
    };
}

/// [`rgb_dot2`] on `sdot`: two pixels' 24 channel sums over their RGB 3×3 patches, `init +`
/// the exact products. `rows[p]`: pixel `p`'s 3 kernel rows (9 values at bytes 0..9 each);
/// `wts`: the 6 groups' 7 vectors of 4 channels × 4 tap-major values ([`rgb24_dot`]). One
/// `asm!` block on fixed registers: each pixel's rows (`v24..v26`, `v27..v29`) become its
/// 27 values in 7 groups of 4 by two 3-register `TBL`s ([`patches27`]'s indices; `v0`, `v1`
/// and `v2`, `v3`), the sums (`v4..v9`, `v10..v15`) take 7 by-element `sdot`s a group and
/// pixel, each group's 7 weight vectors two `ld1`s (into `v16..v22` and `v23..v29` in turn).
///
/// # Safety
/// The CPU has dotprod.
#[inline(always)]
#[rustfmt::skip]
unsafe fn rgb_sdot2(
    rows: [[int8x16_t; 3]; 2],
    wts: &[i8; 16 * 42],
    init: &[int32x4_t; 6],
) -> [[int32x4_t; 6]; 2] {
    let (a00, a01, a02, a03, a04, a05): (int32x4_t, int32x4_t, int32x4_t, int32x4_t, int32x4_t, int32x4_t);
    let (a10, a11, a12, a13, a14, a15): (int32x4_t, int32x4_t, int32x4_t, int32x4_t, int32x4_t, int32x4_t);
    // SAFETY: the block reads the 32 index bytes of `RGB27_IDX`, the 672 of `wts` and the 96
    // of `init`, and writes only the registers it names (outputs or discarded); `sdot` by
    // this function's contract.
    unsafe {
        core::arch::asm!(
            rgb_sdot_body!(),
            ip = in(reg) RGB27_IDX.as_ptr(),
            bp = in(reg) init.as_ptr(),
            wp = inout(reg) wts.as_ptr() => _,
            inout("v24") rows[0][0] => _,
            inout("v25") rows[0][1] => _,
            inout("v26") rows[0][2] => _,
            inout("v27") rows[1][0] => _,
            inout("v28") rows[1][1] => _,
            inout("v29") rows[1][2] => _,
            out("v4") a00,
            out("v5") a01,
            out("v6") a02,
            out("v7") a03,
            out("v8") a04,
            out("v9") a05,
            out("v10") a10,
            out("v11") a11,
            out("v12") a12,
            out("v13") a13,
            out("v14") a14,
            out("v15") a15,
            out("v0") _, out("v1") _, out("v2") _, out("v3") _,
            out("v16") _, out("v17") _, out("v18") _, out("v19") _, out("v20") _,
            out("v21") _, out("v22") _, out("v23") _, out("v30") _, out("v31") _,
            options(pure, readonly, nostack, preserves_flags),
        );
    }
    [[a00, a01, a02, a03, a04, a05], [a10, a11, a12, a13, a14, a15]]
}

/// The short output stage of one pixel's 24 sums (`v{a0}..`, 6 registers of 4 channels) in
/// place, on [`rgb_sdot2_short`]'s constants (multipliers `v16..v21`, `−shift`s `v22..v27`,
/// the zero point in i16 lanes `v28`, `lo` in bytes `v29`): [`Rq4::apply16_short`]'s steps
/// into `v{a0}` (16 bytes) and [`Rq4::apply8_short`]'s into `v{a4}` (8 bytes).
#[rustfmt::skip]
macro_rules! rgb_short_px {
    ($a0:literal, $a1:literal, $a2:literal, $a3:literal, $a4:literal, $a5:literal) => {
        concat!(
            "sqrdmulh v", $a0, ".4s, v", $a0, ".4s, v16.4s\n",
            "sqrdmulh v", $a1, ".4s, v", $a1, ".4s, v17.4s\n",
            "sqrdmulh v", $a2, ".4s, v", $a2, ".4s, v18.4s\n",
            "sqrdmulh v", $a3, ".4s, v", $a3, ".4s, v19.4s\n",
            "sqrdmulh v", $a4, ".4s, v", $a4, ".4s, v20.4s\n",
            "sqrdmulh v", $a5, ".4s, v", $a5, ".4s, v21.4s\n",
            "ssra v", $a0, ".4s, v", $a0, ".4s, #31\n",
            "ssra v", $a1, ".4s, v", $a1, ".4s, #31\n",
            "ssra v", $a2, ".4s, v", $a2, ".4s, #31\n",
            "ssra v", $a3, ".4s, v", $a3, ".4s, #31\n",
            "ssra v", $a4, ".4s, v", $a4, ".4s, #31\n",
            "ssra v", $a5, ".4s, v", $a5, ".4s, #31\n",
            "srshl v", $a0, ".4s, v", $a0, ".4s, v22.4s\n",
            "srshl v", $a1, ".4s, v", $a1, ".4s, v23.4s\n",
            "srshl v", $a2, ".4s, v", $a2, ".4s, v24.4s\n",
            "srshl v", $a3, ".4s, v", $a3, ".4s, v25.4s\n",
            "srshl v", $a4, ".4s, v", $a4, ".4s, v26.4s\n",
            "srshl v", $a5, ".4s, v", $a5, ".4s, v27.4s\n",
            "sqxtn v", $a0, ".4h, v", $a0, ".4s\n",
            "sqxtn2 v", $a0, ".8h, v", $a1, ".4s\n",
            "sqxtn v", $a2, ".4h, v", $a2, ".4s\n",
            "sqxtn2 v", $a2, ".8h, v", $a3, ".4s\n",
            "sqxtn v", $a4, ".4h, v", $a4, ".4s\n",
            "sqxtn2 v", $a4, ".8h, v", $a5, ".4s\n",
            "sqadd v", $a0, ".8h, v", $a0, ".8h, v28.8h\n",
            "sqadd v", $a2, ".8h, v", $a2, ".8h, v28.8h\n",
            "sqadd v", $a4, ".8h, v", $a4, ".8h, v28.8h\n",
            "sqxtn v", $a0, ".8b, v", $a0, ".8h\n",
            "sqxtn2 v", $a0, ".16b, v", $a2, ".8h\n",
            "sqxtn v", $a4, ".8b, v", $a4, ".8h\n",
            "smax v", $a0, ".16b, v", $a0, ".16b, v29.16b\n",
            "smax v", $a4, ".8b, v", $a4, ".8b, v29.8b\n",
        )
    };
}

/// Both pixels' short output stage after [`rgb_sdot_body`] (sums in `v4..v9` and
/// `v10..v15`): the 14 constant registers loaded from `{kp}` (the loads clobber the tap
/// rows `v24..v29`, no longer read), then [`rgb_short_px`] on each pixel.
#[rustfmt::skip]
macro_rules! rgb_short_pair {
    () => {
        concat!(
            "ld1 {{v16.4s, v17.4s, v18.4s, v19.4s}}, [{kp}], #64\n",
            "ld1 {{v20.4s, v21.4s, v22.4s, v23.4s}}, [{kp}], #64\n",
            "ld1 {{v24.4s, v25.4s, v26.4s, v27.4s}}, [{kp}], #64\n",
            "ld1 {{v28.16b, v29.16b}}, [{kp}]\n",
            rgb_short_px!("4", "5", "6", "7", "8", "9"),
            rgb_short_px!("10", "11", "12", "13", "14", "15"),
        )
    };
}

/// [`rgb_sdot2`] with the output stage in its short form in the same `asm!` block (every
/// group `short()`; `k`: [`Rq4::short_consts24`], loaded into `v16..v29` after the
/// `sdot`s): each pixel's 16 + 8 output bytes, as [`rgb_out`] gives them.
///
/// # Safety
/// The CPU has dotprod.
#[inline(always)]
#[rustfmt::skip]
unsafe fn rgb_sdot2_short(
    rows: [[int8x16_t; 3]; 2],
    wts: &[i8; 16 * 42],
    init: &[int32x4_t; 6],
    k: &[int32x4_t; 14],
) -> [(int8x16_t, int8x8_t); 2] {
    let (b00, b01, b10, b11): (int8x16_t, int8x8_t, int8x16_t, int8x8_t);
    // SAFETY: the block reads the 32 index bytes of `RGB27_IDX`, the 672 of `wts`, the 96 of
    // `init` and the 224 of `k`, and writes only the registers it names (outputs or
    // discarded); `sdot` by this function's contract.
    unsafe {
        core::arch::asm!(
            rgb_sdot_body!(),
            rgb_short_pair!(),
            ip = in(reg) RGB27_IDX.as_ptr(),
            bp = in(reg) init.as_ptr(),
            wp = inout(reg) wts.as_ptr() => _,
            kp = inout(reg) k.as_ptr() => _,
            inout("v24") rows[0][0] => _,
            inout("v25") rows[0][1] => _,
            inout("v26") rows[0][2] => _,
            inout("v27") rows[1][0] => _,
            inout("v28") rows[1][1] => _,
            inout("v29") rows[1][2] => _,
            out("v4") b00,
            out("v8") b01,
            out("v10") b10,
            out("v14") b11,
            out("v0") _, out("v1") _, out("v2") _, out("v3") _,
            out("v5") _, out("v6") _, out("v7") _, out("v9") _,
            out("v11") _, out("v12") _, out("v13") _, out("v15") _,
            out("v16") _, out("v17") _, out("v18") _, out("v19") _, out("v20") _,
            out("v21") _, out("v22") _, out("v23") _, out("v30") _, out("v31") _,
            options(pure, readonly, nostack, preserves_flags),
        );
    }
    [(b00, b01), (b10, b11)]
}

/// [`rgb_sdot2_short`] over a run of `pairs` pixel pairs along an output row in one `asm!`
/// loop: pixel `j`'s 3 kernel rows are the 16 bytes at `p[ky] + j·step`, each pair's
/// 2 × (16 + 8) output bytes go to `y` on. Against a call a pair, ~17 instructions of
/// loads, stores and loop a pair instead of ~55.
///
/// # Safety
/// The CPU has dotprod; `pairs ≥ 1`; `p[ky] + j·step` has 16 readable bytes for `j <
/// 2·pairs`; `y` has `48·pairs` writable bytes.
#[inline(always)]
#[rustfmt::skip]
unsafe fn rgb_sdot_run(
    p: [*const i8; 3],
    step: usize,
    pairs: usize,
    wts: &[i8; 16 * 42],
    init: &[int32x4_t; 6],
    k: &[int32x4_t; 14],
    y: *mut i8,
) {
    // SAFETY: each pair reads 16 bytes at `p[ky] + j·step` for its 2 pixels `j`, the 32
    // index bytes of `RGB27_IDX`, the 672 of `wts`, the 96 of `init` and the 224 of `k`, and
    // writes its 48 output bytes at `y` on — within this function's contract; every register
    // it writes is an output or clobber; `sdot` by the contract.
    unsafe {
        core::arch::asm!(
            "2:",
            "ldr q27, [{p0}, {step}]",
            "ldr q28, [{p1}, {step}]",
            "ldr q29, [{p2}, {step}]",
            "ld1 {{v24.16b}}, [{p0}], {step2}",
            "ld1 {{v25.16b}}, [{p1}], {step2}",
            "ld1 {{v26.16b}}, [{p2}], {step2}",
            "mov {wp}, {wb}",
            "mov {kp}, {kb}",
            rgb_sdot_body!(),
            rgb_short_pair!(),
            "st1 {{v4.16b}}, [{yp}], #16",
            "st1 {{v8.8b}}, [{yp}], #8",
            "st1 {{v10.16b}}, [{yp}], #16",
            "st1 {{v14.8b}}, [{yp}], #8",
            "subs {cnt}, {cnt}, #1",
            "b.ne 2b",
            ip = in(reg) RGB27_IDX.as_ptr(),
            bp = in(reg) init.as_ptr(),
            wb = in(reg) wts.as_ptr(),
            kb = in(reg) k.as_ptr(),
            wp = out(reg) _,
            kp = out(reg) _,
            p0 = inout(reg) p[0] => _,
            p1 = inout(reg) p[1] => _,
            p2 = inout(reg) p[2] => _,
            step = in(reg) step,
            step2 = in(reg) 2 * step,
            yp = inout(reg) y => _,
            cnt = inout(reg) pairs => _,
            out("v0") _, out("v1") _, out("v2") _, out("v3") _,
            out("v4") _, out("v5") _, out("v6") _, out("v7") _,
            out("v8") _, out("v9") _, out("v10") _, out("v11") _,
            out("v12") _, out("v13") _, out("v14") _, out("v15") _,
            out("v16") _, out("v17") _, out("v18") _, out("v19") _,
            out("v20") _, out("v21") _, out("v22") _, out("v23") _,
            out("v24") _, out("v25") _, out("v26") _, out("v27") _,
            out("v28") _, out("v29") _, out("v30") _, out("v31") _,
            options(nostack),
        );
    }
}

/// [`patches27`]'s `TBL` indices as one 32-byte array (low, then high group).
const RGB27_IDX: [u8; 32] = [
    0, 1, 2, 3, 4, 5, 6, 7, 8, 16, 17, 18, 19, 20, 21, 22, //
    23, 24, 32, 33, 34, 35, 36, 37, 38, 39, 40, 255, 255, 255, 255, 255,
];

/// The RGB 3×3 stem into 24 channels on `sdot` (dotprod): [`rgb24`]'s driver
/// ([`rgb_pairs`]: two output pixels at a time) over [`rgb_sdot2`], the weights packed once
/// a call as 6 groups of 4 channels × 7 vectors of 4 tap-major values a channel
/// (`[c0k0..c0k3 c1k0..c1k3 …]`, the 28th value 0); every weight, −128 too.
///
/// # Safety
/// The CPU has dotprod; `k = 3`, `cin = 3`, `cout = RGB_COUT`, [`lanes_fit`].
#[target_feature(enable = "neon")]
unsafe fn rgb24_dot(g: &Geom, x: &[i8], zx: i32, w: &[i8], rq: &[[i32; 3]], q: OutQ, y: &mut [i8]) {
    let w = &w[..RGB_COUT * 27];
    let mut wb = [0i8; 16 * 42];
    let mut corr = [0i32; LANES_COUT];
    tap_major(g, w, zx, &mut corr, |c, k, v| {
        wb[((c / 4) * 7 + k / 4) * 16 + (c % 4) * 4 + k % 4] = v;
    });
    let (r, init, short) = rgb_stage(rq, q, &corr);
    // SAFETY (both): dotprod (this function's contract); NEON; the shape is this function's.
    if short {
        let k = Rq4::short_consts24(&r);
        unsafe {
            rgb_pairs::<true>(
                g,
                x,
                zx,
                y,
                |rows| rgb_sdot2_short(rows, &wb, &init, &k),
                |p, step, pairs, out| rgb_sdot_run(p, step, pairs, &wb, &init, &k, out),
            )
        };
    } else {
        unsafe {
            rgb_pairs::<false>(
                g,
                x,
                zx,
                y,
                |rows| rgb_out(&r, false, rgb_sdot2(rows, &wb, &init)),
                |_, _, _, _| {},
            )
        };
    }
}

/// Most output channels of [`lanes`] (its weight copy is `32·cout` bytes on the stack).
const LANES_COUT: usize = 256;
/// Output pixels whose patches [`lanes`] gathers before running the channel groups.
const CHUNK: usize = 64;
/// A gathered patch: up to 32 values, and room for `gather_tm`'s 16-byte row stores.
const LROW: usize = 48;

/// `sdot` by element: lane `j` of `acc` += `Σ_b w[4j + b]·x[4L + b]` (the same 4 input
/// bytes for the 4 output channels of `w`).
macro_rules! sdot_lane {
    ($acc:expr, $w:expr, $x:expr, $l:literal) => {{
        let mut acc = $acc;
        // SAFETY: `sdot` (by element) reads and writes only these registers; callers run it
        // only when the CPU has dotprod (`lanes`' contract).
        unsafe {
            core::arch::asm!(
                ".arch_extension dotprod",
                concat!("sdot {acc:v}.4s, {a:v}.16b, {b:v}.4b[", $l, "]"),
                acc = inout(vreg) acc,
                a = in(vreg) $w,
                b = in(vreg) $x,
                options(pure, nomem, nostack, preserves_flags),
            );
        }
        acc
    }};
}

/// One pixel's 4 channel sums: `init + Σ_k w[k]·patch[k]` over `4·KG` values, `wv[g]`
/// holding the 4 channels' values `4g .. 4g + 4`.
///
/// # Safety
/// The CPU has dotprod; `patch` holds at least `4·KG` bytes.
#[inline(always)]
unsafe fn dot_lanes<const KG: usize>(
    init: int32x4_t,
    wv: &[int8x16_t; KG],
    patch: &[i8],
) -> int32x4_t {
    let patch = &patch[..4 * KG];
    // SAFETY: `patch` holds `4·KG ≥ 16` bytes (and 32 when `KG = 8`).
    let x0 = unsafe { vld1q_s8(patch.as_ptr()) };
    let mut a = init;
    a = sdot_lane!(a, wv[0], x0, "0");
    a = sdot_lane!(a, wv[1], x0, "1");
    a = sdot_lane!(a, wv[2], x0, "2");
    a = sdot_lane!(a, wv[3], x0, "3");
    if KG == 8 {
        // SAFETY: as above.
        let x1 = unsafe { vld1q_s8(patch.as_ptr().add(16)) };
        a = sdot_lane!(a, wv[4 % KG], x1, "0");
        a = sdot_lane!(a, wv[5 % KG], x1, "1");
        a = sdot_lane!(a, wv[6 % KG], x1, "2");
        a = sdot_lane!(a, wv[7 % KG], x1, "3");
    }
    a
}

/// The stem with the output channels in lanes (ncnn's layout for short patches): each
/// pixel's tap-major patch (`n ≤ 4·KG` values, zero point in the padding) is held in one or
/// two registers, and every 4 output channels take `KG` by-element `sdot`s, each adding 4
/// patch values times those channels' weights — no horizontal sums, no row tails (the
/// weights are zero past `n`, so whatever bytes follow a patch add nothing). The zero point
/// is `− zx·Σw` per channel, the sums start there; [`Rq4::apply4`] requantises 4 pixels × 4
/// channels at once. Channel groups run outermost over a chunk of gathered patches, so a
/// group's weights and constants stay in registers.
///
/// # Safety
/// The CPU has dotprod; `0 < cin·k·k ≤ 4·KG ≤ 32`, `cout % 4 == 0`, `cout ≤ LANES_COUT`,
/// `q.lo ≤ 127`, `zx` fits i8.
#[target_feature(enable = "neon")]
unsafe fn lanes<const KG: usize>(
    g: &Geom,
    x: &[i8],
    zx: i32,
    w: &[i8],
    rq: &[[i32; 3]],
    q: OutQ,
    y: &mut [i8],
) {
    let (kk, cin, cout) = (g.k * g.k, g.cin, g.cout);
    let n = cin * kk;
    let (w, rq) = (&w[..cout * n], &rq[..cout]);
    let npix = g.ho * g.wo;
    let y = &mut y[..npix * cout];
    // Weights tap-major and zero-padded to `4·KG`, as `[group][k / 4][channel % 4][k % 4]`;
    // `corr[c] = zx·Σw`.
    let mut wa = [0i8; 32 * LANES_COUT];
    let mut corr = [0i32; LANES_COUT];
    tap_major(g, w, zx, &mut corr, |c, k, v| {
        wa[(c / 4) * KG * 16 + (c % 4) * 4 + (k / 4) * 16 + k % 4] = v
    });
    let mut buf = [[0i8; LROW]; CHUNK];
    let mut p0 = 0;
    while p0 < npix {
        let np = CHUNK.min(npix - p0);
        for (i, patch) in buf.iter_mut().enumerate().take(np) {
            gather_tm(g, x, zx as i8, (p0 + i) / g.wo, (p0 + i) % g.wo, patch);
        }
        for cg in 0..cout / 4 {
            let r = Rq4::new(&rq[4 * cg..], q);
            let wg = &wa[cg * KG * 16..][..KG * 16];
            // SAFETY: `wg` holds `16·KG` bytes; `corr` at least `4·cg + 4` i32.
            let (wv, init) = unsafe {
                (
                    core::array::from_fn::<_, KG, _>(|j| vld1q_s8(wg.as_ptr().add(16 * j))),
                    vnegq_s32(vld1q_s32(corr.as_ptr().add(4 * cg))),
                )
            };
            let mut i = 0;
            while i + 4 <= np {
                // SAFETY: dotprod by this function's contract; each row holds 48 ≥ 4·KG.
                let acc = unsafe {
                    [
                        dot_lanes::<KG>(init, &wv, &buf[i]),
                        dot_lanes::<KG>(init, &wv, &buf[i + 1]),
                        dot_lanes::<KG>(init, &wv, &buf[i + 2]),
                        dot_lanes::<KG>(init, &wv, &buf[i + 3]),
                    ]
                };
                store4(y, (p0 + i) * cout + 4 * cg, cout, r.apply4(&acc));
                i += 4;
            }
            while i < np {
                // SAFETY: as above.
                let word = r.apply(unsafe { dot_lanes::<KG>(init, &wv, &buf[i]) });
                store1(y, (p0 + i) * cout + 4 * cg, word);
                i += 1;
            }
        }
        p0 += np;
    }
}

/// The 3×3 stems (the usual RGB one) with each kernel row read straight from the input: a
/// kernel row of a dense NHWC input is `3·cin ≤ 9` contiguous bytes, so one 16-byte load
/// holds it, and the weights are zero past `3·cin` (the next pixels' bytes in the load add
/// nothing). Rows that cross the padding, a sparse input (`in_stride ≠ cin`) or the last
/// bytes of `x` are gathered into a 16-byte slot with the zero point in the padding (as
/// [`lanes`] does). Tiles of 4 pixels of an output row are outermost, their 12 kernel rows
/// loaded once for every group of 4 output channels (`prep` readies them once a tile, for
/// every group); `dot(cg, prepped rows)` gives group `cg`'s sums
/// for the 4 pixels from 0 (the driver adds nothing: `init[cg]`, `bias − zx·Σw`, is the
/// caller's start), and the short output stage applies when its form allows.
///
/// # Safety
/// NEON available (baseline); `k = 3`, `cin ≤ 3`, [`lanes_fit`]; `corr[c] = zx·Σ_k w[c][k]`
/// for `c < cout`.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
unsafe fn rows3<T>(
    g: &Geom,
    x: &[i8],
    zx: i32,
    rq: &[[i32; 3]],
    q: OutQ,
    y: &mut [i8],
    corr: &[i32; LANES_COUT],
    prep: impl Fn(&[int8x16_t; 12]) -> T,
    mut dot: impl FnMut(usize, int32x4_t, &T) -> [int32x4_t; 4],
) {
    let (cin, cout) = (g.cin, g.cout);
    let rq = &rq[..cout];
    let y = &mut y[..g.ho * g.wo * cout];
    // Each group's output stage, its sums starting from `bias − zx·Σw`.
    let mut r = [Rq4::default(); LANES_COUT / 4];
    let mut init = [vdupq_n_s32(0); LANES_COUT / 4];
    let mut short = true;
    for (cg, (r, init)) in r.iter_mut().zip(&mut init).enumerate().take(cout / 4) {
        // SAFETY: NEON is baseline; `corr` holds `LANES_COUT ≥ 4·cg + 4` i32.
        unsafe {
            let c = vld1q_s32(corr.as_ptr().add(4 * cg));
            *r = Rq4::new(&rq[4 * cg..], q).with_bias(vnegq_s32(c));
            *init = r.take_bias();
            short &= r.short();
        }
    }
    let dense = g.in_stride == cin && g.c_off == 0;
    let zb = zx as i8;
    let mut slots = [[zb; 16]; 12];
    for oy in 0..g.ho {
        let iy: [Option<usize>; 3] =
            core::array::from_fn(|ky| Geom::tap(oy, ky, g.stride, g.pad, g.h));
        // With the 3 rows inside and a dense input, a pixel whose kernel rows start at column
        // `ix ≤ last` reads them straight from `x` (16 bytes each, in bounds).
        let mut base = [x.as_ptr(); 3];
        let mut fast = None;
        if let ([Some(a), Some(b), Some(c)], true, Some(room)) =
            (iy, dense, x.len().checked_sub(16))
        {
            // The last row's 16 bytes at column `ix` end last: they fit iff `ix ≤ last`.
            fast = (room / cin).checked_sub(c * g.w);
            for (p, r) in base.iter_mut().zip([a, b, c]) {
                // SAFETY: row `r < h`: `r·w·cin < x.len()` (`x` holds `h·w·cin`, dense).
                *p = unsafe { x.as_ptr().add(r * g.w * cin) };
            }
        }
        let mut ox = 0;
        while ox < g.wo {
            let m = 4.min(g.wo - ox);
            // The tile's 12 kernel rows (a short tile repeats its last pixel).
            // SAFETY: NEON is baseline on this target.
            let mut xv = unsafe { [vdupq_n_s8(0); 12] };
            // A whole tile of 4 pixels read straight from `x` (the interior of the image):
            // its first pixel's kernel rows start at column `ix`, the next ones `stride`
            // columns apart, the last at `ix + 3·stride ≤ last` (so every one lies in the
            // image and its 16 bytes in `x`).
            let ix = (ox * g.stride).checked_sub(g.pad);
            let direct = match (m, ix, fast) {
                (4, Some(ix), Some(last)) => {
                    let end = ix + 3 * g.stride;
                    end <= last && end + 3 <= g.w
                }
                _ => false,
            };
            if let (true, Some(ix)) = (direct, ix) {
                let step = g.stride * cin;
                for (ky, &b) in base.iter().enumerate() {
                    // SAFETY: pixel `k`'s row starts at column `ix + k·stride ≤ last`: 16
                    // bytes at `b + (ix + k·stride)·cin` lie in `x` (see `fast`).
                    unsafe {
                        let b = b.add(ix * cin);
                        xv[ky] = vld1q_s8(b);
                        xv[3 + ky] = vld1q_s8(b.add(step));
                        xv[6 + ky] = vld1q_s8(b.add(2 * step));
                        xv[9 + ky] = vld1q_s8(b.add(3 * step));
                    }
                }
            } else {
                for (k, xk) in xv.chunks_exact_mut(3).enumerate() {
                    let px = ox + k.min(m - 1);
                    let ix0 = (px * g.stride)
                        .checked_sub(g.pad)
                        .filter(|&ix| ix + 3 <= g.w);
                    if let (Some(ix), Some(last)) = (ix0, fast) {
                        if ix <= last {
                            for (v, &b) in xk.iter_mut().zip(&base) {
                                // SAFETY: `ix ≤ last`: 16 bytes at `b + ix·cin` lie in `x`.
                                *v = unsafe { vld1q_s8(b.add(ix * cin)) };
                            }
                            continue;
                        }
                    }
                    for (ky, v) in xk.iter_mut().enumerate() {
                        let slot = &mut slots[3 * k + ky];
                        slot.fill(zb);
                        if let Some(iy) = iy[ky] {
                            for kx in 0..3 {
                                if let Some(ix) = Geom::tap(px, kx, g.stride, g.pad, g.w) {
                                    let a = (iy * g.w + ix) * g.in_stride + g.c_off;
                                    slot[kx * cin..][..cin].copy_from_slice(&x[a..][..cin]);
                                }
                            }
                        }
                        // SAFETY: `slot` holds 16 bytes.
                        *v = unsafe { vld1q_s8(slot.as_ptr()) };
                    }
                }
            }
            let at = (oy * g.wo + ox) * cout;
            let xt = prep(&xv);
            if m == 4 {
                // The tile's 4 output pixels, `4·cout` bytes from `at` (checked once here).
                let yt = y[at..][..4 * cout].as_mut_ptr();
                // Each group's 4 pixels' words (`apply4`'s word `k`: pixel `k`) at `cout`
                // strides from channel `4·cg` of the first pixel.
                let put = |cg: usize, words: uint32x4_t| {
                    // SAFETY: `k·cout + 4·cg + 4 ≤ 4·cout` bytes from `yt` (`cg < cout / 4`);
                    // unaligned (any channel offset).
                    unsafe {
                        let p = yt.add(4 * cg);
                        (p as *mut u32).write_unaligned(vgetq_lane_u32::<0>(words));
                        (p.add(cout) as *mut u32).write_unaligned(vgetq_lane_u32::<1>(words));
                        (p.add(2 * cout) as *mut u32).write_unaligned(vgetq_lane_u32::<2>(words));
                        (p.add(3 * cout) as *mut u32).write_unaligned(vgetq_lane_u32::<3>(words));
                    }
                };
                // SAFETY (both loops): NEON is baseline on this target.
                if short {
                    for cg in 0..cout / 4 {
                        put(cg, unsafe { r[cg].apply4_short(&dot(cg, init[cg], &xt)) });
                    }
                } else {
                    for cg in 0..cout / 4 {
                        put(cg, unsafe { r[cg].apply4(&dot(cg, init[cg], &xt)) });
                    }
                }
            } else {
                for cg in 0..cout / 4 {
                    let acc = dot(cg, init[cg], &xt);
                    for (k, &a) in acc.iter().enumerate().take(m) {
                        // SAFETY: NEON is baseline on this target.
                        store1(y, at + k * cout + 4 * cg, unsafe { r[cg].apply(a) });
                    }
                }
            }
            ox += m;
        }
    }
}

/// [`rows3`] on `sdot` by element: a kernel row's `GR = ⌈3·cin / 4⌉` groups of 4 bytes feed
/// `GR` by-element `sdot`s, `3·GR` per pixel and 4 channels; RGB (`GR = 3`, 9 of 12 bytes a
/// row) packs a pixel's 27 values into 7 groups first ([`patches27`]), 7 `sdot`s, not 9.
///
/// # Safety
/// The CPU has dotprod; `k = 3`, `cin ≤ 3`, `GR = ⌈3·cin / 4⌉`, [`lanes_fit`].
#[target_feature(enable = "neon")]
unsafe fn rows3_dot<const GR: usize>(
    g: &Geom,
    x: &[i8],
    zx: i32,
    w: &[i8],
    rq: &[[i32; 3]],
    q: OutQ,
    y: &mut [i8],
) {
    let run = 3 * g.cin;
    // `[group][ky][j / 4][channel % 4][j % 4]` for `j = kx·cin + ci < run`, zero past it;
    // `corr[c] = zx·Σw`.
    let mut wa = [0i8; 48 * LANES_COUT / 4 * 3];
    let mut corr = [0i32; LANES_COUT];
    // RGB (`GR = 3`): the 27 values tap-major in 7 groups of 4 (`[group][k / 4][channel %
    // 4][k % 4]`, the 28th zero), for the tile's patches ([`patches27`]).
    let rgb = GR == 3;
    tap_major(g, &w[..g.cout * 3 * run], zx, &mut corr, |c, k, v| {
        let (ky, j) = (k / run, k % run);
        let at = if rgb {
            k / 4 * 16 + (c % 4) * 4 + k % 4
        } else {
            (ky * GR + j / 4) * 16 + (c % 4) * 4 + j % 4
        };
        wa[(c / 4) * 48 * GR + at] = v
    });
    // SAFETY: this function's contract is `rows3`'s (with `corr` filled above); dotprod
    // (this function's contract); a group's `wg` holds its 7 (RGB) or `3·GR` vectors.
    unsafe {
        if rgb {
            return rows3(g, x, zx, rq, q, y, &corr, patches27, |cg, init, xv| {
                let wg = &wa[cg * 48 * GR..][..48 * GR];
                let px = |k: usize| dot_patch(init, wg, xv[2 * k], xv[2 * k + 1]);
                [px(0), px(1), px(2), px(3)]
            });
        }
        rows3(
            g,
            x,
            zx,
            rq,
            q,
            y,
            &corr,
            |xv| *xv,
            |cg, init, xv| {
                let wg = &wa[cg * 48 * GR..][..48 * GR];
                let px =
                    |k: usize| dot_rows::<GR>(init, wg, [xv[3 * k], xv[3 * k + 1], xv[3 * k + 2]]);
                [px(0), px(1), px(2), px(3)]
            },
        )
    }
}

/// A tile's 4 RGB patches from its 12 kernel rows (9 values each at bytes 0..9): pixel
/// `k`'s 27 values tap-major in `out[2k]` (values 0..16) and `out[2k + 1]` (16..27, zero
/// after), by two 3-register `TBL`s; the rest of `out` is unused.
#[inline(always)]
fn patches27(xv: &[int8x16_t; 12]) -> [int8x16_t; 12] {
    const LO: [u8; 16] = [0, 1, 2, 3, 4, 5, 6, 7, 8, 16, 17, 18, 19, 20, 21, 22];
    const HI: [u8; 16] = [
        23, 24, 32, 33, 34, 35, 36, 37, 38, 39, 40, 255, 255, 255, 255, 255,
    ];
    let mut out = *xv;
    // SAFETY: NEON is baseline on this target; `LO` and `HI` hold 16 bytes.
    unsafe {
        let (lo, hi) = (vld1q_u8(LO.as_ptr()), vld1q_u8(HI.as_ptr()));
        for k in 0..4 {
            let t = int8x16x3_t(xv[3 * k], xv[3 * k + 1], xv[3 * k + 2]);
            out[2 * k] = vqtbl3q_s8(t, lo);
            out[2 * k + 1] = vqtbl3q_s8(t, hi);
        }
    }
    out
}

/// One pixel's 4 channel sums over its RGB patch ([`patches27`]: `p0`, `p1`): `init + Σ`
/// of 7 by-element `sdot`s (`wg`'s vector `j`: the 4 channels' values `4j .. 4j + 4`).
///
/// # Safety
/// The CPU has dotprod; `wg` holds 7 vectors.
#[inline(always)]
unsafe fn dot_patch(init: int32x4_t, wg: &[i8], p0: int8x16_t, p1: int8x16_t) -> int32x4_t {
    let wg = &wg[..16 * 7];
    // SAFETY: vector `v < 7` of `wg` (sliced above).
    let wv = |v: usize| unsafe { vld1q_s8(wg.as_ptr().add(16 * v)) };
    let mut a = init;
    a = sdot_lane!(a, wv(0), p0, "0");
    a = sdot_lane!(a, wv(1), p0, "1");
    a = sdot_lane!(a, wv(2), p0, "2");
    a = sdot_lane!(a, wv(3), p0, "3");
    a = sdot_lane!(a, wv(4), p1, "0");
    a = sdot_lane!(a, wv(5), p1, "1");
    a = sdot_lane!(a, wv(6), p1, "2");
    a
}

/// One pixel's 4 channel sums over its 3 kernel rows `xv`: `init + Σ` of `GR` by-element
/// `sdot`s per row (`wg`'s vector `ky·GR + g`: the 4 channels' bytes of group `g` of row
/// `ky`).
///
/// # Safety
/// The CPU has dotprod; `wg` holds `3·GR` vectors.
#[inline(always)]
unsafe fn dot_rows<const GR: usize>(init: int32x4_t, wg: &[i8], xv: [int8x16_t; 3]) -> int32x4_t {
    let wg = &wg[..48 * GR];
    // SAFETY: vector `v < 3·GR` of `wg` (sliced above).
    let wv = |v: usize| unsafe { vld1q_s8(wg.as_ptr().add(16 * v)) };
    let mut a = init;
    for (ky, x) in xv.into_iter().enumerate() {
        a = sdot_lane!(a, wv(ky * GR), x, "0");
        if GR > 1 {
            a = sdot_lane!(a, wv(ky * GR + 1), x, "1");
        }
        if GR > 2 {
            a = sdot_lane!(a, wv(ky * GR + 2), x, "2");
        }
    }
    a
}

/// [`rows3`] on plain NEON: each kernel row widened to i16 once a tile (`3·cin ≤ 9` values,
/// the ninths gathered: [`widen`]), then one by-element `SMLAL` per value with its 4
/// channels' weights (i16, `[group][ky][j][channel % 4]`): `9·cin` per pixel and 4
/// channels, none on padding.
///
/// # Safety
/// NEON available (baseline); `k = 3`, `RUN = 3·cin`, [`lanes_fit`].
#[target_feature(enable = "neon")]
unsafe fn rows3_h<const RUN: usize>(
    g: &Geom,
    x: &[i8],
    zx: i32,
    w: &[i8],
    rq: &[[i32; 3]],
    q: OutQ,
    y: &mut [i8],
) {
    let mut wa = [0i16; 3 * 9 * LANES_COUT];
    let mut corr = [0i32; LANES_COUT];
    tap_major(g, &w[..g.cout * 3 * RUN], zx, &mut corr, |c, k, v| {
        wa[(c / 4) * 12 * RUN + k * 4 + c % 4] = v as i16
    });
    // SAFETY: this function's contract is `rows3`'s (with `corr` filled above).
    unsafe {
        rows3(
            g,
            x,
            zx,
            rq,
            q,
            y,
            &corr,
            widen::<RUN>,
            |cg, init, (lo, n)| {
                let wg = &wa[cg * 12 * RUN..][..12 * RUN];
                if RUN == 9 {
                    // SAFETY: `wg` holds the group's `12·9` halfwords.
                    return dot_rows9(init, wg.as_ptr(), lo, n);
                }
                // Row `i = 3·pixel + ky`'s ninth value is lane `i % 8` of `n[i / 8]`.
                let [a, b] = *n;
                [
                    dot_rows_h::<RUN, 0, 1, 2>(init, wg, [lo[0], lo[1], lo[2]], [a, a, a]),
                    dot_rows_h::<RUN, 3, 4, 5>(init, wg, [lo[3], lo[4], lo[5]], [a, a, a]),
                    dot_rows_h::<RUN, 6, 7, 0>(init, wg, [lo[6], lo[7], lo[8]], [a, a, b]),
                    dot_rows_h::<RUN, 1, 2, 3>(init, wg, [lo[9], lo[10], lo[11]], [b, b, b]),
                ]
            },
        )
    }
}

/// A tile's 12 kernel rows (`3·pixel + ky`) widened to i16 for [`dot_rows_h`]: each row's
/// first 8 values, and (`RUN = 9`) the 12 ninth values gathered into two vectors (lane
/// `i % 8` of vector `i / 8` for row `i`, by one `TBL` and two `TBX` of 4 rows each), so a
/// tile keeps 14 registers, not 24, across its channel groups.
#[inline(always)]
fn widen<const RUN: usize>(xv: &[int8x16_t; 12]) -> ([int16x8_t; 12], [int16x8_t; 2]) {
    /// Byte 8 of table row `r` into lane `4·q + r` (`q` the 4-row quarter), 255 elsewhere.
    const NINTH: [[u8; 16]; 3] = {
        let mut t = [[255u8; 16]; 3];
        let mut q = 0;
        while q < 3 {
            let mut r = 0;
            while r < 4 {
                t[q][4 * q + r] = (16 * r + 8) as u8;
                r += 1;
            }
            q += 1;
        }
        t
    };
    // SAFETY: NEON is baseline on this target; `NINTH[q]` holds 16 bytes.
    unsafe {
        let lo = xv.map(|v| vmovl_s8(vget_low_s8(v)));
        if RUN <= 8 {
            return (lo, [vdupq_n_s16(0); 2]);
        }
        let idx = |q: usize| vld1q_u8(NINTH[q].as_ptr());
        let t = vqtbl4q_s8(int8x16x4_t(xv[0], xv[1], xv[2], xv[3]), idx(0));
        let t = vqtbx4q_s8(t, int8x16x4_t(xv[4], xv[5], xv[6], xv[7]), idx(1));
        let t = vqtbx4q_s8(t, int8x16x4_t(xv[8], xv[9], xv[10], xv[11]), idx(2));
        (lo, [vmovl_s8(vget_low_s8(t)), vmovl_high_s8(t)])
    }
}

/// [`dot_rows_h`] for the 4 pixels of a tile with `RUN = 9` (RGB) as one `asm!` block: the
/// 27 taps' weights (4 halfwords each, `wg[4·k ..]`) streamed in pairs, 108 by-element
/// `SMLAL`s on the rows [`widen`] laid out (row `i = 3·pixel + ky`: `lo[i]`, its ninth
/// value lane `i % 8` of `n[i / 8]`). Written as intrinsics, LLVM loads all 27 weight rows
/// up front and spills the tile's rows around them.
///
/// # Safety
/// `wg` points at `12·9` readable halfwords.
#[inline(always)]
#[rustfmt::skip]
unsafe fn dot_rows9(
    init: int32x4_t,
    wg: *const i16,
    lo: &[int16x8_t; 12],
    n: &[int16x8_t; 2],
) -> [int32x4_t; 4] {
    let mut a = [init; 4];
    // SAFETY: the block reads the `12·9` halfwords at `wg` (offsets `8·k < 216` bytes,
    // this function's contract) and writes only its register operands; by-element `SMLAL`
    // on halfwords takes its element register from v0..v15 (`vreg_low16`).
    unsafe {
        core::arch::asm!(
            "ldp {w0:d}, {w1:d}, [{wp}, #0]\n",
            "smlal {a0:v}.4s, {w0:v}.4h, {x0:v}.h[0]\n",
            "smlal {a1:v}.4s, {w0:v}.4h, {x3:v}.h[0]\n",
            "smlal {a2:v}.4s, {w0:v}.4h, {x6:v}.h[0]\n",
            "smlal {a3:v}.4s, {w0:v}.4h, {x9:v}.h[0]\n",
            "smlal {a0:v}.4s, {w1:v}.4h, {x0:v}.h[1]\n",
            "smlal {a1:v}.4s, {w1:v}.4h, {x3:v}.h[1]\n",
            "smlal {a2:v}.4s, {w1:v}.4h, {x6:v}.h[1]\n",
            "smlal {a3:v}.4s, {w1:v}.4h, {x9:v}.h[1]\n",
            "ldp {w0:d}, {w1:d}, [{wp}, #16]\n",
            "smlal {a0:v}.4s, {w0:v}.4h, {x0:v}.h[2]\n",
            "smlal {a1:v}.4s, {w0:v}.4h, {x3:v}.h[2]\n",
            "smlal {a2:v}.4s, {w0:v}.4h, {x6:v}.h[2]\n",
            "smlal {a3:v}.4s, {w0:v}.4h, {x9:v}.h[2]\n",
            "smlal {a0:v}.4s, {w1:v}.4h, {x0:v}.h[3]\n",
            "smlal {a1:v}.4s, {w1:v}.4h, {x3:v}.h[3]\n",
            "smlal {a2:v}.4s, {w1:v}.4h, {x6:v}.h[3]\n",
            "smlal {a3:v}.4s, {w1:v}.4h, {x9:v}.h[3]\n",
            "ldp {w0:d}, {w1:d}, [{wp}, #32]\n",
            "smlal {a0:v}.4s, {w0:v}.4h, {x0:v}.h[4]\n",
            "smlal {a1:v}.4s, {w0:v}.4h, {x3:v}.h[4]\n",
            "smlal {a2:v}.4s, {w0:v}.4h, {x6:v}.h[4]\n",
            "smlal {a3:v}.4s, {w0:v}.4h, {x9:v}.h[4]\n",
            "smlal {a0:v}.4s, {w1:v}.4h, {x0:v}.h[5]\n",
            "smlal {a1:v}.4s, {w1:v}.4h, {x3:v}.h[5]\n",
            "smlal {a2:v}.4s, {w1:v}.4h, {x6:v}.h[5]\n",
            "smlal {a3:v}.4s, {w1:v}.4h, {x9:v}.h[5]\n",
            "ldp {w0:d}, {w1:d}, [{wp}, #48]\n",
            "smlal {a0:v}.4s, {w0:v}.4h, {x0:v}.h[6]\n",
            "smlal {a1:v}.4s, {w0:v}.4h, {x3:v}.h[6]\n",
            "smlal {a2:v}.4s, {w0:v}.4h, {x6:v}.h[6]\n",
            "smlal {a3:v}.4s, {w0:v}.4h, {x9:v}.h[6]\n",
            "smlal {a0:v}.4s, {w1:v}.4h, {x0:v}.h[7]\n",
            "smlal {a1:v}.4s, {w1:v}.4h, {x3:v}.h[7]\n",
            "smlal {a2:v}.4s, {w1:v}.4h, {x6:v}.h[7]\n",
            "smlal {a3:v}.4s, {w1:v}.4h, {x9:v}.h[7]\n",
            "ldp {w0:d}, {w1:d}, [{wp}, #64]\n",
            "smlal {a0:v}.4s, {w0:v}.4h, {n0:v}.h[0]\n",
            "smlal {a1:v}.4s, {w0:v}.4h, {n0:v}.h[3]\n",
            "smlal {a2:v}.4s, {w0:v}.4h, {n0:v}.h[6]\n",
            "smlal {a3:v}.4s, {w0:v}.4h, {n1:v}.h[1]\n",
            "smlal {a0:v}.4s, {w1:v}.4h, {x1:v}.h[0]\n",
            "smlal {a1:v}.4s, {w1:v}.4h, {x4:v}.h[0]\n",
            "smlal {a2:v}.4s, {w1:v}.4h, {x7:v}.h[0]\n",
            "smlal {a3:v}.4s, {w1:v}.4h, {x10:v}.h[0]\n",
            "ldp {w0:d}, {w1:d}, [{wp}, #80]\n",
            "smlal {a0:v}.4s, {w0:v}.4h, {x1:v}.h[1]\n",
            "smlal {a1:v}.4s, {w0:v}.4h, {x4:v}.h[1]\n",
            "smlal {a2:v}.4s, {w0:v}.4h, {x7:v}.h[1]\n",
            "smlal {a3:v}.4s, {w0:v}.4h, {x10:v}.h[1]\n",
            "smlal {a0:v}.4s, {w1:v}.4h, {x1:v}.h[2]\n",
            "smlal {a1:v}.4s, {w1:v}.4h, {x4:v}.h[2]\n",
            "smlal {a2:v}.4s, {w1:v}.4h, {x7:v}.h[2]\n",
            "smlal {a3:v}.4s, {w1:v}.4h, {x10:v}.h[2]\n",
            "ldp {w0:d}, {w1:d}, [{wp}, #96]\n",
            "smlal {a0:v}.4s, {w0:v}.4h, {x1:v}.h[3]\n",
            "smlal {a1:v}.4s, {w0:v}.4h, {x4:v}.h[3]\n",
            "smlal {a2:v}.4s, {w0:v}.4h, {x7:v}.h[3]\n",
            "smlal {a3:v}.4s, {w0:v}.4h, {x10:v}.h[3]\n",
            "smlal {a0:v}.4s, {w1:v}.4h, {x1:v}.h[4]\n",
            "smlal {a1:v}.4s, {w1:v}.4h, {x4:v}.h[4]\n",
            "smlal {a2:v}.4s, {w1:v}.4h, {x7:v}.h[4]\n",
            "smlal {a3:v}.4s, {w1:v}.4h, {x10:v}.h[4]\n",
            "ldp {w0:d}, {w1:d}, [{wp}, #112]\n",
            "smlal {a0:v}.4s, {w0:v}.4h, {x1:v}.h[5]\n",
            "smlal {a1:v}.4s, {w0:v}.4h, {x4:v}.h[5]\n",
            "smlal {a2:v}.4s, {w0:v}.4h, {x7:v}.h[5]\n",
            "smlal {a3:v}.4s, {w0:v}.4h, {x10:v}.h[5]\n",
            "smlal {a0:v}.4s, {w1:v}.4h, {x1:v}.h[6]\n",
            "smlal {a1:v}.4s, {w1:v}.4h, {x4:v}.h[6]\n",
            "smlal {a2:v}.4s, {w1:v}.4h, {x7:v}.h[6]\n",
            "smlal {a3:v}.4s, {w1:v}.4h, {x10:v}.h[6]\n",
            "ldp {w0:d}, {w1:d}, [{wp}, #128]\n",
            "smlal {a0:v}.4s, {w0:v}.4h, {x1:v}.h[7]\n",
            "smlal {a1:v}.4s, {w0:v}.4h, {x4:v}.h[7]\n",
            "smlal {a2:v}.4s, {w0:v}.4h, {x7:v}.h[7]\n",
            "smlal {a3:v}.4s, {w0:v}.4h, {x10:v}.h[7]\n",
            "smlal {a0:v}.4s, {w1:v}.4h, {n0:v}.h[1]\n",
            "smlal {a1:v}.4s, {w1:v}.4h, {n0:v}.h[4]\n",
            "smlal {a2:v}.4s, {w1:v}.4h, {n0:v}.h[7]\n",
            "smlal {a3:v}.4s, {w1:v}.4h, {n1:v}.h[2]\n",
            "ldp {w0:d}, {w1:d}, [{wp}, #144]\n",
            "smlal {a0:v}.4s, {w0:v}.4h, {x2:v}.h[0]\n",
            "smlal {a1:v}.4s, {w0:v}.4h, {x5:v}.h[0]\n",
            "smlal {a2:v}.4s, {w0:v}.4h, {x8:v}.h[0]\n",
            "smlal {a3:v}.4s, {w0:v}.4h, {x11:v}.h[0]\n",
            "smlal {a0:v}.4s, {w1:v}.4h, {x2:v}.h[1]\n",
            "smlal {a1:v}.4s, {w1:v}.4h, {x5:v}.h[1]\n",
            "smlal {a2:v}.4s, {w1:v}.4h, {x8:v}.h[1]\n",
            "smlal {a3:v}.4s, {w1:v}.4h, {x11:v}.h[1]\n",
            "ldp {w0:d}, {w1:d}, [{wp}, #160]\n",
            "smlal {a0:v}.4s, {w0:v}.4h, {x2:v}.h[2]\n",
            "smlal {a1:v}.4s, {w0:v}.4h, {x5:v}.h[2]\n",
            "smlal {a2:v}.4s, {w0:v}.4h, {x8:v}.h[2]\n",
            "smlal {a3:v}.4s, {w0:v}.4h, {x11:v}.h[2]\n",
            "smlal {a0:v}.4s, {w1:v}.4h, {x2:v}.h[3]\n",
            "smlal {a1:v}.4s, {w1:v}.4h, {x5:v}.h[3]\n",
            "smlal {a2:v}.4s, {w1:v}.4h, {x8:v}.h[3]\n",
            "smlal {a3:v}.4s, {w1:v}.4h, {x11:v}.h[3]\n",
            "ldp {w0:d}, {w1:d}, [{wp}, #176]\n",
            "smlal {a0:v}.4s, {w0:v}.4h, {x2:v}.h[4]\n",
            "smlal {a1:v}.4s, {w0:v}.4h, {x5:v}.h[4]\n",
            "smlal {a2:v}.4s, {w0:v}.4h, {x8:v}.h[4]\n",
            "smlal {a3:v}.4s, {w0:v}.4h, {x11:v}.h[4]\n",
            "smlal {a0:v}.4s, {w1:v}.4h, {x2:v}.h[5]\n",
            "smlal {a1:v}.4s, {w1:v}.4h, {x5:v}.h[5]\n",
            "smlal {a2:v}.4s, {w1:v}.4h, {x8:v}.h[5]\n",
            "smlal {a3:v}.4s, {w1:v}.4h, {x11:v}.h[5]\n",
            "ldp {w0:d}, {w1:d}, [{wp}, #192]\n",
            "smlal {a0:v}.4s, {w0:v}.4h, {x2:v}.h[6]\n",
            "smlal {a1:v}.4s, {w0:v}.4h, {x5:v}.h[6]\n",
            "smlal {a2:v}.4s, {w0:v}.4h, {x8:v}.h[6]\n",
            "smlal {a3:v}.4s, {w0:v}.4h, {x11:v}.h[6]\n",
            "smlal {a0:v}.4s, {w1:v}.4h, {x2:v}.h[7]\n",
            "smlal {a1:v}.4s, {w1:v}.4h, {x5:v}.h[7]\n",
            "smlal {a2:v}.4s, {w1:v}.4h, {x8:v}.h[7]\n",
            "smlal {a3:v}.4s, {w1:v}.4h, {x11:v}.h[7]\n",
            "ldr {w0:d}, [{wp}, #208]\n",
            "smlal {a0:v}.4s, {w0:v}.4h, {n0:v}.h[2]\n",
            "smlal {a1:v}.4s, {w0:v}.4h, {n0:v}.h[5]\n",
            "smlal {a2:v}.4s, {w0:v}.4h, {n1:v}.h[0]\n",
            "smlal {a3:v}.4s, {w0:v}.4h, {n1:v}.h[3]\n",
            wp = in(reg) wg,
            x0 = in(vreg_low16) lo[0],
            x1 = in(vreg_low16) lo[1],
            x2 = in(vreg_low16) lo[2],
            x3 = in(vreg_low16) lo[3],
            x4 = in(vreg_low16) lo[4],
            x5 = in(vreg_low16) lo[5],
            x6 = in(vreg_low16) lo[6],
            x7 = in(vreg_low16) lo[7],
            x8 = in(vreg_low16) lo[8],
            x9 = in(vreg_low16) lo[9],
            x10 = in(vreg_low16) lo[10],
            x11 = in(vreg_low16) lo[11],
            n0 = in(vreg_low16) n[0],
            n1 = in(vreg_low16) n[1],
            a0 = inout(vreg) a[0],
            a1 = inout(vreg) a[1],
            a2 = inout(vreg) a[2],
            a3 = inout(vreg) a[3],
            w0 = out(vreg) _,
            w1 = out(vreg) _,
            options(pure, readonly, nostack, preserves_flags),
        );
    }
    a
}

/// One pixel's 4 channel sums over its 3 kernel rows (`lo`: each row's first 8 values
/// widened; row `ky`'s ninth is lane `L{ky}` of `ninth[ky]`, see [`widen`]): `init +
/// Σ_j w[ky][j]·x[ky][j]`, `RUN` by-element `SMLAL`s per row.
#[inline(always)]
fn dot_rows_h<const RUN: usize, const L0: i32, const L1: i32, const L2: i32>(
    init: int32x4_t,
    wg: &[i16],
    lo: [int16x8_t; 3],
    ninth: [int16x8_t; 3],
) -> int32x4_t {
    let wg = &wg[..12 * RUN];
    // SAFETY: NEON is baseline on this target; 4 halfwords at `4·v + 4 ≤ 12·RUN` of `wg`.
    unsafe {
        let wv = |v: usize| vld1_s16(wg.as_ptr().add(4 * v));
        let mut a = init;
        macro_rules! tap {
            ($ky:literal, $j:literal, $v:expr, $l:tt) => {
                if $j < RUN {
                    a = vmlal_laneq_s16::<$l>(a, wv($ky * RUN + $j), $v);
                }
            };
        }
        macro_rules! row {
            ($ky:literal, $l9:tt) => {
                tap!($ky, 0, lo[$ky], 0);
                tap!($ky, 1, lo[$ky], 1);
                tap!($ky, 2, lo[$ky], 2);
                tap!($ky, 3, lo[$ky], 3);
                tap!($ky, 4, lo[$ky], 4);
                tap!($ky, 5, lo[$ky], 5);
                tap!($ky, 6, lo[$ky], 6);
                tap!($ky, 7, lo[$ky], 7);
                tap!($ky, 8, ninth[$ky], $l9);
            };
        }
        row!(0, L0);
        row!(1, L1);
        row!(2, L2);
        a
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::testnet::Rng;

    /// The channels-in-lanes stems ([`lanes_h`], [`lanes`] at every patch width and [`rows3`]
    /// on both tables for the 3×3 kernels: rows read straight from dense inputs, gathered at
    /// the edges and from sparse ones) against the reference on random short-patch stems:
    /// kernels 1..=3 (and 5 with one input channel), padding, strides 1 and 2, channel
    /// offsets, output channels 4..=64 in fours (and some not, which take the GEMM), random
    /// zero points incl. both ends, multipliers incl. `MIN`, shifts −35..34, both floors. The
    /// `sdot` ones where the CPU has dotprod (`qemu-aarch64 -cpu max`).
    /// Seed: `LORKD_SEED`.
    #[test]
    fn lanes_stem_is_bit_exact() {
        // The 16-bit lanes everywhere; the `sdot` ones where the CPU has dotprod.
        let mut twins: Vec<super::super::super::ConvI8> = vec![conv_i8];
        if super::super::dotprod_detected() {
            twins.push(conv_i8_sdot);
        } else {
            println!("no dotprod: the sdot lanes stem is not installed here");
        }
        let mut r = Rng::new(crate::test_seed());
        let mut taken = 0;
        for case in 0..400 {
            let (k, cin) = if case % 10 == 9 {
                (5, 1)
            } else {
                (1 + r.below(3), 1 + r.below(3))
            };
            let pad = r.below(k / 2 + 1);
            let stride = 1 + r.below(2);
            let cout = if case % 8 == 7 {
                1 + r.below(20)
            } else {
                4 * (1 + r.below(16))
            };
            let extra = r.below(3);
            let (h, w) = (k + r.below(9), k + r.below(9));
            let g = Geom {
                h,
                w,
                in_stride: cin + extra,
                c_off: r.below(extra + 1),
                cin,
                ho: Geom::out_dim(h, k, stride, pad),
                wo: Geom::out_dim(w, k, stride, pad),
                cout,
                k,
                stride,
                pad,
            };
            let x: Vec<i8> = (0..g.in_len()).map(|_| r.below(256) as i8).collect();
            let wt: Vec<i8> = (0..cout * cin * k * k)
                .map(|_| r.below(256) as i8)
                .collect();
            let zx = [-128, 127, r.below(256) as i32 - 128][r.below(3)];
            let rq: Vec<[i32; 3]> = (0..cout)
                .map(|_| {
                    let mult = match r.below(30) {
                        0 => i32::MIN,
                        1 => r.below(1 << 31) as i32,
                        _ => (1 << 30) + r.below(1 << 30) as i32,
                    };
                    let shift = if r.below(10) == 0 {
                        r.below(70) as i32 - 35
                    } else {
                        r.below(14) as i32 - 12
                    };
                    [r.below(1 << 20) as i32 - (1 << 19), mult, shift]
                })
                .collect();
            let q = random_out_q(&mut r);
            let n = g.out_len();
            let (mut y0, mut y1) = (vec![0x55i8; n], vec![0x55i8; n]);
            reference::conv::conv_i8(&g, &x, zx, &wt, &rq, q, &mut y0);
            for (t, f) in twins.iter().enumerate() {
                y1.fill(0x55);
                f(&g, &x, zx, &wt, &rq, q, &mut y1);
                assert_eq!(y0, y1, "case {case}, twin {t}: {g:?} zx {zx} {q:?}");
            }
            taken += usize::from(cout % 4 == 0 && n > 0);
        }
        assert!(taken > 300, "{taken}");
    }

    /// A random output stage: any zero point, with or without a fused ReLU.
    fn random_out_q(r: &mut Rng) -> OutQ {
        let zy = r.below(256) as i32 - 128;
        OutQ {
            zero_point: zy,
            lo: if r.below(2) == 0 { -128 } else { zy },
        }
    }

    /// The product-pair RGB stem ([`rgb24`]: 3×3 over 3 channels into 24), and its `sdot`
    /// twin ([`rgb24_dot`], where the CPU has dotprod), against the reference: images 1×1 to
    /// 20×20 (odd widths: a lone last pixel), strides 1 and 2, padding 0 and 1, dense and
    /// sparse or offset inputs, zero points incl. both ends, weights in ±127 (and a quarter
    /// of the cases with −128s, which `rgb24` refuses and `rgb24_dot` takes), both
    /// output-stage forms. Seed: `LORKD_SEED`.
    #[test]
    fn rgb24_stem_is_bit_exact() {
        let dotprod = super::super::dotprod_detected();
        if !dotprod {
            println!("no dotprod: the sdot RGB stem (rgb24_dot) is not tried here");
        }
        let mut r = Rng::new(crate::test_seed());
        let (mut ran, mut refused) = (0, 0);
        for case in 0..300 {
            let (stride, pad) = (1 + r.below(2), r.below(2));
            let extra = if r.below(3) == 0 { 1 + r.below(2) } else { 0 };
            let (h, w) = (1 + r.below(20), 1 + r.below(20));
            let g = Geom {
                h,
                w,
                in_stride: 3 + extra,
                c_off: r.below(extra + 1),
                cin: 3,
                ho: Geom::out_dim(h, 3, stride, pad),
                wo: Geom::out_dim(w, 3, stride, pad),
                cout: RGB_COUT,
                k: 3,
                stride,
                pad,
            };
            let x: Vec<i8> = (0..g.in_len()).map(|_| r.below(256) as i8).collect();
            let with_min = case % 4 == 3;
            let wt: Vec<i8> = (0..RGB_COUT * 27)
                .map(|_| match (with_min, r.below(40)) {
                    (true, 0) => -128,
                    _ => (r.below(255) as i32 - 127) as i8,
                })
                .collect();
            let zx = [-128, 127, r.below(256) as i32 - 128][r.below(3)];
            let short = r.below(2) == 0;
            let rq: Vec<[i32; 3]> = (0..RGB_COUT)
                .map(|_| {
                    let mult = (1 << 30) + r.below(1 << 30) as i32;
                    let shift = if short {
                        -1 - r.below(12) as i32
                    } else {
                        r.below(20) as i32 - 12
                    };
                    [r.below(1 << 20) as i32 - (1 << 19), mult, shift]
                })
                .collect();
            let q = random_out_q(&mut r);
            let n = g.out_len();
            let (mut y0, mut y1) = (vec![0x55i8; n], vec![0x55i8; n]);
            reference::conv::conv_i8(&g, &x, zx, &wt, &rq, q, &mut y0);
            // SAFETY: NEON is baseline; the shape is `rgb24`'s (`lanes_fit` holds: 27 values,
            // 24 channels, `q.lo ≤ 127`, `zx` in i8).
            let took = unsafe { rgb24(&g, &x, zx, &wt, &rq, q, &mut y1) };
            if took {
                ran += usize::from(n > 0);
                assert_eq!(y0, y1, "case {case}: {g:?} zx {zx} {q:?}");
            } else {
                assert!(wt.contains(&i8::MIN), "case {case} refused");
                assert!(
                    y1.iter().all(|&v| v == 0x55),
                    "case {case}: refused but wrote"
                );
                refused += 1;
            }
            // The table's slot gives the reference's bytes either way.
            y1.fill(0x55);
            conv_i8(&g, &x, zx, &wt, &rq, q, &mut y1);
            assert_eq!(y0, y1, "case {case}, conv_i8: {g:?}");
            if dotprod {
                // The `sdot` twin takes every weight, −128 too; and its table's slot.
                y1.fill(0x55);
                // SAFETY: dotprod detected; the shape as above.
                unsafe { rgb24_dot(&g, &x, zx, &wt, &rq, q, &mut y1) };
                assert_eq!(y0, y1, "case {case}, rgb24_dot: {g:?} zx {zx} {q:?}");
                y1.fill(0x55);
                conv_i8_sdot(&g, &x, zx, &wt, &rq, q, &mut y1);
                assert_eq!(y0, y1, "case {case}, conv_i8_sdot: {g:?}");
            }
        }
        assert!(ran > 150 && refused > 30, "{ran} ran, {refused} refused");
    }
}
