//! `lorkd-train gradcam RUN --dept NAME IMAGE... -o DIR`: Grad-CAM panels (the paper's
//! Fig. 3) — the image, then the department expert's, the shared weights' and (with a
//! teacher) the foundation model's heat maps — one PNG per image, and `gradcam.json`.
use std::path::{Path, PathBuf};

use anyhow::Context;
use image::{DynamicImage, RgbImage};
use serde::Serialize;
use tch::{Device, Tensor};

use crate::checkpoint::Checkpoint;
use crate::config::Config;
use crate::eks_conv::DeptSel;
use crate::gradcam::{gradcam, overlay, Cam};
use crate::train::data as bridge;
use crate::train::teacher::Teacher;
use crate::train::transfer::checkpoint_file;

/// Arguments.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The trained run (a model.safetensors or its run directory).
    pub run: PathBuf,
    /// The department whose expert is explained.
    #[arg(long)]
    pub dept: String,
    /// Image files (PNG/JPEG), any size: resized as the model's input.
    #[arg(required = true)]
    pub images: Vec<PathBuf>,
    /// A `lorkd-train teacher` for the third panel (default: the run's teacher, if any).
    #[arg(long)]
    pub teacher: Option<PathBuf>,
    /// Explain this class index of the department (default: each model's prediction).
    #[arg(long)]
    pub class: Option<i64>,
    /// Side of each panel in the PNG, pixels.
    #[arg(long, default_value_t = 160)]
    pub panel: u32,
    /// Output directory (created): IMAGE-STEM.png per image, gradcam.json.
    #[arg(short, long)]
    pub output: PathBuf,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
}

/// One model's explanation of one image.
#[derive(Serialize)]
struct Explained {
    model: &'static str,
    class: String,
    prob: f64,
}

#[derive(Serialize)]
struct Row {
    image: String,
    png: String,
    explained: Vec<Explained>,
}

fn tensor_of(img: &DynamicImage, cfg: &Config) -> Tensor {
    let t = bridge::transform(cfg);
    let s = cfg.input_size;
    Tensor::from_slice(&lorkd_data::flat(&t.image(img, false))).reshape([1, cfg.in_channels, s, s])
}

fn run_teacher(run: &Path) -> Option<PathBuf> {
    let dir = if run.is_dir() { run } else { run.parent()? };
    let text = std::fs::read_to_string(dir.join("run.json")).ok()?;
    let v: serde_json::Value = serde_json::from_str(&text).ok()?;
    v["teacher"].as_str().map(PathBuf::from)
}

/// Runs `gradcam`.
pub fn run(a: &Args) -> anyhow::Result<()> {
    let file = checkpoint_file(&a.run);
    let ck = Checkpoint::load(&file).with_context(|| format!("loading {}", file.display()))?;
    let cfg = ck.config.clone();
    let t = cfg
        .department_index(&a.dept)
        .map_err(|e| anyhow::anyhow!("{}: {e}", file.display()))?;
    let classes = &cfg.departments[t].classes;
    if let Some(c) = a.class {
        anyhow::ensure!(
            (0..classes.len() as i64).contains(&c),
            "--class {c}: department {} has {} classes",
            a.dept,
            classes.len()
        );
    }
    let (_vs, model) = ck.into_model(Device::Cpu)?;
    let teacher_path = a.teacher.clone().or_else(|| run_teacher(&a.run));
    let teacher = match &teacher_path {
        Some(p) => {
            let total: usize = cfg.departments.iter().map(|d| d.classes.len()).sum();
            match Teacher::load(p, Device::Cpu, total as i64)? {
                Teacher::ResNet { vs, net, meta } => {
                    let mut tcfg =
                        Config::new(cfg.arch, meta.in_channels, meta.departments.clone());
                    tcfg.input_size = meta.input_size;
                    tcfg.mean = meta.mean.clone();
                    tcfg.std = meta.std.clone();
                    Some((vs, net, tcfg))
                }
                Teacher::Script(_) => {
                    eprintln!("note: a TorchScript teacher has no feature map to explain; no teacher panel");
                    None
                }
            }
        }
        None => None,
    };
    std::fs::create_dir_all(&a.output)
        .with_context(|| format!("creating {}", a.output.display()))?;
    let offset = cfg.class_offset(t);
    let n = classes.len() as i64;
    let mut rows = Vec::new();
    for path in &a.images {
        let img = image::open(path).with_context(|| format!("reading {}", path.display()))?;
        let x = tensor_of(&img, &cfg);
        let mut cams: Vec<(&'static str, Cam)> = Vec::new();
        for (name, sel) in [
            ("expert", DeptSel::One(t as i64)),
            ("shared", DeptSel::Shared),
        ] {
            if name == "expert" && cfg.rank == 0 {
                continue;
            }
            let cam = gradcam(
                &x,
                |x| model.feature_map_t(x, sel, false),
                |f| model.head_logits(f, t),
                a.class,
            )?;
            cams.push((name, cam));
        }
        if let Some((_, net, tcfg)) = &teacher {
            let xt = tensor_of(&img, tcfg);
            let cam = gradcam(
                &xt,
                |x| net.feature_map_t(x, false),
                |f| net.classify(f).narrow(1, offset, n),
                a.class,
            )?;
            cams.push(("teacher", cam));
        }
        let p = a.panel;
        let base = img.to_rgb8();
        let mut panels = vec![image::imageops::resize(
            &base,
            p,
            p,
            image::imageops::FilterType::Triangle,
        )];
        for (_, cam) in &cams {
            let o = overlay(&base, cam);
            panels.push(image::imageops::resize(
                &o,
                p,
                p,
                image::imageops::FilterType::Triangle,
            ));
        }
        let gap = 4;
        let mut sheet = RgbImage::from_pixel(
            panels.len() as u32 * (p + gap) - gap,
            p,
            image::Rgb([255, 255, 255]),
        );
        for (i, panel) in panels.iter().enumerate() {
            image::imageops::replace(&mut sheet, panel, i64::from(i as u32 * (p + gap)), 0);
        }
        let stem = path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| "image".into());
        let png = a.output.join(format!("{stem}.png"));
        sheet
            .save(&png)
            .with_context(|| format!("writing {}", png.display()))?;
        rows.push(Row {
            image: path.display().to_string(),
            png: png.display().to_string(),
            explained: cams
                .iter()
                .map(|(m, c)| Explained {
                    model: m,
                    class: classes[c.class as usize].clone(),
                    prob: c.prob,
                })
                .collect(),
        });
    }
    let json = serde_json::to_string_pretty(&rows)?;
    crate::train::io::write_atomic(&a.output.join("gradcam.json"), json.as_bytes())?;
    if a.json {
        println!("{json}");
    } else {
        println!(
            "panels: image | {}",
            rows.first()
                .map(|r| r
                    .explained
                    .iter()
                    .map(|e| e.model)
                    .collect::<Vec<_>>()
                    .join(" | "))
                .unwrap_or_default()
        );
        for r in &rows {
            let what: Vec<String> = r
                .explained
                .iter()
                .map(|e| format!("{} {} ({:.2})", e.model, e.class, e.prob))
                .collect();
            println!("{} → {}: {}", r.image, r.png, what.join(", "));
        }
    }
    Ok(())
}
