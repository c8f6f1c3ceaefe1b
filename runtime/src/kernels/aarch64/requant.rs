//! NEON int8 output stage: `quant::requant` on 4 channels at once, bit-exact.
//! `SQRDMULH` is gemmlowp's saturating rounding doubling high multiply itself; the
//! round-half-away divide is `SRSHL` by `−e` after subtracting 1 from negative values
//! (gemmlowp's NEON fix-up), then a saturating add of the zero point and the clamp.
use core::arch::aarch64::*;

use crate::kernels::OutQ;

/// The per-channel constants of 4 channels' output stage, derived once ([`Rq4::new`]) for
/// all the pixels that use them.
#[derive(Clone, Copy)]
pub(super) struct Rq4 {
    bias: int32x4_t,
    mult: int32x4_t,
    /// Left shift `shift > 0` taken mod 32 (`wrapping_shl`).
    lsh: int32x4_t,
    /// Minus the right shift `−shift` (wrapping for MIN) clamped to 0..=31.
    ne: int32x4_t,
    zp: int32x4_t,
    lo: int32x4_t,
}

impl Default for Rq4 {
    fn default() -> Self {
        // SAFETY: NEON is baseline on this target (the module is cfg'd on it).
        let z = unsafe { vdupq_n_s32(0) };
        Rq4 {
            bias: z,
            mult: z,
            lsh: z,
            ne: z,
            zp: z,
            lo: z,
        }
    }
}

impl Rq4 {
    /// The constants of `rq[..4]` (4 triples at least) for the output stage `q`; `q.lo ≤ 127`
    /// (the reference panics otherwise: callers take the scalar path then).
    #[inline]
    #[target_feature(enable = "neon")]
    pub(super) fn new(rq: &[[i32; 3]], q: OutQ) -> Self {
        let rq = &rq[..4];
        // SAFETY: 4 triples = 12 contiguous i32 (`[[i32; 3]]` has no padding), in bounds.
        let p = unsafe { vld3q_s32(rq.as_ptr() as *const i32) };
        let zero = vdupq_n_s32(0);
        let lsh = vandq_s32(vmaxq_s32(p.2, zero), vdupq_n_s32(31));
        let rsh = vminq_s32(vmaxq_s32(vnegq_s32(p.2), zero), vdupq_n_s32(31));
        Rq4 {
            bias: p.0,
            mult: p.1,
            lsh,
            ne: vnegq_s32(rsh),
            zp: vdupq_n_s32(q.zero_point),
            lo: vdupq_n_s32(q.lo.max(-128)),
        }
    }

    /// `requant(acc[j], rq[j], q)` for `j < 4`, as 4 bytes (little-endian in the word).
    #[inline]
    #[target_feature(enable = "neon")]
    pub(super) fn apply(&self, acc: int32x4_t) -> u32 {
        let x = vshlq_s32(vaddq_s32(acc, self.bias), self.lsh);
        let v = vqrdmulhq_s32(x, self.mult);
        // −1 for negative v when e > 0 (the sign bit of v & −e), else 0.
        let fix = vshrq_n_s32::<31>(vandq_s32(v, self.ne));
        let d = vrshlq_s32(vqaddq_s32(v, fix), self.ne);
        let d = vqaddq_s32(d, self.zp);
        let d = vminq_s32(vmaxq_s32(d, self.lo), vdupq_n_s32(127));
        let b = vmovn_s16(vcombine_s16(vmovn_s32(d), vmovn_s32(d)));
        vget_lane_u32::<0>(vreinterpret_u32_s8(b))
    }
}

/// `out[j] = requant(acc[j], rq[j], q)` for `j < 4`.
///
/// # Safety
/// NEON available (baseline); `rq` and `out` hold at least 4 elements; `q.lo ≤ 127` (the
/// reference panics otherwise: callers take the scalar path then).
#[inline]
#[target_feature(enable = "neon")]
pub(super) unsafe fn requant4(acc: int32x4_t, rq: &[[i32; 3]], q: OutQ, out: &mut [i8]) {
    let word = Rq4::new(rq, q).apply(acc);
    for (o, b) in out[..4].iter_mut().zip(word.to_le_bytes()) {
        *o = b as i8;
    }
}
