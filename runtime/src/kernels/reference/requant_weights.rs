//! One output channel of the int8 department rebuild (see `crate::switch`): the delta row
//! `ΔW[o]` plus the dequantised pristine weights, then re-quantised symmetrically.
//!
//! `w[i] = ΔW[o][i] + s0·W0q[i]` (a multiply then an add, no FMA, so every twin gets the
//! same bits), then [`crate::quant::quantize_channel`], the one per-channel weight rule:
//! `s = max|w| / 127` over the non-NaN values (1 for an all-zero channel);
//! `q[i] = clamp(round_half_away(w[i] · (1/s)), −127, 127)`, NaN → 0. Returns `s`.

pub use crate::quant::quantize_weight;

/// `w` (the delta row, overwritten with the f32 weights) and `w0`, `out` of one length.
pub fn requant_weights(w: &mut [f32], w0: &[i8], s0: f32, out: &mut [i8]) -> f32 {
    let n = w.len();
    for (v, &q) in w.iter_mut().zip(&w0[..n]) {
        *v += s0 * q as f32;
    }
    crate::quant::quantize_channel(w, &mut out[..n])
}
