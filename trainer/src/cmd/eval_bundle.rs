//! `lorkd-train eval-bundle`: per-department top-1 accuracy of a packed bundle through the
//! device runtime (not libtorch), on the same data `eval` scores — so the difference between
//! the two is what folding, quantisation and the runtime's kernels cost. A thin alias of
//! `lorkd eval BUNDLE`: both run [`lorkd_data::score::score_department`].
use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Parser;
use lorkd_data::score::score_department;
use lorkd_data::{Dataset, Split};
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

/// Scores every department of `bundle` on `ds`'s `split` (at most `limit` images each),
/// through the one scoring loop `lorkd eval` runs ([`lorkd_data::score`]).
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
    let mut arena = AlignedBytes::zeroed(bundle.arena_bytes(mode));
    let mut engine = Engine::new(bundle, arena.as_mut_slice(), mode)?;
    (0..bundle.department_count())
        .map(|d| {
            let dept = bundle.department(d).context("department index")?;
            let s = score_department(bundle, &mut engine, dept, ds, split, limit, |_, _| Ok(()))?;
            Ok(DeptAccuracy {
                name: dept.manifest.name.to_string(),
                images: s.images,
                accuracy: s.accuracy(),
            })
        })
        .collect()
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
