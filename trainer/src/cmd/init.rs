//! `lorkd-train init`: a freshly initialised checkpoint (optionally with random non-zero
//! department factors and calibrated BN statistics, for testing packers and runtimes).
use std::path::PathBuf;

use tch::{nn, Device, Kind, Tensor};

use crate::checkpoint::Checkpoint;
use crate::config::{Arch, Config, Department};
use crate::eks_conv::{DeptIds, DeptSel};
use crate::models::calibrate_bn;
use crate::models::shufflenet::ShuffleNetLoRKD;
use crate::testing::randomize_factors;

/// Arguments.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Student architecture.
    #[arg(long, default_value = "shufflenet_v2_x1_0")]
    pub arch: Arch,
    /// Number of departments T (ignored names come from --class-names).
    #[arg(long)]
    pub departments: Option<usize>,
    /// Classes per department (departments named dept0.., classes c0..).
    #[arg(long, conflicts_with = "class_names")]
    pub classes: Option<usize>,
    /// Department and class names: JSON `[{"name": .., "classes": [..]}, ..]`, or text with
    /// one department per line: `name: class, class, ..`.
    #[arg(long)]
    pub class_names: Option<PathBuf>,
    /// LoRA rank r.
    #[arg(long, default_value_t = 8)]
    pub rank: i64,
    /// lora_alpha (scaling = alpha / r).
    #[arg(long, default_value_t = 16.0)]
    pub lora_alpha: f64,
    /// Training input size.
    #[arg(long, default_value_t = 224)]
    pub input_size: i64,
    /// Input channels (1 or 3).
    #[arg(long, default_value_t = 3)]
    pub in_channels: i64,
    /// Omit the unified head.
    #[arg(long)]
    pub no_unified_head: bool,
    /// Fill lora_B with small random values and set BN running statistics from a forward pass
    /// on random inputs (a non-collapsed, non-trivial network).
    #[arg(long)]
    pub random_factors: bool,
    /// RNG seed.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Output checkpoint.
    #[arg(short, long)]
    pub output: PathBuf,
}

/// Parses `--class-names`: JSON list of departments, or `name: c1, c2` lines.
pub fn parse_class_names(text: &str) -> anyhow::Result<Vec<Department>> {
    if text.trim_start().starts_with('[') {
        return Ok(serde_json::from_str(text)?);
    }
    let mut deps = Vec::new();
    for (n, line) in text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
    {
        let (name, classes) = line
            .split_once(':')
            .ok_or_else(|| anyhow::anyhow!("line {}: expected `name: class, ..`", n + 1))?;
        let classes: Vec<String> = classes
            .split(',')
            .map(|c| c.trim().to_string())
            .filter(|c| !c.is_empty())
            .collect();
        deps.push(Department {
            name: name.trim().to_string(),
            classes,
        });
    }
    Ok(deps)
}

/// Builds the config from the arguments.
pub fn config(a: &Args) -> anyhow::Result<Config> {
    let deps = match (&a.class_names, a.classes) {
        (Some(path), _) => {
            let deps = parse_class_names(&std::fs::read_to_string(path)?)?;
            if let Some(t) = a.departments {
                anyhow::ensure!(
                    t == deps.len(),
                    "--departments {t} but {} in {}",
                    deps.len(),
                    path.display()
                );
            }
            deps
        }
        (None, Some(c)) => {
            let t = a
                .departments
                .ok_or_else(|| anyhow::anyhow!("--departments is required with --classes"))?;
            (0..t).map(|i| Department::numbered(i, c)).collect()
        }
        (None, None) => anyhow::bail!("give --classes C or --class-names FILE"),
    };
    let mut cfg = Config::new(a.arch, a.in_channels, deps);
    cfg.rank = a.rank;
    cfg.lora_alpha = a.lora_alpha;
    cfg.input_size = a.input_size;
    cfg.unified_head = !a.no_unified_head;
    cfg.validate().map_err(|e| anyhow::anyhow!(e))?;
    Ok(cfg)
}

/// Builds a model for `cfg` seeded with `seed`; with `random_factors`, random `lora_B`
/// (≈10 % of W0's magnitude) and BN running statistics from a mixed random batch.
pub fn init_model(
    cfg: &Config,
    seed: u64,
    random_factors: bool,
    device: Device,
) -> anyhow::Result<(nn::VarStore, ShuffleNetLoRKD)> {
    tch::manual_seed(seed as i64);
    let vs = nn::VarStore::new(device);
    let model = ShuffleNetLoRKD::new(&vs.root(), cfg);
    if random_factors {
        randomize_factors(&vs, cfg.scaling(), 0.1, seed.wrapping_add(1));
        let t = cfg.num_departments();
        let n = (2 * t).max(16);
        let xs = Tensor::randn(
            [n, cfg.in_channels, cfg.input_size, cfg.input_size],
            (Kind::Float, device),
        );
        let ids: Vec<i64> = (0..n).map(|i| i % t).collect();
        let ids = DeptIds::new(&ids, t, device)?;
        calibrate_bn(&model, |m| {
            let _ = m.forward_t(&xs, DeptSel::Mixed(&ids), true);
        });
    }
    Ok((vs, model))
}

/// Writes the checkpoint.
pub fn run(a: &Args) -> anyhow::Result<()> {
    let cfg = config(a)?;
    let (vs, _) = init_model(&cfg, a.seed, a.random_factors, Device::Cpu)?;
    Checkpoint::from_var_store(&cfg, &vs).save(&a.output)?;
    let n: i64 = vs
        .variables()
        .values()
        .map(Tensor::numel)
        .map(|x| x as i64)
        .sum();
    println!(
        "wrote {} ({} tensors, {n} values, {} departments)",
        a.output.display(),
        vs.variables().len(),
        cfg.departments.len()
    );
    Ok(())
}
