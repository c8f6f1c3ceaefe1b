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
use super::conv1x1::ROWS_MIN_PIXELS;
use super::requant::{requant8, Requant, RqCols};
use crate::kernels::{Geom, OutQ, SumTile};

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
    let mut out = [const { MaybeUninit::<i8>::uninit() }; BLK * MAXC];
    for blk in w[..cout / BLK * BLK * cin].chunks_exact_mut(BLK * cin) {
        // SAFETY: only installed after AVX2 detection; `blk` holds 8 rows of `cin`, a
        // multiple of 4, and `out` `8·cin` bytes.
        let packed = unsafe { pack_block(blk, cin, &mut out) };
        blk.copy_from_slice(packed);
    }
}

/// `r = rows.len() / n ≤ 8` rows of `n` inputs (a multiple of 4) as one block of the packed
/// layout, in `out`'s first `8·n` bytes: `out[32k + 4l + j] = rows[l·n + 4k + j]`, channels
/// past `r` zero. Eight quads of the 8 rows at a time as an 8×8 transpose of 32-bit lanes.
///
/// # Safety
/// AVX2 available; `out.len() ≥ 8·n`, `n` a multiple of 4, `rows.len()` a multiple of `n`
/// and at most `8·n`.
#[target_feature(enable = "avx2")]
unsafe fn pack_block<'o>(rows: &[i8], n: usize, out: &'o mut [MaybeUninit<i8>]) -> &'o [i8] {
    let (r, quads) = (rows.len() / n, n / 4);
    let out = &mut out[..BLK * n];
    let mut k = 0;
    while k + 8 <= quads {
        let v: [__m256; 8] = core::array::from_fn(|l| {
            if l < r {
                // SAFETY: row `l < r` holds `n ≥ 4k + 32` bytes from `l·n`.
                unsafe { _mm256_loadu_ps(rows.as_ptr().add(l * n + 4 * k).cast()) }
            } else {
                _mm256_setzero_ps()
            }
        });
        for (j, t) in super::transpose8(v).into_iter().enumerate() {
            // SAFETY: `32·(k + j) + 32 ≤ 32·quads = 8·n = out.len()`.
            unsafe { _mm256_storeu_ps(out.as_mut_ptr().add(32 * (k + j)).cast(), t) };
        }
        k += 8;
    }
    for kk in k..quads {
        for l in 0..BLK {
            for j in 0..4 {
                out[32 * kk + 4 * l + j].write(if l < r { rows[l * n + 4 * kk + j] } else { 0 });
            }
        }
    }
    // SAFETY: every one of the `8·n` bytes was written above; `MaybeUninit<i8>` has the
    // layout of `i8`.
    unsafe { core::slice::from_raw_parts(out.as_ptr().cast(), BLK * n) }
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
    if !packs(g.cin) {
        return super::conv1x1::conv1x1_i8(g, x, zx, w, rq, q, y);
    }
    // SAFETY: only installed after AVX2 + AVX-512 VNNI/VL detection (`detected`); `packs`.
    unsafe { requantised(g, x, zx, w, true, rq, q, y) }
}

/// The `conv1x1_i8` contract on weights as rows: [`conv1x1_i8_packed`]'s outer product with
/// the weights laid out per call, a panel at a time (at least [`ROWS_MIN_PIXELS`] output
/// pixels: below, the AVX2 dot tiles on the rows win, as in the AVX2 table); other shapes
/// take the AVX2 conv.
pub(crate) fn conv1x1_i8(
    g: &Geom,
    x: &[i8],
    zx: i32,
    w: &[i8],
    rq: &[[i32; 3]],
    q: OutQ,
    y: &mut [i8],
) {
    if !packs(g.cin) || g.ho * g.wo < ROWS_MIN_PIXELS {
        return super::conv1x1::conv1x1_i8(g, x, zx, w, rq, q, y);
    }
    // SAFETY: only installed after AVX2 + AVX-512 VNNI/VL detection (`detected`); `packs`.
    unsafe { requantised(g, x, zx, w, false, rq, q, y) }
}

/// The conv with the output stage, `w` laid out at the switch (`prepacked`) or rows, in runs
/// of [`MAXQ`] channels (the requantisation lanes; a multiple of 8, so each run of a packed
/// weight is its own layout) and panels of blocks. (A target-feature function, so its
/// closures inline `requant8` and the tile.)
///
/// # Safety
/// AVX2, AVX-512 VNNI and VL available; `g.cin` passes [`packs`].
#[allow(clippy::too_many_arguments)]
#[target_feature(enable = "avx2,avx512vnni,avx512vl")]
unsafe fn requantised(
    g: &Geom,
    x: &[i8],
    zx: i32,
    w: &[i8],
    prepacked: bool,
    rq: &[[i32; 3]],
    q: OutQ,
    y: &mut [i8],
) {
    let (n, npix, cout) = (g.cin, g.ho * g.wo, g.cout);
    let (w, rq, y) = (&w[..cout * n], &rq[..cout], &mut y[..npix * cout]);
    let mut c0 = 0;
    while c0 < cout {
        let m = MAXQ.min(cout - c0);
        let mut cols = RqCols::new();
        let _ = Requant::new(&rq[c0..c0 + m], &mut cols);
        let wr = &w[c0 * n..(c0 + m) * n];
        panels(n, m, wr, prepacked, &mut |lo, blocks| {
            // SAFETY: this function's contract; `panels` hands at most `MAXQ / 8` blocks of
            // `8·n` bytes.
            unsafe {
                gemm(g, x, zx, blocks, |p, np, b, acc| {
                    let ob = lo + BLK * b;
                    let nb = BLK.min(m - ob);
                    let lanes = cols.lanes(ob);
                    for (t, a) in acc.iter().enumerate().take(np) {
                        let v = requant8(*a, &lanes, q);
                        let mut bytes = [0i8; 8];
                        // SAFETY: `bytes` holds 8 bytes.
                        _mm_storel_epi64(bytes.as_mut_ptr().cast(), v);
                        y[(p + t) * cout + c0 + ob..][..nb].copy_from_slice(&bytes[..nb]);
                    }
                })
            }
        });
        c0 += m;
    }
}

/// AVX-512 VNNI twin of `reference::conv1x1::conv1x1_sums_i8` (exact, so equal): the outer
/// product of [`conv1x1_i8`] without the output stage, one tile of 4 pixels × a panel of
/// channels per `sink` call; the shapes [`conv1x1_i8`] hands on take the AVX2 sums.
pub(crate) fn conv1x1_sums_i8(
    g: &Geom,
    x: &[i8],
    zx: i32,
    w: &[i8],
    sink: &mut dyn FnMut(SumTile<'_>),
) {
    if !packs(g.cin) || g.ho * g.wo < ROWS_MIN_PIXELS {
        return super::conv1x1::conv1x1_sums_i8(g, x, zx, w, sink);
    }
    // SAFETY: only installed after AVX2 + AVX-512 VNNI/VL detection (`detected`); `packs`.
    unsafe { sums(g, x, zx, w, sink) }
}

/// [`conv1x1_sums_i8`]'s outer product.
///
/// # Safety
/// AVX2, AVX-512 VNNI and VL available; `g.cin` passes [`packs`].
#[target_feature(enable = "avx2,avx512vnni,avx512vl")]
unsafe fn sums(g: &Geom, x: &[i8], zx: i32, w: &[i8], sink: &mut dyn FnMut(SumTile<'_>)) {
    let (n, cout) = (g.cin, g.cout);
    // A panel's tile rows, each written by its blocks before the panel's last block hands
    // them on (no 16 KiB zeroing per call).
    let mut acc = [const { MaybeUninit::<i32>::uninit() }; PO * MAXQ];
    panels(n, cout, &w[..cout * n], false, &mut |lo, blocks| {
        let no = (cout - lo).min(BLK * blocks.len());
        // SAFETY: this function's contract; `panels` hands at most `MAXQ / 8` blocks of
        // `8·n` bytes.
        unsafe {
            gemm(g, x, zx, blocks, |p, np, b, a| {
                let ob = BLK * b;
                let nb = BLK.min(no - ob);
                for (t, v) in a.iter().enumerate().take(np) {
                    let mut lanes = [0i32; 8];
                    // SAFETY: `lanes` holds 8 i32.
                    _mm256_storeu_si256(lanes.as_mut_ptr().cast(), *v);
                    for (d, &s) in acc[t * no + ob..][..nb].iter_mut().zip(&lanes) {
                        d.write(s);
                    }
                }
                if ob + nb == no {
                    // SAFETY: `gemm` hands a pixel tile's blocks in order, so rows `0 .. np`
                    // of the panel's `no` channels were all written above;
                    // `MaybeUninit<i32>` has the layout of `i32`.
                    let acc = &*(&acc[..np * no] as *const [MaybeUninit<i32>] as *const [i32]);
                    sink(SumTile {
                        p0: p,
                        np,
                        o0: lo,
                        no,
                        acc,
                    });
                }
            })
        }
    });
}

/// Weight bytes a panel of blocks laid out per call takes (on the stack).
const PANEL: usize = 64 * 1024;

/// Hands `f(lo, blocks)` the `m` channels of `w` (`m·n` bytes, `n ≤ MAXC` a multiple of 4)
/// as blocks of the packed layout, `8·n` bytes each, channel `lo` first: `prepacked`, the
/// whole blocks where they lie in one panel and a short last block laid out per call;
/// rows, panels of at most [`PANEL`] bytes and [`MAXQ`] channels laid out per call.
fn panels(n: usize, m: usize, w: &[i8], prepacked: bool, f: &mut dyn FnMut(usize, &[&[i8]])) {
    let blocks = m.div_ceil(BLK);
    let per = if prepacked {
        MAXQ / BLK
    } else {
        (PANEL / (BLK * n)).min(MAXQ / BLK)
    };
    let mut store = [const { MaybeUninit::<i8>::uninit() }; PANEL];
    let mut b0 = 0;
    while b0 < blocks {
        let nbk = per.min(blocks - b0);
        let (lo, hi) = (BLK * b0, m.min(BLK * (b0 + nbk)));
        let whole = if prepacked { (hi - lo) / BLK } else { 0 };
        // The blocks from `whole` on are laid out into `store` (a short last block when
        // prepacked, every block of the panel for rows).
        let mut len = 0;
        for chunk in w[(lo + BLK * whole) * n..hi * n].chunks(BLK * n) {
            // SAFETY: only installed after AVX2 detection; `store` holds `PANEL ≥ nbk·8·n`
            // bytes (`per`; one block when prepacked); `chunk` is at most 8 rows of `n`.
            len += unsafe { pack_block(chunk, n, &mut store[len..]) }.len();
        }
        // SAFETY: the first `len` bytes of `store` were written just above; `MaybeUninit<i8>`
        // has the layout of `i8`.
        let laid: &[i8] = unsafe { core::slice::from_raw_parts(store.as_ptr().cast(), len) };
        let mut refs: [&[i8]; MAXQ / BLK] = [&[]; MAXQ / BLK];
        for (b, r) in refs.iter_mut().enumerate().take(nbk) {
            *r = if b < whole {
                &w[(lo + BLK * b) * n..][..BLK * n]
            } else {
                &laid[(b - whole) * BLK * n..][..BLK * n]
            };
        }
        f(lo, &refs[..nbk]);
        b0 += nbk;
    }
}

/// The VNNI outer product over `blocks` (each `8·n` bytes of the packed layout) for every
/// output pixel: per tile of 4 pixels each block's 8-channel sums, started from
/// `−(128 + zx)·Σw`, go to `out(p, np, b, acc)`, a tile's blocks in order.
///
/// # Safety
/// AVX2, AVX-512 VNNI and VL available; `g.cin ≤ MAXC` a multiple of 4, every block
/// `8·g.cin` bytes, at most `MAXQ / 8` blocks.
#[target_feature(enable = "avx2,avx512vnni,avx512vl")]
unsafe fn gemm(
    g: &Geom,
    x: &[i8],
    zx: i32,
    blocks: &[&[i8]],
    mut out: impl FnMut(usize, usize, usize, &[__m256i; PO]),
) {
    let (n, npix) = (g.cin, g.ho * g.wo);
    let quads = n / 4;
    // What the +128 offset adds, per block: `(128 + zx)·Σw`, subtracted from the start.
    let (ones, k) = (
        _mm256_set1_epi8(1),
        _mm256_set1_epi32(128i32.wrapping_add(zx)),
    );
    // Only the first `blocks.len()` are written and read (no 4 KiB zeroing per call).
    let mut start = [const { MaybeUninit::<__m256i>::uninit() }; MAXQ / BLK];
    for (st, wb) in start.iter_mut().zip(blocks) {
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
    // SAFETY: `start[b]` for `b < blocks.len()` was written above.
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
        while b < blocks.len() {
            // SAFETY: AVX2/VNNI (this function's contract); the blocks hold `8·n = 32·quads`
            // bytes, every row of `xu` its first `quads` words (written above).
            if b + 2 <= blocks.len() {
                let acc = unsafe {
                    tile::<2>(
                        [blocks[b], blocks[b + 1]],
                        [start(b), start(b + 1)],
                        &xu,
                        quads,
                    )
                };
                out(p, np, b, &acc.map(|a| a[0]));
                out(p, np, b + 1, &acc.map(|a| a[1]));
                b += 2;
            } else {
                let acc = unsafe { tile::<1>([blocks[b]], [start(b)], &xu, quads) };
                out(p, np, b, &acc.map(|a| a[0]));
                b += 1;
            }
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
