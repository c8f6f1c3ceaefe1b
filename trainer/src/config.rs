//! Model configuration: the checkpoint's `lorkd` metadata ([`lorkd_checkpoint::Meta`], which
//! owns the JSON and its validation) with typed fields for building the model
//! (docs/checkpoint-format.md).
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

pub use lorkd_checkpoint::FORMAT_VERSION;

/// Student architectures: ShuffleNetV2 widths with torchvision's channel counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum Arch {
    /// `shufflenet_v2_x0_5`: channels [24, 48, 96, 192, 1024].
    ShuffleNetV2X0_5,
    /// `shufflenet_v2_x1_0`: channels [24, 116, 232, 464, 1024].
    ShuffleNetV2X1_0,
    /// `shufflenet_v2_x1_5`: channels [24, 176, 352, 704, 1024].
    ShuffleNetV2X1_5,
    /// `shufflenet_v2_x2_0`: channels [24, 244, 488, 976, 2048].
    ShuffleNetV2X2_0,
}

impl Arch {
    /// All student architectures.
    pub const ALL: [Arch; 4] = [
        Self::ShuffleNetV2X0_5,
        Self::ShuffleNetV2X1_0,
        Self::ShuffleNetV2X1_5,
        Self::ShuffleNetV2X2_0,
    ];

    /// torchvision's model function name.
    pub fn name(self) -> &'static str {
        match self {
            Self::ShuffleNetV2X0_5 => "shufflenet_v2_x0_5",
            Self::ShuffleNetV2X1_0 => "shufflenet_v2_x1_0",
            Self::ShuffleNetV2X1_5 => "shufflenet_v2_x1_5",
            Self::ShuffleNetV2X2_0 => "shufflenet_v2_x2_0",
        }
    }

    /// Output channels of conv1, stage2, stage3, stage4, conv5 (torchvision).
    pub fn stage_out_channels(self) -> [i64; 5] {
        match self {
            Self::ShuffleNetV2X0_5 => [24, 48, 96, 192, 1024],
            Self::ShuffleNetV2X1_0 => [24, 116, 232, 464, 1024],
            Self::ShuffleNetV2X1_5 => [24, 176, 352, 704, 1024],
            Self::ShuffleNetV2X2_0 => [24, 244, 488, 976, 2048],
        }
    }

    /// Blocks per stage (stage2, stage3, stage4).
    pub fn stage_repeats(self) -> [usize; 3] {
        [4, 8, 4]
    }
}

impl fmt::Display for Arch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Arch {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Self::ALL
            .into_iter()
            .find(|a| a.name() == s)
            .ok_or_else(|| {
                let names: Vec<_> = Self::ALL.iter().map(|a| a.name()).collect();
                format!("unknown arch `{s}` (one of {})", names.join(", "))
            })
    }
}

impl TryFrom<String> for Arch {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        s.parse()
    }
}

impl From<Arch> for String {
    fn from(a: Arch) -> String {
        a.name().to_string()
    }
}

pub use lorkd_checkpoint::Department;

/// Everything needed to build a student; the checkpoint's `lorkd` metadata (serialised as
/// [`lorkd_checkpoint::Meta`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "lorkd_checkpoint::Meta", into = "lorkd_checkpoint::Meta")]
pub struct Config {
    /// Metadata format version ([`FORMAT_VERSION`]).
    pub format: u32,
    /// Student architecture.
    pub arch: Arch,
    /// Image channels (1 grayscale, 3 RGB).
    pub in_channels: i64,
    /// Square input size the model is trained at.
    pub input_size: i64,
    /// Per-channel normalisation mean (len = in_channels).
    pub mean: Vec<f64>,
    /// Per-channel normalisation std (len = in_channels).
    pub std: Vec<f64>,
    /// LoRA rank `r`.
    pub rank: i64,
    /// `lora_alpha`; scaling `s = lora_alpha / r`.
    pub lora_alpha: f64,
    /// BatchNorm epsilon.
    pub bn_eps: f64,
    /// Departments in expert order (index t of `lora_A[t]`, `heads.<t>`).
    pub departments: Vec<Department>,
    /// Whether the unified head `head.*` over all departments' classes exists.
    pub unified_head: bool,
}

impl From<Config> for lorkd_checkpoint::Meta {
    fn from(c: Config) -> Self {
        // A negative count becomes usize::MAX, which `Meta::validate` refuses.
        let u = |x: i64| usize::try_from(x).unwrap_or(usize::MAX);
        lorkd_checkpoint::Meta {
            format: c.format,
            arch: c.arch.name().to_string(),
            in_channels: u(c.in_channels),
            input_size: u(c.input_size),
            mean: c.mean,
            std: c.std,
            rank: u(c.rank),
            lora_alpha: c.lora_alpha,
            bn_eps: c.bn_eps,
            departments: c.departments,
            unified_head: c.unified_head,
        }
    }
}

impl TryFrom<lorkd_checkpoint::Meta> for Config {
    type Error = String;
    fn try_from(m: lorkd_checkpoint::Meta) -> Result<Self, String> {
        let i = |x: usize, k: &str| i64::try_from(x).map_err(|_| format!("{k} {x} out of range"));
        Ok(Config {
            format: m.format,
            arch: m.arch.parse()?,
            in_channels: i(m.in_channels, "in_channels")?,
            input_size: i(m.input_size, "input_size")?,
            mean: m.mean,
            std: m.std,
            rank: i(m.rank, "rank")?,
            lora_alpha: m.lora_alpha,
            bn_eps: m.bn_eps,
            departments: m.departments,
            unified_head: m.unified_head,
        })
    }
}

impl Config {
    /// Defaults: r = 8, lora_alpha = 16, eps 1e-5, input 224, ImageNet mean/std (or 0.5/0.5
    /// for a single channel), unified head on.
    pub fn new(arch: Arch, in_channels: i64, departments: Vec<Department>) -> Self {
        let (mean, std) = if in_channels == 3 {
            (vec![0.485, 0.456, 0.406], vec![0.229, 0.224, 0.225])
        } else {
            (
                vec![0.5; in_channels as usize],
                vec![0.5; in_channels as usize],
            )
        };
        Self {
            format: FORMAT_VERSION,
            arch,
            in_channels,
            input_size: 224,
            mean,
            std,
            rank: 8,
            lora_alpha: 16.0,
            bn_eps: 1e-5,
            departments,
            unified_head: true,
        }
    }

    /// `T` departments named `dept<i>` with `classes` classes each.
    pub fn numbered(arch: Arch, in_channels: i64, departments: usize, classes: usize) -> Self {
        Self::new(
            arch,
            in_channels,
            (0..departments)
                .map(|i| Department::numbered(i, classes))
                .collect(),
        )
    }

    /// Number of departments `T`.
    pub fn num_departments(&self) -> i64 {
        self.departments.len() as i64
    }

    /// Total classes over all departments (the unified head's width).
    pub fn total_classes(&self) -> i64 {
        self.departments
            .iter()
            .map(|d| d.classes.len() as i64)
            .sum()
    }

    /// Index of the department called `name`.
    ///
    /// # Errors
    /// No such department (the message lists the ones there are).
    pub fn department_index(&self, name: &str) -> Result<usize, String> {
        self.departments
            .iter()
            .position(|d| d.name == name)
            .ok_or_else(|| {
                let names: Vec<_> = self.departments.iter().map(|d| d.name.as_str()).collect();
                format!("no department `{name}` (it has {})", names.join(", "))
            })
    }

    /// Offset of department `t`'s classes in the unified head.
    pub fn class_offset(&self, t: usize) -> i64 {
        self.departments[..t]
            .iter()
            .map(|d| d.classes.len() as i64)
            .sum()
    }

    /// Checks internal consistency ([`lorkd_checkpoint::Meta::validate`]; used on load).
    pub fn validate(&self) -> Result<(), String> {
        lorkd_checkpoint::Meta::from(self.clone()).validate()
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
