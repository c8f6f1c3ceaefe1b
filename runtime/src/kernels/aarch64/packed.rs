//! The int8 pointwise conv with the weights packed per block of up to 16 output channels,
//! so that each accumulator holds 4 channels of one pixel: no horizontal sums, and a
//! pixel's 16 channels leave as one 16-byte store. A register tile is 4 pixels × 16
//! channels (16 accumulators). Two forms of the same layout idea:
//!
//! - `sdot` by element (`DOT`, with `dotprod`): `sdot v.4s, w.16b, x.4b[j]` adds, to lane
//!   `l`, the 4 products of channel `l`'s bytes `4l .. 4l + 4` of `w` with the 4 input bytes
//!   of group `j` of `x`. The weights are packed as `[k / 4][group][4 channels × 4 k]` (a
//!   4×4 transpose of u32 per 16 bytes of 4 rows), so one 16-byte load of a pixel's input
//!   feeds 4 `sdot`s per group: 64 `sdot`s (1024 MACs) per 4 input and 16 weight loads.
//! - product pairs (plain NEON, the usual case): packed as `[k / 4][group][16]`, each vector
//!   4 channels × 4 inputs as `[c0k0 c0k1 c1k0 c1k1 … c3k1 | c0k2 c0k3 … c3k3]`, the input's 4
//!   values laid out to match by one `tbl`; `smull` + `smlal2` put two products in each i16
//!   lane and `sadalp` adds lane pairs into the 4 channels' i32: 3 instructions per 16 MACs
//!   (16-channel blocks: one `asm!` block a 16-byte step, which keeps the 16 sums in
//!   registers).
//!   Two products fit i16 only while no weight is −128 (`|w·x + w'·x'| ≤ 2·127·128 = 32512`;
//!   two `(−128)·(−128)` make 32768): the packer's weights never are (symmetric ±127), and a
//!   block that has one takes the next form, so the kernel stays exact for any bytes.
//! - `smlal` by element (plain NEON, a block holding a −128): the weights widened to i16 and
//!   packed as `[k][group][4 channels]`, the input widened 8 bytes at a time; `smlal v.4s,
//!   w.4h, x.h[j]` adds 4 channels' products with input `j`: 16 per input value of the tile.
//!
//! The zero point is folded into the bias (`Σ w·(x − zx) = Σ w·x − zx·Σw`, `Σw` summed while
//! packing), which the reference's wrapping `acc + bias` allows; the sums start from it. A
//! row tail reloads the row's last 16 (8) bytes and takes its last groups (inputs). Exact,
//! so bit-identical to the reference.
//!
//! The `sdot` and product-pair packings have the weights' length, so the switch lays
//! Materialized experts out in place (`pack_in_place`, the `conv1x1_i8_packed` slot of both
//! NEON tables) and `prepacked` only sums their groups; elsewhere (`conv1x1_i8`) each call
//! packs a block at a time into a stack buffer.
use core::arch::aarch64::*;
use core::mem::MaybeUninit;

use super::conv1x1::src;
use super::requant::Rq4;
use crate::kernels::{Geom, OutQ};

/// Output channels per block (4 groups of 4).
const CB: usize = 16;
/// Longest input row the packed path takes: a block's packed weights (`CB · NMAX` bytes,
/// twice that widened) live on the stack.
const NMAX: usize = 256;

/// Fewest output pixels for which the `sdot` packing pays (a 4×4 transpose per 64 weight
/// bytes against a tile's 4 pixels): from here per call, and the switch packs in place.
pub(super) const SDOT_MIN_PIXELS: usize = 4;

/// The packed block's buffer: 16-byte vectors, room for `CB · NMAX` i16. Left
/// uninitialised (8 KB a call otherwise): it is only reached through raw pointers, and
/// every vector a tile reads was written by the block's packing first.
type Buf = [MaybeUninit<int8x16_t>; CB * NMAX * 2 / 16];

/// `reference::conv1x1::conv1x1_i8` when the shape fits (at least 4 pixels with `DOT`; 5
/// without, or 4 on rows shorter than 128; `cin` a multiple of 4 in `16..=NMAX`, `cout` a
/// multiple of 4, `q.lo ≤ 127`, whole slices); `false`, with nothing written, otherwise.
///
/// # Safety
/// `DOT` only when the CPU has `dotprod`.
pub(super) unsafe fn conv1x1_i8<const DOT: bool>(
    g: &Geom,
    x: &[i8],
    zx: i32,
    w: &[i8],
    rq: &[[i32; 3]],
    q: OutQ,
    y: &mut [i8],
) -> bool {
    let (n, cout, npix) = (g.cin, g.cout, g.ho * g.wo);
    // A tile's worth of pixels pays for the `sdot` packing (a 4×4 transpose per 64 bytes).
    // The pair packing (~0.45 instructions a weight) pays from 5 pixels, and at 4 where the
    // rows are short: there the dot-product GEMM's per-tile horizontal sums weigh most
    // (`firmware/insnprof-a64 … cortex-a72`: 4 pixels of 48 inputs gain, of 192 lose).
    let fits = (if DOT {
        npix >= SDOT_MIN_PIXELS
    } else {
        npix > 4 || (npix == 4 && n < 128)
    })
        && n % 4 == 0
        && (16..=NMAX).contains(&n)
        && cout % 4 == 0
        && q.lo <= 127
        && w.len() >= cout * n
        && rq.len() >= cout
        && y.len() >= npix * cout
        // `src` grows with the pixel: the last one's row ends last.
        && (npix == 0 || x.len() >= src(g, npix - 1) + n);
    if !fits {
        return false;
    }
    let mut buf: Buf = [MaybeUninit::uninit(); CB * NMAX * 2 / 16];
    let bp = buf.as_mut_ptr() as *mut i8;
    let mut o = 0;
    while o < cout {
        // SAFETY: `DOT` only with `dotprod` (this function's contract); `fits` bounds the
        // block's reads of `w`, `rq` and `x` and its writes to `y` (`o + 4·G ≤ cout`);
        // `buf` holds a packed block of either form (`CB·NMAX` halfwords).
        unsafe {
            macro_rules! run {
                ($g:literal) => {{
                    let rows = &w[o * n..(o + 4 * $g) * n];
                    if DOT {
                        let wsum = pack::<$g>(rows, n, bp as *mut int8x16_t);
                        block::<SDOT, $g>(g, x, rq, q, y, o, bp, corr(wsum, zx))
                    } else if let Some(wsum) = pack_p::<$g>(rows, n, bp as *mut int8x16_t) {
                        block::<PAIRS, $g>(g, x, rq, q, y, o, bp, corr(wsum, zx))
                    } else {
                        let wsum = pack_h::<$g>(rows, n, bp as *mut i16);
                        block::<WIDE, $g>(g, x, rq, q, y, o, bp, corr(wsum, zx))
                    }
                }};
            }
            match ((cout - o) / 4).min(4) {
                4 => run!(4),
                3 => run!(3),
                2 => run!(2),
                _ => run!(1),
            }
        }
        o += CB;
    }
    true
}

/// Whether [`pack_conv1x1_i8`] lays out (and [`conv1x1_i8_prepacked`] reads) a weight of
/// `cin` inputs. It does not depend on `cout`: a conv split by channels (at multiples of
/// 16) hands its parts slices of the whole's layout.
fn packs(cin: usize) -> bool {
    cin % 4 == 0 && (16..=NMAX).contains(&cin)
}

/// Lays a `[cout, cin]` int8 weight out in place for [`prepacked`] (the switch
/// runs it on each rebuilt pointwise expert): every block of 16 output channels, and the
/// last whole groups of 4, become the packing of form `F` — [`pack`] (`SDOT`, with
/// `dotprod`) or [`pack_p`] (`PAIRS`, plain NEON); the last `cout % 4` rows stay rows at the
/// same offset. The length is unchanged, and channels `c0 .. c0 + m` (`c0`, and `m` unless
/// the slice reaches `cout`, multiples of 16) are that slice's own layout. Shapes
/// [`packs`] refuses stay rows. The switch's codes are never −128 (`PackedConv1x1I8`), so
/// every `PAIRS` block packs; a −128 here (no rebuilt weight has one) is packed as −127,
/// the one code whose two products could overflow an i16 lane.
fn pack_in_place<const F: u8>(cout: usize, cin: usize, w: &mut [i8]) {
    if !packs(cin) {
        return;
    }
    let n = cin;
    let w = &mut w[..cout * n];
    let mut rows = [0i8; CB * NMAX];
    let mut o = 0;
    while o + 4 <= cout {
        let gn = ((cout - o) / 4).min(4);
        let blk = &mut w[o * n..(o + 4 * gn) * n];
        for (r, &v) in rows.iter_mut().zip(blk.iter()) {
            *r = if F == PAIRS { v.max(-127) } else { v };
        }
        let out = blk.as_mut_ptr() as *mut int8x16_t;
        // SAFETY: `SDOT` only with dotprod (installed only with it); `rows` holds the block's
        // `4·gn` rows of `n` bytes (`16 ≤ n ≤ NMAX`, `n % 4 = 0`), for `PAIRS` none −128; the
        // packing writes `gn·n / 4` vectors = `blk.len()` bytes at `out` (unaligned: written
        // through `vst1q`).
        unsafe {
            let rows = &rows[..blk.len()];
            // The sums are the conv's to take again (`sums`); here only the layout counts.
            macro_rules! run {
                ($g:literal) => {
                    if F == SDOT {
                        let _ = pack::<$g>(rows, n, out);
                    } else {
                        let packed = pack_p::<$g>(rows, n, out).is_some();
                        debug_assert!(packed, "no −128 was left to refuse");
                    }
                };
            }
            match gn {
                4 => run!(4),
                3 => run!(3),
                2 => run!(2),
                _ => run!(1),
            }
        }
        o += 4 * gn;
    }
}

/// [`pack_in_place`] for `sdot` (installed only with `dotprod`).
pub(super) fn pack_conv1x1_i8(cout: usize, cin: usize, w: &mut [i8]) {
    pack_in_place::<SDOT>(cout, cin, w)
}

/// [`pack_in_place`] in product pairs (plain NEON).
pub(super) fn pack_conv1x1_i8_pairs(cout: usize, cin: usize, w: &mut [i8]) {
    pack_in_place::<PAIRS>(cout, cin, w)
}

/// `conv1x1_i8` on weights [`pack_in_place`] laid out at `select` in form `F`, bit-exact
/// to `reference::conv1x1::conv1x1_i8` on the rows; shapes it did not pack, and slices it
/// cannot check, go to the table's rows conv. `SDOT` installed only with `dotprod`.
fn prepacked<const F: u8>(
    g: &Geom,
    x: &[i8],
    zx: i32,
    w: &[i8],
    rq: &[[i32; 3]],
    q: OutQ,
    y: &mut [i8],
) {
    let (n, cout, npix) = (g.cin, g.cout, g.ho * g.wo);
    let fits = packs(n)
        && w.len() >= cout * n
        && rq.len() >= cout
        && y.len() >= npix * cout
        && (npix == 0 || x.len() >= src(g, npix - 1) + n);
    if !fits {
        return if F == SDOT {
            super::conv1x1::conv1x1_i8_sdot(g, x, zx, w, rq, q, y)
        } else {
            super::conv1x1::conv1x1_i8(g, x, zx, w, rq, q, y)
        };
    }
    // The reference's clamp panics on a floor above 127; the packed layout has no rows to
    // hand it, so say so here.
    assert!(q.lo <= 127, "output floor {} above 127", q.lo);
    let mut o = 0;
    while o + 4 <= cout {
        let gn = ((cout - o) / 4).min(4);
        let bp = w[o * n..(o + 4 * gn) * n].as_ptr();
        // SAFETY: `SDOT` only with dotprod (installed only with it), `PAIRS` blocks hold no
        // −128 (`pack_in_place`); `fits` bounds the block's reads of `w` (its `4·gn·n`
        // packed bytes at `bp`), `rq`, `x` and its writes to `y`.
        unsafe {
            macro_rules! run {
                ($g:literal) => {{
                    // A zero point of 0 (the engine folds it into cached tables) needs no
                    // `Σw`. (`block` does not see `zx`: when it did, LLVM copied the block
                    // for `zx = 0`, +22 KB of code.)
                    let c = if zx == 0 {
                        [vdupq_n_s32(0); $g]
                    } else if F == SDOT {
                        corr(sums::<$g>(bp, n), zx)
                    } else {
                        corr(sums_p::<$g>(bp, n), zx)
                    };
                    block::<F, $g>(g, x, rq, q, y, o, bp, c)
                }};
            }
            match gn {
                4 => run!(4),
                3 => run!(3),
                2 => run!(2),
                _ => run!(1),
            }
        }
        o += 4 * gn;
    }
    // The last `cout % 4` channels are rows.
    for oc in o..cout {
        let wr = &w[oc * n..][..n];
        for p in 0..npix {
            let a = crate::kernels::reference::conv1x1::dot_i8(wr, &x[src(g, p)..][..n], zx);
            y[p * cout + oc] = crate::quant::requant(a, rq[oc], q);
        }
    }
}

/// [`prepacked`] on the `sdot` layout (installed only with `dotprod`).
pub(super) fn conv1x1_i8_prepacked(
    g: &Geom,
    x: &[i8],
    zx: i32,
    w: &[i8],
    rq: &[[i32; 3]],
    q: OutQ,
    y: &mut [i8],
) {
    prepacked::<SDOT>(g, x, zx, w, rq, q, y)
}

/// [`prepacked`] on the product-pair layout (plain NEON).
pub(super) fn conv1x1_i8_prepacked_pairs(
    g: &Geom,
    x: &[i8],
    zx: i32,
    w: &[i8],
    rq: &[[i32; 3]],
    q: OutQ,
    y: &mut [i8],
) {
    prepacked::<PAIRS>(g, x, zx, w, rq, q, y)
}

/// Fewest output pixels for which the plain-NEON table lays rebuilt experts out as
/// product pairs at the switch (a 4-pixel tile's worth).
pub(super) const PAIRS_MIN_PIXELS: usize = 4;

/// Each group's `Σw` per channel from a block packed by [`pack_p`] at `wb` (`G·n / 4`
/// vectors): `SADALP` of byte pairs into i16 lanes `[c0 … c3, c0 … c3]` (at most 64
/// vectors of ±256 a lane), the halves added at the end — `pack_p`'s sums.
///
/// # Safety
/// `G·n / 4` vectors readable at `wb`, `n ≤ NMAX`.
#[inline(always)]
unsafe fn sums_p<const G: usize>(wb: *const i8, n: usize) -> [int32x4_t; G] {
    // SAFETY: vectors `j·G + gi < G·n / 4` at `wb` (this function's contract); NEON.
    unsafe {
        let mut s = [vdupq_n_s16(0); G];
        for j in 0..n / 4 {
            for (gi, s) in s.iter_mut().enumerate() {
                *s = vpadalq_s8(*s, vld1q_s8(wb.add(16 * (j * G + gi))));
            }
        }
        s.map(|v| vaddl_s16(vget_low_s16(v), vget_high_s16(v)))
    }
}

/// Each group's `Σw` per channel from a block packed by [`pack`] at `wb` (`G·n / 4`
/// vectors): one `sdot` with ones per vector.
///
/// # Safety
/// `dotprod`; `G·n / 4` vectors readable at `wb`.
#[inline(always)]
unsafe fn sums<const G: usize>(wb: *const i8, n: usize) -> [int32x4_t; G] {
    // SAFETY: vectors `j·G + gi < G·n / 4` at `wb` (this function's contract); dotprod.
    unsafe {
        let ones = vdupq_n_s8(1);
        let mut s = [vdupq_n_s32(0); G];
        for j in 0..n / 4 {
            for (gi, s) in s.iter_mut().enumerate() {
                *s = sdot::<0>(*s, vld1q_s8(wb.add(16 * (j * G + gi))), ones);
            }
        }
        s
    }
}

/// The zero point's term of the sums, `− zx·Σw` per channel, from the groups' `Σw`.
#[inline(always)]
fn corr<const G: usize>(wsum: [int32x4_t; G], zx: i32) -> [int32x4_t; G] {
    // SAFETY: NEON is baseline on this target (the module is cfg'd on it).
    wsum.map(|s| unsafe { vnegq_s32(vmulq_n_s32(s, zx)) })
}

/// [`block`]'s packings: [`pack`] (`sdot`), [`pack_p`] (product pairs), [`pack_h`] (widened).
const SDOT: u8 = 0;
const PAIRS: u8 = 1;
const WIDE: u8 = 2;

/// Channels `o .. o + 4·G` of every pixel in 4-pixel tiles, from the block packed at `wb`
/// in form `F` ([`SDOT`], [`PAIRS`] or [`WIDE`]); `corr` joins each group's biases (`−
/// zx·Σw`, [`corr`]).
///
/// # Safety
/// `F = SDOT` only with `dotprod`, `F = PAIRS` only on a block [`pack_p`] accepted; `wb`
/// holds the packed block; the slices hold what [`conv1x1_i8`]'s `fits` asks (`16 ≤ cin ≤
/// NMAX`, `cin % 4 = 0`, `q.lo ≤ 127`) and `o + 4·G ≤ cout`.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
unsafe fn block<const F: u8, const G: usize>(
    g: &Geom,
    x: &[i8],
    rq: &[[i32; 3]],
    q: OutQ,
    y: &mut [i8],
    o: usize,
    wb: *const i8,
    corr: [int32x4_t; G],
) {
    let (n, cout, npix) = (g.cin, g.cout, g.ho * g.wo);
    // One output row, or rows as wide as the input's (the pointwise convs at stride 1):
    // pixel `p` starts at `c_off + p·step`, with no walk to keep.
    let linear = g.ho == 1 || g.wo == g.w;
    let step = g.stride * g.in_stride;
    if F == SDOT && (G == 4 || G == 2) && linear && npix >= 4 && npix % 4 == 0 {
        // The usual blocks: whole tiles in one `asm!` loop ([`tiles_sdot`]), their output
        // constants straight from the rows when every channel has the short form.
        // SAFETY: NEON is baseline on this target; `rq` holds `cout ≥ o + 4·G` triples.
        if let Some((init, k)) = unsafe { Rq4::short_rows::<G>(&rq[o..], q, corr) } {
            // SAFETY: dotprod (`SDOT`, this function's contract); pixel `i < npix` starts
            // `c_off + i·step = src(i)` with `n` bytes in `x` (`fits`), its output channels
            // `o .. o + 4·G ≤ cout` lie in `y`; `wb` holds the `n / 4` packed groups of `G`
            // vectors.
            unsafe {
                tiles_sdot::<G>(
                    x.as_ptr().add(g.c_off),
                    step,
                    npix / 4,
                    n,
                    wb,
                    &init,
                    &k,
                    y.as_mut_ptr().add(o),
                    cout,
                )
            };
            return;
        }
    }
    let mut r: [Rq4; G] = core::array::from_fn(|gi| {
        // SAFETY: NEON is baseline on this target; `rq` holds `cout ≥ o + 4·G` triples.
        unsafe { Rq4::new(&rq[o + 4 * gi..], q).with_bias(corr[gi]) }
    });
    // The sums start from the bias (and zero-point term).
    // SAFETY: NEON is baseline on this target.
    let init: [int32x4_t; G] = core::array::from_fn(|gi| unsafe { r[gi].take_bias() });
    // SAFETY: as above.
    let short = unsafe { Rq4::all_short(&r) };
    // The next pixel's row start, walked without divisions: a step of `stride·in_stride`
    // along an output row, a jump at its end.
    let row = g.stride * g.w * g.in_stride;
    let (mut line, mut at, mut ox) = (g.c_off, g.c_off, 0);
    let mut next = || {
        let here = at;
        ox += 1;
        if ox == g.wo {
            (line, ox) = (line + row, 0);
            at = line;
        } else {
            at += step;
        }
        here
    };
    let (xp, yp) = (x.as_ptr(), y.as_mut_ptr());
    let mut p = 0;
    while p < npix {
        let np = 4.min(npix - p);
        // The tile's missing pixels repeat the last real one (their sums are unused).
        let xs: [*const i8; 4] = if linear {
            // SAFETY: `p + i < npix`, so `c_off + (p + i)·step = src(p + i) ≤ src(npix − 1)`,
            // and `x` holds `src(npix − 1) + n` bytes (`fits`).
            unsafe {
                let b = xp.add(g.c_off + p * step);
                let last = np - 1;
                core::array::from_fn(|i| b.add(i.min(last) * step))
            }
        } else {
            let mut a = [0; 4];
            for a in a.iter_mut().take(np) {
                *a = next();
            }
            // SAFETY: `a[i] = src(p + i) ≤ src(npix − 1)`, and `x` holds `src(npix − 1) + n`
            // bytes (`fits`).
            core::array::from_fn(|i| unsafe { xp.add(a[i.min(np - 1)]) })
        };
        // SAFETY: every row starts `n` readable bytes; `wb` holds the block packed in form
        // `F`, `SDOT` only with dotprod and `PAIRS` only without a −128 weight.
        let acc = unsafe {
            match F {
                SDOT => tile::<G>(xs, wb, n, init),
                PAIRS => tile_p::<G>(xs, wb, n, init),
                _ => tile_h::<G>(xs, wb as *const i16, n, init),
            }
        };
        // SAFETY: pixel `p + i < npix`, channels `o .. o + 4·G ≤ cout`: inside `y` (`fits`:
        // `npix·cout` bytes).
        let out = |i: usize| unsafe {
            core::slice::from_raw_parts_mut(yp.add((p + i) * cout + o), 4 * G)
        };
        if np == 4 {
            store::<G>(&r, short, &acc[0], out(0));
            store::<G>(&r, short, &acc[1], out(1));
            store::<G>(&r, short, &acc[2], out(2));
            store::<G>(&r, short, &acc[3], out(3));
        } else {
            for (i, a) in acc.iter().enumerate().take(np) {
                store::<G>(&r, short, a, out(i));
            }
        }
        p += np;
    }
}

/// One lane `L` of the 4 pixels' inputs `v16 .. v19` against the next 4 packed groups at
/// `{wp}` (two `ldp`s, post-incremented): pixel `i`'s group `g` sums in `v(4i + g)`.
#[rustfmt::skip]
macro_rules! sdot16_lane {
    ($l:literal) => {
        concat!(
            "ldp q20, q21, [{wp}], #32\n",
            "sdot v0.4s, v20.16b, v16.4b[", $l, "]\n",
            "sdot v4.4s, v20.16b, v17.4b[", $l, "]\n",
            "sdot v8.4s, v20.16b, v18.4b[", $l, "]\n",
            "sdot v12.4s, v20.16b, v19.4b[", $l, "]\n",
            "sdot v1.4s, v21.16b, v16.4b[", $l, "]\n",
            "sdot v5.4s, v21.16b, v17.4b[", $l, "]\n",
            "sdot v9.4s, v21.16b, v18.4b[", $l, "]\n",
            "sdot v13.4s, v21.16b, v19.4b[", $l, "]\n",
            "ldp q20, q21, [{wp}], #32\n",
            "sdot v2.4s, v20.16b, v16.4b[", $l, "]\n",
            "sdot v6.4s, v20.16b, v17.4b[", $l, "]\n",
            "sdot v10.4s, v20.16b, v18.4b[", $l, "]\n",
            "sdot v14.4s, v20.16b, v19.4b[", $l, "]\n",
            "sdot v3.4s, v21.16b, v16.4b[", $l, "]\n",
            "sdot v7.4s, v21.16b, v17.4b[", $l, "]\n",
            "sdot v11.4s, v21.16b, v18.4b[", $l, "]\n",
            "sdot v15.4s, v21.16b, v19.4b[", $l, "]\n",
        )
    };
}

/// [`sdot16_lane`] for 2 groups (8 channels): pixel `i`'s group `g` sums in `v(2i + g)`.
#[rustfmt::skip]
macro_rules! sdot8_lane {
    ($l:literal) => {
        concat!(
            "ldp q20, q21, [{wp}], #32\n",
            "sdot v0.4s, v20.16b, v16.4b[", $l, "]\n",
            "sdot v2.4s, v20.16b, v17.4b[", $l, "]\n",
            "sdot v4.4s, v20.16b, v18.4b[", $l, "]\n",
            "sdot v6.4s, v20.16b, v19.4b[", $l, "]\n",
            "sdot v1.4s, v21.16b, v16.4b[", $l, "]\n",
            "sdot v3.4s, v21.16b, v17.4b[", $l, "]\n",
            "sdot v5.4s, v21.16b, v18.4b[", $l, "]\n",
            "sdot v7.4s, v21.16b, v19.4b[", $l, "]\n",
        )
    };
}

/// The 4 pixels' next 16 bytes at `[{pi}, #OFF]` into `v16 .. v19` (`ldur`: a tail
/// reloads the row's last 16 bytes).
#[rustfmt::skip]
macro_rules! sdot_load {
    ($off:literal) => {
        concat!(
            "ldur q16, [{p0}, #", $off, "]\n",
            "ldur q17, [{p1}, #", $off, "]\n",
            "ldur q18, [{p2}, #", $off, "]\n",
            "ldur q19, [{p3}, #", $off, "]\n",
        )
    };
}

/// The short output stage ([`Rq4::apply16_short`]) of one pixel's 16 sums `va .. vd`
/// (groups 0..4; constants: multipliers `v22 .. v25`, `−shift`s `v26 .. v29`, the zero point
/// in i16 lanes `v30`, `lo` in bytes `v31`), stored at `{yp}`, which moves on by `{cout}`.
#[rustfmt::skip]
macro_rules! sdot16_out {
    ($a:literal, $b:literal, $c:literal, $d:literal) => {
        concat!(
            "sqrdmulh v", $a, ".4s, v", $a, ".4s, v22.4s\n",
            "sqrdmulh v", $b, ".4s, v", $b, ".4s, v23.4s\n",
            "sqrdmulh v", $c, ".4s, v", $c, ".4s, v24.4s\n",
            "sqrdmulh v", $d, ".4s, v", $d, ".4s, v25.4s\n",
            "ssra v", $a, ".4s, v", $a, ".4s, #31\n",
            "ssra v", $b, ".4s, v", $b, ".4s, #31\n",
            "ssra v", $c, ".4s, v", $c, ".4s, #31\n",
            "ssra v", $d, ".4s, v", $d, ".4s, #31\n",
            "srshl v", $a, ".4s, v", $a, ".4s, v26.4s\n",
            "srshl v", $b, ".4s, v", $b, ".4s, v27.4s\n",
            "srshl v", $c, ".4s, v", $c, ".4s, v28.4s\n",
            "srshl v", $d, ".4s, v", $d, ".4s, v29.4s\n",
            "sqxtn v", $a, ".4h, v", $a, ".4s\n",
            "sqxtn2 v", $a, ".8h, v", $b, ".4s\n",
            "sqxtn v", $c, ".4h, v", $c, ".4s\n",
            "sqxtn2 v", $c, ".8h, v", $d, ".4s\n",
            "sqadd v", $a, ".8h, v", $a, ".8h, v30.8h\n",
            "sqadd v", $c, ".8h, v", $c, ".8h, v30.8h\n",
            "sqxtn v", $a, ".8b, v", $a, ".8h\n",
            "sqxtn2 v", $a, ".16b, v", $c, ".8h\n",
            "smax v", $a, ".16b, v", $a, ".16b, v31.16b\n",
            "st1 {{v", $a, ".16b}}, [{yp}], {cout}\n",
        )
    };
}

/// [`sdot16_out`] for 8 channels (`va`, `vb`; multipliers `v22, v23`, `−shift`s `v26,
/// v27`), as [`Rq4::apply8_short`]: 8 bytes at `{yp}`.
#[rustfmt::skip]
macro_rules! sdot8_out {
    ($a:literal, $b:literal) => {
        concat!(
            "sqrdmulh v", $a, ".4s, v", $a, ".4s, v22.4s\n",
            "sqrdmulh v", $b, ".4s, v", $b, ".4s, v23.4s\n",
            "ssra v", $a, ".4s, v", $a, ".4s, #31\n",
            "ssra v", $b, ".4s, v", $b, ".4s, #31\n",
            "srshl v", $a, ".4s, v", $a, ".4s, v26.4s\n",
            "srshl v", $b, ".4s, v", $b, ".4s, v27.4s\n",
            "sqxtn v", $a, ".4h, v", $a, ".4s\n",
            "sqxtn2 v", $a, ".8h, v", $b, ".4s\n",
            "sqadd v", $a, ".8h, v", $a, ".8h, v30.8h\n",
            "sqxtn v", $a, ".8b, v", $a, ".8h\n",
            "smax v", $a, ".8b, v", $a, ".8b, v31.8b\n",
            "st1 {{v", $a, ".8b}}, [{yp}], {cout}\n",
        )
    };
}

/// The tile loop of [`tiles_sdot`] around a block width's sum starts (`$init`), lane
/// step (`$lane`) and output stages (`$out`).
macro_rules! sdot_tiles {
    ($init:expr, $lane:ident, $out:expr, $($operands:tt)*) => {
        core::arch::asm!(
            ".arch_extension dotprod",
            "2:",
            $init,
            "mov {p0}, {xb}",
            "add {p1}, {xb}, {step}",
            "add {p2}, {p1}, {step}",
            "add {p3}, {p2}, {step}",
            "mov {wp}, {wb}",
            "mov {cnt}, {n16}",
            "3:",
            "ldr q16, [{p0}], #16",
            "ldr q17, [{p1}], #16",
            "ldr q18, [{p2}], #16",
            "ldr q19, [{p3}], #16",
            $lane!(0),
            $lane!(1),
            $lane!(2),
            $lane!(3),
            "subs {cnt}, {cnt}, #1",
            "b.ne 3b",
            // The tail: `left` groups of 4 bytes, the last lanes of the row's last 16.
            "cbz {left}, 7f",
            "cmp {left}, #2",
            "b.eq 5f",
            "b.hi 6f",
            sdot_load!("-12"),
            $lane!(3),
            "b 7f",
            "5:",
            sdot_load!("-8"),
            $lane!(2),
            $lane!(3),
            "b 7f",
            "6:",
            sdot_load!("-4"),
            $lane!(1),
            $lane!(2),
            $lane!(3),
            "7:",
            $out,
            "add {xb}, {xb}, {step4}",
            "subs {tiles}, {tiles}, #1",
            "b.ne 2b",
            $($operands)*
        )
    };
}

/// `tiles` whole tiles of 4 pixels × `4·G` channels (`G` = 4 or 2) in one `asm!` loop, for
/// a block whose groups all take the short output stage: pixel `i` reads `n` bytes at `x +
/// i·step`; the sums start from `init` (an `ld1` a pixel), each 16-byte step is 4 `ldr`s,
/// `2·G` `ldp`s and `16·G` `sdot`s, a row tail (4, 8 or 12 bytes) reloads the row's last
/// 16 bytes for its last lanes, and each pixel's `4·G` bytes leave through [`sdot16_out`]
/// ([`sdot8_out`]) to `y + i·cout`. Written as intrinsics, LLVM kept the output constants
/// on the stack and spent ~170 instructions a tile around the `sdot`s.
///
/// # Safety
/// `dotprod`; `G` is 4 or 2; `tiles ≥ 1`; `16 ≤ n ≤ NMAX`, `n % 4 = 0`; pixel `i < 4·tiles`
/// has `n` readable bytes at `x + i·step` and `4·G` writable at `y + i·cout`; `wb` holds the
/// block packed by [`pack`] (`n / 4` groups of `G` vectors); `k` is [`Rq4::short_rows`]'.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
unsafe fn tiles_sdot<const G: usize>(
    x: *const i8,
    step: usize,
    tiles: usize,
    n: usize,
    wb: *const i8,
    init: &[int32x4_t; G],
    k: &[int32x4_t; 10],
    y: *mut i8,
    cout: usize,
) {
    // SAFETY: the loads read pixel `i`'s bytes `0 .. n` (the tail's `ldur` at `n − 16`),
    // the `n / 4` packed groups at `wb` and the `16·G` bytes of `init`; the stores write
    // `4·G` bytes at `y + i·cout` for `i < 4·tiles` — all within this function's contract;
    // dotprod by it too. Every vector register it writes is an output or clobber.
    unsafe {
        if G == 4 {
            sdot_tiles!(
                concat!(
                    "ld1 {{v0.4s-v3.4s}}, [{ip}]\n",
                    "ld1 {{v4.4s-v7.4s}}, [{ip}]\n",
                    "ld1 {{v8.4s-v11.4s}}, [{ip}]\n",
                    "ld1 {{v12.4s-v15.4s}}, [{ip}]\n",
                ),
                sdot16_lane,
                concat!(
                    sdot16_out!(0, 1, 2, 3),
                    sdot16_out!(4, 5, 6, 7),
                    sdot16_out!(8, 9, 10, 11),
                    sdot16_out!(12, 13, 14, 15),
                ),
                xb = inout(reg) x => _,
                tiles = inout(reg) tiles => _,
                yp = inout(reg) y => _,
                step = in(reg) step,
                step4 = in(reg) 4 * step,
                n16 = in(reg) n / 16,
                left = in(reg) n % 16 / 4,
                wb = in(reg) wb,
                ip = in(reg) init.as_ptr(),
                cout = in(reg) cout,
                p0 = out(reg) _,
                p1 = out(reg) _,
                p2 = out(reg) _,
                p3 = out(reg) _,
                wp = out(reg) _,
                cnt = out(reg) _,
                in("v22") k[0],
                in("v23") k[1],
                in("v24") k[2],
                in("v25") k[3],
                in("v26") k[4],
                in("v27") k[5],
                in("v28") k[6],
                in("v29") k[7],
                in("v30") k[8],
                in("v31") k[9],
                out("v0") _,
                out("v1") _,
                out("v2") _,
                out("v3") _,
                out("v4") _,
                out("v5") _,
                out("v6") _,
                out("v7") _,
                out("v8") _,
                out("v9") _,
                out("v10") _,
                out("v11") _,
                out("v12") _,
                out("v13") _,
                out("v14") _,
                out("v15") _,
                out("v16") _,
                out("v17") _,
                out("v18") _,
                out("v19") _,
                out("v20") _,
                out("v21") _,
                options(nostack),
            );
        } else {
            sdot_tiles!(
                concat!(
                    "ld1 {{v0.4s-v1.4s}}, [{ip}]\n",
                    "ld1 {{v2.4s-v3.4s}}, [{ip}]\n",
                    "ld1 {{v4.4s-v5.4s}}, [{ip}]\n",
                    "ld1 {{v6.4s-v7.4s}}, [{ip}]\n",
                ),
                sdot8_lane,
                concat!(
                    sdot8_out!(0, 1),
                    sdot8_out!(2, 3),
                    sdot8_out!(4, 5),
                    sdot8_out!(6, 7),
                ),
                xb = inout(reg) x => _,
                tiles = inout(reg) tiles => _,
                yp = inout(reg) y => _,
                step = in(reg) step,
                step4 = in(reg) 4 * step,
                n16 = in(reg) n / 16,
                left = in(reg) n % 16 / 4,
                wb = in(reg) wb,
                ip = in(reg) init.as_ptr(),
                cout = in(reg) cout,
                p0 = out(reg) _,
                p1 = out(reg) _,
                p2 = out(reg) _,
                p3 = out(reg) _,
                wp = out(reg) _,
                cnt = out(reg) _,
                in("v22") k[0],
                in("v23") k[1],
                in("v26") k[4],
                in("v27") k[5],
                in("v30") k[8],
                in("v31") k[9],
                out("v0") _,
                out("v1") _,
                out("v2") _,
                out("v3") _,
                out("v4") _,
                out("v5") _,
                out("v6") _,
                out("v7") _,
                out("v16") _,
                out("v17") _,
                out("v18") _,
                out("v19") _,
                out("v20") _,
                out("v21") _,
                options(nostack),
            );
        }
    }
}

/// Packs `w`'s `4·G` rows of `n` bytes at `out` (`[n / 4][G][16]`) and returns each
/// group's `Σw` per channel.
///
/// # Safety
/// `dotprod`; `w` holds `4·G·n` bytes, `16 ≤ n ≤ NMAX`, `n % 4 = 0`; `out` has room for
/// `G·n / 4` vectors.
#[inline(always)]
unsafe fn pack<const G: usize>(w: &[i8], n: usize, out: *mut int8x16_t) -> [int32x4_t; G] {
    let w = &w[..4 * G * n];
    let ones = vdupq_n_s8(1);
    let mut sums = [vdupq_n_s32(0); G];
    for (gi, s) in sums.iter_mut().enumerate() {
        // SAFETY (the loop): loads of 16 bytes at `at + 16 ≤ n` of the group's 4 rows (`w`
        // holds `4·G·n`); stores at `j·G + gi < (n / 4)·G` (room at `out`); dotprod.
        unsafe {
            let r = w.as_ptr().add(4 * gi * n);
            let load = |at: usize| transpose(core::array::from_fn(|c| vld1q_s8(r.add(c * n + at))));
            let mut k = 0;
            while k + 16 <= n {
                for (jj, v) in load(k).into_iter().enumerate() {
                    vst1q_s8(out.add((k / 4 + jj) * G + gi) as *mut i8, v);
                    *s = sdot::<0>(*s, v, ones);
                }
                k += 16;
            }
            if k < n {
                // A row tail: the row's last 16 bytes; their first groups are packed.
                let t = load(n - 16);
                for jj in 4 - (n - k) / 4..4 {
                    vst1q_s8(out.add((n / 4 - 4 + jj) * G + gi) as *mut i8, t[jj]);
                    *s = sdot::<0>(*s, t[jj], ones);
                }
            }
        }
    }
    sums
}

/// 4 channels' rows of 8 halfwords interleaved by halfword pairs: `out[m]` is
/// `[r0[2m], r1[2m], r2[2m], r3[2m], r0[2m + 1], …, r3[2m + 1]]` — what both plain-NEON
/// packings store ([`pack_p`]: each halfword two raw weight bytes; [`pack_h`]: one widened
/// weight).
#[inline(always)]
fn zip4_s16(rows: [int16x8_t; 4]) -> [int16x8_t; 4] {
    // SAFETY: NEON is baseline on this target (the module is cfg'd on it).
    unsafe {
        let [a, b, c, d] = rows;
        let (ab0, ab1) = (vzip1q_s16(a, b), vzip2q_s16(a, b));
        let (cd0, cd1) = (vzip1q_s16(c, d), vzip2q_s16(c, d));
        let z = |u: int16x8_t, v: int16x8_t, hi: bool| {
            let (u, v) = (vreinterpretq_s32_s16(u), vreinterpretq_s32_s16(v));
            vreinterpretq_s16_s32(if hi {
                vzip2q_s32(u, v)
            } else {
                vzip1q_s32(u, v)
            })
        };
        [
            z(ab0, cd0, false),
            z(ab0, cd0, true),
            z(ab1, cd1, false),
            z(ab1, cd1, true),
        ]
    }
}

/// The 4×4 transpose of u32: `out[j]` lane `c` is `rows[c]` lane `j` (channel `c`'s bytes
/// `4j .. 4j + 4`).
#[inline(always)]
fn transpose(rows: [int8x16_t; 4]) -> [int8x16_t; 4] {
    // SAFETY: NEON is baseline on this target (the module is cfg'd on it).
    unsafe {
        let [a, b, c, d] = rows.map(|r| vreinterpretq_s32_s8(r));
        let (ab1, ab2) = (vtrn1q_s32(a, b), vtrn2q_s32(a, b));
        let (cd1, cd2) = (vtrn1q_s32(c, d), vtrn2q_s32(c, d));
        let h = |u: int32x4_t, v: int32x4_t, hi: bool| {
            let (u, v) = (vreinterpretq_s64_s32(u), vreinterpretq_s64_s32(v));
            vreinterpretq_s8_s64(if hi {
                vtrn2q_s64(u, v)
            } else {
                vtrn1q_s64(u, v)
            })
        };
        [
            h(ab1, cd1, false),
            h(ab2, cd2, false),
            h(ab1, cd1, true),
            h(ab2, cd2, true),
        ]
    }
}

/// `acc + ` lane-wise `Σ_{b<4} a[4l + b]·x[4L + b]` (one `sdot` by element).
///
/// # Safety
/// The CPU has `dotprod`.
#[inline(always)]
unsafe fn sdot<const L: i32>(acc: int32x4_t, a: int8x16_t, x: int8x16_t) -> int32x4_t {
    let mut acc = acc;
    // `vdotq_laneq_s32` is not stable Rust; the instruction is one `asm!` line (assembled
    // whatever the build's features; executed only when the caller guarantees dotprod).
    // SAFETY: `sdot` reads and writes only these registers; the caller guarantees dotprod.
    unsafe {
        core::arch::asm!(
            ".arch_extension dotprod",
            "sdot {acc:v}.4s, {a:v}.16b, {x:v}.4b[{l}]",
            acc = inout(vreg) acc,
            a = in(vreg) a,
            x = in(vreg) x,
            l = const L,
            options(pure, nomem, nostack, preserves_flags),
        );
    }
    acc
}

/// Group `L` of 16 input bytes against the packed groups at `wb` (`G` vectors) for 4 pixels.
///
/// # Safety
/// `dotprod`; `wb` points at `G` packed vectors.
#[inline(always)]
unsafe fn step<const L: i32, const G: usize>(
    acc: &mut [[int32x4_t; G]; 4],
    wb: *const i8,
    xv: &[int8x16_t; 4],
) {
    for gi in 0..G {
        // SAFETY: `gi < G` vectors at `wb` (this function's contract; any alignment);
        // dotprod.
        unsafe {
            let wv = vld1q_s8(wb.add(16 * gi));
            for i in 0..4 {
                acc[i][gi] = sdot::<L>(acc[i][gi], wv, xv[i]);
            }
        }
    }
}

/// `init + ` the exact `Σ_k w[c][k]·x_i[k]` for 4 pixels × `4·G` channels (`[pixel][group]`,
/// lanes = channels).
///
/// # Safety
/// `dotprod`; every row pointer starts `n` readable bytes (`16 ≤ n ≤ NMAX`, `n % 4 = 0`);
/// `wb` holds the block packed by [`pack`].
#[inline(always)]
unsafe fn tile<const G: usize>(
    xs: [*const i8; 4],
    wb: *const i8,
    n: usize,
    init: [int32x4_t; G],
) -> [[int32x4_t; G]; 4] {
    // SAFETY (the whole body): loads at `k + 16 ≤ n` of each row; packed groups `j < n / 4`
    // at `wb`; dotprod — all by this function's contract.
    unsafe {
        let mut acc = [init; 4];
        let mut k = 0;
        while k + 16 <= n {
            let xv = xs.map(|r| vld1q_s8(r.add(k)));
            let wj = wb.add(16 * (k / 4 * G));
            step::<0, G>(&mut acc, wj, &xv);
            step::<1, G>(&mut acc, wj.add(16 * G), &xv);
            step::<2, G>(&mut acc, wj.add(32 * G), &xv);
            step::<3, G>(&mut acc, wj.add(48 * G), &xv);
            k += 16;
        }
        if k < n {
            // 4, 8 or 12 bytes left: the row's last 16 bytes, their last groups.
            let xv = xs.map(|r| vld1q_s8(r.add(n - 16)));
            let wj = wb.add(16 * ((n / 4 - 4) * G));
            let left = (n - k) / 4;
            if left == 3 {
                step::<1, G>(&mut acc, wj.add(16 * G), &xv);
            }
            if left >= 2 {
                step::<2, G>(&mut acc, wj.add(32 * G), &xv);
            }
            step::<3, G>(&mut acc, wj.add(48 * G), &xv);
        }
        acc
    }
}

/// Packs `w`'s `4·G` rows of `n` bytes at `out` in the product-pair form (`[n / 4][G][16]`,
/// see the module doc) and returns each group's `Σw` per channel; `None` (with `out`
/// partly written) when a weight is −128, whose two products could overflow an i16 lane.
///
/// # Safety
/// `w` holds `4·G·n` bytes, `16 ≤ n ≤ NMAX`, `n % 4 = 0`; `out` has room for `G·n / 4`
/// vectors.
#[inline(always)]
unsafe fn pack_p<const G: usize>(
    w: &[i8],
    n: usize,
    out: *mut int8x16_t,
) -> Option<[int32x4_t; G]> {
    let w = &w[..4 * G * n];
    let mut sums = [vdupq_n_s32(0); G];
    // SAFETY: NEON is baseline on this target.
    let (min, mut bad) = unsafe { (vdupq_n_s8(-128), vdupq_n_u8(0)) };
    for (gi, s) in sums.iter_mut().enumerate() {
        // SAFETY (the loop): loads of 16 bytes at `at + 16 ≤ n` of the group's 4 rows (`w`
        // holds `4·G·n`); stores at `j·G + gi < (n / 4)·G` (room at `out`); NEON baseline.
        unsafe {
            let r = w.as_ptr().add(4 * gi * n);
            // The 4 input groups of 16 bytes at `at`: 16-bit pairs zipped channel by channel.
            let load = |at: usize| {
                let rows =
                    core::array::from_fn(|ch| vreinterpretq_s16_s8(vld1q_s8(r.add(ch * n + at))));
                zip4_s16(rows).map(|v| vreinterpretq_s8_s16(v))
            };
            // `Σw` in i16 lanes `[c0 … c3, c0 … c3]` (pairs of bytes; at most 64 vectors of
            // ±256 a lane), added across halves at the end.
            let mut s16 = vdupq_n_s16(0);
            let mut put = |j: usize, v: int8x16_t| {
                vst1q_s8(out.add(j * G + gi) as *mut i8, v);
                s16 = vpadalq_s8(s16, v);
                bad = vorrq_u8(bad, vceqq_s8(v, min));
            };
            let mut k = 0;
            while k + 16 <= n {
                for (jj, v) in load(k).into_iter().enumerate() {
                    put(k / 4 + jj, v);
                }
                k += 16;
            }
            if k < n {
                // A row tail: the row's last 16 bytes; their last groups are packed.
                let t = load(n - 16);
                for jj in 4 - (n - k) / 4..4 {
                    put(n / 4 - 4 + jj, t[jj]);
                }
            }
            *s = vaddl_s16(vget_low_s16(s16), vget_high_s16(s16));
        }
    }
    // SAFETY: NEON is baseline on this target.
    (unsafe { vmaxvq_u8(bad) } == 0).then_some(sums)
}

/// Byte indices of [`tile_p`]'s `tbl`: input group `m`'s pair `(4m, 4m + 1)` in every
/// 16-bit lane of the low half, `(4m + 2, 4m + 3)` in the high half.
const PAIR_IDX: [[u8; 16]; 4] = {
    let mut t = [[0u8; 16]; 4];
    let mut m = 0;
    while m < 4 {
        let mut l = 0;
        while l < 16 {
            t[m][l] = (4 * m + (l & 1) + if l < 8 { 0 } else { 2 }) as u8;
            l += 1;
        }
        m += 1;
    }
    t
};

/// Input group `M` (bytes `4M .. 4M + 4` of `xv`) against the packed groups at `wj` (`G`
/// vectors) for 4 pixels: `smull` + `smlal2` (two products a lane) + `sadalp`.
///
/// # Safety
/// `wj` points at `G` vectors packed by [`pack_p`] (no −128 weight).
#[inline(always)]
unsafe fn step_p<const M: usize, const G: usize>(
    acc: &mut [[int32x4_t; G]; 4],
    wj: *const i8,
    xv: &[int8x16_t; 4],
) {
    // SAFETY: NEON is baseline; `PAIR_IDX[M]` holds 16 bytes.
    let idx = unsafe { vld1q_u8(PAIR_IDX[M].as_ptr()) };
    let xg = xv.map(|v| vqtbl1q_s8(v, idx));
    for gi in 0..G {
        // SAFETY: `gi < G` vectors at `wj` (this function's contract; any alignment).
        let wv = unsafe { vld1q_s8(wj.add(16 * gi)) };
        for i in 0..4 {
            // No weight is −128, so each i16 lane's two products stay within ±32512.
            let t = vmlal_high_s8(vmull_s8(vget_low_s8(wv), vget_low_s8(xg[i])), wv, xg[i]);
            acc[i][gi] = vpadalq_s16(acc[i][gi], t);
        }
    }
}

/// [`tile`] on the product-pair packing of [`pack_p`]: `init + ` the exact sums for 4 pixels
/// × `4·G` channels.
///
/// # Safety
/// Every row pointer starts `n` readable bytes (`16 ≤ n ≤ NMAX`, `n % 4 = 0`); `wb` holds
/// the block packed by [`pack_p`], which accepted it (no −128 weight).
#[inline(always)]
unsafe fn tile_p<const G: usize>(
    xs: [*const i8; 4],
    wb: *const i8,
    n: usize,
    init: [int32x4_t; G],
) -> [[int32x4_t; G]; 4] {
    if G == 4 {
        // SAFETY: this function's contract, with `G = 4` (so the conversions are the
        // identity).
        let a = unsafe { tile_p4(xs, wb, n, core::array::from_fn(|g| init[g % G])) };
        return a.map(|a| core::array::from_fn(|g| a[g % 4]));
    }
    let mut acc = [init; 4];
    // SAFETY (the whole body): loads at `k + 16 ≤ n` of each row; packed groups `j < n / 4`
    // at `wb` — by this function's contract.
    unsafe {
        let wj = |j: usize| wb.add(16 * j * G);
        let mut k = 0;
        while k + 16 <= n {
            let xv = xs.map(|r| vld1q_s8(r.add(k)));
            step_p::<0, G>(&mut acc, wj(k / 4), &xv);
            step_p::<1, G>(&mut acc, wj(k / 4 + 1), &xv);
            step_p::<2, G>(&mut acc, wj(k / 4 + 2), &xv);
            step_p::<3, G>(&mut acc, wj(k / 4 + 3), &xv);
            k += 16;
        }
        if k < n {
            // 4, 8 or 12 bytes left: the row's last 16 bytes, their last groups.
            let xv = xs.map(|r| vld1q_s8(r.add(n - 16)));
            let j0 = n / 4 - 4;
            let left = (n - k) / 4;
            if left == 3 {
                step_p::<1, G>(&mut acc, wj(j0 + 1), &xv);
            }
            if left >= 2 {
                step_p::<2, G>(&mut acc, wj(j0 + 2), &xv);
            }
            step_p::<3, G>(&mut acc, wj(j0 + 3), &xv);
        }
    }
    acc
}

/// One group of 4 channels (`G = 4`, its packed vector in register `w`) for the 4 pixels'
/// paired inputs `g0 .. g3`: `smull` + `smlal2` + `sadalp` each, into `a0 .. a3`.
#[rustfmt::skip]
macro_rules! pairs_group {
    ($w:literal, $a0:literal, $a1:literal, $a2:literal, $a3:literal) => {
        concat!(
            "smull {t0:v}.8h, {", $w, ":v}.8b, {g0:v}.8b\n",
            "smlal2 {t0:v}.8h, {", $w, ":v}.16b, {g0:v}.16b\n",
            "smull {t1:v}.8h, {", $w, ":v}.8b, {g1:v}.8b\n",
            "smlal2 {t1:v}.8h, {", $w, ":v}.16b, {g1:v}.16b\n",
            "sadalp {", $a0, ":v}.4s, {t0:v}.8h\n",
            "sadalp {", $a1, ":v}.4s, {t1:v}.8h\n",
            "smull {t0:v}.8h, {", $w, ":v}.8b, {g2:v}.8b\n",
            "smlal2 {t0:v}.8h, {", $w, ":v}.16b, {g2:v}.16b\n",
            "smull {t1:v}.8h, {", $w, ":v}.8b, {g3:v}.8b\n",
            "smlal2 {t1:v}.8h, {", $w, ":v}.16b, {g3:v}.16b\n",
            "sadalp {", $a2, ":v}.4s, {t0:v}.8h\n",
            "sadalp {", $a3, ":v}.4s, {t1:v}.8h\n",
        )
    };
}

/// Input group `M` (`idx` = `PAIR_IDX[M]`) of the 4 pixels' 16 bytes `x0 .. x3` against
/// the 4 packed groups at `[wp, #64·M]` (`lo`: `64·M`, `hi`: `64·M + 32`), loaded two at a
/// time (`ldp`).
#[rustfmt::skip]
macro_rules! pairs_m {
    ($idx:literal, $lo:literal, $hi:literal) => {
        concat!(
            "tbl {g0:v}.16b, {{{x0:v}.16b}}, {", $idx, ":v}.16b\n",
            "tbl {g1:v}.16b, {{{x1:v}.16b}}, {", $idx, ":v}.16b\n",
            "tbl {g2:v}.16b, {{{x2:v}.16b}}, {", $idx, ":v}.16b\n",
            "tbl {g3:v}.16b, {{{x3:v}.16b}}, {", $idx, ":v}.16b\n",
            "ldp {w0:q}, {w1:q}, [{wp}, #", $lo, "]\n",
            pairs_group!("w0", "a00", "a10", "a20", "a30"),
            pairs_group!("w1", "a01", "a11", "a21", "a31"),
            "ldp {w0:q}, {w1:q}, [{wp}, #", $hi, "]\n",
            pairs_group!("w0", "a02", "a12", "a22", "a32"),
            pairs_group!("w1", "a03", "a13", "a23", "a33"),
        )
    };
}

/// The input groups `M` of one 16-byte step as one `asm!` block (`pairs_m!` for each), so
/// the 16 sums, 4 inputs, 4 indices and 8 temporaries (all 32 vector registers) stay in
/// registers: written as intrinsics, LLVM schedules the products of several groups at once
/// and spills the sums.
macro_rules! pairs_step {
    ($acc:ident, $xv:ident, $wp:expr, [$($i:ident = $iv:expr),*], $($m:tt)*) => {
        core::arch::asm!(
            $($m)*
            wp = in(reg) $wp,
            $($i = in(vreg) $iv,)*
            x0 = in(vreg) $xv[0],
            x1 = in(vreg) $xv[1],
            x2 = in(vreg) $xv[2],
            x3 = in(vreg) $xv[3],
            a00 = inout(vreg) $acc[0][0],
            a01 = inout(vreg) $acc[0][1],
            a02 = inout(vreg) $acc[0][2],
            a03 = inout(vreg) $acc[0][3],
            a10 = inout(vreg) $acc[1][0],
            a11 = inout(vreg) $acc[1][1],
            a12 = inout(vreg) $acc[1][2],
            a13 = inout(vreg) $acc[1][3],
            a20 = inout(vreg) $acc[2][0],
            a21 = inout(vreg) $acc[2][1],
            a22 = inout(vreg) $acc[2][2],
            a23 = inout(vreg) $acc[2][3],
            a30 = inout(vreg) $acc[3][0],
            a31 = inout(vreg) $acc[3][1],
            a32 = inout(vreg) $acc[3][2],
            a33 = inout(vreg) $acc[3][3],
            g0 = out(vreg) _,
            g1 = out(vreg) _,
            g2 = out(vreg) _,
            g3 = out(vreg) _,
            w0 = out(vreg) _,
            w1 = out(vreg) _,
            t0 = out(vreg) _,
            t1 = out(vreg) _,
            options(pure, readonly, nostack, preserves_flags),
        )
    };
}

/// [`tile_p`] for 16 channels (`G = 4`, the usual block): each 16-byte step one
/// [`pairs_step`] — per input group 4 `tbl`, 2 weight `ldp`s and 48 products (`smull` +
/// `smlal2` + `sadalp` per 16 MACs).
///
/// # Safety
/// [`tile_p`]'s, with `G = 4`.
#[inline(always)]
unsafe fn tile_p4(
    xs: [*const i8; 4],
    wb: *const i8,
    n: usize,
    init: [int32x4_t; 4],
) -> [[int32x4_t; 4]; 4] {
    let mut acc = [init; 4];
    // SAFETY (the whole body): loads at `k + 16 ≤ n` of each row; the packed groups `j <
    // n / 4` at `wb` (`64·j` bytes on, 64 bytes each) that each step reads — by this
    // function's contract; the `asm!` blocks read only those 256 (or the tail's last 64·M)
    // bytes and write only their register operands.
    unsafe {
        let idx: [uint8x16_t; 4] = core::array::from_fn(|m| vld1q_u8(PAIR_IDX[m].as_ptr()));
        let mut k = 0;
        while k + 16 <= n {
            let xv = xs.map(|r| vld1q_s8(r.add(k)));
            pairs_step!(
                acc,
                xv,
                wb.add(16 * k),
                [i0 = idx[0], i1 = idx[1], i2 = idx[2], i3 = idx[3]],
                pairs_m!("i0", "0", "32"),
                pairs_m!("i1", "64", "96"),
                pairs_m!("i2", "128", "160"),
                pairs_m!("i3", "192", "224"),
            );
            k += 16;
        }
        if k < n {
            // 4, 8 or 12 bytes left: the row's last 16 bytes, their last groups (the
            // weights of the row's last 16 bytes start at group `n / 4 − 4`).
            let xv = xs.map(|r| vld1q_s8(r.add(n - 16)));
            let wj = wb.add(16 * (n - 16));
            match (n - k) / 4 {
                3 => pairs_step!(
                    acc,
                    xv,
                    wj,
                    [i1 = idx[1], i2 = idx[2], i3 = idx[3]],
                    pairs_m!("i1", "64", "96"),
                    pairs_m!("i2", "128", "160"),
                    pairs_m!("i3", "192", "224"),
                ),
                2 => pairs_step!(
                    acc,
                    xv,
                    wj,
                    [i2 = idx[2], i3 = idx[3]],
                    pairs_m!("i2", "128", "160"),
                    pairs_m!("i3", "192", "224"),
                ),
                _ => pairs_step!(acc, xv, wj, [i3 = idx[3]], pairs_m!("i3", "192", "224"),),
            }
        }
    }
    acc
}

/// Packs `w`'s `4·G` rows of `n` bytes widened at `out` (as i16 `[n][G][4]`) and returns
/// each group's `Σw` per channel.
///
/// # Safety
/// `w` holds `4·G·n` bytes, `16 ≤ n ≤ NMAX`, `n % 4 = 0`; `out` has room for `4·G·n`
/// halfwords.
#[inline(always)]
unsafe fn pack_h<const G: usize>(w: &[i8], n: usize, out: *mut i16) -> [int32x4_t; G] {
    let w = &w[..4 * G * n];
    let mut sums = [vdupq_n_s32(0); G];
    for (gi, s) in sums.iter_mut().enumerate() {
        // SAFETY (the loop): loads of 8 bytes at `at + 8 ≤ n` of the group's 4 rows (`w`
        // holds `4·G·n`); 4-halfword stores at `(j·G + gi)·4 + 4 ≤ 4·G·n` (room at `out`);
        // NEON is baseline.
        unsafe {
            let r = w.as_ptr().add(4 * gi * n);
            // `t[m]`: the 4 channels at inputs `at + 2m` (low half) and `at + 2m + 1`.
            let load = |at: usize| {
                zip4_s16(core::array::from_fn(|ch| {
                    vmovl_s8(vld1_s8(r.add(ch * n + at)))
                }))
            };
            let mut put = |j: usize, v: int16x8_t| {
                vst1_s16(out.add((j * G + gi) * 4), vget_low_s16(v));
                vst1_s16(out.add(((j + 1) * G + gi) * 4), vget_high_s16(v));
                *s = vaddw_high_s16(vaddw_s16(*s, vget_low_s16(v)), v);
            };
            let mut k = 0;
            while k + 8 <= n {
                for (m, v) in load(k).into_iter().enumerate() {
                    put(k + 2 * m, v);
                }
                k += 8;
            }
            if k < n {
                // A row tail of 4: the row's last 8 bytes, their last 4 inputs.
                let t = load(n - 8);
                put(n - 4, t[2]);
                put(n - 2, t[3]);
            }
        }
    }
    sums
}

/// Input `L` of the 8 widened inputs `xv` against the packed groups at `wk` (`G` × 4
/// halfwords) for 4 pixels.
///
/// # Safety
/// `wk` points at `4·G` halfwords.
#[inline(always)]
unsafe fn step_h<const L: i32, const G: usize>(
    acc: &mut [[int32x4_t; G]; 4],
    wk: *const i16,
    xv: &[int16x8_t; 4],
) {
    for gi in 0..G {
        // SAFETY: `4·gi + 4 ≤ 4·G` halfwords at `wk` (this function's contract).
        let wv = unsafe { vld1_s16(wk.add(4 * gi)) };
        for i in 0..4 {
            acc[i][gi] = vmlal_laneq_s16::<L>(acc[i][gi], wv, xv[i]);
        }
    }
}

/// [`tile`] on the widened packing of [`pack_h`]: `init + ` the exact sums for 4 pixels ×
/// `4·G` channels.
///
/// # Safety
/// Every row pointer starts `n` readable bytes (`16 ≤ n ≤ NMAX`, `n % 4 = 0`); `wb` holds
/// the block packed by [`pack_h`].
#[inline(always)]
unsafe fn tile_h<const G: usize>(
    xs: [*const i8; 4],
    wb: *const i16,
    n: usize,
    init: [int32x4_t; G],
) -> [[int32x4_t; G]; 4] {
    let mut acc = [init; 4];
    // SAFETY (the whole body): loads at `k + 8 ≤ n` of each row; packed inputs `k < n` at
    // `wb` — by this function's contract.
    unsafe {
        let wk = |k: usize| wb.add(k * G * 4);
        let mut k = 0;
        while k + 8 <= n {
            let xv = xs.map(|r| vmovl_s8(vld1_s8(r.add(k))));
            step_h::<0, G>(&mut acc, wk(k), &xv);
            step_h::<1, G>(&mut acc, wk(k + 1), &xv);
            step_h::<2, G>(&mut acc, wk(k + 2), &xv);
            step_h::<3, G>(&mut acc, wk(k + 3), &xv);
            step_h::<4, G>(&mut acc, wk(k + 4), &xv);
            step_h::<5, G>(&mut acc, wk(k + 5), &xv);
            step_h::<6, G>(&mut acc, wk(k + 6), &xv);
            step_h::<7, G>(&mut acc, wk(k + 7), &xv);
            k += 8;
        }
        if k < n {
            // 4 inputs left: the row's last 8 bytes, their last 4.
            let xv = xs.map(|r| vmovl_s8(vld1_s8(r.add(n - 8))));
            step_h::<4, G>(&mut acc, wk(n - 4), &xv);
            step_h::<5, G>(&mut acc, wk(n - 3), &xv);
            step_h::<6, G>(&mut acc, wk(n - 2), &xv);
            step_h::<7, G>(&mut acc, wk(n - 1), &xv);
        }
    }
    acc
}

/// One pixel's `4·G` outputs of the block into `out`; `short`: every `r[g].short()`.
#[inline(always)]
fn store<const G: usize>(r: &[Rq4; G], short: bool, a: &[int32x4_t; G], out: &mut [i8]) {
    let out = &mut out[..4 * G];
    match G {
        4 if short => {
            // SAFETY: NEON is baseline; `out` holds 16 bytes.
            unsafe {
                let b = Rq4::apply16_short([&r[0], &r[1], &r[2], &r[3]], [a[0], a[1], a[2], a[3]]);
                vst1q_s8(out.as_mut_ptr(), b);
            }
        }
        2 if short => {
            // SAFETY: NEON is baseline; `out` holds 8 bytes.
            unsafe {
                vst1_s8(
                    out.as_mut_ptr(),
                    Rq4::apply8_short(&[r[0], r[1]], a[0], a[1]),
                )
            };
        }
        4 => {
            // SAFETY: NEON is baseline; `out` holds 16 bytes.
            unsafe {
                let b = Rq4::apply16([&r[0], &r[1], &r[2], &r[3]], [a[0], a[1], a[2], a[3]]);
                vst1q_s8(out.as_mut_ptr(), b);
            }
        }
        2 => {
            // SAFETY: NEON is baseline; `out` holds 8 bytes.
            unsafe { vst1_s8(out.as_mut_ptr(), Rq4::apply8(&[r[0], r[1]], a[0], a[1])) };
        }
        _ => {
            for (gi, o4) in out.chunks_exact_mut(4).enumerate() {
                // SAFETY: NEON is baseline; `o4` holds 4 bytes, written unaligned (channel
                // offsets are any byte).
                unsafe { (o4.as_mut_ptr() as *mut u32).write_unaligned(r[gi].apply(a[gi])) };
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The transpose puts channel `c`'s bytes `4j .. 4j + 4` in lane `c` of vector `j`.
    #[test]
    fn transpose_moves_words() {
        let rows: [[i8; 16]; 4] =
            core::array::from_fn(|c| core::array::from_fn(|b| (c * 16 + b) as i8));
        // SAFETY: NEON is baseline; 16-byte loads and stores of 16-byte arrays.
        let t = transpose(rows.map(|r| unsafe { vld1q_s8(r.as_ptr()) }));
        for (j, v) in t.into_iter().enumerate() {
            let mut got = [0i8; 16];
            // SAFETY: NEON is baseline; `got` holds 16 bytes.
            unsafe { vst1q_s8(got.as_mut_ptr(), v) };
            for c in 0..4 {
                assert_eq!(
                    got[4 * c..4 * c + 4],
                    rows[c][4 * j..4 * j + 4],
                    "vector {j} lane {c}"
                );
            }
        }
    }
}
