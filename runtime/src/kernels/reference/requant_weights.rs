//! One output channel of the int8 department rebuild (see `crate::switch`): the delta row
//! `ΔW[o]` plus the dequantised pristine weights, then re-quantised symmetrically.
//!
//! `w[i] = ΔW[o][i] + s0·W0q[i]` (a multiply then an add, no FMA, so every twin gets the
//! same bits); `s = max|w| / 127` over the non-NaN values (1 for an all-zero channel);
//! `q[i] = clamp(round_half_away(w[i] · (1/s)), −127, 127)`, NaN → 0. Returns `s`.

/// `w` (the delta row, overwritten with the f32 weights) and `w0`, `out` of one length.
pub fn requant_weights(w: &mut [f32], w0: &[i8], s0: f32, out: &mut [i8]) -> f32 {
    let n = w.len();
    let (w0, out) = (&w0[..n], &mut out[..n]);
    // max |v| over the non-NaN values, on the bit patterns: for finite and infinite
    // floats `|a| < |b|` iff `bits(|a|) < bits(|b|)`. Same value as folding `f32::max`.
    let mut amax_bits = 0u32;
    for (v, &q) in w.iter_mut().zip(w0) {
        *v += s0 * q as f32;
        let b = v.to_bits() & 0x7fff_ffff;
        amax_bits = amax_bits.max(if b > 0x7f80_0000 { 0 } else { b });
    }
    let amax = f32::from_bits(amax_bits);
    let s = if amax > 0.0 { amax / 127.0 } else { 1.0 };
    let inv = 1.0 / s;
    for (q, &v) in out.iter_mut().zip(w.iter()) {
        *q = quantize_weight(v * inv);
    }
    s
}

/// `clamp(round_half_away(t), −127, 127)` without branches; equal to
/// `round_f32(t).clamp(−127.0, 127.0) as i8` for every `t`, NaN → 0.
#[inline]
pub fn quantize_weight(t: f32) -> i8 {
    // Outside ±128 the result is ±127 either way; inside, `t as i32` is exact truncation.
    let t = t.clamp(-128.0, 128.0);
    let ti = t as i32;
    let f = t - ti as f32;
    (ti + i32::from(f >= 0.5) - i32::from(f <= -0.5)).clamp(-127, 127) as i8
}
