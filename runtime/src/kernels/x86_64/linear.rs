//! AVX2 twin of `reference::linear::linear_f32` (the department head): 8 outputs in the
//! lanes of one register, 8 inputs at a time — the 8 weight rows' next 8 values loaded and
//! transposed in registers (`transpose8`), so each step is a product and an add per input
//! on whole vectors instead of 8 scalar loads gathered into the lanes. Each lane takes the
//! reference's operations in its order (`acc + w·x`, input by input, no FMA): the same
//! bits.
use core::arch::x86_64::*;

/// `Kernels::linear_f32`: `y[o] = ((b[o] + w[o,0]·x[0]) + w[o,1]·x[1]) + …`.
pub(crate) fn linear_f32(x: &[f32], w: &[f32], bias: &[f32], y: &mut [f32]) {
    let n = x.len();
    let (w, bias) = (&w[..y.len() * n], &bias[..y.len()]);
    for (c, (ys, bs)) in y.chunks_mut(8).zip(bias.chunks(8)).enumerate() {
        let m = ys.len();
        let ws = &w[c * 8 * n..][..m * n];
        // A short group repeats its rows in the idle lanes (discarded), as the reference.
        let rows: [&[f32]; 8] = core::array::from_fn(|k| &ws[(k % m) * n..][..n]);
        let mut acc = [0.0f32; 8];
        acc[..m].copy_from_slice(bs);
        // SAFETY: only installed after AVX2 detection; every row holds `n = x.len()` values.
        let out = unsafe { group(rows, x, acc) };
        ys.copy_from_slice(&out[..m]);
    }
}

/// One group of 8 outputs from `acc` (their biases).
///
/// # Safety
/// AVX2 available; every row holds at least `x.len()` values.
#[target_feature(enable = "avx2")]
unsafe fn group(rows: [&[f32]; 8], x: &[f32], acc: [f32; 8]) -> [f32; 8] {
    let n = x.len();
    debug_assert!(rows.iter().all(|r| r.len() >= n));
    // SAFETY: `acc` holds 8 f32.
    let mut a = unsafe { _mm256_loadu_ps(acc.as_ptr()) };
    let mut j = 0;
    while j + 8 <= n {
        // SAFETY: `j + 8 ≤ n`: 8 values of every row and of `x`.
        unsafe {
            let block: [__m256; 8] =
                core::array::from_fn(|k| _mm256_loadu_ps(rows[k].as_ptr().add(j)));
            for (jj, col) in super::transpose8(block).into_iter().enumerate() {
                a = _mm256_add_ps(a, _mm256_mul_ps(col, _mm256_set1_ps(x[j + jj])));
            }
        }
        j += 8;
    }
    for (jj, &xj) in x.iter().enumerate().skip(j) {
        let col: [f32; 8] = core::array::from_fn(|k| rows[k][jj]);
        // SAFETY: `col` holds 8 f32.
        a = _mm256_add_ps(
            a,
            _mm256_mul_ps(unsafe { _mm256_loadu_ps(col.as_ptr()) }, _mm256_set1_ps(xj)),
        );
    }
    let mut out = [0.0f32; 8];
    // SAFETY: `out` holds 8 f32.
    unsafe { _mm256_storeu_ps(out.as_mut_ptr(), a) };
    out
}

#[cfg(test)]
mod tests {
    use crate::engine::testnet::Rng;

    /// Bit for bit the reference (its per-output sums), for output counts around the lane
    /// width, inputs around the 8-input steps, empty inputs, and NaN / ±∞ among the values.
    /// Seed: `LORKD_SEED`.
    #[test]
    fn linear_is_the_reference() {
        if !super::super::detected() {
            println!("SKIPPED linear_is_the_reference: no AVX2 on this CPU");
            return;
        }
        let mut r = Rng::new(crate::test_seed());
        for case in 0..500 {
            let m = r.below(27);
            let n = [0, 1, 7, 8, 9, 1024, r.below(300)][case % 7];
            let (mut x, w, b) = (r.vec(n, 2.0), r.vec(m * n, 1.0), r.vec(m, 1.0));
            if case % 11 == 0 && n > 0 {
                x[r.below(n)] = [f32::NAN, f32::INFINITY, f32::NEG_INFINITY][case % 3];
            }
            let (mut got, mut want) = (std::vec![f32::NAN; m], std::vec![f32::NAN; m]);
            super::linear_f32(&x, &w, &b, &mut got);
            crate::kernels::reference::linear::linear_f32(&x, &w, &b, &mut want);
            // A NaN's payload and sign depend on which operand x86 propagates (LLVM may
            // commute the reference's adds): every NaN compares as one.
            let bits = |v: &[f32]| {
                v.iter()
                    .map(|f| if f.is_nan() { u32::MAX } else { f.to_bits() })
                    .collect::<std::vec::Vec<_>>()
            };
            assert_eq!(bits(&got), bits(&want), "case {case}: m {m} n {n}");
        }
    }
}
