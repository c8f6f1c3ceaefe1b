//! The int8 bundle on a TRAINED model (int8 shared weights and deltas, activations calibrated
//! per department on 128 training images, `lorkd pack`'s default) against the float path (the
//! f32 bundle through the same runtime, which `trainer_to_runtime.rs` ties to libtorch), top-1
//! on the held-out images (validation + test splits, every department, both switching modes).
//!
//! Asserted, in both modes: at least 3 of the 4 departments learnt (float top-1 ≥ 0.5, chance
//! 0.33); int8 top-1 == float top-1 on ≥ 98 % of the learnt departments' held-out images
//! (pooled); a department that did not learn still agrees on ≥ 85 % of its images.
//!
//! Why the split: the model is the demo's (data, ShuffleNetV2 0.5x, rank 8, lr 0.01, seed 0)
//! trained for 12 epochs, and libtorch's CPU kernels differ per instruction set, so the
//! training trajectory depends on the machine. On an AVX-512 machine ultrasound reached float
//! top-1 0.67 and the whole model agreed on 595/600 = 99.2 % (materialized), 594/600 streaming.
//! On an AVX2-only machine ultrasound stays at 0.45 (0.47 at 20 epochs): its logits are
//! near-ties of magnitude ~0.2 (margins of a few hundredths, the size of the int8 error after
//! ~50 layers) and flip on 137/150 = 91.3 % agreement, while the learnt departments agree on
//! 448/450 = 99.6 %. A guessing department says nothing about quantisation; the learnt ones
//! carry the ≥ 98 % claim. Disagreements are printed with the float margin.

mod common;
use common::{ctl, scratch};
use lorkd_data::{Dataset, Split, Transform};
use lorkd_runtime::engine::{AlignedBytes, Engine};
use lorkd_runtime::format::{Bundle, DeltaDType, Mode, Precision};
use lorkd_tools::checkpoint::Checkpoint as PackCheckpoint;
use lorkd_tools::pack::{dataset_images, pack, PackOptions};
use lorkd_trainer::train::fit::{fit, FitConfig, Method};
use lorkd_trainer::Arch;

const DATA: &str = "synthetic:departments=4,classes=3,size=32,per_class=100,seed=0";

/// Top-1 and the margin between the two largest logits.
fn top1(engine: &mut Engine<'_, '_>, x: &[f32]) -> (usize, f32, Vec<f32>) {
    let mut logits = [0f32; 3];
    let n = engine.infer(x, &mut logits).unwrap();
    let best = (0..n).fold(0, |b, j| if logits[j] > logits[b] { j } else { b });
    let second = (0..n)
        .filter(|&j| j != best)
        .map(|j| logits[j])
        .fold(f32::NEG_INFINITY, f32::max);
    (best, logits[best] - second, logits.to_vec())
}

#[test]
fn int8_bundle_agrees_with_float_on_a_trained_model() {
    let dir = scratch("int8-trained", 0);
    let mut fc = FitConfig::new(DATA, Method::Lorkd);
    fc.arch = Arch::ShuffleNetV2X0_5;
    fc.epochs = 12;
    fc.batch = 32;
    fc.lr = 0.01;
    fc.rank = 8;
    fc.lora_alpha = 8.0;
    fc.seed = 0;
    fit(&fc, &dir, &ctl()).unwrap();

    let ck = PackCheckpoint::load(dir.join("model.safetensors")).unwrap();
    let cal = |b: &[u8], imgs: &[Vec<Vec<f32>>]| lorkd_tools::calibrate::activation_ranges(b, imgs);
    let f = PackOptions {
        weights: Precision::F32,
        delta: DeltaDType::F32,
        ..PackOptions::default()
    };
    let q = PackOptions {
        weights: Precision::Int8,
        delta: DeltaDType::I8,
        ..PackOptions::default()
    };
    let images = dataset_images(&ck, DATA, q.calib_count).unwrap();
    let fb = AlignedBytes::new(&pack(&ck, &f, None, None, &cal).unwrap());
    let qb = AlignedBytes::new(&pack(&ck, &q, None, Some(images), &cal).unwrap());
    let (fb, qb) = (
        Bundle::parse(fb.as_slice()).unwrap(),
        Bundle::parse(qb.as_slice()).unwrap(),
    );
    let spec = fb.manifest().input;
    let t = Transform {
        size: spec.size as u32,
        channels: spec.channels as usize,
        mean: spec.mean,
        std: spec.std,
    };
    let ds = Dataset::open_str(DATA).unwrap();
    for mode in [Mode::Materialized, Mode::Streaming] {
        let mut fa = AlignedBytes::zeroed(fb.arena_bytes(mode));
        let mut qa = AlignedBytes::zeroed(qb.arena_bytes(mode));
        let mut fe = Engine::new(&fb, fa.as_mut_slice(), mode).unwrap();
        let mut qe = Engine::new(&qb, qa.as_mut_slice(), mode).unwrap();
        let (mut agree, mut total, mut learnt) = (0usize, 0usize, 0usize);
        for d in 0..ds.departments().len() {
            fe.select(d).unwrap();
            qe.select(d).unwrap();
            let (mut a_d, mut n_d, mut correct) = (0usize, 0usize, 0usize);
            for split in [Split::Val, Split::Test] {
                for i in ds.indices_of(split, d) {
                    let s = ds.sample(split, i, &t, false).unwrap();
                    let (pf, margin, lf) = top1(&mut fe, &lorkd_data::flat(&s.image));
                    let (pq, _, lq) = top1(&mut qe, &lorkd_data::flat(&s.image));
                    if pf != pq {
                        println!("  {mode:?} dept {d} image {i}: float {lf:?} (margin {margin:.4}), int8 {lq:?}");
                    }
                    a_d += usize::from(pf == pq);
                    correct += usize::from(pf == s.class);
                    n_d += 1;
                }
            }
            let acc = correct as f64 / n_d as f64;
            println!(
                "{mode:?} {}: float top-1 {acc:.3}; int8 top-1 == float top-1 on {a_d}/{n_d}",
                ds.departments()[d].name
            );
            if acc >= 0.5 {
                agree += a_d;
                total += n_d;
                learnt += 1;
            } else {
                assert!(
                    a_d * 100 >= 85 * n_d,
                    "{mode:?} {}: not learnt (float top-1 {acc:.3}), and int8 agrees on only {a_d}/{n_d} (< 85 %)",
                    ds.departments()[d].name
                );
            }
        }
        let n_depts = ds.departments().len();
        assert!(
            learnt + 1 >= n_depts,
            "{mode:?}: only {learnt}/{n_depts} departments learnt (float top-1 >= 0.5): the model is not trained"
        );
        println!(
            "{mode:?}: learnt departments ({learnt}/{n_depts}): agreement {agree}/{total} = {:.2} %",
            100.0 * agree as f64 / total as f64
        );
        assert!(
            agree * 100 >= 98 * total,
            "{mode:?}: int8 agrees with float on {agree}/{total} held-out images of the learnt departments (< 98 %)"
        );
    }
    std::fs::remove_dir_all(&dir).ok();
}
