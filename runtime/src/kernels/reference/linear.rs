//! Fully connected layer (the department head): `y = W·x + b`, `W` `[out, in]` row-major.

/// f32 linear; `y.len()` outputs, `x.len()` inputs.
pub fn linear_f32(x: &[f32], w: &[f32], bias: &[f32], y: &mut [f32]) {
    let n = x.len();
    for (o, yo) in y.iter_mut().enumerate() {
        let mut acc = bias[o];
        for (a, b) in w[o * n..][..n].iter().zip(x) {
            acc += a * b;
        }
        *yo = acc;
    }
}
