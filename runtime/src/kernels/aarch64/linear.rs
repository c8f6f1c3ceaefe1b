//! NEON f32 linear head (`y = W·x + b`, `W` `[out, in]`), bit-identical to the reference:
//! 4 outputs in the lanes of one accumulator that starts at their biases, then per input
//! `j` in input order one `FMUL` (the column `W[o..o+4, j]` by `x[j]`) and one `FADD` —
//! each lane the reference's `acc + w·x`, a rounded product then a rounded sum (never
//! `FMLA`, whose single rounding would change the bits). Four inputs' columns come from
//! one `LD4` lane load per row (`w[o, j..j+4]` into lane `o` of four registers: the 4×4
//! transpose for free). Outputs past the last group of 4 take the reference.
use core::arch::aarch64::*;

use crate::kernels::reference;

/// Same contract as `reference::linear::linear_f32`.
pub(crate) fn linear_f32(x: &[f32], w: &[f32], bias: &[f32], y: &mut [f32]) {
    let (n, m) = (x.len(), y.len());
    let (w, bias) = (&w[..m * n], &bias[..m]);
    if n == 0 {
        return reference::linear::linear_f32(x, w, bias, y);
    }
    let full = m / 4 * 4;
    for ((ys, bs), rows) in y[..full]
        .chunks_exact_mut(4)
        .zip(bias.chunks_exact(4))
        .zip(w.chunks_exact(4 * n))
    {
        // SAFETY: NEON is baseline on this target (the module is cfg'd on it); `rows` holds
        // 4 rows of `n`, `bs` and `ys` 4 values (the chunks above).
        unsafe { group4(x, rows, bs, ys) };
    }
    if full < m {
        reference::linear::linear_f32(x, &w[full * n..], &bias[full..], &mut y[full..]);
    }
}

/// Outputs `o..o+4` (rows `rows[k·n..]`): `y = b`, then `y += W[·, j] · x[j]` per `j`.
///
/// # Safety
/// NEON; `rows.len() ≥ 4·x.len()`, `b.len() ≥ 4`, `y.len() ≥ 4`.
#[inline]
unsafe fn group4(x: &[f32], rows: &[f32], b: &[f32], y: &mut [f32]) {
    let n = x.len();
    let mut acc = vld1q_f32(b.as_ptr());
    let mut r = [0, 1, 2, 3].map(|k| rows.as_ptr().add(k * n));
    let mut xp = x.as_ptr();
    let zero = vdupq_n_f32(0.0);
    let mut c = float32x4x4_t(zero, zero, zero, zero);
    for _ in 0..n / 4 {
        let xv = vld1q_f32(xp);
        c = vld4q_lane_f32::<0>(r[0], c);
        c = vld4q_lane_f32::<1>(r[1], c);
        c = vld4q_lane_f32::<2>(r[2], c);
        c = vld4q_lane_f32::<3>(r[3], c);
        acc = vaddq_f32(acc, vmulq_laneq_f32::<0>(c.0, xv));
        acc = vaddq_f32(acc, vmulq_laneq_f32::<1>(c.1, xv));
        acc = vaddq_f32(acc, vmulq_laneq_f32::<2>(c.2, xv));
        acc = vaddq_f32(acc, vmulq_laneq_f32::<3>(c.3, xv));
        xp = xp.add(4);
        r = r.map(|p| p.add(4));
    }
    for _ in 0..n % 4 {
        let col = [*r[0], *r[1], *r[2], *r[3]];
        acc = vaddq_f32(acc, vmulq_n_f32(vld1q_f32(col.as_ptr()), *xp));
        xp = xp.add(1);
        r = r.map(|p| p.add(1));
    }
    vst1q_f32(y.as_mut_ptr(), acc);
}
