//! int8 pointwise conv of a few output pixels (the last stages of small inputs, and the
//! streamed or Auto-rebuilt experts there) on AVX-512 VNNI, as dot products on the weight
//! rows where they lie (laying a panel out per call would cost more than the multiply-adds):
//! each 64-byte step is one `vpdpbusd` per (pixel, channel) of a tile of 16 accumulators
//! (4 pixels × 4 channels, 2 × 8 or 1 × 16), whose lanes one transpose-add tree ([`reduce16`])
//! sums into one vector. The offset `u = x ^ 0x80` as in [`super::conv1x1_vnni`]:
//! `Σ w·(x − zx) = Σ w·u − (128 + zx)·Σ w`, `Σ w` per channel once per call. Exact, so the
//! reference's sums.
use core::arch::x86_64::*;
use core::mem::MaybeUninit;

use super::conv1x1::src;
use super::requant::{Requant, RqCols, MAXQ};
use super::{first16, first_bytes};
use crate::kernels::{Geom, OutQ, SumTile};

/// Widest input (the offset rows live on the stack).
const MAXC: usize = 1024;
/// Most output pixels per tile.
const PT: usize = 4;

/// A zero weight row: the rows of a tile past the last channel.
static ZERO: [i8; MAXC] = [0; MAXC];

/// Whether [`conv1x1_i8`] and [`conv1x1_sums_i8`] take `g` (else the caller's fallback).
pub(super) fn fits(g: &Geom) -> bool {
    g.cin > 0 && g.cin <= MAXC && g.cout > 0 && g.cout <= MAXQ
}

/// The `conv1x1_i8` contract for [`fits`] shapes.
///
/// # Safety
/// AVX2 and AVX-512 F/BW/DQ/VL/VNNI available; `fits(g)`.
pub(super) unsafe fn conv1x1_i8(
    g: &Geom,
    x: &[i8],
    zx: i32,
    w: &[i8],
    rq: &[[i32; 3]],
    q: OutQ,
    y: &mut [i8],
) {
    let (npix, cout) = (g.ho * g.wo, g.cout);
    let y = &mut y[..npix * cout];
    let mut cols = RqCols::new();
    let req = Requant::new(&rq[..cout], q, &mut cols);
    // SAFETY: this function's contract.
    unsafe {
        sums(g, x, zx, w, &mut |p0, np, acc| {
            for (t, a) in acc.chunks_exact(cout).take(np).enumerate() {
                req.row(0, a, q, &mut y[(p0 + t) * cout..][..cout]);
            }
        })
    }
}

/// The `conv1x1_sums_i8` contract for [`fits`] shapes: one tile of up to 4 pixels × every
/// channel per `sink` call.
///
/// # Safety
/// As [`conv1x1_i8`].
pub(super) unsafe fn conv1x1_sums_i8(
    g: &Geom,
    x: &[i8],
    zx: i32,
    w: &[i8],
    sink: &mut dyn FnMut(SumTile<'_>),
) {
    let cout = g.cout;
    // SAFETY: this function's contract.
    unsafe {
        sums(g, x, zx, w, &mut |p0, np, acc| {
            sink(SumTile {
                p0,
                np,
                o0: 0,
                no: cout,
                acc: &acc[..np * cout],
            })
        })
    }
}

/// `f(p0, np, acc)` with `acc[t·cout + o] = Σ_c w[o, c]·(x[p0 + t, c] − zx)` for tiles of
/// `np ≤ 4` pixels, in order.
///
/// # Safety
/// As [`conv1x1_i8`].
#[target_feature(enable = "avx2,avx512f,avx512bw,avx512dq,avx512vl,avx512vnni")]
unsafe fn sums(g: &Geom, x: &[i8], zx: i32, w: &[i8], f: &mut dyn FnMut(usize, usize, &[i32])) {
    let (n, npix, cout) = (g.cin, g.ho * g.wo, g.cout);
    let w = &w[..cout * n];
    let steps = n.div_ceil(64);
    let tail = first_bytes(n - 64 * (steps - 1));
    // Row `o`'s first byte, the zero row past the last channel (`n ≤ MAXC` bytes each).
    let row = |o: usize| {
        if o < cout {
            w[o * n..].as_ptr()
        } else {
            ZERO.as_ptr()
        }
    };
    // `(128 + zx)·Σw` per channel, 16 channels a tree; whole blocks of 16 (the rows past
    // the last channel are `ZERO`, so their lanes are 0), so a tile's lanes load at once.
    let k = _mm512_set1_epi32(128i32.wrapping_add(zx));
    let mut corr = [const { MaybeUninit::<i32>::uninit() }; MAXQ];
    let ones = [ONES.as_ptr(); 1];
    for o0 in (0..cout).step_by(16) {
        // SAFETY: every row holds `n` bytes, `ONES` `MAXC ≥ 64·steps`; `o0 + 16 ≤ MAXQ`
        // (`cout ≤ MAXQ`, a multiple of 16).
        unsafe {
            let v = tile::<1, 16>(ones, core::array::from_fn(|j| row(o0 + j)), steps, tail);
            let c = _mm512_mullo_epi32(k, reduce16(&v[0]));
            _mm512_storeu_si512(corr.as_mut_ptr().add(o0).cast(), c);
        }
    }
    let corr = corr.as_ptr().cast::<i32>();
    // The tile's offset input rows (`64·steps ≤ MAXC` bytes each are written; the last
    // step's bytes past `n` meet zero weights).
    let mut u = [[const { MaybeUninit::<u8>::uninit() }; MAXC]; PT];
    let mut acc = [const { MaybeUninit::<i32>::uninit() }; PT * MAXQ];
    let flip = _mm512_set1_epi8(-128);
    let mut p = 0;
    while p < npix {
        let np = match npix - p {
            1 => 1,
            2 | 3 => 2,
            _ => 4,
        };
        for (t, ut) in u.iter_mut().enumerate().take(np) {
            let xs = &x[src(g, p + t)..][..n];
            for s in 0..steps {
                // SAFETY: the load reads only `xs`'s bytes (the last step masked to `tail`),
                // the store writes 64 bytes at `64s + 64 ≤ MAXC`.
                unsafe {
                    let m = if s + 1 == steps { tail } else { !0 };
                    let v = _mm512_maskz_loadu_epi8(m, xs.as_ptr().add(64 * s));
                    _mm512_storeu_si512(
                        ut.as_mut_ptr().add(64 * s).cast(),
                        _mm512_xor_si512(v, flip),
                    );
                }
            }
        }
        let xu = |t: usize| u[t].as_ptr().cast::<i8>();
        macro_rules! tiles {
            ($p:literal, $o:literal) => {{
                for o0 in (0..cout).step_by($o) {
                    // SAFETY: rows `t < np` of `u` hold `64·steps` written bytes, every
                    // weight row `n`.
                    let v = unsafe {
                        tile::<$p, $o>(
                            core::array::from_fn(|t| xu(t)),
                            core::array::from_fn(|j| row(o0 + j)),
                            steps,
                            tail,
                        )
                    };
                    let sums = reduce16(v.as_flattened().try_into().unwrap());
                    // SAFETY: the loop above wrote `corr[o0 .. o0 + 16]`; each store writes
                    // row `t`'s first `min($o, cout − o0)` channels from `o0`, inside `acc`.
                    unsafe {
                        put::<$p, $o>(
                            sums,
                            corr.add(o0),
                            acc.as_mut_ptr().add(o0).cast(),
                            cout,
                            first16(cout - o0),
                        );
                    }
                }
            }};
        }
        match np {
            1 => tiles!(1, 16),
            2 => tiles!(2, 8),
            _ => tiles!(4, 4),
        }
        // SAFETY: the tiles wrote `acc[t·cout + o]` for every `t < np`, `o < cout`.
        let a = unsafe { &*(&acc[..np * cout] as *const [MaybeUninit<i32>] as *const [i32]) };
        f(p, np, a);
        p += np;
    }
}

/// Lane `t·O + j` of `sums` less `corr[j]` into `acc[t·cout + j]`, for `t < P` and the
/// `j < O` that `keep` selects (the channels that exist): `P` masked stores of `O` lanes,
/// where an element loop took ~50 scalar instructions a tile (the 4-pixel streamed and
/// Auto experts of 0.5x @64: their `W0` sums ~15 % faster).
///
/// # Safety
/// AVX-512 F/DQ/VL available; `corr` readable for `O` i32, `acc` writable at `t·cout + j` for
/// `t < P` and every `j` in `keep`.
#[inline]
#[target_feature(enable = "avx2,avx512f,avx512dq,avx512vl")]
unsafe fn put<const P: usize, const O: usize>(
    sums: __m512i,
    corr: *const i32,
    acc: *mut i32,
    cout: usize,
    keep: __mmask16,
) {
    // The tile fills the register: `P` pixels of `O` lanes.
    const { assert!(P * O == 16) };
    // SAFETY: this function's contract.
    unsafe {
        match O {
            16 => {
                let d = _mm512_sub_epi32(sums, _mm512_loadu_si512(corr.cast()));
                _mm512_mask_storeu_epi32(acc, keep, d);
            }
            8 => {
                let c = _mm512_broadcast_i32x8(_mm256_loadu_si256(corr.cast()));
                let d = _mm512_sub_epi32(sums, c);
                let keep = keep as __mmask8;
                _mm256_mask_storeu_epi32(acc, keep, _mm512_castsi512_si256(d));
                if P > 1 {
                    _mm256_mask_storeu_epi32(
                        acc.add(cout),
                        keep,
                        _mm512_extracti32x8_epi32::<1>(d),
                    );
                }
            }
            _ => {
                let c = _mm512_broadcast_i32x4(_mm_loadu_si128(corr.cast()));
                let d = _mm512_sub_epi32(sums, c);
                let keep = (keep & 0xf) as __mmask8;
                _mm_mask_storeu_epi32(acc, keep, _mm512_castsi512_si128(d));
                if P > 1 {
                    _mm_mask_storeu_epi32(acc.add(cout), keep, _mm512_extracti32x4_epi32::<1>(d));
                }
                if P > 2 {
                    _mm_mask_storeu_epi32(
                        acc.add(2 * cout),
                        keep,
                        _mm512_extracti32x4_epi32::<2>(d),
                    );
                }
                if P > 3 {
                    _mm_mask_storeu_epi32(
                        acc.add(3 * cout),
                        keep,
                        _mm512_extracti32x4_epi32::<3>(d),
                    );
                }
            }
        }
    }
}

/// 64 ones: `vpdpbusd` against them sums a weight row.
static ONES: [i8; MAXC] = [1; MAXC];

/// `acc[t][j] = Σ_s dpbusd(u[t] step s, w[j] step s)` over `steps` 64-byte steps, the last
/// one's weight bytes masked to `tail` (`u` read as unsigned bytes).
///
/// # Safety
/// AVX-512 F/BW/VNNI available; every `u[t]` readable for `64·steps` bytes, every `w[j]`
/// for `64·(steps − 1)` bytes plus `tail`'s.
#[inline]
#[target_feature(enable = "avx2,avx512f,avx512bw,avx512vnni")]
unsafe fn tile<const P: usize, const O: usize>(
    u: [*const i8; P],
    w: [*const i8; O],
    steps: usize,
    tail: __mmask64,
) -> [[__m512i; O]; P] {
    let mut acc = [[_mm512_setzero_si512(); O]; P];
    for s in 0..steps {
        let m = if s + 1 == steps { tail } else { !0 };
        // SAFETY: this function's contract.
        unsafe {
            let wv: [__m512i; O] =
                core::array::from_fn(|j| _mm512_maskz_loadu_epi8(m, w[j].add(64 * s)));
            for (a, &ut) in acc.iter_mut().zip(&u) {
                let xv = _mm512_loadu_si512(ut.add(64 * s).cast());
                for (aj, &wj) in a.iter_mut().zip(&wv) {
                    *aj = _mm512_dpbusd_epi32(*aj, xv, wj);
                }
            }
        }
    }
    acc
}

/// Lane `k` of the result is the (wrapping) sum of `v[k]`'s 16 lanes: pairs added across
/// 32-bit, then 64-bit interleaves within each 128-bit lane (16 → 8 → 4 vectors, each
/// 128-bit lane then one row's partial sum), then two 128-bit shuffles and adds.
#[inline]
#[target_feature(enable = "avx512f")]
fn reduce16(v: &[__m512i; 16]) -> __m512i {
    let a: [__m512i; 8] = core::array::from_fn(|i| {
        let (x, y) = (v[2 * i], v[2 * i + 1]);
        _mm512_add_epi32(_mm512_unpacklo_epi32(x, y), _mm512_unpackhi_epi32(x, y))
    });
    let b: [__m512i; 4] = core::array::from_fn(|i| {
        let (x, y) = (a[2 * i], a[2 * i + 1]);
        _mm512_add_epi32(_mm512_unpacklo_epi64(x, y), _mm512_unpackhi_epi64(x, y))
    });
    let c: [__m512i; 2] = core::array::from_fn(|i| {
        let (x, y) = (b[2 * i], b[2 * i + 1]);
        _mm512_add_epi32(
            _mm512_shuffle_i32x4::<0b10_00_10_00>(x, y),
            _mm512_shuffle_i32x4::<0b11_01_11_01>(x, y),
        )
    });
    _mm512_add_epi32(
        _mm512_shuffle_i32x4::<0b10_00_10_00>(c[0], c[1]),
        _mm512_shuffle_i32x4::<0b11_01_11_01>(c[0], c[1]),
    )
}
