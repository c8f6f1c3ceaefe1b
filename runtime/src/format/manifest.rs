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
    pub offset: u32,
    pub len: u32,
}

/// Element type of a stored tensor.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum DType {
    F32,
    F16,
    I8,
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
    F32,
    /// int8 weights (symmetric per output channel) and int8 activations (asymmetric per
    /// tensor, per department), TFLite / CMSIS-NN arithmetic.
    Int8,
}

/// A channel range of an activation value (NHWC): channels `c_off .. c_off + c_len` of
/// value `value`. ShuffleNetV2's channel split is a slice, never a copy.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Slice {
    pub value: u16,
    pub c_off: u16,
    pub c_len: u16,
}

/// One activation tensor `[h, w, c]` and its place in the arena (bytes from the arena start).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ValueDesc {
    pub h: u16,
    pub w: u16,
    pub c: u16,
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
        input: Slice,
        output: u16,
        cout: u16,
        k: u8,
        stride: u8,
        pad: u8,
        relu: bool,
        weight: TensorRef,
        bias: TensorRef,
        wscale: TensorRef,
        expert: Option<u16>,
    },
    /// Depthwise 3x3 convolution (shared by all departments), BN folded, optional ReLU.
    /// `weight` `[3, 3, C]`; `bias` f32 `[C]`; `wscale` as for `Conv`.
    DwConv {
        input: Slice,
        output: u16,
        stride: u8,
        relu: bool,
        weight: TensorRef,
        bias: TensorRef,
        wscale: TensorRef,
    },
    /// Max pool 3x3, stride 2, padding 1.
    MaxPool { input: u16, output: u16 },
    /// `concat(a, b)` followed by channel shuffle with 2 groups: `out[2i] = a[i]`,
    /// `out[2i+1] = b[i]` (a.c_len == b.c_len).
    ConcatShuffle { a: Slice, b: Slice, output: u16 },
    /// Global average pool of `input` to the feature vector, then the department's head.
    /// Always the last op.
    PoolHead { input: u16 },
}

/// The input the model expects (before `infer` turns it into the first value).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct InputSpec {
    pub channels: u16,
    pub size: u16,
    /// Per-channel normalisation for image inputs (unused channels are 0 / 1).
    pub mean: [f32; 3],
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
    #[serde(borrow)]
    pub name: &'a str,
    /// Offset of the delta blob from the start of the file, and its length in bytes.
    pub offset: u32,
    pub len: u32,
}

/// A named tensor of the shared payload, for `inspect` and `export-onnx`.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct NamedTensor<'a> {
    #[serde(borrow)]
    pub name: &'a str,
    pub dtype: DType,
    pub dims: [u32; 4],
    pub rank: u8,
    pub data: TensorRef,
}

/// The shared manifest: everything but the departments' own data. Its bytes, together with
/// the shared payload, define the base id.
#[derive(Clone, Copy, Debug, Serialize, Deserialize)]
pub struct Manifest<'a> {
    #[serde(borrow)]
    pub arch: &'a str,
    pub precision: Precision,
    pub input: InputSpec,
    pub rank: u16,
    /// Feature width of the pooled vector the heads read.
    pub features: u16,
    /// Expert (EKS) convs, in graph order: `Op::Conv::expert` indexes this order.
    pub experts: u16,
    #[serde(borrow)]
    pub values: Seq<'a, ValueDesc>,
    #[serde(borrow)]
    pub ops: Seq<'a, Op>,
    #[serde(borrow)]
    pub tensors: Seq<'a, NamedTensor<'a>>,
    pub arena: ArenaPlan,
}

/// Storage of one department's low-rank factors.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum DeltaDType {
    F32,
    F16,
    /// int8, symmetric per row, with an f16 scale per row stored after the rows.
    I8,
}

/// The folded factors of one expert conv: `ΔW = reshape(B·A, [Cout, Cin, k, k])` with the BN
/// scale and the LoRA scaling already folded into the rows of `B`.
/// `a`: `[r·k, Cin·k]`, `b`: `[Cout·k, r·k]`, in the blob's `delta_dtype`
/// (int8: rows then one f16 scale per row).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeltaRef {
    pub a: TensorRef,
    pub b: TensorRef,
}

/// Manifest of one department's delta blob (inside a bundle, or the body of a `.lkdu`).
#[derive(Clone, Copy, Debug, Serialize, Deserialize)]
pub struct DeptManifest<'a> {
    #[serde(borrow)]
    pub name: &'a str,
    pub version: u32,
    /// The base id of the shared part these factors were trained against.
    pub base_id: [u8; 32],
    #[serde(borrow)]
    pub classes: Seq<'a, &'a str>,
    pub delta_dtype: DeltaDType,
    /// One entry per expert conv, in `Manifest::experts` order.
    #[serde(borrow)]
    pub deltas: Seq<'a, DeltaRef>,
    /// Head: f32 weight `[classes, features]`, f32 bias `[classes]`.
    pub head_weight: TensorRef,
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

impl<'a, T: Deserialize<'a>> Iterator for SeqIter<'a, T> {
    type Item = T;
    fn next(&mut self) -> Option<T> {
        if self.left == 0 {
            return None;
        }
        match postcard::take_from_bytes::<T>(self.rest) {
            Ok((item, r)) => {
                self.left -= 1;
                self.rest = r;
                Some(item)
            }
            Err(_) => {
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
