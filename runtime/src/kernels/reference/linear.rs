//! Fully connected layer (the department head): `y = W·x + b`, `W` `[out, in]` row-major.

/// Outputs whose sums run side by side: their add chains are independent, so the adds'
/// latency overlaps instead of one chain of `x.len()` dependent adds per output.
const O: usize = 8;

/// f32 linear; `y.len()` outputs, `x.len()` inputs. Each output is
/// `((b[o] + w[o,0]·x[0]) + w[o,1]·x[1]) + …`, a product then an add per term, in input
/// order — [`O`] outputs interleaved, which changes no output's operations.
pub fn linear_f32(x: &[f32], w: &[f32], bias: &[f32], y: &mut [f32]) {
    let n = x.len();
    let (w, bias) = (&w[..y.len() * n], &bias[..y.len()]);
    if cfg!(target_arch = "arm") {
        // Cortex-M issues in order with short FPU latencies: nothing to overlap, and the
        // interleaved form's idle lanes would only add work.
        for (o, yo) in y.iter_mut().enumerate() {
            let mut acc = bias[o];
            for (&wj, &xj) in w[o * n..][..n].iter().zip(x) {
                acc += wj * xj;
            }
            *yo = acc;
        }
        return;
    }
    for (c, (ys, bs)) in y.chunks_mut(O).zip(bias.chunks(O)).enumerate() {
        let ws = &w[c * O * n..][..ys.len() * n];
        let m = ys.len();
        let mut acc = [0.0f32; O];
        acc[..m].copy_from_slice(bs);
        if n > 0 {
            // A last group short of `O` repeats its rows in the idle accumulators
            // (discarded), so it too runs as independent chains.
            let rows: [&[f32]; O] = core::array::from_fn(|k| &ws[(k % m) * n..][..n]);
            for (j, &xj) in x.iter().enumerate() {
                for (a, r) in acc.iter_mut().zip(&rows) {
                    *a += r[j] * xj;
                }
            }
        }
        ys.copy_from_slice(&acc[..ys.len()]);
    }
}

#[cfg(test)]
mod tests {
    use crate::engine::testnet::Rng;

    /// Bit for bit the one-output-at-a-time sum, for output counts around the interleave
    /// width and empty inputs.
    #[test]
    fn interleaved_outputs_are_the_sequential_sums() {
        let mut r = Rng::new(crate::test_seed());
        for _ in 0..300 {
            let (m, n) = (r.below(20), [0, 1, r.below(300)][r.below(3)]);
            let (x, w, b) = (r.vec(n, 2.0), r.vec(m * n, 1.0), r.vec(m, 1.0));
            let mut y = std::vec![f32::NAN; m];
            super::linear_f32(&x, &w, &b, &mut y);
            for o in 0..m {
                let mut acc = b[o];
                for j in 0..n {
                    acc += w[o * n + j] * x[j];
                }
                assert_eq!(y[o].to_bits(), acc.to_bits(), "m={m} n={n} o={o}");
            }
        }
    }
}
