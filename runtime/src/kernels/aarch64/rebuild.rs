//! NEON twin of `reference::requant_weights` (one output channel of the int8 department
//! rebuild): `w += s0·W0q`, `max|w|` on the bit patterns, `q = round(w · 1/s)` — 4 lanes,
//! the same operations in the same order (a multiply then an add, no FMA), so bit-identical.
use core::arch::aarch64::*;

use crate::kernels::reference::requant_weights::quantize_weight;

/// NEON per-channel weight re-quantisation; same contract and bits as the reference.
pub(crate) fn requant_weights(w: &mut [f32], w0: &[i8], s0: f32, out: &mut [i8]) -> f32 {
    let n = w.len();
    // SAFETY: NEON is baseline on this target; the three slices hold `n` elements.
    unsafe { body(w, &w0[..n], s0, &mut out[..n]) }
}

/// # Safety
/// NEON available; `w0.len() == out.len() == w.len()`.
#[target_feature(enable = "neon")]
unsafe fn body(w: &mut [f32], w0: &[i8], s0: f32, out: &mut [i8]) -> f32 {
    let n = w.len();
    let main = n & !7;
    let s0v = vdupq_n_f32(s0);
    let (abs, inf) = (vdupq_n_u32(0x7fff_ffff), vdupq_n_u32(0x7f80_0000));
    let mut mx = vdupq_n_u32(0);
    let mut i = 0;
    while i < main {
        // SAFETY: `i + 8 <= n` for all three slices.
        unsafe {
            let q16 = vmovl_s8(vld1_s8(w0.as_ptr().add(i)));
            let qs = [vmovl_s16(vget_low_s16(q16)), vmovl_high_s16(q16)];
            for (h, q) in qs.into_iter().enumerate() {
                let pv = w.as_mut_ptr().add(i + 4 * h);
                // Separate multiply and add: `vmlaq_f32` may fuse.
                let v = vaddq_f32(vld1q_f32(pv), vmulq_f32(s0v, vcvtq_f32_s32(q)));
                vst1q_f32(pv, v);
                // |v| bits, NaN (above the infinity pattern) as 0.
                let b = vandq_u32(vreinterpretq_u32_f32(v), abs);
                mx = vmaxq_u32(mx, vbicq_u32(b, vcgtq_u32(b, inf)));
            }
        }
        i += 8;
    }
    let mut amax_bits = vmaxvq_u32(mx);
    for j in main..n {
        w[j] += s0 * w0[j] as f32;
        let b = w[j].to_bits() & 0x7fff_ffff;
        amax_bits = amax_bits.max(if b > 0x7f80_0000 { 0 } else { b });
    }
    let amax = f32::from_bits(amax_bits);
    let s = if amax > 0.0 { amax / 127.0 } else { 1.0 };
    let inv = 1.0 / s;
    let invv = vdupq_n_f32(inv);
    let (lo, hi) = (vdupq_n_f32(-128.0), vdupq_n_f32(128.0));
    let (half, mhalf) = (vdupq_n_f32(0.5), vdupq_n_f32(-0.5));
    let (q_lo, q_hi) = (vdupq_n_s32(-127), vdupq_n_s32(127));
    let mut i = 0;
    while i < main {
        let mut r = [vdupq_n_s32(0); 2];
        for (h, rh) in r.iter_mut().enumerate() {
            // SAFETY: `i + 8 <= n`: 4 f32 read at `i + 4·h`.
            let t = vmulq_f32(unsafe { vld1q_f32(w.as_ptr().add(i + 4 * h)) }, invv);
            // NaN propagates through min/max and converts to 0; its `f` compares false.
            let t = vminq_f32(vmaxq_f32(t, lo), hi);
            let ti = vcvtq_s32_f32(t);
            let f = vsubq_f32(t, vcvtq_f32_s32(ti));
            let up = vreinterpretq_s32_u32(vcgeq_f32(f, half));
            let down = vreinterpretq_s32_u32(vcleq_f32(f, mhalf));
            // Masks are −1: subtracting `up` adds one, adding `down` subtracts one.
            let v = vaddq_s32(vsubq_s32(ti, up), down);
            *rh = vminq_s32(vmaxq_s32(v, q_lo), q_hi);
        }
        let b = vmovn_s16(vcombine_s16(vmovn_s32(r[0]), vmovn_s32(r[1])));
        // SAFETY: `i + 8 <= n`: 8 bytes written.
        unsafe { vst1_s8(out.as_mut_ptr().add(i), b) };
        i += 8;
    }
    for j in main..n {
        out[j] = quantize_weight(w[j] * inv);
    }
    s
}
