//! Depthwise 3x3 int8 (padding 1, stride 1 or 2) on the DSP extension. Channels are
//! contiguous in both `x` and the `[3, 3, C]` weights, so one word load brings 4 channels:
//! `SXTAB16` widens `x − zx`, `SXTB16` the weights, and `SMLABB` / `SMLATT` accumulate each
//! channel on its own (a depthwise sum never pairs channels). Channels go in blocks whose
//! requantisation constants ([`Kq`]) are prepared once and kept for every pixel; each
//! pixel's taps inside the image are listed once as a pair of pointers per tap.
use super::dsp::{pair, requant1k, smlabb, smlatt, sxtab16, sxtab16_ror8, sxtb16, sxtb16_ror8, Kq};
use crate::kernels::{reference, Geom, OutQ};

/// Channels per block (their `Kq` live on the stack).
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
    let mut k = [Kq::default(); BLOCK];
    for c0 in (0..c).step_by(BLOCK) {
        let nb = BLOCK.min(c - c0);
        for (ki, &v) in k.iter_mut().zip(&rq[c0..c0 + nb]) {
            *ki = Kq::new(v, q);
        }
        let k = &k[..nb];
        let n4 = nb & !3;
        for oy in 0..g.ho {
            for ox in 0..g.wo {
                // The taps inside the image: where this block's channels start in x and w,
                // each checked once to hold `nb` bytes.
                let mut t: [(*const i8, *const i8); 9] =
                    [(core::ptr::null(), core::ptr::null()); 9];
                let mut nt = 0;
                for ky in 0..3 {
                    let Some(iy) = Geom::tap(oy, ky, g.stride, 1, g.h) else {
                        continue;
                    };
                    for kx in 0..3 {
                        let Some(ix) = Geom::tap(ox, kx, g.stride, 1, g.w) else {
                            continue;
                        };
                        let xs = &x[(iy * g.w + ix) * g.in_stride + g.c_off + c0..][..nb];
                        let ws = &w[(ky * 3 + kx) * c + c0..][..nb];
                        t[nt] = (xs.as_ptr(), ws.as_ptr());
                        nt += 1;
                    }
                }
                let t = &t[..nt];
                let out = &mut y[(oy * g.wo + ox) * c + c0..][..nb];
                for j in (0..n4).step_by(4) {
                    let (mut a0, mut a1, mut a2, mut a3) = (0, 0, 0, 0);
                    for &(xp, wp) in t {
                        // SAFETY: both pointers start `nb`-byte slices of `x` and `w` (taken
                        // above, alive for this loop) and `j + 3 < n4 ≤ nb`; unaligned
                        // because channel offsets start at any byte.
                        let (xv, wv) = unsafe {
                            (
                                (xp.add(j) as *const u32).read_unaligned(),
                                (wp.add(j) as *const u32).read_unaligned(),
                            )
                        };
                        let (xe, xo) = (sxtab16(zz, xv), sxtab16_ror8(zz, xv));
                        let (we, wo) = (sxtb16(wv), sxtb16_ror8(wv));
                        a0 = smlabb(we, xe, a0);
                        a2 = smlatt(we, xe, a2);
                        a1 = smlabb(wo, xo, a1);
                        a3 = smlatt(wo, xo, a3);
                    }
                    let (o, kk) = (&mut out[j..j + 4], &k[j..j + 4]);
                    o[0] = requant1k(&kk[0], a0);
                    o[1] = requant1k(&kk[1], a1);
                    o[2] = requant1k(&kk[2], a2);
                    o[3] = requant1k(&kk[3], a3);
                }
                for j in n4..nb {
                    let mut acc = 0i32;
                    for &(xp, wp) in t {
                        // SAFETY: as above, `j < nb`.
                        let (xv, wv) = unsafe { (*xp.add(j), *wp.add(j)) };
                        acc = acc.wrapping_add(wv as i32 * (xv as i32 - zx));
                    }
                    out[j] = requant1k(&k[j], acc);
                }
            }
        }
    }
}
