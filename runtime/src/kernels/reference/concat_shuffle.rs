//! ShuffleNetV2's `concat(a, b)` followed by a 2-group channel shuffle:
//! `y[p, 2i] = a[p, i]`, `y[p, 2i+1] = b[p, i]`. `a` and `b` are channel slices
//! (`stride`, `off`) of NHWC tensors with `n` pixels each; `y` is dense `[n, 2·c]`.
use crate::quant::QParams;

/// Interleaves `c` channels of `a` and `b` per pixel (any element type). Each pixel's
/// three slices are cut once; the element loop is a zip (no index checks inside).
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
    if c == 0 {
        return;
    }
    for (p, out) in y[..n * 2 * c].chunks_exact_mut(2 * c).enumerate() {
        let pa = &a[p * a_stride + a_off..][..c];
        let pb = &b[p * b_stride + b_off..][..c];
        for ((o, &va), &vb) in out.as_chunks_mut::<2>().0.iter_mut().zip(pa).zip(pb) {
            *o = [va, vb];
        }
    }
}

/// One int8 input of [`concat_shuffle_i8`]: `n` pixels of `stride` codes in `q`, of which
/// channels `off .. off + c` are read.
#[derive(Clone, Copy, Debug)]
pub struct ConcatIn<'a> {
    /// The NHWC codes.
    pub x: &'a [i8],
    /// Channels a pixel (the pixel stride).
    pub stride: usize,
    /// First channel read.
    pub off: usize,
    /// The codes' quantisation.
    pub q: QParams,
}

impl ConcatIn<'_> {
    /// Whether the `c` codes from `off` of each of `n` pixels lie inside `x` (the check a
    /// SIMD twin makes once, before it writes anything).
    pub fn holds(&self, n: usize, c: usize) -> bool {
        n == 0
            || (n - 1)
                .checked_mul(self.stride)
                .and_then(|v| v.checked_add(self.off)?.checked_add(c))
                .is_some_and(|end| end <= self.x.len())
    }

    /// Whether rescaling this side into `qy` keeps every `v − zero_point` inside i32, as
    /// `QParams::dequantize` needs (a side already in `qy` is copied: always).
    pub fn rescalable(&self, qy: QParams) -> bool {
        self.q == qy || self.q.zero_point.unsigned_abs() <= 1 << 24
    }
}

/// The output's length `n·2c`, if `y_len` holds it, every pixel's slice lies inside its
/// input and a rescaled side's zero point is in range: a SIMD twin's checks, made once
/// before it writes anything.
pub fn fits(
    n: usize,
    c: usize,
    a: &ConcatIn<'_>,
    b: &ConcatIn<'_>,
    qy: QParams,
    y_len: usize,
) -> Option<usize> {
    let len = n.checked_mul(2 * c).filter(|&len| len <= y_len)?;
    (a.holds(n, c) && b.holds(n, c) && a.rescalable(qy) && b.rescalable(qy)).then_some(len)
}

/// [`concat_shuffle`] of int8 codes re-expressed in the output's quantisation `qy`: a side
/// whose `q` equals `qy` is copied (the packer gives a concat input that only the concat
/// reads the output's quantisation), every code of the other becomes
/// `qy.quantize(q.dequantize(v))` (the engine's rescale). For an equal side that rescale is
/// the copy except for scales near the f32 range's ends; the copy is the definition.
pub fn concat_shuffle_i8(
    n: usize,
    c: usize,
    a: ConcatIn<'_>,
    b: ConcatIn<'_>,
    qy: QParams,
    y: &mut [i8],
) {
    let f = |s: ConcatIn<'_>, v: i8| {
        if s.q == qy {
            v
        } else {
            qy.quantize(s.q.dequantize(v))
        }
    };
    if c == 0 {
        return;
    }
    for (p, out) in y[..n * 2 * c].chunks_exact_mut(2 * c).enumerate() {
        let pa = &a.x[p * a.stride + a.off..][..c];
        let pb = &b.x[p * b.stride + b.off..][..c];
        for ((o, &va), &vb) in out.as_chunks_mut::<2>().0.iter_mut().zip(pa).zip(pb) {
            *o = [f(a, va), f(b, vb)];
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::engine::testnet::Rng;

    /// The definition element by element, on random shapes with channel offsets and wider
    /// strides; nothing past `n · 2c` written.
    #[test]
    fn interleaves_both_slices() {
        let seed = crate::test_seed();
        let mut r = Rng::new(seed);
        for _ in 0..300 {
            let (n, c) = (r.below(20), r.below(40));
            let (ao, bo) = (r.below(5), r.below(5));
            let (sa, sb) = (c + ao + r.below(3), c + bo + r.below(3));
            let a: std::vec::Vec<i16> = (0..n * sa).map(|_| r.below(60000) as i16).collect();
            let b: std::vec::Vec<i16> = (0..n * sb).map(|_| r.below(60000) as i16).collect();
            let mut y = std::vec![7i16; n * 2 * c + 3];
            super::concat_shuffle(n, c, &a, sa, ao, &b, sb, bo, &mut y);
            for p in 0..n {
                for i in 0..c {
                    assert_eq!(y[p * 2 * c + 2 * i], a[p * sa + ao + i], "seed {seed}");
                    assert_eq!(y[p * 2 * c + 2 * i + 1], b[p * sb + bo + i], "seed {seed}");
                }
            }
            assert_eq!(&y[n * 2 * c..], &[7, 7, 7], "seed {seed}");
        }
    }
}
