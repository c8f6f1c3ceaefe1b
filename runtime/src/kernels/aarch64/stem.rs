//! NEON k×k int8 conv (the stem) as the pointwise GEMM over im2col patches: four output
//! pixels' receptive fields are gathered as raw int8 with the padding set to the zero point
//! (so a padded tap adds `w·(zx − zx) = 0`, exactly as the reference skips it), then the
//! shared GEMM (`gemm.rs`: `smull`/`sadalp`, or `sdot`, with the `− zx·Σw` correction) and
//! the NEON output stage. Patches longer than `conv::PATCH` and zero points outside i8 take
//! the reference.
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
    let mut rows = Patches {
        g,
        x,
        zx: zx as i8,
        buf: [[0; PATCH]; P],
    };
    let mut out = Requant::new(rq, q, &mut y[..npix * g.cout], g.cout);
    // SAFETY: `DOT` only from `conv_i8_sdot`, installed only when `dotprod` is detected.
    unsafe { gemm_i8::<DOT>(n, npix, g.cout, w, zx, &mut rows, &mut out) }
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
