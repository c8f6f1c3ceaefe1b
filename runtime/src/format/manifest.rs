//! The postcard-encoded manifests of a bundle and of a department delta blob.
//!
//! Everything here borrows from the bundle bytes (`&'a str`, `&'a [u8]`): decoding needs no
//! allocator. Variable-length lists are [`Seq`]s: a count plus the concatenated postcard
//! encodings of the items, decoded lazily one item at a time. `Bundle::parse` walks every
//! `Seq` once to validate it, so later iteration cannot fail.
//!
//! Activations are NHWC. Conv weights are stored OIHW (`[Cout, Cin, k, k]`, the checkpoint's
//! order, which the low-rank deltas are defined in); depthwise weights are stored `[3, 3, C]`.

use core::marker::PhantomData;
use serde::{Deserialize, Serialize};

/// Bytes of one tensor inside a payload section: `offset` from the start of that payload
/// (a multiple of [`super::ALIGN`]) and `len` in bytes. Shape and dtype follow from the op.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct TensorRef {
    /// Bytes from the start of the payload (aligned).
    pub offset: u32,
    /// Length in bytes.
    pub len: u32,
}

/// Element type of a stored tensor.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum DType {
    /// IEEE single, little-endian.
    F32,
    /// IEEE half, little-endian.
    F16,
    /// Signed byte.
    I8,
    /// Signed 32-bit, little-endian.
    I32,
}

impl DType {
    /// Bytes per element.
    pub const fn size(self) -> usize {
        match self {
            DType::F32 | DType::I32 => 4,
            DType::F16 => 2,
            DType::I8 => 1,
        }
    }
}

/// Precision of the shared weights and of the activations (they go together).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Precision {
    /// f32 weights and activations.
    F32,
    /// int8 weights (symmetric per output channel) and int8 activations (asymmetric per
    /// tensor, per department), TFLite / CMSIS-NN arithmetic.
    Int8,
}

/// A channel range of an activation value (NHWC): channels `c_off .. c_off + c_len` of
/// value `value`. ShuffleNetV2's channel split is a slice, never a copy.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Slice {
    /// The value read.
    pub value: u16,
    /// First channel.
    pub c_off: u16,
    /// Number of channels.
    pub c_len: u16,
}

/// One activation tensor `[h, w, c]` and its place in the arena (bytes from the arena start).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ValueDesc {
    /// Height.
    pub h: u16,
    /// Width.
    pub w: u16,
    /// Channels.
    pub c: u16,
    /// Byte offset in the activation region (aligned).
    pub offset: u32,
}

/// One operation of the graph; ops run in order.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub enum Op {
    /// Ungrouped convolution (stem 3x3, or 1x1) with BN folded, then optional ReLU.
    /// `weight`: folded `W0` `[Cout, Cin, k, k]` in the bundle's precision; `bias`: f32
    /// `[Cout]`; `wscale`: int8 only, f32 `[Cout]` per-channel scales (else empty).
    /// `expert`: index into each department's `deltas` when this conv has department factors.
    Conv {
        /// Channels read.
        input: Slice,
        /// The value written.
        output: u16,
        /// Output channels.
        cout: u16,
        /// Kernel side (1 or 3).
        k: u8,
        /// Stride (1, or 2 for k = 3).
        stride: u8,
        /// Symmetric zero padding (0 for k = 1, 1 for k = 3).
        pad: u8,
        /// Fused ReLU.
        relu: bool,
        /// Folded `W0` `[Cout, Cin, k, k]`.
        weight: TensorRef,
        /// f32 bias `[Cout]`.
        bias: TensorRef,
        /// int8: f32 per-channel weight scales `[Cout]`; empty for f32.
        wscale: TensorRef,
        /// Index into each department's `deltas` for an expert conv.
        expert: Option<u16>,
    },
    /// Depthwise 3x3 convolution (shared by all departments), BN folded, optional ReLU.
    /// `weight` `[3, 3, C]`; `bias` f32 `[C]`; `wscale` as for `Conv`.
    DwConv {
        /// Channels read (and written: `C = c_len`).
        input: Slice,
        /// The value written.
        output: u16,
        /// Stride (1 or 2).
        stride: u8,
        /// Fused ReLU.
        relu: bool,
        /// Weight `[3, 3, C]`.
        weight: TensorRef,
        /// f32 bias `[C]`.
        bias: TensorRef,
        /// int8: f32 per-channel weight scales `[C]`; empty for f32.
        wscale: TensorRef,
    },
    /// Max pool 3x3, stride 2, padding 1.
    MaxPool {
        /// The pooled value.
        input: u16,
        /// The value written.
        output: u16,
    },
    /// `concat(a, b)` followed by channel shuffle with 2 groups: `out[2i] = a[i]`,
    /// `out[2i+1] = b[i]` (a.c_len == b.c_len).
    ConcatShuffle {
        /// Channels at even output positions.
        a: Slice,
        /// Channels at odd output positions.
        b: Slice,
        /// The value written.
        output: u16,
    },
    /// Global average pool of `input` to the feature vector, then the department's head.
    /// Always the last op.
    PoolHead {
        /// The value pooled (`c = features`).
        input: u16,
    },
}

/// The input the model expects (before `infer` turns it into the first value).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct InputSpec {
    /// Image channels (1..=3).
    pub channels: u16,
    /// Square side in pixels.
    pub size: u16,
    /// Per-channel normalisation for image inputs (unused channels are 0 / 1).
    pub mean: [f32; 3],
    /// Per-channel standard deviation (`x = (pixel − mean) / std`).
    pub std: [f32; 3],
}

/// Exact activation-arena bytes for each switching mode, planned offline by the packer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ArenaPlan {
    /// Bytes of the activation region (all `ValueDesc::offset`s point inside it).
    pub activation_bytes: u32,
    /// Total arena bytes in `Materialized` mode (activations + rebuilt expert weights).
    pub materialized_bytes: u32,
    /// Total arena bytes in `Streaming` mode (activations + low-rank scratch).
    pub streaming_bytes: u32,
}

/// Where one department's delta blob lies in the bundle, and who it is.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct DeptEntry<'a> {
    /// Department name (as in its blob's manifest).
    #[serde(borrow)]
    pub name: &'a str,
    /// Offset of the delta blob from the start of the file.
    pub offset: u32,
    /// Length of the blob in bytes.
    pub len: u32,
}

/// A named tensor of the shared payload, for `inspect` and `export-onnx`.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct NamedTensor<'a> {
    /// Checkpoint-style name (`<conv>.weight`, `<bn>.bias`, `<conv>.wscale`).
    #[serde(borrow)]
    pub name: &'a str,
    /// Element type.
    pub dtype: DType,
    /// Dimensions; the first `rank` are used.
    pub dims: [u32; 4],
    /// Number of dimensions (≤ 4).
    pub rank: u8,
    /// The bytes in the shared payload.
    pub data: TensorRef,
}

/// The shared manifest: everything but the departments' own data. Its bytes, together with
/// the shared payload, define the base id.
#[derive(Clone, Copy, Debug, Serialize, Deserialize)]
pub struct Manifest<'a> {
    /// Architecture name, e.g. `shufflenet_v2_x1_0`.
    #[serde(borrow)]
    pub arch: &'a str,
    /// Precision of the shared weights and the activations.
    pub precision: Precision,
    /// The input the model expects.
    pub input: InputSpec,
    /// LoRA rank `r` of every expert conv.
    pub rank: u16,
    /// Feature width of the pooled vector the heads read.
    pub features: u16,
    /// Expert (EKS) convs, in graph order: `Op::Conv::expert` indexes this order.
    pub experts: u16,
    /// Activation values in definition order (value 0 is the input).
    #[serde(borrow)]
    pub values: Seq<'a, ValueDesc>,
    /// The graph, run in order.
    #[serde(borrow)]
    pub ops: Seq<'a, Op>,
    /// Names of the shared tensors (for tools).
    #[serde(borrow)]
    pub tensors: Seq<'a, NamedTensor<'a>>,
    /// Arena sizes per mode.
    pub arena: ArenaPlan,
}

/// Storage of one department's low-rank factors.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum DeltaDType {
    /// f32.
    F32,
    /// IEEE half.
    F16,
    /// int8, symmetric per row, with an f16 scale per row stored after the rows.
    I8,
}

/// The folded factors of one expert conv: `ΔW = reshape(B·A, [Cout, Cin, k, k])` with the BN
/// scale and the LoRA scaling already folded into the rows of `B`.
/// `a`: `[r·k, Cin·k]`, `b`: `[Cout·k, r·k]`, in the blob's `delta_dtype`
/// (int8: rows then one f16 scale per row; the layout is `format::factor`'s).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeltaRef {
    /// Factor `A [r·k, Cin·k]`.
    pub a: TensorRef,
    /// Factor `B [Cout·k, r·k]` (BN and LoRA scales folded in).
    pub b: TensorRef,
}

/// Manifest of one department's delta blob (inside a bundle, or the body of a `.lkdu`).
#[derive(Clone, Copy, Debug, Serialize, Deserialize)]
pub struct DeptManifest<'a> {
    /// Department name (1..=255 bytes).
    #[serde(borrow)]
    pub name: &'a str,
    /// Version of this department's delta (field updates raise it).
    pub version: u32,
    /// The base id of the shared part these factors were trained against.
    pub base_id: [u8; 32],
    /// Class names of the head, in logit order.
    #[serde(borrow)]
    pub classes: Seq<'a, &'a str>,
    /// Storage of the factors.
    pub delta_dtype: DeltaDType,
    /// One entry per expert conv, in `Manifest::experts` order.
    #[serde(borrow)]
    pub deltas: Seq<'a, DeltaRef>,
    /// Head weight, f32 `[classes, features]`.
    pub head_weight: TensorRef,
    /// Head bias, f32 `[classes]`.
    pub head_bias: TensorRef,
    /// int8 bundles: per value, `(scale: f32, zero_point: i32)` little-endian, 8 bytes each,
    /// calibrated on this department's images. Empty for f32 bundles.
    pub act_qparams: TensorRef,
}

/// A lazily decoded postcard sequence borrowed from the bundle: `count` items whose
/// encodings are concatenated in `bytes`. Serialised as `(count: varint, bytes: byte string)`.
pub struct Seq<'a, T> {
    count: u32,
    bytes: &'a [u8],
    _item: PhantomData<fn() -> T>,
}

impl<T> Clone for Seq<'_, T> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<T> Copy for Seq<'_, T> {}

impl<T> core::fmt::Debug for Seq<'_, T> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "Seq({} items, {} bytes)", self.count, self.bytes.len())
    }
}

impl<'a, T> Seq<'a, T> {
    /// A sequence over already-encoded items (the writer builds `bytes` with postcard).
    pub const fn from_encoded(count: u32, bytes: &'a [u8]) -> Self {
        Seq {
            count,
            bytes,
            _item: PhantomData,
        }
    }
    /// Number of items.
    pub const fn len(&self) -> usize {
        self.count as usize
    }
    /// True when the sequence holds no item.
    pub const fn is_empty(&self) -> bool {
        self.count == 0
    }
    /// The encoded items.
    pub const fn encoded(&self) -> &'a [u8] {
        self.bytes
    }
}

/// How a [`Seq`]'s items are read back once `Bundle::parse` has validated them with
/// postcard: postcard's serde path by default; [`Op`], walked at every inference, by the
/// hand reader of its wire form (`format::wire`, tested against postcard).
pub trait SeqItem<'a>: Deserialize<'a> {
    /// The item at the front of `bytes` and the bytes after it; `None` where postcard
    /// refuses them.
    fn take(bytes: &'a [u8]) -> Option<(Self, &'a [u8])> {
        postcard::take_from_bytes::<Self>(bytes).ok()
    }
}

impl SeqItem<'_> for ValueDesc {}
impl SeqItem<'_> for DeltaRef {
    #[inline]
    fn take(bytes: &[u8]) -> Option<(Self, &[u8])> {
        super::wire::take_delta_ref(bytes)
    }
}
impl<'a> SeqItem<'a> for NamedTensor<'a> {}
impl<'a> SeqItem<'a> for DeptEntry<'a> {}
impl<'a> SeqItem<'a> for &'a str {}

impl SeqItem<'_> for Op {
    #[inline]
    fn take(bytes: &[u8]) -> Option<(Self, &[u8])> {
        super::wire::take_op(bytes)
    }
}

impl<'a, T: Deserialize<'a>> Seq<'a, T> {
    /// Decodes every item once: `Ok` only if exactly `count` items fill `bytes`.
    pub fn validate(&self) -> Result<(), postcard::Error> {
        let mut rest = self.bytes;
        for _ in 0..self.count {
            let (_, r) = postcard::take_from_bytes::<T>(rest)?;
            rest = r;
        }
        if rest.is_empty() {
            Ok(())
        } else {
            Err(postcard::Error::DeserializeBadEncoding)
        }
    }
}

impl<'a, T: SeqItem<'a>> Seq<'a, T> {
    /// Iterates the items. On a validated sequence this yields exactly `len()` items; on
    /// bytes that fail to decode it stops early instead of panicking.
    pub fn iter(&self) -> SeqIter<'a, T> {
        SeqIter {
            left: self.count,
            rest: self.bytes,
            _item: PhantomData,
        }
    }

    /// Item `i` (a linear scan; sequences are short and walked in order on the hot path).
    pub fn get(&self, i: usize) -> Option<T> {
        self.iter().nth(i)
    }
}

/// Iterator over a [`Seq`].
pub struct SeqIter<'a, T> {
    left: u32,
    rest: &'a [u8],
    _item: PhantomData<fn() -> T>,
}

// (Not derived: that would ask `T: Clone`.) A copy walks on from the same element: the
// engine looks an op or two ahead.
impl<T> Clone for SeqIter<'_, T> {
    fn clone(&self) -> Self {
        SeqIter {
            left: self.left,
            rest: self.rest,
            _item: PhantomData,
        }
    }
}

impl<'a, T: SeqItem<'a>> Iterator for SeqIter<'a, T> {
    type Item = T;
    #[inline]
    fn next(&mut self) -> Option<T> {
        if self.left == 0 {
            return None;
        }
        match T::take(self.rest) {
            Some((item, r)) => {
                self.left -= 1;
                self.rest = r;
                Some(item)
            }
            None => {
                self.left = 0;
                None
            }
        }
    }
}

impl<T> Serialize for Seq<'_, T> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeTuple;
        let mut t = s.serialize_tuple(2)?;
        t.serialize_element(&self.count)?;
        t.serialize_element(&BytesSer(self.bytes))?;
        t.end()
    }
}

impl<'de: 'a, 'a, T> Deserialize<'de> for Seq<'a, T> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let (count, bytes): (u32, Bytes<'a>) = Deserialize::deserialize(d)?;
        Ok(Seq {
            count,
            bytes: bytes.0,
            _item: PhantomData,
        })
    }
}

/// `&[u8]` serialised as a byte string (postcard: varint length + raw bytes), borrowed back.
struct Bytes<'a>(&'a [u8]);

struct BytesSer<'a>(&'a [u8]);

impl Serialize for BytesSer<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(self.0)
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for Bytes<'a> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = Bytes<'de>;
            fn expecting(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
                f.write_str("borrowed bytes")
            }
            fn visit_borrowed_bytes<E: serde::de::Error>(
                self,
                v: &'de [u8],
            ) -> Result<Self::Value, E> {
                Ok(Bytes(v))
            }
        }
        d.deserialize_bytes(V)
    }
}
