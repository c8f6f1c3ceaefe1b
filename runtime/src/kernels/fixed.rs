//! The int8 output stage (`quant::requant`) with the per-channel work hoisted out of the
//! per-element path, for the SIMD tables' scalar epilogues: one `SMULL` + carry for the
//! doubling high multiply and a mask compare for the rounding shift, no 64-bit division and
//! no per-element clamping of the shift. Bit-exact to `quant::requant` for every input
//! (the host tests below sweep the edges and random values). Also the requantisation
//! tables with one reciprocal a table ([`requant_table`], the Cortex-M slot).
use crate::kernels::OutQ;
use crate::quant::requant;

/// One output channel's requantisation, prepared once per channel (or per tile).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Rq {
    bias: i32,
    mult: i32,
    /// Left shift applied before the multiply (`shift > 0`), taken mod 32 as
    /// `wrapping_shl` in the reference does.
    lsh: u32,
    /// Right rounding shift `−shift`, clamped to `0..=31`.
    rsh: u32,
    mask: i32,
    half: i32,
    zp: i32,
    lo: i32,
    /// `mult == i32::MIN` (the high multiply's saturating case) or `lo > 127` (the reference
    /// panics): such channels take `quant::requant` itself, with `[bias, mult, shift]` and
    /// `OutQ { zp, lo }` (it reads `q.lo` only as `q.lo.max(−128)`, which `lo` is).
    exotic: bool,
    shift: i32,
}

impl Rq {
    #[inline]
    pub(crate) fn new(rq: [i32; 3], q: OutQ) -> Self {
        let shift = rq[2];
        let lsh = if shift > 0 { shift as u32 & 31 } else { 0 };
        // `−shift` wraps for MIN (then clamps to 0) as the reference's release build does.
        let rsh = if shift > 0 {
            0
        } else {
            shift.wrapping_neg().clamp(0, 31) as u32
        };
        let mask = ((1i64 << rsh) - 1) as i32;
        Rq {
            bias: rq[0],
            mult: rq[1],
            lsh,
            rsh,
            mask,
            half: mask >> 1,
            zp: q.zero_point,
            lo: q.lo.max(-128),
            exotic: rq[1] == i32::MIN || q.lo > 127,
            shift,
        }
    }

    /// `quant::requant(acc, rq, q)`.
    #[inline(always)]
    pub(crate) fn apply(&self, acc: i32) -> i8 {
        if self.exotic {
            let q = OutQ {
                zero_point: self.zp,
                lo: self.lo,
            };
            return requant(acc, [self.bias, self.mult, self.shift], q);
        }
        let x = acc.wrapping_add(self.bias).wrapping_shl(self.lsh);
        // gemmlowp's nudge/truncation is `floor((a·b + 2^30) / 2^31)` (round half up) for
        // every product but MIN·MIN, excluded above; the sum cannot overflow i64.
        let v = ((x as i64 * self.mult as i64 + (1 << 30)) >> 31) as i32;
        // Rounding divide: round half away from zero, remainder against mask/2 (+1 if < 0).
        let r = v & self.mask;
        let t = self.half - (v >> 31);
        let d = (v >> self.rsh) + i32::from(r > t);
        d.saturating_add(self.zp).clamp(self.lo, 127) as i8
    }
}

/// The Cortex-M output stage's short form (`thumbv7em::dsp`, `short_asm`) for one output
/// stage `q` and sums `s = acc + bias` with `|acc| ≤ acc_max`, prepared once a layer:
/// [`ShortStage::channel`] takes a channel when `requant(acc, rq, q)` is
/// `max(SSAT8(ASR(SMMLAR(2s, mult, kz) − [s < 0], e)), lo)` with `kz = zp·2^e + 2^(e−1)`:
/// a right shift `e ∈ 1..=23`, `mult ≥ 0` (so `v = SMMULR(2s, mult)` has the sign of `s` or
/// is 0, where the fix-up `−[v < 0]` may read `−[s < 0]`), a zero point in `−128..=127`, a
/// floor `lo ≤ 127` and `|s| < 2^30` (so `2s` fits an i32); then no step wraps or saturates
/// before `SSAT`. The host test `short_stage_model` checks the identity on a model of the
/// instructions.
#[derive(Clone, Copy, Debug)]
pub(crate) struct ShortStage {
    zp: i32,
    /// `|bias|` must be below this: `2^30 − acc_max`, or 0 when `q` has no short form.
    lim: u32,
}

impl ShortStage {
    pub(crate) fn new(q: OutQ, acc_max: u32) -> Self {
        let ok = (-128..=127).contains(&q.zero_point) && q.lo <= 127;
        ShortStage {
            zp: q.zero_point,
            lim: if ok {
                (1u32 << 30).saturating_sub(acc_max)
            } else {
                0
            },
        }
    }

    /// `Some((kz, e))` when channel `rq = [bias, mult, shift]` takes the short form.
    #[inline(always)]
    pub(crate) fn channel(&self, [bias, mult, shift]: [i32; 3]) -> Option<(i32, u32)> {
        // `e − 1 ∈ 0..23` in one compare (`shift = MIN` wraps to a huge `e − 1`).
        let e = shift.wrapping_neg() as u32;
        (e.wrapping_sub(1) < 23 && mult >= 0 && bias.unsigned_abs() < self.lim)
            .then(|| ((self.zp << e) + (1 << (e - 1)), e))
    }
}

/// `reference::requant_weights::quantize_weight(t)` (round half away from zero, clamped to
/// ±127, NaN → 0) without a branch: `trunc(|t| + h)` with `h` = [`crate::quant::HALF_BELOW`]
/// (the float below ½, whose doc has the argument). `as i32` saturates and maps NaN to 0;
/// the clamp to `0..=127` is one `USAT`.
#[inline(always)]
pub(crate) fn quantize_weight_fast(t: f32) -> i8 {
    let a = f32::from_bits(t.to_bits() & 0x7fff_ffff);
    let r = ((a + crate::quant::HALF_BELOW) as i32).clamp(0, 127);
    (if t.is_sign_negative() { -r } else { r }) as i8
}

/// `quant::requant_table` with the work of the shared scales done once a table: the
/// Cortex-M table's `requant_table` slot (the tables the select-time cache cannot hold are
/// built at every inference there). Per channel: `quant::int_bias` as `ChannelRequant::new`
/// runs it, and the multiplier's 31-bit quotient `mx·mw·2^z / my` in one division by the
/// table's invariant `my` with a precomputed reciprocal ([`MulRecip`]) instead of five
/// hardware divides; channels off the integer path, and tables whose `s_x` or `s_y` is not
/// a positive normal float, take the spec itself. Bit-identical (host tests
/// against the double-precision spec; the board self-checks against the reference slot).
pub(crate) fn requant_table(bias: &[f32], s_x: f32, ws: &[f32], s_y: f32, out: &mut [[i32; 3]]) {
    let Some(m) = MulRecip::new(s_x, s_y) else {
        return crate::quant::requant_table(bias, s_x, ws, s_y, out);
    };
    for (j, r) in out.iter_mut().enumerate().take(bias.len().min(ws.len())) {
        match m.channel(bias[j], ws[j]) {
            Some(t) => *r = t,
            None => crate::quant::requant_table(
                &bias[j..j + 1],
                s_x,
                &ws[j..j + 1],
                s_y,
                core::slice::from_mut(r),
            ),
        }
    }
}

/// A table's `s_x = mx·2^ex` and `s_y = my·2^ey` split once, with the reciprocal of the
/// normalised divisor `d = my·2^8 ∈ [2^31, 2^32)`: `v = ⌊(2^64 − 1)/d⌋ − 2^32` (Möller and
/// Granlund, "Improved division by invariant integers", 2011, algorithm 4).
#[derive(Clone, Copy, Debug)]
pub(crate) struct MulRecip {
    s_x: f32,
    mx: u32,
    ex: i32,
    my: u32,
    ey: i32,
    d: u32,
    v: u32,
}

impl MulRecip {
    /// `None` unless both scales are positive normal floats (the spec's integer path).
    pub(crate) fn new(s_x: f32, s_y: f32) -> Option<Self> {
        let ((mx, ex), (my, ey)) = (
            crate::quant::normal_parts(s_x)?,
            crate::quant::normal_parts(s_y)?,
        );
        let d = my << 8;
        let v = (u64::MAX / d as u64 - (1 << 32)) as u32;
        Some(MulRecip {
            s_x,
            mx,
            ex,
            my,
            ey,
            d,
            v,
        })
    }

    /// `ChannelRequant::new(bias, s_x, s_w, s_y)` as a triple when it takes the integer
    /// path (`s_w` positive normal, bias zero or normal); `None` otherwise.
    #[inline]
    pub(crate) fn channel(&self, bias: f32, s_w: f32) -> Option<[i32; 3]> {
        let (mw, ew) = crate::quant::normal_parts(s_w)?;
        let b = crate::quant::int_bias(bias, (self.s_x, self.mx, self.ex), (s_w, mw, ew))?;
        let (m, shift) = self.multiplier(mw, ew);
        Some([b, m, shift])
    }

    /// `quant::int_multiplier((mx, ex), (mw, ew), (my, ey))`: the same `e0`, quotient,
    /// rounding and saturations, the quotient by [`div_preinv`].
    #[inline]
    pub(crate) fn multiplier(&self, mw: u32, ew: i32) -> (i32, i32) {
        let p = self.mx as u64 * mw as u64; // [2^46, 2^48)
        let dm = self.my as u64;
        // floor(log2(p / my)) ∈ {22, 23, 24}.
        let e0 = if p >= dm << 24 {
            24
        } else if p >= dm << 23 {
            23
        } else {
            22
        };
        // q = ⌊p·2^(30 − e0) / my⌋ = ⌊p·2^(38 − e0) / d⌋ ∈ [2^30, 2^31): the numerator is
        // below 2^64 and its high word below d (q < 2^31), as the division needs.
        let n = p << (38 - e0);
        let (q, r8) = div_preinv((n >> 32) as u32, n as u32, self.d, self.v);
        // Both numerator and d carry the factor 2^8.
        let r = r8 >> 8;
        // `quant::rounds_up(q, r, my)` for q ∈ [2^30, 2^31): up when 2r ≥ my, or when the
        // gap g = my − 2r satisfies g·2^22 ≤ my (its ulp test at e = 30; g < 2^26 holds).
        let up = 2 * r >= self.my || self.my - 2 * r <= self.my >> 22;
        let q = q as i64 + i64::from(up);
        crate::quant::multiplier_parts(q, e0 + self.ex + ew - self.ey + 1)
    }
}

/// `(⌊(u1·2^32 + u0) / d⌋, remainder)` for `d ≥ 2^31`, `u1 < d`, with `v` the reciprocal of
/// [`MulRecip`]: one 32×32→64 multiply, a multiply-subtract and two adjustments
/// (Möller–Granlund algorithm 4, the second adjustment rarely taken).
#[inline]
fn div_preinv(u1: u32, u0: u32, d: u32, v: u32) -> (u32, u32) {
    let qq = (v as u64 * u1 as u64).wrapping_add((((u1 as u64) + 1) << 32) | u0 as u64);
    let (mut q1, q0) = ((qq >> 32) as u32, qq as u32);
    let mut r = u0.wrapping_sub(q1.wrapping_mul(d));
    if r > q0 {
        q1 = q1.wrapping_sub(1);
        r = r.wrapping_add(d);
    }
    if r >= d {
        q1 = q1.wrapping_add(1);
        r -= d;
    }
    (q1, r)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::reference::requant_weights::quantize_weight;

    #[test]
    fn quantize_weight_fast_matches_reference() {
        let check = |t: f32| {
            assert_eq!(
                quantize_weight_fast(t),
                quantize_weight(t),
                "{t:e} ({:#x})",
                t.to_bits()
            )
        };
        for t in [
            0.0,
            -0.0,
            f32::NAN,
            -f32::NAN,
            f32::INFINITY,
            f32::NEG_INFINITY,
            f32::MAX,
            f32::MIN,
        ] {
            check(t);
        }
        // Every float within 4096 ulps of each rounding edge k + 0.5 and of each integer.
        for k in -140i32..140 {
            for c in [k as f32 + 0.5, k as f32] {
                let b = c.to_bits();
                for d in 0..4096u32 {
                    check(f32::from_bits(b.wrapping_add(d)));
                    check(f32::from_bits(b.wrapping_sub(d)));
                }
            }
        }
        // Every 9973rd bit pattern (all exponents, both signs).
        let mut b = 0u32;
        while let Some(n) = b.checked_add(9973) {
            check(f32::from_bits(b));
            b = n;
        }
    }

    /// The Cortex-M `round8` lanes (`thumbv7em/rebuild.rs`, built for the board only):
    /// `x = trunc(2t)` (its fixed-point `VCVT`: exact scaling, toward zero, NaN → 0), then
    /// `SHADD16(x, [x ≥ 0])` on the low halfword, the low byte stored. Equal to the
    /// reference for every `|t| < 127.5` and NaN (the loop's domain); checked here near
    /// every rounding edge and integer and on a stride of every pattern (all 2^31 of them
    /// once, by hand: 0 differ).
    #[test]
    fn round_lanes_match_quantize_weight() {
        let lanes = |t: f32| -> i8 {
            let x = (t as f64 * 2.0) as i32 as i16;
            let ge = 1 & !((x as u16 as i32) >> 15);
            ((x as i32 + ge) >> 1) as i8
        };
        let check = |t: f32| {
            if t.abs() < 127.5 || t.is_nan() {
                assert_eq!(lanes(t), quantize_weight(t), "{t:e} ({:#x})", t.to_bits());
            }
        };
        for k in -256i32..=256 {
            let b = (k as f32 * 0.5).to_bits();
            for d in 0..4096u32 {
                check(f32::from_bits(b.wrapping_add(d)));
                check(f32::from_bits(b.wrapping_sub(d)));
            }
        }
        let mut b = 0u32;
        while let Some(n) = b.checked_add(997) {
            check(f32::from_bits(b));
            b = n;
        }
    }

    struct Xs(u64);
    impl Xs {
        fn next(&mut self) -> u32 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            (self.0 >> 16) as u32
        }
    }

    #[test]
    fn rq_matches_reference_requant() {
        let seed = std::env::var("LORKD_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap()
                    .as_nanos() as u64
            })
            | 1;
        println!("seed = {seed}");
        let mut r = Xs(seed);
        let edges = [
            i32::MIN,
            i32::MIN + 1,
            -(1 << 30),
            -1,
            0,
            1,
            1 << 30,
            i32::MAX - 1,
            i32::MAX,
        ];
        let pick = |r: &mut Xs| {
            if r.next().is_multiple_of(4) {
                edges[r.next() as usize % edges.len()]
            } else {
                r.next() as i32
            }
        };
        for _ in 0..200_000 {
            let shift = match r.next() % 4 {
                0 => (r.next() % 80) as i32 - 40,
                _ => (r.next() % 20) as i32 - 16,
            };
            let rq = [pick(&mut r), pick(&mut r), shift];
            let lo = match r.next() % 3 {
                0 => -128,
                1 => (r.next() % 256) as i32 - 128,
                _ => -300,
            };
            let q = OutQ {
                zero_point: match r.next() % 4 {
                    0 => pick(&mut r),
                    _ => (r.next() % 256) as i32 - 128,
                },
                lo,
            };
            let acc = pick(&mut r);
            let p = Rq::new(rq, q);
            assert_eq!(
                p.apply(acc),
                requant(acc, rq, q),
                "acc {acc} rq {rq:?} {q:?}"
            );
        }
    }

    /// [`div_preinv`] is the exact quotient and remainder: random and extreme divisors
    /// (2^31, 2^32 − 1, `my·2^8` at both ends) and numerators (0, `d·2^32 − 1`, random).
    /// Seed: `LORKD_SEED`.
    #[test]
    fn div_preinv_is_exact() {
        let mut r = crate::engine::testnet::Rng::new(crate::test_seed());
        for case in 0..200_000u32 {
            let d = match case % 5 {
                0 => 1 << 31,
                1 => u32::MAX,
                2 => ((1 << 24) - 1) << 8,
                _ => (r.next_u64() as u32) | 1 << 31,
            };
            let v = (u64::MAX / d as u64 - (1 << 32)) as u32;
            let n = match case % 7 {
                0 => 0,
                1 => ((d as u64) << 32) - 1,
                2 => (d as u64) << 31,
                _ => r.next_u64() % ((d as u64) << 32),
            };
            let (q, rem) = div_preinv((n >> 32) as u32, n as u32, d, v);
            assert_eq!(
                (q as u64, rem as u64),
                (n / d as u64, n % d as u64),
                "n {n} d {d}"
            );
        }
    }

    /// [`MulRecip::multiplier`] is `quant::int_multiplier` for every mantissa triple tried:
    /// random, all-ones and power-of-two mantissas, exponents that reach both saturations.
    /// Seed: `LORKD_SEED`.
    #[test]
    fn recip_multiplier_is_int_multiplier() {
        let mut r = crate::engine::testnet::Rng::new(crate::test_seed());
        let mant = |r: &mut crate::engine::testnet::Rng| match r.next_u64() % 6 {
            0 => 1 << 23,
            1 => (1 << 24) - 1,
            _ => (1 << 23) | (r.next_u64() as u32 & 0x7f_ffff),
        };
        for _ in 0..200_000 {
            let (mx, mw, my) = (mant(&mut r), mant(&mut r), mant(&mut r));
            let e = |r: &mut crate::engine::testnet::Rng| 1 + (r.next_u64() % 254) as i32 - 150;
            let (ex, ew, ey) = (e(&mut r), e(&mut r), e(&mut r));
            let sx = f32::from_bits(((ex + 150) as u32) << 23 | (mx & 0x7f_ffff));
            let sy = f32::from_bits(((ey + 150) as u32) << 23 | (my & 0x7f_ffff));
            let m = MulRecip::new(sx, sy).unwrap();
            assert_eq!(
                m.multiplier(mw, ew),
                crate::quant::int_multiplier((mx, ex), (mw, ew), (my, ey)),
                "mx {mx} ex {ex} mw {mw} ew {ew} my {my} ey {ey}"
            );
        }
    }

    /// [`MulRecip::multiplier`] on quotients just below a half (`p·2^z mod my = (my − g)/2`
    /// for gaps `g` of 1..=12, built by a modular inverse), where the double rounding's ulp
    /// test decides: the same pair as `quant::int_multiplier` and as the double-precision
    /// spec. Seed: `LORKD_SEED`.
    #[test]
    fn recip_multiplier_near_half() {
        fn inv(a: i64, m: i64) -> Option<i64> {
            let (mut r0, mut r1, mut t0, mut t1) = (m, a.rem_euclid(m), 0i64, 1i64);
            while r1 != 0 {
                let q = r0 / r1;
                (r0, r1) = (r1, r0 - q * r1);
                (t0, t1) = (t1, t0 - q * t1);
            }
            (r0 == 1).then(|| t0.rem_euclid(m))
        }
        let mut r = crate::engine::testnet::Rng::new(crate::test_seed());
        let mut hits = 0;
        for _ in 0..4_000 {
            let mx = (1 << 23) | (r.next_u64() as u32 & 0x7f_ffff);
            let my = (1 << 23) | (r.next_u64() as u32 & 0x7f_ffff);
            for g in 1..=12u32 {
                if !(my - g).is_multiple_of(2) {
                    continue;
                }
                let rem = ((my - g) / 2) as i64;
                for z in 6..=8 {
                    let Some(k) = inv(((mx as i64) << z) % my as i64, my as i64) else {
                        continue;
                    };
                    let mw0 = (rem * k).rem_euclid(my as i64) as u32;
                    for mw in [mw0, mw0 + my] {
                        let p = mx as u64 * mw as u64;
                        let e0 = if p >= (my as u64) << 24 {
                            24
                        } else if p >= (my as u64) << 23 {
                            23
                        } else {
                            22
                        };
                        if !(1 << 23..1 << 24).contains(&mw) || 30 - e0 != z {
                            continue;
                        }
                        hits += 1;
                        let (ex, ew, ey) = (-30, -30, -23); // shift e0 − 36: in range
                        let f = |m: u32, e: i32| {
                            f32::from_bits(((e + 150) as u32) << 23 | (m & 0x7f_ffff))
                        };
                        let (sx, sw, sy) = (f(mx, ex), f(mw, ew), f(my, ey));
                        let got = MulRecip::new(sx, sy).unwrap().multiplier(mw, ew);
                        let what = format!("mx {mx} mw {mw} my {my} g {g}");
                        let want = crate::quant::int_multiplier((mx, ex), (mw, ew), (my, ey));
                        assert_eq!(got, want, "{what}");
                        let spec = crate::quant::ChannelRequant::new_f64(0.0, sx, sw, sy);
                        assert_eq!(got, (spec.multiplier, spec.shift), "{what}");
                    }
                }
            }
        }
        assert!(hits > 5_000, "{hits} near-half quotients");
    }

    /// [`ShortStage`]'s identity on a model of the Armv7E-M instructions (`SMMLAR`: the
    /// high word of `acc·2^32 + a·b + 2^31`; `SSAT #8`): equal to `quant::requant` wherever
    /// `ShortStage::channel` takes the channel, on random sums near zero, at the `|s| < 2^30`
    /// bound, on rounding ties, for every shift it takes and both floors; and it accepts
    /// most ordinary channels. Seed: `LORKD_SEED`.
    #[test]
    fn short_stage_model() {
        let smmlar = |a: i32, b: i32, acc: i32| {
            (((acc as i64) << 32)
                .wrapping_add(a as i64 * b as i64)
                .wrapping_add(1 << 31)
                >> 32) as i32
        };
        let mut r = crate::engine::testnet::Rng::new(crate::test_seed());
        let (mut taken, mut cases) = (0, 0);
        for _ in 0..400_000 {
            let u = r.next_u64();
            let mult = match u % 8 {
                0 => [0, 1, 1 << 30, i32::MAX, -1, -(1 << 30), i32::MIN + 1][r.below(7)],
                1 => r.next_u64() as i32,
                _ => (1 << 30) | (r.next_u64() as i32 & 0x3fff_ffff),
            };
            let shift = match (u >> 3) % 8 {
                0 => r.below(70) as i32 - 40,
                _ => -(r.below(24) as i32) - 1,
            };
            let acc_max = [0u32, 1 << 22, 9 << 22, 200 << 22, 1 << 30, u32::MAX][r.below(6)];
            let bias = match (u >> 6) % 4 {
                0 => r.next_u64() as i32,
                1 => (r.next_u64() as i32) >> 8,
                _ => (r.next_u64() as i32) >> 24,
            };
            let acc = match (u >> 8) % 4 {
                // Near zero (where `v` is 0 and `s` negative), at the bound.
                0 => (r.below(9) as i32 - 4).wrapping_sub(bias),
                1 => {
                    let lim = (1i64 << 30) - 1 - i64::from(bias.unsigned_abs());
                    (if r.below(2) == 0 { lim } else { -lim }).clamp(-(1 << 30), 1 << 30) as i32
                }
                // `2s·mult` landing on a tie of the shift: `s·mult = k·2^(30+e) ± 2^(29+e)`
                // for `mult = 2^30` reads `s = k·2^e ± 2^(e−1)`.
                2 => {
                    let e = (-shift).clamp(1, 29);
                    ((r.next_u64() as i32) >> 12 >> e << e)
                        .wrapping_add(1 << (e - 1))
                        .wrapping_sub(bias)
                }
                _ => (r.next_u64() as i32) >> r.below(32),
            };
            let zp = r.below(256) as i32 - 128;
            let q = OutQ {
                zero_point: if r.below(50) == 0 { 300 } else { zp },
                lo: if r.below(2) == 0 { -128 } else { zp },
            };
            let rq = [bias, mult, shift];
            let Some((kz, e)) = ShortStage::new(q, acc_max).channel(rq) else {
                continue;
            };
            cases += 1;
            if acc.unsigned_abs() > acc_max {
                continue;
            }
            taken += 1;
            let s = acc.wrapping_add(bias);
            let t = s << 1;
            let v = (smmlar(t, mult, kz) - (t as u32 >> 31) as i32) >> e;
            let got = v.clamp(-128, 127).max(q.lo) as i8;
            let want = crate::quant::requant(acc, rq, q);
            assert_eq!(got, want, "acc {acc} rq {rq:?} {q:?} acc_max {acc_max}");
        }
        // The extremes together: every shift, zero points at and past the i8 ends, the
        // largest multipliers, sums at the bound.
        for e in 0..=25 {
            for zp in [-129, -128, 127, 128, 200] {
                for mult in [0, 1, (1 << 30) + 1, i32::MAX] {
                    for acc in [-(1 << 30) + 1, -(1 << 29), -1, 0, 1, 1 << 29, (1 << 30) - 1] {
                        let (rq, q) = (
                            [0, mult, -e],
                            OutQ {
                                zero_point: zp,
                                lo: -128,
                            },
                        );
                        let Some((kz, e)) = ShortStage::new(q, 1 << 29).channel(rq) else {
                            continue;
                        };
                        taken += 1;
                        let t = acc << 1;
                        let v = (smmlar(t, mult, kz) - (t as u32 >> 31) as i32) >> e;
                        let got = v.clamp(-128, 127) as i8;
                        assert_eq!(got, crate::quant::requant(acc, rq, q), "{acc} {rq:?} {q:?}");
                    }
                }
            }
        }
        println!("{taken} of {cases} taken");
        assert!(taken > 50_000 && cases > 100_000, "{taken} of {cases}");
    }

    /// [`requant_table`] gives the spec's triples bit for bit (the shared check of the
    /// tables' twins); its per-channel step must take the integer path for most channels.
    /// Seed: `LORKD_SEED`.
    #[test]
    fn requant_table_is_bit_exact() {
        crate::kernels::requant_check::requant_table_is_bit_exact(
            requant_table,
            1,
            |b, x, w, y, o| match MulRecip::new(x, y).and_then(|m| m.channel(b[0], w[0])) {
                Some(t) => {
                    o[0] = t;
                    true
                }
                None => false,
            },
        );
    }
}
