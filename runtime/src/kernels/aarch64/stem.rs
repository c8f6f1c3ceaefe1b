//! NEON k×k int8 conv (the stem) as the pointwise GEMM over im2col patches: four output
//! pixels' receptive fields are gathered as raw int8 with the padding set to the zero point
//! (so a padded tap adds `w·(zx − zx) = 0`, exactly as the reference skips it), then the
//! 4×4 tiles of `conv1x1` (`vmlal` on i16, or `sdot` with the `− zx·Σw` correction) and the
//! NEON output stage. Patches longer than `conv::PATCH` and zero points outside i8 take the
//! reference.
use super::conv1x1::{store_i8, tile_i8, tile_sdot, wrows, O, P};
use crate::kernels::reference::conv::{gather, PATCH};
use crate::kernels::{reference, Geom, OutQ};

#[allow(clippy::too_many_arguments)]
fn run(g: &Geom, x: &[i8], zx: i32, w: &[i8], rq: &[[i32; 3]], q: OutQ, y: &mut [i8], dot: bool) {
    let n = g.cin * g.k * g.k;
    let npix = g.ho * g.wo;
    if n == 0 || n > PATCH || !(-128..=127).contains(&zx) {
        return reference::conv::conv_i8(g, x, zx, w, rq, q, y);
    }
    let (w, rq) = (&w[..g.cout * n], &rq[..g.cout]);
    let y = &mut y[..npix * g.cout];
    let mut patches = [[0i8; PATCH]; P];
    let mut p = 0;
    while p < npix {
        let np = P.min(npix - p);
        for (i, patch) in patches.iter_mut().enumerate() {
            let pi = p + i.min(np - 1);
            gather(g, x, pi / g.wo, pi % g.wo, zx as i8, |v| v, &mut patch[..n]);
        }
        let xs = [0, 1, 2, 3].map(|i| &patches[i][..n]);
        let mut o = 0;
        while o < g.cout {
            let no = O.min(g.cout - o);
            let ws = wrows(w, n, o, no);
            let d = if dot {
                // SAFETY: the sdot table is installed only when `dotprod` is detected; every
                // row holds `n` bytes.
                unsafe { tile_sdot(xs, ws, n, zx) }
            } else {
                // SAFETY: NEON is baseline on this target; every row holds `n` bytes.
                unsafe { tile_i8(xs, ws, n, zx) }
            };
            store_i8(&d, np, no, p, o, g.cout, rq, q, y);
            o += no;
        }
        p += np;
    }
}

/// NEON stem (widening multiply-accumulate); same contract as `reference::conv::conv_i8`.
pub(crate) fn conv_i8(
    g: &Geom,
    x: &[i8],
    zx: i32,
    w: &[i8],
    rq: &[[i32; 3]],
    q: OutQ,
    y: &mut [i8],
) {
    run(g, x, zx, w, rq, q, y, false)
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
    run(g, x, zx, w, rq, q, y, true)
}
