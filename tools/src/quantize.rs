//! Quantisation for the bundle, TFLite / CMSIS-NN convention (DESIGN.md "Deployment math"):
//! weights symmetric per output channel (zero point 0, ±127); activations asymmetric per
//! tensor (range widened to include 0, zero point in [-128, 127]). The rules themselves live
//! in the runtime (`lorkd_runtime::quant`: weights, activations, delta rows;
//! `format::factor`: the factor storage), so packer, fixture and device share one definition.

/// `(scale, zero_point)` of an activation observed in `[min, max]` (TFLite asymmetric:
/// the range is widened to include 0 so that 0 is exact; a degenerate range gets scale 1).
/// Delegates to the runtime's `QParams::from_range`, so packer and engine share one rule.
pub fn activation_qparams(min: f32, max: f32) -> (f32, i32) {
    let q = lorkd_runtime::quant::QParams::from_range(min, max);
    (q.scale, q.zero_point)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    #[test]
    fn per_channel_error_is_within_half_a_step() {
        let seed: u64 = rand::random();
        println!("seed {seed}");
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        let (cout, per) = (rng.gen_range(1..40), rng.gen_range(1..200));
        let w: Vec<f32> = (0..cout * per)
            .map(|_| rng.gen_range(-3.0..3.0) * rng.gen_range(0.0..1.0f32))
            .collect();
        let (q, s) = lorkd_runtime::quant::quantize_per_channel(&w, cout);
        for o in 0..cout {
            let m = w[o * per..(o + 1) * per]
                .iter()
                .fold(0f32, |a, v| a.max(v.abs()));
            assert!((s[o] - m / 127.0).abs() <= f32::EPSILON * m || m == 0.0);
            assert!(q[o * per..(o + 1) * per].iter().any(|&v| v.abs() == 127) || m == 0.0);
            for j in 0..per {
                let err = (q[o * per + j] as f32 * s[o] - w[o * per + j]).abs();
                assert!(
                    err <= 0.5 * s[o] * (1.0 + 1e-5),
                    "channel {o}: err {err} > s/2 = {}",
                    s[o] / 2.0
                );
            }
        }
    }

    #[test]
    fn activation_qparams_represent_zero_exactly_and_cover_range() {
        let seed: u64 = rand::random();
        println!("seed {seed}");
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        for _ in 0..1000 {
            let a: f32 = rng.gen_range(-10.0..10.0);
            let b: f32 = rng.gen_range(-10.0..10.0);
            let (lo, hi) = (a.min(b), a.max(b));
            let (s, zp) = activation_qparams(lo, hi);
            assert!((-128..=127).contains(&zp) && s > 0.0);
            // 0 maps to zp exactly; the range ends are within one step of the grid ends.
            let qlo = -128.0 - zp as f32;
            let qhi = 127.0 - zp as f32;
            assert!(qlo * s <= lo.min(0.0) + s && qhi * s >= hi.max(0.0) - s);
        }
        assert_eq!(activation_qparams(0.0, 6.0).1, -128);
        assert_eq!(activation_qparams(0.0, 0.0).0, 1.0);
    }
}
