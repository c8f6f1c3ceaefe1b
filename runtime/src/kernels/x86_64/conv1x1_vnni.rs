//! int8 pointwise conv on AVX-512 VNNI (`vpdpbusd` on 512-bit registers), on weights laid
//! out at the switch: four `u8·i8` products summed into each i32 lane per instruction,
//! without intermediate saturation, so the sums stay exact. `vpdpbusd` wants one unsigned
//! operand: the input is offset to `u = x + 128 ∈ [0, 255]` (an `xor 0x80`), and
//! `Σ w·(x − zx) = Σ w·u − (128 + zx)·Σ w` (wrapping, as the reference's sum), `Σ w` per
//! output channel summed once per call by `vpdpbusd` against ones. The AVX2 outer
//! product's design with quads for pairs ([`super::conv1x1`]): the lanes of an accumulator
//! are 16 output channels of one pixel, each pixel's input quad is broadcast, and the
//! accumulators go through `requant16` (`requant16_plain`) straight to the output bytes. An
//! input count that is not a multiple of 4 ends in a zero-padded quad. Bit-exact to the
//! reference.
use core::arch::x86_64::*;
use core::mem::MaybeUninit;

use super::conv1x1::src;
use super::conv1x1::ROWS_MIN_PIXELS;
use super::requant::{Requant, RqCols};
use super::{first16, first_bytes, lane_mask};
use crate::kernels::{Geom, OutQ, SumTile};

/// Output pixels per tile.
const PO: usize = 4;
/// Output channels per block of the packed layout (an accumulator's lanes).
const BLK: usize = 16;
/// Most blocks per tile (`PO × TB` accumulators, `TB` weight vectors, the broadcast input).
const TB: usize = 4;
/// Widest conv the requantisation lanes hold at once (wider ones go in runs of this many).
const MAXQ: usize = super::requant::MAXQ;
/// Widest input laid out (the tile's offset inputs live on the stack).
const MAXC: usize = 1024;

/// AVX-512 F, BW, DQ, VL and VNNI are usable (`vpdpbusd` on 512 bits, byte masks,
/// `vrangeps` in the rounding).
pub(crate) fn detected() -> bool {
    #[cfg(feature = "std")]
    {
        super::detected()
            && std::is_x86_feature_detected!("avx512f")
            && std::is_x86_feature_detected!("avx512bw")
            && std::is_x86_feature_detected!("avx512dq")
            && std::is_x86_feature_detected!("avx512vl")
            && std::is_x86_feature_detected!("avx512vnni")
    }
    #[cfg(not(feature = "std"))]
    {
        super::detected()
            && cfg!(all(
                target_feature = "avx512f",
                target_feature = "avx512bw",
                target_feature = "avx512dq",
                target_feature = "avx512vl",
                target_feature = "avx512vnni"
            ))
    }
}

/// Whether [`pack_conv1x1_i8`] lays out (and [`conv1x1_i8_packed`] reads) a weight of `cin`
/// inputs: at most [`MAXC`]. It must not depend on `cout`: a conv split by channels hands
/// its parts slices of the whole's layout.
fn packs(cin: usize) -> bool {
    cin > 0 && cin <= MAXC
}

/// Lays a `[cout, cin]` int8 weight out in place for [`conv1x1_i8_packed`]: every whole
/// block of [`BLK`] output channels becomes [`pack_block`]'s layout (each step of the tile
/// one 64-byte load: a quad of inputs for 16 channels); the last `cout % 16` rows stay rows
/// at the same offset. The length is unchanged, and channels `c0 .. c0 + m` (`c0`, and `m`
/// unless it reaches `cout`, multiples of 16) are that slice's own layout. Shapes
/// [`packs`] refuses stay rows.
pub(crate) fn pack_conv1x1_i8(cout: usize, cin: usize, w: &mut [i8]) {
    if !packs(cin) {
        return;
    }
    let mut out = [const { MaybeUninit::<i8>::uninit() }; BLK * MAXC];
    for blk in w[..cout / BLK * BLK * cin].chunks_exact_mut(BLK * cin) {
        // SAFETY: only installed after AVX2 detection; `blk` holds 16 rows of `cin`, and
        // `out` `16·cin` bytes.
        let packed = unsafe { pack_block(blk, cin, &mut out) };
        blk.copy_from_slice(packed);
    }
}

/// `r = rows.len() / n ≤ 16` rows of `n` inputs as one block of the packed layout, in
/// `out`'s first `16·n` bytes, channels past `r` zero: with `q = n / 4` whole quads and
/// `e = n % 4` inputs left, `out[64k + 4l + j] = rows[l·n + 4k + j]` for `k < q`, then
/// `out[64q + e·l + j] = rows[l·n + 4q + j]`. Eight quads of 8 rows at a time as an 8×8
/// transpose of 32-bit lanes, the last `q mod 8` quads through masked loads (a 48-input
/// layer's 12 quads, a 24-input one's 6, would otherwise go byte by byte — the bulk of a
/// small layer's packing, which `Auto` does at every switch).
///
/// # Safety
/// AVX2 available; `out.len() ≥ 16·n`, `rows.len()` a multiple of `n` and at most `16·n`.
#[target_feature(enable = "avx2")]
unsafe fn pack_block<'o>(rows: &[i8], n: usize, out: &'o mut [MaybeUninit<i8>]) -> &'o [i8] {
    let (r, quads, e) = (rows.len() / n, n / 4, n % 4);
    let out = &mut out[..BLK * n];
    // Eight rows at a time along their length, so each load walks one row in order (the
    // hardware prefetchers follow it); whole loads where 8 quads remain.
    for l0 in [0, 8] {
        let mut k = 0;
        while k < quads {
            let m = (quads - k).min(8);
            // Lanes `< m` of each row: quads `k .. k + m`.
            // SAFETY: `lane_mask` gives 8 i32.
            let lanes = unsafe { _mm256_loadu_si256(lane_mask(m).as_ptr().cast()) };
            let v: [__m256; 8] = core::array::from_fn(|l| {
                if l0 + l < r {
                    // SAFETY: row `l0 + l < r` holds `n ≥ 4(k + m)` bytes from
                    // `(l0 + l)·n`; the masked-off lanes are not read.
                    unsafe {
                        let p = rows.as_ptr().add((l0 + l) * n + 4 * k);
                        if m == 8 {
                            _mm256_loadu_ps(p.cast())
                        } else {
                            _mm256_castsi256_ps(_mm256_maskload_epi32(p.cast(), lanes))
                        }
                    }
                } else {
                    _mm256_setzero_ps()
                }
            });
            for (j, t) in super::transpose8(v).into_iter().enumerate().take(m) {
                // SAFETY: `64·(k + j) + 4·l0 + 32 ≤ 64·quads ≤ 16·n = out.len()`.
                unsafe { _mm256_storeu_ps(out.as_mut_ptr().add(64 * (k + j) + 4 * l0).cast(), t) };
            }
            k += m;
        }
    }
    let at = |l: usize, i: usize| if l < r { rows[l * n + i] } else { 0 };
    for l in 0..BLK {
        for j in 0..e {
            out[64 * quads + e * l + j].write(at(l, 4 * quads + j));
        }
    }
    // SAFETY: every one of the `16·n = 64·quads + 16·e` bytes was written above;
    // `MaybeUninit<i8>` has the layout of `i8`.
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
    // SAFETY: only installed after AVX2 + AVX-512 detection (`detected`); `packs`.
    unsafe { requantised(g, x, zx, w, true, rq, q, y) }
}

/// The `conv1x1_i8` contract on weights as rows: [`conv1x1_i8_packed`]'s outer product with
/// the weights laid out per call, a panel at a time, from [`ROWS_MIN_PIXELS`] output
/// pixels; below, the VNNI dot products on the rows ([`super::dots_vnni`]); other shapes
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
    if g.ho * g.wo < ROWS_MIN_PIXELS && super::dots_vnni::fits(g) {
        // SAFETY: only installed after AVX2 + AVX-512 detection (`detected`); `fits`.
        return unsafe { super::dots_vnni::conv1x1_i8(g, x, zx, w, rq, q, y) };
    }
    if !packs(g.cin) || g.ho * g.wo < ROWS_MIN_PIXELS {
        return super::conv1x1::conv1x1_i8(g, x, zx, w, rq, q, y);
    }
    // SAFETY: only installed after AVX2 + AVX-512 detection (`detected`); `packs`.
    unsafe { requantised(g, x, zx, w, false, rq, q, y) }
}

/// The conv with the output stage, `w` laid out at the switch (`prepacked`) or rows, in runs
/// of [`MAXQ`] channels (the requantisation lanes; a multiple of 16, so each run of a
/// packed weight is its own layout) and panels of blocks. (A target-feature function, so
/// its closures inline the output stage and the tile.)
///
/// # Safety
/// AVX2 and AVX-512 F/BW/VL/VNNI available; `g.cin` passes [`packs`].
#[allow(clippy::too_many_arguments)]
#[target_feature(enable = "avx2,avx512f,avx512bw,avx512vl,avx512vnni")]
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
        let _ = Requant::new(&rq[c0..c0 + m], q, &mut cols);
        let wr = &w[c0 * n..(c0 + m) * n];
        panels(n, m, wr, prepacked, &mut |lo, blocks| {
            // SAFETY: this function's contract; `panels` hands at most `MAXQ / 16` blocks
            // of `16·n` bytes.
            unsafe {
                gemm(g, x, zx, blocks, |p, np, b, acc| {
                    let ob = lo + BLK * b;
                    let nb = BLK.min(m - ob);
                    // The columns are zero-padded to a multiple of 16 (`RqCols::lanes16`).
                    let keep = first16(nb);
                    let out = cols.out16(ob, q);
                    for (t, a) in acc.iter().enumerate().take(np) {
                        let v = out.requant(*a);
                        let o = &mut y[(p + t) * cout + c0 + ob..][..nb];
                        // SAFETY: the bytes `keep` selects are `o`'s `nb`.
                        _mm_mask_storeu_epi8(o.as_mut_ptr(), keep, v);
                    }
                })
            }
        });
        c0 += m;
    }
}

/// AVX-512 VNNI twin of `reference::conv1x1::conv1x1_sums_i8` (exact, so equal): the outer
/// product of [`conv1x1_i8`] without the output stage, one tile of 4 pixels × a panel of
/// channels per `sink` call; few pixels as dot products, as there; the shapes
/// [`conv1x1_i8`] hands on take the AVX2 sums.
pub(crate) fn conv1x1_sums_i8(
    g: &Geom,
    x: &[i8],
    zx: i32,
    w: &[i8],
    sink: &mut dyn FnMut(SumTile<'_>),
) {
    if g.ho * g.wo < ROWS_MIN_PIXELS && super::dots_vnni::fits(g) {
        // SAFETY: only installed after AVX2 + AVX-512 detection (`detected`); `fits`.
        return unsafe { super::dots_vnni::conv1x1_sums_i8(g, x, zx, w, sink) };
    }
    if !packs(g.cin) || g.ho * g.wo < ROWS_MIN_PIXELS {
        return super::conv1x1::conv1x1_sums_i8(g, x, zx, w, sink);
    }
    // SAFETY: only installed after AVX2 + AVX-512 detection (`detected`); `packs`.
    unsafe { sums(g, x, zx, w, sink) }
}

/// [`conv1x1_sums_i8`]'s outer product.
///
/// # Safety
/// AVX2 and AVX-512 F/BW/VL/VNNI available; `g.cin` passes [`packs`].
#[target_feature(enable = "avx2,avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn sums(g: &Geom, x: &[i8], zx: i32, w: &[i8], sink: &mut dyn FnMut(SumTile<'_>)) {
    let (n, cout) = (g.cin, g.cout);
    // A panel's tile rows, each written by its blocks before the panel's last block hands
    // them on (no 16 KiB zeroing per call).
    let mut acc = [const { MaybeUninit::<i32>::uninit() }; PO * MAXQ];
    panels(n, cout, &w[..cout * n], false, &mut |lo, blocks| {
        let no = (cout - lo).min(BLK * blocks.len());
        // SAFETY: this function's contract; `panels` hands at most `MAXQ / 16` blocks of
        // `16·n` bytes.
        unsafe {
            gemm(g, x, zx, blocks, |p, np, b, a| {
                let ob = BLK * b;
                let nb = BLK.min(no - ob);
                // One masked store a row: the epilogue's 16-lane loads of these rows then
                // meet whole stores, not the 16 narrow ones an element copy made.
                for (t, v) in a.iter().enumerate().take(np) {
                    let d = &mut acc[t * no + ob..][..nb];
                    // SAFETY: the mask writes the first `nb ≤ 16` lanes, which `d` holds.
                    _mm512_mask_storeu_epi32(d.as_mut_ptr().cast(), first16(nb), *v);
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

/// Hands `f(lo, blocks)` the `m` channels of `w` (`m·n` bytes, `n ≤ MAXC`) as blocks of
/// the packed layout, `16·n` bytes each, channel `lo` first: `prepacked`, the whole blocks
/// where they lie in one panel and a short last block laid out per call; rows, panels of
/// at most [`PANEL`] bytes and [`MAXQ`] channels laid out per call.
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
        let first = (lo + BLK * whole) * n;
        for (i, chunk) in w[first..hi * n].chunks(BLK * n).enumerate() {
            if !prepacked {
                // The next block's rows (the next panel's first for the last) on their way
                // into L1 while this one is laid out: `w` is the bundle's, seldom still in
                // cache from the last inference.
                let next = &w[(first + (i + 1) * BLK * n).min(w.len())..];
                for line in next[..next.len().min(BLK * n)].chunks(64) {
                    // SAFETY: SSE is baseline on x86_64; a prefetch reads nothing.
                    unsafe { _mm_prefetch::<_MM_HINT_T0>(line.as_ptr()) };
                }
            }
            // SAFETY: only installed after AVX2 detection; `store` holds `PANEL ≥ nbk·16·n`
            // bytes (`per`; one block when prepacked); `chunk` is at most 16 rows of `n`.
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

/// The VNNI outer product over `blocks` (each `16·n` bytes of the packed layout) for every
/// output pixel: per tile of 4 pixels each block's 16-channel sums, started from
/// `−(128 + zx)·Σw`, go to `out(p, np, b, acc)`, a tile's blocks in order.
///
/// # Safety
/// AVX2 and AVX-512 F/BW/VL/VNNI available; `0 < g.cin ≤ MAXC`, every block `16·g.cin`
/// bytes, at most `MAXQ / 16` blocks.
#[target_feature(enable = "avx2,avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn gemm(
    g: &Geom,
    x: &[i8],
    zx: i32,
    blocks: &[&[i8]],
    mut out: impl FnMut(usize, usize, usize, &[__m512i; PO]),
) {
    let (n, npix) = (g.cin, g.ho * g.wo);
    let (quads, e) = (n / 4, n % 4);
    // Words of a laid-out input row: the whole quads and the zero-padded last one.
    let words = n.div_ceil(4);
    // What the +128 offset adds, per block: `(128 + zx)·Σw`, subtracted from the start.
    let (ones, k) = (
        _mm512_set1_epi8(1),
        _mm512_set1_epi32(128i32.wrapping_add(zx)),
    );
    // Per block: the start value and the last `e` inputs' weights as a zero-padded quad
    // (only the first `blocks.len()` are written and read).
    let mut start = [const { MaybeUninit::<__m512i>::uninit() }; MAXQ / BLK];
    let mut tails = [const { MaybeUninit::<__m512i>::uninit() }; MAXQ / BLK];
    for ((st, tl), wb) in start.iter_mut().zip(&mut tails).zip(blocks) {
        let mut s = _mm512_setzero_si512();
        for i in 0..quads {
            // SAFETY: `64·i + 64 ≤ 16·n = wb.len()`.
            let v = unsafe { _mm512_loadu_si512(wb.as_ptr().add(64 * i).cast()) };
            s = _mm512_dpbusd_epi32(s, ones, v);
        }
        let mut t = [0i8; 64];
        for l in 0..BLK {
            for j in 0..e {
                t[4 * l + j] = wb[64 * quads + e * l + j];
            }
        }
        // SAFETY: `t` holds 64 bytes.
        let t = unsafe { _mm512_loadu_si512(t.as_ptr().cast()) };
        s = _mm512_dpbusd_epi32(s, ones, t);
        tl.write(t);
        st.write(_mm512_sub_epi32(
            _mm512_setzero_si512(),
            _mm512_mullo_epi32(s, k),
        ));
    }
    // SAFETY: `start[b]`, `tails[b]` for `b < blocks.len()` were written above.
    let start = |b: usize| unsafe { start[b].assume_init() };
    let tail = |b: usize| unsafe { tails[b].assume_init() };
    // Each tile's inputs `x ^ 0x80`, a pixel a row, the padding of the last quad included
    // (only the first `words` words of a row are written or read; rows past a short tile's
    // end are zeros, summed and never stored).
    let mut xu = [[const { MaybeUninit::<u32>::uninit() }; MAXC / 4]; PO];
    let flip = _mm512_set1_epi8(-128);
    let mut p = 0;
    while p < npix {
        let np = PO.min(npix - p);
        for (t, row) in xu.iter_mut().enumerate() {
            let row = &mut row[..words];
            if t >= np {
                row.fill(MaybeUninit::new(0));
                continue;
            }
            let xs = &x[src(g, p + t)..][..n];
            let dst = row.as_mut_ptr().cast::<u8>();
            let mut i = 0;
            while i < 4 * words {
                // SAFETY: the load reads only `xs`'s bytes `i .. min(n, i + 64)`, the store
                // writes only the row's bytes `i .. min(4·words, i + 64)` (masked lanes are
                // not accessed).
                unsafe {
                    let v = _mm512_maskz_loadu_epi8(
                        first_bytes(n.saturating_sub(i)),
                        xs.as_ptr().add(i),
                    );
                    _mm512_mask_storeu_epi8(
                        dst.add(i).cast(),
                        first_bytes(4 * words - i),
                        _mm512_xor_si512(v, flip),
                    );
                }
                i += 64;
            }
        }
        let mut b = 0;
        // A tile of fewer pixels (a map's or a thread's part's last, where its pixels are
        // not a multiple of 4) sums only its rows: a 49-pixel map cut 25 + 24 costs its
        // parts 6¼ and 6 tiles, not 7 and 6.
        while b < blocks.len() {
            macro_rules! tile {
                ($nb:literal) => {{
                    // (Loops, not `array::from_fn`: its closures were calls here, each
                    // after a `vzeroupper`.)
                    let mut wb: [&[i8]; $nb] = [&[]; $nb];
                    let (mut st, mut tl) =
                        ([_mm512_setzero_si512(); $nb], [_mm512_setzero_si512(); $nb]);
                    for i in 0..$nb {
                        wb[i] = blocks[b + i];
                        st[i] = start(b + i);
                        if e > 0 {
                            tl[i] = tail(b + i);
                        }
                    }
                    let tl = (e > 0).then_some(tl);
                    // Per block, the tile's rows (those past `np` zeros, never stored).
                    let mut a = [[_mm512_setzero_si512(); PO]; $nb];
                    macro_rules! rows {
                        ($p:literal) => {{
                            // SAFETY: AVX-512 (this function's contract); the blocks hold
                            // `16·n ≥ 64·quads` bytes, every row of `xu` its first `words`
                            // words (written above).
                            let acc = unsafe { tile::<$nb, $p>(wb, st, tl, &xu, quads) };
                            for (t, row) in acc.iter().enumerate() {
                                for (i, v) in row.iter().enumerate() {
                                    a[i][t] = *v;
                                }
                            }
                        }};
                    }
                    match np {
                        1 => rows!(1),
                        2 => rows!(2),
                        3 => rows!(3),
                        _ => rows!(4),
                    }
                    for (i, a) in a.iter().enumerate() {
                        out(p, np, b + i, a);
                    }
                    b += $nb;
                }};
            }
            match blocks.len() - b {
                1 => tile!(1),
                2 => tile!(2),
                3 => tile!(3),
                _ => tile!(4),
            }
        }
        p += np;
    }
}

/// `P` pixels (the first `P` rows of `xu`, `P ≤ PO`) × `B` blocks of 16 channels:
/// `acc[p][b] = start[b] + Σ_k dpbusd(xu[p][k], wb[b][64k..64k + 64])`, plus, with `tail`,
/// `dpbusd(xu[p][quads], tail[b])`.
///
/// # Safety
/// AVX-512 F/VNNI available; every block holds `64·quads` bytes, every row of `xu`
/// `quads` initialised words, and one more with `tail`.
#[inline]
#[target_feature(enable = "avx512f,avx512vnni")]
unsafe fn tile<const B: usize, const P: usize>(
    wb: [&[i8]; B],
    start: [__m512i; B],
    tail: Option<[__m512i; B]>,
    xu: &[[MaybeUninit<u32>; MAXC / 4]; PO],
    quads: usize,
) -> [[__m512i; B]; P] {
    debug_assert!(B <= TB && wb.iter().all(|w| w.len() >= 64 * quads) && quads <= MAXC / 4);
    debug_assert!(P <= PO);
    let xu = &xu[..P];
    let mut acc = [start; P];
    for k in 0..quads {
        let mut wv = [_mm512_setzero_si512(); B];
        for (v, w) in wv.iter_mut().zip(wb) {
            // SAFETY: `64k + 64 ≤ 64·quads ≤ w.len()`.
            *v = unsafe { _mm512_loadu_si512(w.as_ptr().add(64 * k).cast()) };
        }
        for (a, row) in acc.iter_mut().zip(xu) {
            // SAFETY: word `k < quads` of the row is initialised (this function's contract).
            let xb = _mm512_set1_epi32(unsafe { row[k].assume_init() } as i32);
            for (ab, v) in a.iter_mut().zip(&wv) {
                *ab = _mm512_dpbusd_epi32(*ab, xb, *v);
            }
        }
    }
    if let Some(wv) = tail {
        for (a, row) in acc.iter_mut().zip(xu) {
            // SAFETY: word `quads` of the row is initialised with a tail (this function's
            // contract).
            let xb = _mm512_set1_epi32(unsafe { row[quads].assume_init() } as i32);
            for (ab, v) in a.iter_mut().zip(&wv) {
                *ab = _mm512_dpbusd_epi32(*ab, xb, *v);
            }
        }
    }
    acc
}
