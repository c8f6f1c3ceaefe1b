//! Fixed-point requantisation, exactly TFLite's / CMSIS-NN's (`QuantizeMultiplier`,
//! `MultiplyByQuantizedMultiplier` with `SaturatingRoundingDoublingHighMul` and
//! `RoundingDivideByPOT`), so int8 results can be checked bit-for-bit against that reference.
//!
//! A real factor `m > 0` becomes `(multiplier, shift)` with `m ≈ multiplier · 2^(shift − 31)`,
//! `multiplier ∈ [2^30, 2^31)`. Applying it to an int32 accumulator rounds twice: the doubling
//! high multiply rounds half up, the divide by a power of two rounds half away from zero.
//!
//! Also here: the small float helpers the int8 paths need without `std` (rounding, the
//! affine quantise of one value).

/// Per-tensor affine quantisation of activations: `real = scale · (q − zero_point)`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct QParams {
    /// Real value of one code step.
    pub scale: f32,
    /// The code of real 0.
    pub zero_point: i32,
}

impl QParams {
    /// `clamp(round(x / scale) + zero_point, −128, 127)`, rounding half away from zero.
    ///
    /// Branch-free (it runs on every input element and every rescaled activation, and
    /// vectorises this way): `x / scale` is first clamped to ±2^22 — beyond that every
    /// result is −128 or 127 for any zero point within ±2^21 — then truncated, and the
    /// fraction decides the rounding step, exactly as [`round_f32`]. NaN gives the zero point.
    #[inline]
    pub fn quantize(&self, x: f32) -> i8 {
        let t = (x / self.scale).clamp(-4_194_304.0, 4_194_304.0);
        let ti = t as i32;
        let f = t - ti as f32;
        let q = ti + i32::from(f >= 0.5) - i32::from(f <= -0.5);
        q.saturating_add(self.zero_point).clamp(-128, 127) as i8
    }

    /// `scale · (q − zero_point)`.
    #[inline]
    pub fn dequantize(&self, q: i8) -> f32 {
        self.scale * (q as i32 - self.zero_point) as f32
    }

    /// The stored form in a department's `act_qparams` (8 bytes): `scale` as f32 then
    /// `zero_point` as i32, little-endian.
    pub fn to_le_bytes(&self) -> [u8; 8] {
        let mut b = [0u8; 8];
        b[..4].copy_from_slice(&self.scale.to_le_bytes());
        b[4..].copy_from_slice(&self.zero_point.to_le_bytes());
        b
    }

    /// Reads [`QParams::to_le_bytes`]'s form.
    pub fn from_le_bytes(b: [u8; 8]) -> Self {
        QParams {
            scale: f32::from_le_bytes([b[0], b[1], b[2], b[3]]),
            zero_point: i32::from_le_bytes([b[4], b[5], b[6], b[7]]),
        }
    }
}

/// A rescale of int8 codes (`to.quantize(from.dequantize(v))`) as integer steps:
/// `clamp((v·m + c) >> s, −128, 127)` — one multiply, add and shift a code in i32 lanes
/// instead of a division and rounding. [`AffineCodes::fit`] keeps one only where it gives
/// every one of the 256 codes of the definition's table, so using it is exact.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AffineCodes {
    /// `≈ (s_from / s_to) · 2^s`.
    pub m: i32,
    /// `≈ (zp_to − zp_from · s_from / s_to + ½) · 2^s`.
    pub c: i32,
    /// The shift.
    pub s: u32,
}

impl AffineCodes {
    /// The steps for `table` (`table[v as u8] = to.quantize(from.dequantize(v))`): the
    /// scales' ratio in as many bits as `|v·m + c| < 2^31` leaves, the offset as computed and
    /// one step either side, checked on all 256 codes. `None` where none matches (a code
    /// within ~2^−20 of a rounding tie, a zero point far out, scales not finite).
    pub fn fit(from: QParams, to: QParams, table: &[i8; 256]) -> Option<Self> {
        let r = from.scale as f64 / to.scale as f64;
        let off = to.zero_point as f64 - from.zero_point as f64 * r + 0.5;
        if !r.is_finite() || !off.is_finite() {
            return None;
        }
        // `⌊x⌋` (no_std has no `f64::floor`); `x` within ±2^40 where it is called.
        let floor = |x: f64| {
            let t = x as i64;
            t - i64::from((t as f64) > x)
        };
        // The most precise shift whose sums stay inside i32 for every code.
        let s = (0..=30u32).rev().find(|&s| {
            let p = (1u64 << s) as f64;
            (r * p).abs() * 129.0 + (off * p).abs() + 260.0 < 2_147_483_647.0
        })?;
        let p = (1u64 << s) as f64;
        let (m, c) = (floor(r * p + 0.5) as i32, floor(off * p) as i32);
        [c, c - 1, c + 1]
            .into_iter()
            .map(|c| AffineCodes { m, c, s })
            .find(|f| (0..=255u8).all(|u| f.apply(u as i8) == table[u as usize]))
    }

    /// One code.
    #[inline]
    pub fn apply(&self, v: i8) -> i8 {
        ((v as i32 * self.m + self.c) >> self.s).clamp(-128, 127) as i8
    }
}

/// Rounds half away from zero (`std::round`) without `std`. Values too large to have a
/// fractional part are returned unchanged; NaN stays NaN.
#[inline]
pub fn round_f32(x: f32) -> f32 {
    // 2^23: from here on every f32 is an integer.
    if x.is_nan() || x.abs() >= 8_388_608.0 {
        return x;
    }
    let t = x as i32 as f32; // truncation toward zero
    let frac = x - t; // exact for |x| < 2^23
    if frac >= 0.5 {
        t + 1.0
    } else if frac <= -0.5 {
        t - 1.0
    } else {
        t
    }
}

/// Rounds half away from zero, for doubles (`TfLiteRound`).
#[inline]
pub fn round_f64(x: f64) -> f64 {
    // 2^52: from here on every f64 is an integer.
    if x.is_nan() || x.abs() >= 4_503_599_627_370_496.0 {
        return x;
    }
    let t = x as i64 as f64;
    let frac = x - t;
    if frac >= 0.5 {
        t + 1.0
    } else if frac <= -0.5 {
        t - 1.0
    } else {
        t
    }
}

/// `frexp`: `x = q · 2^e` with `|q| ∈ [0.5, 1)`; `(0, 0)` for zero; non-finite `x` is returned
/// as is with `e = 0`.
pub fn frexp(x: f64) -> (f64, i32) {
    if x == 0.0 || !x.is_finite() {
        return (x, 0);
    }
    let mut bits = x.to_bits();
    let mut e_adj = 0;
    if (bits >> 52) & 0x7ff == 0 {
        // Subnormal: scale into the normal range first (exact).
        bits = (x * 18_014_398_509_481_984.0).to_bits(); // 2^54
        e_adj = -54;
    }
    let biased = ((bits >> 52) & 0x7ff) as i32;
    let q = f64::from_bits((bits & !(0x7ff << 52)) | (1022u64 << 52));
    (q, biased - 1022 + e_adj)
}

/// TFLite `QuantizeMultiplier`: `m ≈ multiplier · 2^(shift − 31)`. Zero (and factors too
/// small to represent, `shift < −31`) give `(0, 0)`.
pub fn quantize_multiplier(m: f64) -> (i32, i32) {
    if m == 0.0 || !m.is_finite() {
        return (0, 0);
    }
    let (q, shift) = frexp(m);
    multiplier_parts(round_f64(q * 2_147_483_648.0) as i64, shift)
}

/// A multiplier's rounded mantissa `q ∈ [2^30, 2^31]` (2^31 · the fraction) and exponent as
/// the tables hold them: `2^31` halved with one more shift; exponents below −31 give
/// `(0, 0)`, above 30 saturate (factors ≥ 2^30 cannot occur for sane scales).
#[inline]
pub(crate) fn multiplier_parts(mut q: i64, mut shift: i32) -> (i32, i32) {
    if q == 1 << 31 {
        q /= 2;
        shift += 1;
    }
    if shift < -31 {
        return (0, 0);
    }
    if shift > 30 {
        return (i32::MAX, 30);
    }
    (q as i32, shift)
}

/// gemmlowp `SaturatingRoundingDoublingHighMul`: `round_half_up(a · b / 2^31)`, saturated for
/// `a = b = i32::MIN`.
#[inline]
pub fn saturating_rounding_doubling_high_mul(a: i32, b: i32) -> i32 {
    if a == i32::MIN && b == i32::MIN {
        return i32::MAX;
    }
    let ab = a as i64 * b as i64;
    let nudge: i64 = if ab >= 0 { 1 << 30 } else { 1 - (1 << 30) };
    ((ab + nudge) / (1i64 << 31)) as i32
}

/// gemmlowp `RoundingDivideByPOT`: `x / 2^exponent` rounded half away from zero;
/// `exponent ∈ 0..=31`.
#[inline]
pub fn rounding_divide_by_pot(x: i32, exponent: i32) -> i32 {
    let exponent = exponent.clamp(0, 31) as u32;
    let mask = ((1i64 << exponent) - 1) as i32;
    let remainder = x & mask;
    let threshold = (mask >> 1) + i32::from(x < 0);
    (x >> exponent) + i32::from(remainder > threshold)
}

/// TFLite `MultiplyByQuantizedMultiplier` (the double-rounding variant): `x · m` for
/// `(multiplier, shift) = quantize_multiplier(m)`. A positive shift multiplies first, with
/// two's-complement wrap as the C code does on every target we support.
#[inline]
pub fn multiply_by_quantized_multiplier(x: i32, multiplier: i32, shift: i32) -> i32 {
    let left = if shift > 0 { shift } else { 0 };
    let right = if shift > 0 { 0 } else { shift.wrapping_neg() };
    rounding_divide_by_pot(
        saturating_rounding_doubling_high_mul(
            x.wrapping_mul(1i32.wrapping_shl(left as u32)),
            multiplier,
        ),
        right,
    )
}

/// int8 output stage shared by every int8 kernel: output zero point and the clamp floor
/// (`zero_point` for a fused ReLU, −128 otherwise).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OutQ {
    /// Zero point of the output activation.
    pub zero_point: i32,
    /// Lowest code written: the zero point under a fused ReLU, −128 otherwise.
    pub lo: i32,
}

/// Per-output-channel requantisation of an int32 accumulator of a conv: bias already added.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ChannelRequant {
    /// Bias in accumulator units (`round(bias / (s_x·s_w))`).
    pub bias: i32,
    /// Fixed-point multiplier in `[2^30, 2^31)` (0 for a zero factor).
    pub multiplier: i32,
    /// Power-of-two exponent of the multiplier.
    pub shift: i32,
}

impl ChannelRequant {
    /// TFLite conv `Prepare` for one output channel: `bias_q = round(bias / (s_x·s_w))`,
    /// `(multiplier, shift) = quantize_multiplier(s_x·s_w / s_y)`.
    ///
    /// Bit-identical to [`ChannelRequant::new_f64`] (the double-precision spec). On 32-bit
    /// Arm (Cortex-M4F/M7: a single-precision FPU, so doubles are soft-float at ~2,000
    /// instructions a channel) it is computed in integers ([`ChannelRequant::new_int`]);
    /// elsewhere double division is one instruction and the spec itself runs.
    #[inline]
    pub fn new(bias: f32, s_x: f32, s_w: f32, s_y: f32) -> Self {
        if cfg!(target_arch = "arm") {
            Self::new_int(bias, s_x, s_w, s_y)
        } else {
            Self::new_f64(bias, s_x, s_w, s_y)
        }
    }

    /// [`ChannelRequant::new_f64`]'s bits in integer arithmetic (plus one single-precision
    /// estimate) when the scales are positive normal floats and the bias is zero or normal;
    /// other inputs take the spec itself. Tested against it on every target.
    #[inline(always)]
    pub fn new_int(bias: f32, s_x: f32, s_w: f32, s_y: f32) -> Self {
        match (normal_parts(s_x), normal_parts(s_w), normal_parts(s_y)) {
            (Some(x), Some(w), Some(y)) => match int_bias(bias, (s_x, x.0, x.1), (s_w, w.0, w.1)) {
                Some(bias) => {
                    let (multiplier, shift) = int_multiplier(x, w, y);
                    ChannelRequant {
                        bias,
                        multiplier,
                        shift,
                    }
                }
                None => Self::new_f64(bias, s_x, s_w, s_y),
            },
            _ => Self::new_f64(bias, s_x, s_w, s_y),
        }
    }

    /// The specification of [`ChannelRequant::new`], in doubles as TFLite computes it: the
    /// exact `s_x·s_w` (two 24-bit mantissas fit a double's 53), one correctly rounded
    /// division each, then [`round_f64`] / [`quantize_multiplier`].
    pub fn new_f64(bias: f32, s_x: f32, s_w: f32, s_y: f32) -> Self {
        let sxw = s_x as f64 * s_w as f64;
        let bias = if sxw > 0.0 {
            let b = round_f64(bias as f64 / sxw);
            b.clamp(i32::MIN as f64, i32::MAX as f64) as i32
        } else {
            0
        };
        let (multiplier, shift) = quantize_multiplier(sxw / s_y as f64);
        ChannelRequant {
            bias,
            multiplier,
            shift,
        }
    }
}

/// A positive normal f32 as `m · 2^e` with `m ∈ [2^23, 2^24)`; `None` for anything else.
#[inline]
pub(crate) fn normal_parts(x: f32) -> Option<(u32, i32)> {
    let b = x.to_bits();
    let be = b >> 23; // sign bit included: negative values land above 0xff
    if be == 0 || be >= 0xff {
        return None;
    }
    Some(((b & 0x7f_ffff) | 0x80_0000, be as i32 - 150))
}

/// Whether `round_half_away(RNE53(Q))` is `qi + 1` rather than `qi`, for the exact quotient
/// `Q = qi + r/d` (`0 ≤ r < d < 2^48`): the double rounding of `round_f64(a / b)` in
/// doubles. Up when `Q ≥ qi + ½`; below that only when the division's round-to-nearest-even
/// to 53 bits lands on `qi + ½`, i.e. `qi + ½ − Q ≤ ½ ulp(Q)` (a tie goes to `qi + ½`, whose
/// significand is even for `qi < 2^50`; no such tie arises from this module's quotients:
/// it would need an odd factor near 2^53 in a numerator below 2^84 that is a 24-bit
/// mantissa times a power of two). For `Q < 32` that distance is at least
/// `1/(2d) > 2^−49`, more than half an ulp, so only larger quotients need the check.
#[inline]
fn rounds_up(qi: u32, r: u64, d: u64) -> bool {
    if 2 * r >= d {
        return true;
    }
    if qi < 32 {
        return false;
    }
    let e = 31 - qi.leading_zeros(); // ulp(Q) = 2^(e − 52)
    let g = d - 2 * r; // (qi + ½ − Q) = g / 2d; up iff g · 2^(52 − e) ≤ d
    g < (1u64 << (e - 4)) && (g << (52 - e)) <= d
}

/// `quantize_multiplier(s_x·s_w / s_y)` for normal scales, in integers: the quotient
/// `p / my` of the mantissas (`p = mx·mw < 2^48`) is brought to `[2^30, 2^31)` and rounded
/// as the double code rounds it, by long division in 8-bit digits (one 32-bit hardware
/// divide each: the remainder stays below `my < 2^24`).
#[inline]
pub(crate) fn int_multiplier(
    (mx, ex): (u32, i32),
    (mw, ew): (u32, i32),
    (my, ey): (u32, i32),
) -> (i32, i32) {
    let p = mx as u64 * mw as u64; // [2^46, 2^48)
    let d = my as u64;
    // floor(log2(p / my)) ∈ {22, 23, 24}.
    let e0 = if p >= d << 24 {
        24
    } else if p >= d << 23 {
        23
    } else {
        22
    };
    // q = floor(p · 2^(30 − e0) / my) ∈ [2^30, 2^31): the high 24 bits, then three bytes,
    // then the 6..8 appended zero bits.
    let (hi, lo) = ((p >> 24) as u32, p as u32 & 0xff_ffff);
    let mut q = hi / my;
    let mut r = hi - q * my;
    for sh in [16, 8, 0] {
        let t = (r << 8) | ((lo >> sh) & 0xff);
        let qd = t / my;
        r = t - qd * my;
        q = (q << 8) | qd;
    }
    let z = 30 - e0;
    let t = r << z;
    let qd = t / my;
    r = t - qd * my;
    q = (q << z) | qd;
    let mut q = q as u64 + u64::from(rounds_up(q, r as u64, d));
    // m ∈ [2^E, 2^(E+1)), frexp's exponent E + 1.
    let mut shift = e0 + ex + ew - ey + 1;
    if q == 1 << 31 {
        q >>= 1;
        shift += 1;
    }
    if shift < -31 {
        return (0, 0);
    }
    if shift > 30 {
        return (i32::MAX, 30);
    }
    (q as i32, shift)
}

/// `round_f64(bias / (s_x·s_w))` clamped to i32, for normal scales, in integers; `None`
/// when the bias is NaN, infinite or subnormal (the caller takes the double spec).
/// `|Q| = mb · 2^s / d` with `d = mx·mw`.
#[inline(always)]
pub(crate) fn int_bias(
    bias: f32,
    (s_x, mx, ex): (f32, u32, i32),
    (s_w, mw, ew): (f32, u32, i32),
) -> Option<i32> {
    let b = bias.to_bits();
    let be = (b >> 23) & 0xff;
    if b & 0x7fff_ffff == 0 {
        return Some(0);
    }
    if be == 0 || be == 0xff {
        return None;
    }
    let neg = b >> 31 != 0;
    let mb = (b & 0x7f_ffff) | 0x80_0000;
    let s = be as i32 - 150 - ex - ew;
    let d = mx as u64 * mw as u64;
    // |Q| < 2^(24 + s − 46): below ¼ for s ≤ 20 (rounds to 0 even after the double
    // rounding); |Q| ≥ 2^(23 + s − 48) ≥ 2^36 for s > 60 (clamps).
    let mag = if s <= 20 {
        0
    } else if s > 60 {
        u32::MAX
    } else {
        // Most biases: |Q| estimated in single precision (relative error below 2^−22 while
        // the intermediate is normal), so below 2^20 its truncation is within one of
        // floor(Q); the exact remainder `mb·2^s − q·d` (magnitude below 2d < 2^49) is
        // computed mod 2^64 and corrects it.
        let t = f32::from_bits(b & 0x7fff_ffff) / s_x;
        let est = t / s_w;
        let mut fast = None;
        if t.is_normal() && est < 1_048_576.0 {
            let mut q = est as u32;
            let mut r = ((mb as u64) << s).wrapping_sub((q as u64).wrapping_mul(d));
            if (r as i64) < 0 {
                q = q.wrapping_sub(1);
                r = r.wrapping_add(d);
            } else if r >= d {
                q += 1;
                r -= d;
            }
            if r < d && q < 1 << 31 {
                fast = Some(q + u32::from(rounds_up(q, r, d)));
            }
        }
        match fast {
            Some(m) => m,
            None => bias_digits(mb, s as u32, mx, mw),
        }
    };
    Some(if neg {
        if mag >= 1 << 31 {
            i32::MIN
        } else {
            -(mag as i32)
        }
    } else {
        mag.min(i32::MAX as u32) as i32
    })
}

/// `round_half_away(RNE53(mb · 2^s / (mx·mw)))` (`u32::MAX` from 2^31 on) by long
/// division: by `mx`, then by `mw`, digit by digit in one pass (nested floor division is
/// exact), with the remainder `r1 + r2·mx` of the whole; one 32-bit hardware divide per
/// digit and divisor, as the remainders stay below 2^24.
fn bias_digits(mb: u32, s: u32, mx: u32, mw: u32) -> u32 {
    let (mut r1, mut r2, mut q) = (mb - mb / mx * mx, 0u32, 0u32);
    // The first quotient digit of mb / mx is 0 or 1 (both in [2^23, 2^24)): it becomes
    // r2, since it is below mw.
    if mb >= mx {
        r2 = 1;
    }
    let mut left = s;
    let mut big = false;
    while left > 0 {
        let k = left.min(8);
        left -= k;
        let t1 = r1 << k;
        let d1 = t1 / mx;
        r1 = t1 - d1 * mx;
        let t2 = (r2 << k) | d1;
        let d2 = t2 / mw;
        r2 = t2 - d2 * mw;
        big |= q >> (32 - k) != 0;
        q = (q << k) | d2;
    }
    if big || q >= 1 << 31 {
        u32::MAX
    } else {
        let r = r1 as u64 + r2 as u64 * mx as u64;
        q + u32::from(rounds_up(q, r, mx as u64 * mw as u64))
    }
}

impl ChannelRequant {
    /// The `[bias, multiplier, shift]` triple the int8 kernels read.
    pub const fn to_array(self) -> [i32; 3] {
        [self.bias, self.multiplier, self.shift]
    }
}

/// The requantisation table of a conv: `out[j] = ChannelRequant::new(bias[j], s_x, ws[j],
/// s_y).to_array()` for `j < out.len()` (`bias`, `ws` at least as long). The spec of the
/// `Kernels::requant_table` slot.
pub fn requant_table(bias: &[f32], s_x: f32, ws: &[f32], s_y: f32, out: &mut [[i32; 3]]) {
    for ((r, &b), &w) in out.iter_mut().zip(bias).zip(ws) {
        *r = ChannelRequant::new(b, s_x, w, s_y).to_array();
    }
}

/// The int8 kernels' output stage: `clamp(MBQM(acc + bias) + zp, lo, 127)` with
/// `rq = [bias, multiplier, shift]`.
#[inline]
pub fn requant(acc: i32, rq: [i32; 3], q: OutQ) -> i8 {
    let v = multiply_by_quantized_multiplier(acc.wrapping_add(rq[0]), rq[1], rq[2]);
    v.saturating_add(q.zero_point).clamp(q.lo.max(-128), 127) as i8
}

impl QParams {
    /// Asymmetric int8 parameters covering `[min, max]` widened to include 0 (so 0 is exact
    /// and ReLU is a clamp at the zero point): `scale = (max − min) / 255`,
    /// `zero_point = round(−128 − min / scale)`. An empty range gets scale 1.
    pub fn from_range(min: f32, max: f32) -> Self {
        let lo = if min < 0.0 { min } else { 0.0 };
        let hi = if max > 0.0 { max } else { 0.0 };
        let scale = if hi > lo && (hi - lo).is_finite() {
            (hi - lo) / 255.0
        } else {
            1.0
        };
        let zp = round_f32(-128.0 - lo / scale).clamp(-128.0, 127.0) as i32;
        QParams {
            scale,
            zero_point: zp,
        }
    }
}

/// `max |v|` over the non-NaN values of `w`, as the bit pattern of `|v|`, folded into
/// `init` (a SIMD twin's lanes): for finite and infinite floats `|a| < |b|` iff
/// `bits(|a|) < bits(|b|)`, so this is the value of folding `f32::max`; a NaN counts as 0.
#[inline]
pub fn amax_bits(init: u32, w: &[f32]) -> u32 {
    let mut m = init;
    for v in w {
        let b = v.to_bits() & 0x7fff_ffff;
        m = m.max(if b > 0x7f80_0000 { 0 } else { b });
    }
    m
}

/// A channel's weight scale from its `max |w|`: `amax / 127`, 1 for an all-zero channel.
#[inline]
pub fn weight_scale(amax: f32) -> f32 {
    if amax > 0.0 {
        amax / 127.0
    } else {
        1.0
    }
}

/// The one per-output-channel weight quantiser (symmetric int8, zero point 0), used by the
/// packer, the test fixture and the department switch (`requant_weights`, whose SIMD twins
/// are bit-exact to it): `s = max|w| / 127` over the non-NaN values (1 for an all-zero
/// channel), `q = clamp(round_half_away(w · (1/s)), −127, 127)`, NaN → 0. Writes `out`
/// (`w.len()` codes) and returns `s`.
///
/// The division is a multiply by the reciprocal: that is what the rebuild's kernels do on
/// every ISA. Against `round(w / s)` a code can differ by one only where `w / s` lies within
/// an ulp of a half (see the test `one_rule_vs_division`), and the error stays within half a
/// step plus an ulp.
pub fn quantize_channel(w: &[f32], out: &mut [i8]) -> f32 {
    let s = weight_scale(f32::from_bits(amax_bits(0, w)));
    let inv = 1.0 / s;
    for (q, &v) in out.iter_mut().zip(w) {
        *q = quantize_weight(v * inv);
    }
    s
}

/// The f32 just below ½ (`0.5 − 2^−25`): `trunc(|t| + HALF_BELOW)` is `|t|` rounded half
/// away from zero for every `|t| ≤ 2^22`. Below ½ the sum stays at most `1 − 2^−24`; at
/// `k + ½` it is `k + 1 − 2^−25`, which rounds to `k + 1` (a tie to even at `k = 0`); and no
/// sum rounds up across an integer (that would need `|t|` within a quarter ulp of `k + ½`).
/// The kernels' short form of [`quantize_weight`]'s and `QParams::quantize`'s rounding
/// (`kernels::fixed::quantize_weight_fast`, `switch::quantize_vcvt`, the x86 int8 codes).
pub(crate) const HALF_BELOW: f32 = 0.5 - 1.0 / 33_554_432.0;

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

/// [`quantize_channel`] on every row of a row-major `[rows, w.len() / rows]` weight (OIHW
/// conv weights: one row per output channel). Returns the codes and one scale per row.
#[cfg(feature = "std")]
pub fn quantize_per_channel(w: &[f32], rows: usize) -> (std::vec::Vec<i8>, std::vec::Vec<f32>) {
    let n = w.len() / rows.max(1);
    let mut q = std::vec![0i8; w.len()];
    let mut s = std::vec::Vec::with_capacity(rows);
    if n > 0 {
        for (row, out) in w.chunks_exact(n).zip(q.chunks_exact_mut(n)) {
            s.push(quantize_channel(row, out));
        }
    }
    s.resize(rows, 1.0);
    (q, s)
}

/// [`quantize_channel`] on every column of a row-major `[w.len() / cols, cols]` weight (the
/// depthwise `[3, 3, C]` layout: one column per channel). Returns the codes in the same
/// layout and one scale per column.
#[cfg(feature = "std")]
pub fn quantize_per_column(w: &[f32], cols: usize) -> (std::vec::Vec<i8>, std::vec::Vec<f32>) {
    let rows = w.len() / cols.max(1);
    let mut q = std::vec![0i8; w.len()];
    let mut s = std::vec::Vec::with_capacity(cols);
    let (mut col, mut qc) = (std::vec![0f32; rows], std::vec![0i8; rows]);
    for c in 0..cols {
        for (t, v) in col.iter_mut().enumerate() {
            *v = w[t * cols + c];
        }
        s.push(quantize_channel(&col, &mut qc));
        for (t, &v) in qc.iter().enumerate() {
            q[t * cols + c] = v;
        }
    }
    (q, s)
}

/// Scale of one int8 delta-factor row with largest magnitude `max_abs`, as stored: IEEE half
/// (2 B a row instead of 4 — the `B` factors have `Cout·k` rows of only `r·k` bytes, so f32
/// scales were a third of an int8 delta). Rounded *up* to the next half so `|x| / scale ≤ 127`
/// still holds; `None` when the row does not fit a half (`max_abs / 127 > 65504`) or is not
/// finite. A zero row gets scale 0.
pub fn delta_row_scale(max_abs: f32) -> Option<half::f16> {
    if !max_abs.is_finite() || max_abs < 0.0 {
        return None;
    }
    let s = max_abs / 127.0;
    let mut h = half::f16::from_f32(s);
    if h.to_f32() < s {
        h = half::f16::from_bits(h.to_bits() + 1);
    }
    h.is_finite().then_some(h)
}

/// Quantises one delta-factor row into `out` with [`delta_row_scale`]; returns the scale.
pub fn quantize_delta_row(row: &[f32], out: &mut [i8]) -> Option<half::f16> {
    let m = row.iter().fold(0f32, |a, &v| a.max(v.abs()));
    let h = delta_row_scale(m)?;
    let s = h.to_f32();
    for (o, &v) in out.iter_mut().zip(row) {
        *o = if s > 0.0 {
            round_f32(v / s).clamp(-127.0, 127.0) as i8
        } else {
            0
        };
    }
    Some(h)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// [`AffineCodes::fit`] on typical activation parameters: found for nearly every pair,
    /// and then every code is the definition's; refused where the ratio makes exact ties
    /// (half a step, where half away from zero and the integers' floor part). Seed:
    /// `LORKD_SEED`.
    #[test]
    fn affine_codes_are_the_rescale_or_refused() {
        let seed = crate::test_seed();
        let mut r = crate::engine::testnet::Rng::new(seed);
        let table = |from: QParams, to: QParams| -> [i8; 256] {
            core::array::from_fn(|u| to.quantize(from.dequantize(u as u8 as i8)))
        };
        let mut found = 0;
        for _ in 0..2000 {
            let mut q = || QParams {
                scale: 2f32.powf(r.uniform(8.0) - 4.0) * (1.0 + r.uniform(0.5)),
                zero_point: r.below(256) as i32 - 128,
            };
            let (from, to) = (q(), q());
            let t = table(from, to);
            if let Some(f) = AffineCodes::fit(from, to, &t) {
                found += 1;
                for u in 0..=255u8 {
                    let v = u as i8;
                    assert_eq!(
                        f.apply(v),
                        to.quantize(from.dequantize(v)),
                        "seed {seed} {f:?}"
                    );
                }
            }
        }
        assert!(found > 1900, "seed {seed}: only {found} of 2000 fitted");
        let (from, to) = (
            QParams {
                scale: 1.0,
                zero_point: 0,
            },
            QParams {
                scale: 2.0,
                zero_point: 0,
            },
        );
        assert_eq!(
            AffineCodes::fit(from, to, &table(from, to)),
            None,
            "−½ rounds to −1"
        );
    }

    #[test]
    fn quantize_matches_round_then_clamp() {
        let spec = |p: &QParams, x: f32| {
            (round_f32(x / p.scale) as i32)
                .saturating_add(p.zero_point)
                .clamp(-128, 127) as i8
        };
        let mut s = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move || {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            s
        };
        let edges = [
            0.0,
            -0.0,
            0.5,
            -0.5,
            1.5,
            -2.5,
            0.49999997,
            -0.49999997,
            127.5,
            -128.5,
            1e30,
            -1e30,
            f32::INFINITY,
            f32::NEG_INFINITY,
            f32::NAN,
            8_388_609.0,
            5e6,
            -5e6,
        ];
        for i in 0..300_000u32 {
            let r = next();
            let p = QParams {
                scale: [1.0, 0.5, 0.0123, 3.7e-5, 255.0][(r % 5) as usize],
                zero_point: ((r >> 8) % 256) as i32 - 128,
            };
            let x = if i % 10 == 0 {
                edges[((r >> 20) % edges.len() as u64) as usize] * p.scale
            } else {
                ((r >> 32) as u32 as i32 as f32 / 2f32.powi(24)) * 200.0 * p.scale
            };
            assert_eq!(p.quantize(x), spec(&p, x), "{x} {p:?}");
        }
    }

    /// `rounds_up` is the double rounding of `round_f64(n / d)` for `n = qi·d + r`, checked
    /// where doubles compute it exactly (`n < 2^53`), with `r` random and next to `d/2`
    /// (exact ties and quotients within an ulp of one, both sides of the boundary).
    #[test]
    fn rounds_up_is_the_double_rounding() {
        let mut st = crate::test_seed() | 1;
        let mut next = move || {
            st ^= st << 13;
            st ^= st >> 7;
            st ^= st << 17;
            st
        };
        let mut ups = [0usize; 2];
        for i in 0..400_000u32 {
            let (qi, d) = if i % 3 == 2 {
                // Where the 53-bit rounding can reach qi + ½: Q ∈ [2^e, 2^(e+1)) and
                // d ≥ 2^(52 − e), with n = qi·d + r < 2^53 still exact in a double.
                let e = 5 + next() % 27;
                let qi = (1 << e) + next() % (1 << e);
                let lo = 1u64 << (52 - e);
                let hi = ((1u64 << 53) / (qi + 1)).min(1 << 48);
                (qi as u32, lo + next() % (hi - lo).max(1))
            } else {
                let d = 1 + next() % (1 << 24);
                ((next() % [64, 1 << 29][i as usize % 3]) as u32, d)
            };
            let r = if i % 2 == 0 {
                next() % d
            } else {
                // (d − g) / 2 for small g: a tie at g = 0, then 1/(2d)-sized gaps.
                (d.saturating_sub(next() % 6)) / 2
            };
            let n = qi as u64 * d + r;
            let want = round_f64(n as f64 / d as f64) as u64;
            let got = qi as u64 + u64::from(rounds_up(qi, r, d));
            assert_eq!(got, want, "qi {qi} r {r} d {d}");
            ups[usize::from(got > qi as u64)] += 1;
        }
        assert!(ups[0] > 1000 && ups[1] > 1000, "{ups:?}");
    }

    /// `ChannelRequant::new_int` against the double spec on random scales and
    /// biases (wide exponents, every sign, zero, subnormal, infinite, NaN), exact bias ties
    /// (power-of-two scales), and multipliers with an exact tie at the 31st bit.
    #[test]
    fn channel_requant_integer_equals_f64() {
        let mut st = crate::test_seed() | 1;
        let mut next = move || {
            st ^= st << 13;
            st ^= st >> 7;
            st ^= st << 17;
            st
        };
        let special = [
            0.0f32,
            -0.0,
            f32::NAN,
            f32::INFINITY,
            f32::NEG_INFINITY,
            1e-40,
            -1e-40,
            f32::MIN_POSITIVE,
            f32::MAX,
        ];
        let pick = |r: u64, lo: i32, hi: i32| -> f32 {
            if r.is_multiple_of(41) {
                return special[(r >> 8) as usize % special.len()];
            }
            let e = lo + ((r >> 8) % (hi - lo + 1) as u64) as i32;
            let m = 1.0 + ((r >> 20) & 0x7f_ffff) as f32 / 8_388_608.0;
            let v = m * 2f32.powi(e);
            if r & (1 << 60) != 0 {
                -v
            } else {
                v
            }
        };
        let check = |b: f32, x: f32, w: f32, y: f32| {
            let got = ChannelRequant::new_int(b, x, w, y);
            let want = ChannelRequant::new_f64(b, x, w, y);
            assert_eq!(got, want, "bias {b:e} s_x {x:e} s_w {w:e} s_y {y:e}");
        };
        for i in 0..1_000_000u32 {
            let (lo, hi) = if i % 4 == 0 { (-126, 127) } else { (-20, 4) };
            let x = pick(next() & !(1 << 60), lo, hi);
            let w = pick(next() & !(1 << 60), lo, hi);
            let y = pick(next() & !(1 << 60), lo, hi);
            let b = pick(next(), if i % 4 == 0 { -126 } else { -30 }, hi + 20);
            // A few negative scales too.
            let x = if i % 997 == 0 { -x } else { x };
            check(b, x, w, y);
        }
        // Exact ties of the bias: (2q + 1)/2 · s_x·s_w with power-of-two scales.
        for _ in 0..100_000 {
            let (a, c) = (-((next() % 20) as i32), -((next() % 20) as i32));
            let q = (next() % (1 << 23)) as f32;
            let (x, w) = (2f32.powi(a), 2f32.powi(c));
            let b = (2.0 * q + 1.0) * 0.5 * x * w;
            let b = if next() % 2 == 0 { b } else { -b };
            check(b, x, w, 2f32.powi(-((next() % 8) as i32)));
        }
        // Multipliers whose quotient has an exact tie at the 31st significant bit:
        // s_y a power of two and mantissa products ending in 1000…0 at that bit.
        let mut ties = 0;
        while ties < 30 {
            let mx = 0x80_0000 | (next() as u32 & 0x7f_ffff);
            let mw = 0x80_0000 | (next() as u32 & 0x7f_ffff);
            let p = mx as u64 * mw as u64;
            let f = 64 - p.leading_zeros() - 31; // bits below the 31st
            if p & ((1 << f) - 1) != 1 << (f - 1) {
                continue;
            }
            ties += 1;
            let x = f32::from_bits((127 << 23) | (mx & 0x7f_ffff));
            let w = f32::from_bits((120 << 23) | (mw & 0x7f_ffff));
            check(0.25, x, w, 2f32.powi(-((next() % 8) as i32)));
        }
    }

    /// The one weight rule against the two it replaced (the packer's `(w / s).round()` and the
    /// fixture's `round_f32(w / s)`, which agree with each other): same scales; codes equal
    /// except where `w / s` lies within an ulp or two of a half, where they differ by one.
    #[test]
    fn one_rule_vs_division() {
        let seed = crate::test_seed();
        let mut st = seed | 1;
        let mut next = move || {
            st ^= st << 13;
            st ^= st >> 7;
            st ^= st << 17;
            st
        };
        // [random channels, channels of constructed near-ties]: (codes, codes that differ).
        let mut count = [(0usize, 0usize); 2];
        for _ in 0..2000 {
            let n = 1 + (next() % 300) as usize;
            let mag = [1e-3f32, 0.05, 1.0, 30.0][(next() % 4) as usize];
            let mut w: std::vec::Vec<f32> = (0..n)
                .map(|_| ((next() >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * 2.0 * mag)
                .collect();
            let ties = next() % 5 == 0;
            if ties {
                // Exact ties of the old rule: multiples of s/2 for s = max/127.
                let s = mag / 127.0;
                w.iter_mut()
                    .for_each(|v| *v = (((*v / s) * 2.0) as i32 as f32) * 0.5 * s);
                w[0] = mag;
            }
            let mut q = std::vec![0i8; n];
            let s = quantize_channel(&w, &mut q);
            let m = w.iter().fold(0f32, |a, v| a.max(v.abs()));
            let s_old = if m > 0.0 { m / 127.0 } else { 1.0 };
            assert_eq!(s.to_bits(), s_old.to_bits());
            for (&v, &qn) in w.iter().zip(&q) {
                let t = v / s_old;
                let old = t.round().clamp(-127.0, 127.0) as i8;
                assert_eq!(old, round_f32(t).clamp(-127.0, 127.0) as i8);
                count[ties as usize].0 += 1;
                if old != qn {
                    count[ties as usize].1 += 1;
                    let off_half = (t.abs().fract() - 0.5).abs();
                    assert!(
                        (old as i32 - qn as i32).abs() == 1
                            && off_half <= 2.0 * f32::EPSILON * t.abs().max(1.0),
                        "{v} / {s_old} = {t}: old {old}, new {qn}"
                    );
                }
                // Half a step, plus an ulp or two of `w` (the reciprocal's rounding at a tie).
                let err = (qn as f64 * s as f64 - v as f64).abs();
                let slack = 4.0 * f32::EPSILON as f64 * v.abs() as f64;
                assert!(err <= 0.5 * s as f64 + slack, "{v}: {qn} · {s}");
            }
        }
        println!(
            "codes differing from round(w / s): {} of {} on random channels, {} of {} on \
             constructed near-ties",
            count[0].1, count[0].0, count[1].1, count[1].0
        );
        let (q, s) = quantize_per_channel(&[0.0; 6], 2);
        assert_eq!((q, s), (std::vec![0; 6], std::vec![1.0, 1.0]));
        // Columns of [3, C] equal rows of the transpose.
        let w = [1.0, -2.0, 0.5, 4.0, 3.0, -0.25];
        let (qc, sc) = quantize_per_column(&w, 2);
        let (qr, sr) = quantize_per_channel(&[1.0, 0.5, 3.0, -2.0, 4.0, -0.25], 2);
        assert_eq!(sc, sr);
        assert_eq!(qc, std::vec![qr[0], qr[3], qr[1], qr[4], qr[2], qr[5]]);
    }
}
