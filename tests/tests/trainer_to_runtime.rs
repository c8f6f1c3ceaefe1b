//! The deployment identity end to end: a `lorkd-train init --random-factors` model, packed by
//! `lorkd pack` (fold BN, fold the LoRA scaling into B, f32), run by the no_std runtime,
//! equals the trainer's fused expert in libtorch (`DeptSel::One(t)`, eval-mode BN) — and the
//! department deltas really change the outputs.

mod common;
use common::{scratch, seed, to_vec};
use lorkd_runtime::engine::{AlignedBytes, Engine};
use lorkd_runtime::format::{Bundle, Mode};
use lorkd_tools::checkpoint::Checkpoint as PackCheckpoint;
use lorkd_tools::pack::{pack, PackOptions};
use lorkd_trainer::cmd::init::init_model;
use lorkd_trainer::{Arch, Checkpoint, Config, DeptSel};
use tch::{Device, Kind, Tensor};

#[test]
fn runtime_f32_equals_trainer_fused_expert() {
    let seed = seed();
    let mut cfg = Config::numbered(Arch::ShuffleNetV2X0_5, 3, 3, 4);
    cfg.input_size = 32;
    cfg.rank = 4;
    let (vs, model) = init_model(&cfg, seed, true, Device::Cpu).unwrap();
    let dir = scratch("e2e", seed);
    let path = dir.join("model.safetensors");
    Checkpoint::from_var_store(&cfg, &vs).save(&path).unwrap();

    let ck = PackCheckpoint::load(&path).unwrap();
    let no_calibration = |_: &[u8], _: &[Vec<Vec<f32>>]| -> anyhow::Result<_> {
        unreachable!("f32 packs need no calibration")
    };
    let bytes = AlignedBytes::new(
        &pack(&ck, &PackOptions::default(), None, None, &no_calibration).unwrap(),
    );
    let bundle = Bundle::parse(bytes.as_slice()).unwrap();
    assert_eq!(bundle.department_count(), 3);

    tch::manual_seed(seed as i64);
    let n = 4;
    let xs = Tensor::randn([n, 3, 32, 32], (Kind::Float, Device::Cpu));
    for mode in [Mode::Materialized, Mode::Streaming] {
        let mut arena = AlignedBytes::zeroed(bundle.arena_bytes(mode));
        let mut engine = Engine::new(&bundle, arena.as_mut_slice(), mode).unwrap();
        for t in 0..3usize {
            let (want, shared) = tch::no_grad(|| {
                let f = model.forward_t(&xs, DeptSel::One(t as i64), false);
                let f0 = model.forward_t(&xs, DeptSel::Shared, false);
                (model.head_logits(&f, t), model.head_logits(&f0, t))
            });
            let scale = to_vec(&want.abs().max()).pop().unwrap().max(1.0);
            // The experts must matter, or this test proves nothing (DESIGN.md: collapsed networks).
            let moved = to_vec(&(&want - &shared).abs().max()).pop().unwrap();
            assert!(
                moved > 1e-3 * scale,
                "department {t}: deltas do not change the logits ({moved})"
            );
            engine.select(t).unwrap();
            let mut logits = [0f32; 4];
            for i in 0..n {
                let x = to_vec(&xs.get(i));
                assert_eq!(engine.infer(&x, &mut logits).unwrap(), 4);
                let w = to_vec(&want.get(i));
                let err = w
                    .iter()
                    .zip(&logits)
                    .map(|(a, b)| (a - b).abs())
                    .fold(0f32, f32::max);
                assert!(err < 1e-4 * scale, "{mode:?} department {t} image {i}: max |Δ| {err} (scale {scale}): {w:?} vs {logits:?}");
            }
        }
    }
    std::fs::remove_dir_all(&dir).ok();
}
