//! `lorkd verify`: re-checks a bundle through the runtime's own parser (every section hash,
//! the whole-file hash, the base id, each department blob's hash, the signature when a key
//! is given), then checks every department's expert against an oracle we did not write:
//! tract running the exported ONNX of the fused float expert (`W0 + B·A`, DESIGN.md
//! "Deployment math") on seeded random inputs.
//!
//! f32 bundles must agree within `max |err| < 1e-4 · max |logit|` in both switching modes.
//! int8 bundles run the runtime's int8 path, which a float oracle cannot match to 1e-4; their
//! errors are reported (with top-1 agreement) but do not decide the verdict.
use anyhow::{Context, Result};
use ed25519_dalek::VerifyingKey;
use lorkd_runtime::engine::{AlignedBytes, Engine};
use lorkd_runtime::format::{Bundle, Dept, Mode, Precision};
use rand::{Rng, SeedableRng};
use serde::Serialize;

use crate::onnx::{build_model, encode, ExpertSource, TractExpert};

/// The relative bound of f32 agreement.
pub const REL_TOL: f32 = 1e-4;

/// The result for one department in one switching mode.
#[derive(Serialize, Debug, Clone)]
pub struct ModeCheck {
    pub mode: &'static str,
    pub max_abs_err: f32,
    /// `max_abs_err / logit_scale`.
    pub rel_err: f32,
    /// Fraction of inputs whose top-1 class agrees with tract's.
    pub top1_agreement: f32,
}

/// One department's report.
#[derive(Serialize, Debug, Clone)]
pub struct DeptCheck {
    pub name: String,
    pub version: u32,
    pub classes: usize,
    /// `max |logit|` of tract's outputs.
    pub logit_scale: f32,
    pub modes: Vec<ModeCheck>,
    pub passed: bool,
}

/// The JSON document of `lorkd verify --json`.
#[derive(Serialize, Debug, Clone)]
pub struct Report {
    pub file: String,
    pub base_id: String,
    pub precision: &'static str,
    /// `verified`, `unsigned`, or `present (not checked: no --pubkey)`.
    pub signature: String,
    pub hashes: &'static str,
    pub inputs: usize,
    pub seed: u64,
    pub tolerance: f32,
    pub departments: Vec<DeptCheck>,
    pub ok: bool,
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// The ONNX bytes of department `dept`'s fused float expert.
pub fn export_dept(bundle: &Bundle<'_>, dept: usize) -> Result<Vec<u8>> {
    let d = bundle.department(dept).context("no such department")?;
    let src = ExpertSource {
        manifest: bundle.manifest(),
        shared_payload: bundle.shared(),
        dept: &d.manifest,
        dept_payload: d.payload,
    };
    Ok(encode(&build_model(&src)?))
}

/// Verifies `bytes` (a bundle) as described in the module doc.
pub fn verify(
    file: &str,
    bytes: &[u8],
    pubkey: Option<&VerifyingKey>,
    inputs: usize,
    seed: u64,
) -> Result<Report> {
    let owned = AlignedBytes::new(bytes);
    let bytes = owned.as_slice();
    let bundle = match pubkey {
        Some(k) => Bundle::parse_signed(bytes, k.as_bytes()),
        None => Bundle::parse(bytes),
    }
    .map_err(|e| anyhow::anyhow!("{file}: {e}"))?;
    let signature = match (pubkey, bundle.is_signed()) {
        (Some(_), _) => "verified".to_string(),
        (None, true) => "present (not checked: no --pubkey)".to_string(),
        (None, false) => "unsigned".to_string(),
    };
    let m = bundle.manifest();
    let (c, hw) = (m.input.channels as usize, m.input.size as usize);
    let per = c * hw * hw;
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let x: Vec<f32> = (0..inputs * per)
        .map(|_| rng.gen_range(-2.0f32..2.0))
        .collect();
    let int8 = m.precision == Precision::Int8;

    let mut departments = Vec::new();
    for i in 0..bundle.department_count() {
        // Every blob once more through the runtime's validating parser (its own SHA-256).
        let blob = bundle.department_blob(i).context("department table")?;
        let dept = Dept::parse_blob(blob, m, bundle.base_id())
            .map_err(|e| anyhow::anyhow!("department {i}: {e}"))?;
        let name = dept.manifest.name.to_string();
        let onnx = export_dept(&bundle, i).with_context(|| format!("exporting {name}"))?;
        let oracle =
            TractExpert::load(&onnx, inputs, c, hw).with_context(|| format!("tract on {name}"))?;
        let want = oracle.run(&x)?;
        let k = oracle.classes();
        let logit_scale = want.iter().fold(0f32, |a, v| a.max(v.abs()));
        let mut modes = Vec::new();
        for mode in [Mode::Materialized, Mode::Streaming] {
            let mut arena = AlignedBytes::zeroed(bundle.arena_bytes(mode));
            let mut e = Engine::new(&bundle, arena.as_mut_slice(), mode)
                .map_err(|e| anyhow::anyhow!("engine: {e}"))?;
            e.select(i)
                .map_err(|e| anyhow::anyhow!("select {name}: {e}"))?;
            let mut got = vec![0f32; inputs * k];
            for (xi, gi) in x.chunks_exact(per).zip(got.chunks_exact_mut(k)) {
                e.infer(xi, gi)
                    .map_err(|e| anyhow::anyhow!("infer {name}: {e}"))?;
            }
            let max_abs_err = got
                .iter()
                .zip(&want)
                .fold(0f32, |a, (g, w)| a.max((g - w).abs()));
            let argmax = |v: &[f32]| {
                v.iter()
                    .enumerate()
                    .fold(0, |b, (j, &x)| if x > v[b] { j } else { b })
            };
            let agree = got
                .chunks_exact(k)
                .zip(want.chunks_exact(k))
                .filter(|(g, w)| argmax(g) == argmax(w))
                .count();
            modes.push(ModeCheck {
                mode: match mode {
                    Mode::Materialized => "materialized",
                    Mode::Streaming => "streaming",
                },
                max_abs_err,
                rel_err: if logit_scale > 0.0 {
                    max_abs_err / logit_scale
                } else {
                    max_abs_err
                },
                top1_agreement: agree as f32 / inputs as f32,
            });
        }
        // NaN fails too: the comparison must hold, not merely not fail.
        let passed = int8 || modes.iter().all(|mc| mc.rel_err < REL_TOL);
        departments.push(DeptCheck {
            name,
            version: dept.manifest.version,
            classes: k,
            logit_scale,
            modes,
            passed,
        });
    }
    let ok = departments.iter().all(|d| d.passed);
    Ok(Report {
        file: file.to_string(),
        base_id: hex(bundle.base_id()),
        precision: if int8 { "int8" } else { "f32" },
        signature,
        hashes: "ok",
        inputs,
        seed,
        tolerance: REL_TOL,
        departments,
        ok,
    })
}

/// Human-readable lines of a report.
pub fn render(r: &Report) -> String {
    let mut s = format!(
        "{}: hashes ok, signature {}, base id {}, {} weights\n",
        r.file,
        r.signature,
        &r.base_id[..16],
        r.precision
    );
    for d in &r.departments {
        for m in &d.modes {
            s += &format!(
                "  {:<16} v{:<3} {:<12} max |err| {:.3e}  (logit scale {:.3e}, relative {:.2e})  top-1 {:.0}%  {}\n",
                d.name,
                d.version,
                m.mode,
                m.max_abs_err,
                d.logit_scale,
                m.rel_err,
                100.0 * m.top1_agreement,
                if r.precision == "int8" {
                    "int8 vs float oracle (informational)"
                } else if m.rel_err < REL_TOL {
                    "ok"
                } else {
                    "FAIL"
                }
            );
        }
    }
    s += if r.ok {
        "verify: ok\n"
    } else {
        "verify: FAILED\n"
    };
    s
}
