//! Global average pool of a dense NHWC `[h, w, c]` to a feature vector `[c]`.
use crate::quant::QParams;

/// f32 mean over the `n = h·w` pixels.
pub fn gap_f32(n: usize, c: usize, x: &[f32], y: &mut [f32]) {
    y[..c].fill(0.0);
    for p in 0..n {
        for (o, &v) in y[..c].iter_mut().zip(&x[p * c..][..c]) {
            *o += v;
        }
    }
    let inv = 1.0 / n.max(1) as f32;
    y[..c].iter_mut().for_each(|v| *v *= inv);
}

/// Channels summed side by side (an i32 block on the stack).
const BLK: usize = 64;

/// int8 input, dequantised mean: `scale · (Σq / n − zp)` per channel, `Σq` the exact i32 sum
/// over the `n` pixels (`n · 255` fits), `/ n` an f32 division (`n = 0` reads as 1).
///
/// Pixel-major: a block of channels' sums runs along each pixel's contiguous codes (the
/// sum is exact, so its order is free). A power-of-two `n` multiplies by `1 / n` instead:
/// both are exact there (`Σq` is an exact f32, `2^-k` scales without rounding).
pub fn gap_i8(n: usize, c: usize, x: &[i8], qp: QParams, y: &mut [f32]) {
    let (y, x) = (&mut y[..c], &x[..n * c]);
    if c == 0 {
        return;
    }
    let nf = n.max(1) as f32;
    let (inv, pow2) = (1.0 / nf, n.max(1).is_power_of_two());
    let zp = qp.zero_point as f32;
    let mean = |s: i32| {
        let m = if pow2 { s as f32 * inv } else { s as f32 / nf };
        qp.scale * (m - zp)
    };
    if n == 1 {
        for (o, &v) in y.iter_mut().zip(x) {
            *o = mean(v as i32);
        }
        return;
    }
    for (b, ys) in y.chunks_mut(BLK).enumerate() {
        let m = ys.len();
        let mut acc = [0i32; BLK];
        let acc = &mut acc[..m];
        for px in x.chunks_exact(c) {
            for (a, &v) in acc.iter_mut().zip(&px[b * BLK..][..m]) {
                *a += v as i32;
            }
        }
        for (o, &s) in ys.iter_mut().zip(acc.iter()) {
            *o = mean(s);
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::engine::testnet::Rng;
    use crate::quant::QParams;

    /// Bit for bit the channel-major spec (`Σ_p x[p·c + ch]`, then `scale · (s / n − zp)`
    /// with an f32 division) on random shapes: pixel counts 0, 1, powers of two and others,
    /// channel counts around the block, codes over the whole range, zero points far out.
    #[test]
    fn pixel_major_gap_is_the_channel_major_mean() {
        let seed = crate::test_seed();
        let mut r = Rng::new(seed);
        for case in 0..400 {
            let n = [0, 1, 2, 4, 16, 3, 49, r.below(300)][case % 8];
            let c = [1, 63, 64, 65, 129, r.below(300)][r.below(6)];
            let x: std::vec::Vec<i8> = (0..n * c).map(|_| r.below(256) as u8 as i8).collect();
            let qp = QParams {
                scale: r.uniform(2.0).abs() + 1e-4,
                zero_point: match r.below(3) {
                    0 => r.below(1 << 24) as i32 - (1 << 23),
                    _ => r.below(256) as i32 - 128,
                },
            };
            let mut y = std::vec![f32::NAN; c + 1];
            super::gap_i8(n, c, &x, qp, &mut y);
            for ch in 0..c {
                let mut s = 0i32;
                for p in 0..n {
                    s += x[p * c + ch] as i32;
                }
                let want = qp.scale * (s as f32 / n.max(1) as f32 - qp.zero_point as f32);
                assert_eq!(
                    y[ch].to_bits(),
                    want.to_bits(),
                    "seed {seed} n={n} c={c} ch={ch}"
                );
            }
            assert!(y[c].is_nan(), "wrote past c");
        }
    }
}
