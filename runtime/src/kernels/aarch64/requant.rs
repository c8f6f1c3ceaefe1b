//! NEON int8 output stage: `quant::requant` on 4 channels at once, bit-exact.
//! `SQRDMULH` is gemmlowp's saturating rounding doubling high multiply itself; the
//! round-half-away divide is `SRSHL` by `−e` after subtracting 1 from negative values
//! (gemmlowp's NEON fix-up), then a saturating add of the zero point and the clamp.
use core::arch::aarch64::*;

use crate::kernels::OutQ;

/// `out[j] = requant(acc[j], rq[j], q)` for `j < 4`.
///
/// # Safety
/// NEON available (baseline); `rq` and `out` hold at least 4 elements; `q.lo ≤ 127` (the
/// reference panics otherwise: callers take the scalar path then).
#[inline]
#[target_feature(enable = "neon")]
pub(super) unsafe fn requant4(acc: int32x4_t, rq: &[[i32; 3]], q: OutQ, out: &mut [i8]) {
    // SAFETY: 4 triples = 12 contiguous i32 (`[[i32; 3]]` has no padding), in bounds.
    let p = unsafe { vld3q_s32(rq.as_ptr() as *const i32) };
    let zero = vdupq_n_s32(0);
    let x = vaddq_s32(acc, p.0);
    // Left shift `shift > 0` taken mod 32 (`wrapping_shl`); right shift `−shift` (wrapping
    // for MIN) clamped to 0..=31.
    let lsh = vandq_s32(vmaxq_s32(p.2, zero), vdupq_n_s32(31));
    let x = vshlq_s32(x, lsh);
    let v = vqrdmulhq_s32(x, p.1);
    let rsh = vminq_s32(vmaxq_s32(vnegq_s32(p.2), zero), vdupq_n_s32(31));
    let ne = vnegq_s32(rsh);
    // −1 for negative v when e > 0 (the sign bit of v & −e), else 0.
    let fix = vshrq_n_s32::<31>(vandq_s32(v, ne));
    let d = vrshlq_s32(vqaddq_s32(v, fix), ne);
    let d = vqaddq_s32(d, vdupq_n_s32(q.zero_point));
    let d = vminq_s32(vmaxq_s32(d, vdupq_n_s32(q.lo.max(-128))), vdupq_n_s32(127));
    let b = vmovn_s16(vcombine_s16(vmovn_s32(d), vmovn_s32(d)));
    let word = vget_lane_u32::<0>(vreinterpret_u32_s8(b));
    for (o, b) in out[..4].iter_mut().zip(word.to_le_bytes()) {
        *o = b as i8;
    }
}
