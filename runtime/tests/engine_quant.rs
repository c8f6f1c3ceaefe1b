//! Requantisation against the TFLite reference formula, bit for bit: a literal i64
//! transcription of gemmlowp's `SaturatingRoundingDoublingHighMul` / `RoundingDivideByPOT`
//! and TFLite's `QuantizeMultiplier`, plus the closed forms they compute (i128), on random
//! inputs, enumerated ties and the saturation corners.
mod common;
use common::seed;
use lorkd_runtime::quant::*;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// gemmlowp, transcribed in i64 (C `/` truncates toward zero like Rust's).
fn srdhm_c(a: i32, b: i32) -> i32 {
    let overflow = a == b && a == i32::MIN;
    let ab: i64 = a as i64 * b as i64;
    let nudge: i64 = if ab >= 0 { 1 << 30 } else { 1 - (1 << 30) };
    let high = ((ab + nudge) / (1i64 << 31)) as i32;
    if overflow {
        i32::MAX
    } else {
        high
    }
}

/// Closed form: `floor((a·b + 2^30) / 2^31)` (round half up), saturated.
fn srdhm_exact(a: i32, b: i32) -> i32 {
    let v = (a as i128 * b as i128 + (1i128 << 30)).div_euclid(1i128 << 31);
    v.min(i32::MAX as i128) as i32
}

fn rdbpot_c(x: i32, e: i32) -> i32 {
    let mask: i64 = (1i64 << e) - 1;
    let rem = (x as i64) & mask;
    let threshold = (mask >> 1) + i64::from(x < 0);
    ((x as i64 >> e) + i64::from(rem > threshold)) as i32
}

/// Closed form: `x / 2^e` rounded half away from zero.
fn rdbpot_exact(x: i32, e: i32) -> i32 {
    let d = 1i128 << e;
    let (x, neg) = ((x as i128).abs(), x < 0);
    let q = (2 * x + d) / (2 * d);
    (if neg { -q } else { q }) as i32
}

fn mbqm_ref(x: i32, m: i32, shift: i32) -> i32 {
    let left = shift.max(0);
    let right = (-shift).max(0);
    rdbpot_c(srdhm_c(x.wrapping_mul(1 << left), m), right)
}

/// `frexp` by halving/doubling (exact) and `std::round`.
fn quantize_multiplier_ref(m: f64) -> (i32, i32) {
    if m == 0.0 {
        return (0, 0);
    }
    let (mut q, mut e) = (m, 0i32);
    while q >= 1.0 {
        q /= 2.0;
        e += 1;
    }
    while q < 0.5 {
        q *= 2.0;
        e -= 1;
    }
    let mut qf = (q * (1i64 << 31) as f64).round() as i64;
    if qf == 1i64 << 31 {
        qf /= 2;
        e += 1;
    }
    if e < -31 {
        return (0, 0);
    }
    (qf as i32, e)
}

#[test]
fn srdhm_matches_reference_random_and_corners() {
    let mut rng = ChaCha8Rng::seed_from_u64(seed());
    let corners = [
        i32::MIN,
        i32::MIN + 1,
        -1,
        0,
        1,
        i32::MAX,
        1 << 30,
        -(1 << 30),
        3,
        -3,
    ];
    for &a in &corners {
        for &b in &corners {
            assert_eq!(
                saturating_rounding_doubling_high_mul(a, b),
                srdhm_c(a, b),
                "{a} {b}"
            );
            assert_eq!(srdhm_c(a, b), srdhm_exact(a, b), "{a} {b}");
        }
    }
    for _ in 0..200_000 {
        let (a, b): (i32, i32) = (rng.gen(), rng.gen());
        assert_eq!(
            saturating_rounding_doubling_high_mul(a, b),
            srdhm_c(a, b),
            "{a} {b}"
        );
        assert_eq!(srdhm_c(a, b), srdhm_exact(a, b), "{a} {b}");
    }
    // Exact ties: a·b = (2n+1)·2^30.
    for n in -1000i64..1000 {
        let a = ((2 * n + 1) << 14) as i32;
        let b = 1 << 16;
        assert_eq!(
            saturating_rounding_doubling_high_mul(a, b),
            srdhm_exact(a, b),
            "tie {n}"
        );
        assert_eq!(srdhm_c(a, b), srdhm_exact(a, b));
    }
}

#[test]
fn rounding_divide_by_pot_matches_reference() {
    let mut rng = ChaCha8Rng::seed_from_u64(seed());
    for e in 0..=31 {
        for &x in &[i32::MIN, i32::MIN + 1, -1, 0, 1, i32::MAX] {
            assert_eq!(rounding_divide_by_pot(x, e), rdbpot_c(x, e), "{x} {e}");
            assert_eq!(rdbpot_c(x, e), rdbpot_exact(x, e), "{x} {e}");
        }
        if e > 0 && e < 31 {
            // Ties: ±(2k+1)·2^(e−1) round away from zero.
            for k in -50i64..50 {
                let x = ((2 * k + 1) << (e - 1)) as i32;
                assert_eq!(
                    rounding_divide_by_pot(x, e),
                    rdbpot_exact(x, e),
                    "tie {x} {e}"
                );
            }
        }
        for _ in 0..5_000 {
            let x: i32 = rng.gen();
            assert_eq!(rounding_divide_by_pot(x, e), rdbpot_c(x, e), "{x} {e}");
            assert_eq!(rdbpot_c(x, e), rdbpot_exact(x, e), "{x} {e}");
        }
    }
}

#[test]
fn quantize_multiplier_matches_reference() {
    let mut rng = ChaCha8Rng::seed_from_u64(seed());
    let mut cases = vec![
        0.0,
        1.0,
        0.5,
        0.25,
        2.0,
        1e-12,
        1e-10,
        0.999_999_999_9,
        0.999_999_999_999_9,
        1.0 / 2147483648.0,
    ];
    for _ in 0..100_000 {
        cases.push(10f64.powf(rng.gen_range(-11.0..3.0)));
    }
    for m in cases {
        let got = quantize_multiplier(m);
        assert_eq!(got, quantize_multiplier_ref(m), "{m}");
        if got.0 != 0 {
            assert!((1 << 30..=i32::MAX).contains(&got.0));
            let back = got.0 as f64 * 2f64.powi(got.1 - 31);
            assert!((back - m).abs() <= m * 1e-9, "{m} -> {back}");
        }
    }
    assert_eq!(frexp(8.0), (0.5, 4));
    assert_eq!(frexp(f64::MIN_POSITIVE / 4.0), (0.5, -1023));
}

#[test]
fn multiply_by_quantized_multiplier_matches_reference() {
    let mut rng = ChaCha8Rng::seed_from_u64(seed());
    for _ in 0..200_000 {
        let x: i32 = if rng.gen_bool(0.5) {
            rng.gen()
        } else {
            rng.gen_range(-100_000..100_000)
        };
        let m = 10f64.powf(rng.gen_range(-9.0..1.5));
        let (mult, shift) = quantize_multiplier(m);
        let got = multiply_by_quantized_multiplier(x, mult, shift);
        assert_eq!(got, mbqm_ref(x, mult, shift), "{x} {mult} {shift}");
        // Sanity against real arithmetic where nothing saturates or wraps.
        if shift <= 0 && x.unsigned_abs() < 1 << 20 {
            let real = x as f64 * mult as f64 * 2f64.powi(shift - 31);
            assert!((got as f64 - real).abs() <= 1.0, "{x} {m}: {got} vs {real}");
        }
    }
    // Saturation corners.
    for &(x, mult, shift) in &[
        (i32::MIN, i32::MIN, 0),
        (i32::MAX, i32::MAX, 0),
        (i32::MIN, i32::MAX, -31),
        (1 << 20, 1 << 30, 12),
    ] {
        assert_eq!(
            multiply_by_quantized_multiplier(x, mult, shift),
            mbqm_ref(x, mult, shift)
        );
    }
}

#[test]
fn rounding_helpers_and_qparams() {
    let mut rng = ChaCha8Rng::seed_from_u64(seed());
    for v in [
        0.5f32,
        -0.5,
        1.5,
        -1.5,
        2.5,
        0.49999997,
        -0.49999997,
        8388607.5,
        1e10,
        -1e10,
        0.0,
        -0.0,
    ] {
        assert_eq!(round_f32(v), v.round(), "{v}");
    }
    for _ in 0..100_000 {
        let v: f32 = rng.gen_range(-1e4..1e4);
        assert_eq!(round_f32(v), v.round(), "{v}");
        let d: f64 = rng.gen_range(-1e12..1e12);
        assert_eq!(round_f64(d), d.round(), "{d}");
    }
    for _ in 0..1000 {
        let (lo, hi): (f32, f32) = (rng.gen_range(-10.0..1.0), rng.gen_range(-1.0..10.0));
        let q = QParams::from_range(lo, hi);
        assert!(q.scale > 0.0 && (-128..=127).contains(&q.zero_point));
        assert_eq!(q.dequantize(q.quantize(0.0)), 0.0, "0 must be exact");
        let (l, h) = (lo.min(0.0), hi.max(0.0));
        for x in [l, h, 0.5 * (l + h)] {
            assert!(
                (q.dequantize(q.quantize(x)) - x).abs()
                    <= 0.5 * q.scale + 1e-3 * q.scale.max(1.0) + (h - l) * 1e-3
            );
        }
    }
}

#[test]
fn channel_requant_matches_tflite_prepare() {
    let mut rng = ChaCha8Rng::seed_from_u64(seed());
    for _ in 0..10_000 {
        let (sx, sw, sy) = (
            rng.gen_range(1e-3..0.1f32),
            rng.gen_range(1e-4..0.05f32),
            rng.gen_range(1e-3..0.2f32),
        );
        let bias: f32 = rng.gen_range(-3.0..3.0);
        let r = ChannelRequant::new(bias, sx, sw, sy);
        assert_eq!(
            r.bias as f64,
            (bias as f64 / (sx as f64 * sw as f64)).round()
        );
        assert_eq!(
            (r.multiplier, r.shift),
            quantize_multiplier_ref(sx as f64 * sw as f64 / sy as f64)
        );
    }
}

/// int8 delta rows with half scales: the stored scale is the smallest half ≥ max/127 (so no
/// value clamps), every value dequantises within half a step, a zero row stays zero, and a
/// row too large for a half is refused rather than stored as infinity.
#[test]
fn delta_rows_quantise_with_half_scales() {
    let mut rng = ChaCha8Rng::seed_from_u64(seed());
    for _ in 0..2000 {
        let n = rng.gen_range(1..80);
        let mag = 10f32.powf(rng.gen_range(-7.0..3.0));
        let row: Vec<f32> = (0..n).map(|_| rng.gen_range(-mag..mag)).collect();
        let mut q = vec![0i8; n];
        let h = quantize_delta_row(&row, &mut q).unwrap();
        let s = h.to_f32();
        let m = row.iter().fold(0f32, |a, v| a.max(v.abs()));
        assert!(s >= m / 127.0, "scale {s} below max/127 {}", m / 127.0);
        let below = half::f16::from_bits(h.to_bits() - 1).to_f32();
        assert!(
            below < m / 127.0,
            "scale {s} not the smallest half ≥ {}",
            m / 127.0
        );
        for (&v, &qv) in row.iter().zip(&q) {
            assert!((-127..=127).contains(&qv));
            assert!(
                (v - qv as f32 * s).abs() <= s * 0.5 + 1e-12,
                "{v} vs {qv}·{s}"
            );
        }
    }
    let mut q = [1i8; 4];
    assert_eq!(quantize_delta_row(&[0.0; 4], &mut q).unwrap().to_f32(), 0.0);
    assert_eq!(q, [0; 4]);
    assert!(delta_row_scale(127.0 * 70_000.0).is_none());
    assert!(delta_row_scale(f32::NAN).is_none());
}
