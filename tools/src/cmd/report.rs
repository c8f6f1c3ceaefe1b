//! `lorkd report`: the demo's final table, `report.json` and PNG plots.
use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Parser;

use crate::report::{plot_accuracy, plot_curves, read_column, read_curve, Report};

/// Join evaluation JSONs into one per-department table; plot training curves and accuracy.
#[derive(Parser, Debug)]
pub struct Args {
    /// Output directory (report.json, accuracy.png, curves.png).
    #[arg(long)]
    pub out: PathBuf,
    /// An accuracy column, LABEL=EVAL.json (`lorkd-train eval|eval-bundle --json` output).
    #[arg(long = "column", value_name = "LABEL=JSON")]
    pub columns: Vec<String>,
    /// A training curve, LABEL=metrics.jsonl.
    #[arg(long = "curve", value_name = "LABEL=JSONL")]
    pub curves: Vec<String>,
    /// A fact for the report, KEY=JSON-value or KEY=@file.json.
    #[arg(long = "fact", value_name = "KEY=VALUE")]
    pub facts: Vec<String>,
    /// Print report.json instead of the table.
    #[arg(long)]
    pub json: bool,
}

fn split(s: &str) -> Result<(&str, &str)> {
    s.split_once('=')
        .with_context(|| format!("expected LABEL=VALUE, got {s:?}"))
}

/// Runs `lorkd report`.
pub fn run(a: Args) -> Result<()> {
    let columns = a
        .columns
        .iter()
        .map(|c| split(c).and_then(|(l, p)| read_column(l, p.as_ref())))
        .collect::<Result<Vec<_>>>()?;
    let curves = a
        .curves
        .iter()
        .map(|c| split(c).and_then(|(l, p)| read_curve(l, p.as_ref())))
        .collect::<Result<Vec<_>>>()?;
    let mut facts = BTreeMap::new();
    for f in &a.facts {
        let (k, v) = split(f)?;
        let text = match v.strip_prefix('@') {
            Some(p) => std::fs::read_to_string(p).with_context(|| format!("reading {p}"))?,
            None => v.to_string(),
        };
        let value = serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text));
        facts.insert(k.to_string(), value);
    }
    let report = Report::new(columns, facts)?;
    std::fs::create_dir_all(&a.out).with_context(|| format!("creating {}", a.out.display()))?;
    let json = serde_json::to_string_pretty(&report)?;
    std::fs::write(a.out.join("report.json"), &json)?;
    plot_accuracy(&report, &a.out.join("accuracy.png"))?;
    if !curves.is_empty() {
        plot_curves(&curves, &a.out.join("curves.png"))?;
    }
    if a.json {
        println!("{json}");
    } else {
        print!("{}", report.table());
    }
    Ok(())
}
