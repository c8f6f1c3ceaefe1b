//! The int8 output stage (`quant::requant`) with the per-channel work hoisted out of the
//! per-element path, for the SIMD tables' scalar epilogues: one `SMULL` + carry for the
//! doubling high multiply and a mask compare for the rounding shift, no 64-bit division and
//! no per-element clamping of the shift. Bit-exact to `quant::requant` for every input
//! (the host tests below sweep the edges and random values).
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
}
