//! BatchNorm and LoRA-scaling folding (DESIGN.md "Deployment math").
//!
//! With `g_o = γ_o / √(σ²_o + ε)`:
//! `g·(W0 + s·reshape(B·A)) = g·W0 + reshape((g ⊗ 1_k)·s·B · A)`, so the folded shared
//! weight is `W0' = g·W0`, the shared bias `β − μ·g` is stored once, and the department's
//! delta stays rank r·k with rows `o·k .. o·k+k` of `B` scaled by `g_o·s` (row `o·k + a` of
//! `B·A` lands in output channel `o` after the reshape to `[Cout, Cin, k, k]`).

/// Per-channel BN scale `g = γ/√(σ²+ε)` (computed in f64).
pub fn bn_scale(gamma: &[f32], var: &[f32], eps: f64) -> Vec<f64> {
    gamma
        .iter()
        .zip(var)
        .map(|(&g, &v)| g as f64 / (v as f64 + eps).sqrt())
        .collect()
}

/// Folds `g` into a weight of `g.len()` output channels, `per` elements each; returns the
/// folded weight and the shared bias `β − μ·g`.
pub fn fold_weight(w: &[f32], g: &[f64], beta: &[f32], mean: &[f32]) -> (Vec<f32>, Vec<f32>) {
    let per = w.len() / g.len().max(1);
    let wf = w
        .chunks(per.max(1))
        .zip(g)
        .flat_map(|(row, &go)| row.iter().map(move |&x| (x as f64 * go) as f32))
        .collect();
    let bias = g
        .iter()
        .zip(beta.iter().zip(mean))
        .map(|(&go, (&b, &m))| (b as f64 - m as f64 * go) as f32)
        .collect();
    (wf, bias)
}

/// Folds `g_o·s` into the rows `o·k .. o·k+k` of one department's `B` (`[Cout·k, r·k]`).
pub fn fold_b(b: &[f32], g: &[f64], s: f64, k: usize, rk: usize) -> Vec<f32> {
    let mut out = Vec::with_capacity(b.len());
    for (row_i, row) in b.chunks(rk.max(1)).enumerate() {
        let f = g[row_i / k] * s;
        out.extend(row.iter().map(|&x| (x as f64 * f) as f32));
    }
    out.truncate(b.len());
    out
}

/// Depthwise weight `[C, 1, 3, 3]` (checkpoint) → `[3, 3, C]` (bundle, NHWC-friendly).
pub fn dw_to_hwc(w: &[f32], c: usize) -> Vec<f32> {
    let mut out = vec![0.0; 9 * c];
    for ch in 0..c {
        for t in 0..9 {
            out[t * c + ch] = w[ch * 9 + t];
        }
    }
    out
}

/// `W = W0 + s·reshape(B·A, [Cout, Cin, k, k])` (unfolded), for tests and references.
pub fn merge_delta(w0: &[f32], a: &[f32], b: &[f32], s: f64, rk: usize) -> Vec<f32> {
    let cols = a.len() / rk.max(1);
    let rows = b.len() / rk.max(1);
    let mut w = w0.to_vec();
    for i in 0..rows {
        for j in 0..cols {
            let d: f64 = (0..rk)
                .map(|q| b[i * rk + q] as f64 * a[q * cols + j] as f64)
                .sum();
            w[i * cols + j] += (s * d) as f32;
        }
    }
    w
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    /// conv(x; g·W_t) + bias == BN(conv(x; W_t)) as a weight identity: folding BN and `s`
    /// into `W0` and the rows of `B` gives the BN-scaled merged weight.
    #[test]
    fn folded_delta_equals_scaled_merged_weight() {
        let seed: u64 = rand::random();
        println!("seed {seed}");
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        for &(cout, cin, k, r) in &[(5, 3, 3, 2), (7, 4, 1, 3), (1, 1, 3, 1)] {
            let (rk, per) = (r * k, cin * k * k);
            let w0: Vec<f32> = (0..cout * per).map(|_| rng.gen_range(-1.0..1.0)).collect();
            let a: Vec<f32> = (0..rk * cin * k)
                .map(|_| rng.gen_range(-1.0..1.0))
                .collect();
            let b: Vec<f32> = (0..cout * k * rk)
                .map(|_| rng.gen_range(-1.0..1.0))
                .collect();
            let gamma: Vec<f32> = (0..cout).map(|_| rng.gen_range(0.5..2.0)).collect();
            let var: Vec<f32> = (0..cout).map(|_| rng.gen_range(0.1..2.0)).collect();
            let beta: Vec<f32> = (0..cout).map(|_| rng.gen_range(-1.0..1.0)).collect();
            let mean: Vec<f32> = (0..cout).map(|_| rng.gen_range(-1.0..1.0)).collect();
            let s = 2.0;
            let g = bn_scale(&gamma, &var, 1e-5);
            let merged = merge_delta(&w0, &a, &b, s, rk);
            let (w0f, bias) = fold_weight(&w0, &g, &beta, &mean);
            let folded = merge_delta(&w0f, &a, &fold_b(&b, &g, s, k, rk), 1.0, rk);
            for o in 0..cout {
                for j in 0..per {
                    let want = merged[o * per + j] as f64 * g[o];
                    assert!((folded[o * per + j] as f64 - want).abs() < 1e-4 * (1.0 + want.abs()));
                }
                let want = beta[o] as f64 - mean[o] as f64 * g[o];
                assert!((bias[o] as f64 - want).abs() < 1e-5);
            }
        }
    }
}
