//! Compute kernels over NHWC activations. `reference/` is the scalar specification, one file
//! per op, written to be read; faster twins must match it (int8 bit-exact, f32 within a
//! stated bound). The engine calls kernels only through this module.
#[cfg(all(target_arch = "aarch64", target_feature = "neon"))]
mod aarch64;
#[cfg(any(test, target_arch = "arm"))]
pub(crate) mod fixed;
#[cfg(test)]
pub(crate) mod rebuild_check;
pub mod reference;
#[cfg(all(
    test,
    any(
        target_arch = "x86_64",
        all(target_arch = "aarch64", target_feature = "neon")
    )
))]
mod requant_check;
#[cfg(all(target_arch = "arm", target_feature = "dsp", target_feature = "mclass"))]
mod thumbv7em;
#[cfg(all(target_arch = "arm", target_feature = "dsp", target_feature = "mclass"))]
pub(crate) use thumbv7em::f16_to_f32;
/// The Cortex-M requantisation-table twin is plain Rust: its host tests run here.
#[cfg(all(test, target_arch = "x86_64"))]
#[path = "thumbv7em/requant.rs"]
mod thumbv7em_requant;
#[cfg(target_arch = "x86_64")]
mod x86_64;

/// Geometry of a convolution-like op over an NHWC input slice.
///
/// The input is `[h, w, in_stride]` of which channels `c_off .. c_off + cin` are read; the
/// output is a dense `[ho, wo, cout]`. Padding is symmetric (`pad` on each side) and reads
/// as zero (the zero point for int8).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Geom {
    /// Input height.
    pub h: usize,
    /// Input width.
    pub w: usize,
    /// Channels of the input value (the pixel stride).
    pub in_stride: usize,
    /// First input channel read.
    pub c_off: usize,
    /// Input channels read.
    pub cin: usize,
    /// Output height.
    pub ho: usize,
    /// Output width.
    pub wo: usize,
    /// Output channels.
    pub cout: usize,
    /// Kernel side.
    pub k: usize,
    /// Stride.
    pub stride: usize,
    /// Symmetric padding.
    pub pad: usize,
}

impl Geom {
    /// Output size along one axis: `(n + 2·pad − k) / stride + 1` (0 if the window never fits).
    /// The rule is the format's ([`crate::format::validate::out_dim`]).
    pub const fn out_dim(n: usize, k: usize, stride: usize, pad: usize) -> usize {
        match crate::format::validate::out_dim(n, k, stride, pad) {
            Some(v) => v,
            None => 0,
        }
    }

    /// Elements the input slice must hold: `h · w · in_stride`.
    pub const fn in_len(&self) -> usize {
        self.h * self.w * self.in_stride
    }

    /// Elements of the output: `ho · wo · cout`.
    pub const fn out_len(&self) -> usize {
        self.ho * self.wo * self.cout
    }

    /// Input pixel row/column for output `o` and tap `t`, `None` in the padding.
    #[inline]
    pub(crate) fn tap(o: usize, t: usize, stride: usize, pad: usize, n: usize) -> Option<usize> {
        let i = (o * stride + t).checked_sub(pad)?;
        (i < n).then_some(i)
    }
}

pub use crate::quant::OutQ;

/// A conv-like slot, f32: `(geometry, x, w, bias, relu, y)`.
pub type ConvF32 = fn(&Geom, &[f32], &[f32], &[f32], bool, &mut [f32]);
/// A conv-like slot, int8: `(geometry, x, x zero point, w, [bias, multiplier, shift] per
/// output channel, output stage, y)`.
pub type ConvI8 = fn(&Geom, &[i8], i32, &[i8], &[[i32; 3]], OutQ, &mut [i8]);
/// A k×k int8 conv's output pixels `pixels` (of `0 .. g.ho·g.wo`, row-major) alone: `(g,
/// pixels, x, zx, w, rq, q, y)`, `x` the whole input and `y` those pixels only — the same
/// bytes as those pixels of its whole-conv slot's output (`conv_i8`, `dwconv3x3_i8`): a
/// thread's share of the conv, cut anywhere, with no pixel computed twice and nothing copied.
pub type ConvPixelsI8 =
    fn(&Geom, core::ops::Range<usize>, &[i8], i32, &[i8], &[[i32; 3]], OutQ, &mut [i8]);
/// The int8 rebuild's per-channel re-quantisation slot: `(delta row → weights, W0q, s0,
/// out) → scale`.
pub type RequantWeights = fn(&mut [f32], &[i8], f32, &mut [i8]) -> f32;
/// The f32 rebuild of a whole expert, `switch::materialize_f32`: `(W0, delta, out)`, its bits.
pub type MaterializeF32 = fn(&[f32], &crate::switch::Delta<'_>, &mut [f32]);
/// The int8 rebuild of one whole output channel (`switch::materialize_i8_with`): `(delta,
/// channel o, its W0q, s0, f32 scratch, its int8 out) → scale`, the bytes and scale of
/// `delta.channel_into_i8(o, scratch)` then `requant_weights`.
pub type RebuildI8 = fn(&crate::switch::Delta<'_>, usize, &[i8], f32, &mut [f32], &mut [i8]) -> f32;
/// The int8 rebuild of a whole expert (`switch::materialize_i8_with`): `(delta, W0q, s0,
/// out, out scales) → done`, the bytes and scales of [`RebuildI8`] on every channel; `false`
/// (nothing written) for shapes it does not take.
pub type RebuildLayerI8 =
    fn(&crate::switch::Delta<'_>, &[i8], &[f32], &mut [i8], &mut [f32]) -> bool;
/// The requantisation-table slot: `(bias, s_x, per-channel s_w, s_y, out)`, the triples of
/// `quant::requant_table` (bit-identical).
pub type RequantTable = fn(&[f32], f32, &[f32], f32, &mut [[i32; 3]]);
/// The int8 max pool 3x3/2 slot: `(h, w, c, x, y)` (`reference::maxpool::maxpool3x3s2`).
pub type MaxPoolI8 = fn(usize, usize, usize, &[i8], &mut [i8]);
/// The int8 max pool's output pixels `pixels` (of `0 .. ho·wo`, row-major) alone: `(h, w,
/// c, pixels, x, y)`, `x` the whole input and `y` those pixels only — the same bytes as
/// those pixels of the [`MaxPoolI8`] slot's output (a thread's share, cut anywhere).
pub type MaxPoolPixelsI8 = fn(usize, usize, usize, core::ops::Range<usize>, &[i8], &mut [i8]);
/// `reference::maxpool::maxpool3x3s2::<f32>`: `(h, w, c, x, y)`.
pub type MaxPoolF32 = fn(usize, usize, usize, &[f32], &mut [f32]);
/// The int8 global average pool slot: `(pixels, channels, x, x's quantisation, y)`
/// (`reference::gap::gap_i8`, bit-identical).
pub type GapI8 = fn(usize, usize, &[i8], crate::quant::QParams, &mut [f32]);
/// The f32 linear head slot: `(x, W [out, in], bias, y)`
/// (`reference::linear::linear_f32`, bit-identical: the scores are compared to the bit).
pub type LinearF32 = fn(&[f32], &[f32], &[f32], &mut [f32]);
/// The int8 engine's RGB input step: `(planes, q, x)` with `x[3p + ch] =
/// q.quantize(planes[ch][p])` for the `x.len() / 3` pixels (the bytes of
/// `QParams::quantize` value by value).
pub type QuantizeRgbI8 = fn([&[f32]; 3], crate::quant::QParams, &mut [i8]);
/// The int8 concat + channel shuffle slot with the rescale to the output's quantisation:
/// `(n pixels, c channels a side, a, b, y's quantisation, y)`, the bytes of
/// `reference::concat_shuffle::concat_shuffle_i8`; `false` (nothing written) for shapes
/// or parameters it does not take.
pub type ConcatShuffleI8 = fn(
    usize,
    usize,
    reference::concat_shuffle::ConcatIn<'_>,
    reference::concat_shuffle::ConcatIn<'_>,
    crate::quant::QParams,
    &mut [i8],
) -> bool;
/// The int8 dot product slot: `(w, x, x zero point) → Σ w·(x − zx)` (exact).
pub type DotI8 = fn(&[i8], &[i8], i32) -> i32;
/// A block of exact int8 sums handed out by a [`SumsI8`] slot: output pixels `p0 .. p0 + np`
/// × channels `o0 .. o0 + no`, `acc[i·no + j] = Σ_c w[o0 + j][c]·(x[p0 + i][c] − zx)`.
#[derive(Clone, Copy, Debug)]
pub struct SumTile<'t> {
    /// First output pixel (row-major over `ho × wo`).
    pub p0: usize,
    /// Pixels.
    pub np: usize,
    /// First output channel.
    pub o0: usize,
    /// Channels.
    pub no: usize,
    /// `np × no` sums, row-major.
    pub acc: &'t [i32],
}
/// The int8 pointwise GEMM without an output stage (streaming experts add their low-rank
/// correction before quantising): `(geometry, x, x zero point, w, sink)` hands `sink`
/// tiles that cover every (output pixel, channel) exactly once.
pub type SumsI8 = fn(&Geom, &[i8], i32, &[i8], &mut dyn FnMut(SumTile<'_>));
/// `u = A·deq(x)` of a streaming int8 1x1 expert: `(geometry, x, x quantisation, Aᵀ [Cin, r],
/// r, u)`.
pub type LowRankUI8 = fn(&Geom, &[i8], crate::quant::QParams, &[f32], usize, &mut [f32]);
/// `y += u·B` then ReLU, f32: `(u, Bᵀ [r, Cout], r, Cout, relu, y)`.
pub type LowRankAddF32 = fn(&[f32], &[f32], usize, usize, bool, &mut [f32]);

/// An expert's two factors decoded to f32: `(A, B, A's out, B's out)` — row-major for a
/// rebuild ([`Kernels::decode_factors`], `switch::decode_factors`), or transposed for a
/// streaming 1x1 expert's GEMMs ([`Streaming::decode`], `switch::decode_lowrank`: `Aᵀ
/// [Cin·r]`, `Bᵀ [r·Cout]`).
pub type DecodeFactors = fn(
    &crate::format::factor::Factor<'_>,
    &crate::format::factor::Factor<'_>,
    &mut [f32],
    &mut [f32],
);

/// The streaming experts' lane code (`switch::stream_conv1x1_i8_gemm`,
/// `switch::stream_lowrank_f32`): every table runs the
/// portable code of [`crate::switch`] (so the same bits); the x86_64 tables compile it
/// for AVX2, where the baseline build would give SSE2 pairs.
#[derive(Clone, Copy)]
pub struct Streaming {
    /// `u = A·deq(x)`, int8 input: `switch::lowrank_u_i8`.
    pub u_i8: LowRankUI8,
    /// `u = A·x`, f32 input (`Aᵀ` as for `u_i8`): `switch::lowrank_u_f32`.
    pub u_f32: fn(&Geom, &[f32], &[f32], usize, &mut [f32]),
    /// The int8 epilogue of one tile of `W0` sums: `switch::epilogue_i8`.
    pub epilogue_i8: fn(&SumTile<'_>, &mut crate::switch::EpilogueI8<'_>),
    /// The f32 correction `y += u·B` (then ReLU): `switch::lowrank_add_t_f32`.
    pub add_f32: LowRankAddF32,
    /// A streaming 1x1 expert's `Aᵀ` and `Bᵀ` decoded for the GEMMs, at every call:
    /// `switch::decode_lowrank`.
    pub decode: DecodeFactors,
}

impl Streaming {
    /// The portable code as the build's target compiles it.
    pub fn portable() -> Self {
        use crate::switch;
        Streaming {
            u_i8: switch::lowrank_u_i8,
            u_f32: switch::lowrank_u_f32,
            epilogue_i8: switch::epilogue_i8,
            add_f32: switch::lowrank_add_t_f32,
            decode: switch::decode_lowrank,
        }
    }
}

/// A pointwise f32 conv whose weights `select` lays out once for its tiles: a Materialized
/// expert's rebuilt `[cout, cin]` is permuted in place after each switch, so the conv does
/// not pack panels at every call.
#[derive(Clone, Copy)]
pub struct PackedConv1x1F32 {
    /// `(cout, cin, w)`: `w` (`[cout, cin]`) permuted in place into the layout `conv` reads.
    /// The length is unchanged, and channels `c0 .. c0 + m` (`c0`, and `m` unless the slice
    /// reaches `cout`, multiples of 16) are laid out as that slice alone would be: a conv
    /// split by channels at multiples of 16 hands each part its packed rows.
    pub pack: fn(usize, usize, &mut [f32]),
    /// The `conv1x1_f32` contract on packed weights: the same bits as the table's
    /// `conv1x1_f32` on the rows.
    pub conv: ConvF32,
    /// Convs of fewer output pixels (the whole op's, before any thread split) stay rows
    /// for `conv1x1_f32`: the switch packs, and the engine calls `conv`, only from here on.
    pub min_pixels: usize,
}

/// [`PackedConv1x1F32`]'s int8 twin: `pack` permutes a rebuilt `[cout, cin]` int8 weight
/// in place (channel parts cut at multiples of 16 keep their own layout), `conv` is the
/// `conv1x1_i8` contract on it, bit-exact to the table's `conv1x1_i8` on the rows. The
/// weights are the switch's re-quantised codes, which are never −128 (symmetric ±127,
/// `quant::quantize_weight`): a layout may rely on it (aarch64's product pairs).
#[derive(Clone, Copy)]
pub struct PackedConv1x1I8 {
    /// `(cout, cin, w)`: `w` permuted in place into the layout `conv` reads.
    pub pack: fn(usize, usize, &mut [i8]),
    /// The `conv1x1_i8` contract on packed weights.
    pub conv: ConvI8,
    /// As [`PackedConv1x1F32::min_pixels`].
    pub min_pixels: usize,
}

/// The pointwise conv (GEMM) slot, f32.
pub type Conv1x1F32 = ConvF32;
/// The pointwise conv (GEMM) slot, int8.
pub type Conv1x1I8 = ConvI8;

/// A multiple of every pixel tile of every kernel (1, 2, 3, 4, 8, 16): threads that cut a
/// conv's pixels at multiples of it hand each part the whole conv's tiles
/// ([`Kernels::pix_align_f32`] where a table's f32 sums could depend on the tile).
pub const PIX_ALIGN: usize = 48;

/// The kernels the engine calls through: [`Kernels::reference`] fills every slot with the
/// scalar spec, [`Kernels::best`] lets the detected CPU plug in faster twins.
/// Every slot has the contract of the same-named function in [`reference`].
#[derive(Clone, Copy)]
pub struct Kernels {
    /// `reference::conv1x1::conv1x1_f32`.
    pub conv1x1_f32: ConvF32,
    /// [`PackedConv1x1F32`], for the Materialized experts' pointwise convs; `None`: they
    /// stay `[cout, cin]` rows for `conv1x1_f32`.
    pub conv1x1_f32_packed: Option<PackedConv1x1F32>,
    /// `reference::conv1x1::conv1x1_i8`.
    pub conv1x1_i8: ConvI8,
    /// [`PackedConv1x1I8`], for the Materialized experts' pointwise convs; `None`: rows.
    pub conv1x1_i8_packed: Option<PackedConv1x1I8>,
    /// `reference::conv::conv_f32` (the k×k stem).
    pub conv_f32: ConvF32,
    /// `reference::conv::conv_i8`.
    pub conv_i8: ConvI8,
    /// [`ConvPixelsI8`] of `conv_i8` (`reference::conv::conv_i8_pixels`); `None`: a
    /// thread's rows run `conv_i8` from a row early into a buffer (`engine::par`).
    pub conv_i8_pixels: Option<ConvPixelsI8>,
    /// `reference::dwconv3x3::dwconv3x3_f32`.
    pub dwconv3x3_f32: ConvF32,
    /// `reference::dwconv3x3::dwconv3x3_i8`.
    pub dwconv3x3_i8: ConvI8,
    /// [`ConvPixelsI8`] of `dwconv3x3_i8` (`reference::dwconv3x3::dwconv3x3_i8_pixels`); `None`:
    /// a thread's rows run `dwconv3x3_i8` from a row early (`engine::par`).
    pub dwconv3x3_i8_pixels: Option<ConvPixelsI8>,
    /// `reference::requant_weights::requant_weights` (department switch, int8).
    pub requant_weights: RequantWeights,
    /// [`RebuildI8`]; `None`: `Delta::channel_into_i8`, then the `requant_weights` slot.
    pub rebuild_i8: Option<RebuildI8>,
    /// [`MaterializeF32`] (the f32 switch, and a streamed f32 k×k expert per inference).
    pub materialize_f32: MaterializeF32,
    /// [`RebuildLayerI8`], tried first; `None` or `false`: channel by channel.
    pub rebuild_layer_i8: Option<RebuildLayerI8>,
    /// An int8 or f16 expert's factors decoded row-major before its rebuild (the switch,
    /// and `Streaming`'s per-inference rebuilds): `switch::decode_factors`.
    pub decode_factors: DecodeFactors,
    /// The per-channel requantisation tables of the int8 convs (`quant::requant_table`),
    /// computed by `select` and, for ops its cache cannot hold, at each inference.
    pub requant_table: RequantTable,
    /// `reference::maxpool::maxpool3x3s2` on int8 codes.
    pub maxpool_i8: MaxPoolI8,
    /// [`MaxPoolPixelsI8`] of `maxpool_i8` (`reference::maxpool::maxpool3x3s2_pixels`);
    /// `None`: a thread's rows run `maxpool_i8` from a row early into a buffer.
    pub maxpool_i8_pixels: Option<MaxPoolPixelsI8>,
    /// `reference::maxpool::maxpool3x3s2` on f32 (bit-identical: the same selects).
    pub maxpool_f32: MaxPoolF32,
    /// `reference::linear::linear_f32` (the department head; bit-identical).
    pub linear_f32: LinearF32,
    /// `reference::gap::gap_i8` (the pool head's global average pool of int8 codes;
    /// bit-identical).
    pub gap_i8: GapI8,
    /// [`ConcatShuffleI8`] (`reference::concat_shuffle::concat_shuffle_i8`), tried first;
    /// `None` or `false`: the engine's portable copy.
    pub concat_shuffle_i8: Option<ConcatShuffleI8>,
    /// [`QuantizeRgbI8`]; `None`: the engine's portable planes-then-pixels form.
    pub quantize_rgb_i8: Option<QuantizeRgbI8>,
    /// `reference::conv1x1::dot_i8` (streaming int8 experts).
    pub dot_i8: DotI8,
    /// `reference::conv1x1::conv1x1_sums_i8` (streaming int8 1x1 experts).
    pub conv1x1_sums_i8: SumsI8,
    /// The streaming experts' lane code ([`Streaming::portable`]).
    pub streaming: Streaming,
    /// Where threads may cut an f32 pointwise conv's pixels: split points are multiples of
    /// this, so that every part's pixels meet the same tiles as in the whole conv where a
    /// tile size could change a pixel's sums ([`PIX_ALIGN`]). 1 where each pixel's sums are
    /// the same whatever tile computes them (x86 AVX2 and AVX-512: one FMA chain per
    /// output in `k` order), so 14×14 and 7×7 maps cut evenly by pixels instead of by
    /// channels through a heap buffer.
    pub pix_align_f32: usize,
    /// Name of the instruction set of the plugged-in twins (`"reference"` when none).
    pub isa: &'static str,
}

impl core::fmt::Debug for Kernels {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "Kernels({})", self.isa)
    }
}

impl Kernels {
    /// Every slot scalar.
    pub fn reference() -> Self {
        Kernels {
            conv1x1_f32: reference::conv1x1::conv1x1_f32,
            conv1x1_f32_packed: None,
            conv1x1_i8: reference::conv1x1::conv1x1_i8,
            conv1x1_i8_packed: None,
            conv_f32: reference::conv::conv_f32,
            conv_i8: reference::conv::conv_i8,
            conv_i8_pixels: Some(reference::conv::conv_i8_pixels),
            dwconv3x3_f32: reference::dwconv3x3::dwconv3x3_f32,
            dwconv3x3_i8: reference::dwconv3x3::dwconv3x3_i8,
            dwconv3x3_i8_pixels: Some(reference::dwconv3x3::dwconv3x3_i8_pixels),
            requant_weights: reference::requant_weights::requant_weights,
            rebuild_i8: None,
            rebuild_layer_i8: None,
            materialize_f32: crate::switch::materialize_f32,
            decode_factors: crate::switch::decode_factors,
            requant_table: crate::quant::requant_table,
            maxpool_i8: reference::maxpool::maxpool3x3s2::<i8>,
            maxpool_i8_pixels: Some(reference::maxpool::maxpool3x3s2_pixels::<i8>),
            maxpool_f32: reference::maxpool::maxpool3x3s2::<f32>,
            linear_f32: reference::linear::linear_f32,
            gap_i8: reference::gap::gap_i8,
            concat_shuffle_i8: None,
            quantize_rgb_i8: None,
            dot_i8: reference::conv1x1::dot_i8,
            conv1x1_sums_i8: reference::conv1x1::conv1x1_sums_i8,
            streaming: Streaming::portable(),
            pix_align_f32: PIX_ALIGN,
            isa: "reference",
        }
    }

    /// The fastest kernels this CPU runs: detected at run time with `std`, from the build's
    /// target features without it.
    pub fn best() -> Self {
        Self::available()
            .into_iter()
            .flatten()
            .last()
            .unwrap_or_else(Self::reference)
    }

    /// Every kernel table this CPU runs, slowest first: the reference, then each SIMD
    /// variant (x86_64 AVX2, then AVX-512 F/BW/VL/VNNI; aarch64 NEON without and with
    /// `sdot`; Armv7E-M DSP, from the build target). Tests run all of them against
    /// the reference, so a variant the best table shadows still gets checked.
    pub fn available() -> [Option<Self>; 3] {
        #[allow(unused_mut)]
        let mut v = [Some(Self::reference()), None, None];
        #[cfg(target_arch = "x86_64")]
        if x86_64::detected() {
            v[1] = Some(x86_64::avx2());
            if x86_64::avx512_detected() {
                v[2] = Some(x86_64::avx512());
            }
        }
        #[cfg(all(target_arch = "aarch64", target_feature = "neon"))]
        {
            v[1] = Some(aarch64::neon(Self::reference(), false));
            if aarch64::dotprod_detected() {
                v[2] = Some(aarch64::neon(Self::reference(), true));
            }
        }
        #[cfg(all(target_arch = "arm", target_feature = "dsp", target_feature = "mclass"))]
        {
            v[1] = Some(thumbv7em::dsp(Self::reference()));
        }
        v
    }
}
