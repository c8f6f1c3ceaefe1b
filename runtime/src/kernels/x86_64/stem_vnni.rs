//! int8 k×k conv (ShuffleNetV2's 3x3 stride-2 stem, `cin·k·k` = 27, 24 outputs) on
//! AVX-512 VNNI: each output pixel's tap-major patch ([`super::stem`]'s order) as offset
//! bytes `u = x ^ 0x80` — a tap outside the image holds the zero point's code, so it adds
//! `w·(zx − zx) = 0` as in the reference — padded to whole quads, times the weights laid
//! out per call as `[quad][channel][4]` (channels rounded up to 16): one `vpdpbusd` per
//! quad, 16 channels and pixel, from the start value `−(128 + zx)·Σw` (the conv1x1 VNNI
//! identity), then [`requant16`] into the output bytes. Exact sums, so bit-exact to the
//! reference. Larger problems take the AVX2 stem.
use core::arch::x86_64::*;

use super::requant::{requant16, Requant, RqCols};
use super::{first16, first_bytes};
use crate::kernels::reference::conv::PATCH;
use crate::kernels::{Geom, OutQ};

/// Output pixels per tile.
const PT: usize = 4;
/// Most output channels (four 16-lane blocks).
const MAXC: usize = 64;
/// Most patch quads.
const MAXQD: usize = PATCH / 4;
/// Bytes of a laid-out patch row: the patch, and room for a dense run's 16-byte copy past
/// its end.
const ROW: usize = PATCH + 16;

/// AVX-512 VNNI twin of `reference::conv::conv_i8` (its bytes).
pub(crate) fn conv_i8(
    g: &Geom,
    x: &[i8],
    zx: i32,
    w: &[i8],
    rq: &[[i32; 3]],
    q: OutQ,
    y: &mut [i8],
) {
    let n = g.cin * g.k * g.k;
    if n == 0 || n > PATCH || g.cout > MAXC {
        return super::stem::conv_i8(g, x, zx, w, rq, q, y);
    }
    // SAFETY: only installed after AVX2 + AVX-512 detection; `n ≤ PATCH`, `cout ≤ MAXC`.
    unsafe { conv(g, x, zx, w, rq, q, y) }
}

/// [`conv_i8`]'s body.
///
/// # Safety
/// AVX2 and AVX-512 F/BW/VL/VNNI available; `0 < cin·k² ≤ PATCH`, `cout ≤ MAXC`.
#[target_feature(enable = "avx2,avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn conv(g: &Geom, x: &[i8], zx: i32, w: &[i8], rq: &[[i32; 3]], q: OutQ, y: &mut [i8]) {
    let (n, cout) = (g.cin * g.k * g.k, g.cout);
    let (quads, cp) = (n.div_ceil(4), cout.div_ceil(16) * 16);
    // wt[(qd·cp + o)·4 + j] = w[o, e = 4qd + j] (tap-major `e`), 0 past `n` or `cout`.
    let mut wt = [0i8; MAXQD * MAXC * 4];
    for (o, row) in w[..cout * n].chunks_exact(n).enumerate() {
        for e in 0..n {
            wt[((e / 4) * cp + o) * 4 + e % 4] = row[super::stem::oihw(g, e)];
        }
    }
    let wt = &wt[..quads * cp * 4];
    // Per block of 16 channels: `−(128 + zx)·Σw`.
    let (ones, kz) = (
        _mm512_set1_epi8(1),
        _mm512_set1_epi32(128i32.wrapping_add(zx)),
    );
    let mut start = [_mm512_setzero_si512(); MAXC / 16];
    for (b, st) in start.iter_mut().enumerate().take(cp / 16) {
        let mut s = _mm512_setzero_si512();
        for qd in 0..quads {
            // SAFETY: `(qd·cp + 16b)·4 + 64 ≤ quads·cp·4 = wt.len()`.
            let v = unsafe { _mm512_loadu_si512(wt.as_ptr().add((qd * cp + 16 * b) * 4).cast()) };
            s = _mm512_dpbusd_epi32(s, ones, v);
        }
        *st = _mm512_sub_epi32(_mm512_setzero_si512(), _mm512_mullo_epi32(s, kz));
    }
    let mut cols = RqCols::new();
    let _ = Requant::new(&rq[..cout], q, &mut cols);
    // The tile's patches, raw codes then flipped in place (bytes past `n` are read against
    // zero weights: any value).
    let mut patch = [[0i8; ROW]; PT];
    let flip = _mm512_set1_epi8(-128);
    for oy in 0..g.ho {
        let mut ox = 0;
        while ox < g.wo {
            let np = PT.min(g.wo - ox);
            for (t, p) in patch.iter_mut().enumerate().take(np) {
                gather(g, x, zx as i8, oy, ox + t, p);
                let mut i = 0;
                while i < n {
                    // SAFETY: `i < n ≤ PATCH`, `i + 64 ≤ ROW + 48`: the mask keeps the
                    // bytes `i .. min(i + 64, ROW)` of the row.
                    unsafe {
                        let m = first_bytes(ROW - i);
                        let v = _mm512_maskz_loadu_epi8(m, p.as_ptr().add(i));
                        _mm512_mask_storeu_epi8(
                            p.as_mut_ptr().add(i),
                            m,
                            _mm512_xor_si512(v, flip),
                        );
                    }
                    i += 64;
                }
            }
            macro_rules! tile {
                ($b:literal) => {
                    // SAFETY: this function's contract; `wt` holds `quads·cp·4` bytes with
                    // `cp = 16·$b`, every patch row `4·quads ≤ ROW` bytes.
                    unsafe { tile::<$b>(&patch, wt, quads, &start) }
                };
            }
            let acc = match cp / 16 {
                1 => widen(tile!(1)),
                2 => widen(tile!(2)),
                3 => widen(tile!(3)),
                _ => tile!(4),
            };
            for (t, a) in acc.iter().enumerate().take(np) {
                let out = &mut y[(oy * g.wo + ox + t) * cout..][..cout];
                for (b, &v) in a.iter().enumerate().take(cp / 16) {
                    let nb = 16.min(cout - 16 * b);
                    let keep = first16(nb);
                    let v = requant16(v, &cols.lanes16(16 * b), q);
                    // SAFETY: the bytes `keep` selects are `out[16b .. 16b + nb]`.
                    unsafe { _mm_mask_storeu_epi8(out.as_mut_ptr().add(16 * b), keep, v) };
                }
            }
            ox += np;
        }
    }
}

/// A tile's `[PT][B]` sums as `[PT][4]` (the blocks past `B` unused).
#[inline]
#[target_feature(enable = "avx512f")]
fn widen<const B: usize>(a: [[__m512i; B]; PT]) -> [[__m512i; 4]; PT] {
    a.map(|r| core::array::from_fn(|b| if b < B { r[b] } else { _mm512_setzero_si512() }))
}

/// `acc[t][b] = start[b] + Σ_qd dpbusd(patch[t] quad qd, wt[qd][16b .. 16b + 16])`.
///
/// # Safety
/// AVX-512 F/VNNI available; `wt` holds `quads·16B·4` bytes, every patch row `4·quads`.
#[inline]
#[target_feature(enable = "avx512f,avx512vnni")]
unsafe fn tile<const B: usize>(
    patch: &[[i8; ROW]; PT],
    wt: &[i8],
    quads: usize,
    start: &[__m512i; MAXC / 16],
) -> [[__m512i; B]; PT] {
    debug_assert!(wt.len() >= quads * 64 * B && 4 * quads <= ROW);
    let mut acc = [core::array::from_fn::<_, B, _>(|b| start[b]); PT];
    for qd in 0..quads {
        // SAFETY: `(qd·16B + 16b)·4 + 64 ≤ quads·16B·4 ≤ wt.len()`.
        let wv: [__m512i; B] = core::array::from_fn(|b| unsafe {
            _mm512_loadu_si512(wt.as_ptr().add((qd * 16 * B + 16 * b) * 4).cast())
        });
        for (a, p) in acc.iter_mut().zip(patch) {
            // SAFETY: bytes `4qd .. 4qd + 4 ≤ 4·quads ≤ ROW` of the row.
            let u = unsafe { p.as_ptr().add(4 * qd).cast::<i32>().read_unaligned() };
            let xb = _mm512_set1_epi32(u);
            for (ab, v) in a.iter_mut().zip(&wv) {
                *ab = _mm512_dpbusd_epi32(*ab, xb, *v);
            }
        }
    }
    acc
}

/// `p[(ky·k + kx)·cin + c] = x[iy, ix, c_off + c]` for the taps of output pixel `(oy, ox)`,
/// `zx` outside the image (raw codes). Where every tap is inside and the pixels are dense
/// (`in_stride = cin`), each `ky`'s taps are one run of `k·cin` bytes, copied 16 at a time
/// (the extra bytes land past the run, where the next run or nothing read overwrites them).
fn gather(g: &Geom, x: &[i8], zx: i8, oy: usize, ox: usize, p: &mut [i8; ROW]) {
    let (k, cin) = (g.k, g.cin);
    let run = k * cin;
    let (iy0, ix0) = (oy * g.stride, ox * g.stride);
    let inside = iy0 >= g.pad && ix0 >= g.pad && iy0 - g.pad + k <= g.h && ix0 - g.pad + k <= g.w;
    if inside && g.in_stride == cin && run <= 16 {
        for ky in 0..k {
            // `in_stride = cin` leaves no room for a channel offset: `c_off = 0`.
            let s = ((iy0 - g.pad + ky) * g.w + ix0 - g.pad) * cin;
            let d = ky * run;
            match x.get(s..s + 16) {
                // `d + 16 ≤ (k − 1)·run + 16 ≤ PATCH + 16 = ROW` (`k·run ≤ PATCH`).
                Some(src) => p[d..d + 16].copy_from_slice(src),
                None => p[d..d + run].copy_from_slice(&x[s..s + run]),
            }
        }
        return;
    }
    for ky in 0..k {
        let iy = Geom::tap(oy, ky, g.stride, g.pad, g.h);
        for kx in 0..k {
            let dst = &mut p[(ky * k + kx) * cin..][..cin];
            match (iy, Geom::tap(ox, kx, g.stride, g.pad, g.w)) {
                (Some(iy), Some(ix)) => {
                    dst.copy_from_slice(&x[(iy * g.w + ix) * g.in_stride + g.c_off..][..cin])
                }
                _ => dst.fill(zx),
            }
        }
    }
}
