//! The fused float expert of one department as a standard ONNX model (opset 13).
//!
//! Every expert conv gets `W_t = W0 + reshape(B_t·A_t, [Cout, Cin, k, k])` (DESIGN.md,
//! "Deployment math"; the paper's Eq. 1 with the BN and LoRA scales already folded into `B_t`
//! by the packer), computed in f32 from the bundle's stored tensors (int8 `W0` and int8 / f16
//! deltas are dequantised first). The runtime's NHWC values become NCHW ONNX tensors:
//!
//! | bundle op        | ONNX nodes                                                        |
//! |------------------|-------------------------------------------------------------------|
//! | channel `Slice`  | `Slice` on axis 1 (omitted when it covers the whole value)        |
//! | `Conv`           | `Conv` (group 1) [+ `Relu`]                                       |
//! | `DwConv`         | `Conv` with `group = C`, weight `[C, 1, 3, 3]` [+ `Relu`]         |
//! | `MaxPool`        | `MaxPool` 3x3, stride 2, pads 1                                   |
//! | `ConcatShuffle`  | `Concat` → `Reshape [-1,2,C,H,W]` → `Transpose [0,2,1,3,4]` → `Reshape [-1,2C,H,W]` |
//! | `PoolHead`       | `GlobalAveragePool` → `Flatten` → `Gemm` (transB) → `logits`      |
//!
//! The input `input` is `[N, C, H, W]` f32, used as is (already normalised, as `Engine::infer`
//! takes it); the output `logits` is `[N, classes]`.
use lorkd_data::into_flat;
use lorkd_runtime::format::{
    Bundle, DeltaDType, DeltaRef, Dept, DeptManifest, Manifest, Op, Precision, Slice, TensorRef,
    ValueDesc,
};
use ndarray::{ArrayView1, ArrayView2, ArrayViewMut2, Axis, Zip};
use prost::Message;
use tract_onnx::pb;

/// The opset the exported graph is written against.
pub const OPSET: i64 = 13;
/// ONNX IR version matching opset 13.
pub const IR_VERSION: i64 = 7;

/// Why an expert could not be exported: the bundle's tensors do not match its graph.
#[derive(Debug, thiserror::Error)]
pub enum OnnxError {
    #[error(
        "tensor {what}: {got} bytes at offset {offset} do not fit or do not hold {want} elements"
    )]
    Tensor {
        what: String,
        offset: u32,
        got: u32,
        want: usize,
    },
    #[error("graph: {0}")]
    Graph(String),
    #[error("department {dept}: expert conv {expert} has no delta (it has {have})")]
    MissingDelta {
        dept: String,
        expert: usize,
        have: usize,
    },
}

/// Where one department's tensors live: the shared manifest and payload, and the
/// department's manifest with its own payload (`TensorRef`s are relative to each payload).
#[derive(Clone, Copy)]
struct ExpertSource<'a> {
    manifest: &'a Manifest<'a>,
    shared_payload: &'a [u8],
    dept: &'a DeptManifest<'a>,
    dept_payload: &'a [u8],
}

impl<'a> ExpertSource<'a> {
    fn new(bundle: &'a Bundle<'a>, dept: &'a Dept<'a>) -> Self {
        ExpertSource {
            manifest: bundle.manifest(),
            shared_payload: bundle.shared(),
            dept: &dept.manifest,
            dept_payload: dept.payload,
        }
    }
}

/// The ONNX bytes of department `dept`'s fused float expert (`dept`: the bundle's own delta
/// or an update's, parsed against `bundle`).
///
/// # Errors
/// The bundle's tensors do not match its graph.
pub fn export(bundle: &Bundle<'_>, dept: &Dept<'_>) -> Result<Vec<u8>, OnnxError> {
    Ok(encode(&build_model(bundle, dept)?))
}

/// The fused f32 tensors of one department, in the runtime's layouts (conv OIHW,
/// depthwise `[3, 3, C]`), indexed by op. Shared by the ONNX writer and by tests.
pub struct FusedExpert {
    /// Per op: conv weight (fused for expert convs) and bias, or `None` for weightless ops.
    pub weights: Vec<Option<(Vec<f32>, Vec<f32>)>>,
    pub head_weight: Vec<f32>,
    pub head_bias: Vec<f32>,
    pub classes: usize,
}

fn bytes<'p>(
    payload: &'p [u8],
    t: TensorRef,
    what: &str,
    want: usize,
) -> Result<&'p [u8], OnnxError> {
    let err = || OnnxError::Tensor {
        what: what.to_string(),
        offset: t.offset,
        got: t.len,
        want,
    };
    let start = t.offset as usize;
    let end = start.checked_add(t.len as usize).ok_or_else(err)?;
    payload.get(start..end).ok_or_else(err)
}

/// Reads `n` elements of `dtype` as f32; int8 is scaled per row by `scale` (`n / scale.len()`
/// elements per row).
fn read_f32(payload: &[u8], t: TensorRef, what: &str, n: usize) -> Result<Vec<f32>, OnnxError> {
    let b = bytes(payload, t, what, n)?;
    if b.len() != n * 4 {
        return Err(OnnxError::Tensor {
            what: what.into(),
            offset: t.offset,
            got: t.len,
            want: n,
        });
    }
    Ok(b.chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect())
}

fn read_i8_rows(
    payload: &[u8],
    t: TensorRef,
    what: &str,
    rows: usize,
    n: usize,
    scale: &[f32],
) -> Result<Vec<f32>, OnnxError> {
    let b = bytes(payload, t, what, n)?;
    if b.len() != n || rows == 0 || scale.len() != rows || !n.is_multiple_of(rows) {
        return Err(OnnxError::Tensor {
            what: what.into(),
            offset: t.offset,
            got: t.len,
            want: n,
        });
    }
    let q = ArrayView2::from_shape((rows, n / rows), b).map_err(|_| OnnxError::Tensor {
        what: what.into(),
        offset: t.offset,
        got: t.len,
        want: n,
    })?;
    Ok(dequantise(q, ArrayView1::from(scale).insert_axis(Axis(1))))
}

/// `q·s` per element, `s` broadcast over `q` (`[rows, 1]`: per row, `[1, cols]`: per column).
fn dequantise(q: ArrayView2<u8>, s: ArrayView2<f32>) -> Vec<f32> {
    into_flat(
        Zip::from(q)
            .and_broadcast(s)
            .map_collect(|&q, &s| q as i8 as f32 * s),
    )
}

/// Reads a shared conv weight (`n` elements, `rows` output channels) as f32.
fn read_weight(
    src: &ExpertSource<'_>,
    weight: TensorRef,
    wscale: TensorRef,
    what: &str,
    n: usize,
    rows: usize,
) -> Result<Vec<f32>, OnnxError> {
    match src.manifest.precision {
        Precision::F32 => read_f32(src.shared_payload, weight, what, n),
        Precision::Int8 => {
            let s = read_f32(src.shared_payload, wscale, &format!("{what} scale"), rows)?;
            read_i8_rows(src.shared_payload, weight, what, rows, n, &s)
        }
    }
}

/// A department factor `[rows, cols]` as f32, decoded by the runtime's
/// `format::factor::Factor` (the layout's one decoder).
fn read_factor(
    payload: &[u8],
    dtype: DeltaDType,
    t: TensorRef,
    what: &str,
    rows: usize,
    cols: usize,
) -> Result<Vec<f32>, OnnxError> {
    let f = lorkd_runtime::format::factor::Factor::new(payload, t, dtype, rows, cols).ok_or_else(
        || OnnxError::Tensor {
            what: what.into(),
            offset: t.offset,
            got: t.len,
            want: rows.saturating_mul(cols),
        },
    )?;
    let mut out = vec![0.0; rows * cols];
    f.decode_into(&mut out);
    Ok(out)
}

/// Adds `B·A` to `w` (`[Cout·k, Cin·k]`, which is `[Cout, Cin, k, k]` row-major), in f32,
/// one `b_ij·A_j` row at a time (the order the runtime's switch accumulates in).
fn add_delta(mut w: ArrayViewMut2<f32>, b: ArrayView2<f32>, a: ArrayView2<f32>) {
    for (mut out, brow) in w.rows_mut().into_iter().zip(b.rows()) {
        for (&bij, arow) in brow.iter().zip(a.rows()) {
            out.scaled_add(bij, &arow);
        }
    }
}

fn value(values: &[ValueDesc], i: u16) -> Result<ValueDesc, OnnxError> {
    values.get(i as usize).copied().ok_or_else(|| {
        OnnxError::Graph(format!("value {i} out of range ({} values)", values.len()))
    })
}

/// Fuses one department's weights: `W0 + B·A` for every expert conv, in f32.
///
/// # Errors
/// The bundle's tensors do not match its graph.
pub fn fuse(bundle: &Bundle<'_>, dept: &Dept<'_>) -> Result<FusedExpert, OnnxError> {
    fuse_src(&ExpertSource::new(bundle, dept))
}

fn fuse_src(src: &ExpertSource<'_>) -> Result<FusedExpert, OnnxError> {
    let m = src.manifest;
    let deltas: Vec<DeltaRef> = src.dept.deltas.iter().collect();
    let rank = m.rank as usize;
    let mut weights = Vec::new();
    for (i, op) in m.ops.iter().enumerate() {
        let w = match op {
            Op::Conv {
                input,
                cout,
                k,
                weight,
                bias,
                wscale,
                expert,
                ..
            } => {
                let (cin, cout, k) = (input.c_len as usize, cout as usize, k as usize);
                let n = cout * cin * k * k;
                let mut w =
                    read_weight(src, weight, wscale, &format!("op {i} conv weight"), n, cout)?;
                let b = read_f32(src.shared_payload, bias, &format!("op {i} conv bias"), cout)?;
                if let Some(e) = expert {
                    let e = e as usize;
                    let d = deltas.get(e).ok_or_else(|| OnnxError::MissingDelta {
                        dept: src.dept.name.into(),
                        expert: e,
                        have: deltas.len(),
                    })?;
                    let dt = src.dept.delta_dtype;
                    let (rk, ck, ok) = (rank * k, cin * k, cout * k);
                    let a =
                        read_factor(src.dept_payload, dt, d.a, &format!("expert {e} A"), rk, ck)?;
                    let bf =
                        read_factor(src.dept_payload, dt, d.b, &format!("expert {e} B"), ok, rk)?;
                    let shape_err = |what: &str| OnnxError::Graph(format!("expert {e}: {what}"));
                    let w2 = ArrayViewMut2::from_shape((ok, ck), &mut w[..])
                        .map_err(|_| shape_err("weight is not [Cout·k, Cin·k]"))?;
                    add_delta(
                        w2,
                        ArrayView2::from_shape((ok, rk), &bf).map_err(|_| shape_err("B"))?,
                        ArrayView2::from_shape((rk, ck), &a).map_err(|_| shape_err("A"))?,
                    );
                }
                Some((w, b))
            }
            Op::DwConv {
                input,
                weight,
                bias,
                wscale,
                ..
            } => {
                let c = input.c_len as usize;
                let what = format!("op {i} depthwise weight");
                // Stored [3, 3, C]; int8 scales are per channel, i.e. per column here.
                let w = match m.precision {
                    Precision::F32 => read_f32(src.shared_payload, weight, &what, 9 * c)?,
                    Precision::Int8 => {
                        let s = read_f32(src.shared_payload, wscale, &format!("{what} scale"), c)?;
                        let q = bytes(src.shared_payload, weight, &what, 9 * c)?;
                        // A view accepts a longer slice: the length is checked first.
                        let q = Some(q)
                            .filter(|q| q.len() == 9 * c)
                            .and_then(|q| ArrayView2::from_shape((9, c), q).ok())
                            .ok_or_else(|| OnnxError::Tensor {
                                what,
                                offset: weight.offset,
                                got: weight.len,
                                want: 9 * c,
                            })?;
                        dequantise(q, ArrayView1::from(&s).insert_axis(Axis(0)))
                    }
                };
                let b = read_f32(
                    src.shared_payload,
                    bias,
                    &format!("op {i} depthwise bias"),
                    c,
                )?;
                Some((w, b))
            }
            Op::MaxPool { .. } | Op::ConcatShuffle { .. } | Op::PoolHead { .. } => None,
        };
        weights.push(w);
    }
    let classes = src.dept.classes.len();
    let features = m.features as usize;
    let head_weight = read_f32(
        src.dept_payload,
        src.dept.head_weight,
        "head weight",
        classes * features,
    )?;
    let head_bias = read_f32(src.dept_payload, src.dept.head_bias, "head bias", classes)?;
    Ok(FusedExpert {
        weights,
        head_weight,
        head_bias,
        classes,
    })
}

/// Builds nodes and initializers; names values `v{i}` (value 0 is `input`).
struct Builder {
    nodes: Vec<pb::NodeProto>,
    inits: Vec<pb::TensorProto>,
    fresh: usize,
}

fn attr_int(name: &str, i: i64) -> pb::AttributeProto {
    pb::AttributeProto {
        name: name.into(),
        r#type: pb::attribute_proto::AttributeType::Int as i32,
        i,
        ..Default::default()
    }
}

fn attr_ints(name: &str, ints: &[i64]) -> pb::AttributeProto {
    pb::AttributeProto {
        name: name.into(),
        r#type: pb::attribute_proto::AttributeType::Ints as i32,
        ints: ints.to_vec(),
        ..Default::default()
    }
}

fn tensor_info(name: &str, dims: &[Option<i64>]) -> pb::ValueInfoProto {
    use pb::tensor_shape_proto::{dimension::Value, Dimension};
    let dim = dims
        .iter()
        .map(|d| Dimension {
            denotation: String::new(),
            value: Some(match d {
                Some(v) => Value::DimValue(*v),
                None => Value::DimParam("N".into()),
            }),
        })
        .collect();
    pb::ValueInfoProto {
        name: name.into(),
        r#type: Some(pb::TypeProto {
            denotation: String::new(),
            value: Some(pb::type_proto::Value::TensorType(pb::type_proto::Tensor {
                elem_type: pb::tensor_proto::DataType::Float as i32,
                shape: Some(pb::TensorShapeProto { dim }),
            })),
        }),
        ..Default::default()
    }
}

impl Builder {
    fn name(&mut self, stem: &str) -> String {
        self.fresh += 1;
        format!("{stem}_{}", self.fresh)
    }

    fn node(&mut self, op: &str, inputs: &[&str], output: &str, attrs: Vec<pb::AttributeProto>) {
        self.nodes.push(pb::NodeProto {
            input: inputs.iter().map(|s| s.to_string()).collect(),
            output: vec![output.into()],
            name: format!("{op}_{}", self.nodes.len()),
            op_type: op.into(),
            attribute: attrs,
            ..Default::default()
        });
    }

    fn f32_init(&mut self, stem: &str, dims: &[i64], data: Vec<f32>) -> String {
        let name = self.name(stem);
        self.inits.push(pb::TensorProto {
            name: name.clone(),
            dims: dims.to_vec(),
            data_type: pb::tensor_proto::DataType::Float as i32,
            raw_data: data.iter().flat_map(|v| v.to_le_bytes()).collect(),
            ..Default::default()
        });
        name
    }

    fn i64_init(&mut self, stem: &str, data: &[i64]) -> String {
        let name = self.name(stem);
        self.inits.push(pb::TensorProto {
            name: name.clone(),
            dims: vec![data.len() as i64],
            data_type: pb::tensor_proto::DataType::Int64 as i32,
            int64_data: data.to_vec(),
            ..Default::default()
        });
        name
    }

    /// The ONNX tensor for a channel slice of a value.
    fn slice(&mut self, values: &[ValueDesc], s: Slice) -> Result<String, OnnxError> {
        let v = value(values, s.value)?;
        let (off, len) = (s.c_off as u32, s.c_len as u32);
        if len == 0 || off + len > v.c as u32 {
            return Err(OnnxError::Graph(format!(
                "slice {off}+{len} of value {} with {} channels",
                s.value, v.c
            )));
        }
        let src = vname(s.value);
        if off == 0 && len == v.c as u32 {
            return Ok(src);
        }
        let starts = self.i64_init("starts", &[off as i64]);
        let ends = self.i64_init("ends", &[(off + len) as i64]);
        let axes = self.i64_init("axes", &[1]);
        let out = self.name(&format!("{src}_c{off}_{len}"));
        self.node("Slice", &[&src, &starts, &ends, &axes], &out, vec![]);
        Ok(out)
    }

    fn relu_if(&mut self, relu: bool, pre: String, out: &str) {
        if relu {
            self.node("Relu", &[&pre], out, vec![]);
        } else {
            self.node("Identity", &[&pre], out, vec![]);
        }
    }
}

fn vname(v: u16) -> String {
    if v == 0 {
        "input".into()
    } else {
        format!("v{v}")
    }
}

/// Builds the ONNX model of the department's fused float expert.
///
/// # Errors
/// The bundle's tensors do not match its graph.
pub fn build_model(bundle: &Bundle<'_>, dept: &Dept<'_>) -> Result<pb::ModelProto, OnnxError> {
    build_src(&ExpertSource::new(bundle, dept))
}

fn build_src(src: &ExpertSource<'_>) -> Result<pb::ModelProto, OnnxError> {
    let m = src.manifest;
    let fused = fuse_src(src)?;
    let values: Vec<ValueDesc> = m.values.iter().collect();
    let v0 = value(&values, 0)?;
    if v0.c != m.input.channels || v0.h != m.input.size || v0.w != m.input.size {
        return Err(OnnxError::Graph(format!(
            "value 0 is {}x{}x{}, the input spec {}x{}x{}",
            v0.h, v0.w, v0.c, m.input.size, m.input.size, m.input.channels
        )));
    }
    let mut g = Builder {
        nodes: Vec::new(),
        inits: Vec::new(),
        fresh: 0,
    };
    let mut saw_head = false;
    for (i, (op, w)) in m.ops.iter().zip(fused.weights.iter()).enumerate() {
        if saw_head {
            return Err(OnnxError::Graph(format!("op {i} follows the PoolHead")));
        }
        match (op, w) {
            (
                Op::Conv {
                    input,
                    output,
                    cout,
                    k,
                    stride,
                    pad,
                    relu,
                    ..
                },
                Some((w, b)),
            ) => {
                let x = g.slice(&values, input)?;
                let (k, p, s) = (k as i64, pad as i64, stride as i64);
                let wn = g.f32_init(
                    &format!("op{i}_w"),
                    &[cout as i64, input.c_len as i64, k, k],
                    w.clone(),
                );
                let bn = g.f32_init(&format!("op{i}_b"), &[cout as i64], b.clone());
                let pre = g.name(&format!("op{i}_conv"));
                let attrs = vec![
                    attr_ints("kernel_shape", &[k, k]),
                    attr_ints("strides", &[s, s]),
                    attr_ints("pads", &[p, p, p, p]),
                    attr_int("group", 1),
                ];
                g.node("Conv", &[&x, &wn, &bn], &pre, attrs);
                value(&values, output)?;
                g.relu_if(relu, pre, &vname(output));
            }
            (
                Op::DwConv {
                    input,
                    output,
                    stride,
                    relu,
                    ..
                },
                Some((w, b)),
            ) => {
                let c = input.c_len as usize;
                let x = g.slice(&values, input)?;
                // [3, 3, C] → [C, 1, 3, 3]
                let mut oihw = vec![0f32; 9 * c];
                for (j, &v) in w.iter().enumerate() {
                    oihw[(j % c) * 9 + j / c] = v;
                }
                let wn = g.f32_init(&format!("op{i}_dw"), &[c as i64, 1, 3, 3], oihw);
                let bn = g.f32_init(&format!("op{i}_b"), &[c as i64], b.clone());
                let pre = g.name(&format!("op{i}_dwconv"));
                let s = stride as i64;
                let attrs = vec![
                    attr_ints("kernel_shape", &[3, 3]),
                    attr_ints("strides", &[s, s]),
                    attr_ints("pads", &[1, 1, 1, 1]),
                    attr_int("group", c as i64),
                ];
                g.node("Conv", &[&x, &wn, &bn], &pre, attrs);
                value(&values, output)?;
                g.relu_if(relu, pre, &vname(output));
            }
            (Op::MaxPool { input, output }, None) => {
                value(&values, input)?;
                value(&values, output)?;
                let attrs = vec![
                    attr_ints("kernel_shape", &[3, 3]),
                    attr_ints("strides", &[2, 2]),
                    attr_ints("pads", &[1, 1, 1, 1]),
                ];
                g.node("MaxPool", &[&vname(input)], &vname(output), attrs);
            }
            (Op::ConcatShuffle { a, b, output }, None) => {
                if a.c_len != b.c_len {
                    return Err(OnnxError::Graph(format!(
                        "op {i}: shuffle of {} and {} channels",
                        a.c_len, b.c_len
                    )));
                }
                let out = value(&values, output)?;
                let (xa, xb) = (g.slice(&values, a)?, g.slice(&values, b)?);
                let c = a.c_len as i64;
                let (h, w) = (out.h as i64, out.w as i64);
                let cat = g.name(&format!("op{i}_cat"));
                g.node("Concat", &[&xa, &xb], &cat, vec![attr_int("axis", 1)]);
                let s5 = g.i64_init("shape", &[-1, 2, c, h, w]);
                let r5 = g.name(&format!("op{i}_groups"));
                g.node("Reshape", &[&cat, &s5], &r5, vec![]);
                let t5 = g.name(&format!("op{i}_shuffled"));
                g.node(
                    "Transpose",
                    &[&r5],
                    &t5,
                    vec![attr_ints("perm", &[0, 2, 1, 3, 4])],
                );
                let s4 = g.i64_init("shape", &[-1, 2 * c, h, w]);
                g.node("Reshape", &[&t5, &s4], &vname(output), vec![]);
            }
            (Op::PoolHead { input }, None) => {
                let v = value(&values, input)?;
                if v.c != m.features {
                    return Err(OnnxError::Graph(format!(
                        "head reads {} channels, features = {}",
                        v.c, m.features
                    )));
                }
                let pooled = g.name("pooled");
                g.node("GlobalAveragePool", &[&vname(input)], &pooled, vec![]);
                let flat = g.name("features");
                g.node("Flatten", &[&pooled], &flat, vec![attr_int("axis", 1)]);
                let classes = fused.classes as i64;
                let wn = g.f32_init(
                    "head_w",
                    &[classes, m.features as i64],
                    fused.head_weight.clone(),
                );
                let bn = g.f32_init("head_b", &[classes], fused.head_bias.clone());
                g.node(
                    "Gemm",
                    &[&flat, &wn, &bn],
                    "logits",
                    vec![attr_int("transB", 1)],
                );
                saw_head = true;
            }
            (op, _) => {
                return Err(OnnxError::Graph(format!(
                    "op {i} ({op:?}) has unexpected weights"
                )))
            }
        }
    }
    if !saw_head {
        return Err(OnnxError::Graph("the graph has no PoolHead".into()));
    }
    let (c, hw) = (m.input.channels as i64, m.input.size as i64);
    let graph = pb::GraphProto {
        name: format!("lorkd_{}_{}", m.arch, src.dept.name),
        node: g.nodes,
        initializer: g.inits,
        input: vec![tensor_info("input", &[None, Some(c), Some(hw), Some(hw)])],
        output: vec![tensor_info("logits", &[None, Some(fused.classes as i64)])],
        doc_string: format!(
            "fused float expert of department {} v{}",
            src.dept.name, src.dept.version
        ),
        ..Default::default()
    };
    Ok(pb::ModelProto {
        ir_version: IR_VERSION,
        opset_import: vec![pb::OperatorSetIdProto {
            domain: String::new(),
            version: OPSET,
        }],
        producer_name: "lorkd".into(),
        producer_version: env!("CARGO_PKG_VERSION").into(),
        graph: Some(graph),
        ..Default::default()
    })
}

/// Serialises a model to ONNX protobuf bytes.
pub fn encode(model: &pb::ModelProto) -> Vec<u8> {
    model.encode_to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delta_is_row_major_product() {
        // B [2,1], A [1,3]: ΔW = B·A flattened row-major.
        let mut w = ndarray::Array2::ones((2, 3));
        add_delta(
            w.view_mut(),
            ndarray::array![[2.0], [-1.0]].view(),
            ndarray::array![[1.0, 2.0, 3.0]].view(),
        );
        assert_eq!(w, ndarray::array![[3.0, 5.0, 7.0], [0.0, -1.0, -2.0]]);
    }
}
