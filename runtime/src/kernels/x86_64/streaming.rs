//! The streaming experts' lane code compiled for AVX2: the portable lane code of
//! [`crate::switch`] (`[f32; 8]` lanes, a product then an add per term) inlined into
//! `#[target_feature(enable = "avx2")]` bodies, so one ymm register holds the 8 lanes the
//! baseline build splits into two SSE2 halves. The same source and no FMA contraction
//! (Rust never fuses `a * b + c`), so the same bits — `switch`'s tests run every table.
use core::arch::x86_64::*;

use crate::kernels::{Geom, Streaming, SumTile};
use crate::quant::QParams;
use crate::switch::{self, EpilogueI8};

/// The AVX2 [`Streaming`] slots. Install only after AVX2 detection.
pub(super) fn avx2() -> Streaming {
    Streaming {
        u_i8,
        u_f32,
        epilogue_i8,
        add_f32,
        decode: super::factors::decode_t,
    }
}

fn u_i8(g: &Geom, x: &[i8], q: QParams, a: &[f32], r: usize, u: &mut [f32]) {
    // SAFETY: installed only after AVX2 detection; the body is safe code.
    unsafe { u_i8_avx2(g, x, q, a, r, u) }
}

/// `switch::lowrank_u_i8` ([`u_i8_tabled`]): ranks that are a multiple of 8 by
/// [`rank_lanes_i8`]; others through [`dequant_table_avx2`] where the layer reads at least
/// [`TABLE_FROM`] codes (the same values: each input one broadcast load instead of a
/// conversion and a multiply), else the lane code.
#[target_feature(enable = "avx2")]
unsafe fn u_i8_avx2(g: &Geom, x: &[i8], q: QParams, a: &[f32], r: usize, u: &mut [f32]) {
    u_i8_tabled(g, x, q, a, r, u)
}

/// The body of [`u_i8_avx2`] and [`u_i8_avx512`], inlined into each (compiled for its
/// target features).
#[inline(always)]
fn u_i8_tabled(g: &Geom, x: &[i8], q: QParams, a: &[f32], r: usize, u: &mut [f32]) {
    if r.is_multiple_of(8) && u.len() >= g.ho * g.wo * r && a.len() >= r * g.cin {
        // SAFETY: both callers are AVX2 target-feature functions (this body is inlined
        // into them); `r` a multiple of 8, `u` and `a` checked above.
        return unsafe { rank_lanes_i8(g, x, &dequant_table_avx2(q), a, r, u) };
    }
    if g.ho * g.wo * g.cin < TABLE_FROM {
        return switch::lowrank_u_i8(g, x, q, a, r, u);
    }
    // SAFETY: as above.
    let t = unsafe { dequant_table_avx2(q) };
    switch::lowrank_u_gemm(g, x, |v| t[v as u8 as usize], a, r, u)
}

/// Every int8 code's `QParams::dequantize` value, indexed by the code's byte (1 KiB, made
/// per call), 8 codes a step: `scale · (code − zero_point)` as `QParams::dequantize`
/// computes it (the difference wraps as there in release builds, converted to f32 rounding
/// to nearest, one product) — 128 instructions for the table, so [`rank_lanes_i8`] takes it
/// at any layer size.
///
/// # Safety
/// AVX2 available.
#[target_feature(enable = "avx2")]
unsafe fn dequant_table_avx2(q: QParams) -> [f32; 256] {
    let mut t = [0.0f32; 256];
    let (s, zp) = (_mm256_set1_ps(q.scale), _mm256_set1_epi32(q.zero_point));
    let step = _mm256_set1_epi32(8);
    // Codes as bytes 0..=255, read as i8: 0..=127 then −128..=−1.
    let mut b = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    for k in (0..256).step_by(8) {
        let code = _mm256_srai_epi32::<24>(_mm256_slli_epi32::<24>(b));
        let v = _mm256_mul_ps(s, _mm256_cvtepi32_ps(_mm256_sub_epi32(code, zp)));
        // SAFETY: `k + 8 ≤ 256`.
        unsafe { _mm256_storeu_ps(t.as_mut_ptr().add(k), v) };
        b = _mm256_add_epi32(b, step);
    }
    t
}

/// `switch::lowrank_u_gemm`'s rank lanes (`r` a multiple of 8) for int8 input through the
/// dequantisation table, by hand: eight pixels side by side (eight chains of the `Cin`
/// dependent adds, each `Aᵀ` load feeding eight), the input rows as pointers checked once
/// per pixel, so the inner loop is a load of `Aᵀ`'s 8 weights and per pixel a byte load,
/// a broadcast of its table value, a product and an add — the lane code's operations in
/// its order (each sum from 0.0 over `c` in order, a product then an add), so the same
/// bits; LLVM's form of the lane code reloaded spilled pointers and bounds-checked each
/// input (~25 instructions a channel for four pixels).
///
/// # Safety
/// AVX2 available; `r` a multiple of 8, `at` holds `r·Cin` values, `u` `ho·wo·r`.
#[target_feature(enable = "avx2")]
unsafe fn rank_lanes_i8(g: &Geom, x: &[i8], t: &[f32; 256], at: &[f32], r: usize, u: &mut [f32]) {
    let (npix, cin) = (g.ho * g.wo, g.cin);
    let rows = |p: usize| {
        let o = super::conv1x1::src(g, p);
        x[o..o + cin].as_ptr()
    };
    let mut p = 0;
    while p < npix {
        let n = if npix - p >= 8 {
            8
        } else if npix - p >= 4 {
            4
        } else {
            1
        };
        // SAFETY (each call): pixels `p .. p + N ≤ npix`, every row `cin` bytes (sliced by
        // `rows`); this function's contract for `at` and `u`.
        unsafe {
            match n {
                8 => rank_px::<8>(
                    core::array::from_fn(|k| rows(p + k)),
                    t,
                    at,
                    r,
                    cin,
                    &mut u[p * r..],
                ),
                4 => rank_px::<4>(
                    core::array::from_fn(|k| rows(p + k)),
                    t,
                    at,
                    r,
                    cin,
                    &mut u[p * r..],
                ),
                _ => rank_px::<1>([rows(p)], t, at, r, cin, &mut u[p * r..]),
            }
        }
        p += n;
    }
}

/// `N` pixels of [`rank_lanes_i8`]: `u[k·r + j] = Σ_c Aᵀ[c·r + j]·t[xs[k][c]]`.
///
/// # Safety
/// AVX2 available; every `xs[k]` readable for `cin` bytes, `at` holds `r·cin` values,
/// `u` at least `N·r`, `r` a multiple of 8.
#[inline]
#[target_feature(enable = "avx2")]
unsafe fn rank_px<const N: usize>(
    xs: [*const i8; N],
    t: &[f32; 256],
    at: &[f32],
    r: usize,
    cin: usize,
    u: &mut [f32],
) {
    assert!(at.len() >= r * cin && u.len() >= N * r && r.is_multiple_of(8));
    let (tp, ap) = (t.as_ptr(), at.as_ptr());
    for j0 in (0..r).step_by(8) {
        let mut acc = [_mm256_setzero_ps(); N];
        for c in 0..cin {
            // SAFETY: `c·r + j0 + 8 ≤ r·cin`; `xs[k] + c` inside its row; a byte's table
            // index is below 256.
            unsafe {
                let w = _mm256_loadu_ps(ap.add(c * r + j0));
                for (s, &xk) in acc.iter_mut().zip(&xs) {
                    let v = _mm256_broadcast_ss(&*tp.add(*xk.add(c) as u8 as usize));
                    *s = _mm256_add_ps(*s, _mm256_mul_ps(w, v));
                }
            }
        }
        for (k, s) in acc.iter().enumerate() {
            // SAFETY: `k·r + j0 + 8 ≤ N·r ≤ u.len()`.
            unsafe { _mm256_storeu_ps(u.as_mut_ptr().add(k * r + j0), *s) };
        }
    }
}

/// The AVX-512 [`Streaming`] slots: the same lane code compiled with AVX-512F enabled, so
/// the epilogue's 16-value runs (two 8-lane blocks) and the GEMMs' rows run in zmm
/// registers. Install only after AVX-512 detection (`avx512_detected`).
pub(super) fn avx512() -> Streaming {
    Streaming {
        u_i8: u_i8_512,
        u_f32: u_f32_512,
        epilogue_i8: epilogue_i8_512,
        add_f32: add_f32_512,
        ..avx2()
    }
}

fn u_i8_512(g: &Geom, x: &[i8], q: QParams, a: &[f32], r: usize, u: &mut [f32]) {
    // SAFETY: installed only after AVX-512 detection; the body is safe code.
    unsafe { u_i8_avx512(g, x, q, a, r, u) }
}

/// [`u_i8_avx2`] with AVX-512F.
#[target_feature(enable = "avx2,avx512f")]
unsafe fn u_i8_avx512(g: &Geom, x: &[i8], q: QParams, a: &[f32], r: usize, u: &mut [f32]) {
    u_i8_tabled(g, x, q, a, r, u)
}

fn u_f32_512(g: &Geom, x: &[f32], a: &[f32], r: usize, u: &mut [f32]) {
    // SAFETY: installed only after AVX-512 detection; the body is safe code.
    unsafe { u_f32_avx512(g, x, a, r, u) }
}

#[target_feature(enable = "avx2,avx512f")]
unsafe fn u_f32_avx512(g: &Geom, x: &[f32], a: &[f32], r: usize, u: &mut [f32]) {
    switch::lowrank_u_f32(g, x, a, r, u)
}

/// `$f::<R>(t, e)` with the rank `e.r` as the constant `R` for ranks up to [`EPI_MAX_R`]
/// (the register forms of the epilogue), else the lane code `switch::epilogue_i8`. Expands
/// to an `unsafe` call: the caller's target features are `$f`'s contract.
macro_rules! by_rank {
    ($f:ident, $t:expr, $e:expr) => {
        by_rank!(@ $f, $t, $e; 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16)
    };
    (@ $f:ident, $t:expr, $e:expr; $($r:literal)*) => {
        match $e.r {
            // SAFETY: the expanding fn's target features are `$f`'s (see its callers).
            $($r => unsafe { $f::<$r>($t, $e) },)*
            _ => switch::epilogue_i8($t, $e),
        }
    };
}

fn epilogue_i8_512(t: &SumTile<'_>, e: &mut EpilogueI8<'_>) {
    // SAFETY: installed only after AVX-512 detection; the body is safe code.
    unsafe { epilogue_i8_avx512(t, e) }
}

/// `switch::epilogue_i8` on 16-lane registers: per block of 16 output channels (the last
/// one masked) the block's `sx·ws`, bias and `R` rows of `Bᵀ` are loaded once and stay in
/// registers while every pixel of the tile goes through them, four side by side (four
/// independent chains of the `R` dependent adds; the GEMM's tiles have four pixels). Each
/// value takes the spec's operations in its order — `acc·(sx·ws[o]) + bias[o]`, then
/// `+ Bᵀ[j, o]·u[p, j]` for `j` in order, a product then an add — then [`Quant16`]: the
/// same bytes. Ranks past [`EPI_MAX_R`] take the lane code. The whole-lane loads and
/// stores where a block is full, not masked ones. With the GEMM's whole-row stores of the
/// sums (`conv1x1_vnni::sums`), this cut the 0.5x @64 streaming inference ~8 %.
///
/// # Safety
/// AVX-512 F/BW/DQ/VL available.
#[target_feature(enable = "avx2,avx512f,avx512bw,avx512dq,avx512vl")]
unsafe fn epilogue_i8_avx512(t: &SumTile<'_>, e: &mut EpilogueI8<'_>) {
    // SAFETY: AVX-512 F/BW/DQ/VL (this function's contract), what `epilogue_r` needs.
    by_rank!(epilogue_r, t, e)
}

/// Highest rank [`epilogue_i8_avx512`] keeps in registers (16 rows of `Bᵀ`, 4 accumulators
/// and the block's constants: 23 of the 32 zmm registers), and [`epilogue_i8_avx2`] hands
/// to [`epilogue_r8`] (at high ranks some of a pixel's broadcast `u` values spill to the
/// stack).
const EPI_MAX_R: usize = 16;

/// The slices a register epilogue at rank `R` reads and writes stay inside (the lane code
/// indexes the same), asserted once per tile: `(cout, np, no)`.
#[inline]
fn tile_bounds<const R: usize>(t: &SumTile<'_>, e: &EpilogueI8<'_>) -> (usize, usize, usize) {
    let (cout, np, no) = (e.ws.len(), t.np, t.no);
    assert!(R == e.r && R <= EPI_MAX_R && t.o0 + no <= cout && t.acc.len() >= np * no);
    assert!(e.bias.len() >= cout && e.bt.len() >= R * cout);
    assert!(e.u.len() >= (t.p0 + np) * R && e.y.len() >= (t.p0 + np) * cout);
    (cout, np, no)
}

/// [`epilogue_i8_avx512`] at rank `R`.
///
/// # Safety
/// AVX-512 F/BW/DQ/VL available.
#[target_feature(enable = "avx2,avx512f,avx512bw,avx512dq,avx512vl")]
unsafe fn epilogue_r<const R: usize>(t: &SumTile<'_>, e: &mut EpilogueI8<'_>) {
    let (cout, _, no) = tile_bounds::<R>(t, e);
    let (acc, u, y) = (t.acc.as_ptr(), e.u.as_ptr(), e.y.as_mut_ptr());
    let sx = _mm512_set1_ps(e.st.x.scale);
    let q = Quant16::new(e.st.y, e.st.relu);
    let mut c = 0;
    while c < no {
        let (m, o) = (super::first16(no - c), t.o0 + c);
        // SAFETY (the block's loads): lanes `o .. o + 16` masked to `o + (no − c) ≤ cout`
        // of `ws`, `bias` and each `Bᵀ` row (`R·cout` values, asserted).
        let (sxw, bias, bt) = unsafe {
            let ws = _mm512_maskz_loadu_ps(m, e.ws.as_ptr().add(o));
            let bias = _mm512_maskz_loadu_ps(m, e.bias.as_ptr().add(o));
            let bt: [__m512; R] =
                core::array::from_fn(|j| _mm512_maskz_loadu_ps(m, e.bt.as_ptr().add(j * cout + o)));
            (_mm512_mul_ps(sx, ws), bias, bt)
        };
        let blk = (sxw, bias, &bt, m);
        // SAFETY: pixels `0 .. np`, lanes masked as above (whole when `m` is full).
        unsafe {
            if no - c >= 16 {
                run::<R, true>(acc, u, y, blk, &q, (t, cout, c));
            } else {
                run::<R, false>(acc, u, y, blk, &q, (t, cout, c));
            }
        }
        c += 16;
    }
}

/// The block of channels `c ..` (lanes `m`; all 16 when `FULL`) of [`epilogue_r`] for
/// every pixel of the tile, four, then one at a time.
///
/// # Safety
/// As [`pixels`], for pixels `0 .. np`.
#[inline]
#[target_feature(enable = "avx2,avx512f,avx512bw,avx512dq,avx512vl")]
unsafe fn run<const R: usize, const FULL: bool>(
    acc: *const i32,
    u: *const f32,
    y: *mut i8,
    blk: (__m512, __m512, &[__m512; R], __mmask16),
    q: &Quant16,
    (t, cout, c): (&SumTile<'_>, usize, usize),
) {
    let mut i = 0;
    // SAFETY (each call): pixels `i .. i + N ≤ np`; this function's contract.
    unsafe {
        while i + 4 <= t.np {
            pixels::<4, R, FULL>(acc, u, y, blk, q, (t, cout, c, i));
            i += 4;
        }
        while i < t.np {
            pixels::<1, R, FULL>(acc, u, y, blk, q, (t, cout, c, i));
            i += 1;
        }
    }
}

/// Pixels `i .. i + N` of the tile `t`, channels `c ..` (lanes `m`) of [`epilogue_r`]:
/// whole 16-lane loads and stores when `FULL` (`m` all ones), masked ones otherwise.
///
/// # Safety
/// AVX-512 F/BW/DQ/VL available; `acc` holds the tile's `np·no` sums, `u` `(p0 + np)·R`
/// values, `y` `(p0 + np)·cout` bytes, `i + N ≤ np`, `m` masks lanes past `no − c`
/// (`no − c ≥ 16` when `FULL`).
#[inline]
#[target_feature(enable = "avx2,avx512f,avx512bw,avx512dq,avx512vl")]
unsafe fn pixels<const N: usize, const R: usize, const FULL: bool>(
    acc: *const i32,
    u: *const f32,
    y: *mut i8,
    (sxw, bias, bt, m): (__m512, __m512, &[__m512; R], __mmask16),
    q: &Quant16,
    (t, cout, c, i): (&SumTile<'_>, usize, usize, usize),
) {
    // SAFETY: row `i + k < np` of the tile's sums, lanes `c ..` masked to `no`.
    let mut v: [__m512; N] = core::array::from_fn(|k| unsafe {
        let p = acc.add((i + k) * t.no + c);
        let a = if FULL {
            _mm512_loadu_si512(p.cast())
        } else {
            _mm512_maskz_loadu_epi32(m, p)
        };
        _mm512_add_ps(_mm512_mul_ps(_mm512_cvtepi32_ps(a), sxw), bias)
    });
    for (j, b) in bt.iter().enumerate() {
        for (k, vk) in v.iter_mut().enumerate() {
            // SAFETY: `u` holds `(p0 + np)·R` values and pixel `p0 + i + k < p0 + np`.
            let uj = unsafe { *u.add((t.p0 + i + k) * R + j) };
            *vk = _mm512_add_ps(*vk, _mm512_mul_ps(*b, _mm512_set1_ps(uj)));
        }
    }
    for (k, vk) in v.into_iter().enumerate() {
        // SAFETY: pixel `p0 + i + k`'s output row holds `cout ≥ o0 + c + 16`-masked bytes.
        unsafe {
            let (p, b) = (y.add((t.p0 + i + k) * cout + t.o0 + c), q.bytes(vk));
            if FULL {
                _mm_storeu_si128(p.cast(), b)
            } else {
                _mm_mask_storeu_epi8(p, m, b)
            }
        };
    }
}

/// `QParams::quantize` (after `max(x, 0)` for ReLU) of 16 lanes, as `switch::quantize_row`
/// computes it: `t = x / scale` rounded half away from zero with its magnitude clamped to
/// 2^22 ([`super::round_away16`]: the spec clamps `t` there; a NaN gives 0, so the spec's
/// zero point); plus the zero point (clamped to ±2^24 first, which
/// cannot change a byte: the code is within ±2^22); narrowed with saturation (the spec's
/// clamp to −128..127).
struct Quant16 {
    scale: __m512,
    zp: __m512i,
    relu: bool,
}

impl Quant16 {
    #[inline]
    #[target_feature(enable = "avx512f,avx512dq")]
    fn new(q: QParams, relu: bool) -> Self {
        Quant16 {
            scale: _mm512_set1_ps(q.scale),
            zp: _mm512_set1_epi32(q.zero_point.clamp(-(1 << 24), 1 << 24)),
            relu,
        }
    }

    #[inline]
    #[target_feature(enable = "avx512f,avx512dq")]
    fn bytes(&self, x: __m512) -> __m128i {
        let zero = _mm512_setzero_ps();
        // `vmaxps` returns its second operand for a NaN first one: `f32::max(NaN, 0) = 0`.
        let x = if self.relu { _mm512_max_ps(x, zero) } else { x };
        let t = _mm512_div_ps(x, self.scale);
        let n = super::round_away16(t, 4_194_304.0);
        _mm512_cvtsepi32_epi8(_mm512_add_epi32(n, self.zp))
    }
}

fn add_f32_512(u: &[f32], bt: &[f32], r: usize, cout: usize, relu: bool, y: &mut [f32]) {
    // SAFETY: installed only after AVX-512 detection; the body is safe code.
    unsafe { add_f32_avx512(u, bt, r, cout, relu, y) }
}

#[target_feature(enable = "avx2,avx512f")]
unsafe fn add_f32_avx512(u: &[f32], bt: &[f32], r: usize, cout: usize, relu: bool, y: &mut [f32]) {
    switch::lowrank_add_t_f32(u, bt, r, cout, relu, y)
}

/// Input codes read (per call, counting repeats) from which a dequantisation table of 256
/// values pays (`u_i8`).
const TABLE_FROM: usize = 1024;

fn u_f32(g: &Geom, x: &[f32], a: &[f32], r: usize, u: &mut [f32]) {
    // SAFETY: installed only after AVX2 detection; the body is safe code.
    unsafe { u_f32_avx2(g, x, a, r, u) }
}

#[target_feature(enable = "avx2")]
unsafe fn u_f32_avx2(g: &Geom, x: &[f32], a: &[f32], r: usize, u: &mut [f32]) {
    switch::lowrank_u_f32(g, x, a, r, u)
}

fn epilogue_i8(t: &SumTile<'_>, e: &mut EpilogueI8<'_>) {
    // SAFETY: installed only after AVX2 detection; the body is safe code.
    unsafe { epilogue_i8_avx2(t, e) }
}

/// `switch::epilogue_i8` by hand on 8-lane registers ([`epilogue_r8`]): each value takes
/// the spec's operations in its order, then [`super::Quant8`]: the same bytes. The lane
/// code this replaces went through `[f32; 8]` arrays and quantised a block's last channels
/// one at a time (the 58- and 116-wide convs); it was ~23 % of the 1.0x @224 streaming
/// inference's samples. Ranks past [`EPI_MAX_R`] take the lane code.
///
/// # Safety
/// AVX2 available.
#[target_feature(enable = "avx2")]
unsafe fn epilogue_i8_avx2(t: &SumTile<'_>, e: &mut EpilogueI8<'_>) {
    // SAFETY: AVX2 (this function's contract), what `epilogue_r8` needs.
    by_rank!(epilogue_r8, t, e)
}

/// [`epilogue_i8_avx2`] at rank `R` (at most [`EPI_MAX_R`]), a pixel at a time: its `R`
/// values of `u` broadcast once into registers, then every 8-channel block of the tile
/// (the last through masked loads) takes `R` products with `Bᵀ` rows read from L1 as
/// memory operands — a broadcast per pixel and rank instead of per pixel, rank and block
/// (consecutive blocks are independent chains for the out-of-order core).
///
/// # Safety
/// AVX2 available.
#[target_feature(enable = "avx2")]
unsafe fn epilogue_r8<const R: usize>(t: &SumTile<'_>, e: &mut EpilogueI8<'_>) {
    let (cout, np, no) = tile_bounds::<R>(t, e);
    let sx = _mm256_set1_ps(e.st.x.scale);
    let q = super::Quant8::new(e.st.y, e.st.relu);
    let (ws, bias, bt) = (e.ws.as_ptr(), e.bias.as_ptr(), e.bt.as_ptr());
    let tail = no % 8;
    // SAFETY: `lane_mask` is 8 i32.
    let m = unsafe { _mm256_loadu_si256(super::lane_mask(tail).as_ptr().cast()) };
    for i in 0..np {
        let p = t.p0 + i;
        // SAFETY: `u` holds `(p0 + np)·R` values (asserted), `p < p0 + np`.
        let ub: [__m256; R] =
            core::array::from_fn(|j| unsafe { _mm256_broadcast_ss(&*e.u.as_ptr().add(p * R + j)) });
        let (acc, y) = (
            t.acc[i * no..].as_ptr(),
            e.y[p * cout + t.o0..].as_mut_ptr(),
        );
        // One block: `acc·(sx·ws) + bias`, then `+ Bᵀ[j]·u[j]` for `j` in order (a product
        // then an add), quantised. `full`: lanes `c .. c + 8` all inside the tile.
        let block = |c: usize, full: bool| {
            let o = t.o0 + c;
            // SAFETY: channels `o .. o + 8` (masked to `o + tail` when not `full`) of `ws`,
            // `bias` and each `Bᵀ` row, and of this pixel's sums and output row: `o0 + no ≤
            // cout` and the tile's row holds `no` sums (asserted).
            unsafe {
                let ld = |ptr: *const f32| {
                    if full {
                        _mm256_loadu_ps(ptr)
                    } else {
                        _mm256_maskload_ps(ptr, m)
                    }
                };
                let a = if full {
                    _mm256_loadu_si256(acc.add(c).cast())
                } else {
                    _mm256_maskload_epi32(acc.add(c), m)
                };
                let sxw = _mm256_mul_ps(sx, ld(ws.add(o)));
                let mut v =
                    _mm256_add_ps(_mm256_mul_ps(_mm256_cvtepi32_ps(a), sxw), ld(bias.add(o)));
                for (j, uj) in ub.iter().enumerate() {
                    v = _mm256_add_ps(v, _mm256_mul_ps(ld(bt.add(j * cout + o)), *uj));
                }
                let b = q.bytes(v);
                if full {
                    _mm_storel_epi64(y.add(c).cast(), b)
                } else {
                    let mut tmp = [0i8; 8];
                    _mm_storel_epi64(tmp.as_mut_ptr().cast(), b);
                    core::ptr::copy_nonoverlapping(tmp.as_ptr(), y.add(c), tail);
                }
            }
        };
        let mut c = 0;
        while c + 8 <= no {
            block(c, true);
            c += 8;
        }
        if tail > 0 {
            block(c, false);
        }
    }
}

fn add_f32(u: &[f32], bt: &[f32], r: usize, cout: usize, relu: bool, y: &mut [f32]) {
    // SAFETY: installed only after AVX2 detection; the body is safe code.
    unsafe { add_f32_avx2(u, bt, r, cout, relu, y) }
}

#[target_feature(enable = "avx2")]
unsafe fn add_f32_avx2(u: &[f32], bt: &[f32], r: usize, cout: usize, relu: bool, y: &mut [f32]) {
    switch::lowrank_add_t_f32(u, bt, r, cout, relu, y)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// [`dequant_table_avx2`] is `QParams::dequantize` of every code, bit for bit, for
    /// random scales (normal, subnormal, huge, ±0, NaN, ±∞) and zero points far past the
    /// int8 range (whose differences round when converted). Seed: `LORKD_SEED`.
    #[test]
    fn dequant_table_avx2_is_dequantize() {
        if !super::super::detected() {
            println!("SKIPPED dequant_table_avx2_is_dequantize: no AVX2 on this CPU");
            return;
        }
        let mut rng = crate::engine::testnet::Rng::new(crate::test_seed());
        for it in 0..2_000 {
            let scale = match it % 4 {
                0 => f32::from_bits(rng.next_u64() as u32),
                1 => [0.0, -0.0, f32::NAN, f32::INFINITY, 1e-40][rng.below(5)],
                _ => 1e-4 + rng.uniform(1.0).abs(),
            };
            let zero_point = match it % 3 {
                0 => rng.below(256) as i32 - 128,
                _ => (rng.next_u64() as i32) >> 1,
            };
            let q = QParams { scale, zero_point };
            // SAFETY: AVX2 detected above.
            let t = unsafe { dequant_table_avx2(q) };
            for (i, v) in t.iter().enumerate() {
                let want = q.dequantize(i as u8 as i8);
                assert_eq!(v.to_bits(), want.to_bits(), "code {} {q:?}", i as u8 as i8);
            }
        }
    }

    /// [`Quant16`] is `QParams::quantize` (after `f32::max(x, 0)` with ReLU) lane by lane:
    /// exact ties `(k + ½)·scale` at power-of-two scales and their f32 neighbours (where a
    /// `>` for `≥` would show), NaN, ±∞, ±0, values past ±2^22 steps, random bit patterns,
    /// and zero points at the i32 extremes. Seed: `LORKD_SEED`.
    #[test]
    fn quant16_is_quantize() {
        if !super::super::avx512_detected() {
            println!("SKIPPED quant16_is_quantize: no AVX-512 on this CPU");
            return;
        }
        let mut rng = crate::engine::testnet::Rng::new(crate::test_seed());
        for it in 0..20_000 {
            let scale = match it % 3 {
                0 => f32::powi(2.0, rng.below(20) as i32 - 10),
                1 => 1e-3 + rng.uniform(1.0).abs(),
                _ => f32::from_bits(rng.next_u64() as u32 & 0x7fff_ffff),
            };
            let zero_point = match rng.below(6) {
                0 => i32::MAX,
                1 => i32::MIN,
                2 => (1 << 24) - 150 + rng.below(300) as i32,
                _ => rng.below(256) as i32 - 128,
            };
            let q = QParams { scale, zero_point };
            let x: [f32; 16] = core::array::from_fn(|_| match rng.below(8) {
                0 => (rng.below(400) as f32 - 200.0 + 0.5) * scale,
                1 => {
                    let t = (rng.below(400) as f32 - 200.0 + 0.5) * scale;
                    f32::from_bits(
                        t.to_bits()
                            .wrapping_add(rng.below(3) as u32)
                            .wrapping_sub(1),
                    )
                }
                2 => [f32::NAN, f32::INFINITY, f32::NEG_INFINITY, 0.0, -0.0][rng.below(5)],
                3 => f32::from_bits(rng.next_u64() as u32),
                4 => (rng.uniform(1.0) * 5e6).round() * scale,
                _ => rng.uniform(300.0) * scale,
            });
            for relu in [false, true] {
                let mut got = [0i8; 16];
                // SAFETY: AVX-512 detected above; `x` and `got` hold 16 lanes.
                unsafe {
                    let v = Quant16::new(q, relu).bytes(_mm512_loadu_ps(x.as_ptr()));
                    _mm_storeu_si128(got.as_mut_ptr().cast(), v);
                }
                for (g, &xv) in got.iter().zip(&x) {
                    let want = q.quantize(if relu { xv.max(0.0) } else { xv });
                    assert_eq!(*g, want, "{xv:e} ({:#x}) {q:?} relu {relu}", xv.to_bits());
                }
            }
        }
    }
}
