//! The packer: checkpoint → folded, quantised, planned, hashed (and signed) bundle.
//!
//! Steps (DESIGN.md "Deployment math"): fold BN into every conv and BN scale × LoRA scaling
//! into the rows of each department's `B` ([`crate::fold`]); quantise the shared weights per
//! output channel and the deltas per row ([`crate::quantize`]); plan the activation arena
//! ([`crate::arena_plan`]) and size the engine's regions (`format::layout::regions`); for int8,
//! build the f32 bundle first, calibrate each department's activation ranges on it and write
//! the int8 bundle with those (scale, zero point)s; assemble with `format::write`.

use anyhow::{bail, ensure, Context, Result};
use ed25519_dalek::{Signer, SigningKey};
use lorkd_runtime::format::write::{self, encode_seq, write_blob, write_bundle};
use lorkd_runtime::format::{factor, layout};
use lorkd_runtime::format::{
    ArenaPlan, Bundle, DType, DeltaDType, DeltaRef, DeptManifest, InputSpec, Manifest, NamedTensor,
    Op, Precision, Seq, TensorRef, ValueDesc,
};

use crate::arena_plan;
use crate::checkpoint::Checkpoint;
use crate::fold::{bn_scale, dw_to_hwc, fold_b, fold_weight};
use crate::graph::{Graph, Node};
use crate::quantize::activation_qparams;
use lorkd_data::into_flat;
use lorkd_runtime::quant::QParams;
use ndarray::{ArrayView2, ArrayView3, Axis};

/// Options of `lorkd pack`.
#[derive(Clone, Debug)]
pub struct PackOptions {
    /// Shared weights and activations.
    pub weights: Precision,
    /// Storage of the department factors.
    pub delta: DeltaDType,
    /// Calibration images per department (int8 only).
    pub calib_count: usize,
    /// Seed of the synthetic calibration images.
    pub calib_seed: u64,
    /// Version written into every department's delta.
    pub version: u32,
}

impl Default for PackOptions {
    fn default() -> Self {
        PackOptions {
            weights: Precision::F32,
            delta: DeltaDType::F32,
            calib_count: 128,
            calib_seed: 0,
            version: 1,
        }
    }
}

/// Per department, per value `(min, max)` of the activations on calibration images.
pub type Ranges = Vec<Vec<(f32, f32)>>;

/// Calibration: given the f32 bundle and per-department CHW images, the activation ranges.
pub type Calibrator<'c> = &'c dyn Fn(&[u8], &[Vec<Vec<f32>>]) -> Result<Ranges>;

/// A conv after BN folding: weight (OIHW, or `[3, 3, C]` for depthwise) and shared bias.
pub struct FoldedConv {
    pub weight: Vec<f32>,
    pub bias: Vec<f32>,
    /// BN scale `g` (folded into the rows of `B` per department).
    pub g: Vec<f64>,
}

/// The whole checkpoint after folding.
pub struct Folded {
    pub graph: Graph,
    pub convs: Vec<FoldedConv>,
    /// Per department, per expert conv: `(A [r·k, Cin·k], B' [Cout·k, r·k])`.
    pub deltas: Vec<Vec<(Vec<f32>, Vec<f32>)>>,
    /// Per department: head weight `[classes, features]`, bias `[classes]`.
    pub heads: Vec<(Vec<f32>, Vec<f32>)>,
}

/// Reads every tensor the graph needs (errors name the tensor) and folds BN and scaling.
pub fn fold_checkpoint(ck: &Checkpoint) -> Result<Folded> {
    let graph = ck.graph()?;
    let (t, r, s) = (ck.meta.departments.len(), ck.meta.rank, ck.scaling());
    let mut convs = Vec::new();
    let mut deltas: Vec<Vec<(Vec<f32>, Vec<f32>)>> = vec![Vec::new(); t];
    for c in &graph.convs {
        let wshape = if c.depthwise {
            vec![c.cout, 1, 3, 3]
        } else {
            vec![c.cout, c.cin, c.k, c.k]
        };
        let w = ck.tensor(&format!("{}.weight", c.name), &wshape)?;
        let bn = |x: &str| ck.tensor(&format!("{}.{x}", c.bn), &[c.cout]);
        let (gamma, beta, mean, var) = (
            bn("weight")?,
            bn("bias")?,
            bn("running_mean")?,
            bn("running_var")?,
        );
        if let Some(i) = var.iter().position(|&v| v < 0.0) {
            bail!(
                "tensor `{}.running_var`: negative variance at channel {i}",
                c.bn
            );
        }
        let per = w.len() / c.cout.max(1);
        let g = bn_scale(gamma.into(), var.into(), ck.meta.bn_eps);
        let (wf, bias) = fold_weight(
            ArrayView2::from_shape((c.cout, per), w)?,
            g.view(),
            beta.into(),
            mean.into(),
        );
        let weight = into_flat(if c.depthwise {
            dw_to_hwc(wf.view())
        } else {
            wf
        });
        if !c.depthwise && r == 0 {
            // No experts (an mtl or transfer model): every department runs W0 alone.
            for dd in deltas.iter_mut() {
                dd.push((Vec::new(), Vec::new()));
            }
        } else if !c.depthwise {
            let (rk, ck_, ok) = (r * c.k, c.cin * c.k, c.cout * c.k);
            let a = ck.tensor(&format!("{}.lora_A", c.name), &[t, rk, ck_])?;
            let b = ck.tensor(&format!("{}.lora_B", c.name), &[t, ok, rk])?;
            let b = ArrayView3::from_shape((t, ok, rk), b)?;
            for (d, dd) in deltas.iter_mut().enumerate() {
                let a_t = a[d * rk * ck_..(d + 1) * rk * ck_].to_vec();
                let b_t = fold_b(b.index_axis(Axis(0), d), g.view(), s, c.k);
                dd.push((a_t, into_flat(b_t)));
            }
        }
        let (bias, g) = (into_flat(bias), into_flat(g));
        convs.push(FoldedConv { weight, bias, g });
    }
    let mut heads = Vec::new();
    for (d, dm) in ck.meta.departments.iter().enumerate() {
        let n = dm.classes.len();
        let w = ck.tensor(&format!("heads.{d}.weight"), &[n, graph.features])?;
        let b = ck.tensor(&format!("heads.{d}.bias"), &[n])?;
        heads.push((w.to_vec(), b.to_vec()));
    }
    Ok(Folded {
        graph,
        convs,
        deltas,
        heads,
    })
}

/// A payload push that did not fit (`write::Payload` returns `None` past 4 GiB).
fn fits<T>(o: Option<T>) -> Result<T> {
    o.context("payload over 4 GiB")
}

/// Writes one bundle from folded tensors. `qparams`: per department, per value
/// `(scale, zero_point)` (int8 only).
pub fn build(
    ck: &Checkpoint,
    f: &Folded,
    precision: Precision,
    delta: DeltaDType,
    qparams: Option<&[Vec<(f32, i32)>]>,
    version: u32,
    sign: Option<&SigningKey>,
) -> Result<Vec<u8>> {
    let g = &f.graph;
    let int8 = precision == Precision::Int8;
    ensure!(
        int8 == qparams.is_some(),
        "int8 bundles need activation parameters (and f32 ones none)"
    );
    let mut shared = write::Payload::default();
    let mut named: Vec<(String, DType, Vec<u32>, TensorRef)> = Vec::new();
    let mut conv_refs = Vec::new();
    for (c, fc) in g.convs.iter().zip(&f.convs) {
        let dims: Vec<u32> = if c.depthwise {
            vec![3, 3, c.cout as u32]
        } else {
            vec![c.cout as u32, c.cin as u32, c.k as u32, c.k as u32]
        };
        let (w, ws) = fits(shared.push_weight(&fc.weight, c.cout, c.depthwise, precision))?;
        let dt = if int8 { DType::I8 } else { DType::F32 };
        let b = fits(shared.push_f32(&fc.bias))?;
        named.push((format!("{}.weight", c.name), dt, dims, w));
        named.push((format!("{}.bias", c.bn), DType::F32, vec![c.cout as u32], b));
        if int8 {
            named.push((
                format!("{}.wscale", c.name),
                DType::F32,
                vec![c.cout as u32],
                ws,
            ));
        }
        conv_refs.push((w, b, ws));
    }

    let elem = if int8 { 1 } else { 4 };
    let plan = arena_plan::plan(g, elem);
    let values: Vec<ValueDesc> = g
        .values
        .iter()
        .zip(&plan.offsets)
        .map(|(&(h, w, c), &offset)| ValueDesc {
            h: h as u16,
            w: w as u16,
            c: c as u16,
            offset,
        })
        .collect();
    let ops: Vec<Op> = g
        .nodes
        .iter()
        .map(|n| match *n {
            Node::Conv {
                conv,
                input,
                output,
            } => {
                let c = &g.convs[conv];
                let (weight, bias, wscale) = conv_refs[conv];
                Op::Conv {
                    input,
                    output,
                    cout: c.cout as u16,
                    k: c.k as u8,
                    stride: c.stride as u8,
                    pad: c.pad as u8,
                    relu: c.relu,
                    weight,
                    bias,
                    wscale,
                    expert: c.expert.map(|e| e as u16),
                }
            }
            Node::DwConv {
                conv,
                input,
                output,
            } => {
                let c = &g.convs[conv];
                let (weight, bias, wscale) = conv_refs[conv];
                Op::DwConv {
                    input,
                    output,
                    stride: c.stride as u8,
                    relu: c.relu,
                    weight,
                    bias,
                    wscale,
                }
            }
            Node::MaxPool { input, output } => Op::MaxPool { input, output },
            Node::ConcatShuffle { a, b, output } => Op::ConcatShuffle { a, b, output },
            Node::PoolHead { input } => Op::PoolHead { input },
        })
        .collect();
    let tensors: Vec<NamedTensor<'_>> = named
        .iter()
        .map(|(name, dtype, d, data)| {
            let mut dims = [0u32; 4];
            dims[..d.len()].copy_from_slice(d);
            NamedTensor {
                name,
                dtype: *dtype,
                dims,
                rank: d.len() as u8,
                data: *data,
            }
        })
        .collect();
    let (nv, vbytes) = encode_seq(&values)?;
    let (no, obytes) = encode_seq(&ops)?;
    let (nt, tbytes) = encode_seq(&tensors)?;
    let meta = &ck.meta;
    let (mut mean, mut std) = ([0f32; 3], [1f32; 3]);
    for i in 0..meta.in_channels {
        mean[i] = meta.mean[i] as f32;
        std[i] = meta.std[i] as f32;
    }
    let mut manifest = Manifest {
        arch: &meta.arch,
        precision,
        input: InputSpec {
            channels: meta.in_channels as u16,
            size: meta.input_size as u16,
            mean,
            std,
        },
        rank: meta.rank as u16,
        features: g.features as u16,
        experts: g.experts as u16,
        values: Seq::from_encoded(nv, &vbytes),
        ops: Seq::from_encoded(no, &obytes),
        tensors: Seq::from_encoded(nt, &tbytes),
        arena: ArenaPlan {
            activation_bytes: plan.activation_bytes,
            materialized_bytes: 0,
            streaming_bytes: 0,
        },
    };
    layout::fill_totals(&mut manifest).context("arena over 4 GiB")?;
    let mbytes = postcard::to_allocvec(&manifest)?;
    let base_id = lorkd_runtime::format::view::base_id_of(&mbytes, &shared.0);

    let mut blobs = Vec::new();
    for (d, dm) in meta.departments.iter().enumerate() {
        // Update packages and the device's `Hello` reply hold the name: bounded here.
        let most = lorkd_runtime::update::package::NAME_MAX;
        if dm.name.len() > most {
            bail!(
                "department `{}`: name is {} bytes, at most {most} (update packages and the device protocol carry it)",
                dm.name,
                dm.name.len()
            );
        }
        let mut p = write::Payload::default();
        let mut drefs = Vec::new();
        for (c, (a, b)) in g
            .convs
            .iter()
            .filter(|c| c.expert.is_some())
            .zip(&f.deltas[d])
        {
            let (rk, ac, br) = (meta.rank * c.k, c.cin * c.k, c.cout * c.k);
            let dn = &dm.name;
            let what = |f: &str| format!("department {dn:?}: {}.lora_{f}", c.name);
            // The factor layout's one encoder (`format::factor`).
            let a = factor::encode(a, rk, ac, delta).with_context(|| what("A"))?;
            let b = factor::encode(b, br, rk, delta).with_context(|| what("B"))?;
            let (a, b) = (fits(p.push(&a))?, fits(p.push(&b))?);
            drefs.push(DeltaRef { a, b });
        }
        let hw = fits(p.push_f32(&f.heads[d].0))?;
        let hb = fits(p.push_f32(&f.heads[d].1))?;
        let act = match qparams {
            Some(q) => {
                let q = &q[d];
                ensure!(
                    q.len() == values.len(),
                    "calibration gave {} values, graph has {}",
                    q.len(),
                    values.len()
                );
                let q: Vec<QParams> = q
                    .iter()
                    .map(|&(scale, zero_point)| QParams { scale, zero_point })
                    .collect();
                fits(p.push_qparams(&q))?
            }
            None => fits(p.push(&[]))?,
        };
        let names: Vec<&str> = dm.classes.iter().map(String::as_str).collect();
        let (nc, cbytes) = encode_seq(&names)?;
        let (nd, dbytes) = encode_seq(&drefs)?;
        let m = DeptManifest {
            name: &dm.name,
            version,
            base_id,
            classes: Seq::from_encoded(nc, &cbytes),
            delta_dtype: delta,
            deltas: Seq::from_encoded(nd, &dbytes),
            head_weight: hw,
            head_bias: hb,
            act_qparams: act,
        };
        blobs.push((dm.name.as_str(), write_blob(&m, &p.0)?));
    }
    let mut bytes = write_bundle(&mbytes, &shared.0, &blobs, sign.is_some())?;
    if let Some(k) = sign {
        let sig = k.sign(&bytes);
        bytes.extend_from_slice(&sig.to_bytes());
    }
    // The packer's output must pass the runtime's own validation.
    Bundle::parse(&bytes).map_err(|e| anyhow::anyhow!("packed bundle fails validation: {e}"))?;
    Ok(bytes)
}

/// Seeded synthetic calibration images: `count` CHW images per department, pixels uniform
/// in [0, 1] with a per-image brightness and contrast, normalised with the model's mean/std.
pub fn synthetic_images(ck: &Checkpoint, count: usize, seed: u64) -> Vec<Vec<Vec<f32>>> {
    use rand::{Rng, SeedableRng};
    let m = &ck.meta;
    let n = m.in_channels * m.input_size * m.input_size;
    (0..m.departments.len())
        .map(|d| {
            let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(
                seed ^ (d as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15),
            );
            (0..count)
                .map(|_| {
                    let (bright, contrast): (f32, f32) =
                        (rng.gen_range(0.2..0.8), rng.gen_range(0.1..0.5));
                    (0..n)
                        .map(|i| {
                            let ch = i / (m.input_size * m.input_size);
                            let px =
                                (bright + contrast * rng.gen_range(-1.0..1.0f32)).clamp(0.0, 1.0);
                            (px - m.mean[ch] as f32) / m.std[ch] as f32
                        })
                        .collect()
                })
                .collect()
        })
        .collect()
}

/// Calibration images from a `lorkd-data` spec (`synthetic[:k=v,…]`, `medmnist:DIR[:names]`,
/// `folder:DIR`): per department of the checkpoint, the first `count` training images of
/// the dataset department with the same name (or at the same index when the names differ
/// and the counts agree), resized and normalised as the model's input spec says.
pub fn dataset_images(ck: &Checkpoint, spec: &str, count: usize) -> Result<Vec<Vec<Vec<f32>>>> {
    let ds = lorkd_data::Dataset::open_str(spec)
        .with_context(|| format!("calibration data `{spec}`"))?;
    let m = &ck.meta;
    let names: Vec<&str> = ds.departments().iter().map(|d| d.name.as_str()).collect();
    let by_name: Option<Vec<usize>> = m
        .departments
        .iter()
        .map(|d| names.iter().position(|n| *n == d.name))
        .collect();
    let map = match by_name {
        Some(v) => v,
        None if names.len() == m.departments.len() => (0..names.len()).collect(),
        None => bail!(
            "calibration data `{spec}` has {} departments, the checkpoint {}",
            names.len(),
            m.departments.len()
        ),
    };
    let (mut mean, mut std) = ([0f32; 3], [1f32; 3]);
    for c in 0..m.in_channels {
        mean[c] = m.mean[c] as f32;
        std[c] = m.std[c] as f32;
    }
    let t = lorkd_data::Transform {
        size: m.input_size as u32,
        channels: m.in_channels,
        mean,
        std,
    };
    ensure!(
        m.in_channels == 1 || m.in_channels == 3,
        "calibration images need 1 or 3 channels"
    );
    let mut out = Vec::new();
    for (d, &src) in map.iter().enumerate() {
        let idx = ds.indices_of(lorkd_data::Split::Train, src);
        ensure!(
            !idx.is_empty(),
            "calibration data `{spec}`: department `{}` has no training images",
            names[src]
        );
        let imgs = idx
            .iter()
            .take(count.max(1))
            .map(|&i| {
                ds.sample(lorkd_data::Split::Train, i, &t, false)
                    .map(lorkd_data::Sample::into_chw)
            })
            .collect::<Result<Vec<_>, _>>()
            .with_context(|| {
                format!(
                    "calibration images of department `{}`",
                    m.departments[d].name
                )
            })?;
        out.push(imgs);
    }
    Ok(out)
}

/// The default calibration spec: `lorkd-data`'s seeded synthetic departments, one per
/// checkpoint department (cycled beyond 64), at the model's input size.
pub fn default_calib_spec(ck: &Checkpoint, count: usize, seed: u64) -> String {
    let m = &ck.meta;
    format!(
        "synthetic:departments={},classes=2,size={},per_class={},seed={seed}",
        m.departments.len().min(64),
        m.input_size.clamp(16, 512),
        count.div_ceil(2).max(1)
    )
}

/// Packs a checkpoint. `calibrate` is called for int8 bundles only, with `images`
/// (per department CHW images; synthetic when `None`).
pub fn pack(
    ck: &Checkpoint,
    opts: &PackOptions,
    sign: Option<&SigningKey>,
    images: Option<Vec<Vec<Vec<f32>>>>,
    calibrate: Calibrator<'_>,
) -> Result<Vec<u8>> {
    let folded = fold_checkpoint(ck)?;
    match opts.weights {
        Precision::F32 => build(
            ck,
            &folded,
            Precision::F32,
            opts.delta,
            None,
            opts.version,
            sign,
        ),
        Precision::Int8 => {
            let f32_bundle = build(
                ck,
                &folded,
                Precision::F32,
                DeltaDType::F32,
                None,
                opts.version,
                None,
            )?;
            let images = images
                .unwrap_or_else(|| synthetic_images(ck, opts.calib_count.max(1), opts.calib_seed));
            ensure!(
                images.len() == ck.meta.departments.len(),
                "calibration images for {} departments, model has {}",
                images.len(),
                ck.meta.departments.len()
            );
            let ranges = calibrate(&f32_bundle, &images)?;
            ensure!(
                ranges.len() == images.len(),
                "calibration returned {} departments",
                ranges.len()
            );
            let q: Vec<Vec<(f32, i32)>> = ranges
                .iter()
                .map(|d| {
                    d.iter()
                        .map(|&(lo, hi)| activation_qparams(lo, hi))
                        .collect()
                })
                .collect();
            build(
                ck,
                &folded,
                Precision::Int8,
                opts.delta,
                Some(&q),
                opts.version,
                sign,
            )
        }
    }
}
