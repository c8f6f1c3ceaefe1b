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

/// int8 input, dequantised mean: `scale · (Σq / n − zp)` (exact i32 sum; `n · 255` fits).
pub fn gap_i8(n: usize, c: usize, x: &[i8], qp: QParams, y: &mut [f32]) {
    for (ch, o) in y[..c].iter_mut().enumerate() {
        let mut s = 0i32;
        for p in 0..n {
            s += x[p * c + ch] as i32;
        }
        *o = qp.scale * (s as f32 / n.max(1) as f32 - qp.zero_point as f32);
    }
}
