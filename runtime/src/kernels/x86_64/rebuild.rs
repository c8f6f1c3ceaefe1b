//! AVX2 twin of `reference::requant_weights` (one output channel of the int8 department
//! rebuild): `w += s0·W0q`, `max|w|` on the bit patterns, `q = round(w · 1/s)` — 8 lanes,
//! the same operations in the same order (multiply then add, no FMA), so bit-identical.
use core::arch::x86_64::*;

use crate::kernels::reference::requant_weights::quantize_weight;
use crate::quant::{amax_bits, weight_scale};
use crate::switch::Delta;

/// AVX2 whole-channel int8 rebuild (`Kernels::rebuild_i8`): `B·A` by the portable rows of
/// `Delta::channel_into_i8` compiled for AVX2 lanes (8 where the baseline build has 4; the
/// same products and adds in the same order), then [`body`]: the reference's bits.
pub(crate) fn rebuild_i8(
    d: &Delta<'_>,
    o: usize,
    w0: &[i8],
    s0: f32,
    w: &mut [f32],
    out: &mut [i8],
) -> f32 {
    let n = d.channel_len();
    // SAFETY: only installed after AVX2 detection; the three slices hold `n` elements.
    unsafe { rebuild_avx2(d, o, &w0[..n], s0, &mut w[..n], &mut out[..n]) }
}

/// # Safety
/// AVX2 available; `w0.len() == out.len() == w.len() == d.channel_len()`.
#[target_feature(enable = "avx2")]
unsafe fn rebuild_avx2(
    d: &Delta<'_>,
    o: usize,
    w0: &[i8],
    s0: f32,
    w: &mut [f32],
    out: &mut [i8],
) -> f32 {
    let rk = d.a.rows;
    if let (Some(a), Some(b), 1) = (d.a.as_f32(), d.b.as_f32(), d.k) {
        if rk >= 4 && a.len() >= rk * w.len() && b.len() >= (o + 1) * rk {
            // SAFETY: this function's contract; `a` holds `rk` rows of `n`, `b` row `o`.
            return unsafe { fused(&a[..rk * w.len()], &b[o * rk..][..rk], w0, s0, w, out) };
        }
    }
    d.channel_into_i8_inline(o, w);
    // SAFETY: this function's contract.
    unsafe { body(w, w0, s0, out) }
}

/// A 1x1 channel with f32 factors in one pass per 8 weights: `B·A`'s sum in registers — the
/// association of `switch::axpy_rows_init` (`((b0·a0 + b1·a1) + b2·a2) + b3·a3`, then each
/// further group of 4 added to it in order, then single rows) — then `+ s0·W0q` and `max|w|`
/// as [`body`]'s first pass, one store; then [`body`]'s quantisation pass. The row's three
/// load/store passes before the quantisation become one; the same operations on every
/// element, so the same bits.
///
/// # Safety
/// AVX2 available; `b.len() ≥ 4`, `a` holds `b.len()` rows of `n = w.len()`,
/// `w0.len() == out.len() == n`.
#[target_feature(enable = "avx2")]
unsafe fn fused(a: &[f32], b: &[f32], w0: &[i8], s0: f32, w: &mut [f32], out: &mut [i8]) -> f32 {
    let (n, rk) = (w.len(), b.len());
    debug_assert!(rk >= 4 && a.len() >= rk * n && w0.len() == n && out.len() == n);
    let main = n & !7;
    let s0v = _mm256_set1_ps(s0);
    let mut mx = _mm256_setzero_si256();
    let mut i = 0;
    while i < main {
        // SAFETY: `i + 8 ≤ n`: 8 lanes of every `a` row (`j·n + i + 8 ≤ rk·n`), `w`, `w0`.
        unsafe {
            let term = |j: usize| {
                _mm256_mul_ps(
                    _mm256_set1_ps(b[j]),
                    _mm256_loadu_ps(a.as_ptr().add(j * n + i)),
                )
            };
            let mut t = _mm256_add_ps(_mm256_add_ps(term(0), term(1)), term(2));
            t = _mm256_add_ps(t, term(3));
            let mut j = 4;
            while j < rk {
                t = _mm256_add_ps(t, term(j));
                j += 1;
            }
            mx = add_w0(t, &w0[i..i + 8], s0v, &mut w[i..i + 8], mx);
        }
        i += 8;
    }
    for j in main..n {
        let x = |r: usize| b[r] * a[r * n + j];
        let mut t = x(0) + x(1) + x(2) + x(3);
        for r in 4..rk {
            t += x(r);
        }
        w[j] = t + s0 * w0[j] as f32;
    }
    // SAFETY: this function's contract.
    unsafe { quantise(w, mx, main, out) }
}

/// The `Kernels::rebuild_layer_i8` slot: a k×k expert (the stem) by [`kxk_layer`]; a 1x1
/// expert with f32 factors, rank ≥ 4 and `n = Cin ∈ {8, 16, …, 64}` (the small models' 24-
/// and 48-channel experts) with each row in registers ([`in_registers`]); up to 48 weights
/// in pairs of channels (`M = 2`): each channel's chain `B·A` → `max|w|` → two divisions →
/// codes is latency-bound, and two independent chains fill each other's waits; 56 and 64
/// one channel at a time (two would not fit the 16 registers). `false` for other shapes
/// (then channel by channel).
pub(crate) fn rebuild_layer_i8(
    d: &Delta<'_>,
    w0: &[i8],
    s0: &[f32],
    out: &mut [i8],
    out_scale: &mut [f32],
) -> bool {
    rows_layer(d, w0, s0, out, out_scale, false)
}

/// [`rebuild_layer_i8`]'s body; `vl`: AVX-512 VL is there (the AVX-512 table), so the same
/// 8-lane rows have 32 registers and up to 48 weights take four channels at a time
/// ([`in_registers_vl`]): with two, each pair's tail (`max|w|`, two divisions, codes) waited
/// on its own chain, and the 24-channel experts of the small models took twice as long per
/// weight as the 48-channel ones in 16 lanes (four: the `Auto` switch at 0.5x @64 2.5 %
/// faster; eight: no faster).
fn rows_layer(
    d: &Delta<'_>,
    w0: &[i8],
    s0: &[f32],
    out: &mut [i8],
    out_scale: &mut [f32],
    vl: bool,
) -> bool {
    let (n, rk, cout) = (d.channel_len(), d.a.rows, d.cout);
    let Some((a, b)) = d.f32_factors() else {
        return false;
    };
    if d.k > 1 {
        return kxk_layer(d, a, b, w0, s0, out, out_scale, vl);
    }
    if rk < 4 || n % 8 != 0 || !(8..=64).contains(&n) || !d.layer_fits(w0, s0, out, out_scale) {
        return false;
    }
    let mut o = 0;
    while o < cout {
        let m = match (n <= 48, vl) {
            (true, true) if o + 4 <= cout => 4,
            (true, _) if o + 2 <= cout => 2,
            _ => 1,
        };
        let (b, w0, s0) = (&b[o * rk..][..m * rk], &w0[o * n..][..m * n], &s0[o..o + m]);
        let out = &mut out[o * n..][..m * n];
        // SAFETY: AVX2 (this slot is only installed after detection), AVX-512 F/VL with
        // `vl` (the AVX-512 table's); `a` holds `rk` rows of `n = N·8`, `b` `M` rows of
        // `rk`, `w0`/`out` `M·n`, `s0` `M` (checked above).
        unsafe {
            macro_rules! go {
                ($n:literal) => {{
                    let os = &mut out_scale[o..o + m];
                    match (m, vl) {
                        (4, _) => os.copy_from_slice(&in_registers_vl::<$n, 4>(a, b, w0, s0, out)),
                        (2, true) => {
                            os.copy_from_slice(&in_registers_vl::<$n, 2>(a, b, w0, s0, out))
                        }
                        (2, false) => os.copy_from_slice(&in_registers::<$n, 2>(a, b, w0, s0, out)),
                        (_, true) => {
                            os.copy_from_slice(&in_registers_vl::<$n, 1>(a, b, w0, s0, out))
                        }
                        _ => os.copy_from_slice(&in_registers::<$n, 1>(a, b, w0, s0, out)),
                    }
                }};
            }
            match n / 8 {
                1 => go!(1),
                2 => go!(2),
                3 => go!(3),
                4 => go!(4),
                5 => go!(5),
                6 => go!(6),
                7 => go!(7),
                _ => go!(8),
            }
        }
        o += m;
    }
    true
}

/// `M` consecutive output channels of a 1x1 expert with `n = N·8` weights each, rows kept
/// in `N·M` registers: nothing is stored and reloaded between `B·A + s0·W0q` and the
/// quantisation, and `max|w|` is reduced in registers. Every element takes [`fused`]'s
/// operations in its order (then [`quantise`]'s), so the same bits.
///
/// # Safety
/// AVX2 available; `a` holds `rk ≥ 4` rows of `n`; `b` `M` rows of `rk` (`b.len() = M·rk`);
/// `w0` and `out` `M·n`; `s0` `M`.
#[target_feature(enable = "avx2")]
unsafe fn in_registers<const N: usize, const M: usize>(
    a: &[f32],
    b: &[f32],
    w0: &[i8],
    s0: &[f32],
    out: &mut [i8],
) -> [f32; M] {
    // SAFETY: this function's contract.
    unsafe { rows_in_registers::<N, M>(a, b, w0, s0, out) }
}

/// [`in_registers`] compiled with AVX-512 F/VL: the same instructions on 8 lanes, with 32
/// registers for the `N·M` rows.
///
/// # Safety
/// As [`in_registers`], and AVX-512 F/VL available.
#[target_feature(enable = "avx2,avx512f,avx512vl")]
unsafe fn in_registers_vl<const N: usize, const M: usize>(
    a: &[f32],
    b: &[f32],
    w0: &[i8],
    s0: &[f32],
    out: &mut [i8],
) -> [f32; M] {
    // SAFETY: this function's contract.
    unsafe { rows_in_registers::<N, M>(a, b, w0, s0, out) }
}

/// The body of [`in_registers`] and [`in_registers_vl`], inlined into each (and compiled
/// with its features).
///
/// # Safety
/// As [`in_registers`].
#[inline(always)]
unsafe fn rows_in_registers<const N: usize, const M: usize>(
    a: &[f32],
    b: &[f32],
    w0: &[i8],
    s0: &[f32],
    out: &mut [i8],
) -> [f32; M] {
    let (n, rk) = (N * 8, b.len() / M);
    debug_assert!(rk >= 4 && a.len() >= rk * n && b.len() == M * rk);
    debug_assert!(w0.len() >= M * n && out.len() >= M * n && s0.len() >= M);
    // SAFETY: 8 lanes of row `j < rk` at `i·8 + 8 ≤ n` (`a` holds `rk·n`).
    let row = |j: usize, i: usize| unsafe { _mm256_loadu_ps(a.as_ptr().add(j * n + i * 8)) };
    let coef = |m: usize, j: usize| _mm256_set1_ps(b[m * rk + j]);
    // `((b0·a0 + b1·a1) + b2·a2) + b3·a3`, then each further row in order ([`fused`]).
    // (Loops, not `array::from_fn`: a closure handed to it does not inline here, so every
    // element was a call.)
    let mut t = [[_mm256_setzero_ps(); N]; M];
    for (m, tm) in t.iter_mut().enumerate() {
        let (c0, c1) = (coef(m, 0), coef(m, 1));
        for (i, ti) in tm.iter_mut().enumerate() {
            *ti = _mm256_add_ps(_mm256_mul_ps(c0, row(0, i)), _mm256_mul_ps(c1, row(1, i)));
        }
    }
    for j in 2..rk {
        let mut r = [_mm256_setzero_ps(); N];
        for (i, ri) in r.iter_mut().enumerate() {
            *ri = row(j, i);
        }
        for (m, tm) in t.iter_mut().enumerate() {
            let c = coef(m, j);
            for (ti, ri) in tm.iter_mut().zip(r) {
                *ti = _mm256_add_ps(*ti, _mm256_mul_ps(c, ri));
            }
        }
    }
    let mut amax = [0u32; M];
    for (m, tm) in t.iter_mut().enumerate() {
        let s0v = _mm256_set1_ps(s0[m]);
        let mut mx = _mm256_setzero_si256();
        for (i, ti) in tm.iter_mut().enumerate() {
            // SAFETY: `w0` holds `M·n ≥ m·n + i·8 + 8` bytes.
            let q = unsafe { _mm_loadl_epi64(w0.as_ptr().add(m * n + i * 8).cast()) };
            let q = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(q));
            *ti = _mm256_add_ps(*ti, _mm256_mul_ps(s0v, q));
            mx = _mm256_max_epi32(mx, abs_bits(*ti));
        }
        amax[m] = reduce_max8(mx);
        if amax[m] > INF_BITS {
            // A NaN took part: the max again without the NaNs (the reference skips them).
            amax[m] = reduce_max8(
                tm.iter()
                    .fold(_mm256_setzero_si256(), |mx, &v| max_abs_bits(mx, v)),
            );
        }
    }
    let scale = amax.map(|bits| weight_scale(f32::from_bits(bits)));
    for (m, tm) in t.iter().enumerate() {
        let invv = _mm256_set1_ps(1.0 / scale[m]);
        for (i, ti) in tm.iter().enumerate() {
            // SAFETY: `out` holds `M·n ≥ m·n + i·8 + 8` bytes.
            unsafe {
                _mm_storel_epi64(
                    out.as_mut_ptr().add(m * n + i * 8).cast(),
                    codes8(*ti, invv),
                )
            };
        }
    }
    scale
}

/// `Kernels::materialize_f32` (`switch::materialize_f32`, its bits): the portable rows
/// compiled for AVX2 lanes.
pub(crate) fn materialize_f32(w0: &[f32], d: &Delta<'_>, out: &mut [f32]) {
    // SAFETY: only installed after AVX2 detection; the body is safe code.
    unsafe { materialize_f32_avx2(w0, d, out) }
}

#[target_feature(enable = "avx2")]
unsafe fn materialize_f32_avx2(w0: &[f32], d: &Delta<'_>, out: &mut [f32]) {
    crate::switch::materialize_f32_inline(w0, d, out)
}

/// [`materialize_f32`] compiled for AVX-512F (16 lanes).
pub(crate) fn materialize_f32_avx512(w0: &[f32], d: &Delta<'_>, out: &mut [f32]) {
    // SAFETY: only installed after AVX-512 detection; the body is safe code.
    unsafe { materialize_f32_zmm(w0, d, out) }
}

#[target_feature(enable = "avx2,avx512f")]
unsafe fn materialize_f32_zmm(w0: &[f32], d: &Delta<'_>, out: &mut [f32]) {
    crate::switch::materialize_f32_inline(w0, d, out)
}

/// The AVX-512 table's `Kernels::rebuild_i8`: [`rebuild_i8`]'s passes on 16 lanes — a 1x1
/// channel with f32 factors in one register pass per 16 weights ([`fused`]'s operations
/// and order), other channels by `Delta::channel_into_i8` compiled for AVX-512F, then the
/// `+ s0·W0q`, `max|w|` and the codes 16 at a time; the last `n mod 16` as the scalar
/// steps of the AVX2 forms. The same operations on every element, so the same bits.
pub(crate) fn rebuild_i8_avx512(
    d: &Delta<'_>,
    o: usize,
    w0: &[i8],
    s0: f32,
    w: &mut [f32],
    out: &mut [i8],
) -> f32 {
    let n = d.channel_len();
    // SAFETY: only installed after AVX-512 detection; the three slices hold `n` elements.
    unsafe { rebuild_zmm(d, o, &w0[..n], s0, &mut w[..n], &mut out[..n]) }
}

/// # Safety
/// AVX-512 F/BW/DQ/VL available; `w0.len() == out.len() == w.len() == d.channel_len()`.
#[target_feature(enable = "avx2,avx512f,avx512bw,avx512dq,avx512vl")]
unsafe fn rebuild_zmm(
    d: &Delta<'_>,
    o: usize,
    w0: &[i8],
    s0: f32,
    w: &mut [f32],
    out: &mut [i8],
) -> f32 {
    let (n, rk) = (w.len(), d.a.rows);
    let main = n & !15;
    let s0v = _mm512_set1_ps(s0);
    let mut mx = _mm512_setzero_si512();
    let fused = match (d.a.as_f32(), d.b.as_f32(), d.k) {
        (Some(a), Some(b), 1) if rk >= 4 && a.len() >= rk * n && b.len() >= (o + 1) * rk => {
            Some((&a[..rk * n], &b[o * rk..][..rk]))
        }
        _ => None,
    };
    match fused {
        Some((a, b)) => {
            for i in (0..main).step_by(16) {
                // SAFETY: `i + 16 ≤ n`: 16 lanes of every `a` row (`j·n + i + 16 ≤ rk·n`).
                let term = |j: usize| unsafe {
                    _mm512_mul_ps(
                        _mm512_set1_ps(b[j]),
                        _mm512_loadu_ps(a.as_ptr().add(j * n + i)),
                    )
                };
                let mut t = _mm512_add_ps(_mm512_add_ps(term(0), term(1)), term(2));
                t = _mm512_add_ps(t, term(3));
                for j in 4..rk {
                    t = _mm512_add_ps(t, term(j));
                }
                // SAFETY: `i + 16 ≤ n` for `w0` and `w`.
                mx = unsafe { add_w0_16(t, w0.as_ptr().add(i), s0v, w.as_mut_ptr().add(i), mx) };
            }
            for j in main..n {
                let x = |r: usize| b[r] * a[r * n + j];
                let mut t = x(0) + x(1) + x(2) + x(3);
                for r in 4..rk {
                    t += x(r);
                }
                w[j] = t + s0 * w0[j] as f32;
            }
        }
        None => {
            d.channel_into_i8_inline(o, w);
            for i in (0..main).step_by(16) {
                // SAFETY: `i + 16 ≤ n` for `w0` and `w`.
                mx = unsafe {
                    let t = _mm512_loadu_ps(w.as_ptr().add(i));
                    add_w0_16(t, w0.as_ptr().add(i), s0v, w.as_mut_ptr().add(i), mx)
                };
            }
            for j in main..n {
                w[j] += s0 * w0[j] as f32;
            }
        }
    }
    // The scale and codes, as `quantise`: `max|w|` from the lanes and the scalar rest.
    let lanes_max = _mm512_reduce_max_epi32(mx) as u32;
    let s = weight_scale(f32::from_bits(amax_bits(lanes_max, &w[main..n])));
    let inv = 1.0 / s;
    let invv = _mm512_set1_ps(inv);
    for i in (0..main).step_by(16) {
        // SAFETY: `i + 16 ≤ n`: 16 f32 read, 16 bytes written.
        unsafe {
            let v = _mm512_loadu_ps(w.as_ptr().add(i));
            _mm_storeu_si128(out.as_mut_ptr().add(i).cast(), codes16(v, invv));
        }
    }
    for j in main..n {
        out[j] = quantize_weight(w[j] * inv);
    }
    s
}

/// `w = t + s0·W0q` for 16 weights (the reference's product then add), stored, and the
/// running `max|w|` lanes ([`max_abs_bits16`]).
///
/// # Safety
/// AVX-512 F/BW/DQ/VL available; `w0` readable for 16 bytes, `w` writable for 16 f32.
#[inline]
#[target_feature(enable = "avx2,avx512f,avx512bw,avx512dq,avx512vl")]
unsafe fn add_w0_16(t: __m512, w0: *const i8, s0v: __m512, w: *mut f32, mx: __m512i) -> __m512i {
    // SAFETY: this function's contract.
    let v = unsafe {
        let q = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128(w0.cast())));
        let v = _mm512_add_ps(t, _mm512_mul_ps(s0v, q));
        _mm512_storeu_ps(w, v);
        v
    };
    max_abs_bits16(mx, v)
}

/// `|v|`'s bit patterns on 16 lanes: their integer max is `max|w|`'s pattern while no lane
/// is a NaN (a NaN's pattern is above [`INF_BITS`]: then [`max_abs_bits16`] redoes it).
#[inline]
#[target_feature(enable = "avx512f")]
fn abs_bits16(v: __m512) -> __m512i {
    _mm512_and_si512(_mm512_castps_si512(v), _mm512_set1_epi32(0x7fff_ffff))
}

/// [`abs_bits16`] on 8 lanes.
#[inline]
#[target_feature(enable = "avx2")]
fn abs_bits(v: __m256) -> __m256i {
    _mm256_and_si256(_mm256_castps_si256(v), _mm256_set1_epi32(0x7fff_ffff))
}

/// `+∞`'s bit pattern: every larger `|w|` pattern is a NaN's.
const INF_BITS: u32 = 0x7f80_0000;

/// The largest of 8 lanes, compared as i32 (every caller's lanes are `|w|` bit patterns,
/// non-negative).
#[inline]
#[target_feature(enable = "avx2")]
fn reduce_max8(mx: __m256i) -> u32 {
    let m4 = _mm_max_epi32(
        _mm256_castsi256_si128(mx),
        _mm256_extracti128_si256::<1>(mx),
    );
    let m2 = _mm_max_epi32(m4, _mm_shuffle_epi32::<0b01_00_11_10>(m4));
    let m1 = _mm_max_epi32(m2, _mm_shuffle_epi32::<0b10_11_00_01>(m2));
    _mm_cvtsi128_si32(m1) as u32
}

/// [`max_abs_bits`] on 16 lanes (the NaN test as a mask).
#[inline]
#[target_feature(enable = "avx512f")]
fn max_abs_bits16(mx: __m512i, v: __m512) -> __m512i {
    let b = _mm512_and_si512(_mm512_castps_si512(v), _mm512_set1_epi32(0x7fff_ffff));
    let nan = _mm512_cmpgt_epi32_mask(b, _mm512_set1_epi32(0x7f80_0000));
    _mm512_max_epi32(mx, _mm512_maskz_mov_epi32(!nan, b))
}

/// The AVX-512 table's `Kernels::rebuild_layer_i8`: a 1x1 expert with f32 factors, rank ≥ 4
/// and `n = Cin ∈ {16, 32, 48, 64}` with each row in 16-lane registers, several channels
/// at a time ([`in_zmm`]: the chains of several channels fill each other's latencies, and
/// each row of `A` loaded serves them all): eight up to 48 weights (32 registers hold
/// 8 × 3 rows; the `Auto` switch at 0.5x @64 1.5 % faster by the runs' minima than with
/// four, 2.7 % by the rounds' median ratio), else four (4 × 4);
/// other shapes as the AVX2 slot ([`rows_layer`], with 32 registers). The same operations
/// on every element, so the same bits.
pub(crate) fn rebuild_layer_i8_avx512(
    d: &Delta<'_>,
    w0: &[i8],
    s0: &[f32],
    out: &mut [i8],
    out_scale: &mut [f32],
) -> bool {
    let (n, rk, cout) = (d.channel_len(), d.a.rows, d.cout);
    let fits = d.k == 1 && rk >= 4 && n % 16 == 0 && (16..=64).contains(&n);
    let Some((a, b)) = d
        .f32_factors()
        .filter(|_| fits && d.layer_fits(w0, s0, out, out_scale))
    else {
        return rows_layer(d, w0, s0, out, out_scale, true);
    };
    let mut o = 0;
    while o < cout {
        let m = match n <= 48 {
            true if o + 8 <= cout => 8,
            _ if o + 4 <= cout => 4,
            _ => 1,
        };
        let (b, w0, s0) = (&b[o * rk..][..m * rk], &w0[o * n..][..m * n], &s0[o..o + m]);
        let out = &mut out[o * n..][..m * n];
        // SAFETY: AVX-512 (this slot is only installed after detection); `a` holds `rk`
        // rows of `n = N·16`, `b` `M` rows of `rk`, `w0`/`out` `M·n`, `s0` `M` (checked
        // above).
        unsafe {
            macro_rules! go {
                ($n:literal) => {
                    if m == 8 {
                        let s = in_zmm::<$n, 8>(a, b, w0, s0, out);
                        out_scale[o..o + 8].copy_from_slice(&s);
                    } else if m == 4 {
                        let s = in_zmm::<$n, 4>(a, b, w0, s0, out);
                        out_scale[o..o + 4].copy_from_slice(&s);
                    } else {
                        out_scale[o] = in_zmm::<$n, 1>(a, b, w0, s0, out)[0];
                    }
                };
            }
            match n / 16 {
                1 => go!(1),
                2 => go!(2),
                3 => go!(3),
                _ => go!(4),
            }
        }
        o += m;
    }
    true
}

/// [`in_registers`] on 16-lane registers: `M` consecutive output channels of `n = N·16`
/// weights each, every element taking [`fused`]'s operations in its order, `max|w|` as the
/// lane-wise max of the bit patterns, then [`codes8`]'s rounding ([`codes16`]).
///
/// # Safety
/// AVX-512 F/BW/DQ/VL available; `a` holds `rk ≥ 4` rows of `n`; `b` `M` rows of `rk`;
/// `w0` and `out` `M·n`; `s0` `M`.
#[target_feature(enable = "avx2,avx512f,avx512bw,avx512dq,avx512vl")]
unsafe fn in_zmm<const N: usize, const M: usize>(
    a: &[f32],
    b: &[f32],
    w0: &[i8],
    s0: &[f32],
    out: &mut [i8],
) -> [f32; M] {
    let (n, rk) = (N * 16, b.len() / M);
    debug_assert!(rk >= 4 && a.len() >= rk * n && b.len() == M * rk);
    debug_assert!(w0.len() >= M * n && out.len() >= M * n && s0.len() >= M);
    // SAFETY: 16 lanes of row `j < rk` at `i·16 + 16 ≤ n` (`a` holds `rk·n`).
    let row = |j: usize, i: usize| unsafe { _mm512_loadu_ps(a.as_ptr().add(j * n + i * 16)) };
    let coef = |m: usize, j: usize| _mm512_set1_ps(b[m * rk + j]);
    // `((b0·a0 + b1·a1) + b2·a2) + b3·a3`, then each further row in order ([`fused`]).
    let mut t: [[__m512; N]; M] = core::array::from_fn(|m| {
        let (c0, c1) = (coef(m, 0), coef(m, 1));
        core::array::from_fn(|i| {
            _mm512_add_ps(_mm512_mul_ps(c0, row(0, i)), _mm512_mul_ps(c1, row(1, i)))
        })
    });
    for j in 2..rk {
        let r: [__m512; N] = core::array::from_fn(|i| row(j, i));
        for (m, tm) in t.iter_mut().enumerate() {
            let c = coef(m, j);
            for (ti, ri) in tm.iter_mut().zip(r) {
                *ti = _mm512_add_ps(*ti, _mm512_mul_ps(c, ri));
            }
        }
    }
    let mut scale = [0.0f32; M];
    for (m, tm) in t.iter_mut().enumerate() {
        let s0v = _mm512_set1_ps(s0[m]);
        let mut mx = _mm512_setzero_si512();
        for (i, ti) in tm.iter_mut().enumerate() {
            // SAFETY: `w0` holds `M·n ≥ m·n + i·16 + 16` bytes.
            let q = unsafe { _mm_loadu_si128(w0.as_ptr().add(m * n + i * 16).cast()) };
            let q = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(q));
            *ti = _mm512_add_ps(*ti, _mm512_mul_ps(s0v, q));
            mx = _mm512_max_epi32(mx, abs_bits16(*ti));
        }
        let mut amax = _mm512_reduce_max_epi32(mx) as u32;
        if amax > INF_BITS {
            // A NaN took part: the max again without the NaNs (the reference skips them).
            let mx = tm
                .iter()
                .fold(_mm512_setzero_si512(), |mx, &v| max_abs_bits16(mx, v));
            amax = _mm512_reduce_max_epi32(mx) as u32;
        }
        scale[m] = weight_scale(f32::from_bits(amax));
    }
    for (m, tm) in t.iter().enumerate() {
        let invv = _mm512_set1_ps(1.0 / scale[m]);
        for (i, ti) in tm.iter().enumerate() {
            // SAFETY: `out` holds `M·n ≥ m·n + i·16 + 16` bytes.
            unsafe {
                _mm_storeu_si128(
                    out.as_mut_ptr().add(m * n + i * 16).cast(),
                    codes16(*ti, invv),
                )
            };
        }
    }
    scale
}

/// [`codes8`] for 16 weights, as 16 bytes ([`super::round_away16`] up to 127).
#[inline]
#[target_feature(enable = "avx2,avx512f,avx512bw,avx512dq,avx512vl")]
fn codes16(w: __m512, invv: __m512) -> __m128i {
    _mm512_cvtsepi32_epi8(super::round_away16(_mm512_mul_ps(w, invv), 127.0))
}

/// Widest stem row `Cin·k` [`kxk_rows`] keeps in registers (two vectors).
const KXK_MAX_COLS: usize = 16;
/// Largest `k` [`kxk_rows`] takes (`k` rows of two vectors: 10 accumulators at `k = 5`).
const KXK_MAX_K: usize = 5;

/// A k×k expert with f32 factors (the stem: `A [r·k, Cin·k]`, `B [Cout·k, r·k]`, rank
/// rows `r·k ≥ 4`, `Cin·k ≤ 16`, `k ≤ 5`), channel by channel: [`kxk_rows`], then [`body`].
/// One row of `B·A` is `Cin·k` (9 at a 3-channel 3×3 stem) sums of `r·k` (24 at rank 8)
/// dependent adds, so the portable row loop waited on each add's latency, a row at a time
/// (~2 µs of the 5 µs the streamed stem's rebuild took at every inference, 0.5x @32); the
/// `k` rows of a channel are independent chains, run side by side. `false` (nothing
/// written) for other shapes.
#[allow(clippy::too_many_arguments)]
fn kxk_layer(
    d: &Delta<'_>,
    a: &[f32],
    b: &[f32],
    w0: &[i8],
    s0: &[f32],
    out: &mut [i8],
    out_scale: &mut [f32],
    vl: bool,
) -> bool {
    let (n, rk, ck, k) = (d.channel_len(), d.a.rows, d.a.cols, d.k);
    if rk < 4 || ck > KXK_MAX_COLS || k > KXK_MAX_K || !d.layer_fits(w0, s0, out, out_scale) {
        return false;
    }
    let mut w = [0f32; KXK_GROUP * KXK_MAX_K * KXK_MAX_COLS];
    let mut o = 0;
    while o < d.cout {
        // With AVX-512 VL (32 registers) the channels of a 3x3 (or smaller) stem go four at
        // a time: `K·4` row pairs share each row of `A` loaded, and four channels' chains
        // fill each other's add latencies (the 3→24 stem's rebuild ~0.5 µs faster).
        let m = if vl && k <= 3 && o + KXK_GROUP <= d.cout {
            KXK_GROUP
        } else {
            1
        };
        let bo = &b[o * k * rk..][..m * k * rk];
        let w = &mut w[..m * n];
        // SAFETY: AVX2 (this slot is only installed after detection), AVX-512 F/VL where
        // `m > 1` (only with `vl`); `a` holds `rk` rows of `ck ≤ 16`, `bo` `m·k ≤ 20` rows
        // of `rk`, `w` `m·k·ck` (`f32_factors`, checked above).
        unsafe {
            match (k, m) {
                (2, 1) => kxk_rows::<2>(a, bo, ck, w),
                (3, 1) => kxk_rows::<3>(a, bo, ck, w),
                (4, 1) => kxk_rows::<4>(a, bo, ck, w),
                (_, 1) => kxk_rows::<5>(a, bo, ck, w),
                (2, _) => kxk_rows_vl::<8>(a, bo, ck, w),
                _ => kxk_rows_vl::<12>(a, bo, ck, w),
            }
        }
        for (j, w) in w.chunks_exact_mut(n).enumerate() {
            let (w0, out) = (&w0[(o + j) * n..][..n], &mut out[(o + j) * n..][..n]);
            // SAFETY: AVX2, as above; the three slices hold `n` elements.
            out_scale[o + j] = unsafe { body(w, w0, s0[o + j], out) };
        }
        o += m;
    }
    true
}

/// Channels [`kxk_layer`] rebuilds at a time with AVX-512 VL.
const KXK_GROUP: usize = 4;

/// [`kxk_rows`] compiled with AVX-512 F/VL (32 registers): `R = 4·k` rows, four channels'.
///
/// # Safety
/// As [`kxk_rows`], and AVX-512 F/VL available.
#[target_feature(enable = "avx2,avx512f,avx512vl")]
unsafe fn kxk_rows_vl<const R: usize>(a: &[f32], b: &[f32], ck: usize, w: &mut [f32]) {
    // SAFETY: this function's contract.
    unsafe { rows_kxk::<R>(a, b, ck, w) }
}

/// `w[r·ck + c] = Σ_j b[r·rk + j]·a[j·ck + c]` for the `K` rows of one channel, each row
/// in two 8-lane accumulators (the second masked to `ck − 8` lanes), every element summed
/// as `Delta::channel_into_i8`: `((b0·a0 + b1·a1) + b2·a2) + …`, each further row in
/// order, products then adds (no FMA), so the same bits. (The rows of consecutive channels
/// follow each other in `b` and `w`, so [`kxk_rows_vl`] runs several channels as more rows.)
///
/// # Safety
/// AVX2 available; `ck ≤ 16`; `a` holds `rk = b.len() / K ≥ 4` rows of `ck`; `b` `K` rows
/// of `rk`; `w` `K·ck` elements.
#[target_feature(enable = "avx2")]
unsafe fn kxk_rows<const K: usize>(a: &[f32], b: &[f32], ck: usize, w: &mut [f32]) {
    // SAFETY: this function's contract.
    unsafe { rows_kxk::<K>(a, b, ck, w) }
}

/// The body of [`kxk_rows`] and [`kxk_rows_vl`], inlined into each (and compiled with its
/// features).
///
/// # Safety
/// As [`kxk_rows`].
#[inline(always)]
unsafe fn rows_kxk<const K: usize>(a: &[f32], b: &[f32], ck: usize, w: &mut [f32]) {
    let rk = b.len() / K;
    debug_assert!(ck <= KXK_MAX_COLS && rk >= 4 && a.len() >= rk * ck && w.len() >= K * ck);
    // Lane masks of the two vectors: the first `min(ck, 8)`, then the rest.
    let lanes = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    let m0 = _mm256_cmpgt_epi32(_mm256_set1_epi32(ck as i32), lanes);
    let m1 = _mm256_cmpgt_epi32(_mm256_set1_epi32(ck as i32 - 8), lanes);
    // SAFETY: masked loads read only the lanes below `ck` of row `j < rk` (inside `a`); a
    // masked-off lane is not accessed, so the second vector's address may lie past `a`
    // when `ck ≤ 8` (hence `wrapping_add`).
    let row = |j: usize| unsafe {
        let p = a.as_ptr().add(j * ck);
        [
            _mm256_maskload_ps(p, m0),
            _mm256_maskload_ps(p.wrapping_add(8), m1),
        ]
    };
    let term = |r: usize, j: usize, x: [__m256; 2]| {
        let c = _mm256_set1_ps(b[r * rk + j]);
        [_mm256_mul_ps(c, x[0]), _mm256_mul_ps(c, x[1])]
    };
    let (x0, x1) = (row(0), row(1));
    // (A loop, not `array::from_fn`: its closure is not inlined into this body.)
    let mut t = [[_mm256_setzero_ps(); 2]; K];
    for (r, tr) in t.iter_mut().enumerate() {
        let (p, q) = (term(r, 0, x0), term(r, 1, x1));
        *tr = [_mm256_add_ps(p[0], q[0]), _mm256_add_ps(p[1], q[1])];
    }
    for j in 2..rk {
        let x = row(j);
        for (r, tr) in t.iter_mut().enumerate() {
            let p = term(r, j, x);
            tr[0] = _mm256_add_ps(tr[0], p[0]);
            tr[1] = _mm256_add_ps(tr[1], p[1]);
        }
    }
    for (r, tr) in t.iter().enumerate() {
        // SAFETY: masked stores write only the lanes below `ck` of row `r < K` of `w`
        // (`K·ck`); as for the loads, the second address may lie past `w` when `ck ≤ 8`.
        unsafe {
            let p = w.as_mut_ptr().add(r * ck);
            _mm256_maskstore_ps(p, m0, tr[0]);
            _mm256_maskstore_ps(p.wrapping_add(8), m1, tr[1]);
        }
    }
}

/// AVX2 per-channel weight re-quantisation; same contract and bits as the reference.
pub(crate) fn requant_weights(w: &mut [f32], w0: &[i8], s0: f32, out: &mut [i8]) -> f32 {
    let n = w.len();
    // SAFETY: only installed after AVX2 detection; the three slices hold `n` elements.
    unsafe { body(w, &w0[..n], s0, &mut out[..n]) }
}

/// # Safety
/// AVX2 available; `w0.len() == out.len() == w.len()`.
#[target_feature(enable = "avx2")]
unsafe fn body(w: &mut [f32], w0: &[i8], s0: f32, out: &mut [i8]) -> f32 {
    let n = w.len();
    let main = n & !7;
    let s0v = _mm256_set1_ps(s0);
    let mut mx = _mm256_setzero_si256();
    let mut i = 0;
    while i < main {
        // SAFETY: `i + 8 <= n` for all three slices.
        unsafe {
            let t = _mm256_loadu_ps(w.as_ptr().add(i));
            mx = add_w0(t, &w0[i..i + 8], s0v, &mut w[i..i + 8], mx);
        }
        i += 8;
    }
    for j in main..n {
        w[j] += s0 * w0[j] as f32;
    }
    // SAFETY: this function's contract.
    unsafe { quantise(w, mx, main, out) }
}

/// `w = t + s0·W0q` for 8 weights (the reference's product then add) and the running
/// `max|w|` lanes `mx` ([`max_abs_bits`]): the step [`body`] and [`fused`] share.
#[inline]
#[target_feature(enable = "avx2")]
fn add_w0(t: __m256, w0: &[i8], s0v: __m256, w: &mut [f32], mx: __m256i) -> __m256i {
    let (w0, w) = (&w0[..8], &mut w[..8]);
    // SAFETY: `w0` holds 8 bytes, `w` 8 f32.
    let v = unsafe {
        let q = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64(w0.as_ptr().cast())));
        let v = _mm256_add_ps(t, _mm256_mul_ps(s0v, q));
        _mm256_storeu_ps(w.as_mut_ptr(), v);
        v
    };
    max_abs_bits(mx, v)
}

/// `mx` lane-wise max with `|v|`'s bit patterns, a NaN (above the infinity pattern) as 0:
/// non-negative, so a signed max.
#[inline]
#[target_feature(enable = "avx2")]
fn max_abs_bits(mx: __m256i, v: __m256) -> __m256i {
    let b = _mm256_and_si256(_mm256_castps_si256(v), _mm256_set1_epi32(0x7fff_ffff));
    let nan = _mm256_cmpgt_epi32(b, _mm256_set1_epi32(0x7f80_0000));
    _mm256_max_epi32(mx, _mm256_andnot_si256(nan, b))
}

/// The reference's scale and codes of the finished row `w`: `max|w|` from the lanes `mx`
/// (covering `w[..main]`) and the scalar rest, `s = max/127` (1 for an all-zero row), then
/// `q = round(w · 1/s)` 8 lanes at a time.
///
/// # Safety
/// AVX2 available; `out.len() == w.len()`, `main` = `w.len()` rounded down to 8.
#[target_feature(enable = "avx2")]
unsafe fn quantise(w: &[f32], mx: __m256i, main: usize, out: &mut [i8]) -> f32 {
    let n = w.len();
    // The lanes hold `|w|` patterns without NaNs (`max_abs_bits`): non-negative as i32.
    let s = weight_scale(f32::from_bits(amax_bits(reduce_max8(mx), &w[main..n])));
    let inv = 1.0 / s;
    let invv = _mm256_set1_ps(inv);
    let mut i = 0;
    while i < main {
        // SAFETY: `i + 8 <= n`: 8 f32 read, 8 bytes written.
        unsafe {
            let v = _mm256_loadu_ps(w.as_ptr().add(i));
            _mm_storel_epi64(out.as_mut_ptr().add(i).cast(), codes8(v, invv));
        }
        i += 8;
    }
    for j in main..n {
        out[j] = quantize_weight(w[j] * inv);
    }
    s
}

/// The int8 codes `quantize_weight(w · inv)` of 8 weights in the low 8 bytes, as
/// `fixed::quantize_weight_fast`: `trunc(min(|t| + h, 127))` with `h` the float below ½
/// (round half away from zero for every `|t| ≤ 2^22`; past 126.5 the result is 127, the
/// reference's clamp), a NaN sum made 0 by `max(·, 0)`, and `t`'s sign put back
/// ([`super::round_away8`]). 9 instructions where the fraction test took 15.
#[inline]
#[target_feature(enable = "avx2")]
fn codes8(w: __m256, invv: __m256) -> __m128i {
    super::narrow8(super::round_away8(_mm256_mul_ps(w, invv), 127.0))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::reference::requant_weights::quantize_weight;

    /// [`codes8`] and [`codes16`] are `quantize_weight(w · inv)` lane by lane: products at
    /// and next to every tie `k + ½` (`k` up to ±130: a `+ ½` for the float below it, or a
    /// clamp before the rounding, would show), NaN, ±∞, ±0, subnormals and random bit
    /// patterns. Seed: `LORKD_SEED`.
    #[test]
    fn codes_are_quantize_weight() {
        if !super::super::detected() {
            println!("SKIPPED codes_are_quantize_weight: no AVX2 on this CPU");
            return;
        }
        let wide = super::super::avx512_detected();
        if !wide {
            println!("SKIPPED codes_are_quantize_weight (codes16): no AVX-512 on this CPU");
        }
        let mut rng = crate::engine::testnet::Rng::new(crate::test_seed());
        for _ in 0..50_000 {
            let inv = match rng.below(3) {
                0 => 1.0,
                1 => f32::powi(2.0, rng.below(12) as i32 - 6),
                _ => 0.01 + rng.uniform(10.0).abs(),
            };
            let w: [f32; 16] = core::array::from_fn(|_| match rng.below(6) {
                0 => (rng.below(261) as f32 - 130.0 + 0.5) / inv,
                1 => {
                    let t = (rng.below(261) as f32 - 130.0 + 0.5) / inv;
                    f32::from_bits(
                        t.to_bits()
                            .wrapping_add(rng.below(5) as u32)
                            .wrapping_sub(2),
                    )
                }
                2 => [
                    f32::NAN,
                    -f32::NAN,
                    f32::INFINITY,
                    f32::NEG_INFINITY,
                    0.0,
                    -0.0,
                    1e-40,
                ][rng.below(7)],
                3 => f32::from_bits(rng.next_u64() as u32),
                _ => rng.uniform(140.0) / inv,
            });
            let want: [i8; 16] = core::array::from_fn(|i| quantize_weight(w[i] * inv));
            let mut got = [0i8; 16];
            // SAFETY: AVX2 detected above; `w` holds 16 floats, `got` 16 bytes.
            unsafe {
                for h in 0..2 {
                    let v = _mm256_loadu_ps(w.as_ptr().add(8 * h));
                    let c = codes8(v, _mm256_set1_ps(inv));
                    _mm_storel_epi64(got.as_mut_ptr().add(8 * h).cast(), c);
                }
            }
            assert_eq!(got, want, "codes8 {w:?} · {inv}");
            if wide {
                // SAFETY: AVX-512 detected above.
                unsafe {
                    let v = _mm512_loadu_ps(w.as_ptr());
                    _mm_storeu_si128(got.as_mut_ptr().cast(), codes16(v, _mm512_set1_ps(inv)));
                }
                assert_eq!(got, want, "codes16 {w:?} · {inv}");
            }
        }
    }
}
