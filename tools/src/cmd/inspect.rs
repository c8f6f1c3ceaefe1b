//! `lorkd inspect model.lorkd [--json] [--pubkey PUB]`: what a bundle holds and what it saves.

use std::path::PathBuf;

use anyhow::{Context, Result};
use lorkd_runtime::format::plan::{self, Plan};
use lorkd_runtime::format::{Bundle, DeltaDType, Manifest, Mode, Op, Precision};
use serde_json::{json, Value};

/// Show departments, sizes, arena plan, base id and signature status of a bundle.
#[derive(clap::Args, Debug)]
pub struct Args {
    pub bundle: PathBuf,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
    /// Check the signature with this public key file; exits non-zero unless it is valid.
    #[arg(long)]
    pub pubkey: Option<PathBuf>,
}

fn precision(p: Precision) -> &'static str {
    match p {
        Precision::F32 => "f32",
        Precision::Int8 => "int8",
    }
}

fn delta_name(d: DeltaDType) -> &'static str {
    match d {
        DeltaDType::F32 => "f32",
        DeltaDType::F16 => "f16",
        DeltaDType::I8 => "int8",
    }
}

/// Lowercase hex.
pub fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Bytes of one fused expert at the bundle's precision: every conv's stored weight, bias and
/// scales (what a separate per-department model would ship) plus its head.
pub fn expert_bytes(b: &Bundle<'_>, dept: usize) -> usize {
    let m = b.manifest();
    let shared: usize = m
        .ops
        .iter()
        .map(|op| match op {
            Op::Conv {
                weight,
                bias,
                wscale,
                ..
            }
            | Op::DwConv {
                weight,
                bias,
                wscale,
                ..
            } => (weight.len + bias.len + wscale.len) as usize,
            _ => 0,
        })
        .sum();
    let head = b.department(dept).map_or(0, |d| {
        (d.manifest.head_weight.len + d.manifest.head_bias.len) as usize
    });
    shared + head
}

/// What the `auto` switch plan does with this graph (`format::plan`): which expert convs it
/// streams (and which `streaming` rebuilds per inference on this machine's target), each
/// expert's modelled costs (units of one int8 multiply-add), and the model's
/// prediction of a switch and of the added inference work, as fractions of one
/// Materialized inference.
fn switch_plan(m: &Manifest<'_>) -> Value {
    let plan = Plan::new(m, Mode::Auto);
    let streaming = Plan::new(m, Mode::Streaming);
    let mut rebuilt_per_inference = Vec::new();
    let infer = plan::inference_cost(m).max(1) as f64;
    let (mut rebuild_all, mut rebuild_auto, mut added) = (0u64, 0u64, 0u64);
    let mut streamed = Vec::new();
    let mut detail = Vec::new();
    for e in plan::experts(m) {
        let streams = plan.streams_expert(&e);
        let per_inference = streaming.rebuilds_per_inference(e.cout, e.cin, e.k, e.hw);
        detail.push(json!({
            "op": e.op, "cout": e.cout, "cin": e.cin, "k": e.k, "pixels": e.hw,
            "rebuild": e.cost.rebuild, "stream": e.cost.stream, "infer": e.cost.infer,
            "auto": if streams { "stream" } else { "rebuild" },
            "streaming": if per_inference { "rebuild per inference" } else { "stream" },
        }));
        if per_inference {
            rebuilt_per_inference.push(e.op);
        }
        rebuild_all = rebuild_all.saturating_add(e.cost.rebuild);
        if streams {
            added = added.saturating_add(e.cost.stream);
            streamed.push(e.op);
        } else {
            rebuild_auto = rebuild_auto.saturating_add(e.cost.rebuild);
        }
    }
    json!({
        "inference_cost_units": infer,
        "experts": detail.len(),
        "expert_costs": detail,
        "auto_streamed_ops": streamed,
        "streaming_rebuilt_per_inference_ops": rebuilt_per_inference,
        "predicted_switch_per_inference": {
            "materialized": rebuild_all as f64 / infer,
            "auto": rebuild_auto as f64 / infer,
        },
        "predicted_auto_inference_overhead": added as f64 / infer,
    })
}

/// The inspect report (what `lorkd inspect --json` prints).
pub fn report(bytes: &[u8], pubkey: Option<&[u8; 32]>) -> Result<Value> {
    let b = Bundle::parse(bytes).map_err(|e| anyhow::anyhow!("invalid bundle: {e}"))?;
    let signature = match (b.is_signed(), pubkey) {
        (false, _) => "unsigned".to_string(),
        (true, None) => "signed (not checked: no --pubkey)".to_string(),
        (true, Some(pk)) => match Bundle::parse_signed(bytes, pk) {
            Ok(_) => "valid".to_string(),
            Err(e) => format!("invalid ({e})"),
        },
    };
    let m = b.manifest();
    let mut depts = Vec::new();
    let mut deltas = Vec::new();
    let mut separate = 0usize;
    for i in 0..b.department_count() {
        let d = b.department(i).context("department")?;
        deltas.push(delta_name(d.manifest.delta_dtype));
        separate += expert_bytes(&b, i);
        depts.push(json!({
            "name": d.manifest.name,
            "classes": d.classes(),
            "class_names": d.manifest.classes.iter().collect::<Vec<_>>(),
            "delta_bytes": b.department_blob(i).map_or(0, <[u8]>::len),
            "version": d.manifest.version,
        }));
    }
    deltas.dedup();
    let delta = if deltas.len() == 1 {
        deltas[0]
    } else {
        "mixed"
    };
    let h = b.header();
    let total = bytes.len();
    // The update store a device image of this bundle has (`lorkd delta image`).
    let layout = crate::delta::standard_layout(&b);
    Ok(json!({
        "arch": m.arch,
        "input": {"channels": m.input.channels, "size": m.input.size},
        "departments": depts,
        "rank": m.rank,
        "precisions": {"weights": precision(m.precision), "activations": precision(m.precision), "delta": delta},
        "shared_bytes": h.manifest.len as usize + h.shared.len as usize,
        "total_bytes": total,
        "separate_experts_bytes": separate,
        "ratio": if separate > 0 { total as f64 / separate as f64 } else { 0.0 },
        "arena_bytes": {"materialized": b.arena_bytes(Mode::Materialized), "streaming": b.arena_bytes(Mode::Streaming), "auto": b.arena_bytes(Mode::Auto)},
        "switch_plan": switch_plan(m),
        "base_id": hex(b.base_id()),
        "signature": signature,
        "device_store": {
            "added_departments": layout.added,
            "slot_bytes": layout.slot_size,
            "image_bytes": layout.end(),
        },
    }))
}

pub fn run(a: Args) -> Result<()> {
    let bytes =
        std::fs::read(&a.bundle).with_context(|| format!("reading {}", a.bundle.display()))?;
    let pk = a
        .pubkey
        .as_ref()
        .map(crate::keys::load_verifying_key)
        .transpose()?
        .map(|k| k.to_bytes());
    let r = report(&bytes, pk.as_ref()).with_context(|| format!("{}", a.bundle.display()))?;
    // With --pubkey the report is printed, then anything but a valid signature fails.
    let verdict = || -> Result<()> {
        let sig = r["signature"].as_str().unwrap_or("");
        match &a.pubkey {
            Some(p) if sig != "valid" => anyhow::bail!(
                "{}: signature {sig} under {}",
                a.bundle.display(),
                p.display()
            ),
            _ => Ok(()),
        }
    };
    if a.json {
        println!("{}", serde_json::to_string_pretty(&r)?);
        return verdict();
    }
    println!(
        "{}  {}x{}x{}  rank {}",
        r["arch"].as_str().unwrap_or(""),
        r["input"]["channels"],
        r["input"]["size"],
        r["input"]["size"],
        r["rank"]
    );
    println!(
        "precisions      weights {} / activations {} / delta {}",
        r["precisions"]["weights"], r["precisions"]["activations"], r["precisions"]["delta"]
    );
    println!(
        "{:<16} {:>8} {:>12} {:>8}",
        "department", "classes", "delta bytes", "version"
    );
    for d in r["departments"].as_array().into_iter().flatten() {
        println!(
            "{:<16} {:>8} {:>12} {:>8}",
            d["name"].as_str().unwrap_or(""),
            d["classes"],
            d["delta_bytes"],
            d["version"]
        );
    }
    println!("shared_bytes    {}", r["shared_bytes"]);
    println!("total_bytes     {}", r["total_bytes"]);
    println!(
        "separate        {} ({} experts)",
        r["separate_experts_bytes"],
        r["departments"].as_array().map_or(0, Vec::len)
    );
    println!("ratio           {:.4}", r["ratio"].as_f64().unwrap_or(0.0));
    println!(
        "arena_bytes     materialized {} / streaming {} / auto {}",
        r["arena_bytes"]["materialized"], r["arena_bytes"]["streaming"], r["arena_bytes"]["auto"]
    );
    let sp = &r["switch_plan"];
    println!(
        "auto plan       streams {} of {} expert convs; predicted switch {:.2} inferences (materialized {:.2}), inference +{:.1}%",
        sp["auto_streamed_ops"].as_array().map_or(0, Vec::len),
        sp["experts"],
        sp["predicted_switch_per_inference"]["auto"].as_f64().unwrap_or(0.0),
        sp["predicted_switch_per_inference"]["materialized"].as_f64().unwrap_or(0.0),
        100.0 * sp["predicted_auto_inference_overhead"].as_f64().unwrap_or(0.0)
    );
    println!(
        "streaming plan  rebuilds {} of {} expert convs in the arena's scratch at each inference (the rest stream)",
        sp["streaming_rebuilt_per_inference_ops"]
            .as_array()
            .map_or(0, Vec::len),
        sp["experts"],
    );
    println!(
        "device store    {} slot pairs for departments added in the field, {}-byte slots",
        r["device_store"]["added_departments"], r["device_store"]["slot_bytes"]
    );
    println!("base_id         {}", r["base_id"].as_str().unwrap_or(""));
    println!("signature       {}", r["signature"].as_str().unwrap_or(""));
    verdict()
}
