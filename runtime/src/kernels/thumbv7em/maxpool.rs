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

/// Same contract and bytes as `reference::maxpool::maxpool3x3s2::<i8>`. Per output pixel
/// the taps inside the image are listed once (any order: a max), the missing ones
/// (padding) filled with a tap that is inside (a max does not change when a value repeats),
/// then each word of four channels is the max of its nine tap words kept in a register —
/// one store a word instead of a load and store per tap; the channels past the last whole
/// word byte by byte.
pub(crate) fn maxpool3x3s2_i8(h: usize, w: usize, c: usize, x: &[i8], y: &mut [i8]) {
    let ho = Geom::out_dim(h, 3, 2, 1);
    let wo = Geom::out_dim(w, 3, 2, 1);
    if c == 0 {
        return;
    }
    let mut t: [&[i8]; 9] = [&[]; 9];
    for (p, out) in y[..ho * wo * c].chunks_exact_mut(c).enumerate() {
        // The window's rows and columns inside the image (the centre `(2·oy, 2·ox)` always
        // is: `ho`, `wo` are the format's output sizes).
        let (oy, ox) = (p / wo, p % wo);
        let (y0, y1) = ((2 * oy).saturating_sub(1), (2 * oy + 1).min(h - 1));
        let (x0, x1) = ((2 * ox).saturating_sub(1), (2 * ox + 1).min(w - 1));
        let mut nt = 0;
        for iy in y0..=y1 {
            let row = &x[iy * w * c..][..w * c];
            for ix in x0..=x1 {
                t[nt] = &row[ix * c..][..c];
                nt += 1;
            }
        }
        let inside = t[0];
        t[nt..].fill(inside);
        let words = |k: usize| t[k].as_chunks::<4>().0.iter();
        let (o4, tail) = out.as_chunks_mut::<4>();
        let taps = words(0)
            .zip(words(1))
            .zip(words(2))
            .zip(words(3))
            .zip(words(4))
            .zip(words(5))
            .zip(words(6))
            .zip(words(7))
            .zip(words(8));
        for (o, ((((((((a, b), d), e), f), g), k), l), m)) in o4.iter_mut().zip(taps) {
            let v = |q: &[i8; 4]| u32::from_ne_bytes(q.map(|b| b as u8));
            let r = max4(
                max4(max4(v(a), v(b)), max4(v(d), v(e))),
                max4(max4(v(f), v(g)), max4(v(k), v(l))),
            );
            *o = max4(r, v(m)).to_ne_bytes().map(|b| b as i8);
        }
        let c4 = c - tail.len();
        for (j, o) in tail.iter_mut().enumerate() {
            *o = t.iter().map(|r| r[c4 + j]).max().unwrap_or(i8::MIN);
        }
    }
}
