//! Ungrouped convolution, any `k` (the 3x3 stride-2 stem in ShuffleNetV2), NHWC input,
//! OIHW weights `[cout, cin, k, k]`, with bias and optional fused ReLU.
//!
//! Per output pixel the receptive field is gathered once into a patch in the weights'
//! `(c, ky, kx)` order (im2col of one pixel; padding reads as zero / the zero point), so each
//! output channel is one contiguous dot product. Patches longer than [`PATCH`] elements
//! (never in ShuffleNetV2: the stem has 27) are gathered per output channel instead.
use crate::kernels::{Geom, OutQ};
use crate::quant::requant;

/// Largest `cin·k·k` gathered on the stack.
pub const PATCH: usize = 256;

/// Fills `patch[(c·k + ky)·k + kx]` with `load(x[iy, ix, c_off + c])`, `pad` outside.
#[inline]
pub(crate) fn gather<T: Copy, U: Copy>(
    g: &Geom,
    x: &[T],
    oy: usize,
    ox: usize,
    pad: U,
    load: impl Fn(T) -> U,
    patch: &mut [U],
) {
    let (k, kk) = (g.k, g.k * g.k);
    let (iy0, ix0) = (oy * g.stride, ox * g.stride);
    if iy0 >= g.pad && ix0 >= g.pad && iy0 - g.pad + k <= g.h && ix0 - g.pad + k <= g.w {
        // Every tap inside the image (most pixels): one row slice per `ky`, no per-tap checks.
        let span = (k - 1) * g.in_stride + g.cin;
        for ky in 0..k {
            let row = (iy0 - g.pad + ky) * g.w + ix0 - g.pad;
            let row = &x[row * g.in_stride + g.c_off..][..span];
            for kx in 0..k {
                let px = &row[kx * g.in_stride..][..g.cin];
                for (c, &v) in px.iter().enumerate() {
                    patch[c * kk + ky * k + kx] = load(v);
                }
            }
        }
        return;
    }
    for ky in 0..k {
        let iy = Geom::tap(oy, ky, g.stride, g.pad, g.h);
        for kx in 0..k {
            let ix = Geom::tap(ox, kx, g.stride, g.pad, g.w);
            let t = ky * k + kx;
            match (iy, ix) {
                (Some(iy), Some(ix)) => {
                    let px = &x[(iy * g.w + ix) * g.in_stride + g.c_off..][..g.cin];
                    for (c, &v) in px.iter().enumerate() {
                        patch[c * kk + t] = load(v);
                    }
                }
                _ => {
                    for c in 0..g.cin {
                        patch[c * kk + t] = pad;
                    }
                }
            }
        }
    }
}

/// f32: `y[oy,ox,o] = b[o] + Σ_{c,ky,kx} w[o,c,ky,kx] · x[oy·s+ky−p, ox·s+kx−p, c_off+c]`.
/// Slices must match `g` (`x.len() ≥ g.in_len()`, `y.len() ≥ g.out_len()`).
pub fn conv_f32(g: &Geom, x: &[f32], w: &[f32], bias: &[f32], relu: bool, y: &mut [f32]) {
    let n = g.cin * g.k * g.k;
    let mut buf = [0.0f32; PATCH];
    for oy in 0..g.ho {
        for ox in 0..g.wo {
            let out = &mut y[(oy * g.wo + ox) * g.cout..][..g.cout];
            if n <= PATCH {
                let patch = &mut buf[..n];
                gather(g, x, oy, ox, 0.0, |v| v, patch);
                for (o, yo) in out.iter_mut().enumerate() {
                    let mut acc = bias[o];
                    for (a, b) in w[o * n..][..n].iter().zip(patch.iter()) {
                        acc += a * b;
                    }
                    *yo = if relu { acc.max(0.0) } else { acc };
                }
            } else {
                for (o, yo) in out.iter_mut().enumerate() {
                    let acc = bias[o]
                        + window(g, x, &w[o * n..][..n], oy, ox, 0.0, |v: f32, wv: f32| {
                            v * wv
                        });
                    *yo = if relu { acc.max(0.0) } else { acc };
                }
            }
        }
    }
}

/// `Σ combine(x, w)` over the taps inside the image, for one output channel's weights
/// (also the streaming switch's k > 1 path, `switch.rs`).
#[inline]
pub(crate) fn window<T: Copy, A: Copy + core::ops::Add<Output = A>, W: Copy>(
    g: &Geom,
    x: &[T],
    w: &[W],
    oy: usize,
    ox: usize,
    zero: A,
    combine: impl Fn(T, W) -> A,
) -> A {
    let kk = g.k * g.k;
    let mut acc = zero;
    for ky in 0..g.k {
        let Some(iy) = Geom::tap(oy, ky, g.stride, g.pad, g.h) else {
            continue;
        };
        for kx in 0..g.k {
            let Some(ix) = Geom::tap(ox, kx, g.stride, g.pad, g.w) else {
                continue;
            };
            let px = &x[(iy * g.w + ix) * g.in_stride + g.c_off..][..g.cin];
            for (c, &xv) in px.iter().enumerate() {
                acc = acc + combine(xv, w[c * kk + ky * g.k + kx]);
            }
        }
    }
    acc
}

/// int8 (TFLite conv): `acc = Σ w·(x − zx)` over the taps inside the image (padding reads
/// as the zero point), then per output channel `requant(acc, rq[o])`; `rq[o]` is
/// `[bias_i32, multiplier, shift]`.
pub fn conv_i8(g: &Geom, x: &[i8], zx: i32, w: &[i8], rq: &[[i32; 3]], q: OutQ, y: &mut [i8]) {
    conv_i8_pixels(g, 0..g.ho * g.wo, x, zx, w, rq, q, y)
}

/// [`conv_i8`]'s output pixels `pixels` (row-major) alone into `y` (those pixels only,
/// from its start): `Kernels::conv_i8_pixels`.
#[allow(clippy::too_many_arguments)]
pub fn conv_i8_pixels(
    g: &Geom,
    pixels: core::ops::Range<usize>,
    x: &[i8],
    zx: i32,
    w: &[i8],
    rq: &[[i32; 3]],
    q: OutQ,
    y: &mut [i8],
) {
    let n = g.cin * g.k * g.k;
    let mut buf = [0i16; PATCH];
    let p0 = pixels.start;
    for p in pixels {
        let (oy, ox) = (p / g.wo, p % g.wo);
        {
            let out = &mut y[(p - p0) * g.cout..][..g.cout];
            if n <= PATCH {
                let patch = &mut buf[..n];
                // x − zx ∈ [−255, 255] fits i16; padding contributes 0.
                gather(g, x, oy, ox, 0i16, |v| (v as i32 - zx) as i16, patch);
                for (o, yo) in out.iter_mut().enumerate() {
                    let mut acc = 0i32;
                    for (&a, &b) in w[o * n..][..n].iter().zip(patch.iter()) {
                        acc += a as i32 * b as i32;
                    }
                    *yo = requant(acc, rq[o], q);
                }
            } else {
                for (o, yo) in out.iter_mut().enumerate() {
                    let acc = window(g, x, &w[o * n..][..n], oy, ox, 0i32, |v: i8, wv: i8| {
                        wv as i32 * (v as i32 - zx)
                    });
                    *yo = requant(acc, rq[o], q);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// [`gather`] gives `x[iy, ix, c_off + c]` at `(c·k + ky)·k + kx` and the pad outside,
    /// per tap from the definition, on random geometries (interior and border pixels,
    /// strides, paddings, channel windows). Seed: `LORKD_SEED`.
    #[test]
    fn gather_is_the_patch_by_definition() {
        let mut rng = crate::engine::testnet::Rng::new(crate::test_seed());
        for _ in 0..300 {
            let (k, stride) = (1 + rng.below(4), 1 + rng.below(2));
            let pad = rng.below(k);
            let (h, w) = (k + rng.below(7), k + rng.below(7));
            let (cin, extra) = (1 + rng.below(5), rng.below(3));
            let g = Geom {
                h,
                w,
                in_stride: cin + extra,
                c_off: rng.below(extra + 1),
                cin,
                ho: Geom::out_dim(h, k, stride, pad),
                wo: Geom::out_dim(w, k, stride, pad),
                cout: 1,
                k,
                stride,
                pad,
            };
            let x: std::vec::Vec<i32> = (0..h * w * g.in_stride).map(|i| i as i32).collect();
            let mut patch = std::vec![0i32; cin * k * k];
            for oy in 0..g.ho {
                for ox in 0..g.wo {
                    gather(&g, &x, oy, ox, -1, |v| v, &mut patch);
                    for c in 0..cin {
                        for ky in 0..k {
                            for kx in 0..k {
                                let iy = (oy * stride + ky) as isize - pad as isize;
                                let ix = (ox * stride + kx) as isize - pad as isize;
                                let inside =
                                    (0..h as isize).contains(&iy) && (0..w as isize).contains(&ix);
                                let want = if inside {
                                    x[(iy as usize * w + ix as usize) * g.in_stride + g.c_off + c]
                                } else {
                                    -1
                                };
                                assert_eq!(
                                    patch[(c * k + ky) * k + kx],
                                    want,
                                    "{g:?} at {oy},{ox}"
                                );
                            }
                        }
                    }
                }
            }
        }
    }
}
