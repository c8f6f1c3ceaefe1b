//! lorkd-checkpoint: the checkpoint metadata — the JSON under the safetensors key `lorkd`
//! ([`Meta`], [`Department`]) — its validation, the f32 tensor decoder and writer, and the
//! errors ([`CheckpointError`]). The trainer (`lorkd-train`, libtorch) writes and reads
//! checkpoints through it; the tools (`lorkd pack`, no libtorch) read them through it.
//! Layout: docs/checkpoint-format.md.
#![deny(unsafe_code)]
#![warn(missing_docs)]

use std::collections::{BTreeMap, HashMap};

use safetensors::tensor::{Dtype, TensorView};
use safetensors::SafeTensors;
use serde::{Deserialize, Serialize};

/// Safetensors metadata key holding the [`Meta`] JSON.
pub const METADATA_KEY: &str = "lorkd";

/// Metadata format version written and read.
pub const FORMAT_VERSION: u32 = 1;

/// Largest rank, department count and class-name length accepted (the packer's limits).
pub const MAX_RANK: usize = 1024;
/// Most departments accepted.
pub const MAX_DEPARTMENTS: usize = 1024;
/// Longest department name (bytes).
pub const MAX_NAME: usize = 255;

/// One department (expert) and the class names of its head.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Department {
    /// Department name (`lung`, `thyroid`, … or `dept0`, …).
    pub name: String,
    /// Class names; the head has one output per class.
    pub classes: Vec<String>,
}

impl Department {
    /// `dept<i>` with classes `c0..c<n>`.
    pub fn numbered(i: usize, classes: usize) -> Self {
        Self {
            name: format!("dept{i}"),
            classes: (0..classes).map(|c| format!("c{c}")).collect(),
        }
    }
}

/// The `lorkd` metadata JSON. Field order is the serialised order.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Meta {
    /// Metadata format version ([`FORMAT_VERSION`]).
    pub format: u32,
    /// Student architecture (torchvision name, e.g. `shufflenet_v2_x1_0`).
    pub arch: String,
    /// Image channels (1 grayscale, 3 RGB).
    pub in_channels: usize,
    /// Square input size the model is trained at.
    pub input_size: usize,
    /// Per-channel normalisation mean (len = in_channels).
    pub mean: Vec<f64>,
    /// Per-channel normalisation std (len = in_channels).
    pub std: Vec<f64>,
    /// LoRA rank `r`.
    pub rank: usize,
    /// `lora_alpha`; scaling `s = lora_alpha / r`.
    pub lora_alpha: f64,
    /// BatchNorm epsilon.
    pub bn_eps: f64,
    /// Departments in expert order (index t of `lora_A[t]`, `heads.<t>`).
    pub departments: Vec<Department>,
    /// Whether the unified head `head.*` over all departments' classes exists.
    #[serde(default)]
    pub unified_head: bool,
}

impl Meta {
    /// Parses the JSON; a wrong field is named (`key `rank`: …`).
    ///
    /// # Errors
    /// Not JSON, a missing key, a key of the wrong type.
    pub fn parse(json: &str) -> Result<Meta, String> {
        use serde_json::{from_value, Value};
        let v: Value = serde_json::from_str(json).map_err(|e| format!("not JSON: {e}"))?;
        if let Err(e) = from_value::<Meta>(v.clone()) {
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
            check::<Vec<Department>>("departments", field("departments"))?;
            return Err(e.to_string());
        }
        from_value(v).map_err(|e| e.to_string())
    }

    /// Checks internal consistency and the limits every reader relies on.
    ///
    /// # Errors
    /// What is wrong, in words.
    pub fn validate(&self) -> Result<(), String> {
        if self.format != FORMAT_VERSION {
            return Err(format!(
                "format {} (this build reads {FORMAT_VERSION})",
                self.format
            ));
        }
        if !(1..=64).contains(&self.in_channels) {
            return Err(format!("in_channels {} out of range", self.in_channels));
        }
        if self.mean.len() != self.in_channels || self.std.len() != self.in_channels {
            return Err("mean/std length differs from in_channels".into());
        }
        if self.std.iter().any(|s| !(s.is_finite() && *s > 0.0))
            || self.mean.iter().any(|m| !m.is_finite())
        {
            return Err("mean must be finite and std positive".into());
        }
        if !(1..=8192).contains(&self.input_size) {
            return Err(format!("input_size {} out of range", self.input_size));
        }
        if self.rank > MAX_RANK || !self.lora_alpha.is_finite() {
            return Err("rank or lora_alpha out of range".into());
        }
        if !(self.bn_eps.is_finite() && self.bn_eps > 0.0) {
            return Err("bn_eps must be positive".into());
        }
        if self.departments.is_empty() || self.departments.len() > MAX_DEPARTMENTS {
            return Err(format!(
                "departments must hold 1..={MAX_DEPARTMENTS} entries"
            ));
        }
        if let Some(d) = self
            .departments
            .iter()
            .find(|d| d.classes.is_empty() || d.name.is_empty() || d.name.len() > MAX_NAME)
        {
            return Err(format!(
                "department `{}`: empty name/classes or name too long",
                d.name
            ));
        }
        Ok(())
    }

    /// LoRA scaling `s = lora_alpha / r` (0 when r = 0).
    pub fn scaling(&self) -> f64 {
        if self.rank == 0 {
            0.0
        } else {
            self.lora_alpha / self.rank as f64
        }
    }
}

/// Why a checkpoint cannot be read or written; each names the file, key or tensor.
#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    /// File system error.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The cause.
        source: std::io::Error,
    },
    /// Not a valid safetensors file.
    #[error("not a safetensors file: {0}")]
    Safetensors(String),
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
        /// Shape the reader needs.
        expected: Vec<usize>,
        /// Shape in the file.
        got: Vec<usize>,
    },
    /// A tensor that is not f32.
    #[error("tensor `{name}`: dtype {got}, expected F32")]
    Dtype {
        /// Tensor name.
        name: String,
        /// Dtype in the file.
        got: String,
    },
    /// A tensor holding NaN or infinity.
    #[error("tensor `{0}`: non-finite value")]
    NonFinite(String),
    /// The tensor library (libtorch in the trainer) refused an operation.
    #[error("{0}")]
    Backend(String),
}

impl From<safetensors::SafeTensorError> for CheckpointError {
    fn from(e: safetensors::SafeTensorError) -> Self {
        CheckpointError::Safetensors(e.to_string())
    }
}

/// A decoded f32 tensor: shape and row-major data.
#[derive(Clone, Debug, PartialEq)]
pub struct F32Tensor {
    /// Shape.
    pub shape: Vec<usize>,
    /// Row-major values.
    pub data: Vec<f32>,
}

/// Reads the file at `path` (an I/O error names it).
///
/// # Errors
/// I/O.
pub fn read_file(path: &std::path::Path) -> Result<Vec<u8>, CheckpointError> {
    std::fs::read(path).map_err(|source| CheckpointError::Io {
        path: path.display().to_string(),
        source,
    })
}

/// The validated [`Meta`] of checkpoint bytes (reads the header only).
///
/// # Errors
/// Not safetensors, no or bad `lorkd` metadata.
pub fn read_meta(bytes: &[u8]) -> Result<Meta, CheckpointError> {
    let (_, header) = SafeTensors::read_metadata(bytes)?;
    let json = header
        .metadata()
        .as_ref()
        .and_then(|m| m.get(METADATA_KEY))
        .ok_or(CheckpointError::MissingMetadata)?;
    let meta = Meta::parse(json).map_err(CheckpointError::BadMetadata)?;
    meta.validate().map_err(CheckpointError::BadMetadata)?;
    Ok(meta)
}

/// Every tensor of safetensors bytes, decoded; any dtype but f32 is refused, naming the tensor.
///
/// # Errors
/// Not safetensors, a tensor that is not f32.
pub fn f32_tensors(bytes: &[u8]) -> Result<BTreeMap<String, F32Tensor>, CheckpointError> {
    let st = SafeTensors::deserialize(bytes)?;
    let mut tensors = BTreeMap::new();
    for (name, view) in st.tensors() {
        if view.dtype() != Dtype::F32 {
            return Err(CheckpointError::Dtype {
                name,
                got: format!("{:?}", view.dtype()),
            });
        }
        let data = view
            .data()
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        tensors.insert(
            name,
            F32Tensor {
                shape: view.shape().to_vec(),
                data,
            },
        );
    }
    Ok(tensors)
}

/// A checkpoint's metadata and tensors.
///
/// # Errors
/// As [`read_meta`] and [`f32_tensors`].
pub fn read(bytes: &[u8]) -> Result<(Meta, BTreeMap<String, F32Tensor>), CheckpointError> {
    let meta = read_meta(bytes)?;
    Ok((meta, f32_tensors(bytes)?))
}

/// Serialises named f32 tensors `(name, shape, data)` and the metadata as a checkpoint.
///
/// # Errors
/// A shape that does not match its data; metadata that does not serialise.
pub fn write<'a>(
    tensors: impl IntoIterator<Item = (&'a str, &'a [usize], &'a [f32])>,
    meta: &Meta,
) -> Result<Vec<u8>, CheckpointError> {
    let json =
        serde_json::to_string(meta).map_err(|e| CheckpointError::BadMetadata(e.to_string()))?;
    let bufs: Vec<(&str, &[usize], Vec<u8>)> = tensors
        .into_iter()
        .map(|(n, s, d)| (n, s, d.iter().flat_map(|x| x.to_le_bytes()).collect()))
        .collect();
    let mut views = Vec::with_capacity(bufs.len());
    for (name, shape, bytes) in &bufs {
        views.push((
            name.to_string(),
            TensorView::new(Dtype::F32, shape.to_vec(), bytes)?,
        ));
    }
    let md = HashMap::from([(METADATA_KEY.to_string(), json)]);
    Ok(safetensors::serialize(views, Some(md))?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta() -> Meta {
        Meta {
            format: FORMAT_VERSION,
            arch: "shufflenet_v2_x0_5".into(),
            in_channels: 3,
            input_size: 32,
            mean: vec![0.5; 3],
            std: vec![0.25; 3],
            rank: 2,
            lora_alpha: 4.0,
            bn_eps: 1e-5,
            departments: vec![Department::numbered(0, 2), Department::numbered(1, 3)],
            unified_head: true,
        }
    }

    #[test]
    fn round_trip_and_errors_name_the_culprit() {
        let m = meta();
        let (a, b) = (vec![1.0f32, -2.5, 3.25, 0.0], vec![7.0f32]);
        let bytes = write(
            [("a", &[2usize, 2][..], &a[..]), ("b", &[1][..], &b[..])],
            &m,
        )
        .unwrap();
        let (m2, t) = read(&bytes).unwrap();
        assert_eq!(m2, m);
        assert_eq!(t["a"].shape, [2, 2]);
        assert_eq!(t["a"].data, a);
        assert_eq!(t["b"].data, b);
        assert_eq!(m.scaling(), 2.0);

        // A wrong key type is named.
        let e = Meta::parse(
            &serde_json::to_string(&m)
                .unwrap()
                .replace("\"rank\":2", "\"rank\":\"x\""),
        )
        .unwrap_err();
        assert!(e.contains("`rank`"), "{e}");
        // Inconsistent metadata is refused with a reason.
        let mut bad = m.clone();
        bad.std[1] = 0.0;
        assert!(matches!(
            read_meta(&write([], &bad).unwrap()),
            Err(CheckpointError::BadMetadata(_))
        ));
        bad = m.clone();
        bad.departments[0].classes.clear();
        assert!(bad.validate().is_err());
        // No metadata, not safetensors.
        let plain = safetensors::serialize(Vec::<(String, TensorView)>::new(), None).unwrap();
        assert!(matches!(
            read_meta(&plain),
            Err(CheckpointError::MissingMetadata)
        ));
        assert!(matches!(
            read_meta(b"\x01\x00"),
            Err(CheckpointError::Safetensors(_))
        ));
        // An old file without `unified_head` reads as false.
        let old = serde_json::to_string(&m)
            .unwrap()
            .replace(",\"unified_head\":true", "");
        assert!(!Meta::parse(&old).unwrap().unified_head);
    }
}
