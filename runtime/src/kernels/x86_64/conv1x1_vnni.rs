//! int8 pointwise conv on AVX-512 VNNI (`vpdpbusd`, 256-bit lanes via AVX-512VL), on weights
//! laid out at the switch: four `u8·i8` products summed into each i32 lane per instruction,
//! without intermediate saturation, so the sums stay exact. `vpdpbusd` wants one unsigned
//! operand: the input is offset to `u = x + 128 ∈ [0, 255]` (an `xor 0x80`), and
//! `Σ w·(x − zx) = Σ w·u − (128 + zx)·Σ w` (wrapping, as the reference's sum), `Σ w` per
//! output channel summed once per call by `vpdpbusd` against ones. The AVX2 outer product's
//! design with quads for pairs ([`super::conv1x1`]): the lanes of an accumulator are 8 output
//! channels of one pixel, each pixel's input quad is broadcast, and the accumulators go
//! through `requant8` straight to the output bytes. Bit-exact to the reference.
use core::arch::x86_64::*;
use core::mem::MaybeUninit;

use super::conv1x1::src;
use super::requant::{requant8, Requant, RqCols};
use crate::kernels::{Geom, OutQ};

/// Output pixels per tile.
const PO: usize = 4;
/// Output channels per block of the packed layout (an accumulator's lanes).
const BLK: usize = 8;
/// Widest conv the requantisation lanes hold at once (wider ones go in runs of this many).
const MAXQ: usize = super::requant::MAXQ;
/// Widest input laid out (the tile's offset inputs live on the stack).
const MAXC: usize = 1024;

/// AVX-512 VNNI and VL (`vpdpbusd` on 256-bit lanes) are usable.
pub(crate) fn detected() -> bool {
    #[cfg(feature = "std")]
    {
        super::detected()
            && std::is_x86_feature_detected!("avx512vnni")
            && std::is_x86_feature_detected!("avx512vl")
    }
    #[cfg(not(feature = "std"))]
    {
        super::detected()
            && cfg!(all(
                target_feature = "avx512vnni",
                target_feature = "avx512vl"
            ))
    }
}

/// Whether [`pack_conv1x1_i8`] lays out (and [`conv1x1_i8_packed`] reads) a weight of `cin`
/// inputs: whole input quads, at most [`MAXC`]. It must not depend on `cout`: a conv split
/// by channels hands its parts slices of the whole's layout.
fn packs(cin: usize) -> bool {
    cin > 0 && cin <= MAXC && cin.is_multiple_of(4)
}

/// Lays a `[cout, cin]` int8 weight out in place for [`conv1x1_i8_packed`]: every whole
/// block of [`BLK`] output channels becomes `[cin/4][BLK][4]` (each step of the tile one
/// 32-byte load: a quad of inputs for 8 channels); the last `cout % 8` rows stay rows at the
/// same offset. The length is unchanged, and channels `c0 .. c0 + m` (`c0`, and `m` unless
/// it reaches `cout`, multiples of 8) are that slice's own layout. Shapes [`packs`] refuses
/// stay rows.
pub(crate) fn pack_conv1x1_i8(cout: usize, cin: usize, w: &mut [i8]) {
    if !packs(cin) {
        return;
    }
    let mut rows = [0i8; BLK * MAXC];
    for blk in w[..cout / BLK * BLK * cin].chunks_exact_mut(BLK * cin) {
        rows[..BLK * cin].copy_from_slice(blk);
        for (k, step) in blk.chunks_exact_mut(4 * BLK).enumerate() {
            for (l, quad) in step.chunks_exact_mut(4).enumerate() {
                quad.copy_from_slice(&rows[l * cin + 4 * k..][..4]);
            }
        }
    }
}

/// The `conv1x1_i8` contract on weights [`pack_conv1x1_i8`] laid out at `select`
/// (bit-exact to the reference on the rows). Shapes it does not pack are rows, and take the
/// AVX2 conv.
pub(crate) fn conv1x1_i8_packed(
    g: &Geom,
    x: &[i8],
    zx: i32,
    w: &[i8],
    rq: &[[i32; 3]],
    q: OutQ,
    y: &mut [i8],
) {
    let (n, npix, cout) = (g.cin, g.ho * g.wo, g.cout);
    if !packs(n) {
        return super::conv1x1::conv1x1_i8(g, x, zx, w, rq, q, y);
    }
    let (w, rq, y) = (&w[..cout * n], &rq[..cout], &mut y[..npix * cout]);
    // Runs of `MAXQ` channels (a multiple of `BLK`: each run's weights are its own layout).
    let mut c0 = 0;
    while c0 < cout {
        let m = MAXQ.min(cout - c0);
        let mut cols = RqCols::new();
        let _ = Requant::new(&rq[c0..c0 + m], &mut cols);
        // SAFETY: only installed after AVX2 + AVX-512 VNNI/VL detection (`detected`);
        // `w` holds the run's `m·n` bytes, `y` every pixel's `cout` outputs, `n ≤ MAXC`
        // (`packs`), `m ≤ MAXQ`, `c0 + m ≤ cout`.
        unsafe { run(g, x, zx, &w[c0 * n..(c0 + m) * n], m, &cols, q, y, c0) };
        c0 += m;
    }
}

/// Channels `c0 .. c0 + m` of the conv (weights `w`, the run's layout) for every pixel.
///
/// # Safety
/// AVX2, AVX-512 VNNI and VL available; `w.len() = m·g.cin`, `g.cin ≤ MAXC` and a
/// multiple of 4, `m ≤ MAXQ`, `cols` filled with the run's rows, `c0 + m ≤ g.cout`,
/// `y.len() ≥ pixels·g.cout`.
#[target_feature(enable = "avx2,avx512vnni,avx512vl")]
#[allow(clippy::too_many_arguments)]
unsafe fn run(
    g: &Geom,
    x: &[i8],
    zx: i32,
    w: &[i8],
    m: usize,
    cols: &RqCols,
    q: OutQ,
    y: &mut [i8],
    c0: usize,
) {
    let (n, npix, cout) = (g.cin, g.ho * g.wo, g.cout);
    let (quads, blocks, whole) = (n / 4, m.div_ceil(BLK), m / BLK);
    // A last short block laid out as a whole one, its missing channels 0 (only written,
    // and read, when there is one: no 8 KiB zeroing per call).
    let mut short = [const { MaybeUninit::<i8>::uninit() }; BLK * MAXC];
    if whole < blocks {
        short[..BLK * n].fill(MaybeUninit::new(0));
        for l in 0..m - whole * BLK {
            let row = &w[(whole * BLK + l) * n..][..n];
            for (k, quad) in row.chunks_exact(4).enumerate() {
                for (d, &v) in short[32 * k + 4 * l..][..4].iter_mut().zip(quad) {
                    d.write(v);
                }
            }
        }
    }
    let short: &[i8] = if whole < blocks {
        // SAFETY: the first `8·n ≤ 8·MAXC` bytes were written just above;
        // `MaybeUninit<i8>` has the layout of `i8`.
        unsafe { core::slice::from_raw_parts(short.as_ptr().cast(), BLK * n) }
    } else {
        &[]
    };
    let block = |b: usize| -> &[i8] {
        if b < whole {
            &w[b * BLK * n..][..BLK * n]
        } else {
            short
        }
    };
    // What the +128 offset adds, per block: `(128 + zx)·Σw`, subtracted from the start.
    let (ones, k) = (
        _mm256_set1_epi8(1),
        _mm256_set1_epi32(128i32.wrapping_add(zx)),
    );
    // Only the first `blocks` are written and read (no 4 KiB zeroing per call).
    let mut start = [const { MaybeUninit::<__m256i>::uninit() }; MAXQ / BLK];
    for (b, st) in start.iter_mut().enumerate().take(blocks) {
        let wb = block(b);
        let mut s = _mm256_setzero_si256();
        for i in 0..quads {
            // SAFETY: `32·i + 32 ≤ 8·n = wb.len()`.
            let v = unsafe { _mm256_loadu_si256(wb.as_ptr().add(32 * i).cast()) };
            s = _mm256_dpbusd_epi32(s, ones, v);
        }
        st.write(_mm256_sub_epi32(
            _mm256_setzero_si256(),
            _mm256_mullo_epi32(s, k),
        ));
    }
    // SAFETY: `start[b]` for `b < blocks` was written above.
    let start = |b: usize| unsafe { start[b].assume_init() };
    // Each tile's inputs `x ^ 0x80`, a pixel a row (only the first `n` bytes of a row are
    // written or read; rows past a short tile's end are zeros, summed and never stored).
    let mut xu = [[const { MaybeUninit::<u32>::uninit() }; MAXC / 4]; PO];
    let flip = _mm256_set1_epi8(-128);
    let mut p = 0;
    while p < npix {
        let np = PO.min(npix - p);
        for (t, row) in xu.iter_mut().enumerate() {
            let row = &mut row[..quads];
            if t >= np {
                row.fill(MaybeUninit::new(0));
                continue;
            }
            let xs = &x[src(g, p + t)..][..n];
            let dst = row.as_mut_ptr().cast::<u8>();
            let mut i = 0;
            while i + 32 <= n {
                // SAFETY: `i + 32 ≤ n`: 32 bytes read from `xs`, 32 written into the row's
                // `4·quads = n` bytes.
                unsafe {
                    let v = _mm256_loadu_si256(xs.as_ptr().add(i).cast());
                    _mm256_storeu_si256(dst.add(i).cast(), _mm256_xor_si256(v, flip));
                }
                i += 32;
            }
            for (j, &v) in xs.iter().enumerate().skip(i) {
                // SAFETY: `j < n`, inside the row's `n` bytes.
                unsafe { dst.add(j).write(v as u8 ^ 0x80) };
            }
        }
        let mut b = 0;
        while b < blocks {
            let two = b + 2 <= blocks;
            // SAFETY: AVX2/VNNI (this function's contract); the blocks hold `8·n = 32·quads`
            // bytes, every row of `xu` its first `quads` words (written above).
            let acc: [[__m256i; 2]; PO] = unsafe {
                if two {
                    tile::<2>(
                        [block(b), block(b + 1)],
                        [start(b), start(b + 1)],
                        &xu,
                        quads,
                    )
                } else {
                    tile::<1>([block(b)], [start(b)], &xu, quads).map(|a| [a[0], a[0]])
                }
            };
            for (j, bj) in (b..if two { b + 2 } else { b + 1 }).enumerate() {
                let (ob, nb) = (BLK * bj, BLK.min(m - BLK * bj));
                let lanes = cols.lanes(ob);
                for (t, a) in acc.iter().enumerate().take(np) {
                    let v = requant8(a[j], &lanes, q);
                    let mut bytes = [0i8; 8];
                    // SAFETY: `bytes` holds 8 bytes.
                    unsafe { _mm_storel_epi64(bytes.as_mut_ptr().cast(), v) };
                    y[(p + t) * cout + c0 + ob..][..nb].copy_from_slice(&bytes[..nb]);
                }
            }
            b += if two { 2 } else { 1 };
        }
        p += np;
    }
}

/// [`PO`] pixels × `B` blocks of 8 channels: `acc[p][b] = start[b] + Σ_k dpbusd(xu[p][k],
/// wb[b][32k..32k + 32])`.
///
/// # Safety
/// AVX2, AVX-512 VNNI and VL available; every block holds `32·quads` bytes, every row of
/// `xu` `quads` initialised words.
#[inline]
#[target_feature(enable = "avx2,avx512vnni,avx512vl")]
unsafe fn tile<const B: usize>(
    wb: [&[i8]; B],
    start: [__m256i; B],
    xu: &[[MaybeUninit<u32>; MAXC / 4]; PO],
    quads: usize,
) -> [[__m256i; B]; PO] {
    debug_assert!(wb.iter().all(|w| w.len() >= 32 * quads) && quads <= MAXC / 4);
    let mut acc = [start; PO];
    for k in 0..quads {
        let mut wv = [_mm256_setzero_si256(); B];
        for (v, w) in wv.iter_mut().zip(wb) {
            // SAFETY: `32k + 32 ≤ 32·quads ≤ w.len()`.
            *v = unsafe { _mm256_loadu_si256(w.as_ptr().add(32 * k).cast()) };
        }
        for (a, row) in acc.iter_mut().zip(xu) {
            // SAFETY: word `k < quads` of the row is initialised (this function's contract).
            let xb = _mm256_set1_epi32(unsafe { row[k].assume_init() } as i32);
            for (ab, v) in a.iter_mut().zip(&wv) {
                *ab = _mm256_dpbusd_epi32(*ab, xb, *v);
            }
        }
    }
    acc
}
