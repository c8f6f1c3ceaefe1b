//! The exported ONNX is standard and shaped as promised: opset ≥ 13, input `input`
//! `[N, C, H, W]` f32, output `logits` `[N, classes]`, channel shuffle as
//! Reshape → Transpose → Reshape, only standard operators, and it round-trips through
//! protobuf decoding and tract at several batch sizes.
use lorkd_runtime::format::{Bundle, DeltaDType, Precision};
use lorkd_runtime::AlignedBytes;
use lorkd_tools::checkpoint::{random_checkpoint, Checkpoint, RandomSpec};
use lorkd_tools::pack::{pack, PackOptions};
use lorkd_tools::verify::export_dept;
use lorkd_tools::verify::TractExpert;
use prost::Message;
use tract_onnx::pb;

#[test]
fn export_is_standard_onnx_with_the_promised_interface() {
    let seed: u64 = rand::random();
    println!("seed {seed}");
    let spec = RandomSpec {
        arch: "shufflenet_v2_x0_5".into(),
        in_channels: 3,
        input_size: 32,
        rank: 2,
        classes: vec![3, 6],
        seed,
    };
    let ck = Checkpoint::from_bytes(&random_checkpoint(&spec).unwrap()).unwrap();
    let opts = PackOptions {
        weights: Precision::Int8,
        delta: DeltaDType::F16,
        calib_count: 2,
        ..PackOptions::default()
    };
    let bytes = pack(&ck, &opts, None, None, &|b, imgs| {
        lorkd_tools::calibrate::activation_ranges(b, imgs)
    })
    .unwrap();
    let al = AlignedBytes::new(&bytes);
    let b = Bundle::parse(al.as_slice()).unwrap();
    let onnx = export_dept(&b, 1).unwrap();
    let m = pb::ModelProto::decode(&onnx[..]).unwrap();
    assert!(m
        .opset_import
        .iter()
        .any(|o| o.domain.is_empty() && o.version >= 13));
    let g = m.graph.as_ref().unwrap();
    let dims = |v: &pb::ValueInfoProto| -> Vec<String> {
        let Some(pb::type_proto::Value::TensorType(t)) = &v.r#type.as_ref().unwrap().value else {
            panic!()
        };
        assert_eq!(t.elem_type, pb::tensor_proto::DataType::Float as i32);
        t.shape
            .as_ref()
            .unwrap()
            .dim
            .iter()
            .map(|d| format!("{:?}", d.value.as_ref().unwrap()))
            .collect()
    };
    assert_eq!(g.input.len(), 1);
    assert_eq!(g.input[0].name, "input");
    assert_eq!(
        dims(&g.input[0]),
        [
            "DimParam(\"N\")",
            "DimValue(3)",
            "DimValue(32)",
            "DimValue(32)"
        ]
    );
    assert_eq!(g.output.len(), 1);
    assert_eq!(g.output[0].name, "logits");
    assert_eq!(dims(&g.output[0]), ["DimParam(\"N\")", "DimValue(6)"]);
    let standard = [
        "Conv",
        "Relu",
        "Identity",
        "MaxPool",
        "Slice",
        "Concat",
        "Reshape",
        "Transpose",
        "GlobalAveragePool",
        "Flatten",
        "Gemm",
    ];
    for n in &g.node {
        assert!(
            standard.contains(&n.op_type.as_str()) && n.domain.is_empty(),
            "{}",
            n.op_type
        );
    }
    // Every Concat (a ShuffleNetV2 unit's end) is followed by Reshape → Transpose → Reshape.
    let ops: Vec<&str> = g.node.iter().map(|n| n.op_type.as_str()).collect();
    let cats: Vec<usize> = ops
        .iter()
        .enumerate()
        .filter(|(_, o)| **o == "Concat")
        .map(|(i, _)| i)
        .collect();
    assert!(!cats.is_empty());
    for i in cats {
        assert_eq!(&ops[i + 1..i + 4], ["Reshape", "Transpose", "Reshape"]);
        let perm = &g.node[i + 2]
            .attribute
            .iter()
            .find(|a| a.name == "perm")
            .unwrap()
            .ints;
        assert_eq!(perm, &[0, 2, 1, 3, 4]);
    }
    // Initializers are f32 (int8 weights and f16 deltas come out fused in float).
    assert!(g
        .initializer
        .iter()
        .all(|t| t.data_type == pb::tensor_proto::DataType::Float as i32
            || t.data_type == pb::tensor_proto::DataType::Int64 as i32));
    // Runs in tract at batch 1 and 3, the batch rows independent.
    let x: Vec<f32> = (0..3 * 3 * 32 * 32)
        .map(|i| ((i * 7919) % 1000) as f32 / 500.0 - 1.0)
        .collect();
    let t3 = TractExpert::load(&onnx, 3, 3, 32).unwrap().run(&x).unwrap();
    let t1 = TractExpert::load(&onnx, 1, 3, 32).unwrap();
    for r in 0..3 {
        let one = t1.run(&x[r * 3072..(r + 1) * 3072]).unwrap();
        for (a, b) in one.iter().zip(&t3[r * 6..(r + 1) * 6]) {
            assert!(
                (a - b).abs() <= 1e-5 * (1.0 + a.abs()),
                "batch row {r}: {a} vs {b}"
            );
        }
    }
}
