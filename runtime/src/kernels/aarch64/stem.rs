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
fn gather_tm(g: &Geom, x: &[i8], zx: i8, oy: usize, ox: usize, patch: &mut [i8; ROW]) {
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
                    // SAFETY: 16 bytes from `s` lie inside `x` (checked), and `dst`
                    // starts at most at `(k − 1)·run ≤ PATCH` of a `PATCH + 16` row.
                    // The bytes past `run` are rewritten by the next patch row or lie
                    // past the `k·k·cin` the GEMM reads.
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
    run::<false>(g, x, zx, w, rq, q, y)
}

/// NEON stem on `sdot`; installed only when `dotprod` is detected.
pub(crate) fn conv_i8_sdot(
    g: &Geom,
    x: &[i8],
    zx: i32,
    w: &[i8],
    rq: &[[i32; 3]],
    q: OutQ,
    y: &mut [i8],
) {
    run::<true>(g, x, zx, w, rq, q, y)
}
