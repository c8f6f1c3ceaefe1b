//! Pins the wire format: struct → exact bytes → struct (postcard's `tests/loopback.rs`
//! style). A change here is a format change: bump `header::VERSION` and the spec.

use lorkd_runtime::engine::testnet::{NetSpec, TestNet};
use lorkd_runtime::format::header::{DeltaHeader, Header, Section, DELTA_HEADER_LEN, HEADER_LEN};
use lorkd_runtime::format::write::{encode_seq, write_blob, write_bundle};
use lorkd_runtime::format::*;

fn roundtrip<'a, T>(v: &T, want: &[u8], buf: &'a mut Vec<u8>) -> T
where
    T: serde::Serialize + serde::Deserialize<'a>,
{
    *buf = postcard::to_allocvec(v).unwrap();
    assert_eq!(buf.as_slice(), want, "encoding changed");
    let (back, rest) = postcard::take_from_bytes::<T>(buf).unwrap();
    assert!(rest.is_empty());
    back
}

#[test]
fn postcard_items_pin_exact_bytes() {
    let mut b = Vec::new();
    let t = TensorRef {
        offset: 2592,
        len: 96,
    };
    assert_eq!(roundtrip(&t, &[0xA0, 0x14, 0x60], &mut b), t);
    let v = ValueDesc {
        h: 7,
        w: 7,
        c: 1024,
        offset: 65536,
    };
    assert_eq!(
        roundtrip(&v, &[7, 7, 0x80, 0x08, 0x80, 0x80, 0x04], &mut b),
        v
    );
    let op = Op::Conv {
        input: Slice {
            value: 1,
            c_off: 0,
            c_len: 24,
        },
        output: 2,
        cout: 24,
        k: 3,
        stride: 2,
        pad: 1,
        relu: true,
        weight: TensorRef {
            offset: 0,
            len: 2592,
        },
        bias: TensorRef {
            offset: 2592,
            len: 96,
        },
        wscale: TensorRef { offset: 0, len: 0 },
        expert: Some(0),
    };
    let want = [
        0, 1, 0, 24, 2, 24, 3, 2, 1, 1, 0, 0xA0, 0x14, 0xA0, 0x14, 0x60, 0, 0, 1, 0,
    ];
    assert_eq!(roundtrip(&op, &want, &mut b), op);
    let op = Op::ConcatShuffle {
        a: Slice {
            value: 8,
            c_off: 0,
            c_len: 58,
        },
        b: Slice {
            value: 11,
            c_off: 0,
            c_len: 58,
        },
        output: 12,
    };
    assert_eq!(roundtrip(&op, &[3, 8, 0, 58, 11, 0, 58, 12], &mut b), op);
    assert_eq!(
        roundtrip(&Op::PoolHead { input: 300 }, &[4, 0xAC, 0x02], &mut b),
        Op::PoolHead { input: 300 }
    );
    assert_eq!(
        roundtrip(
            &Op::MaxPool {
                input: 1,
                output: 2
            },
            &[2, 1, 2],
            &mut b
        ),
        Op::MaxPool {
            input: 1,
            output: 2
        }
    );
    let inp = InputSpec {
        channels: 1,
        size: 224,
        mean: [0.5, 0.0, 0.0],
        std: [1.0, 1.0, 1.0],
    };
    let mut want = vec![1, 0xE0, 0x01];
    for x in [0.5f32, 0.0, 0.0, 1.0, 1.0, 1.0] {
        want.extend_from_slice(&x.to_le_bytes());
    }
    assert_eq!(roundtrip(&inp, &want, &mut b), inp);
    let a = ArenaPlan {
        activation_bytes: 128,
        materialized_bytes: 300,
        streaming_bytes: 1,
    };
    assert_eq!(roundtrip(&a, &[0x80, 0x01, 0xAC, 0x02, 1], &mut b), a);
    assert_eq!(roundtrip(&DeltaDType::I8, &[2], &mut b), DeltaDType::I8);
    assert_eq!(roundtrip(&Precision::Int8, &[1], &mut b), Precision::Int8);
    let e = DeptEntry {
        name: "lung",
        offset: 4096,
        len: 17,
    };
    assert_eq!(
        roundtrip(&e, &[4, b'l', b'u', b'n', b'g', 0x80, 0x20, 17], &mut b),
        e
    );
    // Seq: (count varint, byte-string of the concatenated items).
    let (n, items) = encode_seq(&["ab", "c"]).unwrap();
    let s = Seq::<&str>::from_encoded(n, &items);
    let enc = postcard::to_allocvec(&s).unwrap();
    assert_eq!(enc, [2, 5, 2, b'a', b'b', 1, b'c']);
    let back: Seq<&str> = postcard::from_bytes(&enc).unwrap();
    assert_eq!(back.iter().collect::<Vec<_>>(), ["ab", "c"]);
}

#[test]
fn headers_pin_exact_bytes() {
    let h = Header {
        version: 1,
        flags: 1,
        file_len: 0x0102_0304,
        dept_count: 11,
        manifest: Section {
            offset: 256,
            len: 5,
        },
        shared: Section {
            offset: 272,
            len: 6,
        },
        blobs: Section {
            offset: 288,
            len: 7,
        },
        table: Section {
            offset: 295,
            len: 8,
        },
        base_id: [0xB0; 32],
        manifest_sha256: [0xA1; 32],
        shared_sha256: [0xA2; 32],
        table_sha256: [0xA3; 32],
        file_sha256: [0xA4; 32],
    };
    let b = h.encode();
    let mut want = Vec::new();
    want.extend_from_slice(b"LORKDBND");
    want.extend_from_slice(&[1, 0, 1, 0, 0, 1, 0, 0, 4, 3, 2, 1, 11, 0, 0, 0]);
    for (o, l) in [(256u32, 5u32), (272, 6), (288, 7), (295, 8)] {
        want.extend_from_slice(&o.to_le_bytes());
        want.extend_from_slice(&l.to_le_bytes());
    }
    want.extend_from_slice(&[0; 8]);
    for x in [0xB0u8, 0xA1, 0xA2, 0xA3, 0xA4] {
        want.extend_from_slice(&[x; 32]);
    }
    want.extend_from_slice(&[0; 32]);
    assert_eq!(want.len(), HEADER_LEN);
    assert_eq!(&b[..], &want[..]);
    assert_eq!(Header::decode(&b).unwrap(), h);

    let d = DeltaHeader {
        manifest_len: 3,
        payload_offset: 80,
        payload_len: 2,
        sha256: [0xC3; 32],
    };
    let mut blob = d.encode().to_vec();
    let mut want = b"LORKDDLT".to_vec();
    want.extend_from_slice(&[1, 0, 0, 0, 3, 0, 0, 0, 80, 0, 0, 0, 2, 0, 0, 0]);
    want.extend_from_slice(&[0; 8]);
    want.extend_from_slice(&[0xC3; 32]);
    assert_eq!(blob, want);
    blob.resize(82, 0);
    assert_eq!(DeltaHeader::decode(&blob).unwrap(), d);
    assert_eq!(DELTA_HEADER_LEN, 64);
}

/// A whole bundle: parse, re-encode every part, reassemble: the same bytes.
#[test]
fn bundle_reassembles_to_identical_bytes() {
    for spec in [
        NetSpec::small(),
        NetSpec {
            delta_dtype: DeltaDType::I8,
            ..NetSpec::small()
        },
    ] {
        let net = TestNet::random(spec, 7);
        let ranges: Vec<Vec<(f32, f32)>> = net
            .depts
            .iter()
            .map(|_| net.values.iter().map(|_| (-1.0, 2.0)).collect())
            .collect();
        for bytes in [net.bundle_f32(), net.bundle_int8(&ranges)] {
            let b = Bundle::parse(&bytes).unwrap();
            let mbytes = postcard::to_allocvec(b.manifest()).unwrap();
            assert_eq!(&mbytes[..], b.header().manifest.slice(&bytes).unwrap());
            let mut blobs = Vec::new();
            for i in 0..b.department_count() {
                let d = b.department(i).unwrap();
                let blob = write_blob(&d.manifest, d.payload).unwrap();
                assert_eq!(&blob[..], b.department_blob(i).unwrap());
                blobs.push((d.manifest.name, blob));
            }
            let again = write_bundle(&mbytes, b.shared(), &blobs, false).unwrap();
            assert_eq!(again, bytes);
            assert_eq!(b.find_department("dept1"), Some(1));
            assert_eq!(b.find_department("nope"), None);
            assert!(!b.is_signed());
        }
    }
}
