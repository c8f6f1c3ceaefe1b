//! `lorkd-train describe`: exact parameter and MAC counts (paper Table 4).
use crate::config::Arch;
use crate::params::shufflenet_report;

/// Arguments.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Student architecture (shufflenet_v2_x0_5 | x1_0 | x1_5 | x2_0).
    #[arg(long, default_value = "shufflenet_v2_x1_0")]
    pub arch: Arch,
    /// Number of departments T.
    #[arg(long, default_value_t = 11)]
    pub departments: i64,
    /// LoRA rank r.
    #[arg(long, default_value_t = 8)]
    pub rank: i64,
    /// Input size for the MAC count.
    #[arg(long, default_value_t = 224)]
    pub input: i64,
    /// Input channels.
    #[arg(long, default_value_t = 3)]
    pub in_channels: i64,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

/// Prints the report.
pub fn run(a: &Args) -> anyhow::Result<()> {
    anyhow::ensure!(
        a.departments >= 0 && a.rank >= 0 && a.input >= 8,
        "bad sizes"
    );
    let r = shufflenet_report(a.arch, a.in_channels, a.departments, a.rank, a.input);
    if a.json {
        println!("{}", serde_json::to_string_pretty(&r)?);
        return Ok(());
    }
    let m = |x: i64| format!("{x:>12}  ({:.2} M)", x as f64 / 1e6);
    println!(
        "arch             {}  T={} r={} input={}",
        r.arch, r.departments, r.rank, r.input
    );
    println!("backbone_params  {}", m(r.backbone_params));
    println!(
        "lora_params      {}  ({} expert convs)",
        m(r.lora_params),
        r.expert_convs
    );
    println!("training_params  {}", m(r.training_params));
    println!("deployed_params  {}", m(r.deployed_params));
    println!(
        "deployed_macs    {:>12}  ({:.3} G)",
        r.deployed_macs,
        r.deployed_macs as f64 / 1e9
    );
    Ok(())
}
