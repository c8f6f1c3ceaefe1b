//! BatchNorm and LoRA-scaling folding (DESIGN.md "Deployment math").
//!
//! With `g_o = γ_o / √(σ²_o + ε)`:
//! `g·(W0 + s·reshape(B·A)) = g·W0 + reshape((g ⊗ 1_k)·s·B · A)`, so the folded shared
//! weight is `W0' = g·W0`, the shared bias `β − μ·g` is stored once, and the department's
//! delta stays rank r·k with rows `o·k .. o·k+k` of `B` scaled by `g_o·s` (row `o·k + a` of
//! `B·A` lands in output channel `o` after the reshape to `[Cout, Cin, k, k]`).

use ndarray::{Array1, Array2, ArrayView1, ArrayView2, Axis, Zip};

/// Per-channel BN scale `g = γ/√(σ²+ε)` (computed in f64).
pub fn bn_scale(gamma: ArrayView1<f32>, var: ArrayView1<f32>, eps: f64) -> Array1<f64> {
    Zip::from(gamma)
        .and(var)
        .map_collect(|&g, &v| g as f64 / (v as f64 + eps).sqrt())
}

/// Folds `g` into a weight `[Cout, per]` (row `o` is output channel `o`); returns the folded
/// weight and the shared bias `β − μ·g`.
pub fn fold_weight(
    w: ArrayView2<f32>,
    g: ArrayView1<f64>,
    beta: ArrayView1<f32>,
    mean: ArrayView1<f32>,
) -> (Array2<f32>, Array1<f32>) {
    let wf = Zip::from(w)
        .and_broadcast(g.insert_axis(Axis(1)))
        .map_collect(|&x, &go| (x as f64 * go) as f32);
    let bias = Zip::from(g)
        .and(beta)
        .and(mean)
        .map_collect(|&go, &b, &m| (b as f64 - m as f64 * go) as f32);
    (wf, bias)
}

/// Folds `g_o·s` into the rows `o·k .. o·k+k` of one department's `B` (`[Cout·k, r·k]`).
pub fn fold_b(b: ArrayView2<f32>, g: ArrayView1<f64>, s: f64, k: usize) -> Array2<f32> {
    let k = k.max(1);
    let row_scale: Array1<f64> = (0..b.nrows()).map(|i| g[i / k] * s).collect();
    Zip::from(b)
        .and_broadcast(row_scale.view().insert_axis(Axis(1)))
        .map_collect(|&x, &f| (x as f64 * f) as f32)
}

/// Depthwise weight `[C, 9]` (checkpoint `[C, 1, 3, 3]`) → `[9, C]` (bundle `[3, 3, C]`,
/// NHWC-friendly).
pub fn dw_to_hwc(w: ArrayView2<f32>) -> Array2<f32> {
    w.t().as_standard_layout().into_owned()
}

/// `W = W0 + s·reshape(B·A, [Cout, Cin, k, k])` (unfolded) with `W0` as `[Cout·k, Cin·k]`
/// rows of the product, in f64, for tests and references.
pub fn merge_delta(
    w0: ArrayView2<f32>,
    a: ArrayView2<f32>,
    b: ArrayView2<f32>,
    s: f64,
) -> Array2<f32> {
    let d = b.mapv(f64::from).dot(&a.mapv(f64::from));
    Zip::from(w0)
        .and(&d)
        .map_collect(|&w, &d| w + (s * d) as f32)
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
            fn v2(v: &[f32], rows: usize, cols: usize) -> ArrayView2<'_, f32> {
                ArrayView2::from_shape((rows, cols), v).unwrap()
            }
            let v1 = ArrayView1::from;
            let g = bn_scale(v1(&gamma), v1(&var), 1e-5);
            // `[Cout, Cin·k·k]` is `[Cout·k, Cin·k]` row-major: the rows of `B·A`.
            let (w0_rows, a, b) = (
                v2(&w0, cout * k, cin * k),
                v2(&a, rk, cin * k),
                v2(&b, cout * k, rk),
            );
            let merged = merge_delta(w0_rows, a, b, s);
            let merged = merged.as_slice().unwrap();
            let (w0f, bias) = fold_weight(v2(&w0, cout, per), g.view(), v1(&beta), v1(&mean));
            let w0f = w0f.into_shape_with_order((cout * k, cin * k)).unwrap();
            let folded = merge_delta(w0f.view(), a, fold_b(b, g.view(), s, k).view(), 1.0);
            let folded = folded.as_slice().unwrap();
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
