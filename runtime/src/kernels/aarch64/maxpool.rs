//! NEON int8 max pool 3x3, stride 2, padding 1 (padding never wins) over a dense NHWC
//! `[h, w, c]`: passes of 16 channels with `smax`, then the last 8 as one 8-byte pass when
//! no more are left (the 24 channels of ShuffleNet's stem), else a last 16 overlapping the
//! pass before (the same maxima again). A pass walks each output row with the max down its
//! 3 input rows per column, 2 new columns a pixel (the input's length checked once). A max
//! of codes, so exact. Fewer than 16 channels, and shapes whose slices are short, take the
//! reference.
use core::arch::aarch64::*;

use crate::kernels::{reference, Geom};

/// Same contract as `reference::maxpool::maxpool3x3s2::<i8>`.
pub(crate) fn maxpool3x3s2_i8(h: usize, w: usize, c: usize, x: &[i8], y: &mut [i8]) {
    let (ho, wo) = (Geom::out_dim(h, 3, 2, 1), Geom::out_dim(w, 3, 2, 1));
    if c < 16 || h == 0 || w == 0 || x.len() < h * w * c || y.len() < ho * wo * c {
        return reference::maxpool::maxpool3x3s2(h, w, c, x, y);
    }
    let (xp, yp) = (x.as_ptr(), y.as_mut_ptr());
    let mut at = 0;
    loop {
        // SAFETY: NEON is baseline on this target (the module is cfg'd on it); the passes
        // read and write channels `a .. a + 16 (8) ≤ c` of the input's and output's pixels
        // (`c ≥ 16`, so `c − 8` and `c − 16` are channels; the lengths checked above).
        unsafe {
            if at + 16 <= c || c - at > 8 {
                // 16 channels (the last such pass overlaps the one before when more than
                // 8 channels are left: the same maxima again).
                let a = at.min(c - 16);
                pass(
                    h,
                    w,
                    c,
                    xp.add(a),
                    yp.add(a),
                    |p| vld1q_s8(p),
                    |p, v| vst1q_s8(p, v),
                    |u, v| vmaxq_s8(u, v),
                );
                at = a + 16;
            } else {
                // At most 8 left: the last 8 channels.
                let a = c - 8;
                pass(
                    h,
                    w,
                    c,
                    xp.add(a),
                    yp.add(a),
                    |p| vld1_s8(p),
                    |p, v| vst1_s8(p, v),
                    |u, v| vmax_s8(u, v),
                );
                at = c;
            }
        }
        if at >= c {
            break;
        }
    }
}

/// One pass of 16 (8) channels over every output pixel: per output row its 3 input rows
/// (the first and last clamped into the image: a repeated row changes no max), and along
/// the row each input column's max down those rows, 2 new columns a pixel, the pixel's
/// left column carried over from the one before (the first column stands in for the
/// padding left of the image, the last for one right of it).
///
/// # Safety
/// `ld` and `st` touch at most 16 bytes; every input pixel `x + (iy·w + ix)·c` and output
/// pixel `y + (oy·wo + ox)·c` holds the bytes they touch.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
unsafe fn pass<V: Copy>(
    h: usize,
    w: usize,
    c: usize,
    x: *const i8,
    y: *mut i8,
    ld: impl Fn(*const i8) -> V,
    st: impl Fn(*mut i8, V),
    max: impl Fn(V, V) -> V,
) {
    let (ho, wo) = (Geom::out_dim(h, 3, 2, 1), Geom::out_dim(w, 3, 2, 1));
    // Output columns whose right column `2·ox + 1` is inside the image.
    let whole = w / 2;
    let mut out = y;
    for oy in 0..ho {
        let r1 = 2 * oy;
        let (r0, r2) = (r1.saturating_sub(1), (r1 + 1).min(h - 1));
        // SAFETY (the row): rows `r0, r1, r2 < h`; columns `< w` (`2·ox + 1 < w` for `ox <
        // whole`, `2·ox ≤ w − 1` for the last when `w` is odd); outputs `ox < wo` of row
        // `oy < ho` — all inside (this function's contract).
        unsafe {
            let mut p = [r0, r1, r2].map(|r| x.add(r * w * c));
            let col = |p: &[*const i8; 3], off: usize| {
                max(max(ld(p[0].add(off)), ld(p[1].add(off))), ld(p[2].add(off)))
            };
            let mut left = col(&p, 0);
            for _ in 0..whole {
                let (a, b) = (col(&p, 0), col(&p, c));
                st(out, max(max(left, a), b));
                left = b;
                p = p.map(|q| q.add(2 * c));
                out = out.add(c);
            }
            if wo > whole {
                st(out, max(left, col(&p, 0)));
                out = out.add(c);
            }
        }
    }
}
