//! MedMNIST `.npz` files written here in the distributed layout load exactly; every kind of
//! bad file is an error naming the file.

mod common;

use common::{expected_pixel, medmnist_arrays, raw_npy, write_npz, Arr, Scratch};
use lorkd_data::{DataError, Dataset, Split, Transform};

fn open(dir: &std::path::Path, names: &str) -> Result<Dataset, DataError> {
    let spec = if names.is_empty() {
        format!("medmnist:{}", dir.display())
    } else {
        format!("medmnist:{}:{names}", dir.display())
    };
    Dataset::open_str(&spec)
}

#[test]
fn grey_and_rgb_files_load_exactly() {
    let dir = Scratch::new("mm-ok");
    write_npz(
        &dir.path().join("octmnist.npz"),
        &medmnist_arrays([12, 4, 5], 28, false, 4),
    );
    write_npz(
        &dir.path().join("pathmnist.npz"),
        &medmnist_arrays([18, 3, 6], 28, true, 9),
    );
    let ds = open(dir.path(), "pathmnist,octmnist").unwrap();
    println!("{}", ds.summary());
    let names: Vec<&str> = ds.departments().iter().map(|d| d.name.as_str()).collect();
    assert_eq!(names, ["pathmnist", "octmnist"]);
    assert_eq!(ds.classes_per_department(), [9, 4]);
    assert_eq!(ds.departments()[1].classes[3], "normal");
    assert_eq!(ds.total_classes(), 13);
    assert_eq!(ds.class_offset(1), 9);
    assert_eq!(
        (
            ds.len(Split::Train),
            ds.len(Split::Val),
            ds.len(Split::Test)
        ),
        (30, 7, 11)
    );

    for split in Split::ALL {
        let s = split as usize;
        for i in 0..ds.len(split) {
            let (d, c) = ds.label(split, i);
            let raw = ds.raw_image(split, i).unwrap();
            let (row, rgb) = if d == 0 {
                (i, true)
            } else {
                (i - ds.indices_of(split, 0).len(), false)
            };
            assert_eq!(c, row % if d == 0 { 9 } else { 4 });
            assert_eq!((raw.width(), raw.height()), (28, 28));
            assert_eq!(raw.color().has_color(), rgb);
            for (p, &b) in raw.as_bytes().iter().enumerate() {
                assert_eq!(
                    b,
                    expected_pixel(s, row, p),
                    "{split} dept {d} row {row} byte {p}"
                );
            }
        }
    }

    // Grey replicated to 3 channels and resized to the model's input.
    let t = Transform::imagenet(32, 3);
    let i = ds.indices_of(Split::Train, 1)[0];
    let x = ds.sample(Split::Train, i, &t, false).unwrap();
    assert_eq!(x.image.len(), 3 * 32 * 32);
    let plane = 32 * 32;
    for p in 0..plane {
        let v0 = x.image.as_slice().unwrap()[p] * t.std[0] + t.mean[0];
        let v1 = x.image.as_slice().unwrap()[plane + p] * t.std[1] + t.mean[1];
        let v2 = x.image.as_slice().unwrap()[2 * plane + p] * t.std[2] + t.mean[2];
        assert!(
            (v0 - v1).abs() < 1e-5 && (v1 - v2).abs() < 1e-5,
            "grey must be replicated"
        );
        assert!((-1e-5..=1.0 + 1e-5).contains(&v0));
    }
    // Same size and RGB: the transform is exactly (x/255 - mean)/std.
    let t28 = Transform::imagenet(28, 3);
    let x = ds.sample(Split::Val, 1, &t28, false).unwrap();
    let raw = ds.raw_image(Split::Val, 1).unwrap();
    let b = raw.as_bytes();
    for c in 0..3 {
        for p in 0..28 * 28 {
            let want = (b[p * 3 + c] as f32 / 255.0 - t28.mean[c]) / t28.std[c];
            assert!((x.image.as_slice().unwrap()[c * 784 + p] - want).abs() < 1e-5);
        }
    }
}

#[test]
fn all_files_when_no_names_and_sized_names_resolve() {
    let dir = Scratch::new("mm-sized");
    write_npz(
        &dir.path().join("bloodmnist_64.npz"),
        &medmnist_arrays([8, 2, 2], 64, true, 8),
    );
    write_npz(
        &dir.path().join("myscanner.npz"),
        &medmnist_arrays([6, 1, 1], 16, false, 3),
    );
    let ds = open(dir.path(), "").unwrap();
    let names: Vec<&str> = ds.departments().iter().map(|d| d.name.as_str()).collect();
    assert_eq!(names, ["bloodmnist_64", "myscanner"]);
    assert_eq!(
        ds.classes_per_department(),
        [8, 3],
        "known names get INFO classes, others max+1"
    );
    let ds = open(dir.path(), "bloodmnist").unwrap();
    assert_eq!(ds.departments()[0].name, "bloodmnist");
    assert_eq!(ds.departments()[0].classes[0], "basophil");
    // Two sizes of one dataset: the name is ambiguous.
    write_npz(
        &dir.path().join("bloodmnist_28.npz"),
        &medmnist_arrays([8, 2, 2], 28, true, 8),
    );
    let e = open(dir.path(), "bloodmnist").err().unwrap();
    assert!(matches!(e, DataError::Spec { .. }), "{e}");
    assert!(open(dir.path(), "bloodmnist_28").is_ok());
}

/// Writes `pathmnist.npz` with the train arrays replaced, returns the open error.
fn bad(
    tag: &str,
    edit: impl FnOnce(&mut Vec<(&'static str, Arr)>),
) -> (DataError, std::path::PathBuf, Scratch) {
    let dir = Scratch::new(tag);
    let mut arrays = medmnist_arrays([9, 2, 2], 28, true, 9);
    edit(&mut arrays);
    let file = dir.path().join("pathmnist.npz");
    write_npz(&file, &arrays);
    let e = open(dir.path(), "pathmnist").err().expect("must fail");
    let msg = e.to_string();
    println!("{tag}: {msg}");
    assert!(
        msg.contains(&file.display().to_string()),
        "error must name the file: {msg}"
    );
    (e, file, dir)
}

fn set(arrays: &mut [(&'static str, Arr)], key: &str, a: Arr) {
    arrays.iter_mut().find(|(k, _)| *k == key).unwrap().1 = a;
}

#[test]
fn missing_file_is_an_error_naming_it() {
    let dir = Scratch::new("mm-missing");
    let e = open(dir.path(), "pathmnist").err().unwrap();
    assert!(matches!(e, DataError::Io { .. }));
    assert!(e.to_string().contains("pathmnist.npz"), "{e}");
    let e = open(&dir.path().join("nope"), "").err().unwrap();
    assert!(
        matches!(e, DataError::Io { .. }) && e.to_string().contains("nope"),
        "{e}"
    );
    let e = open(dir.path(), "").err().unwrap();
    assert!(matches!(e, DataError::Empty { .. }), "{e}");
}

#[test]
fn missing_array() {
    let (e, ..) = bad("mm-nokey", |a| a.retain(|(k, _)| *k != "val_labels"));
    assert!(
        matches!(e, DataError::MissingArray { ref key, .. } if key == "val_labels"),
        "{e}"
    );
}

#[test]
fn wrong_image_shape() {
    let (e, ..) = bad("mm-shape", |a| {
        set(a, "train_images", Arr::U8(vec![9, 784], vec![0; 9 * 784]))
    });
    assert!(
        matches!(e, DataError::Shape { ref key, .. } if key == "train_images"),
        "{e}"
    );
    let (e, ..) = bad("mm-shape4", |a| {
        set(
            a,
            "train_images",
            Arr::U8(vec![9, 28, 28, 4], vec![0; 9 * 28 * 28 * 4]),
        )
    });
    assert!(matches!(e, DataError::Shape { .. }), "{e}");
    let (e, ..) = bad("mm-shape0", |a| {
        set(a, "train_images", Arr::U8(vec![9, 0, 28], vec![]))
    });
    assert!(matches!(e, DataError::Shape { .. }), "{e}");
}

#[test]
fn wrong_label_shape_multilabel() {
    let (e, ..) = bad("mm-lshape", |a| {
        set(a, "test_labels", Arr::U8(vec![2, 14], vec![0; 28]))
    });
    assert!(
        matches!(e, DataError::Shape { ref key, .. } if key == "test_labels"),
        "{e}"
    );
}

#[test]
fn wrong_image_dtype() {
    let (e, ..) = bad("mm-dtype", |a| {
        set(
            a,
            "train_images",
            Arr::F32(vec![9, 28, 28, 3], vec![0.5; 9 * 28 * 28 * 3]),
        )
    });
    assert!(
        matches!(e, DataError::Dtype { ref got, .. } if got.contains("f4")),
        "{e}"
    );
}

#[test]
fn wrong_label_dtype() {
    let (e, ..) = bad("mm-ldtype", |a| {
        set(a, "train_labels", Arr::F32(vec![9, 1], vec![1.0; 9]))
    });
    assert!(
        matches!(e, DataError::Dtype { ref key, .. } if key == "train_labels"),
        "{e}"
    );
}

#[test]
fn label_out_of_range() {
    // pathmnist has 9 classes: 9 is out of range.
    let (e, ..) = bad("mm-range", |a| {
        set(a, "val_labels", Arr::U8(vec![2, 1], vec![3, 9]))
    });
    assert!(
        matches!(
            e,
            DataError::LabelOutOfRange {
                index: 1,
                label: 9,
                classes: 9,
                ..
            }
        ),
        "{e}"
    );
    let (e, ..) = bad("mm-neg", |a| {
        set(a, "val_labels", Arr::I64(vec![2, 1], vec![-1, 0]))
    });
    assert!(
        matches!(
            e,
            DataError::LabelOutOfRange {
                index: 0,
                label: -1,
                ..
            }
        ),
        "{e}"
    );
}

#[test]
fn images_and_labels_disagree() {
    let (e, ..) = bad("mm-len", |a| {
        set(a, "train_labels", Arr::U8(vec![8, 1], vec![0; 8]))
    });
    assert!(
        matches!(
            e,
            DataError::LengthMismatch {
                images: 9,
                labels: 8,
                ..
            }
        ),
        "{e}"
    );
}

#[test]
fn empty_department() {
    let (e, ..) = bad("mm-empty", |a| {
        set(a, "train_images", Arr::U8(vec![0, 28, 28, 3], vec![]));
        set(a, "train_labels", Arr::U8(vec![0, 1], vec![]));
    });
    assert!(matches!(e, DataError::Empty { .. }), "{e}");
}

#[test]
fn truncated_payload_is_refused_before_trusting_the_header() {
    // The header claims 10^9 images; only 10 bytes follow.
    let (e, ..) = bad("mm-trunc", |a| {
        set(
            a,
            "train_images",
            Arr::Raw(raw_npy("|u1", &[1_000_000_000, 28, 28], &[7; 10])),
        )
    });
    assert!(
        matches!(e, DataError::Npz { ref what, .. } if what.contains("truncated")),
        "{e}"
    );
    // A shape whose byte count overflows.
    let (e, ..) = bad("mm-overflow", |a| {
        set(
            a,
            "train_images",
            Arr::Raw(raw_npy("|u1", &[u64::MAX / 2, 4096, 4096], &[])),
        )
    });
    assert!(matches!(e, DataError::Shape { .. }), "{e}");
    // Garbage instead of an npy header.
    let (e, ..) = bad("mm-garbage", |a| {
        set(a, "train_labels", Arr::Raw(b"not numpy at all".to_vec()))
    });
    assert!(matches!(e, DataError::Npz { .. }), "{e}");
}

#[test]
fn not_a_zip() {
    let dir = Scratch::new("mm-notzip");
    let file = dir.path().join("pathmnist.npz");
    std::fs::write(&file, b"PK\x03\x04 this is not really a zip archive").unwrap();
    let e = open(dir.path(), "pathmnist").err().unwrap();
    assert!(matches!(e, DataError::Npz { .. }), "{e}");
    assert!(e.to_string().contains(&file.display().to_string()));
}

#[test]
fn random_bytes_never_panic() {
    let seed = common::seed();
    let mut state = seed | 1;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let dir = Scratch::new("mm-fuzz");
    // Start from a valid file and corrupt bytes at random: any outcome but a panic is fine.
    write_npz(
        &dir.path().join("pathmnist.npz"),
        &medmnist_arrays([9, 2, 2], 8, true, 9),
    );
    let good = std::fs::read(dir.path().join("pathmnist.npz")).unwrap();
    for _ in 0..200 {
        let mut b = good.clone();
        for _ in 0..1 + next() % 8 {
            let i = (next() as usize) % b.len();
            b[i] = next() as u8;
        }
        std::fs::write(dir.path().join("pathmnist.npz"), &b).unwrap();
        if let Ok(ds) = open(dir.path(), "pathmnist") {
            ds.validate().unwrap();
        }
    }
}
