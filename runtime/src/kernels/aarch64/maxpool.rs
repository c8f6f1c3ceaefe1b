//! NEON int8 max pool 3x3, stride 2, padding 1 (padding never wins) over a dense NHWC
//! `[h, w, c]`: per output pixel the taps inside the image are listed once, then 16 channels
//! a step with `smax` (the last step overlaps the one before when `c` is not a multiple of
//! 16: the same maxima again). A max of codes, so exact. Fewer than 16 channels take the
//! reference.
use core::arch::aarch64::*;

use crate::kernels::{reference, Geom};

/// Same contract as `reference::maxpool::maxpool3x3s2::<i8>`.
pub(crate) fn maxpool3x3s2_i8(h: usize, w: usize, c: usize, x: &[i8], y: &mut [i8]) {
    if c < 16 {
        return reference::maxpool::maxpool3x3s2(h, w, c, x, y);
    }
    let (ho, wo) = (Geom::out_dim(h, 3, 2, 1), Geom::out_dim(w, 3, 2, 1));
    let mut t: [&[i8]; 9] = [&[]; 9];
    for oy in 0..ho {
        for ox in 0..wo {
            let nt = reference::maxpool::taps(h, w, c, x, oy, ox, &mut t);
            let (first, rest) = t[..nt].split_first().expect("the centre tap");
            let out = &mut y[(oy * wo + ox) * c..][..c];
            let mut c0 = 0;
            while c0 < c {
                let at = if c0 + 16 <= c { c0 } else { c - 16 };
                // SAFETY: NEON is baseline on this target (the module is cfg'd on it);
                // `at + 16 ≤ c`, the length of `out` and of every tap row.
                unsafe {
                    let mut m = vld1q_s8(first.as_ptr().add(at));
                    for r in rest {
                        m = vmaxq_s8(m, vld1q_s8(r.as_ptr().add(at)));
                    }
                    vst1q_s8(out.as_mut_ptr().add(at), m);
                }
                c0 = at + 16;
            }
        }
    }
}
