//! `lorkd export-onnx model.lorkd --dept NAME -o expert.onnx [--pubkey PUB]`: one
//! department's fused float expert as standard ONNX (see [`crate::onnx`]).
use std::path::PathBuf;

use anyhow::{Context, Result};
use lorkd_runtime::format::Bundle;

/// Export one department's fused float expert as ONNX.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// The bundle.
    pub bundle: PathBuf,
    /// Department name.
    #[arg(long)]
    pub dept: String,
    /// Output `.onnx` file.
    #[arg(short, long)]
    pub output: PathBuf,
    /// Require a valid signature by this public key.
    #[arg(long)]
    pub pubkey: Option<PathBuf>,
}

pub fn run(a: Args) -> Result<()> {
    let bytes = crate::cmd::run::read_bundle(&a.bundle)?;
    let key = a
        .pubkey
        .as_ref()
        .map(crate::keys::load_verifying_key)
        .transpose()?;
    let b = match &key {
        Some(k) => Bundle::parse_signed(bytes.as_slice(), k.as_bytes()),
        None => Bundle::parse(bytes.as_slice()),
    }
    .map_err(|e| anyhow::anyhow!("{}: {e}", a.bundle.display()))?;
    let d = b.find_department(&a.dept).with_context(|| {
        let names: Vec<&str> = (0..b.department_count())
            .filter_map(|i| b.department(i))
            .map(|d| d.manifest.name)
            .collect();
        format!(
            "{}: no department `{}` (it has {})",
            a.bundle.display(),
            a.dept,
            names.join(", ")
        )
    })?;
    let onnx = crate::verify::export_dept(&b, d)?;
    crate::fsio::write_atomic(&a.output, &onnx)?;
    eprintln!(
        "wrote {} ({} bytes, opset {}, input `input` NCHW f32, output `logits`)",
        a.output.display(),
        onnx.len(),
        crate::onnx::OPSET
    );
    Ok(())
}
