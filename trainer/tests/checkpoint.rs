//! Checkpoint format: torchvision names, bit-exact round trip, errors naming the culprit,
//! `init --random-factors` gives a non-collapsed network whose experts matter, and exact
//! parameter counts against built models.
use lorkd_trainer::checkpoint::{Checkpoint, CheckpointError};
use lorkd_trainer::cmd::init::{init_model, parse_class_names};
use lorkd_trainer::eks_conv::max_rel_err;
use lorkd_trainer::params::shufflenet_report;
use lorkd_trainer::testing::seeded;
use lorkd_trainer::{Arch, Config, DeptSel, ResNet, ResNetArch, ShuffleNetLoRKD};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use tch::{nn, Device, Kind, Tensor};

/// libtorch's RNG is process-wide: tests of this binary take turns so a seed replays exactly.
static RNG_LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn lock() -> std::sync::MutexGuard<'static, ()> {
    RNG_LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

fn small_config() -> Config {
    let mut cfg = Config::numbered(Arch::ShuffleNetV2X0_5, 1, 3, 4);
    cfg.departments[1].classes.push("extra".into());
    cfg.rank = 2;
    cfg.input_size = 32;
    cfg
}

fn numel(vs: &nn::VarStore, pred: impl Fn(&str) -> bool) -> i64 {
    vs.variables()
        .iter()
        .filter(|(k, v)| pred(k) && v.requires_grad())
        .map(|(_, v)| v.numel() as i64)
        .sum()
}

#[test]
fn param_counts_match_built_models() {
    let _g = lock();
    for arch in Arch::ALL {
        for (t, r) in [(11, 8), (3, 4)] {
            let mut cfg = Config::numbered(arch, 3, t, 7);
            cfg.rank = r;
            let vs = nn::VarStore::new(Device::Cpu);
            let _m = ShuffleNetLoRKD::new(&vs.root(), &cfg);
            let rep = shufflenet_report(arch, 3, t as i64, r, 224);
            let lora = numel(&vs, |k| k.contains(".lora_"));
            let heads = numel(&vs, |k| k.starts_with("heads.") || k.starts_with("head."));
            let backbone = numel(&vs, |_| true) - lora - heads;
            assert_eq!(backbone, rep.backbone_params, "{arch}");
            assert_eq!(lora, rep.lora_params, "{arch} T={t} r={r}");
            // T heads of 7 classes plus the unified head of 7·T classes.
            let fd = arch.stage_out_channels()[4];
            assert_eq!(heads, 2 * t as i64 * (fd * 7 + 7));
        }
    }
    // torchvision totals with the 1000-class fc: resnet18 11,689,512, resnet50 25,557,032.
    for (arch, want) in [
        (ResNetArch::ResNet18, 11_689_512),
        (ResNetArch::ResNet50, 25_557_032),
    ] {
        let vs = nn::VarStore::new(Device::Cpu);
        let _m = ResNet::new(&vs.root(), arch, 3, 1000, 1e-5);
        assert_eq!(numel(&vs, |_| true), want, "{arch}");
    }
}

#[test]
fn torchvision_names_and_factor_shapes() {
    let _g = lock();
    let cfg = small_config();
    let vs = nn::VarStore::new(Device::Cpu);
    let _m = ShuffleNetLoRKD::new(&vs.root(), &cfg);
    let v = vs.variables();
    let shape = |k: &str| v.get(k).unwrap_or_else(|| panic!("missing {k}")).size();
    assert_eq!(shape("conv1.0.weight"), [24, 1, 3, 3]);
    for s in ["weight", "bias", "running_mean", "running_var"] {
        assert_eq!(shape(&format!("conv1.1.{s}")), [24]);
    }
    assert_eq!(shape("stage2.0.branch1.0.weight"), [24, 1, 3, 3]); // depthwise: no factors
    assert!(!v.contains_key("stage2.0.branch1.0.lora_A"));
    assert_eq!(shape("stage2.0.branch1.2.weight"), [24, 24, 1, 1]);
    assert_eq!(shape("stage3.1.branch2.0.weight"), [48, 48, 1, 1]);
    assert_eq!(shape("stage3.1.branch2.3.weight"), [48, 1, 3, 3]);
    assert_eq!(shape("stage4.3.branch2.6.running_var"), [96]);
    assert_eq!(shape("conv5.0.weight"), [1024, 192, 1, 1]);
    // lora_A [T, r·k, Cin·k], lora_B [T, Cout·k, r·k].
    assert_eq!(shape("conv1.0.lora_A"), [3, 6, 3]);
    assert_eq!(shape("conv1.0.lora_B"), [3, 72, 6]);
    assert_eq!(shape("stage2.0.branch2.0.lora_A"), [3, 2, 24]);
    assert_eq!(shape("stage2.0.branch2.0.lora_B"), [3, 24, 2]);
    assert_eq!(shape("heads.1.weight"), [5, 1024]);
    assert_eq!(shape("heads.2.bias"), [4]);
    assert_eq!(shape("head.weight"), [13, 1024]);
    assert!(
        !v.contains_key("stage2.1.branch1.0.weight"),
        "stride-1 blocks have no branch1"
    );
}

fn bits(t: &Tensor) -> Vec<u32> {
    Vec::<f32>::try_from(&t.reshape([-1]))
        .unwrap()
        .iter()
        .map(|x| x.to_bits())
        .collect()
}

#[test]
fn round_trip_is_bit_exact() {
    let _g = lock();
    let seed = seeded("round_trip_is_bit_exact");
    let cfg = small_config();
    let (vs, _) = init_model(&cfg, seed, true, Device::Cpu).unwrap();
    let ck = Checkpoint::from_var_store(&cfg, &vs);
    let bytes = ck.to_bytes().unwrap();
    let back = Checkpoint::from_bytes(&bytes).unwrap();
    assert_eq!(back.config, cfg);
    assert_eq!(back.tensors.len(), vs.variables().len());
    for (k, v) in vs.variables() {
        assert_eq!(bits(&back.tensors[&k]), bits(&v), "{k}");
    }
    // Load into a fresh model and write again: identical bytes.
    let (vs2, _) = back.into_model(Device::Cpu).unwrap();
    assert!(Checkpoint::from_var_store(&cfg, &vs2).to_bytes().unwrap() == bytes);
    // Through the file system too.
    let path = std::env::temp_dir().join(format!("lorkd-rt-{seed}.safetensors"));
    ck.save(&path).unwrap();
    assert!(std::fs::read(&path).unwrap() == bytes);
    let _ = std::fs::remove_file(&path);
}

#[test]
fn errors_name_the_tensor_or_key() {
    let _g = lock();
    let cfg = small_config();
    let (vs, _) = init_model(&cfg, 1, false, Device::Cpu).unwrap();
    let ck = Checkpoint::from_var_store(&cfg, &vs);

    let mut missing = Checkpoint::from_bytes(&ck.to_bytes().unwrap()).unwrap();
    missing.tensors.remove("stage3.1.branch2.0.lora_B");
    let e = missing.into_model(Device::Cpu).unwrap_err();
    assert!(
        matches!(&e, CheckpointError::MissingTensor(n) if n == "stage3.1.branch2.0.lora_B"),
        "{e}"
    );
    assert!(e.to_string().contains("stage3.1.branch2.0.lora_B"));

    let mut shaped = Checkpoint::from_bytes(&ck.to_bytes().unwrap()).unwrap();
    shaped.tensors.insert(
        "conv5.1.running_var".into(),
        Tensor::ones([7], (Kind::Float, Device::Cpu)),
    );
    let e = shaped.into_model(Device::Cpu).unwrap_err();
    assert!(e.to_string().contains("conv5.1.running_var"), "{e}");

    let mut extra = Checkpoint::from_bytes(&ck.to_bytes().unwrap()).unwrap();
    extra.tensors.insert(
        "fc.weight".into(),
        Tensor::ones([2, 2], (Kind::Float, Device::Cpu)),
    );
    assert!(extra
        .into_model(Device::Cpu)
        .unwrap_err()
        .to_string()
        .contains("fc.weight"));

    // Bad metadata: wrong arch, missing key, inconsistent mean length, missing metadata.
    let mut bad = cfg.clone();
    bad.mean = vec![0.5, 0.5];
    let e = Checkpoint {
        config: bad,
        tensors: Default::default(),
    }
    .to_bytes()
    .unwrap();
    assert!(Checkpoint::from_bytes(&e)
        .unwrap_err()
        .to_string()
        .contains("lorkd"));
    let raw = ck.to_bytes().unwrap();
    let text = String::from_utf8_lossy(&raw[..200.min(raw.len())]).to_string();
    assert!(text.contains("__metadata__"));
    let mut patched = raw.clone();
    let at = raw
        .windows(18)
        .position(|w| w == b"shufflenet_v2_x0_5")
        .unwrap();
    patched[at + 12] = b'9'; // same length: `shufflenet_v9_x0_5`
    let e = Checkpoint::from_bytes(&patched).unwrap_err();
    assert!(matches!(e, CheckpointError::BadMetadata(_)), "{e}");
    let no_meta = safetensors::serialize(
        Vec::<(String, safetensors::tensor::TensorView)>::new(),
        None,
    )
    .unwrap();
    assert!(matches!(
        Checkpoint::from_bytes(&no_meta).unwrap_err(),
        CheckpointError::MissingMetadata
    ));
}

#[test]
fn garbage_bytes_give_errors_not_panics() {
    let _g = lock();
    let seed = seeded("garbage_bytes_give_errors_not_panics");
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let cfg = small_config();
    let (vs, _) = init_model(&cfg, 2, false, Device::Cpu).unwrap();
    let good = Checkpoint::from_var_store(&cfg, &vs).to_bytes().unwrap();
    for len in [0, 1, 7, 8, 9, 100, good.len() - 1] {
        assert!(
            Checkpoint::from_bytes(&good[..len]).is_err(),
            "truncated to {len}"
        );
    }
    for _ in 0..200 {
        let mut b = good.clone();
        let header = 8 + u64::from_le_bytes(good[..8].try_into().unwrap()) as usize;
        for _ in 0..rng.gen_range(1..4) {
            let i = rng.gen_range(0..header);
            b[i] = rng.gen();
        }
        // Must return (Ok or Err), never panic.
        let _ = Checkpoint::from_bytes(&b).and_then(|c| c.into_model(Device::Cpu).map(|_| ()));
    }
}

#[test]
fn random_factors_init_is_not_collapsed_and_experts_matter() {
    let _g = lock();
    let seed = seeded("random_factors_init_is_not_collapsed_and_experts_matter");
    let cfg = small_config();
    let (vs, model) = init_model(&cfg, seed, true, Device::Cpu).unwrap();
    let b = &vs.variables()["stage3.2.branch2.5.lora_B"];
    assert!(
        b.abs().max().double_value(&[]) > 0.0,
        "lora_B must be non-zero"
    );
    assert!(
        vs.variables()["stage4.0.branch2.1.running_var"]
            .std(true)
            .double_value(&[])
            > 0.0
    );
    let xs = Tensor::randn([4, 1, 32, 32], (Kind::Float, Device::Cpu));
    let shared = model.forward_t(&xs, DeptSel::Shared, false);
    assert!(
        shared.std(true).double_value(&[]) > 0.05,
        "eval-mode features collapsed"
    );
    let f0 = model.forward_t(&xs, DeptSel::One(0), false);
    let f2 = model.forward_t(&xs, DeptSel::One(2), false);
    assert!(
        max_rel_err(&f0, &f2) > 1e-3,
        "departments give the same features"
    );
    assert!(max_rel_err(&f0, &shared) > 1e-3);
    // Same seed, same checkpoint.
    let (vs2, _) = init_model(&cfg, seed, true, Device::Cpu).unwrap();
    let (v1, v2) = (vs.variables(), vs2.variables());
    for (k, v) in &v1 {
        assert!(
            bits(v) == bits(&v2[k]),
            "{k} differs between two inits with seed {seed}"
        );
    }
}

#[test]
fn class_names_file_formats() {
    let _g = lock();
    let j = parse_class_names(r#"[{"name": "lung", "classes": ["normal", "nodule"]}]"#).unwrap();
    assert_eq!(j[0].name, "lung");
    let t = parse_class_names("lung: normal, nodule\n\nbrain: a,b,c\n").unwrap();
    assert_eq!(t.len(), 2);
    assert_eq!(t[1].classes, ["a", "b", "c"]);
    assert!(parse_class_names("no colon here").is_err());
}
