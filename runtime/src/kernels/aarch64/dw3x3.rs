//! NEON depthwise 3x3 (padding 1, stride 1 or 2) over NHWC, vectorised across channels: per
//! output pixel the taps inside the image are listed once (row slices), then each channel
//! block accumulates its up-to-9 taps in registers. Channel tails (< one vector) run the
//! reference's scalar arithmetic.
//!
//! f32: `vfmaq_f32` in the reference's tap order — FMA's single rounding only
//! (`|Δ| ≤ 2·9·ε·(|b| + Σ|w·x|)`). int8: 8 channels widened to i16 (`x − zx` fits),
//! `vmlal_s16` into two i32x4 — exact; then the NEON output stage (`requant.rs`).
use core::arch::aarch64::*;

use super::requant::requant4;
use crate::kernels::reference::dwconv3x3::taps;
use crate::kernels::{Geom, OutQ};
use crate::quant::requant;

/// NEON f32 depthwise 3x3; same contract as `reference::dwconv3x3::dwconv3x3_f32`.
pub(crate) fn dwconv3x3_f32(
    g: &Geom,
    x: &[f32],
    w: &[f32],
    bias: &[f32],
    relu: bool,
    y: &mut [f32],
) {
    let c = g.cout;
    let bias = &bias[..c];
    let mut t: [(&[f32], &[f32]); 9] = [(&[], &[]); 9];
    for oy in 0..g.ho {
        for ox in 0..g.wo {
            let nt = taps(g, x, w, oy, ox, &mut t);
            let t = &t[..nt];
            let out = &mut y[(oy * g.wo + ox) * c..][..c];
            // SAFETY: NEON is baseline on this target (the module is cfg'd on it); `bias`,
            // `out` and every tap row hold `c` elements.
            let c0 = unsafe { blocks_f32(t, bias, relu, out) };
            for ch in c0..c {
                let mut a = bias[ch];
                for &(wr, xr) in t {
                    a += wr[ch] * xr[ch];
                }
                out[ch] = if relu { a.max(0.0) } else { a };
            }
        }
    }
}

/// NEON int8 depthwise 3x3; bit-exact twin of `reference::dwconv3x3::dwconv3x3_i8`.
pub(crate) fn dwconv3x3_i8(
    g: &Geom,
    x: &[i8],
    zx: i32,
    w: &[i8],
    rq: &[[i32; 3]],
    q: OutQ,
    y: &mut [i8],
) {
    let c = g.cout;
    let rq = &rq[..c];
    let mut t: [(&[i8], &[i8]); 9] = [(&[], &[]); 9];
    for oy in 0..g.ho {
        for ox in 0..g.wo {
            let nt = taps(g, x, w, oy, ox, &mut t);
            let t = &t[..nt];
            let out = &mut y[(oy * g.wo + ox) * c..][..c];
            let mut c0 = 0;
            while c0 + 8 <= c {
                // SAFETY: NEON is baseline on this target; `c0 + 8 <= c` = every row's length.
                let acc = unsafe { block_i8(t, c0, zx) };
                if q.lo <= 127 {
                    for h in [0, 4] {
                        // SAFETY: NEON is baseline; `acc[h..]`, `rq[c0 + h..]` and the output
                        // hold 4 elements each (`c0 + 8 <= c`); `q.lo ≤ 127`.
                        unsafe {
                            let a = vld1q_s32(acc.as_ptr().add(h));
                            requant4(a, &rq[c0 + h..c0 + h + 4], q, &mut out[c0 + h..c0 + h + 4]);
                        }
                    }
                } else {
                    for (j, &a) in acc.iter().enumerate() {
                        out[c0 + j] = requant(a, rq[c0 + j], q);
                    }
                }
                c0 += 8;
            }
            for ch in c0..c {
                let mut a = 0i32;
                for &(wr, xr) in t {
                    a += wr[ch] as i32 * (xr[ch] as i32 - zx);
                }
                out[ch] = requant(a, rq[ch], q);
            }
        }
    }
}

/// The whole 4-channel blocks of one f32 output pixel: `out = bias + Σ_taps w·x` (then
/// ReLU); returns where the scalar tail starts.
///
/// # Safety
/// NEON available; `bias` and every tap row at least `out.len()` long.
#[target_feature(enable = "neon")]
unsafe fn blocks_f32(t: &[(&[f32], &[f32])], bias: &[f32], relu: bool, out: &mut [f32]) -> usize {
    let c = out.len();
    let mut c0 = 0;
    while c0 + 4 <= c {
        // SAFETY: `c0 + 4 <= c` and every slice holds at least `c`.
        unsafe {
            let mut acc = vld1q_f32(bias.as_ptr().add(c0));
            for &(wr, xr) in t {
                acc = vfmaq_f32(
                    acc,
                    vld1q_f32(wr.as_ptr().add(c0)),
                    vld1q_f32(xr.as_ptr().add(c0)),
                );
            }
            if relu {
                acc = vmaxq_f32(acc, vdupq_n_f32(0.0));
            }
            vst1q_f32(out.as_mut_ptr().add(c0), acc);
        }
        c0 += 4;
    }
    c0
}

/// Exact `Σ_taps w[c0..c0+8]·(x[c0..c0+8] − zx)` in i32.
///
/// # Safety
/// NEON available; every tap row at least `c0 + 8` long.
#[target_feature(enable = "neon")]
unsafe fn block_i8(t: &[(&[i8], &[i8])], c0: usize, zx: i32) -> [i32; 8] {
    let z = vdupq_n_s16(zx as i16);
    let (mut lo, mut hi) = (vdupq_n_s32(0), vdupq_n_s32(0));
    for &(wr, xr) in t {
        // SAFETY: 8-byte loads at `c0`, in bounds by the contract.
        let (wv, xv) = unsafe { (vld1_s8(wr.as_ptr().add(c0)), vld1_s8(xr.as_ptr().add(c0))) };
        // x − zx ∈ [−255, 255] fits i16.
        let (w16, x16) = (vmovl_s8(wv), vsubq_s16(vmovl_s8(xv), z));
        lo = vmlal_s16(lo, vget_low_s16(w16), vget_low_s16(x16));
        hi = vmlal_high_s16(hi, w16, x16);
    }
    let mut acc = [0i32; 8];
    // SAFETY: `acc` holds 8 i32.
    unsafe {
        vst1q_s32(acc.as_mut_ptr(), lo);
        vst1q_s32(acc.as_mut_ptr().add(4), hi);
    }
    acc
}
