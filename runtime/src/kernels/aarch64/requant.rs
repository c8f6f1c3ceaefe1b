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
    /// `lo` in every byte (it fits: `−128 ≤ lo ≤ 127`).
    lo8: int8x16_t,
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
            // SAFETY: as above.
            lo8: unsafe { vdupq_n_s8(0) },
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
            lo8: vdupq_n_s8(q.lo.max(-128) as i8),
        }
    }

    /// `MBQM(acc + bias) + zp` (saturating) in i32 lanes: everything before the clamp.
    #[inline]
    #[target_feature(enable = "neon")]
    fn scaled(&self, acc: int32x4_t) -> int32x4_t {
        let x = vshlq_s32(vaddq_s32(acc, self.bias), self.lsh);
        let v = vqrdmulhq_s32(x, self.mult);
        // −1 for negative v when e > 0 (the sign bit of v & −e), else 0, added by one
        // `SSRA`: `SQRDMULH` never returns `i32::MIN` (`|2ab| ≤ 2^63 − 2^32` for opposite
        // signs), so `v − 1` cannot wrap and the saturating add it replaces never saturated.
        let d = vrshlq_s32(vsraq_n_s32::<31>(v, vandq_s32(v, self.ne)), self.ne);
        vqaddq_s32(d, self.zp)
    }

    /// `requant(acc[j], rq[j], q)` for `j < 4`, as 4 bytes (little-endian in the word).
    #[inline]
    #[target_feature(enable = "neon")]
    pub(super) fn apply(&self, acc: int32x4_t) -> u32 {
        let d = self.scaled(acc);
        let d = vminq_s32(vmaxq_s32(d, self.lo), vdupq_n_s32(127));
        let b = vmovn_s16(vcombine_s16(vmovn_s32(d), vmovn_s32(d)));
        vget_lane_u32::<0>(vreinterpret_u32_s8(b))
    }

    /// These constants with `add` folded into the bias (wrapping, as `requant` adds it):
    /// `r.with_bias(c).apply(a) == r.apply(a + c)`.
    #[inline]
    #[target_feature(enable = "neon")]
    pub(super) fn with_bias(self, add: int32x4_t) -> Self {
        Rq4 {
            bias: vaddq_s32(self.bias, add),
            ..self
        }
    }

    /// Moves the bias out, for sums that start from it: after `b = r.take_bias()`,
    /// `r.apply(a + b)` is the old `r.apply(a)` (the reference adds it wrapping too).
    #[inline]
    #[target_feature(enable = "neon")]
    pub(super) fn take_bias(&mut self) -> int32x4_t {
        core::mem::replace(&mut self.bias, vdupq_n_s32(0))
    }

    /// The output stage has its short form ([`Rq4::apply16_short`]): zero bias, no left
    /// shift, every right shift ≥ 1 and the zero point in i8.
    #[inline]
    #[target_feature(enable = "neon")]
    pub(super) fn short(&self) -> bool {
        let zp = vgetq_lane_s32::<0>(self.zp);
        vmaxvq_u32(vreinterpretq_u32_s32(self.bias)) == 0
            && vmaxvq_s32(self.lsh) == 0
            && vmaxvq_s32(self.ne) < 0
            && (-128..=127).contains(&zp)
    }

    /// Every `r[g].short()`, with one across-lanes reduction per condition instead of
    /// three per group (the packed conv's blocks ask it once per block).
    #[inline]
    #[target_feature(enable = "neon")]
    pub(super) fn all_short(r: &[Rq4]) -> bool {
        let Some(first) = r.first() else {
            return true;
        };
        let (mut bias, mut lsh, mut ne) = (vdupq_n_u32(0), first.lsh, first.ne);
        let mut zp_ok = true;
        for g in r {
            bias = vorrq_u32(bias, vreinterpretq_u32_s32(g.bias));
            lsh = vmaxq_s32(lsh, g.lsh);
            ne = vmaxq_s32(ne, g.ne);
            zp_ok &= (-128..=127).contains(&vgetq_lane_s32::<0>(g.zp));
        }
        vmaxvq_u32(bias) == 0 && vmaxvq_s32(lsh) == 0 && vmaxvq_s32(ne) < 0 && zp_ok
    }

    /// `MBQM(acc)` in the short form: with a right shift ≥ 1 in every lane the fix-up is
    /// −1 exactly for negative `v` (`v >> 31`), with no mask — one `SSRA` (`v ≠ i32::MIN`,
    /// see [`Rq4::scaled`]).
    #[inline]
    #[target_feature(enable = "neon")]
    fn scaled_short(&self, acc: int32x4_t) -> int32x4_t {
        let v = vqrdmulhq_s32(acc, self.mult);
        vrshlq_s32(vsraq_n_s32::<31>(v, v), self.ne)
    }

    /// [`Rq4::apply16`] when every `r[g].short()`: the zero point joins in i16 after the
    /// first saturating narrow, exact because `|zp| ≤ 128` cannot carry a saturated i16
    /// back into i8's range.
    #[inline]
    #[target_feature(enable = "neon")]
    pub(super) fn apply16_short(r: [&Rq4; 4], a: [int32x4_t; 4]) -> int8x16_t {
        let zp = vdupq_n_s16(vgetq_lane_s32::<0>(r[0].zp) as i16);
        let h0 = vqmovn_high_s32(vqmovn_s32(r[0].scaled_short(a[0])), r[1].scaled_short(a[1]));
        let h1 = vqmovn_high_s32(vqmovn_s32(r[2].scaled_short(a[2])), r[3].scaled_short(a[3]));
        let b = vqmovn_high_s16(vqmovn_s16(vqaddq_s16(h0, zp)), vqaddq_s16(h1, zp));
        vmaxq_s8(b, r[0].lo8)
    }

    /// The short form's constants of 24 channels (`r[g]` for channels `4g .. 4g + 4`) for an
    /// `asm!` output stage: the 6 multipliers, the 6 `−shift`s, then `r[0]`'s zero point in
    /// every i16 lane and its `lo` in every byte, as [`Rq4::apply16_short`] and
    /// [`Rq4::apply8_short`] use them.
    #[inline]
    #[target_feature(enable = "neon")]
    pub(super) fn short_consts24(r: &[Rq4; 6]) -> [int32x4_t; 14] {
        let mut k = [vdupq_n_s32(0); 14];
        for (g, r) in r.iter().enumerate() {
            k[g] = r.mult;
            k[6 + g] = r.ne;
        }
        k[12] = vreinterpretq_s32_s16(vdupq_n_s16(vgetq_lane_s32::<0>(r[0].zp) as i16));
        k[13] = vreinterpretq_s32_s8(r[0].lo8);
        k
    }

    /// The short form's `asm!` constants of `4·G` channels (`G ≤ 4`) straight from their rows
    /// `rq[..4·G]`, without building [`Rq4`]s: the sums' starts (the biases plus `add`), then
    /// the multipliers at `k[g]`, the `−shift`s at `k[4 + g]`, the zero point in every i16
    /// lane at `k[8]` and `lo` in every byte at `k[9]`, as [`Rq4::apply16_short`] uses them.
    /// `None` unless every channel has the short form ([`Rq4::short`]: a right shift ≥ 1,
    /// the zero point in i8; `q.lo ≤ 127` is the caller's).
    #[inline]
    #[target_feature(enable = "neon")]
    pub(super) fn short_rows<const G: usize>(
        rq: &[[i32; 3]],
        q: OutQ,
        add: [int32x4_t; G],
    ) -> Option<([int32x4_t; G], [int32x4_t; 10])> {
        let rq = &rq[..4 * G];
        if !(-128..=127).contains(&q.zero_point) {
            return None;
        }
        let (zero, top) = (vdupq_n_s32(0), vdupq_n_s32(31));
        let mut k = [zero; 10];
        let mut ne_max = vdupq_n_s32(i32::MIN);
        let init = core::array::from_fn(|g| {
            // SAFETY: 4 triples = 12 contiguous i32 of `rq` (`[[i32; 3]]` has no padding).
            let p = unsafe { vld3q_s32(rq[4 * g..].as_ptr() as *const i32) };
            // As `new`: the right shift `−shift` (wrapping) clamped to 0..=31, negated.
            let ne = vnegq_s32(vminq_s32(vmaxq_s32(vnegq_s32(p.2), zero), top));
            ne_max = vmaxq_s32(ne_max, ne);
            (k[g], k[4 + g]) = (p.1, ne);
            vaddq_s32(p.0, add[g])
        });
        // A right shift ≥ 1 (`ne < 0`) means `shift < 0`: no left shift either.
        if vmaxvq_s32(ne_max) >= 0 {
            return None;
        }
        k[8] = vreinterpretq_s32_s16(vdupq_n_s16(q.zero_point as i16));
        k[9] = vreinterpretq_s32_s8(vdupq_n_s8(q.lo.max(-128) as i8));
        Some((init, k))
    }

    /// The short form's constants of 16 channels for an `asm!` output stage, laid out as
    /// [`Rq4::short_rows`] gives them: the 4 multipliers, the 4 `−shift`s, `r[0]`'s zero point
    /// in every i16 lane and its `lo` in every byte.
    #[inline]
    #[target_feature(enable = "neon")]
    pub(super) fn short_consts16(r: &[Rq4; 4]) -> [int32x4_t; 10] {
        let mut k = [vdupq_n_s32(0); 10];
        for (g, r) in r.iter().enumerate() {
            k[g] = r.mult;
            k[4 + g] = r.ne;
        }
        k[8] = vreinterpretq_s32_s16(vdupq_n_s16(vgetq_lane_s32::<0>(r[0].zp) as i16));
        k[9] = vreinterpretq_s32_s8(r[0].lo8);
        k
    }

    /// [`Rq4::apply4`] when `self.short()`, as [`Rq4::apply16_short`].
    #[inline]
    #[target_feature(enable = "neon")]
    pub(super) fn apply4_short(&self, acc: &[int32x4_t; 4]) -> uint32x4_t {
        let zp = vdupq_n_s16(vgetq_lane_s32::<0>(self.zp) as i16);
        let d = acc.map(|a| self.scaled_short(a));
        let h0 = vqaddq_s16(vqmovn_high_s32(vqmovn_s32(d[0]), d[1]), zp);
        let h1 = vqaddq_s16(vqmovn_high_s32(vqmovn_s32(d[2]), d[3]), zp);
        vreinterpretq_u32_s8(vmaxq_s8(vqmovn_high_s16(vqmovn_s16(h0), h1), self.lo8))
    }

    /// [`Rq4::apply8`] when both `r[g].short()`, as [`Rq4::apply16_short`].
    #[inline]
    #[target_feature(enable = "neon")]
    pub(super) fn apply8_short(r: &[Rq4; 2], lo: int32x4_t, hi: int32x4_t) -> int8x8_t {
        let zp = vdupq_n_s16(vgetq_lane_s32::<0>(r[0].zp) as i16);
        let h = vqmovn_high_s32(vqmovn_s32(r[0].scaled_short(lo)), r[1].scaled_short(hi));
        vmax_s8(vqmovn_s16(vqaddq_s16(h, zp)), vget_low_s8(r[0].lo8))
    }

    /// 8 channels' output stage (`r[0]` for `lo`'s channels, `r[1]` for `hi`'s) as 8 bytes:
    /// the saturating narrows then one `SMAX` with `lo`, as in [`Rq4::apply4`].
    #[inline]
    #[target_feature(enable = "neon")]
    pub(super) fn apply8(r: &[Rq4; 2], lo: int32x4_t, hi: int32x4_t) -> int8x8_t {
        let h = vqmovn_high_s32(vqmovn_s32(r[0].scaled(lo)), r[1].scaled(hi));
        vmax_s8(vqmovn_s16(h), vget_low_s8(r[0].lo8))
    }

    /// 16 channels' output stage (`r[g]` for `a[g]`'s 4 channels) as 16 bytes, as
    /// [`Rq4::apply8`].
    #[inline]
    #[target_feature(enable = "neon")]
    pub(super) fn apply16(r: [&Rq4; 4], a: [int32x4_t; 4]) -> int8x16_t {
        let h0 = vqmovn_high_s32(vqmovn_s32(r[0].scaled(a[0])), r[1].scaled(a[1]));
        let h1 = vqmovn_high_s32(vqmovn_s32(r[2].scaled(a[2])), r[3].scaled(a[3]));
        vmaxq_s8(vqmovn_high_s16(vqmovn_s16(h0), h1), r[0].lo8)
    }

    /// [`Rq4::apply`] on 4 pixels' sums of the same 4 channels: word `i` of the result is
    /// `apply(acc[i])`. The clamp to `[lo, 127]` is the saturating narrows (`SQXTN` to
    /// −128..=127) then one byte `SMAX` with `lo` (`lo ≥ −128`, and `≤ 127` by `new`'s
    /// contract), for all 16 outputs at once.
    #[inline]
    #[target_feature(enable = "neon")]
    pub(super) fn apply4(&self, acc: &[int32x4_t; 4]) -> uint32x4_t {
        let d = acc.map(|a| self.scaled(a));
        let h0 = vqmovn_high_s32(vqmovn_s32(d[0]), d[1]);
        let h1 = vqmovn_high_s32(vqmovn_s32(d[2]), d[3]);
        let b = vqmovn_high_s16(vqmovn_s16(h0), h1);
        vreinterpretq_u32_s8(vmaxq_s8(b, self.lo8))
    }
}

/// NEON twin of `quant::requant_table`, bit-identical: 2 channels at a time in f64 lanes —
/// the same exact `s_x·s_w`, the same correctly rounded divisions as
/// `ChannelRequant::new_f64`. Its `round_f64` of the bias quotient is `FCVTAS` (round half
/// away, exact on the quotient) then a saturating narrow (the clamp to i32, NaN → 0), so
/// every bias is done in lanes; `quantize_multiplier`'s `frexp` and rounding work on the bit
/// pattern (`(mantissa + 2^21) >> 22`) with its saturations as selects. A pair whose
/// multiplier `s_x·s_w / s_y` is not a positive normal double (zero, negative, subnormal,
/// infinite or NaN scales), and the last channel of an odd count, take the scalar spec.
pub(crate) fn requant_table(bias: &[f32], s_x: f32, ws: &[f32], s_y: f32, out: &mut [[i32; 3]]) {
    let n = out.len();
    let (bias, ws) = (&bias[..n], &ws[..n]);
    let mut j = 0;
    while j + 2 <= n {
        let (b, w, o) = (&bias[j..j + 2], &ws[j..j + 2], &mut out[j..j + 2]);
        // SAFETY: NEON is baseline on this target; each slice holds 2 elements.
        if !unsafe { table2(b, s_x, w, s_y, o) } {
            crate::quant::requant_table(b, s_x, w, s_y, o);
        }
        j += 2;
    }
    crate::quant::requant_table(&bias[j..], s_x, &ws[j..], s_y, &mut out[j..]);
}

/// Two channels of [`requant_table`]; `false` (nothing written) when a multiplier is not a
/// positive normal double.
///
/// # Safety
/// NEON available; `bias`, `ws` and `out` hold at least 2 elements.
#[inline]
#[target_feature(enable = "neon")]
unsafe fn table2(bias: &[f32], s_x: f32, ws: &[f32], s_y: f32, out: &mut [[i32; 3]]) -> bool {
    debug_assert!(bias.len() >= 2 && ws.len() >= 2 && out.len() >= 2);
    // SAFETY: 2 f32 each (this function's contract).
    let (b, w) = unsafe {
        (
            vcvt_f64_f32(vld1_f32(bias.as_ptr())),
            vcvt_f64_f32(vld1_f32(ws.as_ptr())),
        )
    };
    // Exact in f64 (two 24-bit mantissas), so the order of the factors is moot.
    let sxw = vmulq_f64(vdupq_n_f64(s_x as f64), w);
    let m = vdivq_f64(sxw, vdupq_n_f64(s_y as f64));
    // Positive normal finite (NaN compares false).
    let ok = vandq_u64(
        vcgeq_f64(m, vdupq_n_f64(f64::MIN_POSITIVE)),
        vcltq_f64(m, vdupq_n_f64(f64::INFINITY)),
    );
    if vminvq_u32(vreinterpretq_u32_u64(ok)) == 0 {
        return false;
    }
    // bias: round_f64(b / sxw) clamped and cast to i32 (NaN → 0) where sxw > 0, else 0.
    let q = vdivq_f64(b, sxw);
    let bq = vqmovn_s64(vcvtaq_s64_f64(q));
    let bq = vand_s32(
        bq,
        vreinterpret_s32_u32(vmovn_u64(vcgtq_f64(sxw, vdupq_n_f64(0.0)))),
    );
    // frexp(m) = (mantissa / 2^53 with the implicit bit, exponent − 1022); round(q · 2^31)
    // of that positive mantissa rounds half up: (sig + 2^21) >> 22 ∈ [2^30, 2^31].
    let mi = vreinterpretq_u64_f64(m);
    let sig = vorrq_u64(
        vandq_u64(mi, vdupq_n_u64(0x000f_ffff_ffff_ffff)),
        vdupq_n_u64(1 << 52),
    );
    let qf = vshrq_n_u64::<22>(vaddq_u64(sig, vdupq_n_u64(1 << 21)));
    // 2^31 becomes 2^30 with the shift one higher (the mask is −1).
    let top = vceqq_u64(qf, vdupq_n_u64(1 << 31));
    let qf = vbslq_u64(top, vdupq_n_u64(1 << 30), qf);
    let shift = vsubq_s64(
        vsubq_s64(
            vreinterpretq_s64_u64(vshrq_n_u64::<52>(mi)),
            vdupq_n_s64(1022),
        ),
        vreinterpretq_s64_u64(top),
    );
    // shift < −31: (0, 0); shift > 30: (i32::MAX, 30).
    let low = vmovn_u64(vcltq_s64(shift, vdupq_n_s64(-31)));
    let high = vmovn_u64(vcgtq_s64(shift, vdupq_n_s64(30)));
    let mult = vbsl_s32(
        high,
        vdup_n_s32(i32::MAX),
        vreinterpret_s32_u32(vmovn_u64(qf)),
    );
    let shift = vbsl_s32(high, vdup_n_s32(30), vmovn_s64(shift));
    let mult = vbic_s32(mult, vreinterpret_s32_u32(low));
    let shift = vbic_s32(shift, vreinterpret_s32_u32(low));
    // SAFETY: `out` holds 2 triples = 6 contiguous i32 (`[[i32; 3]]` has no padding).
    unsafe { vst3_s32(out.as_mut_ptr() as *mut i32, int32x2x3_t(bq, mult, shift)) };
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::testnet::Rng;

    /// Every form of the output stage ([`Rq4::apply`], `apply4`, `apply8`, `apply16` and,
    /// where the constants allow it, their short forms) is `quant::requant` lane by lane, on
    /// accumulators at the i32 edges (`MIN`, `MIN + 1`, `MAX`, powers of two and their
    /// neighbours: where the rounding fix-up meets `SQRDMULH`'s saturation) and random ones,
    /// with multipliers incl. `MIN` and `MAX`, shifts −40..40 and `MIN`, random biases and
    /// zero points, both floors. Seed: `LORKD_SEED`.
    #[test]
    fn every_output_stage_is_requant() {
        let mut r = Rng::new(crate::test_seed());
        let edge = |r: &mut Rng| -> i32 {
            match r.below(4) {
                0 => [i32::MIN, i32::MIN + 1, i32::MAX, i32::MAX - 1, 0, 1, -1][r.below(7)],
                1 => {
                    let p = 1i32.wrapping_shl(r.below(32) as u32);
                    [p, p.wrapping_sub(1), p.wrapping_add(1), p.wrapping_neg()][r.below(4)]
                }
                _ => r.next_u64() as i32 >> r.below(24),
            }
        };
        let mut shorts = 0;
        for case in 0..20_000 {
            let short = case % 2 == 0;
            let rq: [[i32; 3]; 16] = core::array::from_fn(|_| {
                let mult = match r.below(8) {
                    0 => i32::MIN,
                    1 => i32::MAX,
                    2 => r.next_u64() as i32,
                    _ => (1 << 30) + r.below(1 << 30) as i32,
                };
                let shift = match (short, r.below(10)) {
                    (true, _) => -1 - r.below(31) as i32,
                    (false, 0) => i32::MIN,
                    (false, _) => r.below(81) as i32 - 40,
                };
                let bias = if short { 0 } else { edge(&mut r) };
                [bias, mult, shift]
            });
            let zp = if short || r.below(4) > 0 {
                r.below(256) as i32 - 128
            } else {
                edge(&mut r)
            };
            let q = OutQ {
                zero_point: zp,
                lo: if r.below(2) == 0 {
                    -128
                } else {
                    zp.clamp(-128, 127)
                },
            };
            let acc: [[i32; 4]; 4] =
                core::array::from_fn(|_| core::array::from_fn(|_| edge(&mut r)));
            let want =
                |g: usize, i: usize, j: usize| crate::quant::requant(acc[i][j], rq[4 * g + j], q);
            // SAFETY: NEON is baseline on this target; every load reads a 4-element array.
            unsafe {
                let rs: [Rq4; 4] = core::array::from_fn(|g| Rq4::new(&rq[4 * g..], q));
                let v: [int32x4_t; 4] = acc.map(|a| vld1q_s32(a.as_ptr()));
                let bytes = |w: u32| w.to_le_bytes().map(|b| b as i8);
                let is_short = rs.iter().all(|r| r.short());
                assert_eq!(is_short, short, "case {case}");
                assert_eq!(Rq4::all_short(&rs), is_short, "all_short, case {case}");
                // One group's verdict alone.
                assert_eq!(Rq4::all_short(&rs[1..2]), rs[1].short(), "case {case}");
                shorts += usize::from(is_short);
                for (i, &vi) in v.iter().enumerate() {
                    let got = bytes(rs[0].apply(vi));
                    assert_eq!(
                        got,
                        core::array::from_fn(|j| want(0, i, j)),
                        "apply, case {case}"
                    );
                }
                let words = |w: uint32x4_t| {
                    let mut o = [0u32; 4];
                    vst1q_u32(o.as_mut_ptr(), w);
                    o
                };
                let mut forms = std::vec![(rs[1].apply4(&v), "apply4")];
                if is_short {
                    forms.push((rs[1].apply4_short(&v), "apply4_short"));
                }
                for (w, name) in forms {
                    for (i, w) in words(w).into_iter().enumerate() {
                        let want: [i8; 4] = core::array::from_fn(|j| want(1, i, j));
                        assert_eq!(bytes(w), want, "{name}, case {case}");
                    }
                }
                // Pixel 0's sums as channel groups: group g gets `v[g]` under `rs[g]`.
                let want_g: [i8; 16] = core::array::from_fn(|c| want(c / 4, c / 4, c % 4));
                let mut b16 = [0i8; 16];
                vst1q_s8(
                    b16.as_mut_ptr(),
                    Rq4::apply16([&rs[0], &rs[1], &rs[2], &rs[3]], v),
                );
                assert_eq!(b16, want_g, "apply16, case {case}");
                let mut b8 = [0i8; 8];
                vst1_s8(b8.as_mut_ptr(), Rq4::apply8(&[rs[0], rs[1]], v[0], v[1]));
                assert_eq!(b8, want_g[..8], "apply8, case {case}");
                if is_short {
                    let refs = [&rs[0], &rs[1], &rs[2], &rs[3]];
                    vst1q_s8(b16.as_mut_ptr(), Rq4::apply16_short(refs, v));
                    assert_eq!(b16, want_g, "apply16_short, case {case}");
                    vst1_s8(
                        b8.as_mut_ptr(),
                        Rq4::apply8_short(&[rs[0], rs[1]], v[0], v[1]),
                    );
                    assert_eq!(b8, want_g[..8], "apply8_short, case {case}");
                }
            }
        }
        assert!(shorts > 5_000, "{shorts}");
    }

    /// [`requant_table`] gives `quant::requant_table`'s triples bit for bit (the shared
    /// check of every table's twin, `kernels::requant_check`). Seed: `LORKD_SEED`.
    #[test]
    fn requant_table_is_bit_exact() {
        // SAFETY: NEON is baseline here; the checker hands 2 elements each.
        crate::kernels::requant_check::requant_table_is_bit_exact(
            requant_table,
            2,
            |b, x, w, y, o| unsafe { table2(b, x, w, y, o) },
        );
    }
}
