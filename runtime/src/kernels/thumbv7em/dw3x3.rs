//! Depthwise 3x3 int8 (padding 1, stride 1 or 2) on the DSP extension. Channels are
//! contiguous in both `x` and the `[3, 3, C]` weights, so one word load brings 4 channels:
//! `SXTAB16` widens `x − zx`, `SXTB16` the weights, and `SMLABB` / `SMLATT` accumulate each
//! channel on its own (a depthwise sum never pairs channels). Channels go in blocks whose
//! requantisation constants ([`Kq`]) are prepared once and kept for every pixel; each
//! pixel's taps inside the image are listed once as a pair of pointers per tap.
use super::dsp::{
    pair, requant1k, short1k, smlabb, smlatt, sxtab16, sxtab16_ror8, sxtb16, sxtb16_ror8, Kq,
};
use crate::kernels::{reference, Geom, OutQ};
use core::mem::MaybeUninit;

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
    // Uninitialised: zeroing 32 of them cost more than a small layer's block setup.
    let mut kb = [MaybeUninit::<Kq>::uninit(); BLOCK];
    for c0 in (0..c).step_by(BLOCK) {
        let nb = BLOCK.min(c - c0);
        for (ki, &v) in kb.iter_mut().zip(&rq[c0..c0 + nb]) {
            // `|acc| ≤ 9·2^7·2^15` (`|x − zx| < 2^15` by `fits`).
            ki.write(Kq::new(v, q, 9 << 22));
        }
        // SAFETY: the loop above wrote `kb[..nb]` (`rq` holds `c ≥ c0 + nb` rows by `fits`);
        // `MaybeUninit<Kq>` has `Kq`'s layout.
        let k: &[Kq] = unsafe { core::slice::from_raw_parts(kb.as_ptr().cast(), nb) };
        // One test a block instead of a dispatch an output: the usual case.
        let short = k.iter().all(Kq::is_short);
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
                    let a = [a0, a1, a2, a3];
                    if short {
                        for i in 0..4 {
                            o[i] = short1k(&kk[i], a[i]);
                        }
                    } else {
                        for i in 0..4 {
                            o[i] = requant1k(&kk[i], a[i]);
                        }
                    }
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
