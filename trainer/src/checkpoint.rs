//! Checkpoints: safetensors (f32, little-endian) with the model [`Config`] as JSON under the
//! metadata key `lorkd`. Layout and Python loading recipe: docs/checkpoint-format.md.
use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use safetensors::tensor::{Dtype, TensorView};
use safetensors::SafeTensors;
use tch::{nn, Device, Kind, Tensor};

use crate::config::Config;
use crate::models::shufflenet::ShuffleNetLoRKD;

/// Safetensors metadata key holding the [`Config`] JSON.
pub const METADATA_KEY: &str = "lorkd";

/// Why a checkpoint could not be written or read.
#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    /// File system error.
    #[error("checkpoint {path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The cause.
        source: std::io::Error,
    },
    /// Not a valid safetensors file.
    #[error("safetensors: {0}")]
    Format(#[from] safetensors::SafeTensorError),
    /// The `lorkd` metadata key is absent.
    #[error("metadata key `lorkd` missing")]
    MissingMetadata,
    /// The `lorkd` metadata JSON is malformed or inconsistent.
    #[error("metadata key `lorkd`: {0}")]
    BadMetadata(String),
    /// A tensor the model needs is absent.
    #[error("tensor `{0}` missing")]
    MissingTensor(String),
    /// A tensor the model does not have.
    #[error("unexpected tensor `{0}`")]
    UnexpectedTensor(String),
    /// A tensor with the wrong shape.
    #[error("tensor `{name}`: shape {got:?}, expected {expected:?}")]
    Shape {
        /// Tensor name.
        name: String,
        /// Shape the model needs.
        expected: Vec<i64>,
        /// Shape in the file.
        got: Vec<i64>,
    },
    /// A tensor that is not f32.
    #[error("tensor `{name}`: dtype {got}, expected F32")]
    Dtype {
        /// Tensor name.
        name: String,
        /// Dtype in the file.
        got: String,
    },
    /// libtorch refused an operation.
    #[error("libtorch: {0}")]
    Torch(#[from] tch::TchError),
}

/// A checkpoint in memory: config plus named f32 tensors on the CPU.
#[derive(Debug)]
pub struct Checkpoint {
    /// Model configuration (the `lorkd` metadata).
    pub config: Config,
    /// Tensors by name, f32, CPU, contiguous.
    pub tensors: BTreeMap<String, Tensor>,
}

fn tensor_bytes(t: &Tensor) -> Result<Vec<u8>, CheckpointError> {
    let flat = t
        .to_device(Device::Cpu)
        .to_kind(Kind::Float)
        .contiguous()
        .reshape([-1]);
    let v = Vec::<f32>::try_from(&flat)?;
    Ok(v.iter().flat_map(|x| x.to_le_bytes()).collect())
}

impl Checkpoint {
    /// Snapshot of every variable of `vs` (parameters and BN running statistics).
    pub fn from_var_store(config: &Config, vs: &nn::VarStore) -> Self {
        let tensors = vs
            .variables()
            .into_iter()
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
        let json = serde_json::to_string(&self.config)
            .map_err(|e| CheckpointError::BadMetadata(e.to_string()))?;
        let mut bufs = Vec::with_capacity(self.tensors.len());
        for (name, t) in &self.tensors {
            let shape: Vec<usize> = t.size().iter().map(|&d| d as usize).collect();
            bufs.push((name.clone(), shape, tensor_bytes(t)?));
        }
        let mut views = Vec::with_capacity(bufs.len());
        for (name, shape, bytes) in &bufs {
            views.push((
                name.clone(),
                TensorView::new(Dtype::F32, shape.clone(), bytes)?,
            ));
        }
        let meta = HashMap::from([(METADATA_KEY.to_string(), json)]);
        Ok(safetensors::serialize(views, Some(meta))?)
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
        let (_, header) = SafeTensors::read_metadata(bytes)?;
        let json = header
            .metadata()
            .as_ref()
            .and_then(|m| m.get(METADATA_KEY))
            .ok_or(CheckpointError::MissingMetadata)?;
        let config: Config =
            serde_json::from_str(json).map_err(|e| CheckpointError::BadMetadata(e.to_string()))?;
        config.validate().map_err(CheckpointError::BadMetadata)?;
        let tensors = f32_tensors(&SafeTensors::deserialize(bytes)?)?;
        Ok(Self { config, tensors })
    }

    /// Reads and parses `path`.
    pub fn load(path: impl AsRef<Path>) -> Result<Self, CheckpointError> {
        let path = path.as_ref();
        let bytes = std::fs::read(path).map_err(|source| CheckpointError::Io {
            path: path.display().to_string(),
            source,
        })?;
        Self::from_bytes(&bytes)
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
                    expected,
                    got: src.size(),
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
        })?;
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

/// Every tensor of a safetensors file as a CPU f32 `Tensor`; any other dtype is refused,
/// naming the tensor. Shared by checkpoints and the trainer's state files (`train::io`).
pub(crate) fn f32_tensors(
    st: &SafeTensors<'_>,
) -> Result<BTreeMap<String, Tensor>, CheckpointError> {
    let mut tensors = BTreeMap::new();
    for (name, view) in st.tensors() {
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
        let shape: Vec<i64> = view.shape().iter().map(|&d| d as i64).collect();
        tensors.insert(name, Tensor::from_slice(&data).reshape(shape));
    }
    Ok(tensors)
}
