//! NEON int8 max pool 3x3, stride 2, padding 1 (padding never wins) over a dense NHWC
//! `[h, w, c]`: per output pixel the window's rows and columns inside the image are two
//! ranges, walked with pointers (the input's length checked once; the full 3×3 window of the
//! interior unrolled), 16 channels a step with `smax`, then the last 8 as one 8-byte step
//! when no more are left (the 24 channels of ShuffleNet's stem), else a last 16 overlapping
//! the step before (the same maxima again). A max of codes, so exact. Fewer than 16
//! channels, and shapes whose slices are short, take the reference.
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
            // SAFETY: every tap `(iy, ix)` has `iy < h`, `ix < w`: its `c` bytes lie in `x`
            // (`h·w·c` long); the output pixel `(oy, ox)` lies in `y`.
            let (row, out) = unsafe { (xp.add((y0 * w + x0) * c), yp.add((oy * wo + ox) * c)) };
            let (nr, nc) = (y1 - y0 + 1, x1 - x0 + 1);
            let mut at = 0;
            loop {
                // SAFETY: NEON is baseline on this target (the module is cfg'd on it); the
                // steps read and write channels `a .. a + 16 (8) ≤ c` of the window's taps
                // and of the output pixel (`c ≥ 16`, so `c − 8` and `c − 16` are channels).
                unsafe {
                    if at + 16 <= c || c - at > 8 {
                        // 16 channels (the last such step overlaps the one before when
                        // more than 8 channels are left: the same maxima again).
                        let a = at.min(c - 16);
                        let m = window(
                            row.add(a),
                            w * c,
                            c,
                            nr,
                            nc,
                            |p| vld1q_s8(p),
                            |u, v| vmaxq_s8(u, v),
                        );
                        vst1q_s8(out.add(a), m);
                        at = a + 16;
                    } else {
                        // At most 8 left: the last 8 channels.
                        let a = c - 8;
                        let m = window(
                            row.add(a),
                            w * c,
                            c,
                            nr,
                            nc,
                            |p| vld1_s8(p),
                            |u, v| vmax_s8(u, v),
                        );
                        vst1_s8(out.add(a), m);
                        at = c;
                    }
                }
                if at >= c {
                    break;
                }
            }
        }
    }
}

/// The max over a window of `nr` rows (`rs` bytes apart) × `nc` columns (`cs` apart) from
/// `row`, `1 ≤ nr, nc ≤ 3`; the full 3×3 window (the interior) unrolled.
///
/// # Safety
/// Every tap's vector (`ld` at `row + i·rs + j·cs`) is readable.
#[inline(always)]
unsafe fn window<V: Copy>(
    row: *const i8,
    rs: usize,
    cs: usize,
    nr: usize,
    nc: usize,
    ld: impl Fn(*const i8) -> V,
    max: impl Fn(V, V) -> V,
) -> V {
    // SAFETY: the taps `i < nr`, `j < nc` are readable (this function's contract).
    unsafe {
        let r3 = |r: *const i8| max(max(ld(r), ld(r.add(cs))), ld(r.add(2 * cs)));
        if nr == 3 && nc == 3 {
            return max(max(r3(row), r3(row.add(rs))), r3(row.add(2 * rs)));
        }
        let mut m = ld(row);
        for i in 0..nr {
            for j in 0..nc {
                m = max(m, ld(row.add(i * rs + j * cs)));
            }
        }
        m
    }
}
