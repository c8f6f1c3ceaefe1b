//! `lorkd pack CKPT -o model.lorkd [--weights f32|int8] [--delta f32|f16|int8]
//! [--calib-data SPEC] [--calib-count N] [--sign KEY]`.

use std::path::PathBuf;

use anyhow::{Context, Result};
use lorkd_runtime::format::{DeltaDType, Precision};

use crate::checkpoint::Checkpoint;
use crate::pack::{dataset_images, default_calib_spec, pack, PackOptions};

/// Precision of the shared weights (and activations).
#[derive(clap::ValueEnum, Clone, Copy, Debug)]
pub enum WeightsArg {
    F32,
    Int8,
}

/// Storage of the department deltas.
#[derive(clap::ValueEnum, Clone, Copy, Debug)]
pub enum DeltaArg {
    F32,
    F16,
    Int8,
}

/// Pack a trainer checkpoint into a bundle.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Checkpoint (safetensors with `lorkd` metadata).
    pub checkpoint: PathBuf,
    /// Output bundle.
    #[arg(short, long)]
    pub output: PathBuf,
    #[arg(long, value_enum, default_value = "f32")]
    pub weights: WeightsArg,
    #[arg(long, value_enum, default_value = "f32")]
    pub delta: DeltaArg,
    /// Calibration images for int8: a dataset spec as the trainer takes it
    /// (`synthetic[:k=v,…]`, `medmnist:DIR[:names]`, `folder:DIR`); default: seeded synthetic
    /// departments at the model's input size.
    #[arg(long)]
    pub calib_data: Option<String>,
    /// Calibration images per department (16 under-estimated ranges and clipped a whole
    /// department in the demo; 128 matched float accuracy).
    #[arg(long, default_value_t = 128)]
    pub calib_count: usize,
    /// Sign with this ed25519 key file (`lorkd keygen`).
    #[arg(long)]
    pub sign: Option<PathBuf>,
    /// Version of every department's delta.
    #[arg(long, default_value_t = 1)]
    pub version: u32,
}

pub fn run(a: Args) -> Result<()> {
    let ck = Checkpoint::load(&a.checkpoint)
        .with_context(|| format!("checkpoint {}", a.checkpoint.display()))?;
    let opts = PackOptions {
        weights: match a.weights {
            WeightsArg::F32 => Precision::F32,
            WeightsArg::Int8 => Precision::Int8,
        },
        delta: match a.delta {
            DeltaArg::F32 => DeltaDType::F32,
            DeltaArg::F16 => DeltaDType::F16,
            DeltaArg::Int8 => DeltaDType::I8,
        },
        calib_count: a.calib_count,
        calib_seed: 0,
        version: a.version,
    };
    let images = match opts.weights {
        Precision::F32 => None,
        Precision::Int8 => {
            let spec = a
                .calib_data
                .clone()
                .unwrap_or_else(|| default_calib_spec(&ck, a.calib_count, 0));
            Some(dataset_images(&ck, &spec, a.calib_count)?)
        }
    };
    let key = a
        .sign
        .as_ref()
        .map(crate::keys::load_signing_key)
        .transpose()?;
    let bytes = pack(&ck, &opts, key.as_ref(), images, &|b, imgs| {
        crate::calibrate::activation_ranges(b, imgs)
    })?;
    crate::fsio::write_atomic(&a.output, &bytes)?;
    eprintln!(
        "wrote {} ({} bytes, {} departments)",
        a.output.display(),
        bytes.len(),
        ck.meta.departments.len()
    );
    Ok(())
}
