//! The Cortex-M table's `requant_table` slot: `quant::requant_table`'s triples (bit for bit)
//! with the per-channel work in 32-bit integers and single
//! floats. Per table (both scales positive normal): `s_x = mx·2^ex`, `s_y = my·2^ey`, the
//! reciprocal `K = ⌊mx·2^31 / my⌋` and the weight mantissas at which the multiplier's
//! exponent steps (`T24`, `T23`), by 32-bit long division. Per channel:
//! - the multiplier `⌊mx·mw·2^z / my⌋` (`z = 30 − e0`) from one `UMULL` by `K`, at most two
//!   below the quotient, corrected by its remainder computed mod 2^32 (it is below
//!   `3·my < 2^26`), then `quant::int_multiplier`'s rounding and saturations;
//! - the bias `round_half_away(RNE53(|bias| / (s_x·s_w)))` from the single-precision
//!   estimate `est = (|bias| / s_x) / s_w` (two `VDIV`s, relative error below 2^−22.9) where
//!   it is far enough from every half-integer (see [`bias_fast`]), else the exact
//!   `quant::int_bias`.
//!
//! ~86 instructions a row where the former `fixed::requant_table` spent ~197 (64-bit
//! remainders, a Möller–Granlund division). Channels off the integer path and tables whose
//! `s_x` or `s_y` is not a positive normal float take the spec itself. Plain Rust (IEEE single operations, Rust's saturating casts): the host tests run
//! this file against the spec, the board self-checks against the portable slot.
use crate::quant::{int_bias, normal_parts};

/// `⌊n·2^sh / d⌋` and its remainder for `n < 2^24 ≤ … `, `0 < d < 2^24` and a quotient
/// below 2^32, one 32-bit divide per 8 bits (the remainder stays below `d`).
#[inline]
fn div_shl(n: u32, d: u32, mut sh: u32) -> (u32, u32) {
    let mut q = n / d;
    let mut r = n - q * d;
    while sh > 0 {
        let k = sh.min(8);
        sh -= k;
        let t = r << k;
        let qd = t / d;
        r = t - qd * d;
        q = (q << k) | qd;
    }
    (q, r)
}

/// A table's shared scales, split once.
#[derive(Clone, Copy, Debug)]
struct Table {
    s_x: f32,
    mx: u32,
    ex: i32,
    my: u32,
    /// `mx·2^6` mod 2^32 (the remainder's numerator, mod 2^32).
    mx6: u32,
    /// `my − ⌊my / 2^22⌋`: the quotient rounds up iff twice its remainder reaches this.
    up: u32,
    /// The shift less `s` and the weight scale's exponent field: `22 + ex − ey + 1 − 150`.
    base: i32,
    /// `⌊mx·2^31 / my⌋ < 2^32` (`mx / my < 2`).
    k: u32,
    /// `mw ≥ t24` iff `mx·mw ≥ my·2^24` (`e0 = 24`); `mw ≥ t23` iff `mx·mw ≥ my·2^23`.
    t24: u32,
    t23: u32,
}

impl Table {
    fn new(s_x: f32, s_y: f32) -> Option<Self> {
        let ((mx, ex), (my, ey)) = (normal_parts(s_x)?, normal_parts(s_y)?);
        let (k, _) = div_shl(mx, my, 31);
        // ⌈my·2^24 / mx⌉ ∈ (2^23, 2^25]; ⌈x/2⌉ = ⌈⌈x⌉/2⌉.
        let (t, r) = div_shl(my, mx, 24);
        let t24 = t + u32::from(r != 0);
        Some(Table {
            s_x,
            mx,
            ex,
            my,
            mx6: mx << 6,
            up: my - (my >> 22),
            base: 22 + ex - ey + 1 - 150,
            k,
            t24,
            t23: t24.div_ceil(2),
        })
    }

    /// `quant::int_multiplier((mx, ex), (mw, ew), (my, ey))` for the weight scale's mantissa
    /// `mw` and exponent field `bw` (`ew = bw − 150`).
    #[inline(always)]
    fn multiplier(&self, mw: u32, bw: i32) -> (i32, i32) {
        // e0 = floor(log2(mx·mw / my)) = 22 + s, s ∈ {0, 1, 2}; z = 30 − e0 = 8 − s.
        // `[mw ≥ t] = (t − 1 − mw) >> 31`: all three below 2^26.
        let s = ((self.t23 - 1).wrapping_sub(mw) >> 31) + ((self.t24 - 1).wrapping_sub(mw) >> 31);
        // q = ⌊X⌋ for X = mw·mx·2^z / my ∈ [2^30, 2^31). With K = mx·2^31/my − φ
        // (0 ≤ φ < 1), mw·K·2^(z−31) = X − mw·φ·2^(z−31) > X − 2 (mw < 2^24, z ≤ 8): the
        // estimate is q, q − 1 or q − 2, its remainder below 3·my < 2^26, exact mod 2^32.
        // `mwz = mw·2^(z−6) < 2^26`: one `UMULL` and a constant shift.
        let mwz = mw << (2 - s);
        let mut q = ((mwz as u64 * self.k as u64) >> 25) as u32;
        let mut r = self
            .mx6
            .wrapping_mul(mwz)
            .wrapping_sub(q.wrapping_mul(self.my));
        if r >= self.my {
            q += 1;
            r -= self.my;
            if r >= self.my {
                q += 1;
                r -= self.my;
            }
        }
        // `quant::rounds_up(q, r, my)` for q ∈ [2^30, 2^31) (its ulp test at e = 30): up
        // when 2r ≥ my or my − 2r ≤ my / 2^22, i.e. 2r ≥ my − ⌊my / 2^22⌋.
        let q = q + u32::from(2 * r >= self.up);
        // `quant::multiplier_parts`: 2^31 halves (one more shift), then the shift's ends.
        let c = q >> 31;
        let shift = bw + self.base + (s + c) as i32;
        if (shift + 31) as u32 > 61 {
            return saturated(shift);
        }
        ((q >> c) as i32, shift)
    }

    /// The row of `quant::requant_table`: the integer path where it applies, else the spec.
    #[inline(always)]
    fn row(&self, bias: f32, s_w: f32, s_y: f32) -> [i32; 3] {
        let bits = s_w.to_bits();
        let bw = (bits >> 23) as i32; // with the sign: negative scales land above 0xff
        if bw == 0 || bw >= 0xff {
            return crate::quant::ChannelRequant::new(bias, self.s_x, s_w, s_y).to_array();
        }
        let b = match bias_fast(bias, self.s_x, s_w) {
            Some(b) => b,
            None => {
                let w = (bits & 0x7f_ffff | 0x80_0000, bw - 150);
                match int_bias(bias, (self.s_x, self.mx, self.ex), (s_w, w.0, w.1)) {
                    Some(b) => b,
                    None => {
                        return crate::quant::ChannelRequant::new(bias, self.s_x, s_w, s_y)
                            .to_array()
                    }
                }
            }
        };
        let (m, shift) = self.multiplier(bits & 0x7f_ffff | 0x80_0000, bw);
        [b, m, shift]
    }
}

/// `quant::multiplier_parts`' ends, off the common path: `(0, 0)` for a shift below −31,
/// `(i32::MAX, 30)` above 30.
#[cold]
#[inline(never)]
fn saturated(shift: i32) -> (i32, i32) {
    if shift < -31 {
        (0, 0)
    } else {
        (i32::MAX, 30)
    }
}

/// `quant::int_bias(bias, (s_x, mx, ex), (s_w, mw, ew))` (the spec's `round_half_away(
/// RNE53(bias / (s_x·s_w)))`, clamped) where it can be read off the single-precision
/// estimate; `None` sends the channel to `int_bias` (zero, infinite and NaN biases, large
/// quotients, and those near a rounding edge).
///
/// With `t = fl(|bias| / s_x)` normal (`|bias|` is exact, subnormal or not) and `est =
/// fl(t / s_w)` not subnormal (below 2^18 where the test below can pass), `est = Q·(1+δ1)(1+δ2)` for the exact `Q = |bias| /
/// (s_x·s_w)`, `|δi| ≤ 2^−24`: `|est − Q| < est·2^−22.9`, and the spec's `R = RNE53(Q)` is
/// within `Q·2^−53` of `Q`, so `|est − R| < est·2^−22`. With `y = fl(est + ½)`, `r = ⌊y⌋`
/// (`VCVT` truncates) and `g = y − r` (exact, as `g − ½` is: `½ ≤ y < 2^24`, so `g` is a
/// multiple of 2^−24), the test `|g − ½| < c = fl(½ − est·2^−19)` gives `min(g, 1 − g) >
/// 2m − 2^−25 ≥ m = est·2^−20` for `est ≥ 2^−5` (`est·2^−19` is exact there; `c ≤ 0` from
/// `est = 2^18` on, and for an infinite `est`), so `est + ½` lies farther than
/// `m − y·2^−24 ≥ est·2^−22` from every integer once `est ≥ 0.05`: `est` and `R` lie
/// strictly between the same two half-integers, and `⌊y⌋ = ⌊est + ½⌋ = ⌊R + ½⌋`, the spec's
/// `round_half_away(R)`. Below `est = 0.05`, `y < 1` and `R < ½` (a subnormal `est` is
/// within 2^−150 of `Q`): both 0. The magnitude is below 2^20: no clamp.
#[inline(always)]
fn bias_fast(bias: f32, s_x: f32, s_w: f32) -> Option<i32> {
    let t = f32::from_bits(bias.to_bits() & 0x7fff_ffff) / s_x;
    // `t` normal (positive): its bits in [2^23, 0x7f80_0000).
    if t.to_bits().wrapping_sub(0x0080_0000) >= 0x7f00_0000 {
        return None;
    }
    // No test of `est` itself: `c > 0` only for `est < 2^18` (and a NaN cannot arise).
    let est = t / s_w;
    let y = est + 0.5;
    let r = y as u32;
    let g = y - r as f32;
    let c = 0.5 - est * (1.0 / 524_288.0);
    if (g - 0.5).abs() < c {
        Some(if bias.is_sign_negative() {
            -(r as i32)
        } else {
            r as i32
        })
    } else {
        None
    }
}

/// The `Kernels::requant_table` slot (see the module doc).
pub(crate) fn requant_table(bias: &[f32], s_x: f32, ws: &[f32], s_y: f32, out: &mut [[i32; 3]]) {
    let Some(t) = Table::new(s_x, s_y) else {
        return crate::quant::requant_table(bias, s_x, ws, s_y, out);
    };
    for ((r, &b), &w) in out.iter_mut().zip(bias).zip(ws) {
        *r = t.row(b, w, s_y);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The shared check of the requantisation slots (random scales and biases, ties,
    /// specials), every row through the integer path where the spec allows it.
    #[test]
    fn requant_table_is_bit_exact() {
        crate::kernels::requant_check::requant_table_is_bit_exact(
            requant_table,
            1,
            |bias, s_x, ws, s_y, out| {
                requant_table(bias, s_x, ws, s_y, out);
                true
            },
        );
    }

    /// Biases within a few f32 steps of `(k + ½)·s_x·s_w` for quotients from 2^−5 to past
    /// 2^20 (where the estimate's margin test decides), and multipliers over every
    /// mantissa pair class, against the spec row by row; most biases must take the fast
    /// path.
    #[test]
    fn bias_near_ties_and_multipliers() {
        let mut r = crate::engine::testnet::Rng::new(crate::test_seed());
        let (mut fast, mut total) = (0usize, 0usize);
        for case in 0..200_000 {
            let v = r.next_u64();
            let s_x = f32::from_bits(0x3a00_0000 + (v as u32 % 0x0500_0000));
            let s_w = f32::from_bits(0x3600_0000 + ((v >> 32) as u32 % 0x0800_0000));
            let s_y = f32::from_bits(0x3b00_0000 + (r.next_u64() as u32 % 0x0400_0000));
            let v = r.next_u64();
            let mag = match case % 4 {
                0 => (v % 40) as f64 + 0.5,
                1 => (v % 100_000) as f64 + 0.5,
                2 => ((v % (1 << 21)) as f64) + 0.5,
                _ => (v % 1000) as f64 / 997.0,
            };
            let near = (mag * s_x as f64 * s_w as f64) as f32;
            let step = ((v >> 40) % 9) as i32 - 4;
            let mut b = f32::from_bits((near.to_bits() as i32 + step) as u32);
            if v >> 63 != 0 {
                b = -b;
            }
            let mut got = [[0i32; 3]];
            requant_table(&[b], s_x, &[s_w], s_y, &mut got);
            let want = crate::quant::ChannelRequant::new_f64(b, s_x, s_w, s_y).to_array();
            assert_eq!(
                got[0], want,
                "bias {b:e} s_x {s_x:e} s_w {s_w:e} s_y {s_y:e}"
            );
            total += 1;
            if let Some(q) = bias_fast(b, s_x, s_w) {
                assert_eq!(q, want[0]);
                fast += 1;
            }
        }
        // Ties a few f32 steps away fail the margin test (the exact path answers), others
        // pass it: both paths must be well exercised.
        std::println!("fast path: {fast} of {total}");
        assert!(
            fast * 5 > total && fast * 5 < total * 4,
            "{fast} of {total}"
        );
    }

    /// `Table::multiplier` against `quant::int_multiplier` on random mantissas, weight
    /// mantissas at and around both thresholds (where `e0` steps) and exponents that reach
    /// both ends of the shift.
    #[test]
    fn multiplier_matches_int_multiplier() {
        let mut r = crate::engine::testnet::Rng::new(crate::test_seed());
        for i in 0..400_000u32 {
            let v = r.next_u64();
            let mx = 0x80_0000 | (v as u32 & 0x7f_ffff);
            let my = 0x80_0000 | ((v >> 32) as u32 & 0x7f_ffff);
            let v = r.next_u64();
            let (bx, by) = (1 + (v % 254) as i32, 1 + ((v >> 8) % 254) as i32);
            let t = Table::new(
                f32::from_bits((bx as u32) << 23 | (mx & 0x7f_ffff)),
                f32::from_bits((by as u32) << 23 | (my & 0x7f_ffff)),
            )
            .unwrap();
            let mw = match i % 8 {
                0..=2 => 0x80_0000 | ((v >> 16) as u32 & 0x7f_ffff),
                k => {
                    let e = [t.t24, t.t23][(k % 2) as usize] as i64 + ((v >> 20) % 5) as i64 - 2;
                    e.clamp(0x80_0000, 0xff_ffff) as u32
                }
            };
            let bw = 1 + ((v >> 40) % 254) as i32;
            let want = crate::quant::int_multiplier((mx, bx - 150), (mw, bw - 150), (my, by - 150));
            assert_eq!(
                t.multiplier(mw, bw),
                want,
                "mx {mx:#x} my {my:#x} mw {mw:#x} bx {bx} by {by} bw {bw}"
            );
        }
    }

    /// [`Table::multiplier`] on quotients just below a half (`p·2^z mod my = (my − g)/2`
    /// for gaps `g` of 1..=12, built by a modular inverse), where the double rounding's ulp
    /// test decides: the same pair as `quant::int_multiplier` and as the double-precision
    /// spec. Seed: `LORKD_SEED`.
    #[test]
    fn multiplier_near_half() {
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
                        let got = Table::new(sx, sy).unwrap().multiplier(mw, ew + 150);
                        let what = std::format!("mx {mx} mw {mw} my {my} g {g}");
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

    /// `Table::new`'s reciprocal and thresholds against 64-bit arithmetic.
    #[test]
    fn table_constants() {
        let mut r = crate::engine::testnet::Rng::new(crate::test_seed());
        for _ in 0..100_000 {
            let v = r.next_u64();
            let mx = 0x80_0000 | (v as u32 & 0x7f_ffff);
            let my = 0x80_0000 | ((v >> 32) as u32 & 0x7f_ffff);
            let t = Table::new(
                f32::from_bits(0x3f00_0000 | (mx & 0x7f_ffff)),
                f32::from_bits(0x3f00_0000 | (my & 0x7f_ffff)),
            )
            .unwrap();
            assert_eq!(t.k as u64, ((mx as u64) << 31) / my as u64);
            let t24 = ((my as u64) << 24).div_ceil(mx as u64);
            let t23 = ((my as u64) << 23).div_ceil(mx as u64);
            assert_eq!((t.t24 as u64, t.t23 as u64), (t24, t23));
        }
    }
}
