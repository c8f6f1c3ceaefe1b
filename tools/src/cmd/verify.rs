//! `lorkd verify model.lorkd [--pubkey PUB] [--json] [--inputs N] [--seed S]`: every hash and
//! the signature through the runtime's parser, then each department's runtime output against
//! tract on the exported ONNX (see [`crate::verify`]). Exits non-zero on any failure.
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
    let r = crate::verify::verify(
        &a.bundle.display().to_string(),
        &bytes,
        key.as_ref(),
        a.inputs.max(1),
        seed,
    )?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&r)?);
    } else {
        print!("{}", crate::verify::render(&r));
        println!("(seed {seed})");
    }
    if !r.ok {
        bail!(
            "{}: the runtime disagrees with tract beyond {:e} of the logit scale",
            a.bundle.display(),
            r.tolerance
        );
    }
    Ok(())
}
