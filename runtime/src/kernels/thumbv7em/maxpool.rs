//! Max pool 3x3/2 (padding 1) on int8 codes, four channels per instruction pair: `SSUB8`
//! sets the four `APSR.GE` bits where `a ≥ b` (signed bytes), `SEL` takes those bytes from
//! `a` and the rest from `b` — a byte-wise signed max. The taps and their order are the
//! reference's; the max of integers does not depend on the order, so the bytes are the
//! reference's (board self-check on random shapes).
use crate::kernels::Geom;
use core::arch::asm;

/// Byte-wise signed max of two words of four int8.
#[inline(always)]
fn max4(a: u32, b: u32) -> u32 {
    let r: u32;
    // SAFETY: register-only DSP instructions (`SSUB8` writes `r` and APSR.GE, `SEL` reads
    // them); no memory, no stack; the flags are clobbered (not `preserves_flags`).
    unsafe {
        asm!(
            "ssub8 {r}, {a}, {b}",
            "sel {r}, {a}, {b}",
            a = in(reg) a,
            b = in(reg) b,
            r = out(reg) r,
            options(pure, nomem, nostack),
        );
    }
    r
}

/// `out = max(out, px)` element-wise (equal lengths).
#[inline(always)]
fn max_into(out: &mut [i8], px: &[i8]) {
    let px = &px[..out.len()];
    let mut oc = out.chunks_exact_mut(4);
    let mut pc = px.chunks_exact(4);
    for (o, p) in (&mut oc).zip(&mut pc) {
        let a = u32::from_ne_bytes([o[0] as u8, o[1] as u8, o[2] as u8, o[3] as u8]);
        let b = u32::from_ne_bytes([p[0] as u8, p[1] as u8, p[2] as u8, p[3] as u8]);
        let m = max4(a, b).to_ne_bytes();
        for (d, s) in o.iter_mut().zip(m) {
            *d = s as i8;
        }
    }
    for (o, &v) in oc.into_remainder().iter_mut().zip(pc.remainder()) {
        *o = (*o).max(v);
    }
}

/// Same contract and bytes as `reference::maxpool::maxpool3x3s2::<i8>`.
pub(crate) fn maxpool3x3s2_i8(h: usize, w: usize, c: usize, x: &[i8], y: &mut [i8]) {
    let ho = Geom::out_dim(h, 3, 2, 1);
    let wo = Geom::out_dim(w, 3, 2, 1);
    for oy in 0..ho {
        for ox in 0..wo {
            let out = &mut y[(oy * wo + ox) * c..][..c];
            let mut first = true;
            for ky in 0..3 {
                let Some(iy) = Geom::tap(oy, ky, 2, 1, h) else {
                    continue;
                };
                for kx in 0..3 {
                    let Some(ix) = Geom::tap(ox, kx, 2, 1, w) else {
                        continue;
                    };
                    let px = &x[(iy * w + ix) * c..][..c];
                    if first {
                        out.copy_from_slice(px);
                        first = false;
                    } else {
                        max_into(out, px);
                    }
                }
            }
        }
    }
}
