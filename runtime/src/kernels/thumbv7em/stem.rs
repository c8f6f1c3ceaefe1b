//! The k×k int8 conv (the stem) on the DSP extension: per block of output pixels the
//! receptive fields are gathered once into i16 `x − zx` patches (padding 0) in the shared
//! GEMM's widened layout, then the 2×2 GEMM (`gemm.rs`) runs over `cin·k·k`.
use super::gemm::{block, hpos, pair_words, Buf, XB};
use crate::kernels::reference::conv::PATCH;
use crate::kernels::{reference, Geom, OutQ};

/// Same contract as `reference::conv::conv_i8` (which it defers to for patches longer than
/// `conv::PATCH` or zero points whose `x − zx` leaves i16).
pub(crate) fn conv_i8(
    g: &Geom,
    x: &[i8],
    zx: i32,
    w: &[i8],
    rq: &[[i32; 3]],
    q: OutQ,
    y: &mut [i8],
) {
    let kk = g.k * g.k;
    let n = g.cin * kk;
    let (cout, npix) = (g.cout, g.ho * g.wo);
    let wp = pair_words(n);
    let fits = n > 0
        && n <= PATCH
        && cout > 0
        && npix > 0
        && (-32_000..=32_000).contains(&zx)
        && w.len() >= cout * n
        && rq.len() >= cout
        && y.len() >= npix * cout;
    if !fits {
        return reference::conv::conv_i8(g, x, zx, w, rq, q, y);
    }
    // Where each (channel, tap) value of a pair's pixel 0 goes (pixel 1: 4 halfwords on).
    let mut pos = [0u16; PATCH];
    for (k, p) in pos[..n].iter_mut().enumerate() {
        *p = hpos(k, n, 0) as u16;
    }
    let per = 2 * (XB / wp);
    let mut buf = Buf::new();
    let mut p0 = 0;
    while p0 < npix {
        let np = per.min(npix - p0);
        for i in 0..np {
            let (oy, ox) = ((p0 + i) / g.wo, (p0 + i) % g.wo);
            let h = &mut buf.0[2 * (i / 2) * wp + 4 * (i % 2)..][..2 * wp - 4];
            for ky in 0..g.k {
                let iy = Geom::tap(oy, ky, g.stride, g.pad, g.h);
                for kx in 0..g.k {
                    let ix = Geom::tap(ox, kx, g.stride, g.pad, g.w);
                    let t = ky * g.k + kx;
                    let ps = pos[..n].iter().skip(t).step_by(kk);
                    match (iy, ix) {
                        (Some(iy), Some(ix)) => {
                            let px = &x[(iy * g.w + ix) * g.in_stride + g.c_off..][..g.cin];
                            for (&v, &p) in px.iter().zip(ps) {
                                h[p as usize] = (v as i32 - zx) as i16;
                            }
                        }
                        _ => {
                            for &p in ps {
                                h[p as usize] = 0;
                            }
                        }
                    }
                }
            }
        }
        block(buf.words(), np, n, w, rq, q, y, p0, cout);
        p0 += np;
    }
}
