//! The int8 department rebuild's per-channel re-quantisation on the Cortex-M4F/M7 FPU:
//! the reference's first pass (`w += s0·W0q`, multiply then add, and `max|w|` on the bit
//! patterns, NaNs left to a second scan only when there is one), then the rounding as
//! `trunc(|t| + (½ − 2^−25))` without a branch (`fixed::quantize_weight_fast`) instead of
//! the reference's clamp / truncate / two-sided fraction compares — the same bits (host
//! test `quantize_weight_fast_matches_reference`, board self-check against the reference).
//! Single-precision f32 has no DSP-extension shortcut: `SMLAD` is integer only.
use crate::kernels::fixed::quantize_weight_fast;

/// Same contract and bits as `reference::requant_weights::requant_weights`.
pub(crate) fn requant_weights(w: &mut [f32], w0: &[i8], s0: f32, out: &mut [i8]) -> f32 {
    let n = w.len();
    let (w0, out) = (&w0[..n], &mut out[..n]);
    let mut amax_bits = 0u32;
    for (v, &q) in w.iter_mut().zip(w0) {
        *v += s0 * q as f32;
        amax_bits = amax_bits.max(v.to_bits() & 0x7fff_ffff);
    }
    if amax_bits > 0x7f80_0000 {
        // A NaN (its bits top every number's): the max over the rest, as the reference.
        amax_bits = w
            .iter()
            .map(|v| v.to_bits() & 0x7fff_ffff)
            .filter(|&b| b <= 0x7f80_0000)
            .max()
            .unwrap_or(0);
    }
    let amax = f32::from_bits(amax_bits);
    let s = if amax > 0.0 { amax / 127.0 } else { 1.0 };
    let inv = 1.0 / s;
    for (q, &v) in out.iter_mut().zip(w.iter()) {
        *q = quantize_weight_fast(v * inv);
    }
    s
}
