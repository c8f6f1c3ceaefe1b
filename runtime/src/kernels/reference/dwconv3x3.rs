//! Depthwise 3x3 convolution, padding 1, stride 1 or 2; weights `[3, 3, C]` (`g.cin == g.cout`).
use crate::kernels::{Geom, OutQ};
use crate::quant::requant;

/// f32: `y[oy,ox,c] = b[c] + Σ_{ky,kx} w[ky,kx,c] · x[oy·s+ky−1, ox·s+kx−1, c_off+c]`.
pub fn dwconv3x3_f32(g: &Geom, x: &[f32], w: &[f32], bias: &[f32], relu: bool, y: &mut [f32]) {
    let c = g.cout;
    let mut t: [(&[f32], &[f32]); 9] = [(&[], &[]); 9];
    for oy in 0..g.ho {
        for ox in 0..g.wo {
            let out = &mut y[(oy * g.wo + ox) * c..][..c];
            out.copy_from_slice(&bias[..c]);
            let nt = taps(g, x, w, oy, ox, &mut t);
            for &(wk, px) in &t[..nt] {
                for ((o, &a), &b) in out.iter_mut().zip(wk).zip(px) {
                    *o += a * b;
                }
            }
            if relu {
                out.iter_mut().for_each(|v| *v = v.max(0.0));
            }
        }
    }
}

/// int8: `acc = Σ w·(x − zx)` over the taps inside the image, then `requant(acc, rq[c])`.
/// Channels go in blocks of [`BLOCK`] with a stack accumulator, taps outside, so the inner
/// loop runs over contiguous channels (and vectorises).
pub fn dwconv3x3_i8(g: &Geom, x: &[i8], zx: i32, w: &[i8], rq: &[[i32; 3]], q: OutQ, y: &mut [i8]) {
    dwconv3x3_i8_pixels(g, 0..g.ho * g.wo, x, zx, w, rq, q, y)
}

/// [`dwconv3x3_i8`]'s output pixels `pixels` (row-major) alone, into `y` from its start
/// (`x` the whole input): a thread's share of the conv.
#[allow(clippy::too_many_arguments)]
pub fn dwconv3x3_i8_pixels(
    g: &Geom,
    pixels: core::ops::Range<usize>,
    x: &[i8],
    zx: i32,
    w: &[i8],
    rq: &[[i32; 3]],
    q: OutQ,
    y: &mut [i8],
) {
    let c = g.cout;
    let mut t: [(&[i8], &[i8]); 9] = [(&[], &[]); 9];
    let p0 = pixels.start;
    for p in pixels {
        let (oy, ox) = (p / g.wo, p % g.wo);
        {
            let nt = taps(g, x, w, oy, ox, &mut t);
            let out = &mut y[(p - p0) * c..][..c];
            for c0 in (0..c).step_by(BLOCK) {
                let n = BLOCK.min(c - c0);
                let mut acc = [0i32; BLOCK];
                for &(wk, xk) in &t[..nt] {
                    let (xs, ws) = (&xk[c0..][..n], &wk[c0..][..n]);
                    for ((a, &wv), &xv) in acc.iter_mut().zip(ws).zip(xs) {
                        *a += wv as i32 * (xv as i32 - zx);
                    }
                }
                for (i, yo) in out[c0..c0 + n].iter_mut().enumerate() {
                    *yo = requant(acc[i], rq[c0 + i], q);
                }
            }
        }
    }
}

/// Channel block of the int8 depthwise kernel.
pub const BLOCK: usize = 32;

/// `(weight row, input row)` of every tap of output pixel `(oy, ox)` inside the image, each
/// `c` long; returns how many (the tap list of both reference kernels and their AVX2 and
/// NEON twins).
#[inline]
pub(crate) fn taps<'x, T>(
    g: &Geom,
    x: &'x [T],
    w: &'x [T],
    oy: usize,
    ox: usize,
    out: &mut [(&'x [T], &'x [T]); 9],
) -> usize {
    let c = g.cout;
    let mut nt = 0;
    for ky in 0..3 {
        let Some(iy) = Geom::tap(oy, ky, g.stride, 1, g.h) else {
            continue;
        };
        for kx in 0..3 {
            let Some(ix) = Geom::tap(ox, kx, g.stride, 1, g.w) else {
                continue;
            };
            out[nt] = (
                &w[(ky * 3 + kx) * c..][..c],
                &x[(iy * g.w + ix) * g.in_stride + g.c_off..][..c],
            );
            nt += 1;
        }
    }
    nt
}
