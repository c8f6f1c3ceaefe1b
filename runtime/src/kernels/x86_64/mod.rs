//! x86_64 AVX2 + FMA twins, installed by `Kernels::available`/`best` only after runtime
//! detection (`std`) or when the build targets AVX2 and FMA (`no_std`). One op per file;
//! each public fn is a safe wrapper with the reference's contract that checks slice lengths
//! and hands whole tiles to `#[target_feature]` bodies. int8 is bit-exact to the reference
//! (exact i32 sums, the same scalar `requant`); f32 differs by reassociation / FMA only.
#![allow(unsafe_code)]

mod concat;
mod conv1x1;
mod conv1x1_avx512;
mod conv1x1_vnni;
mod dots_vnni;
mod dw3x3;
mod factors;
mod gap;
mod input;
mod linear;
mod maxpool;
mod rebuild;
mod requant;
mod stem;
mod streaming;

use core::arch::x86_64::*;

use crate::quant::{QParams, HALF_BELOW};

use super::Kernels;

/// AVX2, FMA and F16C (every AVX2 CPU has it: the f16 factor scales) are usable.
pub(crate) fn detected() -> bool {
    #[cfg(feature = "std")]
    {
        std::is_x86_feature_detected!("avx2")
            && std::is_x86_feature_detected!("fma")
            && std::is_x86_feature_detected!("f16c")
    }
    #[cfg(not(feature = "std"))]
    {
        cfg!(all(
            target_feature = "avx2",
            target_feature = "fma",
            target_feature = "f16c"
        ))
    }
}

/// The AVX2 table (every slot has a twin). Install only when [`detected`].
pub(crate) fn avx2() -> Kernels {
    Kernels {
        conv1x1_f32: conv1x1::conv1x1_f32,
        conv1x1_f32_packed: Some(crate::kernels::PackedConv1x1F32 {
            pack: conv1x1::pack_conv1x1_f32,
            conv: conv1x1::conv1x1_f32_packed,
            min_pixels: 1,
        }),
        conv1x1_i8: conv1x1::conv1x1_i8,
        conv1x1_i8_packed: Some(crate::kernels::PackedConv1x1I8 {
            pack: conv1x1::pack_conv1x1_i8,
            conv: conv1x1::conv1x1_i8_packed,
            min_pixels: conv1x1::PACKED_I8_MIN_PIXELS,
        }),
        conv_f32: stem::conv_f32,
        conv_i8: stem::conv_i8,
        conv_i8_pixels: Some(stem::conv_i8_pixels),
        dwconv3x3_f32: dw3x3::dwconv3x3_f32,
        dwconv3x3_i8: dw3x3::dwconv3x3_i8,
        dwconv3x3_i8_pixels: Some(dw3x3::dwconv3x3_i8_pixels),
        requant_weights: rebuild::requant_weights,
        rebuild_i8: Some(rebuild::rebuild_i8),
        rebuild_layer_i8: Some(rebuild::rebuild_layer_i8),
        materialize_f32: rebuild::materialize_f32,
        decode_factors: factors::decode_rows,
        requant_table: requant::requant_table,
        maxpool_i8: maxpool::maxpool3x3s2_i8,
        maxpool_i8_pixels: Some(maxpool::maxpool3x3s2_i8_pixels),
        maxpool_f32: maxpool::maxpool3x3s2_f32,
        dot_i8: conv1x1::dot_i8,
        linear_f32: linear::linear_f32,
        gap_i8: gap::gap_i8,
        concat_shuffle_i8: Some(concat::concat_shuffle_i8_avx2),
        quantize_rgb_i8: Some(input::quantize_rgb_i8),
        conv1x1_sums_i8: conv1x1::conv1x1_sums_i8,
        streaming: streaming::avx2(),
        pix_align_f32: 1,
        isa: "x86_64-avx2",
    }
}

/// AVX-512 F, BW, DQ, VL and VNNI on top of [`detected`] (every CPU with AVX-512 VNNI has
/// the other four).
pub(crate) fn avx512_detected() -> bool {
    conv1x1_vnni::detected()
}

/// The AVX2 table with the hot slots on 512-bit registers (install only when
/// [`avx512_detected`]):
/// - pointwise f32 on AVX-512F FMA ([`conv1x1_avx512`]: the AVX2 panels and bits, 6 pixels
///   × 64 channels a tile);
/// - pointwise int8 on AVX-512 VNNI (`vpdpbusd` quads, [`conv1x1_vnni`]): the Materialized
///   experts laid out at the switch, the row convs (Auto's rebuilt experts) and the
///   streamed experts' `W0` sums laid out a panel at a time per call from 8 output pixels,
///   below that dot products on the rows ([`dots_vnni`]);
/// - the f32 stem on 16-lane FMA tiles (the int8 stem is the AVX2 table's row-buffer walk,
///   which beat a `vpdpbusd` stem on per-pixel patches: BENCHMARKS.md, session 47), the
///   int8 depthwise and pointwise output stages on 16 lanes ([`requant`]'s `Out16`:
///   `requant16_plain` for plain convs, else `requant16`);
/// - the switch's rebuild on 16 lanes: 1x1 experts of 16–64 inputs in registers, four
///   channels at a time, wider channels one register pass per 16 weights; the streaming
///   lane code compiled for AVX-512F (the RGB input step is the AVX2 table's);
/// - with VBMI, the int8 concat + shuffle's rescale as byte-permute lookups ([`concat`]).
pub(crate) fn avx512() -> Kernels {
    Kernels {
        conv1x1_f32: conv1x1_avx512::conv1x1_f32,
        conv1x1_f32_packed: Some(crate::kernels::PackedConv1x1F32 {
            pack: conv1x1::pack_conv1x1_f32,
            conv: conv1x1_avx512::conv1x1_f32_packed,
            min_pixels: 1,
        }),
        conv1x1_i8: conv1x1_vnni::conv1x1_i8,
        conv1x1_sums_i8: conv1x1_vnni::conv1x1_sums_i8,
        conv1x1_i8_packed: Some(crate::kernels::PackedConv1x1I8 {
            pack: conv1x1_vnni::pack_conv1x1_i8,
            conv: conv1x1_vnni::conv1x1_i8_packed,
            min_pixels: conv1x1::PACKED_I8_MIN_PIXELS,
        }),
        conv_f32: stem::conv_f32_avx512,
        concat_shuffle_i8: Some(if concat::vbmi() {
            concat::concat_shuffle_i8
        } else {
            concat::concat_shuffle_i8_avx2
        }),
        streaming: streaming::avx512(),
        rebuild_i8: Some(rebuild::rebuild_i8_avx512),
        materialize_f32: rebuild::materialize_f32_avx512,
        rebuild_layer_i8: Some(rebuild::rebuild_layer_i8_avx512),
        dwconv3x3_i8: dw3x3::dwconv3x3_i8_avx512,
        dwconv3x3_i8_pixels: Some(dw3x3::dwconv3x3_i8_avx512_pixels),
        requant_table: requant::requant_table_avx512,
        // The AVX2 bits (one FMA chain per output whatever the tile: `engine_simd`'s
        // `avx512_f32_convs_are_the_avx2_bits`), so its pixel cut too.
        pix_align_f32: 1,
        isa: "x86_64-avx512",
        ..avx2()
    }
}

/// `t` rounded half away from zero on 16 lanes, its magnitude clamped to `lim` (an integer
/// float, at most 2^22), NaN → 0: `trunc(±min(|t'|, lim))` with `t' = t + copysign(h, t)`,
/// `h` = [`crate::quant::HALF_BELOW`] — `−(|t| + h)` for a negative `t` (rounding to
/// nearest is symmetric), so the sign rides along instead of being put back — where
/// `vfixupimmps` first turns a NaN into +0 and `vrangeps` clamps the magnitude keeping the
/// sign (5 instructions; the `|t|`, `max`/`min`, compare and masked negation took 7). The
/// int8 codes' rounding (`rebuild::codes16`, `lim` 127) and the streaming output's
/// (`streaming::Quant16`, `lim` 2^22, `QParams::quantize`'s clamp).
#[inline]
#[target_feature(enable = "avx512f,avx512dq")]
fn round_away16(t: __m512, lim: f32) -> __m512i {
    // Response per class of `t` (4 bits each, QNaN first): +0 (8) for a QNaN or an SNaN,
    // the destination (`t`) for the rest.
    let t = _mm512_fixupimm_ps::<0>(t, t, _mm512_set1_epi32(0x88));
    // `(t & sign) | h`, as bits: `h` with `t`'s sign.
    let h = _mm512_ternarylogic_epi32::<0xF8>(
        _mm512_castps_si512(_mm512_set1_ps(HALF_BELOW)),
        _mm512_castps_si512(t),
        _mm512_set1_epi32(i32::MIN),
    );
    let a = _mm512_add_ps(t, _mm512_castsi512_ps(h));
    // The smaller magnitude of `a` and `lim` with `a`'s sign (imm[1:0] 10: the smaller
    // magnitude; imm[3:2] 00: the sign of the first operand).
    _mm512_cvttps_epi32(_mm512_range_ps::<0b0010>(a, _mm512_set1_ps(lim)))
}

/// [`round_away16`] on 8 lanes, the sign put back by `vpsignd` (−0, +0 and a NaN's 0 give
/// 0 either way): the int8 codes' rounding (`rebuild::codes8`, `lim` 127) and the streaming
/// output's and the int8 input's on AVX2 ([`Quant8`], `lim` 2^22).
#[inline]
#[target_feature(enable = "avx2")]
fn round_away8(t: __m256, lim: f32) -> __m256i {
    let a = _mm256_and_ps(t, _mm256_castsi256_ps(_mm256_set1_epi32(0x7fff_ffff)));
    let a = _mm256_add_ps(a, _mm256_set1_ps(HALF_BELOW));
    // `vmaxps` returns its second operand for a NaN first one: NaN → 0.
    let a = _mm256_min_ps(_mm256_max_ps(a, _mm256_setzero_ps()), _mm256_set1_ps(lim));
    _mm256_sign_epi32(_mm256_cvttps_epi32(a), _mm256_castps_si256(t))
}

/// The 8 i32 lanes of `v` narrowed with saturation to 8 bytes (the low half).
#[inline]
#[target_feature(enable = "avx2")]
fn narrow8(v: __m256i) -> __m128i {
    let v16 = _mm_packs_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256::<1>(v));
    _mm_packs_epi16(v16, v16)
}

/// Two 8-lane halves of 16 channels narrowed with saturation to 16 bytes in order.
#[inline]
#[target_feature(enable = "avx2")]
fn narrow16(a: __m256i, b: __m256i) -> __m128i {
    // i16 `[a0..4, b0..4 | a4..8, b4..8]`, then bytes `[a0..4, b0..4, a4..8, b4..8]`.
    let v = _mm256_packs_epi32(a, b);
    let v = _mm_packs_epi16(_mm256_castsi256_si128(v), _mm256_extracti128_si256::<1>(v));
    _mm_shuffle_epi32::<0b11_01_10_00>(v)
}

/// [`narrow16`] of two pixels' halves (`a`, then `b`) as 32 bytes: one byte pack for both.
#[inline]
#[target_feature(enable = "avx2")]
fn narrow16x2(a: [__m256i; 2], b: [__m256i; 2]) -> __m256i {
    // Dwords `[a0..4, a'0..4, b0..4, b'0..4 | a4..8, a'4..8, b4..8, b'4..8]` (`a'` = a[1]).
    let v = _mm256_packs_epi16(
        _mm256_packs_epi32(a[0], a[1]),
        _mm256_packs_epi32(b[0], b[1]),
    );
    _mm256_permutevar8x32_epi32(v, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7))
}

/// `streaming::Quant16` on 8 lanes (AVX2): `QParams::quantize` (after `max(x, 0)` for ReLU) as
/// `switch::quantize_row` computes it — `x / scale` rounded half away from zero, its
/// magnitude clamped to 2^22, a NaN 0 ([`round_away8`]), plus the zero point
/// (clamped to ±2^24, which cannot change a byte), narrowed with saturation (the spec's
/// clamp to −128..127). The streaming epilogue's output and the RGB input step.
pub(super) struct Quant8 {
    scale: __m256,
    zp: __m256i,
    relu: bool,
}

impl Quant8 {
    #[inline]
    #[target_feature(enable = "avx2")]
    pub(super) fn new(q: QParams, relu: bool) -> Self {
        Quant8 {
            scale: _mm256_set1_ps(q.scale),
            zp: _mm256_set1_epi32(q.zero_point.clamp(-(1 << 24), 1 << 24)),
            relu,
        }
    }

    /// The 8 codes in the low 8 bytes.
    #[inline]
    #[target_feature(enable = "avx2")]
    pub(super) fn bytes(&self, x: __m256) -> __m128i {
        // `vmaxps` returns its second operand for a NaN first one: `f32::max(NaN, 0) = 0`.
        let x = if self.relu {
            _mm256_max_ps(x, _mm256_setzero_ps())
        } else {
            x
        };
        let n = round_away8(_mm256_div_ps(x, self.scale), 4_194_304.0);
        narrow8(_mm256_add_epi32(n, self.zp))
    }
}

/// `−1` lanes for the first `n` of 8 (`n ≤ 8`): the mask of a partial `maskload`/`maskstore`.
#[inline]
fn lane_mask(n: usize) -> [i32; 8] {
    let mut m = [0i32; 8];
    m[..n].fill(-1);
    m
}

/// The first `min(c, 64)` bytes of a 512-bit register as a mask (masked loads and stores
/// of a short run).
#[inline]
fn first_bytes(c: usize) -> __mmask64 {
    if c >= 64 {
        !0
    } else {
        (1u64 << c) - 1
    }
}

/// The first `min(n, 16)` of 16 lanes as a mask (a short block's stores).
#[inline]
fn first16(n: usize) -> __mmask16 {
    if n >= 16 {
        !0
    } else {
        (1u16 << n) - 1
    }
}

/// An 8×8 f32 transpose: lane `k` of result `j` is lane `j` of input `k`.
#[inline]
#[target_feature(enable = "avx2")]
pub(super) fn transpose8(r: [__m256; 8]) -> [__m256; 8] {
    let t = [
        _mm256_unpacklo_ps(r[0], r[1]),
        _mm256_unpackhi_ps(r[0], r[1]),
        _mm256_unpacklo_ps(r[2], r[3]),
        _mm256_unpackhi_ps(r[2], r[3]),
        _mm256_unpacklo_ps(r[4], r[5]),
        _mm256_unpackhi_ps(r[4], r[5]),
        _mm256_unpacklo_ps(r[6], r[7]),
        _mm256_unpackhi_ps(r[6], r[7]),
    ];
    // Per 128-bit half: u[0] = column 0 of rows 0–3, u[1] column 1, u[2] col 2, u[3] col 3
    // (u[4..8] the same of rows 4–7).
    let u = [
        _mm256_shuffle_ps::<0x44>(t[0], t[2]),
        _mm256_shuffle_ps::<0xEE>(t[0], t[2]),
        _mm256_shuffle_ps::<0x44>(t[1], t[3]),
        _mm256_shuffle_ps::<0xEE>(t[1], t[3]),
        _mm256_shuffle_ps::<0x44>(t[4], t[6]),
        _mm256_shuffle_ps::<0xEE>(t[4], t[6]),
        _mm256_shuffle_ps::<0x44>(t[5], t[7]),
        _mm256_shuffle_ps::<0xEE>(t[5], t[7]),
    ];
    [
        _mm256_permute2f128_ps::<0x20>(u[0], u[4]),
        _mm256_permute2f128_ps::<0x20>(u[1], u[5]),
        _mm256_permute2f128_ps::<0x20>(u[2], u[6]),
        _mm256_permute2f128_ps::<0x20>(u[3], u[7]),
        _mm256_permute2f128_ps::<0x31>(u[0], u[4]),
        _mm256_permute2f128_ps::<0x31>(u[1], u[5]),
        _mm256_permute2f128_ps::<0x31>(u[2], u[6]),
        _mm256_permute2f128_ps::<0x31>(u[3], u[7]),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    /// [`Quant8`] is `QParams::quantize` (of `max(x, 0)` with ReLU) lane by lane: values at
    /// and one f32 step beside every tie `(k + ½)·scale` around the int8 range and past
    /// 2^22, NaN, ±∞, ±0, and random values, for random scales and zero points (extremes
    /// included). Seed: `LORKD_SEED`.
    #[test]
    fn quant8_is_quantize() {
        if !detected() {
            println!("SKIPPED quant8_is_quantize: no AVX2 on this CPU");
            return;
        }
        let mut r = crate::engine::testnet::Rng::new(crate::test_seed());
        for case in 0..400 {
            let q = QParams {
                scale: [1e-4, 0.02, 0.1, 3.0][case % 4] * (1.0 + r.uniform(0.5).abs()),
                zero_point: match case % 9 {
                    0 => i32::MAX,
                    1 => i32::MIN,
                    2 => (1 << 24) + r.below(300) as i32 - 150,
                    _ => r.below(256) as i32 - 128,
                },
            };
            let mut xs = std::vec![
                f32::NAN,
                -f32::NAN,
                f32::INFINITY,
                f32::NEG_INFINITY,
                0.0,
                -0.0
            ];
            for _ in 0..40 {
                let k = r.below(600) as f32 - 300.0;
                let tie = (k + 0.5) * q.scale;
                xs.extend([tie, tie.next_up(), tie.next_down()]);
                let far =
                    (4_194_304.0 + r.below(8) as f32) * q.scale * if k < 0.0 { -1.0 } else { 1.0 };
                xs.extend([far, r.uniform(300.0) * q.scale]);
            }
            while xs.len() % 8 != 0 {
                xs.push(r.uniform(3.0));
            }
            for relu in [false, true] {
                // SAFETY: AVX2 detected above.
                let quant = unsafe { Quant8::new(q, relu) };
                for v in xs.chunks_exact(8) {
                    let mut got = [0i8; 8];
                    // SAFETY: AVX2 detected above; 8 f32 read, 8 bytes written.
                    unsafe {
                        let b = quant.bytes(_mm256_loadu_ps(v.as_ptr()));
                        _mm_storel_epi64(got.as_mut_ptr().cast(), b);
                    }
                    for (g, &x) in got.iter().zip(v) {
                        let want = q.quantize(if relu { x.max(0.0) } else { x });
                        assert_eq!(*g, want, "case {case} x {x:e} {q:?} relu {relu}");
                    }
                }
            }
        }
    }
}
