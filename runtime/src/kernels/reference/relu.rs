//! ReLU, in place (convs fuse it; this is the stand-alone form and the spec of the fused one).

/// f32: `x = max(x, 0)`.
pub fn relu_f32(x: &mut [f32]) {
    x.iter_mut().for_each(|v| *v = v.max(0.0));
}

/// int8: `q = max(q, zero_point)` (real 0 is the zero point).
pub fn relu_i8(x: &mut [i8], zero_point: i32) {
    let z = zero_point.clamp(-128, 127) as i8;
    x.iter_mut().for_each(|v| *v = (*v).max(z));
}
