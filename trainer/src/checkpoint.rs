//! Checkpoints: safetensors (f32, little-endian) with the model [`Config`] as JSON under the
//! metadata key `lorkd`. The metadata, its checks, the f32 codec and the errors live in
//! `lorkd-checkpoint` (shared with the tools); this module moves tensors in and out of
//! libtorch. Layout and Python loading recipe: docs/checkpoint-format.md.
use std::collections::BTreeMap;
use std::path::Path;

use tch::{nn, Device, Kind, Tensor};

use crate::config::Config;
use crate::models::shufflenet::ShuffleNetLoRKD;

pub use lorkd_checkpoint::{CheckpointError, METADATA_KEY};

fn torch(e: tch::TchError) -> CheckpointError {
    CheckpointError::Backend(format!("libtorch: {e}"))
}

fn dims(t: &Tensor) -> Vec<usize> {
    t.size().iter().map(|&d| d as usize).collect()
}

/// A checkpoint in memory: config plus named f32 tensors on the CPU.
#[derive(Debug)]
pub struct Checkpoint {
    /// Model configuration (the `lorkd` metadata).
    pub config: Config,
    /// Tensors by name, f32, CPU, contiguous.
    pub tensors: BTreeMap<String, Tensor>,
}

fn tensor_f32(t: &Tensor) -> Result<Vec<f32>, CheckpointError> {
    let flat = t
        .to_device(Device::Cpu)
        .to_kind(Kind::Float)
        .contiguous()
        .reshape([-1]);
    Vec::<f32>::try_from(&flat).map_err(torch)
}

/// Name prefix of variables that exist only while training (kept in the run's state file,
/// never in a checkpoint): the learned projection of feature-level distillation.
pub const TRAINING_ONLY: &str = "kd_proj.";

impl Checkpoint {
    /// Snapshot of every variable of `vs` (parameters and BN running statistics), except
    /// training-only ones under [`TRAINING_ONLY`] (the feature-KD projection).
    pub fn from_var_store(config: &Config, vs: &nn::VarStore) -> Self {
        let tensors = vs
            .variables()
            .into_iter()
            .filter(|(k, _)| !k.starts_with(TRAINING_ONLY))
            .map(|(k, v)| {
                (
                    k,
                    v.detach()
                        .to_device(Device::Cpu)
                        .to_kind(Kind::Float)
                        .contiguous(),
                )
            })
            .collect();
        Self {
            config: config.clone(),
            tensors,
        }
    }

    /// Serialises to safetensors bytes.
    pub fn to_bytes(&self) -> Result<Vec<u8>, CheckpointError> {
        let mut bufs = Vec::with_capacity(self.tensors.len());
        for (name, t) in &self.tensors {
            bufs.push((name.as_str(), dims(t), tensor_f32(t)?));
        }
        lorkd_checkpoint::write(
            bufs.iter().map(|(n, s, d)| (*n, &s[..], &d[..])),
            &self.config.clone().into(),
        )
    }

    /// Writes the checkpoint to `path`.
    pub fn save(&self, path: impl AsRef<Path>) -> Result<(), CheckpointError> {
        let path = path.as_ref();
        std::fs::write(path, self.to_bytes()?).map_err(|source| CheckpointError::Io {
            path: path.display().to_string(),
            source,
        })
    }

    /// Parses safetensors bytes; checks the metadata and that every tensor is f32.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, CheckpointError> {
        let (meta, raw) = lorkd_checkpoint::read(bytes)?;
        let config = Config::try_from(meta).map_err(CheckpointError::BadMetadata)?;
        Ok(Self {
            config,
            tensors: to_torch(raw),
        })
    }

    /// Reads and parses `path`.
    pub fn load(path: impl AsRef<Path>) -> Result<Self, CheckpointError> {
        Self::from_bytes(&lorkd_checkpoint::read_file(path.as_ref())?)
    }

    /// Copies the tensors into `vs`: every variable must be present with its exact shape, and
    /// no other tensor may be in the checkpoint. Nothing is copied unless all checks pass.
    pub fn load_into(&self, vs: &nn::VarStore) -> Result<(), CheckpointError> {
        let vars = vs.variables();
        let mut names: Vec<&String> = vars.keys().collect();
        names.sort();
        for name in &names {
            let src = self
                .tensors
                .get(*name)
                .ok_or_else(|| CheckpointError::MissingTensor((*name).clone()))?;
            let expected = vars[*name].size();
            if src.size() != expected {
                return Err(CheckpointError::Shape {
                    name: (*name).clone(),
                    expected: expected.iter().map(|&d| d as usize).collect(),
                    got: dims(src),
                });
            }
        }
        if let Some(extra) = self.tensors.keys().find(|k| !vars.contains_key(*k)) {
            return Err(CheckpointError::UnexpectedTensor(extra.clone()));
        }
        tch::no_grad(|| {
            for (name, mut dst) in vars {
                dst.f_copy_(&self.tensors[&name])?;
            }
            Ok::<(), tch::TchError>(())
        })
        .map_err(torch)?;
        Ok(())
    }

    /// Builds the student described by the checkpoint on `device` and loads its weights.
    pub fn into_model(
        &self,
        device: Device,
    ) -> Result<(nn::VarStore, ShuffleNetLoRKD), CheckpointError> {
        let vs = nn::VarStore::new(device);
        let model = ShuffleNetLoRKD::new(&vs.root(), &self.config);
        self.load_into(&vs)?;
        Ok((vs, model))
    }
}

/// Decoded f32 tensors ([`lorkd_checkpoint::f32_tensors`]) as CPU `Tensor`s. Shared by
/// checkpoints and the trainer's state files (`train::io`).
pub(crate) fn to_torch(
    raw: BTreeMap<String, lorkd_checkpoint::F32Tensor>,
) -> BTreeMap<String, Tensor> {
    raw.into_iter()
        .map(|(name, t)| {
            let shape: Vec<i64> = t.shape.iter().map(|&d| d as i64).collect();
            (name, Tensor::from_slice(&t.data).reshape(shape))
        })
        .collect()
}
