//! Pointwise (1x1) convolution as a GEMM: `Y[P, cout] = X[P, cin] · Wᵀ + b`, with `W` the
//! `[cout, cin]` weight and `P` the (strided) output pixels. Padding must be 0 (`g.k == 1`).
use crate::kernels::{Geom, OutQ, SumTile};
use crate::quant::requant;

#[inline]
fn src(g: &Geom, oy: usize, ox: usize) -> usize {
    (oy * g.stride * g.w + ox * g.stride) * g.in_stride + g.c_off
}

/// f32 pointwise conv with bias and optional ReLU.
pub fn conv1x1_f32(g: &Geom, x: &[f32], w: &[f32], bias: &[f32], relu: bool, y: &mut [f32]) {
    for oy in 0..g.ho {
        for ox in 0..g.wo {
            let px = &x[src(g, oy, ox)..][..g.cin];
            let out = &mut y[(oy * g.wo + ox) * g.cout..][..g.cout];
            for (o, yo) in out.iter_mut().enumerate() {
                let wo = &w[o * g.cin..][..g.cin];
                let mut acc = bias[o];
                for (a, b) in wo.iter().zip(px) {
                    acc += a * b;
                }
                *yo = if relu { acc.max(0.0) } else { acc };
            }
        }
    }
}

/// int8 pointwise conv: `acc = Σ w·(x − zx)`, then `requant(acc, rq[o])`.
pub fn conv1x1_i8(g: &Geom, x: &[i8], zx: i32, w: &[i8], rq: &[[i32; 3]], q: OutQ, y: &mut [i8]) {
    for oy in 0..g.ho {
        for ox in 0..g.wo {
            let px = &x[src(g, oy, ox)..][..g.cin];
            let out = &mut y[(oy * g.wo + ox) * g.cout..][..g.cout];
            for (o, yo) in out.iter_mut().enumerate() {
                let wo = &w[o * g.cin..][..g.cin];
                let mut acc = 0i32;
                for (&a, &b) in wo.iter().zip(px) {
                    acc += a as i32 * (b as i32 - zx);
                }
                *yo = requant(acc, rq[o], q);
            }
        }
    }
}

/// `Σ w[i]·(x[i] − zx)` over the common length: the streaming int8 expert's `W0` term.
pub fn dot_i8(w: &[i8], x: &[i8], zx: i32) -> i32 {
    let mut acc = 0i32;
    for (&a, &b) in w.iter().zip(x) {
        acc += a as i32 * (b as i32 - zx);
    }
    acc
}

/// The int8 pointwise GEMM without an output stage: for each output pixel, blocks of up to
/// 64 channels' exact sums `Σ w·(x − zx)`, handed to `sink` one pixel at a time.
pub fn conv1x1_sums_i8(g: &Geom, x: &[i8], zx: i32, w: &[i8], sink: &mut dyn FnMut(SumTile<'_>)) {
    let mut acc = [0i32; 64];
    for oy in 0..g.ho {
        for ox in 0..g.wo {
            let px = &x[src(g, oy, ox)..][..g.cin];
            let mut o0 = 0;
            while o0 < g.cout {
                let no = 64.min(g.cout - o0);
                for (j, a) in acc[..no].iter_mut().enumerate() {
                    *a = dot_i8(&w[(o0 + j) * g.cin..][..g.cin], px, zx);
                }
                sink(SumTile {
                    p0: oy * g.wo + ox,
                    np: 1,
                    o0,
                    no,
                    acc: &acc[..no],
                });
                o0 += no;
            }
        }
    }
}
