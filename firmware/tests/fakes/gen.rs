//! Builds the device self-check fixture (format: `lorkd_firmware::fixture`): a bundle
//! packed with `lorkd_tools::pack` from a seeded random ShuffleNetV2 0.5x checkpoint
//! (`lorkd_tools::checkpoint::random_checkpoint`: unit-scale activations, departments that
//! differ), int8 weights and activations, 3 departments at 32x32, signed with the test key
//! (the QEMU board is built with its public key: verified boot); seeded test images; the
//! scores `lorkd_runtime::engine::Engine` computes for them on the host; and a signed update
//! of department 1 (`lorkd_tools::delta::make`, fixed test key) made from the same
//! checkpoint with that department's `lora_B` factors negated and scaled (a "retrained"
//! department over the same shared weights), with the scores it must give afterwards; and a
//! signed package that adds a fourth department the bundle never had (the checkpoint grown by
//! one department: new factor slices and a 2-class head, everything else the same), with the
//! scores the added department must give.
//!
//! Deterministic: same bytes every run. Shared by the QEMU board's fixture writer
//! (`cargo run -p lorkd-firmware --example qemu-fixture -- OUT.bin`, run by
//! `firmware/run-qemu`) and the host tests (`tests/protocol.rs`), so both check the device
//! app against the same bundle, images, update and host-computed scores.
use anyhow::{bail, Context, Result};
use lorkd_firmware::fixture::{HEADER_LEN, MAGIC};
use lorkd_runtime::engine::{AlignedBytes, Engine};
use lorkd_runtime::format::{Bundle, DeltaDType, Mode, Precision};
use lorkd_tools::checkpoint::{random_checkpoint, Checkpoint, RandomSpec};
use lorkd_tools::pack::{pack, PackOptions};
use rand::{Rng, SeedableRng};

/// The ed25519 secret key (seed) the fixture's bundle and update are signed with (a test
/// key; its public half is the QEMU board's vendor key, see [`public_key_text`]).
pub const SIGNING_KEY: [u8; 32] = [42; 32];
const IMAGES: usize = 3;
const SIZE: usize = 32;
/// The department the fixture's add package brings (absent from its bundle).
pub const ADDED_NAME: &str = "added";
/// Its classes.
pub const ADDED_CLASSES: usize = 2;

/// The fixture's bytes (format: `lorkd_firmware::fixture`) and a one-line summary.
pub fn fixture() -> Result<(Vec<u8>, String)> {
    fixture_at(SIZE)
}

/// [`fixture`] with input `size`×`size` (the instruction-count bench's larger model).
pub fn fixture_at(size: usize) -> Result<(Vec<u8>, String)> {
    let spec = RandomSpec {
        arch: "shufflenet_v2_x0_5".into(),
        in_channels: 3,
        input_size: size,
        rank: 4,
        classes: vec![4, 3, 5],
        seed: 11,
    };
    let ck = Checkpoint::from_bytes(&random_checkpoint(&spec)?)?;
    let opts = PackOptions {
        weights: Precision::Int8,
        delta: DeltaDType::I8,
        calib_count: 4,
        calib_seed: 5,
        ..PackOptions::default()
    };
    let cal = |b: &[u8], imgs: &[Vec<Vec<f32>>]| lorkd_tools::calibrate::activation_ranges(b, imgs);
    let key = ed25519_dalek::SigningKey::from_bytes(&SIGNING_KEY);
    let bundle_bytes = pack(&ck, &opts, Some(&key), None, &cal)?;
    let al = AlignedBytes::new(&bundle_bytes);
    let bundle = Bundle::parse(al.as_slice()).map_err(|e| anyhow::anyhow!("bundle: {e}"))?;

    let d = bundle.department_count();
    let l = 3 * size * size;
    let classes: Vec<usize> = (0..d)
        .map(|i| bundle.department(i).map_or(0, |x| x.classes()))
        .collect();
    let c = *classes.iter().max().unwrap_or(&0);
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(3);
    let images: Vec<Vec<f32>> = (0..IMAGES)
        .map(|_| (0..l).map(|_| rng.gen_range(-1.5f32..1.5)).collect())
        .collect();

    let mut arena = AlignedBytes::zeroed(bundle.arena_bytes(Mode::Materialized));
    let mut engine = Engine::new(&bundle, arena.as_mut_slice(), Mode::Materialized)
        .map_err(|e| anyhow::anyhow!("engine: {e}"))?;
    let mut expect = Vec::new();
    let mut tops = Vec::new();
    for (dept, &nc) in classes.iter().enumerate() {
        engine
            .select(dept)
            .map_err(|e| anyhow::anyhow!("select: {e}"))?;
        for img in &images {
            let mut logits = vec![0f32; nc];
            engine
                .infer(img, &mut logits)
                .map_err(|e| anyhow::anyhow!("infer: {e}"))?;
            let top = lorkd_firmware::app::argmax(&logits);
            tops.push(top);
            expect.extend_from_slice(&(top as u32).to_le_bytes());
            for k in 0..c {
                expect.extend_from_slice(&logits.get(k).copied().unwrap_or(0.0).to_le_bytes());
            }
        }
    }
    if tops.iter().all(|&t| t == tops[0]) && d > 1 {
        bail!("every department and image has the same top-1: the fixture would prove little");
    }

    // The "retrained" department: same shared weights, other factors.
    const UPDATE_DEPT: usize = 1;
    const UPDATE_VERSION: u32 = 2;
    let raw = random_checkpoint(&spec)?;
    let st = safetensors::SafeTensors::deserialize(&raw)?;
    let mut tensors = Vec::new();
    for (name, view) in tensors_by_name(&st) {
        let shape = view.shape().to_vec();
        let mut data: Vec<f32> = view
            .data()
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        if name.ends_with(".lora_B") {
            let per = data.len() / shape[0];
            for v in &mut data[UPDATE_DEPT * per..(UPDATE_DEPT + 1) * per] {
                *v *= -1.5;
            }
        }
        tensors.push((name, shape, data));
    }
    let ck2 = Checkpoint::from_bytes(&lorkd_tools::checkpoint::write_safetensors(
        &tensors, &ck.meta,
    )?)?;
    let dept_name = bundle
        .department(UPDATE_DEPT)
        .context("department")?
        .manifest
        .name;
    let update = lorkd_tools::delta::make(&bundle_bytes, &ck2, dept_name, UPDATE_VERSION, 0, &key)?;
    // A crafted but correctly signed header: the largest blob length a header may declare
    // (its package length is u32::MAX - 0), for the 32-bit arithmetic checks on the device.
    let crafted = {
        use ed25519_dalek::Signer;
        use lorkd_runtime::update::package::{FIELDS_LEN, HEADER_LEN, MAX_BLOB};
        let mut h = update[..HEADER_LEN].to_vec();
        h[16..20].copy_from_slice(&MAX_BLOB.to_le_bytes());
        let sig = key.sign(&h[..FIELDS_LEN]);
        h[FIELDS_LEN..].copy_from_slice(&sig.to_bytes());
        h
    };
    // The scores the new blob must give, computed on the host from the package itself
    // (`make` calibrates with its own defaults, so a repacked bundle would differ).
    let pkg_al = AlignedBytes::new(&update);
    let pkg = lorkd_runtime::update::Package::parse(pkg_al.as_slice())
        .map_err(|e| anyhow::anyhow!("package: {e:?}"))?;
    let new_dept =
        lorkd_runtime::format::Dept::parse_blob(pkg.blob(), bundle.manifest(), bundle.base_id())
            .map_err(|e| anyhow::anyhow!("blob: {e}"))?;
    engine
        .select_blob(new_dept)
        .map_err(|e| anyhow::anyhow!("select: {e}"))?;
    let engine2 = &mut engine;
    let mut updated = Vec::new();
    let mut tops2 = Vec::new();
    for img in &images {
        let mut logits = vec![0f32; classes[UPDATE_DEPT]];
        engine2
            .infer(img, &mut logits)
            .map_err(|e| anyhow::anyhow!("infer: {e}"))?;
        let top = lorkd_firmware::app::argmax(&logits);
        tops2.push(top);
        updated.extend_from_slice(&(top as u32).to_le_bytes());
        for k in 0..c {
            updated.extend_from_slice(&logits.get(k).copied().unwrap_or(0.0).to_le_bytes());
        }
    }

    // A correctly signed package (v3 of the same department) whose blob does not parse: what
    // a committed slot holding a bad blob looks like (the device must fall back from it).
    let bad_update = {
        use lorkd_runtime::update::package::{write_signed, PackageHeader};
        let mut blob = pkg.blob().to_vec();
        let mid = blob.len() / 2;
        blob[mid] ^= 0x5A;
        let h = PackageHeader::new(dept_name, UPDATE_VERSION + 1, 0, *bundle.base_id(), &blob)
            .map_err(|e| anyhow::anyhow!("header: {e}"))?;
        let mut out = vec![0u8; h.package_len() as usize];
        write_signed(&h, &blob, &SIGNING_KEY, &mut out).map_err(|e| anyhow::anyhow!("{e}"))?;
        out
    };
    // A department added in the field: the checkpoint grown by one department.
    let added = {
        let mut tensors = Vec::new();
        let mut meta = ck.meta.clone();
        meta.departments.push(lorkd_tools::checkpoint::DeptMeta {
            name: ADDED_NAME.into(),
            classes: (0..ADDED_CLASSES).map(|c| format!("a{c}")).collect(),
        });
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(17);
        for (name, view) in tensors_by_name(&st) {
            let mut shape = view.shape().to_vec();
            let mut data: Vec<f32> = view
                .data()
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect();
            if name.ends_with(".lora_A") || name.ends_with(".lora_B") {
                // The new slice: department 0's, mixed with fresh values (its own expert).
                let per = data.len() / shape[0];
                let new: Vec<f32> = data[..per]
                    .iter()
                    .map(|v| v * -0.8 + rng.gen_range(-0.05f32..0.05))
                    .collect();
                data.extend(new);
                shape[0] += 1;
            } else if name == "head.weight" || name == "head.bias" {
                let per = data.len() / shape[0];
                data.extend((0..ADDED_CLASSES * per).map(|_| rng.gen_range(-0.1f32..0.1)));
                shape[0] += ADDED_CLASSES;
            }
            tensors.push((name.to_string(), shape, data));
        }
        let heads = meta.departments.len() - 1;
        let feat = tensors
            .iter()
            .find(|(n, _, _)| n == "heads.0.weight")
            .map(|(_, s, _)| s[1])
            .context("heads.0.weight")?;
        let w: Vec<f32> = (0..ADDED_CLASSES * feat)
            .map(|_| rng.gen_range(-0.3f32..0.3))
            .collect();
        let b: Vec<f32> = (0..ADDED_CLASSES)
            .map(|_| rng.gen_range(-0.3f32..0.3))
            .collect();
        tensors.push((
            format!("heads.{heads}.weight"),
            vec![ADDED_CLASSES, feat],
            w,
        ));
        tensors.push((format!("heads.{heads}.bias"), vec![ADDED_CLASSES], b));
        let ck3 = Checkpoint::from_bytes(&lorkd_tools::checkpoint::write_safetensors(
            &tensors, &meta,
        )?)?;
        lorkd_tools::delta::make(&bundle_bytes, &ck3, ADDED_NAME, 1, 0, &key)?
    };
    let added_pkg = lorkd_runtime::update::Package::parse(&added)
        .map_err(|e| anyhow::anyhow!("added package: {e:?}"))?;
    anyhow::ensure!(added_pkg.header.added_classes() == Some(ADDED_CLASSES as u16));
    let added_blob = AlignedBytes::new(added_pkg.blob());
    let added_dept = lorkd_runtime::format::Dept::parse_blob(
        added_blob.as_slice(),
        bundle.manifest(),
        bundle.base_id(),
    )
    .map_err(|e| anyhow::anyhow!("added blob: {e}"))?;
    engine
        .select_blob(added_dept)
        .map_err(|e| anyhow::anyhow!("select: {e}"))?;
    let mut added_expect = Vec::new();
    let mut tops3 = Vec::new();
    for img in &images {
        let mut logits = vec![0f32; ADDED_CLASSES];
        engine
            .infer(img, &mut logits)
            .map_err(|e| anyhow::anyhow!("infer: {e}"))?;
        let top = lorkd_firmware::app::argmax(&logits);
        tops3.push(top);
        added_expect.extend_from_slice(&(top as u32).to_le_bytes());
        for k in 0..c {
            added_expect.extend_from_slice(&logits.get(k).copied().unwrap_or(0.0).to_le_bytes());
        }
    }

    let mut f = vec![0u8; HEADER_LEN];
    let bundle_off = f.len();
    f.extend_from_slice(&bundle_bytes);
    while !f.len().is_multiple_of(16) {
        f.push(0);
    }
    let images_off = f.len();
    for img in &images {
        for v in img {
            f.extend_from_slice(&v.to_le_bytes());
        }
    }
    let expect_off = f.len();
    f.extend_from_slice(&expect);
    let updated_off = f.len();
    f.extend_from_slice(&updated);
    let update_off = f.len();
    f.extend_from_slice(&update);
    let crafted_off = f.len();
    f.extend_from_slice(&crafted);
    while !f.len().is_multiple_of(4) {
        f.push(0);
    }
    let bad_off = f.len();
    f.extend_from_slice(&bad_update);
    while !f.len().is_multiple_of(4) {
        f.push(0);
    }
    let added_off = f.len();
    f.extend_from_slice(&added);
    while !f.len().is_multiple_of(4) {
        f.push(0);
    }
    let added_expect_off = f.len();
    f.extend_from_slice(&added_expect);
    let hdr = [
        d,
        IMAGES,
        l,
        c,
        bundle_off,
        bundle_bytes.len(),
        images_off,
        expect_off,
        update_off,
        update.len(),
        UPDATE_DEPT,
        UPDATE_VERSION as usize,
        updated_off,
        crafted_off,
        crafted.len(),
    ];
    f[..4].copy_from_slice(&MAGIC);
    for (i, v) in hdr.iter().enumerate() {
        f[4 + 4 * i..8 + 4 * i].copy_from_slice(&(*v as u32).to_le_bytes());
    }
    f[64..96].copy_from_slice(key.verifying_key().as_bytes());
    f[96..100].copy_from_slice(&(bad_off as u32).to_le_bytes());
    f[100..104].copy_from_slice(&(bad_update.len() as u32).to_le_bytes());
    for (i, v) in [added_off, added.len(), ADDED_CLASSES, added_expect_off]
        .into_iter()
        .enumerate()
    {
        f[104 + 4 * i..108 + 4 * i].copy_from_slice(&(v as u32).to_le_bytes());
    }
    let summary = format!(
        "bundle {} B ({} departments, classes {:?}, arena {} B), {IMAGES} images {size}x{size}, top-1 {:?}; update of department {UPDATE_DEPT} to v{UPDATE_VERSION}: {} B, top-1 after {:?}; added department `{ADDED_NAME}` ({ADDED_CLASSES} classes): {} B, top-1 {:?}",
        bundle_bytes.len(),
        d,
        classes,
        bundle.arena_bytes(Mode::Materialized),
        tops,
        update.len(),
        tops2,
        added.len(),
        tops3
    );
    Ok((f, summary))
}

/// A safetensors file's tensors in name order. `SafeTensors::tensors` lists them in its
/// internal `HashMap`'s order, which is seeded per map: the added department draws its fresh
/// values from one RNG stream in this loop, so that order decides the bytes.
pub fn tensors_by_name<'a>(
    st: &safetensors::SafeTensors<'a>,
) -> Vec<(String, safetensors::tensor::TensorView<'a>)> {
    let mut t = st.tensors();
    t.sort_by(|a, b| a.0.cmp(&b.0));
    t
}

/// The fixture key's public half as a `lorkd keygen` `.pub` file (what the QEMU board's
/// build reads as its vendor key, `LORKD_FW_PUBKEY`).
pub fn public_key_text() -> String {
    let key = ed25519_dalek::SigningKey::from_bytes(&SIGNING_KEY);
    lorkd_tools::keys::verifying_key_text(&key.verifying_key())
}
