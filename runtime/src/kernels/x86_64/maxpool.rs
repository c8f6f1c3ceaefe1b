//! AVX2 int8 max pool 3x3, stride 2, padding 1 (padding never wins) over a dense NHWC
//! `[h, w, c]`: per output pixel the taps inside the image are listed once, then 16 channels
//! a step with `pmaxsb` (the last step overlaps the one before when `c` is not a multiple of
//! 16: the same maxima again). A max of codes, so exact. Fewer than 16 channels take the
//! reference.
use core::arch::x86_64::*;

use crate::kernels::reference::maxpool::{self as refpool, taps};
use crate::kernels::Geom;

/// Same contract as `reference::maxpool::maxpool3x3s2::<i8>`.
pub(crate) fn maxpool3x3s2_i8(h: usize, w: usize, c: usize, x: &[i8], y: &mut [i8]) {
    if c < 16 {
        return refpool::maxpool3x3s2(h, w, c, x, y);
    }
    let (ho, wo) = (Geom::out_dim(h, 3, 2, 1), Geom::out_dim(w, 3, 2, 1));
    let mut t: [&[i8]; 9] = [&[]; 9];
    for oy in 0..ho {
        for ox in 0..wo {
            let nt = taps(h, w, c, x, oy, ox, &mut t);
            let out = &mut y[(oy * wo + ox) * c..][..c];
            // SAFETY: only installed after AVX2 detection; `c ≥ 16`, every tap row and
            // `out` hold `c` bytes.
            unsafe { pixel(&t[..nt], out) };
        }
    }
}

/// `out = max over rows`, 16 channels a step, the last step ending at `out.len()`.
///
/// # Safety
/// AVX2 available; `rows` not empty, `out.len() ≥ 16`, every row at least `out.len()` long.
#[target_feature(enable = "avx2")]
unsafe fn pixel(rows: &[&[i8]], out: &mut [i8]) {
    let c = out.len();
    debug_assert!(!rows.is_empty() && c >= 16 && rows.iter().all(|r| r.len() >= c));
    let mut c0 = 0;
    while c0 < c {
        let at = c0.min(c - 16);
        // SAFETY: `at + 16 ≤ c`, the length of `out` and of every row.
        unsafe {
            let mut m = _mm_loadu_si128(rows[0].as_ptr().add(at).cast());
            for r in &rows[1..] {
                m = _mm_max_epi8(m, _mm_loadu_si128(r.as_ptr().add(at).cast()));
            }
            _mm_storeu_si128(out.as_mut_ptr().add(at).cast(), m);
        }
        c0 = at + 16;
    }
}
