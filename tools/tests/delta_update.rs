//! Field updates end to end on the host: a retrained department (same shared weights, new
//! factors and head) → `delta make` → `delta verify` → factory flash image → `delta apply`
//! through the runtime's update store → the department answers with its new version's
//! logits; refusals leave the image unchanged; and the `lorkd` binary drives the same path.
use ed25519_dalek::SigningKey;
use lorkd_runtime::engine::Engine;
use lorkd_runtime::format::{Bundle, DeltaDType, Dept, Mode, Precision};
use lorkd_runtime::AlignedBytes;
use lorkd_tools::checkpoint::{random_checkpoint, write_safetensors, Checkpoint, RandomSpec};
use lorkd_tools::delta;
use lorkd_tools::pack::{pack, PackOptions};
use rand::{Rng, SeedableRng};

fn seed() -> u64 {
    let s = std::env::var("LORKD_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(rand::random);
    println!("seed {s}");
    s
}

const CLASSES: [usize; 3] = [3, 4, 5];

fn checkpoint_bytes(seed: u64) -> Vec<u8> {
    let spec = RandomSpec {
        arch: "shufflenet_v2_x0_5".into(),
        in_channels: 3,
        input_size: 32,
        rank: 2,
        classes: CLASSES.to_vec(),
        seed,
    };
    random_checkpoint(&spec).unwrap()
}

/// The checkpoint with department `t`'s factors and head redrawn (a retrained department;
/// every shared tensor bit-identical).
fn retrain(ck_bytes: &[u8], t: usize, seed: u64) -> Vec<u8> {
    let meta = Checkpoint::from_bytes(ck_bytes).unwrap().meta;
    let st = safetensors::SafeTensors::deserialize(ck_bytes).unwrap();
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let mut out = Vec::new();
    for (name, view) in st.tensors() {
        let shape = view.shape().to_vec();
        let mut v: Vec<f32> = view
            .data()
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        let per = v.len() / shape[0].max(1);
        if name.ends_with(".lora_A") || name.ends_with(".lora_B") {
            let scale = v.iter().fold(0f32, |a, x| a.max(x.abs()));
            for x in &mut v[t * per..(t + 1) * per] {
                *x = rng.gen_range(-scale..scale);
            }
        } else if name.starts_with(&format!("heads.{t}.")) {
            for x in &mut v {
                *x = rng.gen_range(-0.3..0.3);
            }
        }
        out.push((name, shape, v));
    }
    write_safetensors(&out, &meta).unwrap()
}

fn pack_bytes(ck_bytes: &[u8], weights: Precision, delta: DeltaDType, version: u32) -> Vec<u8> {
    let ck = Checkpoint::from_bytes(ck_bytes).unwrap();
    let opts = PackOptions {
        weights,
        delta,
        version,
        ..PackOptions::default()
    };
    pack(&ck, &opts, None, None, &|b, imgs| {
        lorkd_tools::calibrate::activation_ranges(b, imgs)
    })
    .unwrap()
}

/// Logits of a department blob run against a bundle, on a fixed input.
fn logits(bundle_bytes: &[u8], blob: &[u8], x: &[f32]) -> Vec<f32> {
    let al = AlignedBytes::new(bundle_bytes);
    let b = Bundle::parse(al.as_slice()).unwrap();
    let blob = AlignedBytes::new(blob);
    let d = Dept::parse_blob(blob.as_slice(), b.manifest(), b.base_id()).unwrap();
    let mut arena = AlignedBytes::zeroed(b.arena_bytes(Mode::Materialized));
    let mut e = Engine::new(&b, arena.as_mut_slice(), Mode::Materialized).unwrap();
    e.select_blob(d).unwrap();
    let mut out = vec![0f32; d.classes()];
    e.infer(x, &mut out).unwrap();
    out
}

fn input(seed: u64) -> Vec<f32> {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    (0..3 * 32 * 32)
        .map(|_| rng.gen_range(-1.5f32..1.5))
        .collect()
}

#[test]
fn a_retrained_department_is_made_verified_and_applied_to_a_flash_image() {
    let seed = seed();
    let key = SigningKey::from_bytes(&[seed as u8 | 1; 32]);
    let pubkey = key.verifying_key();
    let x = input(seed);
    for (weights, dt) in [
        (Precision::F32, DeltaDType::F32),
        (Precision::Int8, DeltaDType::I8),
    ] {
        let ck1 = checkpoint_bytes(seed);
        let base = pack_bytes(&ck1, weights, dt, 1);
        let ck2 = retrain(&ck1, 1, seed ^ 2);
        let ck = Checkpoint::from_bytes(&ck2).unwrap();
        let pkg = delta::make(&base, &ck, "dept1", 2, 0, &key).unwrap();
        let info = delta::verify(&pkg, &base, &pubkey).unwrap();
        assert_eq!(
            (info.department.as_str(), info.version, info.signature),
            ("dept1", 2, "verified")
        );

        let mut img = delta::image(&base).unwrap();
        let before: Vec<Vec<f32>> = (0..3)
            .map(|d| {
                logits(
                    &base,
                    &delta::active_blob(&img, &pubkey, &format!("dept{d}")).unwrap(),
                    &x,
                )
            })
            .collect();
        let st = delta::apply(&pkg, &mut img, &pubkey).unwrap();
        assert_eq!((st.version, st.source.as_str()), (Some(2), "slot A"));
        // The department now answers with the retrained expert, exactly as a bundle packed
        // from the retrained checkpoint would; the others are unchanged.
        let retrained = pack_bytes(&ck2, weights, dt, 2);
        let rb = AlignedBytes::new(&retrained);
        let want = logits(
            &base,
            Bundle::parse(rb.as_slice())
                .unwrap()
                .department_blob(1)
                .unwrap(),
            &x,
        );
        let after: Vec<Vec<f32>> = (0..3)
            .map(|d| {
                logits(
                    &base,
                    &delta::active_blob(&img, &pubkey, &format!("dept{d}")).unwrap(),
                    &x,
                )
            })
            .collect();
        assert_eq!(after[1], want, "{weights:?}");
        assert_ne!(
            after[1], before[1],
            "{weights:?}: the update must change the department's answer"
        );
        assert_eq!(after[0], before[0]);
        assert_eq!(after[2], before[2]);
        let status = delta::status(&img, &pubkey).unwrap();
        assert_eq!(
            status.iter().map(|s| s.version).collect::<Vec<_>>(),
            vec![Some(1), Some(2), Some(1)]
        );

        // Refusals leave the image byte-for-byte unchanged.
        let snapshot = img.clone();
        let e = delta::apply(&pkg, &mut img, &pubkey).unwrap_err();
        assert!(e.to_string().contains("equals the current"), "{e}");
        let other = SigningKey::from_bytes(&[0x5A; 32]);
        let forged = delta::make(&base, &ck, "dept1", 3, 0, &other).unwrap();
        let e = delta::apply(&forged, &mut img, &pubkey).unwrap_err();
        assert!(e.to_string().contains("signature"), "{e}");
        assert!(delta::verify(&forged, &base, &pubkey).is_err());
        let mut flipped = delta::make(&base, &ck, "dept1", 3, 0, &key).unwrap();
        let n = flipped.len();
        flipped[n / 2] ^= 0x08;
        assert!(delta::apply(&flipped, &mut img, &pubkey).is_err());
        assert!(delta::apply(&pkg[..pkg.len() - 1], &mut img, &pubkey).is_err());
        assert!(img == snapshot);
    }
}

#[test]
fn a_checkpoint_with_other_shared_weights_is_refused() {
    let seed = seed();
    let key = SigningKey::from_bytes(&[3; 32]);
    let base = pack_bytes(&checkpoint_bytes(seed), Precision::F32, DeltaDType::F16, 1);
    let other = Checkpoint::from_bytes(&checkpoint_bytes(seed ^ 1)).unwrap();
    let e = delta::make(&base, &other, "dept0", 2, 0, &key).unwrap_err();
    assert!(e.to_string().contains("shared weights differ"), "{e}");
    let same = Checkpoint::from_bytes(&checkpoint_bytes(seed)).unwrap();
    let e = delta::make(&base, &same, "spleen", 2, 0, &key).unwrap_err();
    assert!(e.to_string().contains("no department `spleen`"), "{e}");
}

#[test]
fn the_cli_makes_verifies_applies_and_exports() {
    let seed = seed();
    let dir = std::env::temp_dir().join(format!("lorkd-delta-cli-{seed}"));
    std::fs::create_dir_all(&dir).unwrap();
    let p = |n: &str| dir.join(n);
    let ck1 = checkpoint_bytes(seed);
    std::fs::write(p("base.safetensors"), &ck1).unwrap();
    std::fs::write(p("lung.safetensors"), retrain(&ck1, 0, seed ^ 9)).unwrap();
    std::fs::write(
        p("model.lorkd"),
        pack_bytes(&ck1, Precision::F32, DeltaDType::F32, 1),
    )
    .unwrap();
    lorkd_tools::keys::generate(p("key")).unwrap();
    let run = |args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_lorkd"))
            .args(args)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).to_string()
            + &String::from_utf8_lossy(&out.stderr);
        (out.status.success(), text)
    };
    let s = |x: &std::path::Path| x.to_str().unwrap().to_string();
    let (model, key, pubkey, pkg, img) = (
        s(&p("model.lorkd")),
        s(&p("key")),
        s(&p("key.pub")),
        s(&p("dept0-v2.lkdu")),
        s(&p("flash.img")),
    );
    let (ok, t) = run(&[
        "delta",
        "make",
        "--base",
        &model,
        "--from",
        &s(&p("lung.safetensors")),
        "--dept",
        "dept0",
        "--version",
        "2",
        "--key",
        &key,
        "-o",
        &pkg,
    ]);
    assert!(ok, "{t}");
    let (ok, t) = run(&[
        "delta", "verify", &pkg, "--base", &model, "--pubkey", &pubkey,
    ]);
    assert!(ok && t.contains("signature verified"), "{t}");
    let (ok, t) = run(&["delta", "image", "--base", &model, "-o", &img]);
    assert!(ok, "{t}");
    let (ok, t) = run(&[
        "delta", "apply", &pkg, "--image", &img, "--pubkey", &pubkey, "--json",
    ]);
    assert!(ok, "{t}");
    let st: serde_json::Value = serde_json::from_str(&t[t.find('{').unwrap()..]).unwrap();
    assert_eq!(st["version"], 2);
    let (ok, t) = run(&["delta", "apply", &pkg, "--image", &img, "--pubkey", &pubkey]);
    assert!(!ok && t.contains("refused"), "a replay must fail: {t}");
    let (ok, t) = run(&[
        "delta", "status", "--image", &img, "--pubkey", &pubkey, "--json",
    ]);
    assert!(ok, "{t}");
    let st: serde_json::Value = serde_json::from_str(&t).unwrap();
    assert_eq!(st[0]["source"], "slot A");
    let (ok, t) = run(&[
        "verify",
        &model,
        "--json",
        "--inputs",
        "2",
        "--seed",
        &seed.to_string(),
    ]);
    assert!(ok, "{t}");
    let r: serde_json::Value = serde_json::from_str(&t).unwrap();
    assert_eq!(r["ok"], true);
    let onnx = s(&p("dept2.onnx"));
    let (ok, t) = run(&["export-onnx", &model, "--dept", "dept2", "-o", &onnx]);
    assert!(ok, "{t}");
    let (ok, t) = run(&["export-onnx", &model, "--dept", "spleen", "-o", &onnx]);
    assert!(!ok && t.contains("no department `spleen`"), "{t}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_damaged_journal_is_refused_until_delta_format_which_keeps_the_counters() {
    let seed = seed();
    let key = SigningKey::from_bytes(&[seed as u8 | 1; 32]);
    let pubkey = key.verifying_key();
    let ck1 = checkpoint_bytes(seed);
    let base = pack_bytes(&ck1, Precision::F32, DeltaDType::F32, 1);
    let ck = Checkpoint::from_bytes(&retrain(&ck1, 1, seed ^ 2)).unwrap();
    let pkg = delta::make(&base, &ck, "dept1", 2, 2, &key).unwrap();
    let mut img = delta::image(&base).unwrap();
    delta::apply(&pkg, &mut img, &pubkey).unwrap();
    // One flipped bit in the journal's bank header (bank 0, right after the bundle).
    let al = AlignedBytes::new(&base);
    let b = Bundle::parse(al.as_slice()).unwrap();
    let journal = delta::standard_layout(&b).journal as usize;
    img[journal + 9] ^= 0x04;
    let damaged = img.clone();
    let e = delta::status(&img, &pubkey).unwrap_err();
    assert!(e.to_string().contains("damaged"), "{e}");
    assert!(delta::apply(&pkg, &mut img, &pubkey).is_err());
    assert!(img == damaged, "a refused image was written");
    let st = delta::format(&mut img, &pubkey).unwrap();
    // The counter survived the format: dept1's factory v1 is below it.
    assert_eq!(st[1].security_counter, 2);
    assert_eq!(st[1].version, None);
    assert_eq!(st[0].version, Some(1));
    let st = delta::apply(&pkg, &mut img, &pubkey).unwrap();
    assert_eq!(st.version, Some(2));
}

/// The checkpoint grown by department `name` with `classes` classes: new factor slices and
/// head drawn at random, every tensor of `ck_bytes` kept (what `lorkd-train add-department`
/// produces).
fn grow(ck_bytes: &[u8], name: &str, classes: usize, seed: u64) -> Vec<u8> {
    let mut meta = Checkpoint::from_bytes(ck_bytes).unwrap().meta;
    meta.departments.push(lorkd_tools::checkpoint::DeptMeta {
        name: name.into(),
        classes: (0..classes).map(|c| format!("{name}{c}")).collect(),
    });
    let t = meta.departments.len() - 1;
    let st = safetensors::SafeTensors::deserialize(ck_bytes).unwrap();
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let mut out = Vec::new();
    let mut features = 0;
    for (name, view) in st.tensors() {
        let mut shape = view.shape().to_vec();
        let mut v: Vec<f32> = view
            .data()
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        let per = v.len() / shape[0].max(1);
        if name.ends_with(".lora_A") || name.ends_with(".lora_B") {
            let scale = v.iter().fold(0f32, |a, x| a.max(x.abs()));
            v.extend((0..per).map(|_| rng.gen_range(-scale..=scale)));
            shape[0] += 1;
        } else if name == "head.weight" || name == "head.bias" {
            v.extend((0..classes * per).map(|_| rng.gen_range(-0.1f32..0.1)));
            shape[0] += classes;
        }
        if name == "heads.0.weight" {
            features = shape[1];
        }
        out.push((name, shape, v));
    }
    let w = (0..classes * features)
        .map(|_| rng.gen_range(-0.3f32..0.3))
        .collect();
    out.push((format!("heads.{t}.weight"), vec![classes, features], w));
    let b = (0..classes).map(|_| rng.gen_range(-0.3f32..0.3)).collect();
    out.push((format!("heads.{t}.bias"), vec![classes], b));
    write_safetensors(&out, &meta).unwrap()
}

#[test]
fn the_cli_adds_a_department_in_the_field_runs_it_from_the_image_and_removes_it() {
    let seed = seed();
    let dir = std::env::temp_dir().join(format!("lorkd-delta-add-{seed}"));
    std::fs::create_dir_all(&dir).unwrap();
    let p = |n: &str| dir.join(n);
    let ck1 = checkpoint_bytes(seed);
    let grown = grow(&ck1, "oncology", 2, seed ^ 3);
    std::fs::write(p("grown.safetensors"), &grown).unwrap();
    let model_bytes = pack_bytes(&ck1, Precision::F32, DeltaDType::F32, 1);
    std::fs::write(p("model.lorkd"), &model_bytes).unwrap();
    let x = input(seed ^ 5);
    std::fs::write(
        p("x.npy"),
        lorkd_data::npy::write_f32(&ndarray::ArrayView::from_shape([3, 32, 32], &x).unwrap()),
    )
    .unwrap();
    lorkd_tools::keys::generate(p("key")).unwrap();
    let run = |args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_lorkd"))
            .args(args)
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).to_string(),
            String::from_utf8_lossy(&out.stderr).to_string(),
        )
    };
    let s = |x: &std::path::Path| x.to_str().unwrap().to_string();
    let (model, key, pubkey, pkg, img, npy) = (
        s(&p("model.lorkd")),
        s(&p("key")),
        s(&p("key.pub")),
        s(&p("oncology-v1.lkdu")),
        s(&p("flash.img")),
        s(&p("x.npy")),
    );
    let make = |dept: &str, add: bool, out: &str| {
        let mut a = vec![
            "delta",
            "make",
            "--base",
            &model,
            "--dept",
            dept,
            "--version",
            "1",
            "--key",
            &key,
            "-o",
            out,
        ];
        let from = s(&p("grown.safetensors"));
        a.extend(["--from", &from]);
        if add {
            a.push("--add");
        }
        run(&a)
    };
    // `--add` of a department the bundle has is refused; without it one it lacks is detected.
    let (ok, _, e) = make("dept0", true, &s(&p("x.lkdu")));
    assert!(!ok && e.contains("already has department `dept0`"), "{e}");
    assert!(!p("x.lkdu").exists());
    let (ok, _, e) = make("oncology", true, &pkg);
    assert!(ok && e.contains("added in the field"), "{e}");
    let (ok, o, e) = run(&[
        "delta", "verify", &pkg, "--base", &model, "--pubkey", &pubkey,
    ]);
    assert!(
        ok && o.contains("adds department oncology v1 (2 classes"),
        "{o}{e}"
    );
    let (ok, _, e) = run(&["delta", "image", "--base", &model, "-o", &img]);
    assert!(
        ok && e.contains("room for 2 departments added in the field"),
        "{e}"
    );
    let (ok, o, _) = run(&["inspect", &model, "--json"]);
    assert!(ok);
    let r: serde_json::Value = serde_json::from_str(&o).unwrap();
    assert_eq!(r["device_store"]["added_departments"], 2);

    let image = ["--image", &img, "--pubkey", &pubkey, "--allow-unsigned"];
    let answer = |dept: &str| {
        let mut a = vec!["run"];
        a.extend(image);
        a.extend(["--dept", dept, &npy, "--json"]);
        let (ok, o, e) = run(&a);
        assert!(ok, "{e}");
        serde_json::from_str::<serde_json::Value>(&o).unwrap()
    };
    let before: Vec<serde_json::Value> = ["dept0", "dept1", "dept2"].map(answer).to_vec();
    let mut a = vec!["run"];
    a.extend(image);
    a.extend(["--dept", "oncology", &npy]);
    let (ok, _, e) = run(&a);
    assert!(!ok && e.contains("no department `oncology`"), "{e}");

    let img_before = std::fs::read(&img).unwrap();
    let (ok, o, e) = run(&[
        "delta", "apply", &pkg, "--image", &img, "--pubkey", &pubkey, "--json",
    ]);
    assert!(ok, "{e}");
    let st: serde_json::Value = serde_json::from_str(&o).unwrap();
    assert_eq!(
        (st["department"].as_str(), st["added"].as_bool()),
        (Some("oncology"), Some(true))
    );
    assert_ne!(std::fs::read(&img).unwrap(), img_before);
    let (ok, o, _) = run(&[
        "delta", "status", "--image", &img, "--pubkey", &pubkey, "--json",
    ]);
    assert!(ok);
    let st: serde_json::Value = serde_json::from_str(&o).unwrap();
    assert_eq!(st.as_array().unwrap().len(), 4);
    assert_eq!(st[3]["department"], "oncology");
    assert_eq!(st[3]["source"], "slot A");

    // The added department answers from the image with exactly its blob's logits; the
    // bundle's departments answer byte for byte as before.
    let r = answer("oncology");
    assert_eq!(
        (r["version"].as_u64(), r["source"].as_str()),
        (Some(1), Some("slot A"))
    );
    let blob = lorkd_runtime::update::Package::parse(&std::fs::read(&pkg).unwrap())
        .unwrap()
        .blob()
        .to_vec();
    let want = logits(&model_bytes, &blob, &x);
    let got: Vec<f32> = r["results"][0]["logits"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap() as f32)
        .collect();
    assert_eq!(got, want);
    let after: Vec<serde_json::Value> = ["dept0", "dept1", "dept2"].map(answer).to_vec();
    assert_eq!(before, after);

    // A replay is refused; a removal retires it; a bundle department cannot be removed.
    let (ok, _, e) = run(&["delta", "apply", &pkg, "--image", &img, "--pubkey", &pubkey]);
    assert!(!ok && e.contains("refused"), "{e}");
    let rm = s(&p("oncology-rm.lkdu"));
    let (ok, _, e) = run(&[
        "delta",
        "remove",
        "--base",
        &model,
        "--dept",
        "dept1",
        "--version",
        "2",
        "--key",
        &key,
        "-o",
        &rm,
    ]);
    assert!(
        !ok && e.contains("only departments added in the field"),
        "{e}"
    );
    let (ok, _, e) = run(&[
        "delta",
        "remove",
        "--base",
        &model,
        "--dept",
        "oncology",
        "--version",
        "2",
        "--key",
        &key,
        "-o",
        &rm,
    ]);
    assert!(ok, "{e}");
    let (ok, o, e) = run(&[
        "delta", "verify", &rm, "--base", &model, "--pubkey", &pubkey,
    ]);
    assert!(ok && o.contains("removes department oncology v2"), "{o}{e}");
    let (ok, _, e) = run(&["delta", "apply", &rm, "--image", &img, "--pubkey", &pubkey]);
    assert!(ok, "{e}");
    let (ok, o, _) = run(&[
        "delta", "status", "--image", &img, "--pubkey", &pubkey, "--json",
    ]);
    assert!(ok);
    let st: serde_json::Value = serde_json::from_str(&o).unwrap();
    assert_eq!(st.as_array().unwrap().len(), 3);
    let (ok, _, e) = run(&["delta", "apply", &pkg, "--image", &img, "--pubkey", &pubkey]);
    assert!(!ok && e.contains("older"), "{e}");
    let after: Vec<serde_json::Value> = ["dept0", "dept1", "dept2"].map(answer).to_vec();
    assert_eq!(before, after);
    let _ = std::fs::remove_dir_all(&dir);
}
