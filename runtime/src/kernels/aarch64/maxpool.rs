//! NEON int8 max pool 3x3, stride 2, padding 1 (padding never wins) over a dense NHWC
//! `[h, w, c]`: per output pixel the window's rows and columns inside the image are two
//! ranges, walked with pointers (the input's length checked once), 16 channels a step with
//! `smax` (the last step overlaps the one before when `c` is not a multiple of 16: the same
//! maxima again). A max of codes, so exact. Fewer than 16 channels, and shapes whose slices
//! are short, take the reference.
use core::arch::aarch64::*;

use crate::kernels::{reference, Geom};

/// Same contract as `reference::maxpool::maxpool3x3s2::<i8>`.
pub(crate) fn maxpool3x3s2_i8(h: usize, w: usize, c: usize, x: &[i8], y: &mut [i8]) {
    let (ho, wo) = (Geom::out_dim(h, 3, 2, 1), Geom::out_dim(w, 3, 2, 1));
    if c < 16 || h == 0 || w == 0 || x.len() < h * w * c || y.len() < ho * wo * c {
        return reference::maxpool::maxpool3x3s2(h, w, c, x, y);
    }
    let (xp, yp) = (x.as_ptr(), y.as_mut_ptr());
    for oy in 0..ho {
        // The window's rows inside the image (`2·oy ≤ h − 1`: the centre always is).
        let (y0, y1) = ((2 * oy).saturating_sub(1), (2 * oy + 1).min(h - 1));
        for ox in 0..wo {
            let (x0, x1) = ((2 * ox).saturating_sub(1), (2 * ox + 1).min(w - 1));
            let mut at = 0;
            loop {
                let a = if at + 16 <= c { at } else { c - 16 };
                // SAFETY: NEON is baseline on this target (the module is cfg'd on it). Every
                // tap `(iy, ix)` has `iy < h`, `ix < w`, and `a + 16 ≤ c`: its 16 bytes lie
                // in `x` (`h·w·c` long); the output pixel `(oy, ox)` lies in `y`.
                unsafe {
                    let mut m = vdupq_n_s8(i8::MIN);
                    for iy in y0..=y1 {
                        let row = xp.add((iy * w + x0) * c + a);
                        for k in 0..=x1 - x0 {
                            m = vmaxq_s8(m, vld1q_s8(row.add(k * c)));
                        }
                    }
                    vst1q_s8(yp.add((oy * wo + ox) * c + a), m);
                }
                if a + 16 >= c {
                    break;
                }
                at = a + 16;
            }
        }
    }
}
