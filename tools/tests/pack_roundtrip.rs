//! pack → parse → inspect round trips on random checkpoints, and the fold identity: the
//! engine running the folded bundle equals an unfused NCHW reference written from
//! torchvision's ShuffleNetV2 forward (conv with `W0 + s·reshape(B·A)`, then BN).

use lorkd_runtime::engine::AlignedBytes;
use lorkd_runtime::engine::Engine;
use lorkd_runtime::format::{Bundle, DeltaDType, Mode, Precision};
use lorkd_tools::checkpoint::{random_checkpoint, Checkpoint, RandomSpec};
use lorkd_tools::pack::{pack, synthetic_images, PackOptions};

fn seed() -> u64 {
    let s = std::env::var("LORKD_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(rand::random);
    println!("seed {s}");
    s
}

fn ckpt(seed: u64, size: usize, classes: Vec<usize>, rank: usize) -> Checkpoint {
    let spec = RandomSpec {
        arch: "shufflenet_v2_x0_5".into(),
        in_channels: 3,
        input_size: size,
        rank,
        classes,
        seed,
    };
    Checkpoint::from_bytes(&random_checkpoint(&spec).unwrap()).unwrap()
}

// ---------------------------------------------------------------------------------------
// Unfused NCHW reference (torchvision's forward).

struct T {
    c: usize,
    h: usize,
    w: usize,
    d: Vec<f32>,
}

#[allow(clippy::too_many_arguments)]
fn conv(x: &T, w: &[f32], cout: usize, k: usize, s: usize, p: usize, groups: usize) -> T {
    let (ho, wo) = ((x.h + 2 * p - k) / s + 1, (x.w + 2 * p - k) / s + 1);
    let cin_g = x.c / groups;
    let cout_g = cout / groups;
    let mut d = vec![0f32; cout * ho * wo];
    for o in 0..cout {
        let g = o / cout_g;
        for oy in 0..ho {
            for ox in 0..wo {
                let mut acc = 0f64;
                for ci in 0..cin_g {
                    let c = g * cin_g + ci;
                    for ky in 0..k {
                        for kx in 0..k {
                            let (iy, ix) = (
                                (oy * s + ky) as isize - p as isize,
                                (ox * s + kx) as isize - p as isize,
                            );
                            if iy < 0 || ix < 0 || iy >= x.h as isize || ix >= x.w as isize {
                                continue;
                            }
                            acc += w[((o * cin_g + ci) * k + ky) * k + kx] as f64
                                * x.d[(c * x.h + iy as usize) * x.w + ix as usize] as f64;
                        }
                    }
                }
                d[(o * ho + oy) * wo + ox] = acc as f32;
            }
        }
    }
    T {
        c: cout,
        h: ho,
        w: wo,
        d,
    }
}

struct Ref<'a> {
    ck: &'a Checkpoint,
    /// Head of this department.
    dept: usize,
    /// Backbone factors of this department.
    delta: usize,
}

impl Ref<'_> {
    /// conv (+ department delta for ungrouped convs) → BN → optional ReLU.
    #[allow(clippy::too_many_arguments)]
    fn cbr(
        &self,
        x: &T,
        conv_name: &str,
        bn: &str,
        cout: usize,
        k: usize,
        s: usize,
        dw: bool,
        relu: bool,
    ) -> T {
        let ck = self.ck;
        let (cin, groups) = if dw { (1, x.c) } else { (x.c, 1) };
        let mut w = ck
            .tensor(&format!("{conv_name}.weight"), &[cout, cin, k, k])
            .unwrap()
            .to_vec();
        if !dw {
            let (r, t) = (ck.meta.rank, ck.meta.departments.len());
            let (rk, ckk, ok) = (r * k, x.c * k, cout * k);
            let a = &ck
                .tensor(&format!("{conv_name}.lora_A"), &[t, rk, ckk])
                .unwrap()[self.delta * rk * ckk..][..rk * ckk];
            let b = &ck
                .tensor(&format!("{conv_name}.lora_B"), &[t, ok, rk])
                .unwrap()[self.delta * ok * rk..][..ok * rk];
            use ndarray::ArrayView2 as V;
            let w0 = V::from_shape((ok, ckk), &w[..]).unwrap();
            let a = V::from_shape((rk, ckk), a).unwrap();
            let b = V::from_shape((ok, rk), b).unwrap();
            let merged = lorkd_tools::fold::merge_delta(w0, a, b, ck.scaling());
            w = lorkd_data::into_flat(merged);
        }
        let mut y = conv(x, &w, cout, k, s, k / 2, groups);
        let bnt = |n: &str| ck.tensor(&format!("{bn}.{n}"), &[cout]).unwrap();
        let (g, be, mu, var) = (
            bnt("weight"),
            bnt("bias"),
            bnt("running_mean"),
            bnt("running_var"),
        );
        let hw = y.h * y.w;
        for c in 0..cout {
            let inv = 1.0 / (var[c] as f64 + ck.meta.bn_eps).sqrt();
            for v in &mut y.d[c * hw..(c + 1) * hw] {
                let z = (*v as f64 - mu[c] as f64) * inv * g[c] as f64 + be[c] as f64;
                *v = if relu { z.max(0.0) as f32 } else { z as f32 };
            }
        }
        y
    }

    fn unit(&self, x: &T, p: &str, oup: usize, stride: usize) -> T {
        let bf = oup / 2;
        let hw = x.h * x.w;
        let (x1, x2) = if stride == 1 {
            let a = T {
                c: bf,
                h: x.h,
                w: x.w,
                d: x.d[..bf * hw].to_vec(),
            };
            let b = T {
                c: bf,
                h: x.h,
                w: x.w,
                d: x.d[bf * hw..].to_vec(),
            };
            (a, b)
        } else {
            let d = self.cbr(
                x,
                &format!("{p}.branch1.0"),
                &format!("{p}.branch1.1"),
                x.c,
                3,
                stride,
                true,
                false,
            );
            let a = self.cbr(
                &d,
                &format!("{p}.branch1.2"),
                &format!("{p}.branch1.3"),
                bf,
                1,
                1,
                false,
                true,
            );
            (
                a,
                T {
                    c: x.c,
                    h: x.h,
                    w: x.w,
                    d: x.d.clone(),
                },
            )
        };
        let y = self.cbr(
            &x2,
            &format!("{p}.branch2.0"),
            &format!("{p}.branch2.1"),
            bf,
            1,
            1,
            false,
            true,
        );
        let y = self.cbr(
            &y,
            &format!("{p}.branch2.3"),
            &format!("{p}.branch2.4"),
            bf,
            3,
            stride,
            true,
            false,
        );
        let y = self.cbr(
            &y,
            &format!("{p}.branch2.5"),
            &format!("{p}.branch2.6"),
            bf,
            1,
            1,
            false,
            true,
        );
        // cat then channel_shuffle(groups = 2): out channel 2i = cat[i], 2i+1 = cat[bf + i].
        let hw = y.h * y.w;
        let mut d = vec![0f32; 2 * bf * hw];
        for i in 0..bf {
            d[2 * i * hw..(2 * i + 1) * hw].copy_from_slice(&x1.d[i * hw..(i + 1) * hw]);
            d[(2 * i + 1) * hw..(2 * i + 2) * hw].copy_from_slice(&y.d[i * hw..(i + 1) * hw]);
        }
        T {
            c: 2 * bf,
            h: y.h,
            w: y.w,
            d,
        }
    }

    fn forward(&self, img: &[f32]) -> Vec<f32> {
        let m = &self.ck.meta;
        let ch = [24, 48, 96, 192, 1024];
        let x = T {
            c: m.in_channels,
            h: m.input_size,
            w: m.input_size,
            d: img.to_vec(),
        };
        let x = self.cbr(&x, "conv1.0", "conv1.1", ch[0], 3, 2, false, true);
        // max pool 3x3 / 2, pad 1
        let (ho, wo) = ((x.h - 1) / 2 + 1, (x.w - 1) / 2 + 1);
        let mut d = vec![f32::MIN; x.c * ho * wo];
        for c in 0..x.c {
            for oy in 0..ho {
                for ox in 0..wo {
                    for ky in 0..3 {
                        for kx in 0..3 {
                            let (iy, ix) = ((2 * oy + ky) as isize - 1, (2 * ox + kx) as isize - 1);
                            if iy >= 0 && ix >= 0 && (iy as usize) < x.h && (ix as usize) < x.w {
                                let v = x.d[(c * x.h + iy as usize) * x.w + ix as usize];
                                let o = &mut d[(c * ho + oy) * wo + ox];
                                *o = o.max(v);
                            }
                        }
                    }
                }
            }
        }
        let mut x = T {
            c: x.c,
            h: ho,
            w: wo,
            d,
        };
        for (s, &oup) in ch[1..4].iter().enumerate() {
            for i in 0..[4, 8, 4][s] {
                x = self.unit(
                    &x,
                    &format!("stage{}.{i}", s + 2),
                    oup,
                    if i == 0 { 2 } else { 1 },
                );
            }
        }
        let x = self.cbr(&x, "conv5.0", "conv5.1", ch[4], 1, 1, false, true);
        let hw = x.h * x.w;
        let f: Vec<f64> = (0..x.c)
            .map(|c| {
                x.d[c * hw..(c + 1) * hw]
                    .iter()
                    .map(|&v| v as f64)
                    .sum::<f64>()
                    / hw as f64
            })
            .collect();
        let n = m.departments[self.dept].classes.len();
        let w = self
            .ck
            .tensor(&format!("heads.{}.weight", self.dept), &[n, x.c])
            .unwrap();
        let b = self
            .ck
            .tensor(&format!("heads.{}.bias", self.dept), &[n])
            .unwrap();
        (0..n)
            .map(|j| {
                (b[j] as f64 + (0..x.c).map(|c| w[j * x.c + c] as f64 * f[c]).sum::<f64>()) as f32
            })
            .collect()
    }
}

/// The folded f32 bundle (BN and `s` folded into `W0`, bias and the rows of `B`) computes
/// the unfused model: conv(W0 + s·B·A) → BN → ReLU, per department, in both modes.
#[test]
fn folded_bundle_equals_unfused_reference() {
    let s = seed();
    let ck = ckpt(s, 64, vec![3, 5], 4);
    let bytes = pack(
        &ck,
        &PackOptions::default(),
        None,
        None,
        &lorkd_tools::calibrate::activation_ranges,
    )
    .unwrap();
    let al = AlignedBytes::new(&bytes);
    let b = Bundle::parse(al.as_slice()).unwrap();
    let imgs = synthetic_images(&ck, 2, s);
    for mode in [Mode::Materialized, Mode::Streaming] {
        let mut arena = AlignedBytes::zeroed(b.arena_bytes(mode));
        let mut e = Engine::new(&b, arena.as_mut_slice(), mode).unwrap();
        for (d, dept_imgs) in imgs.iter().enumerate() {
            e.select(d).unwrap();
            let r = Ref {
                ck: &ck,
                dept: d,
                delta: d,
            };
            let img = &dept_imgs[0];
            let want = r.forward(img);
            let mut got = vec![0f32; want.len()];
            e.infer(img, &mut got).unwrap();
            let scale = want.iter().fold(0f32, |a, v| a.max(v.abs())).max(1e-3);
            let err = want
                .iter()
                .zip(&got)
                .fold(0f32, |a, (x, y)| a.max((x - y).abs()));
            println!("{mode:?} dept {d}: logits {want:?} vs {got:?}, max err {err}");
            assert!(scale > 1e-2, "collapsed network: logits {want:?}");
            assert!(
                err <= 1e-4 * scale.max(1.0),
                "max err {err} (scale {scale})"
            );
        }
    }
    // The department factors matter: dept 0's head on dept 1's backbone delta differs.
    let img = &imgs[0][0];
    let own = Ref {
        ck: &ck,
        dept: 0,
        delta: 0,
    }
    .forward(img);
    let other = Ref {
        ck: &ck,
        dept: 0,
        delta: 1,
    }
    .forward(img);
    let diff = own
        .iter()
        .zip(&other)
        .fold(0f32, |a, (x, y)| a.max((x - y).abs()));
    println!("delta effect on logits: {diff}");
    assert!(diff > 1e-2, "department deltas do not change the output");
}

/// pack → parse → inspect for every precision / delta storage; with signatures.
#[test]
fn pack_parse_inspect_roundtrip() {
    let s = seed();
    let ck = ckpt(s, 32, vec![2, 4, 3], 2);
    let key = ed25519_dalek::SigningKey::from_bytes(&[s as u8; 32]);
    for weights in [Precision::F32, Precision::Int8] {
        for delta in [DeltaDType::F32, DeltaDType::F16, DeltaDType::I8] {
            let opts = PackOptions {
                weights,
                delta,
                calib_count: 2,
                calib_seed: s,
                version: 3,
            };
            let bytes = pack(
                &ck,
                &opts,
                Some(&key),
                None,
                &lorkd_tools::calibrate::activation_ranges,
            )
            .unwrap();
            let b = Bundle::parse_signed(&bytes, &key.verifying_key().to_bytes()).unwrap();
            assert_eq!(b.department_count(), 3);
            assert_eq!(b.manifest().precision, weights);
            let r =
                lorkd_tools::cmd::inspect::report(&bytes, Some(&key.verifying_key().to_bytes()))
                    .unwrap();
            for k in [
                "departments",
                "rank",
                "precisions",
                "shared_bytes",
                "total_bytes",
                "separate_experts_bytes",
                "ratio",
                "arena_bytes",
                "base_id",
                "signature",
            ] {
                assert!(r.get(k).is_some(), "inspect lacks `{k}`");
            }
            assert_eq!(r["signature"], "valid");
            assert_eq!(r["total_bytes"], bytes.len());
            assert_eq!(r["rank"], 2);
            assert_eq!(r["departments"][1]["name"], "dept1");
            assert_eq!(r["departments"][1]["classes"], 4);
            assert_eq!(r["departments"][2]["version"], 3);
            assert_eq!(
                r["arena_bytes"]["streaming"],
                b.arena_bytes(Mode::Streaming)
            );
            assert_eq!(r["arena_bytes"]["auto"], b.arena_bytes(Mode::Auto));
            // The auto plan's report: one cost row per expert conv, each planned one way.
            let sp = &r["switch_plan"];
            let costs = sp["expert_costs"].as_array().unwrap();
            assert_eq!(costs.len() as u64, sp["experts"].as_u64().unwrap());
            let streamed = costs.iter().filter(|e| e["auto"] == "stream").count();
            assert_eq!(streamed, sp["auto_streamed_ops"].as_array().unwrap().len());
            // Streaming's: the stem and the pointwise experts the plan rebuilds at each
            // inference, by the runtime's own rule.
            let plan = lorkd_runtime::format::plan::Plan::new(b.manifest(), Mode::Streaming);
            let want: Vec<u64> = lorkd_runtime::format::plan::experts(b.manifest())
                .filter(|e| plan.rebuilds_per_inference(e.cout, e.cin, e.k, e.hw))
                .map(|e| e.op as u64)
                .collect();
            let got: Vec<u64> = sp["streaming_rebuilt_per_inference_ops"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_u64().unwrap())
                .collect();
            assert_eq!(got, want);
            assert!(!got.is_empty(), "the stem is rebuilt per inference");
            assert_eq!(r["base_id"].as_str().unwrap().len(), 64);
            let w = if weights == Precision::F32 {
                "f32"
            } else {
                "int8"
            };
            assert_eq!(r["precisions"]["weights"], w);
            // Each department's blob is what `inspect` reports as its delta bytes.
            let blob_sum: usize = (0..3).map(|i| b.department_blob(i).unwrap().len()).sum();
            let listed: u64 = (0..3)
                .map(|i| r["departments"][i]["delta_bytes"].as_u64().unwrap())
                .sum();
            assert_eq!(listed as usize, blob_sum);
            assert!(r["ratio"].as_f64().unwrap() < 1.0);
            // Packing is deterministic (same checkpoint, options, key → same bytes).
            assert_eq!(
                pack(
                    &ck,
                    &opts,
                    Some(&key),
                    None,
                    &lorkd_tools::calibrate::activation_ranges
                )
                .unwrap(),
                bytes
            );
        }
    }
}

/// Stored factors are the checkpoint's `A` and the folded `B' = (g ⊗ 1_k)·s·B`, within
/// the storage's rounding.
#[test]
fn stored_deltas_are_the_folded_factors() {
    let s = seed();
    let ck = ckpt(s, 32, vec![2, 2], 3);
    let folded = lorkd_tools::pack::fold_checkpoint(&ck).unwrap();
    for delta in [DeltaDType::F32, DeltaDType::F16, DeltaDType::I8] {
        let opts = PackOptions {
            delta,
            ..PackOptions::default()
        };
        let bytes = pack(
            &ck,
            &opts,
            None,
            None,
            &lorkd_tools::calibrate::activation_ranges,
        )
        .unwrap();
        let b = Bundle::parse(&bytes).unwrap();
        for d in 0..2 {
            let dept = b.department(d).unwrap();
            let convs: Vec<_> = folded
                .graph
                .convs
                .iter()
                .filter(|c| c.expert.is_some())
                .collect();
            for ((c, dr), (a, bb)) in convs
                .iter()
                .zip(dept.manifest.deltas.iter())
                .zip(&folded.deltas[d])
            {
                for (t, want, cols) in [(dr.a, a, c.cin * c.k), (dr.b, bb, 3 * c.k)] {
                    let raw = &dept.payload[t.offset as usize..(t.offset + t.len) as usize];
                    let got: Vec<f32> = match delta {
                        DeltaDType::F32 => raw
                            .chunks_exact(4)
                            .map(|x| f32::from_le_bytes(x.try_into().unwrap()))
                            .collect(),
                        DeltaDType::F16 => raw
                            .chunks_exact(2)
                            .map(|x| half::f16::from_le_bytes([x[0], x[1]]).to_f32())
                            .collect(),
                        DeltaDType::I8 => {
                            let n = want.len();
                            let sc: Vec<f32> = raw[n..]
                                .chunks_exact(2)
                                .map(|x| half::f16::from_le_bytes([x[0], x[1]]).to_f32())
                                .collect();
                            raw[..n]
                                .iter()
                                .enumerate()
                                .map(|(i, &q)| q as i8 as f32 * sc[i / cols])
                                .collect()
                        }
                    };
                    assert_eq!(got.len(), want.len());
                    for (row, (gr, wr)) in got.chunks(cols).zip(want.chunks(cols)).enumerate() {
                        let m = wr.iter().fold(0f32, |a, v| a.max(v.abs()));
                        let tol = match delta {
                            DeltaDType::F32 => 0.0,
                            DeltaDType::F16 => m * 1e-3,
                            // Half a step of the half scale: max/127 rounded up to the next
                            // half (relative 2^-10, or one subnormal 2^-24 step).
                            DeltaDType::I8 => (m / 127.0 * (1.0 + 1e-3) + 6e-8) * 0.5001,
                        };
                        for (g, w) in gr.iter().zip(wr) {
                            assert!((g - w).abs() <= tol, "{} row {row}: {g} vs {w}", c.name);
                        }
                    }
                }
            }
        }
    }
}

/// r = 0 (no department factors) still packs and parses, for every delta storage.
#[test]
fn rank_zero_packs() {
    let ck = ckpt(seed(), 32, vec![2], 0);
    for delta in [DeltaDType::F32, DeltaDType::F16, DeltaDType::I8] {
        let opts = PackOptions {
            weights: Precision::Int8,
            delta,
            calib_count: 1,
            ..PackOptions::default()
        };
        let bytes = pack(
            &ck,
            &opts,
            None,
            None,
            &lorkd_tools::calibrate::activation_ranges,
        )
        .unwrap();
        assert_eq!(Bundle::parse(&bytes).unwrap().manifest().rank, 0);
    }
    // The trainer writes rank-0 models (mtl, transfer) without any `lora_A`/`lora_B`
    // tensors; they pack to the same bytes as with empty factors.
    let spec = RandomSpec {
        arch: "shufflenet_v2_x0_5".into(),
        in_channels: 3,
        input_size: 32,
        rank: 0,
        classes: vec![3],
        seed: seed(),
    };
    let full = random_checkpoint(&spec).unwrap();
    let (meta, raw) = lorkd_checkpoint::read(&full).unwrap();
    let kept: Vec<(String, Vec<usize>, Vec<f32>)> = raw
        .into_iter()
        .filter(|(k, _)| !k.ends_with(".lora_A") && !k.ends_with(".lora_B"))
        .map(|(k, t)| (k, t.shape, t.data))
        .collect();
    let bare = lorkd_tools::checkpoint::write_safetensors(&kept, &meta).unwrap();
    let opts = PackOptions {
        weights: Precision::F32,
        calib_count: 1,
        ..PackOptions::default()
    };
    let packed = |bytes: &[u8]| {
        pack(
            &Checkpoint::from_bytes(bytes).unwrap(),
            &opts,
            None,
            None,
            &lorkd_tools::calibrate::activation_ranges,
        )
        .unwrap()
    };
    assert_eq!(packed(&bare), packed(&full));
}
