//! Depthwise 3x3 int8 (padding 1, stride 1 or 2) on the DSP extension. Channels are
//! contiguous in both `x` and the `[3, 3, C]` weights, so one word load brings 4 channels:
//! `SXTAB16` widens `x − zx` and `SMLABB` / `SMLATT` accumulate each channel on its own (a
//! depthwise sum never pairs channels). Channels go in blocks whose requantisation
//! constants ([`Kq`]) and widened weights (`SXTB16`, 9 taps × 2 words per 4 channels) are
//! prepared once and kept for every pixel. Every pixel runs all 9 taps: a tap outside the
//! image reads a row of `zx` bytes (`x − zx = 0`), so the tap loop has no branches and
//! unrolls — 9 instructions a tap and 4 channels.
use super::dsp::{
    pair, requant1k, short1k, short_z, smlabb, smlatt, sxtab16, sxtab16_ror8, sxtb16, sxtb16_ror8,
    Kq, ShortStage,
};
use crate::kernels::{reference, Geom, OutQ};
use core::mem::MaybeUninit;

/// Channels per block (their `Kq` and widened weights live on the stack: 1.9 KiB).
const BLOCK: usize = 32;

/// Output images of at most this many pixels take [`few`].
const FEW: usize = 8;

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
    // The padding row holds `zx` as a byte: zero points outside i8 take the reference.
    let fits = c > 0 && w.len() >= 9 * c && rq.len() >= c && y.len() >= npix * c;
    let (Ok(zb), true) = (i8::try_from(zx), fits) else {
        return reference::dwconv3x3::dwconv3x3_i8(g, x, zx, w, rq, q, y);
    };
    let zz = pair(-zx);
    // `|acc| ≤ 9·2^7·2^8` (`|x − zx| ≤ 255`).
    let short = ShortStage::new(q, 9 << 15);
    if npix <= FEW && q.lo <= -128 && rq[..c].iter().all(|&r| short.channel(r).is_some()) {
        return few(g, x, zz, w, &rq[..c], q.zero_point, y);
    }
    let pad = [zb; BLOCK];
    // Uninitialised: zeroing them cost more than a small layer's block setup.
    let mut kb = [MaybeUninit::<Kq>::uninit(); BLOCK];
    let mut wb = [MaybeUninit::<[u32; 2]>::uninit(); 9 * BLOCK / 4];
    for c0 in (0..c).step_by(BLOCK) {
        let nb = BLOCK.min(c - c0);
        let n4 = nb & !3;
        for (ki, &v) in kb.iter_mut().zip(&rq[c0..c0 + nb]) {
            ki.write(Kq::new(v, q, &short));
        }
        // Group `j / 4`'s 9 taps, each its 4 weights widened: `[even, odd]` channels.
        for (gw, j) in wb.chunks_exact_mut(9).zip((0..n4).step_by(4)) {
            for (t, o) in gw.iter_mut().enumerate() {
                let s = &w[t * c + c0 + j..][..4];
                let v = u32::from_le_bytes([s[0] as u8, s[1] as u8, s[2] as u8, s[3] as u8]);
                o.write([sxtb16(v), sxtb16_ror8(v)]);
            }
        }
        // SAFETY: the loops above wrote `kb[..nb]` (`rq` holds `c ≥ c0 + nb` rows by `fits`)
        // and `wb[..9·n4/4]`; `MaybeUninit<T>` has `T`'s layout.
        let (k, wg): (&[Kq], &[[u32; 2]]) = unsafe {
            (
                core::slice::from_raw_parts(kb.as_ptr().cast(), nb),
                core::slice::from_raw_parts(wb.as_ptr().cast(), 9 * n4 / 4),
            )
        };
        // One test a block instead of a dispatch an output: the usual case.
        let all_short = k.iter().all(Kq::is_short);
        for oy in 0..g.ho {
            for ox in 0..g.wo {
                // Where each tap's row of this block's channels starts: in x (checked once
                // to hold `nb` bytes), or the padding row.
                let mut t = [pad.as_ptr(); 9];
                for ky in 0..3 {
                    let Some(iy) = Geom::tap(oy, ky, g.stride, 1, g.h) else {
                        continue;
                    };
                    for kx in 0..3 {
                        if let Some(ix) = Geom::tap(ox, kx, g.stride, 1, g.w) {
                            let at = (iy * g.w + ix) * g.in_stride + g.c_off + c0;
                            t[ky * 3 + kx] = x[at..][..nb].as_ptr();
                        }
                    }
                }
                let out = &mut y[(oy * g.wo + ox) * c + c0..][..nb];
                for (j, gw) in (0..n4).step_by(4).zip(wg.chunks_exact(9)) {
                    let (mut a0, mut a1, mut a2, mut a3) = (0, 0, 0, 0);
                    for (&xp, &[we, wo]) in t.iter().zip(gw) {
                        // SAFETY: every `t` entry starts `nb` readable bytes (a checked
                        // slice of `x`, or `pad`, both alive here) and `j + 3 < n4 ≤ nb`;
                        // unaligned because channel offsets start at any byte.
                        let xv = unsafe { (xp.add(j) as *const u32).read_unaligned() };
                        let (xe, xo) = (sxtab16(zz, xv), sxtab16_ror8(zz, xv));
                        a0 = smlabb(we, xe, a0);
                        a2 = smlatt(we, xe, a2);
                        a1 = smlabb(wo, xo, a1);
                        a3 = smlatt(wo, xo, a3);
                    }
                    let (o, kk) = (&mut out[j..j + 4], &k[j..j + 4]);
                    let a = [a0, a1, a2, a3];
                    if all_short {
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
                    for (ti, &xp) in t.iter().enumerate() {
                        // SAFETY: as above, `j < nb`.
                        let xv = unsafe { *xp.add(j) };
                        acc = acc.wrapping_add(w[ti * c + c0 + j] as i32 * (xv as i32 - zx));
                    }
                    out[j] = requant1k(&k[j], acc);
                }
            }
        }
    }
}

/// A small output image (at most [`FEW`] pixels, each channel in the short form without a
/// floor): per output pixel only the taps inside the image (in images of 1, 2 or 4 pixels
/// most of the 9 are padding), each weight word widened where it is used, and each sum
/// requantised from its table row ([`short_z`]) — no per-channel `Kq` nor widened-weight
/// block to prepare, which the few pixels would not pay back. `zz` is `−zx` in both
/// halfwords (`zx ∈ i8`); callers checked `w`, `rq` (`c` rows) and `y`.
fn few(g: &Geom, x: &[i8], zz: u32, w: &[i8], rq: &[[i32; 3]], zp: i32, y: &mut [i8]) {
    let c = rq.len();
    let c4 = c & !3;
    for oy in 0..g.ho {
        for ox in 0..g.wo {
            // The taps inside the image: their rows of `c` channels in `x` and in `w`.
            let mut taps = [(x.as_ptr(), w.as_ptr()); 9];
            let mut nt = 0;
            for ky in 0..3 {
                let Some(iy) = Geom::tap(oy, ky, g.stride, 1, g.h) else {
                    continue;
                };
                for kx in 0..3 {
                    if let Some(ix) = Geom::tap(ox, kx, g.stride, 1, g.w) {
                        let at = (iy * g.w + ix) * g.in_stride + g.c_off;
                        taps[nt] = (x[at..][..c].as_ptr(), w[(ky * 3 + kx) * c..][..c].as_ptr());
                        nt += 1;
                    }
                }
            }
            let taps = &taps[..nt];
            let out = &mut y[(oy * g.wo + ox) * c..][..c];
            let zp2 = 2 * zp + 1;
            for j in (0..c4).step_by(4) {
                let (mut a0, mut a1, mut a2, mut a3) = (0, 0, 0, 0);
                for &(xp, wp) in taps {
                    // SAFETY: both rows were checked to hold `c` bytes and `j + 3 < c4 ≤ c`;
                    // unaligned because channel offsets start at any byte.
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
                let (o, r) = (&mut out[j..j + 4], &rq[j..j + 4]);
                o[0] = short_z(r[0], zp2, a0);
                o[1] = short_z(r[1], zp2, a1);
                o[2] = short_z(r[2], zp2, a2);
                o[3] = short_z(r[3], zp2, a3);
            }
            for j in c4..c {
                let mut acc = 0i32;
                for &(xp, wp) in taps {
                    // SAFETY: as above, `j < c`.
                    let (xv, wv) = unsafe { (*xp.add(j), *wp.add(j)) };
                    acc = acc.wrapping_add(wv as i32 * (xv as i32 + pair_lo(zz)));
                }
                out[j] = short_z(rq[j], zp2, acc);
            }
        }
    }
}

/// The low halfword of `zz` as i32 (`−zx`).
#[inline(always)]
fn pair_lo(zz: u32) -> i32 {
    zz as u16 as i16 as i32
}
