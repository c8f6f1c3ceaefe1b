//! `lorkd-train eval-bundle`: per-department top-1 accuracy of a packed bundle through the
//! device runtime (not libtorch), on the same data `eval` scores — so the difference between
//! the two is what folding, quantisation and the runtime's kernels cost.
use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::Parser;
use lorkd_data::{Dataset, Split, Transform};
use lorkd_runtime::engine::{AlignedBytes, Engine};
use lorkd_runtime::format::{Bundle, Mode};
use serde::Serialize;

/// Score a bundle's departments through the runtime.
#[derive(Parser, Debug)]
pub struct Args {
    /// The bundle (`lorkd pack` output).
    pub bundle: PathBuf,
    /// Dataset spec (synthetic[:…] | medmnist:DIR[:…] | folder:DIR); departments are matched by name.
    #[arg(long, default_value = "synthetic")]
    pub data: String,
    /// Split to score.
    #[arg(long, default_value = "test")]
    pub split: Split,
    /// Switching mode of the engine.
    #[arg(long, value_parser = ["materialized", "streaming"], default_value = "materialized")]
    pub mode: String,
    /// Score at most this many images per department.
    #[arg(long)]
    pub limit: Option<usize>,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// One department's result.
#[derive(Debug, Serialize)]
pub struct DeptAccuracy {
    pub name: String,
    pub images: usize,
    pub accuracy: f64,
}

/// What `eval-bundle --json` prints.
#[derive(Debug, Serialize)]
pub struct BundleReport {
    pub bundle: String,
    pub split: String,
    pub precision: String,
    pub mode: String,
    pub departments: Vec<DeptAccuracy>,
    pub mean: f64,
}

/// Scores every department of `bundle` on `ds`'s `split` (at most `limit` images each).
///
/// # Errors
/// A department missing from the data, a runtime error.
pub fn evaluate(
    bundle: &Bundle<'_>,
    ds: &Dataset,
    split: Split,
    mode: Mode,
    limit: Option<usize>,
) -> Result<Vec<DeptAccuracy>> {
    let spec = bundle.manifest().input;
    let t = Transform {
        size: spec.size as u32,
        channels: spec.channels as usize,
        mean: spec.mean,
        std: spec.std,
    };
    let mut arena = AlignedBytes::zeroed(bundle.arena_bytes(mode));
    let mut engine = Engine::new(bundle, arena.as_mut_slice(), mode)
        .map_err(|e| anyhow::anyhow!("engine: {e}"))?;
    let mut out = Vec::new();
    for d in 0..bundle.department_count() {
        let dept = bundle.department(d).context("department index")?;
        let name = dept.manifest.name;
        let Some(di) = ds.departments().iter().position(|x| x.name == name) else {
            bail!("department {name} of the bundle is not in the data");
        };
        engine
            .select(d)
            .map_err(|e| anyhow::anyhow!("select {name}: {e}"))?;
        let classes = dept.manifest.classes.len();
        let mut logits = vec![0f32; classes];
        let mut idx = ds.indices_of(split, di);
        if let Some(l) = limit {
            idx.truncate(l);
        }
        let mut correct = 0usize;
        for &i in &idx {
            let s = ds.sample(split, i, &t, false)?;
            engine
                .infer(&s.image, &mut logits)
                .map_err(|e| anyhow::anyhow!("infer {name}: {e}"))?;
            let top = logits
                .iter()
                .enumerate()
                .fold(0, |b, (j, v)| if *v > logits[b] { j } else { b });
            correct += usize::from(top == s.class);
        }
        out.push(DeptAccuracy {
            name: name.to_string(),
            images: idx.len(),
            accuracy: correct as f64 / idx.len().max(1) as f64,
        });
    }
    Ok(out)
}

/// Runs `eval-bundle`.
pub fn run(a: &Args) -> Result<()> {
    let raw =
        std::fs::read(&a.bundle).with_context(|| format!("reading {}", a.bundle.display()))?;
    let ds = Dataset::open_str(&a.data)?;
    let mode = if a.mode == "streaming" {
        Mode::Streaming
    } else {
        Mode::Materialized
    };
    let bytes = AlignedBytes::new(&raw);
    let bundle = Bundle::parse(bytes.as_slice()).map_err(|e| anyhow::anyhow!("bundle: {e}"))?;
    let departments = evaluate(&bundle, &ds, a.split, mode, a.limit)?;
    let precision = format!("{:?}", bundle.manifest().precision).to_lowercase();
    let mean =
        departments.iter().map(|d| d.accuracy).sum::<f64>() / departments.len().max(1) as f64;
    let r = BundleReport {
        bundle: a.bundle.display().to_string(),
        split: a.split.name().into(),
        precision,
        mode: a.mode.clone(),
        departments,
        mean,
    };
    if a.json {
        println!("{}", serde_json::to_string_pretty(&r)?);
    } else {
        println!("{} on {} ({}, {})", r.bundle, r.split, r.precision, r.mode);
        for d in &r.departments {
            println!(
                "{:<16} {:>6} images  {:>6.2} %",
                d.name,
                d.images,
                100.0 * d.accuracy
            );
        }
        println!("{:<16} {:>6}         {:>6.2} %", "mean", "", 100.0 * r.mean);
    }
    Ok(())
}
