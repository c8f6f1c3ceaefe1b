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

use crate::graph::{shufflenet_v2, Graph};

pub use lorkd_checkpoint::{
    CheckpointError, Department as DeptMeta, Meta as CkptMeta, METADATA_KEY,
};

/// A loaded checkpoint: metadata and f32 tensors by name.
#[derive(Clone, Debug)]
pub struct Checkpoint {
    pub meta: CkptMeta,
    tensors: HashMap<String, (Vec<usize>, Vec<f32>)>,
}

impl Checkpoint {
    /// Reads a checkpoint file.
    pub fn load(path: impl AsRef<Path>) -> Result<Self, CheckpointError> {
        Self::from_bytes(&lorkd_checkpoint::read_file(path.as_ref())?)
    }

    /// Parses safetensors bytes, the metadata and the f32 tensors (values are checked when
    /// asked for).
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, CheckpointError> {
        let (meta, raw) = lorkd_checkpoint::read(bytes)?;
        let tensors = raw
            .into_iter()
            .map(|(name, t)| (name, (t.shape, t.data)))
            .collect();
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
        self.meta.scaling()
    }
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
            .map(|(i, &c)| DeptMeta::numbered(i, c))
            .collect(),
        unified_head: false,
    };
    write_safetensors(&out, &meta)
}

/// Serialises named f32 tensors and the metadata as safetensors.
pub fn write_safetensors(
    tensors: &[(String, Vec<usize>, Vec<f32>)],
    meta: &CkptMeta,
) -> anyhow::Result<Vec<u8>> {
    Ok(lorkd_checkpoint::write(
        tensors.iter().map(|(n, s, d)| (n.as_str(), &s[..], &d[..])),
        meta,
    )?)
}
