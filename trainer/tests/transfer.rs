//! `transfer`: the downstream network starts as exactly the chosen expert (or the shared
//! backbone), trains on one task of a multi-department dataset, and `eval` scores it.
use lorkd_data::Split;
use lorkd_trainer::config::Department;
use lorkd_trainer::eks_conv::DeptSel;
use lorkd_trainer::testing::{cpu_control as ctl, Scratch};
use lorkd_trainer::train::eval::evaluate;
use lorkd_trainer::train::fit::{fit, FitConfig, Method};
use lorkd_trainer::train::transfer::{downstream_model, transfer, Init, TransferConfig};
use lorkd_trainer::{Arch, Checkpoint};
use tch::{Device, Kind, Tensor};

fn rel_err(a: &Tensor, b: &Tensor) -> f64 {
    (a - b).abs().max().double_value(&[]) / b.abs().max().double_value(&[]).max(1e-12)
}

#[test]
fn transfer_starts_from_the_expert_and_trains_a_new_task() {
    let seed = lorkd_trainer::testing::seeded("transfer");
    let s = Scratch::new("transfer");
    let source_data = "synthetic:departments=2,classes=2,size=16,per_class=8,seed=2";
    let mut fc = FitConfig::new(source_data, Method::Lorkd);
    fc.arch = Arch::ShuffleNetV2X0_5;
    fc.rank = 4;
    fc.lora_alpha = 4.0;
    fc.epochs = 1;
    fc.batch = 16;
    fc.seed = seed;
    let run = s.path().join("lorkd");
    fit(&fc, &run, &ctl()).unwrap();
    let src = Checkpoint::load(run.join("model.safetensors")).unwrap();
    let (_src_vs, src_model) = src.into_model(Device::Cpu).unwrap();

    // The downstream network reproduces the source's features exactly as initialised:
    // expert:xray = the xray expert, shared = W0 alone; scratch does not.
    let task = Department {
        name: "new".into(),
        classes: vec!["a".into(), "b".into(), "c".into()],
    };
    let xs = Tensor::randn([3, 3, 16, 16], (Kind::Float, Device::Cpu));
    let want_expert = src_model.forward_t(&xs, DeptSel::One(1), false);
    let want_shared = src_model.forward_t(&xs, DeptSel::Shared, false);
    assert!(
        rel_err(&want_expert, &want_shared) > 1e-4,
        "the expert must differ from W0 for this test to mean anything"
    );
    for (init, want) in [
        (Init::Expert("xray".into()), &want_expert),
        (Init::Shared, &want_shared),
    ] {
        let (cfg, _vs, m) = downstream_model(&src, &init, task.clone(), Device::Cpu).unwrap();
        assert_eq!((cfg.rank, cfg.departments.len()), (0, 1));
        let got = m.forward_t(&xs, DeptSel::Shared, false);
        let e = rel_err(&got, want);
        assert!(
            e < 1e-4,
            "{init}: features differ from the source's, rel err {e}"
        );
        assert_eq!(m.head_logits(&got, 0).size(), [3, 3]);
    }
    let (_, _vs, m) = downstream_model(&src, &Init::Scratch, task.clone(), Device::Cpu).unwrap();
    assert!(rel_err(&m.forward_t(&xs, DeptSel::Shared, false), &want_expert) > 1e-3);
    let e = downstream_model(
        &src,
        &Init::Expert("nope".into()),
        task.clone(),
        Device::Cpu,
    )
    .err()
    .unwrap()
    .to_string();
    assert!(e.contains("no department `nope`"), "{e}");

    // A downstream task with the ultrasound look and another deciding cue (department 4 of a
    // five-department spec), chosen with --task; eval scores that department only.
    let downstream = "synthetic:departments=5,classes=2,size=16,per_class=8,seed=9";
    for init in [
        Init::Expert("ultrasound".into()),
        Init::Shared,
        Init::Scratch,
    ] {
        let mut tc = TransferConfig::new(&run, init.clone(), downstream);
        tc.task = Some("ultrasound-2".into());
        tc.epochs = 1;
        tc.batch = 16;
        tc.lr = 1e-3;
        let dir = s.path().join(format!("transfer-{init}").replace(':', "-"));
        let out = transfer(&tc, &dir, &ctl()).unwrap();
        let m = out.last.unwrap();
        assert!(m.loss.is_finite() && (0.0..=1.0).contains(&m.val_mean));
        let r = evaluate(&dir, downstream, Split::Test, 32, &ctl()).unwrap();
        assert_eq!(r.departments.len(), 1);
        assert_eq!(r.departments[0].name, "ultrasound-2");
        assert_eq!(r.departments[0].images, 2 * 2);
    }
    // Without --task, a multi-department downstream dataset is refused with a clear message.
    let tc = TransferConfig::new(&run, Init::Shared, downstream);
    let e = transfer(&tc, &s.path().join("no-task"), &ctl())
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("--task"), "{e}");
}
