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
/// the window's rows and columns inside the image are taken as 3 row pointers and 3 column
/// offsets, a missing row or column (padding) repeating one that is inside (a max does not
/// change when a value repeats); then each word of four channels is the max of its nine
/// tap words kept in a register — 9 loads (the row pointers post-incremented), 8 byte-wise
/// maxes and one store a word; the channels past the last whole word byte by byte.
pub(crate) fn maxpool3x3s2_i8(h: usize, w: usize, c: usize, x: &[i8], y: &mut [i8]) {
    let ho = Geom::out_dim(h, 3, 2, 1);
    let wo = Geom::out_dim(w, 3, 2, 1);
    if c == 0 {
        return;
    }
    let c4 = c & !3;
    for (p, out) in y[..ho * wo * c].chunks_exact_mut(c).enumerate() {
        // The window's rows and columns inside the image (the centre `(2·oy, 2·ox)` always
        // is: `ho`, `wo` are the format's output sizes).
        let (oy, ox) = (p / wo, p % wo);
        let (y0, y1) = ((2 * oy).saturating_sub(1), (2 * oy + 1).min(h - 1));
        let (x0, x1) = ((2 * ox).saturating_sub(1), (2 * ox + 1).min(w - 1));
        // Rows `y0 ..= y1` from column `x0`, `x1 − x0 + 1` columns: each row's run checked.
        let run = (x1 - x0 + 1) * c;
        let row = |iy: usize| x[(iy * w + x0) * c..][..run].as_ptr();
        let r0 = row(y0);
        let r1 = if y1 > y0 { row(y0 + 1) } else { r0 };
        let r2 = if y1 > y0 + 1 { row(y0 + 2) } else { r0 };
        let o1 = if x1 > x0 { c } else { 0 };
        let o2 = if x1 > x0 + 1 { 2 * c } else { 0 };
        let (mut r0, mut r1, mut r2) = (r0, r1, r2);
        for o in out[..c4].chunks_exact_mut(4) {
            // SAFETY: each row pointer starts a checked run of `run` bytes (1 to 3 columns
            // of `c`), advanced 4 bytes a word over `c4 / 4` words: the word at offset `0`,
            // `o1 ∈ {0, c}` (`c` only with 2 columns or more) or `o2 ∈ {0, 2c}` (`2c` only
            // with 3) ends at most `c4 + (run − c) ≤ run` bytes into it; unaligned, as
            // channel runs start at any byte.
            let r = unsafe {
                let v = |p: *const i8, k: usize| (p.add(k) as *const u32).read_unaligned();
                let m = max4(
                    max4(max4(v(r0, o1), v(r0, o2)), max4(v(r1, o1), v(r1, o2))),
                    max4(max4(v(r2, o1), v(r2, o2)), max4(v(r0, 0), v(r1, 0))),
                );
                let m = max4(m, v(r2, 0));
                (r0, r1, r2) = (r0.add(4), r1.add(4), r2.add(4));
                m
            };
            o.copy_from_slice(&r.to_ne_bytes().map(|b| b as i8));
        }
        for j in c4..c {
            let mut m = i8::MIN;
            for iy in y0..=y1 {
                for ix in x0..=x1 {
                    m = m.max(x[(iy * w + ix) * c + j]);
                }
            }
            out[j] = m;
        }
    }
}
