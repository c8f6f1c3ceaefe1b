//! Pointwise int8 conv on the DSP extension: each block of output pixels has its input
//! channels widened once to i16 `x − zx` (`SXTAB16` adds the packed `−zx` while it
//! sign-extends, two instructions per 4 channels), then the shared 2×2 GEMM (`gemm.rs`).
use super::dsp::{pair, sxtab16, sxtab16_ror8};
use super::gemm::{block, block_into, fusable, hpos, pair_words, Buf, Store, Sums, XB};
use crate::kernels::{reference, Geom, OutQ, SumTile};

/// Start of output pixel `p`'s input channels.
#[inline]
fn src(g: &Geom, p: usize) -> usize {
    let (oy, ox) = (p / g.wo, p % g.wo);
    (oy * g.stride * g.w + ox * g.stride) * g.in_stride + g.c_off
}

/// Whether the DSP path takes this conv (else the reference): channels fit the stack block
/// (`cin ≤ 1024`), `x − zx` stays in i16, and the slices hold what the geometry reads.
fn fits(g: &Geom, x: &[i8], zx: i32, w: &[i8]) -> bool {
    let (n, npix) = (g.cin, g.ho * g.wo);
    g.k == 1
        && n > 0
        && g.cout > 0
        && npix > 0
        && pair_words(n) <= XB
        && (-32_000..=32_000).contains(&zx)
        && w.len() >= g.cout * n
        && src(g, npix - 1) + n <= x.len()
}

/// Widens output pixels `p0 .. p0 + np`'s input channels into `buf` (the GEMM's layout).
/// The pixel walk steps `(oy, ox)` instead of dividing per pixel, and the full groups go
/// through raw pointers checked once a pixel: per 4 channels an unaligned `LDR`, 2
/// `SXTAB16` and one `STRD`.
fn widen(g: &Geom, x: &[i8], zx: i32, p0: usize, np: usize, buf: &mut Buf<'_>) {
    let n = g.cin;
    let (wp, zz) = (pair_words(n), pair(-zx));
    let (g4, nt) = (n / 4, n & !3);
    let (mut oy, mut ox) = (p0 / g.wo, p0 % g.wo);
    for i in 0..np {
        let at = (oy * g.stride * g.w + ox * g.stride) * g.in_stride + g.c_off;
        let px = &x[at..][..n];
        let (base, odd) = ((i / 2) * wp, i % 2);
        let dst = &mut buf.words_mut()[base..][..wp];
        if g4 > 0 {
            // Group `j` goes to words `4j + 2·odd` and `+ 1`: the last at most `4·g4 − 1 <
            // wp`.
            let d = &mut dst[2 * odd..4 * g4];
            let (mut s, mut o) = (px.as_ptr(), d.as_mut_ptr());
            for _ in 0..g4 {
                // SAFETY: `g4` groups of 4 bytes from `px` (`4·g4 ≤ n = px.len()`; unaligned:
                // channel slices start at any byte) and pairs of words at `o`, 4 words apart,
                // the last ending at word `4·g4 − 4 + 2 ≤ d.len()` (`d` starts at `2·odd`);
                // `o` is a word pointer, so aligned.
                unsafe {
                    let v = (s as *const u32).read_unaligned();
                    o.write(sxtab16(zz, v));
                    o.add(1).write(sxtab16_ror8(zz, v));
                    s = s.add(4);
                    o = o.add(4);
                }
            }
        }
        let h = &mut buf.halves_mut()[2 * base..][..2 * wp];
        for k in nt..n {
            h[hpos(k, n, odd)] = (px[k] as i32 - zx) as i16;
        }
        ox += 1;
        if ox == g.wo {
            (oy, ox) = (oy + 1, 0);
        }
    }
}

/// Same contract as `reference::conv1x1::conv1x1_i8` (which it defers to where [`fits`]
/// does not hold).
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
    if !fits(g, x, zx, w) || rq.len() < cout || y.len() < npix * cout {
        return reference::conv1x1::conv1x1_i8(g, x, zx, w, rq, q, y);
    }
    let per = 2 * (XB / pair_words(n));
    let mut store: Store = [core::mem::MaybeUninit::uninit(); XB];
    let mut buf = Buf::zeroed(&mut store, per.min(npix).div_ceil(2) * pair_words(n));
    let fused = fusable(&rq[..cout], q, n);
    let mut p0 = 0;
    while p0 < npix {
        let np = per.min(npix - p0);
        widen(g, x, zx, p0, np, &mut buf);
        block(buf.words_mut(), np, n, w, rq, q, y, p0, cout, fused);
        p0 += np;
    }
}

/// Pixels and channels of one block of sums handed to the sink.
const SP: usize = 8;
const SC: usize = 64;

/// Same contract as `reference::conv1x1::conv1x1_sums_i8` (the streaming experts' `W0`
/// sums): the same widened blocks and 2×2 tiles as [`conv1x1_i8`], the exact sums handed
/// out in tiles of up to 8 pixels × 64 channels.
pub(crate) fn conv1x1_sums_i8(
    g: &Geom,
    x: &[i8],
    zx: i32,
    w: &[i8],
    sink: &mut dyn FnMut(SumTile<'_>),
) {
    let (n, cout, npix) = (g.cin, g.cout, g.ho * g.wo);
    if !fits(g, x, zx, w) {
        return reference::conv1x1::conv1x1_sums_i8(g, x, zx, w, sink);
    }
    let per = (2 * (XB / pair_words(n))).min(SP);
    let mut store: Store = [core::mem::MaybeUninit::uninit(); XB];
    let mut buf = Buf::zeroed(&mut store, per.min(npix).div_ceil(2) * pair_words(n));
    let mut acc = [0i32; SP * SC];
    let mut p0 = 0;
    while p0 < npix {
        let np = per.min(npix - p0);
        widen(g, x, zx, p0, np, &mut buf);
        let mut o0 = 0;
        while o0 < cout {
            let no = SC.min(cout - o0);
            let mut out = Sums::new(&mut acc[..np * no], o0, no);
            block_into(buf.words(), np, n, w, o0, o0 + no, &mut out);
            sink(SumTile {
                p0,
                np,
                o0,
                no,
                acc: &acc[..np * no],
            });
            o0 += no;
        }
        p0 += np;
    }
}
