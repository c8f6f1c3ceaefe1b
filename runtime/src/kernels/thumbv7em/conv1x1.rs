//! Pointwise int8 conv on the DSP extension: each block of output pixels has its input
//! channels widened once to i16 `x − zx` (`SXTAB16` adds the packed `−zx` while it
//! sign-extends, two instructions per 4 channels), then the shared 2×2 GEMM (`gemm.rs`).
use super::dsp::{pair, sxtab16, sxtab16_ror8};
use super::gemm::{block, hpos, pair_words, Buf, XB};
use crate::kernels::{reference, Geom, OutQ};

/// Start of output pixel `p`'s input channels.
#[inline]
fn src(g: &Geom, p: usize) -> usize {
    let (oy, ox) = (p / g.wo, p % g.wo);
    (oy * g.stride * g.w + ox * g.stride) * g.in_stride + g.c_off
}

/// Same contract as `reference::conv1x1::conv1x1_i8` (which it defers to for channel
/// counts the stack block cannot hold, `cin > 1024`, or zero points whose `x − zx` leaves
/// i16).
pub(crate) fn conv1x1_i8(
    g: &Geom,
    x: &[i8],
    zx: i32,
    w: &[i8],
    rq: &[[i32; 3]],
    q: OutQ,
    y: &mut [i8],
) {
    let (n, cout, npix) = (g.cin, g.cout, g.ho * g.wo);
    let wp = pair_words(n);
    let fits = g.k == 1
        && n > 0
        && cout > 0
        && npix > 0
        && wp <= XB
        && (-32_000..=32_000).contains(&zx)
        && w.len() >= cout * n
        && rq.len() >= cout
        && y.len() >= npix * cout
        && src(g, npix - 1) + n <= x.len();
    if !fits {
        return reference::conv1x1::conv1x1_i8(g, x, zx, w, rq, q, y);
    }
    let zz = pair(-zx);
    let per = 2 * (XB / wp);
    let (g4, nt) = (n / 4, n & !3);
    let mut buf = Buf::new();
    let mut p0 = 0;
    while p0 < npix {
        let np = per.min(npix - p0);
        for i in 0..np {
            let px = &x[src(g, p0 + i)..][..n];
            let (base, odd) = ((i / 2) * wp, i % 2);
            let dst = &mut buf.words_mut()[base..][..wp];
            for j in 0..g4 {
                // SAFETY: `4·j + 3 < nt ≤ n = px.len()`; unaligned because channel slices
                // start at any byte.
                let v = unsafe { (px.as_ptr().add(4 * j) as *const u32).read_unaligned() };
                let d = &mut dst[4 * j + 2 * odd..][..2];
                d[0] = sxtab16(zz, v);
                d[1] = sxtab16_ror8(zz, v);
            }
            let h = &mut buf.0[2 * base..][..2 * wp];
            for k in nt..n {
                h[hpos(k, n, odd)] = (px[k] as i32 - zx) as i16;
            }
        }
        block(buf.words(), np, n, w, rq, q, y, p0, cout);
        p0 += np;
    }
}
