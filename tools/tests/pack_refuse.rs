//! Malformed checkpoints are refused with a message naming the tensor or key; the CLI
//! (`keygen`, `pack --sign`, `inspect --json`) works end to end.

use std::collections::HashMap;
use std::process::Command;

use lorkd_tools::checkpoint::{random_checkpoint, Checkpoint, RandomSpec};
use lorkd_tools::pack::{pack, PackOptions};
use safetensors::tensor::{Dtype, TensorView};
use safetensors::SafeTensors;

fn good() -> Vec<u8> {
    let spec = RandomSpec {
        arch: "shufflenet_v2_x0_5".into(),
        in_channels: 1,
        input_size: 32,
        rank: 2,
        classes: vec![2, 3],
        seed: 9,
    };
    random_checkpoint(&spec).unwrap()
}

/// Rewrites a checkpoint: `edit(name, shape, bytes)` returns the tensor to keep (or None);
/// `meta` replaces the metadata JSON.
fn rewrite(
    bytes: &[u8],
    edit: impl Fn(&str, Vec<usize>, Vec<u8>) -> Option<(String, Dtype, Vec<usize>, Vec<u8>)>,
    meta: impl Fn(String) -> Option<String>,
) -> Vec<u8> {
    let st = SafeTensors::deserialize(bytes).unwrap();
    let (_, h) = SafeTensors::read_metadata(bytes).unwrap();
    let json = h.metadata().as_ref().unwrap()["lorkd"].clone();
    let kept: Vec<(String, Dtype, Vec<usize>, Vec<u8>)> = st
        .tensors()
        .into_iter()
        .filter_map(|(n, v)| edit(&n, v.shape().to_vec(), v.data().to_vec()))
        .collect();
    let views: Vec<(String, TensorView<'_>)> = kept
        .iter()
        .map(|(n, d, s, b)| (n.clone(), TensorView::new(*d, s.clone(), b).unwrap()))
        .collect();
    let md = meta(json).map(|j| HashMap::from([("lorkd".to_string(), j)]));
    safetensors::serialize(views, md).unwrap()
}

fn err(bytes: &[u8]) -> String {
    let r = Checkpoint::from_bytes(bytes)
        .map_err(anyhow::Error::from)
        .and_then(|ck| {
            pack(
                &ck,
                &PackOptions::default(),
                None,
                None,
                &lorkd_tools::calibrate::activation_ranges,
            )
        });
    format!("{:#}", r.expect_err("malformed checkpoint was packed"))
}

#[test]
fn malformed_checkpoints_name_the_culprit() {
    let g = good();
    let same = |n: &str, s, b| Some((n.to_string(), Dtype::F32, s, b));
    assert!(Checkpoint::from_bytes(&g).is_ok());

    let e = err(&rewrite(
        &g,
        |n, s, b| {
            if n == "stage3.2.branch2.5.lora_B" {
                None
            } else {
                same(n, s, b)
            }
        },
        Some,
    ));
    assert!(
        e.contains("stage3.2.branch2.5.lora_B") && e.contains("missing"),
        "{e}"
    );

    let e = err(&rewrite(
        &g,
        |n, s, b| {
            if n == "conv5.1.running_var" {
                Some((n.into(), Dtype::F32, vec![s[0] / 2, 2], b))
            } else {
                same(n, s, b)
            }
        },
        Some,
    ));
    assert!(
        e.contains("conv5.1.running_var") && e.contains("shape"),
        "{e}"
    );

    let e = err(&rewrite(
        &g,
        |n, s, b| {
            if n == "heads.1.weight" {
                Some((n.into(), Dtype::I32, s, b))
            } else {
                same(n, s, b)
            }
        },
        Some,
    ));
    assert!(e.contains("heads.1.weight") && e.contains("dtype"), "{e}");

    let e = err(&rewrite(
        &g,
        |n, s, mut b| {
            if n == "stage2.0.branch1.0.weight" {
                b[0..4].copy_from_slice(&f32::NAN.to_le_bytes());
            }
            same(n, s, b)
        },
        Some,
    ));
    assert!(
        e.contains("stage2.0.branch1.0.weight") && e.contains("non-finite"),
        "{e}"
    );

    let e = err(&rewrite(&g, same, |_| None));
    assert!(e.contains("`lorkd`") && e.contains("missing"), "{e}");
    let e = err(&rewrite(&g, same, |j| {
        Some(j.replace("shufflenet_v2_x0_5", "resnet18"))
    }));
    assert!(e.contains("arch") && e.contains("resnet18"), "{e}");
    let e = err(&rewrite(&g, same, |j| {
        Some(j.replace("\"rank\":2", "\"rank\":\"two\""))
    }));
    assert!(e.contains("lorkd") && e.contains("rank"), "{e}");
    // rank in the metadata disagrees with the factors' shapes.
    let e = err(&rewrite(&g, same, |j| {
        Some(j.replace("\"rank\":2", "\"rank\":3"))
    }));
    assert!(e.contains("conv1.0.lora_A") && e.contains("shape"), "{e}");
    assert!(err(b"not a checkpoint").contains("safetensors"));
}

#[test]
fn cli_keygen_pack_sign_inspect() {
    let dir = std::env::temp_dir().join(format!("lorkd-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let ck = dir.join("m.safetensors");
    std::fs::write(&ck, good()).unwrap();
    let lorkd = env!("CARGO_BIN_EXE_lorkd");
    let run = |args: &[&str]| {
        let o = Command::new(lorkd)
            .args(args)
            .current_dir(&dir)
            .output()
            .unwrap();
        assert!(
            o.status.success(),
            "lorkd {args:?}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        String::from_utf8(o.stdout).unwrap()
    };
    run(&["keygen", "-o", "k"]);
    run(&[
        "pack",
        "m.safetensors",
        "-o",
        "m.lorkd",
        "--weights",
        "int8",
        "--delta",
        "int8",
        "--calib-count",
        "2",
        "--sign",
        "k",
    ]);
    let j: serde_json::Value =
        serde_json::from_str(&run(&["inspect", "m.lorkd", "--json", "--pubkey", "k.pub"])).unwrap();
    assert_eq!(j["signature"], "valid");
    assert_eq!(j["precisions"]["weights"], "int8");
    assert_eq!(j["precisions"]["delta"], "int8");
    assert_eq!(j["departments"].as_array().unwrap().len(), 2);
    assert!(run(&["inspect", "m.lorkd"]).contains("base_id"));
    // A corrupted bundle is refused by inspect with the failing check's name.
    let mut b = std::fs::read(dir.join("m.lorkd")).unwrap();
    b[300] ^= 1;
    std::fs::write(dir.join("bad.lorkd"), b).unwrap();
    let o = Command::new(lorkd)
        .args(["inspect", "bad.lorkd"])
        .current_dir(&dir)
        .output()
        .unwrap();
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("SHA-256"));
    std::fs::remove_dir_all(&dir).unwrap();
}
