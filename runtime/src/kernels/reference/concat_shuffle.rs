//! ShuffleNetV2's `concat(a, b)` followed by a 2-group channel shuffle:
//! `y[p, 2i] = a[p, i]`, `y[p, 2i+1] = b[p, i]`. `a` and `b` are channel slices
//! (`stride`, `off`) of NHWC tensors with `n` pixels each; `y` is dense `[n, 2·c]`.

/// Interleaves `c` channels of `a` and `b` per pixel (any element type).
#[allow(clippy::too_many_arguments)]
pub fn concat_shuffle<T: Copy>(
    n: usize,
    c: usize,
    a: &[T],
    a_stride: usize,
    a_off: usize,
    b: &[T],
    b_stride: usize,
    b_off: usize,
    y: &mut [T],
) {
    for p in 0..n {
        let pa = &a[p * a_stride + a_off..][..c];
        let pb = &b[p * b_stride + b_off..][..c];
        let out = &mut y[p * 2 * c..][..2 * c];
        for (i, o) in out.chunks_exact_mut(2).enumerate() {
            o[0] = pa[i];
            o[1] = pb[i];
        }
    }
}
