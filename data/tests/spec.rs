//! `--data` strings.

use std::path::PathBuf;

use lorkd_data::{DataError, DataSpec, SyntheticSpec};

#[test]
fn parses_and_round_trips() {
    assert_eq!(
        DataSpec::parse("synthetic").unwrap(),
        DataSpec::Synthetic(SyntheticSpec::default())
    );
    let s =
        DataSpec::parse("synthetic:departments=10,classes=5,size=32,per_class=20,seed=7").unwrap();
    assert_eq!(
        s,
        DataSpec::Synthetic(SyntheticSpec {
            departments: 10,
            classes: 5,
            size: 32,
            per_class: 20,
            seed: 7
        })
    );
    let m = DataSpec::parse("medmnist:/data/mm:pathmnist,octmnist.npz").unwrap();
    assert_eq!(
        m,
        DataSpec::MedMnist {
            dir: PathBuf::from("/data/mm"),
            names: vec!["pathmnist".into(), "octmnist".into()]
        }
    );
    assert_eq!(
        DataSpec::parse("medmnist:data").unwrap(),
        DataSpec::MedMnist {
            dir: PathBuf::from("data"),
            names: vec![]
        }
    );
    assert_eq!(
        DataSpec::parse("folder:/x/y").unwrap(),
        DataSpec::Folder {
            dir: PathBuf::from("/x/y")
        }
    );
    for spec in [
        s,
        m,
        DataSpec::parse("folder:/x/y").unwrap(),
        DataSpec::parse("synthetic:size=16").unwrap(),
    ] {
        assert_eq!(DataSpec::parse(&spec.to_string()).unwrap(), spec);
    }
}

#[test]
fn rejects_bad_specs() {
    for bad in [
        "imagenet",
        "synthetic:departments",
        "synthetic:classes=x",
        "synthetic:colour=3",
        "synthetic:classes=1",
        "synthetic:departments=0",
        "synthetic:size=8",
        "synthetic:size=100000",
        "synthetic:per_class=0",
        "medmnist",
        "medmnist:",
        "medmnist::pathmnist",
        "folder",
        "folder:",
    ] {
        let e = DataSpec::parse(bad)
            .err()
            .unwrap_or_else(|| panic!("{bad} must fail"));
        assert!(matches!(e, DataError::Spec { .. }));
        println!("{bad:?}: {e}");
    }
}
