//! `lorkd eval (BUNDLE | --image flash.img --pubkey key.pub) --data SPEC [--json]`: top-1 per
//! department on held-out images through the runtime. With `--image` the device boots the
//! flash image first (`crate::delta::boot`), so each department answers with the delta the
//! update store chose, and the report names its version and source — the accuracy of a
//! field update as the device runs it.
use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use lorkd_data::{Dataset, Split, Transform};
use lorkd_runtime::engine::{AlignedBytes, Engine};
use lorkd_runtime::format::{Bundle, Dept, Mode};
use serde::Serialize;

use super::run::ModeArg;

/// Score every department of a bundle or a device flash image on a dataset split.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// The bundle (or give --image).
    #[arg(required_unless_present = "image", conflicts_with = "image")]
    pub bundle: Option<PathBuf>,
    /// A device flash image (`lorkd delta image`, updated by `lorkd delta apply`).
    #[arg(long, requires = "pubkey")]
    pub image: Option<PathBuf>,
    /// The update signing public key the device trusts (with --image).
    #[arg(long)]
    pub pubkey: Option<PathBuf>,
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

/// Scores delta `d` of `bundle` on data department `di`'s `split` images.
#[allow(clippy::too_many_arguments)]
pub fn score_department<'a>(
    bundle: &Bundle<'a>,
    d: Dept<'a>,
    source: &str,
    ds: &Dataset,
    split: Split,
    mode: Mode,
    limit: Option<usize>,
    pb: &indicatif::ProgressBar,
    save_inputs: Option<&std::path::Path>,
) -> Result<DeptAccuracy> {
    let spec = bundle.manifest().input;
    let t = Transform {
        size: spec.size as u32,
        channels: spec.channels as usize,
        mean: spec.mean,
        std: spec.std,
    };
    let name = d.manifest.name.to_string();
    let version = d.manifest.version;
    let Some(di) = ds.departments().iter().position(|x| x.name == name) else {
        bail!("department {name} is not in the data");
    };
    let classes = d.manifest.classes.len();
    let mut arena = AlignedBytes::zeroed(bundle.arena_bytes(mode));
    let mut engine = Engine::new(bundle, arena.as_mut_slice(), mode)
        .map_err(|e| anyhow::anyhow!("engine: {e}"))?;
    engine
        .select_blob(d)
        .map_err(|e| anyhow::anyhow!("select {name}: {e}"))?;
    let mut logits = vec![0f32; classes];
    let mut idx = ds.indices_of(split, di);
    if let Some(l) = limit {
        idx.truncate(l);
    }
    let mut correct = 0usize;
    for &i in &idx {
        let s = ds.sample(split, i, &t, false)?;
        if let (Some(dir), Some(&first)) = (save_inputs, idx.first()) {
            if i == first {
                let p = dir.join(format!("{name}.npy"));
                let shape = [
                    spec.channels as usize,
                    spec.size as usize,
                    spec.size as usize,
                ];
                std::fs::write(&p, super::run::write_npy(&shape, &s.image))
                    .with_context(|| format!("writing {}", p.display()))?;
            }
        }
        engine
            .infer(&s.image, &mut logits)
            .map_err(|e| anyhow::anyhow!("infer {name}: {e}"))?;
        let top = logits
            .iter()
            .enumerate()
            .fold(0, |b, (j, v)| if *v > logits[b] { j } else { b });
        correct += usize::from(top == s.class);
        pb.inc(1);
    }
    Ok(DeptAccuracy {
        name,
        version,
        source: source.to_string(),
        images: idx.len(),
        accuracy: correct as f64 / idx.len().max(1) as f64,
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
    mode: Mode,
    limit: Option<usize>,
    show_progress: bool,
    save_inputs: Option<&std::path::Path>,
) -> Result<Vec<DeptAccuracy>> {
    let depts: Vec<usize> = match only {
        Some(n) => vec![super::run::find_department(bundle, n)?],
        None => (0..bundle.department_count()).collect(),
    };
    let total: usize = depts
        .iter()
        .filter_map(|&d| bundle.department(d))
        .filter_map(|d| {
            ds.departments()
                .iter()
                .position(|x| x.name == d.manifest.name)
        })
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
            delta,
            &source,
            ds,
            split,
            mode,
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
    let mode: Mode = a.mode.into();
    let (booted, bytes, input) = if let Some(image) = &a.image {
        let pubkey = a
            .pubkey
            .as_ref()
            .context("--image needs --pubkey (the key the device trusts)")?;
        let key = crate::keys::load_verifying_key(pubkey)?;
        let img = std::fs::read(image).with_context(|| format!("reading {}", image.display()))?;
        let b =
            crate::delta::boot(&img, &key).with_context(|| format!("image {}", image.display()))?;
        (Some(b), None, image.display().to_string())
    } else {
        let path = a.bundle.as_ref().context("give a bundle or --image")?;
        (
            None,
            Some(super::run::read_bundle(path)?),
            path.display().to_string(),
        )
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
        mode,
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
        mode: format!("{:?}", a.mode).to_lowercase(),
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
