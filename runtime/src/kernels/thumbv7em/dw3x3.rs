//! Depthwise 3x3 int8 (padding 1, stride 1 or 2) on the DSP extension. Channels are
//! contiguous in both `x` and the `[3, 3, C]` weights, so one word load brings 4 channels:
//! `SXTAB16` widens `x − zx`, `SXTB16` the weights, and `SMLABB` / `SMLATT` accumulate each
//! channel on its own (a depthwise sum never pairs channels). Channels go in blocks whose
//! requantisation constants are prepared once and kept for every pixel.
use super::dsp::{pair, requant1, smlabb, smlatt, sxtab16, sxtab16_ror8, sxtb16, sxtb16_ror8};
use crate::kernels::fixed::Rq;
use crate::kernels::{reference, Geom, OutQ};

/// Channels per block (their `Rq` live on the stack).
const BLOCK: usize = 32;

/// Same contract as `reference::dwconv3x3::dwconv3x3_i8`.
pub(crate) fn dwconv3x3_i8(
    g: &Geom,
    x: &[i8],
    zx: i32,
    w: &[i8],
    rq: &[[i32; 3]],
    q: OutQ,
    y: &mut [i8],
) {
    let c = g.cout;
    let npix = g.ho * g.wo;
    let fits = c > 0
        && (-32_000..=32_000).contains(&zx)
        && w.len() >= 9 * c
        && rq.len() >= c
        && y.len() >= npix * c;
    if !fits {
        return reference::dwconv3x3::dwconv3x3_i8(g, x, zx, w, rq, q, y);
    }
    let zz = pair(-zx);
    for c0 in (0..c).step_by(BLOCK) {
        let nb = BLOCK.min(c - c0);
        let mut r = [Rq::new([0, 0, 0], q); BLOCK];
        for (ri, &v) in r.iter_mut().zip(&rq[c0..c0 + nb]) {
            *ri = Rq::new(v, q);
        }
        for oy in 0..g.ho {
            for ox in 0..g.wo {
                // The taps inside the image: x and w slices of this block's channels.
                let mut xs: [&[i8]; 9] = [&[]; 9];
                let mut ws: [&[i8]; 9] = [&[]; 9];
                let mut nt = 0;
                for ky in 0..3 {
                    let Some(iy) = Geom::tap(oy, ky, g.stride, 1, g.h) else {
                        continue;
                    };
                    for kx in 0..3 {
                        let Some(ix) = Geom::tap(ox, kx, g.stride, 1, g.w) else {
                            continue;
                        };
                        xs[nt] = &x[(iy * g.w + ix) * g.in_stride + g.c_off + c0..][..nb];
                        ws[nt] = &w[(ky * 3 + kx) * c + c0..][..nb];
                        nt += 1;
                    }
                }
                let (xs, ws) = (&xs[..nt], &ws[..nt]);
                let out = &mut y[(oy * g.wo + ox) * c + c0..][..nb];
                let n4 = nb & !3;
                for j in (0..n4).step_by(4) {
                    let (mut a0, mut a1, mut a2, mut a3) = (0, 0, 0, 0);
                    for (xt, wt) in xs.iter().zip(ws) {
                        // SAFETY: `j + 3 < n4 ≤ nb`, the length of every tap slice;
                        // unaligned because channel offsets start at any byte.
                        let (xv, wv) = unsafe {
                            (
                                (xt.as_ptr().add(j) as *const u32).read_unaligned(),
                                (wt.as_ptr().add(j) as *const u32).read_unaligned(),
                            )
                        };
                        let (xe, xo) = (sxtab16(zz, xv), sxtab16_ror8(zz, xv));
                        let (we, wo) = (sxtb16(wv), sxtb16_ror8(wv));
                        a0 = smlabb(we, xe, a0);
                        a2 = smlatt(we, xe, a2);
                        a1 = smlabb(wo, xo, a1);
                        a3 = smlatt(wo, xo, a3);
                    }
                    let o = &mut out[j..j + 4];
                    let rr = &r[j..j + 4];
                    o[0] = requant1(&rr[0], a0);
                    o[1] = requant1(&rr[1], a1);
                    o[2] = requant1(&rr[2], a2);
                    o[3] = requant1(&rr[3], a3);
                }
                for j in n4..nb {
                    let mut acc = 0i32;
                    for (xt, wt) in xs.iter().zip(ws) {
                        acc = acc.wrapping_add(wt[j] as i32 * (xt[j] as i32 - zx));
                    }
                    out[j] = requant1(&r[j], acc);
                }
            }
        }
    }
}
