//! `lorkd verify model.lorkd [--pubkey PUB] [--json] [--inputs N] [--seed S]`: every hash and
//! the signature through the runtime's parser, then each department's runtime output against
//! tract on the exported ONNX (see [`crate::verify`]; int8 bundles on calibration images,
//! `--data`). Exits non-zero on any failure, including a missing or invalid signature when
//! `--pubkey` is given.
use std::path::PathBuf;

use anyhow::{bail, Context, Result};

/// Re-check a bundle's hashes and signature and its experts against tract.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// The bundle.
    pub bundle: PathBuf,
    /// Require a valid signature by this public key.
    #[arg(long)]
    pub pubkey: Option<PathBuf>,
    /// Print the JSON report.
    #[arg(long)]
    pub json: bool,
    /// Random inputs per department.
    #[arg(long, default_value_t = 4)]
    pub inputs: usize,
    /// Seed of the random inputs (default: drawn and printed).
    #[arg(long)]
    pub seed: Option<u64>,
    /// int8 bundles: the images to judge on (a dataset spec, e.g. the `--calib-data` the
    /// bundle was packed with); default: `lorkd pack`'s default calibration images.
    #[arg(long, value_name = "SPEC")]
    pub data: Option<String>,
    /// int8 bundles: images per department.
    #[arg(long, default_value_t = crate::verify::INT8_IMAGES)]
    pub int8_images: usize,
}

pub fn run(a: Args) -> Result<()> {
    let bytes =
        std::fs::read(&a.bundle).with_context(|| format!("reading {}", a.bundle.display()))?;
    let key = a
        .pubkey
        .as_ref()
        .map(crate::keys::load_verifying_key)
        .transpose()?;
    let seed = a.seed.unwrap_or_else(rand::random);
    let o = crate::verify::Options {
        inputs: a.inputs.max(1),
        seed,
        data: a.data.clone(),
        int8_images: a.int8_images.max(1),
    };
    let r = crate::verify::verify_with(&a.bundle.display().to_string(), &bytes, key.as_ref(), &o)?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&r)?);
    } else {
        print!("{}", crate::verify::render(&r));
        println!("(seed {seed})");
    }
    if !r.ok {
        if r.precision == "int8" {
            bail!(
                "{}: the int8 runtime disagrees with the fused f32 expert (top-1 below {:.0}% or error beyond the quantisation budget)",
                a.bundle.display(),
                100.0 * crate::verify::INT8_MIN_TOP1
            );
        }
        bail!(
            "{}: the runtime disagrees with tract beyond {:e} of the logit scale",
            a.bundle.display(),
            r.tolerance
        );
    }
    Ok(())
}
