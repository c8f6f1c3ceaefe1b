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

    /// `Some([bias, mult, lsh, rsh, mask, zp, lo])` for the register sequence of the DSP
    /// table's output stage (`apply` step by step); `None` for an exotic channel.
    #[cfg(all(target_arch = "arm", target_feature = "dsp", target_feature = "mclass"))]
    #[inline(always)]
    pub(crate) fn regs(&self) -> Option<[u32; 7]> {
        (!self.exotic).then_some([
            self.bias as u32,
            self.mult as u32,
            self.lsh,
            self.rsh,
            self.mask as u32,
            self.zp as u32,
            self.lo as u32,
        ])
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

/// `reference::requant_weights::quantize_weight(t)` (round half away from zero, clamped to
/// ±127, NaN → 0) without a branch: `trunc(|t| + h)` with `h = 0.5 − 2^−25` (the float
/// below ½). Below ½ the sum stays at most `1 − 2^−24`; at `k + ½` it is `k + 1 − 2^−25`,
/// which rounds to `k + 1` (a tie to even at `k = 0`); and no sum rounds up across an
/// integer (that would need `|t|` within a quarter ulp of `k + ½`). `as i32` saturates and
/// maps NaN to 0; the clamp to `0..=127` is one `USAT`.
#[inline(always)]
pub(crate) fn quantize_weight_fast(t: f32) -> i8 {
    let a = f32::from_bits(t.to_bits() & 0x7fff_ffff);
    let r = ((a + f32::from_bits(0x3eff_ffff)) as i32).clamp(0, 127);
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
}
