//! Reads the trainer's checkpoint (safetensors + `lorkd` metadata JSON, see
//! docs/checkpoint-format.md) without libtorch, and makes random ones for tests.
//!
//! Tensor names are torchvision's ShuffleNetV2 `state_dict` keys; department factors sit
//! beside their conv (`<conv>.lora_A` `[T, r·k, Cin·k]`, `<conv>.lora_B` `[T, Cout·k, r·k]`),
//! heads are `heads.<t>.weight|bias`.

use std::collections::HashMap;
use std::path::Path;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use safetensors::tensor::{Dtype, TensorView};
use safetensors::SafeTensors;
use serde::{Deserialize, Serialize};

use crate::graph::{shufflenet_v2, Graph};

/// Safetensors metadata key holding the JSON metadata.
pub const METADATA_KEY: &str = "lorkd";

/// One department of the metadata.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DeptMeta {
    pub name: String,
    pub classes: Vec<String>,
}

/// The `lorkd` metadata JSON (the fields the packer needs; others are ignored).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CkptMeta {
    pub format: u32,
    pub arch: String,
    pub in_channels: usize,
    pub input_size: usize,
    pub mean: Vec<f64>,
    pub std: Vec<f64>,
    pub rank: usize,
    pub lora_alpha: f64,
    pub bn_eps: f64,
    pub departments: Vec<DeptMeta>,
}

/// Why a checkpoint cannot be read or packed; each names the file, key or tensor.
#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    #[error("{path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("not a safetensors file: {0}")]
    Safetensors(String),
    #[error("metadata key `lorkd` missing")]
    MissingMetadata,
    #[error("metadata key `lorkd`: {0}")]
    BadMetadata(String),
    #[error("tensor `{0}` missing")]
    MissingTensor(String),
    #[error("tensor `{name}`: shape {got:?}, expected {expected:?}")]
    Shape {
        name: String,
        expected: Vec<usize>,
        got: Vec<usize>,
    },
    #[error("tensor `{name}`: dtype {got}, expected F32")]
    Dtype { name: String, got: String },
    #[error("tensor `{0}`: non-finite value")]
    NonFinite(String),
}

/// A loaded checkpoint: metadata and f32 tensors by name.
#[derive(Clone, Debug)]
pub struct Checkpoint {
    pub meta: CkptMeta,
    tensors: HashMap<String, (Vec<usize>, Vec<f32>)>,
}

impl Checkpoint {
    /// Reads a checkpoint file.
    pub fn load(path: impl AsRef<Path>) -> Result<Self, CheckpointError> {
        let p = path.as_ref();
        let bytes = std::fs::read(p).map_err(|source| CheckpointError::Io {
            path: p.display().to_string(),
            source,
        })?;
        Self::from_bytes(&bytes)
    }

    /// Parses safetensors bytes and the metadata (tensors are checked when asked for).
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, CheckpointError> {
        let st = |e: safetensors::SafeTensorError| CheckpointError::Safetensors(e.to_string());
        let (_, header) = SafeTensors::read_metadata(bytes).map_err(st)?;
        let json = header
            .metadata()
            .as_ref()
            .and_then(|m| m.get(METADATA_KEY))
            .ok_or(CheckpointError::MissingMetadata)?;
        let meta = parse_meta(json).map_err(CheckpointError::BadMetadata)?;
        let bad = |m: &str| Err(CheckpointError::BadMetadata(m.to_string()));
        if meta.format != 1 {
            return bad(&format!("format {} (this build reads 1)", meta.format));
        }
        if meta.mean.len() != meta.in_channels || meta.std.len() != meta.in_channels {
            return bad("mean/std length differs from in_channels");
        }
        if meta.std.iter().any(|s| !(s.is_finite() && *s > 0.0))
            || meta.mean.iter().any(|m| !m.is_finite())
        {
            return bad("mean must be finite and std positive");
        }
        if !meta.bn_eps.is_finite() || meta.bn_eps <= 0.0 || !meta.lora_alpha.is_finite() {
            return bad("bn_eps must be positive and lora_alpha finite");
        }
        if meta.rank > 1024 {
            return bad("rank out of range");
        }
        if meta.departments.is_empty() || meta.departments.len() > 1024 {
            return bad("departments must hold 1..=1024 entries");
        }
        if let Some(d) = meta
            .departments
            .iter()
            .find(|d| d.classes.is_empty() || d.name.is_empty() || d.name.len() > 255)
        {
            return bad(&format!(
                "department `{}`: empty name/classes or name too long",
                d.name
            ));
        }
        let tensors_st = SafeTensors::deserialize(bytes).map_err(st)?;
        let mut tensors = HashMap::new();
        for (name, view) in tensors_st.tensors() {
            if view.dtype() != Dtype::F32 {
                return Err(CheckpointError::Dtype {
                    name,
                    got: format!("{:?}", view.dtype()),
                });
            }
            let data: Vec<f32> = view
                .data()
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect();
            tensors.insert(name, (view.shape().to_vec(), data));
        }
        Ok(Checkpoint { meta, tensors })
    }

    /// The f32 data of tensor `name`, which must have exactly `shape` and finite values.
    pub fn tensor(&self, name: &str, shape: &[usize]) -> Result<&[f32], CheckpointError> {
        let (s, d) = self
            .tensors
            .get(name)
            .ok_or_else(|| CheckpointError::MissingTensor(name.into()))?;
        if s != shape {
            return Err(CheckpointError::Shape {
                name: name.into(),
                expected: shape.to_vec(),
                got: s.clone(),
            });
        }
        if d.iter().any(|x| !x.is_finite()) {
            return Err(CheckpointError::NonFinite(name.into()));
        }
        Ok(d)
    }

    /// The ShuffleNetV2 graph this checkpoint describes.
    pub fn graph(&self) -> anyhow::Result<Graph> {
        shufflenet_v2(&self.meta.arch, self.meta.in_channels, self.meta.input_size)
    }

    /// LoRA scaling `s = lora_alpha / r`.
    pub fn scaling(&self) -> f64 {
        if self.meta.rank == 0 {
            0.0
        } else {
            self.meta.lora_alpha / self.meta.rank as f64
        }
    }
}

/// Parses the metadata JSON; errors name the offending key (`lorkd.rank: …`).
fn parse_meta(json: &str) -> Result<CkptMeta, String> {
    use serde_json::{from_value, Value};
    let v: Value = serde_json::from_str(json).map_err(|e| format!("not JSON: {e}"))?;
    if let Err(e) = from_value::<CkptMeta>(v.clone()) {
        let field = |k: &str| {
            v.get(k)
                .cloned()
                .ok_or_else(|| format!("key `{k}` missing"))
        };
        fn check<T: serde::de::DeserializeOwned>(
            k: &str,
            x: Result<Value, String>,
        ) -> Result<(), String> {
            from_value::<T>(x?)
                .map(drop)
                .map_err(|e| format!("key `{k}`: {e}"))
        }
        check::<u32>("format", field("format"))?;
        check::<String>("arch", field("arch"))?;
        for k in ["in_channels", "input_size", "rank"] {
            check::<usize>(k, field(k))?;
        }
        for k in ["mean", "std"] {
            check::<Vec<f64>>(k, field(k))?;
        }
        for k in ["lora_alpha", "bn_eps"] {
            check::<f64>(k, field(k))?;
        }
        check::<Vec<DeptMeta>>("departments", field("departments"))?;
        return Err(e.to_string());
    }
    from_value(v).map_err(|e| e.to_string())
}

/// What [`random_checkpoint`] builds.
#[derive(Clone, Debug)]
pub struct RandomSpec {
    pub arch: String,
    pub in_channels: usize,
    pub input_size: usize,
    pub rank: usize,
    pub classes: Vec<usize>,
    pub seed: u64,
}

/// A random checkpoint in the trainer's format, for tests before `lorkd-train init` files
/// are at hand. Weights are He-initialised (ReLU convs) or variance-preserving (depthwise),
/// BatchNorm statistics random around identity, `lora_B` non-zero: activations stay near
/// unit scale over the whole depth, and every department differs.
pub fn random_checkpoint(spec: &RandomSpec) -> anyhow::Result<Vec<u8>> {
    let g = shufflenet_v2(&spec.arch, spec.in_channels, spec.input_size)?;
    let mut rng = ChaCha8Rng::seed_from_u64(spec.seed);
    let t = spec.classes.len();
    let r = spec.rank;
    let mut out: Vec<(String, Vec<usize>, Vec<f32>)> = Vec::new();
    let normal = |rng: &mut ChaCha8Rng, n: usize, std: f32| -> Vec<f32> {
        (0..n)
            .map(|_| {
                // Box–Muller.
                let (u1, u2): (f32, f32) = (rng.gen_range(1e-7..1.0), rng.gen());
                std * (-2.0 * u1.ln()).sqrt() * (2.0 * std::f32::consts::PI * u2).cos()
            })
            .collect()
    };
    for c in &g.convs {
        let (per, shape) = if c.depthwise {
            (9, vec![c.cout, 1, 3, 3])
        } else {
            (c.cin * c.k * c.k, vec![c.cout, c.cin, c.k, c.k])
        };
        let gain = if c.relu { 2.0 } else { 1.0 };
        let w = normal(&mut rng, c.cout * per, (gain / per as f32).sqrt());
        out.push((format!("{}.weight", c.name), shape, w));
        let n = c.cout;
        let gamma: Vec<f32> = (0..n).map(|_| rng.gen_range(0.7..1.3)).collect();
        let beta: Vec<f32> = normal(&mut rng, n, 0.1);
        let mean: Vec<f32> = normal(&mut rng, n, 0.1);
        let var: Vec<f32> = (0..n).map(|_| rng.gen_range(0.7..1.3)).collect();
        for (suffix, v) in [
            ("weight", gamma),
            ("bias", beta),
            ("running_mean", mean),
            ("running_var", var),
        ] {
            out.push((format!("{}.{suffix}", c.bn), vec![n], v));
        }
        if !c.depthwise {
            let (rk, ck, ok) = (r * c.k, c.cin * c.k, c.cout * c.k);
            let a = normal(&mut rng, t * rk * ck, (1.0 / ck as f32).sqrt());
            out.push((format!("{}.lora_A", c.name), vec![t, rk, ck], a));
            let b = normal(
                &mut rng,
                t * ok * rk,
                0.3 * (gain / per as f32).sqrt() / (rk.max(1) as f32).sqrt(),
            );
            out.push((format!("{}.lora_B", c.name), vec![t, ok, rk], b));
        }
    }
    for (i, &cl) in spec.classes.iter().enumerate() {
        let w = normal(&mut rng, cl * g.features, (1.0 / g.features as f32).sqrt());
        out.push((format!("heads.{i}.weight"), vec![cl, g.features], w));
        out.push((
            format!("heads.{i}.bias"),
            vec![cl],
            normal(&mut rng, cl, 0.1),
        ));
    }
    let (mean, std) = if spec.in_channels == 3 {
        (vec![0.485, 0.456, 0.406], vec![0.229, 0.224, 0.225])
    } else {
        (vec![0.5; spec.in_channels], vec![0.5; spec.in_channels])
    };
    let meta = CkptMeta {
        format: 1,
        arch: spec.arch.clone(),
        in_channels: spec.in_channels,
        input_size: spec.input_size,
        mean,
        std,
        rank: r,
        lora_alpha: 2.0 * r as f64,
        bn_eps: 1e-5,
        departments: spec
            .classes
            .iter()
            .enumerate()
            .map(|(i, &c)| DeptMeta {
                name: format!("dept{i}"),
                classes: (0..c).map(|j| format!("c{j}")).collect(),
            })
            .collect(),
    };
    write_safetensors(&out, &meta)
}

/// Serialises named f32 tensors and the metadata as safetensors.
pub fn write_safetensors(
    tensors: &[(String, Vec<usize>, Vec<f32>)],
    meta: &CkptMeta,
) -> anyhow::Result<Vec<u8>> {
    let bytes: Vec<Vec<u8>> = tensors
        .iter()
        .map(|(_, _, d)| d.iter().flat_map(|x| x.to_le_bytes()).collect())
        .collect();
    let mut views = Vec::new();
    for ((name, shape, _), b) in tensors.iter().zip(&bytes) {
        views.push((name.clone(), TensorView::new(Dtype::F32, shape.clone(), b)?));
    }
    let md = HashMap::from([(METADATA_KEY.to_string(), serde_json::to_string(meta)?)]);
    Ok(safetensors::serialize(views, Some(md))?)
}
