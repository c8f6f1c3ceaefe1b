//! The k×k int8 conv (the stem) on the DSP extension: per block of output pixels the
//! receptive fields are gathered once into i16 `x − zx` patches (padding 0) in the shared
//! GEMM's widened layout, then the 2×2 GEMM (`gemm.rs`) runs over `cin·k·k`.
use super::dsp::{pair, sxtab16, sxtab16_ror8};
use super::gemm::{block, fusable, hpos, pair_words, Buf, Store, XB};
use crate::kernels::reference::conv::PATCH;
use crate::kernels::{reference, Geom, OutQ};

/// Bytes of the zero-padded weight copy (the stem: 24 × 28).
const WPAD: usize = 1024;

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
    if (-128..=127).contains(&zx) && cout * wp <= WPAD {
        return tap_major(g, x, zx, w, rq, q, y);
    }
    // A patch length that is not a multiple of 4 would leave every 2x2 tile four scalar
    // tails (3 of the stem's 27 values): the weight rows are copied once, padded with
    // zeros to whole groups, and the patches' padding halfwords stay 0 (never written).
    let mut wpad = [0i8; WPAD];
    let (n, w) = if !n.is_multiple_of(4) && cout * wp <= WPAD {
        for (row, src) in wpad.chunks_exact_mut(wp).zip(w.chunks_exact(n)).take(cout) {
            row[..n].copy_from_slice(src);
        }
        (wp, &wpad[..cout * wp])
    } else {
        (n, w)
    };
    // Where each (channel, tap) value of a pair's pixel 0 goes (pixel 1: 4 halfwords on).
    let mut pos = [0u16; PATCH];
    for (k, p) in pos[..g.cin * kk].iter_mut().enumerate() {
        *p = hpos(k, n, 0) as u16;
    }
    let per = 2 * (XB / wp);
    let mut store: Store = [core::mem::MaybeUninit::uninit(); XB];
    let mut buf = Buf::zeroed(&mut store, per.min(npix).div_ceil(2) * wp);
    let fused = fusable(&rq[..cout], q, n);
    let mut p0 = 0;
    while p0 < npix {
        let np = per.min(npix - p0);
        for i in 0..np {
            let (oy, ox) = ((p0 + i) / g.wo, (p0 + i) % g.wo);
            let h = &mut buf.halves_mut()[2 * (i / 2) * wp + 4 * (i % 2)..][..2 * wp - 4];
            for ky in 0..g.k {
                let iy = Geom::tap(oy, ky, g.stride, g.pad, g.h);
                for kx in 0..g.k {
                    let ix = Geom::tap(ox, kx, g.stride, g.pad, g.w);
                    let t = ky * g.k + kx;
                    let ps = pos[..g.cin * kk].iter().skip(t).step_by(kk);
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
        block(buf.words_mut(), np, n, w, rq, q, y, p0, cout, fused);
        p0 += np;
    }
}

/// The stem with its weights permuted tap-major (`[cout, ky, kx, cin]`, zero-padded to whole
/// groups of 4, once per call): each output pixel's patch is then `k` runs of `k·cin`
/// input bytes (one copy per kernel row inside the image, `zx` in the padding), gathered as
/// raw int8 and widened 4 bytes at a time by `SXTAB16` like the pointwise conv's input —
/// instead of placing each of the 27 values through a position table. The sums are exact
/// integers, so the order of the products does not change them; a padded tap reads
/// `zx − zx = 0`, as the reference skips it. Callers checked the slices, `zx ∈ i8` and
/// `cout · pair_words(cin·k·k) ≤ WPAD`.
fn tap_major(g: &Geom, x: &[i8], zx: i32, w: &[i8], rq: &[[i32; 3]], q: OutQ, y: &mut [i8]) {
    let (k, cin, cout) = (g.k, g.cin, g.cout);
    let (kk, npix) = (k * k, g.ho * g.wo);
    let n = cin * kk;
    let wp = pair_words(n);
    let mut wt = [0i8; WPAD];
    for (dst, src) in wt.chunks_exact_mut(wp).zip(w.chunks_exact(n)).take(cout) {
        for c in 0..cin {
            for t in 0..kk {
                dst[t * cin + c] = src[c * kk + t];
            }
        }
    }
    let wt = &wt[..cout * wp];
    let (zz, run) = (pair(-zx), k * cin);
    let dense = g.in_stride == cin && g.c_off == 0;
    let per = 2 * (XB / wp);
    let mut store: Store = [core::mem::MaybeUninit::uninit(); XB];
    let mut buf = Buf::zeroed(&mut store, per.min(npix).div_ceil(2) * wp);
    // One pixel's raw patch (the bytes from `n` to `wp` meet zero weights).
    let mut patch = [zx as i8; PATCH + 4];
    let fused = fusable(&rq[..cout], q, wp);
    // A 3×3 kernel over 3 dense channels (the stem): patches inside the image by `patch9`.
    let nine = k == 3 && cin == 3 && dense;
    let mut p0 = 0;
    while p0 < npix {
        let np = per.min(npix - p0);
        for i in 0..np {
            let (oy, ox) = ((p0 + i) / g.wo, (p0 + i) % g.wo);
            let (sx, sy) = (ox * g.stride, oy * g.stride);
            let inside = dense && sx >= g.pad && sx - g.pad + k <= g.w;
            if nine && inside && sy >= g.pad && sy - g.pad + k <= g.h {
                let at = ((sy - g.pad) * g.w + sx - g.pad) * 3;
                let d = &mut buf.words_mut()[(i / 2) * 28..][..28];
                patch9(&x[at..], 3 * g.w, zz, d, i % 2);
                continue;
            }
            for ky in 0..k {
                let dst = &mut patch[ky * run..][..run];
                match Geom::tap(oy, ky, g.stride, g.pad, g.h) {
                    Some(iy) if inside => {
                        copy_short(dst, &x[(iy * g.w + sx - g.pad) * cin..][..run]);
                    }
                    Some(iy) => {
                        for (kx, d) in dst.chunks_exact_mut(cin).enumerate() {
                            match Geom::tap(ox, kx, g.stride, g.pad, g.w) {
                                Some(ix) => copy_short(
                                    d,
                                    &x[(iy * g.w + ix) * g.in_stride + g.c_off..][..cin],
                                ),
                                None => d.fill(zx as i8),
                            }
                        }
                    }
                    None => dst.fill(zx as i8),
                }
            }
            let (base, odd) = ((i / 2) * wp, i % 2);
            let d = &mut buf.words_mut()[base..][..wp];
            for (j, v) in patch[..wp].chunks_exact(4).enumerate() {
                let v = u32::from_le_bytes([v[0] as u8, v[1] as u8, v[2] as u8, v[3] as u8]);
                let e = &mut d[4 * j + 2 * odd..][..2];
                e[0] = sxtab16(zz, v);
                e[1] = sxtab16_ror8(zz, v);
            }
        }
        block(buf.words_mut(), np, wp, wt, rq, q, y, p0, cout, fused);
        p0 += np;
    }
}

/// The widened patch of a 3×3 window inside the image over 3 dense channels: its 3 rows
/// of 9 bytes start at `x[0]`, `x[rs]` and `x[2·rs]` (`rs` the image row's bytes). The 7
/// words of the tap-major patch (27 bytes, then one that meets a zero weight) are put
/// together from unaligned word loads of the rows — a word straddling two rows by one `ORR`
/// of a byte or halfword with the next row's word shifted — and widened by `SXTAB16` into
/// pixel `odd` of the pair block `d` (`pair_words(27) = 28` words): where the general gather
/// copies each row into a patch first and widens it byte group by byte group.
#[inline(always)]
fn patch9(x: &[i8], rs: usize, zz: u32, d: &mut [u32], odd: usize) {
    let (r0, r1, r2) = (&x[..9], &x[rs..][..9], &x[2 * rs..][..9]);
    let ld = |r: &[i8], o: usize| {
        let b = &r[o..o + 4];
        // SAFETY: `b` holds 4 bytes; unaligned, as pixels start at any byte.
        unsafe { (b.as_ptr() as *const u32).read_unaligned() }
    };
    let p = [
        ld(r0, 0),
        ld(r0, 4),
        r0[8] as u8 as u32 | ld(r1, 0) << 8,
        ld(r1, 3),
        (ld(r1, 5) >> 16) | ld(r2, 0) << 16,
        ld(r2, 2),
        // Byte 27 (0 here, `zx` in the general gather) meets the zero weight of the padding.
        ld(r2, 5) >> 8,
    ];
    let d: &mut [u32; 28] = (&mut d[..28]).try_into().unwrap_or_else(|_| unreachable!());
    for (j, &v) in p.iter().enumerate() {
        d[4 * j + 2 * odd] = sxtab16(zz, v);
        d[4 * j + 2 * odd + 1] = sxtab16_ror8(zz, v);
    }
}

/// `d.copy_from_slice(s)` (equal lengths) for the patch rows' few bytes (`k·cin`, 9 in the
/// stem) without a call of the library `memcpy` (about 56 instructions for 9 bytes): 4 to
/// 16 bytes as two fixed-size copies of the first and the last 4 or 8 (overlapping in the
/// middle), which compile to word loads and stores.
#[inline(always)]
fn copy_short(d: &mut [i8], s: &[i8]) {
    let n = d.len();
    let s = &s[..n];
    if (8..=16).contains(&n) {
        let (a, b): ([i8; 8], [i8; 8]) = (head(s), head(&s[n - 8..]));
        d[..8].copy_from_slice(&a);
        d[n - 8..].copy_from_slice(&b);
    } else if (4..8).contains(&n) {
        let (a, b): ([i8; 4], [i8; 4]) = (head(s), head(&s[n - 4..]));
        d[..4].copy_from_slice(&a);
        d[n - 4..].copy_from_slice(&b);
    } else {
        for (o, &v) in d.iter_mut().zip(s) {
            *o = v;
        }
    }
}

/// The first `N` bytes of `s` (`s.len() ≥ N`).
#[inline(always)]
fn head<const N: usize>(s: &[i8]) -> [i8; N] {
    let mut a = [0; N];
    a.copy_from_slice(&s[..N]);
    a
}
