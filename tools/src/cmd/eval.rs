//! `lorkd eval (BUNDLE | --image flash.img --pubkey key.pub) --data SPEC [--json]`: top-1 per
//! department on held-out images through the runtime. With `--image` the device boots the
//! flash image first (`crate::delta::boot`), so each department answers with the delta the
//! update store chose, and the report names its version and source — the accuracy of a
//! field update as the device runs it. The image's bundle must verify under `--pubkey`, as on
//! the device (`--allow-unsigned` overrides, loudly).
use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use lorkd_data::score::{self, indices};
use lorkd_data::{Dataset, Split};
use lorkd_runtime::engine::{AlignedBytes, Engine};
use lorkd_runtime::format::{Bundle, Dept};
use serde::Serialize;

use super::run::{Exec, ModeArg};

/// Score every department of a bundle or a device flash image on a dataset split.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// The bundle (or give --image).
    #[arg(required_unless_present = "image", conflicts_with = "image")]
    pub bundle: Option<PathBuf>,
    /// A device flash image (`lorkd delta image`, updated by `lorkd delta apply`).
    #[arg(long, requires = "pubkey")]
    pub image: Option<PathBuf>,
    /// The public key the device trusts: the image's (or the given bundle's) signature must
    /// verify under it; with --image it also checks updates.
    #[arg(long)]
    pub pubkey: Option<PathBuf>,
    /// Score a bundle whose signature is missing or does not verify under --pubkey (a device
    /// refuses to boot it). Prints a warning.
    #[arg(long)]
    pub allow_unsigned: bool,
    /// Dataset spec (synthetic[:…] | medmnist:DIR[:…] | folder:DIR); departments matched by name.
    #[arg(long)]
    pub data: String,
    /// Split to score (train, val, test).
    #[arg(long, default_value = "test")]
    pub split: Split,
    /// Only this department (default: all).
    #[arg(long)]
    pub dept: Option<String>,
    /// Score at most this many images per department.
    #[arg(long)]
    pub limit: Option<usize>,
    #[arg(long, value_enum, default_value = "materialized")]
    pub mode: ModeArg,
    /// Engine threads per inference (the scores are identical for any count).
    #[arg(long, default_value_t = 1)]
    pub threads: usize,
    /// Also write each department's first scored image, normalised CHW as the model takes it,
    /// to DIR/<department>.npy (an input for `lorkd run`).
    #[arg(long, value_name = "DIR")]
    pub save_inputs: Option<PathBuf>,
    /// No progress bar.
    #[arg(long)]
    pub quiet: bool,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// One department's result.
#[derive(Debug, Serialize, Clone, PartialEq)]
pub struct DeptAccuracy {
    pub name: String,
    /// Version of the delta that answered.
    pub version: u32,
    /// `bundle`, or with --image `factory`, `slot A`, `slot B`.
    pub source: String,
    pub images: usize,
    pub accuracy: f64,
}

/// What `lorkd eval --json` prints (`lorkd report --column` reads it).
#[derive(Debug, Serialize)]
pub struct EvalReport {
    /// The bundle or image scored.
    pub input: String,
    pub split: String,
    pub precision: String,
    pub mode: String,
    pub departments: Vec<DeptAccuracy>,
    pub mean: f64,
}

/// Scores delta `d` of `bundle` on the data department of the same name with `engine` (the
/// shared loop, [`lorkd_data::score::score_department`], which `lorkd-train eval-bundle`
/// runs too).
#[allow(clippy::too_many_arguments)]
pub fn score_department<'a>(
    bundle: &Bundle<'a>,
    engine: &mut Engine<'_, 'a>,
    d: Dept<'a>,
    source: &str,
    ds: &Dataset,
    split: Split,
    limit: Option<usize>,
    pb: &indicatif::ProgressBar,
    save_inputs: Option<&std::path::Path>,
) -> Result<DeptAccuracy> {
    let name = d.manifest.name.to_string();
    let first = indices(ds, &name, split, limit)?.first().copied();
    let score = score::score_department(bundle, engine, d, ds, split, limit, |i, s| {
        if let (Some(dir), Some(first)) = (save_inputs, first) {
            if i == first {
                let p = dir.join(format!("{name}.npy"));
                crate::fsio::write_atomic(&p, &lorkd_data::npy::write_f32(&s.image))
                    .map_err(|e| score::ScoreError::Runtime(format!("{e:#}")))?;
            }
        }
        pb.inc(1);
        Ok(())
    })?;
    Ok(DeptAccuracy {
        name,
        version: d.manifest.version,
        source: source.to_string(),
        images: score.images,
        accuracy: score.accuracy(),
    })
}

fn progress(show: bool, len: u64) -> indicatif::ProgressBar {
    if !show {
        return indicatif::ProgressBar::hidden();
    }
    let pb = indicatif::ProgressBar::new(len);
    if let Ok(style) = indicatif::ProgressStyle::with_template("eval [{bar:30}] {pos}/{len}") {
        pb.set_style(style.progress_chars("=> "));
    }
    pb
}

/// Scores every department (or `only`) of a bundle, or of a booted image when `booted`.
#[allow(clippy::too_many_arguments)]
pub fn evaluate(
    bundle: &Bundle<'_>,
    booted: Option<&crate::delta::BootedImage>,
    only: Option<&str>,
    ds: &Dataset,
    split: Split,
    exec: impl Into<Exec>,
    limit: Option<usize>,
    show_progress: bool,
    save_inputs: Option<&std::path::Path>,
) -> Result<Vec<DeptAccuracy>> {
    let Exec { mode, threads } = exec.into();
    anyhow::ensure!(threads >= 1, "--threads must be at least 1");
    let mut arena = AlignedBytes::zeroed(bundle.arena_bytes(mode));
    let mut engine = Engine::new(bundle, arena.as_mut_slice(), mode)?;
    engine
        .set_threads(threads)
        .context("starting the engine's threads")?;
    // A booted image also has the departments added in the field (after the bundle's).
    let names: Vec<String> = match booted {
        Some(b) => b.status.iter().map(|s| s.department.clone()).collect(),
        None => (0..bundle.department_count())
            .filter_map(|d| bundle.department(d))
            .map(|d| d.manifest.name.to_string())
            .collect(),
    };
    let depts: Vec<usize> = match (only, booted) {
        (Some(n), Some(b)) => vec![b.find(n)?],
        (Some(n), None) => vec![super::run::find_department(bundle, n)?],
        (None, _) => (0..names.len()).collect(),
    };
    let total: usize = depts
        .iter()
        .filter_map(|&d| names.get(d))
        .filter_map(|name| ds.departments().iter().position(|x| &x.name == name))
        .map(|di| {
            let n = ds.indices_of(split, di).len();
            limit.map_or(n, |l| n.min(l))
        })
        .sum();
    let pb = progress(show_progress, total as u64);
    let mut out = Vec::new();
    for d in depts {
        let (delta, source) = match booted {
            Some(b) => (b.department(bundle, d)?, b.status[d].source.clone()),
            None => (
                bundle.department(d).context("department index")?,
                "bundle".to_string(),
            ),
        };
        out.push(score_department(
            bundle,
            &mut engine,
            delta,
            &source,
            ds,
            split,
            limit,
            &pb,
            save_inputs,
        )?);
    }
    pb.finish_and_clear();
    Ok(out)
}

pub fn run(a: Args) -> Result<()> {
    let ds = Dataset::open_str(&a.data)?;
    if let Some(dir) = &a.save_inputs {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let exec = Exec {
        mode: a.mode.into(),
        threads: a.threads,
    };
    let (booted, bytes, input) = if let Some(image) = &a.image {
        let pubkey = a
            .pubkey
            .as_ref()
            .context("--image needs --pubkey (the key the device trusts)")?;
        let key = crate::keys::load_verifying_key(pubkey)?;
        let img = crate::trust::read_image(image, &key, a.allow_unsigned)?;
        let b =
            crate::delta::boot(&img, &key).with_context(|| format!("image {}", image.display()))?;
        (Some(b), None, image.display().to_string())
    } else {
        let path = a.bundle.as_ref().context("give a bundle or --image")?;
        let bytes = super::run::read_bundle(path)?;
        if a.pubkey.is_some() || a.allow_unsigned {
            let key = a
                .pubkey
                .as_ref()
                .map(crate::keys::load_verifying_key)
                .transpose()?;
            let what = format!("bundle {}", path.display());
            crate::trust::check_bundle(bytes.as_slice(), &what, key.as_ref(), a.allow_unsigned)?;
        }
        (None, Some(bytes), path.display().to_string())
    };
    let bundle = match (&booted, &bytes) {
        (Some(b), _) => b.bundle()?,
        (None, Some(bytes)) => {
            Bundle::parse(bytes.as_slice()).map_err(|e| anyhow::anyhow!("bundle {input}: {e}"))?
        }
        (None, None) => bail!("give a bundle or --image"),
    };
    let departments = evaluate(
        &bundle,
        booted.as_ref(),
        a.dept.as_deref(),
        &ds,
        a.split,
        exec,
        a.limit,
        !a.quiet && !a.json,
        a.save_inputs.as_deref(),
    )?;
    let mean =
        departments.iter().map(|d| d.accuracy).sum::<f64>() / departments.len().max(1) as f64;
    let r = EvalReport {
        input,
        split: a.split.name().into(),
        precision: format!("{:?}", bundle.manifest().precision).to_lowercase(),
        mode: exec.mode.name().to_string(),
        departments,
        mean,
    };
    if a.json {
        println!("{}", serde_json::to_string_pretty(&r)?);
    } else {
        println!("{} on {} ({}, {})", r.input, r.split, r.precision, r.mode);
        for d in &r.departments {
            println!(
                "{:<16} v{:<3} {:<8} {:>6} images  {:>6.2} %",
                d.name,
                d.version,
                d.source,
                d.images,
                100.0 * d.accuracy
            );
        }
        println!(
            "{:<16} {:<4} {:<8} {:>6}         {:>6.2} %",
            "mean",
            "",
            "",
            "",
            100.0 * r.mean
        );
    }
    Ok(())
}
