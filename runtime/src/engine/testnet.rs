//! Host-side (`std`) test fixture: a small random ShuffleNetV2-shaped network written as a
//! real bundle through the packer's own pieces (`format::write::Payload` for tensor storage
//! and the per-channel weight quantiser, `format::factor::encode`, `format::layout::fill_totals`).
//!
//! The network keeps activations near unit scale (He-uniform weights, no BN to collapse,
//! see DESIGN.md "collapsed network") and has random heads and deltas of about half the
//! weights' magnitude, so departments really differ. Graph (NHWC values):
//!
//! ```text
//! v0 input → stem 3x3/2 (expert) → maxpool → stride-2 unit [dw/2 → 1x1(e) ‖ 1x1(e) → dw/2 → 1x1(e)]
//!   → concat+shuffle → stride-1 unit [split ‖ 1x1(e) → dw → 1x1(e)] → concat+shuffle
//!   → 1x1 conv (e) → pool + head
//! ```
use std::vec::Vec;

use crate::format::write::{encode_seq, write_blob, write_bundle, Payload};
use crate::format::{
    factor, layout, view::base_id_of, ArenaPlan, DeltaDType, DeltaRef, DeptManifest, InputSpec,
    Manifest, Op, Precision, Seq, Slice, TensorRef, ValueDesc,
};
use crate::quant::QParams;

/// Deterministic splitmix64 generator (no dependency; tests print their seed).
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    /// A generator from `seed`.
    pub fn new(seed: u64) -> Self {
        Rng(seed)
    }
    /// Next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    /// Uniform in `[-a, a)`.
    pub fn uniform(&mut self, a: f32) -> f32 {
        let u = (self.next_u64() >> 40) as f32 / (1u64 << 24) as f32;
        (2.0 * u - 1.0) * a
    }
    /// `n` values uniform in `[-a, a)`.
    pub fn vec(&mut self, n: usize, a: f32) -> Vec<f32> {
        (0..n).map(|_| self.uniform(a)).collect()
    }
    /// Uniform integer in `0..n` (`n > 0`).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }
}

/// Sizes of the test network.
#[derive(Clone, Copy, Debug)]
pub struct NetSpec {
    /// Input side (square), channels 3.
    pub size: u16,
    /// Stem output channels.
    pub c0: u16,
    /// Branch channels of the units (units output `2·cb`).
    pub cb: u16,
    /// Feature width of the last conv (the heads' input).
    pub features: u16,
    /// LoRA rank of every expert conv.
    pub rank: u16,
    /// Classes of each department (their count is the department count).
    pub classes: &'static [usize],
    /// Storage of the factors.
    pub delta_dtype: DeltaDType,
}

impl NetSpec {
    /// A small network: 3×20×20 input, 3 departments.
    pub const fn small() -> Self {
        NetSpec {
            size: 20,
            c0: 8,
            cb: 6,
            features: 16,
            rank: 2,
            classes: &[4, 5, 3],
            delta_dtype: DeltaDType::F32,
        }
    }
}

/// One op with its f32 weights (fields as in [`Op`]; `w`, `b` the f32 weight and bias).
#[derive(Clone, Debug)]
#[allow(missing_docs)] // the fields mirror `Op`'s
pub enum Layer {
    /// An `Op::Conv`, weight OIHW.
    Conv {
        input: Slice,
        output: u16,
        cout: u16,
        k: u8,
        stride: u8,
        relu: bool,
        w: Vec<f32>,
        b: Vec<f32>,
        expert: Option<u16>,
    },
    /// An `Op::DwConv`, weight `[3, 3, C]`.
    Dw {
        input: Slice,
        output: u16,
        stride: u8,
        relu: bool,
        w: Vec<f32>,
        b: Vec<f32>,
    },
    /// An `Op::MaxPool`.
    MaxPool { input: u16, output: u16 },
    /// An `Op::ConcatShuffle`.
    Concat { a: Slice, b: Slice, output: u16 },
    /// An `Op::PoolHead`.
    Head { input: u16 },
}

/// One department: factors per expert conv (`A`, `B`, f32 before storage) and its head.
#[derive(Clone, Debug)]
pub struct TestDept {
    /// Department name.
    pub name: String,
    /// Class names.
    pub classes: Vec<String>,
    /// `(A, B)` per expert conv, row-major f32.
    pub deltas: Vec<(Vec<f32>, Vec<f32>)>,
    /// Head weight `[classes, features]`.
    pub head_w: Vec<f32>,
    /// Head bias `[classes]`.
    pub head_b: Vec<f32>,
}

/// A random network, written as f32 or int8 bundles.
#[derive(Clone, Debug)]
pub struct TestNet {
    /// The sizes it was drawn with.
    pub spec: NetSpec,
    /// `(h, w, c)` per value.
    pub values: Vec<(u16, u16, u16)>,
    /// The ops in order.
    pub layers: Vec<Layer>,
    /// The departments.
    pub depts: Vec<TestDept>,
}

fn full(value: u16, c: u16) -> Slice {
    Slice {
        value,
        c_off: 0,
        c_len: c,
    }
}

impl TestNet {
    /// Draws weights, deltas and heads from `seed`.
    pub fn random(spec: NetSpec, seed: u64) -> Self {
        let mut rng = Rng::new(seed);
        let mut values: Vec<(u16, u16, u16)> = vec![(spec.size, spec.size, 3)];
        let mut layers = Vec::new();
        let mut experts: Vec<(usize, usize, usize)> = Vec::new(); // (cout, cin, k)
        let od = |n: u16, k: u16, s: u16, p: u16| (n + 2 * p - k) / s + 1;
        let mut conv = |values: &mut Vec<(u16, u16, u16)>,
                        rng: &mut Rng,
                        input: Slice,
                        cout: u16,
                        k: u8,
                        stride: u8,
                        relu: bool,
                        expert: bool| {
            let (h, w, _) = values[input.value as usize];
            let p = if k == 3 { 1 } else { 0 };
            values.push((
                od(h, k as u16, stride as u16, p),
                od(w, k as u16, stride as u16, p),
                cout,
            ));
            let fan = input.c_len as usize * (k as usize).pow(2);
            let a = (if relu { 6.0 } else { 3.0 } / fan as f32).sqrt();
            let e = expert.then(|| {
                experts.push((cout as usize, input.c_len as usize, k as usize));
                experts.len() as u16 - 1
            });
            Layer::Conv {
                input,
                output: values.len() as u16 - 1,
                cout,
                k,
                stride,
                relu,
                w: rng.vec(cout as usize * fan, a),
                b: rng.vec(cout as usize, 0.1),
                expert: e,
            }
        };
        let dw = |values: &mut Vec<(u16, u16, u16)>, rng: &mut Rng, input: Slice, stride: u8| {
            let (h, w, _) = values[input.value as usize];
            values.push((
                od(h, 3, stride as u16, 1),
                od(w, 3, stride as u16, 1),
                input.c_len,
            ));
            let c = input.c_len as usize;
            Layer::Dw {
                input,
                output: values.len() as u16 - 1,
                stride,
                relu: false,
                w: rng.vec(9 * c, (3.0f32 / 9.0).sqrt()),
                b: rng.vec(c, 0.1),
            }
        };
        let (c0, cb) = (spec.c0, spec.cb);
        layers.push(conv(
            &mut values,
            &mut rng,
            full(0, 3),
            c0,
            3,
            2,
            true,
            true,
        )); // v1
        let (h1, w1, _) = values[1];
        values.push((od(h1, 3, 2, 1), od(w1, 3, 2, 1), c0)); // v2
        layers.push(Layer::MaxPool {
            input: 1,
            output: 2,
        });
        layers.push(dw(&mut values, &mut rng, full(2, c0), 2)); // v3
        layers.push(conv(
            &mut values,
            &mut rng,
            full(3, c0),
            cb,
            1,
            1,
            true,
            true,
        )); // v4
        layers.push(conv(
            &mut values,
            &mut rng,
            full(2, c0),
            cb,
            1,
            1,
            true,
            true,
        )); // v5
        layers.push(dw(&mut values, &mut rng, full(5, cb), 2)); // v6
        layers.push(conv(
            &mut values,
            &mut rng,
            full(6, cb),
            cb,
            1,
            1,
            true,
            true,
        )); // v7
        let (h7, w7, _) = values[7];
        values.push((h7, w7, 2 * cb)); // v8
        layers.push(Layer::Concat {
            a: full(4, cb),
            b: full(7, cb),
            output: 8,
        });
        layers.push(conv(
            &mut values,
            &mut rng,
            Slice {
                value: 8,
                c_off: cb,
                c_len: cb,
            },
            cb,
            1,
            1,
            true,
            true,
        )); // v9
        layers.push(dw(&mut values, &mut rng, full(9, cb), 1)); // v10
        layers.push(conv(
            &mut values,
            &mut rng,
            full(10, cb),
            cb,
            1,
            1,
            true,
            true,
        )); // v11
        values.push((h7, w7, 2 * cb)); // v12
        layers.push(Layer::Concat {
            a: Slice {
                value: 8,
                c_off: 0,
                c_len: cb,
            },
            b: full(11, cb),
            output: 12,
        });
        layers.push(conv(
            &mut values,
            &mut rng,
            full(12, 2 * cb),
            spec.features,
            1,
            1,
            true,
            true,
        )); // v13
        layers.push(Layer::Head { input: 13 });

        let r = spec.rank as usize;
        let f = spec.features as usize;
        let depts = spec
            .classes
            .iter()
            .enumerate()
            .map(|(t, &nc)| {
                let deltas = experts
                    .iter()
                    .map(|&(cout, cin, k)| {
                        let a = rng.vec(r * k * cin * k, (3.0 / (cin * k) as f32).sqrt());
                        let b = rng.vec(cout * k * r * k, (1.5 / (r * k * k) as f32).sqrt());
                        (a, b)
                    })
                    .collect();
                TestDept {
                    name: format!("dept{t}"),
                    classes: (0..nc).map(|c| format!("class{c}")).collect(),
                    deltas,
                    head_w: rng.vec(nc * f, 2.0 * (3.0 / f as f32).sqrt()),
                    head_b: rng.vec(nc, 0.1),
                }
            })
            .collect();
        TestNet {
            spec,
            values,
            layers,
            depts,
        }
    }

    /// Random CHW inputs, uniform in [-1.5, 1.5).
    pub fn inputs(&self, n: usize, seed: u64) -> Vec<Vec<f32>> {
        let mut rng = Rng::new(seed);
        let len = 3 * self.spec.size as usize * self.spec.size as usize;
        (0..n).map(|_| rng.vec(len, 1.5)).collect()
    }

    /// The f32 bundle.
    pub fn bundle_f32(&self) -> Vec<u8> {
        self.write(Precision::F32, None)
    }

    /// The int8 bundle: `W0` symmetric per output channel; activations from per-department,
    /// per-value `(min, max)` ranges.
    pub fn bundle_int8(&self, ranges: &[Vec<(f32, f32)>]) -> Vec<u8> {
        self.write(Precision::Int8, Some(ranges))
    }

    fn write(&self, precision: Precision, ranges: Option<&[Vec<(f32, f32)>]>) -> Vec<u8> {
        const FITS: &str = "test tensors fit a payload";
        let elem = if precision == Precision::Int8 { 1 } else { 4 };
        let mut shared = Payload::default();
        let mut ops = Vec::new();
        let mut experts = 0u16;
        for l in &self.layers {
            ops.push(match l {
                Layer::Conv {
                    input,
                    output,
                    cout,
                    k,
                    stride,
                    relu,
                    w,
                    b,
                    expert,
                } => {
                    let (weight, wscale) = shared
                        .push_weight(w, *cout as usize, false, precision)
                        .expect(FITS);
                    let bias = shared.push_f32(b).expect(FITS);
                    experts += u16::from(expert.is_some());
                    Op::Conv {
                        input: *input,
                        output: *output,
                        cout: *cout,
                        k: *k,
                        stride: *stride,
                        pad: if *k == 3 { 1 } else { 0 },
                        relu: *relu,
                        weight,
                        bias,
                        wscale,
                        expert: *expert,
                    }
                }
                Layer::Dw {
                    input,
                    output,
                    stride,
                    relu,
                    w,
                    b,
                } => {
                    let c = input.c_len as usize;
                    let (weight, wscale) = shared.push_weight(w, c, true, precision).expect(FITS);
                    let bias = shared.push_f32(b).expect(FITS);
                    Op::DwConv {
                        input: *input,
                        output: *output,
                        stride: *stride,
                        relu: *relu,
                        weight,
                        bias,
                        wscale,
                    }
                }
                Layer::MaxPool { input, output } => Op::MaxPool {
                    input: *input,
                    output: *output,
                },
                Layer::Concat { a, b, output } => Op::ConcatShuffle {
                    a: *a,
                    b: *b,
                    output: *output,
                },
                Layer::Head { input } => Op::PoolHead { input: *input },
            });
        }
        let mut off = 0usize;
        let vds: Vec<ValueDesc> = self
            .values
            .iter()
            .map(|&(h, w, c)| {
                let d = ValueDesc {
                    h,
                    w,
                    c,
                    offset: off as u32,
                };
                off += layout::align(h as usize * w as usize * c as usize * elem);
                d
            })
            .collect();
        let (nv, venc) = encode_seq(&vds).unwrap();
        let (no, oenc) = encode_seq(&ops).unwrap();
        let mut m = Manifest {
            arch: "test-shufflenet",
            precision,
            input: InputSpec {
                channels: 3,
                size: self.spec.size,
                mean: [0.5; 3],
                std: [0.25; 3],
            },
            rank: self.spec.rank,
            features: self.spec.features,
            experts,
            values: Seq::from_encoded(nv, &venc),
            ops: Seq::from_encoded(no, &oenc),
            tensors: Seq::from_encoded(0, &[]),
            arena: ArenaPlan {
                activation_bytes: off as u32,
                materialized_bytes: 0,
                streaming_bytes: 0,
            },
        };
        layout::fill_totals(&mut m).expect("test arena fits u32");
        let menc = postcard::to_allocvec(&m).unwrap();
        let base_id = base_id_of(&menc, &shared.0);

        let mut blobs = Vec::new();
        for (t, d) in self.depts.iter().enumerate() {
            let mut payload = Payload::default();
            let mut drefs = Vec::new();
            for (a, b) in &d.deltas {
                let (ar, br) = self.factor_rows(drefs.len());
                let dt = self.spec.delta_dtype;
                let ea = factor::encode(a, ar, a.len() / ar.max(1), dt).expect("test factor");
                let eb = factor::encode(b, br, b.len() / br.max(1), dt).expect("test factor");
                drefs.push(DeltaRef {
                    a: payload.push(&ea).expect(FITS),
                    b: payload.push(&eb).expect(FITS),
                });
            }
            let head_weight = payload.push_f32(&d.head_w).expect(FITS);
            let head_bias = payload.push_f32(&d.head_b).expect(FITS);
            let act_qparams = match ranges {
                Some(r) => {
                    let q: Vec<QParams> = r[t]
                        .iter()
                        .map(|&(lo, hi)| QParams::from_range(lo, hi))
                        .collect();
                    payload.push_qparams(&q).expect(FITS)
                }
                None => TensorRef { offset: 0, len: 0 },
            };
            let names: Vec<&str> = d.classes.iter().map(|s| s.as_str()).collect();
            let (nc, cenc) = encode_seq(&names).unwrap();
            let (nd, denc) = encode_seq(&drefs).unwrap();
            let dm = DeptManifest {
                name: &d.name,
                version: 1,
                base_id,
                classes: Seq::from_encoded(nc, &cenc),
                delta_dtype: self.spec.delta_dtype,
                deltas: Seq::from_encoded(nd, &denc),
                head_weight,
                head_bias,
                act_qparams,
            };
            blobs.push((d.name.as_str(), write_blob(&dm, &payload.0).unwrap()));
        }
        write_bundle(&menc, &shared.0, &blobs, false).unwrap()
    }

    /// Rows of expert `e`'s `A` and `B`.
    fn factor_rows(&self, e: usize) -> (usize, usize) {
        let r = self.spec.rank as usize;
        let mut i = 0;
        for l in &self.layers {
            if let Layer::Conv {
                cout,
                k,
                expert: Some(_),
                ..
            } = l
            {
                if i == e {
                    return (r * *k as usize, *cout as usize * *k as usize);
                }
                i += 1;
            }
        }
        (0, 0)
    }
}
