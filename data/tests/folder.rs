//! ImageFolder: hashed split or train/val/test folders, sorted names, png and jpg, and every
//! bad input an error naming the file or folder.

mod common;

use std::path::Path;

use common::Scratch;
use lorkd_data::{folder, DataError, Dataset, Loader, LoaderConfig, Split, Transform};

fn png(path: &Path, w: u32, h: u32, v: u8) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let img = image::RgbImage::from_fn(w, h, |x, y| image::Rgb([v, (x * 7) as u8, (y * 5) as u8]));
    img.save(path).unwrap();
}

fn grey_jpg(path: &Path, v: u8) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    image::GrayImage::from_pixel(40, 30, image::Luma([v]))
        .save(path)
        .unwrap();
}

fn open(dir: &Path) -> Result<Dataset, DataError> {
    Dataset::open_str(&format!("folder:{}", dir.display()))
}

#[test]
fn hashed_split_layout() {
    let dir = Scratch::new("f-hash");
    for (d, classes) in [
        ("lung", ["nodule", "clear"]),
        ("brain", ["tumour", "healthy"]),
    ] {
        for c in classes {
            for i in 0..30 {
                png(
                    &dir.path().join(d).join(c).join(format!("{i:03}.png")),
                    24,
                    24,
                    i as u8,
                );
            }
        }
    }
    std::fs::write(dir.path().join("lung/clear/notes.txt"), "ignored").unwrap();
    grey_jpg(&dir.path().join("lung/clear/x.JPG"), 99);
    let ds = open(dir.path()).unwrap();
    println!("{}", ds.summary());
    let names: Vec<&str> = ds.departments().iter().map(|d| d.name.as_str()).collect();
    assert_eq!(names, ["brain", "lung"], "sorted");
    assert_eq!(ds.departments()[1].classes, ["clear", "nodule"], "sorted");
    let total: usize = Split::ALL.iter().map(|&s| ds.len(s)).sum();
    assert_eq!(total, 121);
    assert!(ds.len(Split::Val) > 0 && ds.len(Split::Test) > 0 && ds.len(Split::Train) > 80);
    // The split is a function of the relative path only.
    let again = open(dir.path()).unwrap();
    for s in Split::ALL {
        assert_eq!(ds.len(s), again.len(s));
    }
    assert_eq!(
        folder::hashed_split("lung/clear/000.png"),
        folder::hashed_split("lung/clear/000.png")
    );
    ds.validate().unwrap();
    // Grey jpg and rgb png both become 3×16×16.
    let t = Transform::imagenet(16, 3);
    let b: Vec<_> = Loader::new(
        std::sync::Arc::new(ds),
        Split::Train,
        LoaderConfig::eval(64, t),
    )
    .map(|b| b.unwrap())
    .collect();
    assert!(b.iter().all(|b| b.shape[1..] == [3, 16, 16]));
}

#[test]
fn explicit_splits() {
    let dir = Scratch::new("f-splits");
    let r = dir.path();
    for (s, n) in [("train", 5), ("val", 2), ("test", 3)] {
        for d in ["derm", "eye"] {
            for c in ["a", "b", "c"] {
                for i in 0..n {
                    png(
                        &r.join(s).join(d).join(c).join(format!("{i}.png")),
                        8,
                        8,
                        10 * i as u8,
                    );
                }
            }
        }
    }
    let ds = open(r).unwrap();
    assert_eq!(
        (
            ds.len(Split::Train),
            ds.len(Split::Val),
            ds.len(Split::Test)
        ),
        (30, 12, 18)
    );
    assert_eq!(ds.classes_per_department(), [3, 3]);
    for i in 0..ds.len(Split::Test) {
        let (d, c) = ds.label(Split::Test, i);
        assert!(d < 2 && c < 3);
    }
    // A val class that train lacks.
    png(&r.join("val/eye/zzz/0.png"), 8, 8, 1);
    let e = open(r).err().unwrap();
    assert!(matches!(e, DataError::UnknownClass { .. }), "{e}");
    assert!(e.to_string().contains("zzz"), "{e}");
    std::fs::remove_dir_all(r.join("val/eye/zzz")).unwrap();
    // A department only in test/.
    png(&r.join("test/ghost/a/0.png"), 8, 8, 1);
    let e = open(r).err().unwrap();
    assert!(
        matches!(e, DataError::Empty { .. }) && e.to_string().contains("ghost"),
        "{e}"
    );
}

#[test]
fn empty_department_is_an_error_naming_it() {
    let dir = Scratch::new("f-empty");
    png(&dir.path().join("lung/a/0.png"), 8, 8, 1);
    png(&dir.path().join("lung/b/1.png"), 8, 8, 1);
    std::fs::create_dir_all(dir.path().join("thyroid/benign")).unwrap();
    let e = open(dir.path()).err().unwrap();
    assert!(matches!(e, DataError::Empty { .. }), "{e}");
    assert!(e.to_string().contains("thyroid"), "{e}");
    let empty = Scratch::new("f-none");
    assert!(matches!(
        open(empty.path()).err().unwrap(),
        DataError::Empty { .. }
    ));
}

#[test]
fn missing_folder() {
    let dir = Scratch::new("f-missing");
    let e = open(&dir.path().join("absent")).err().unwrap();
    assert!(
        matches!(e, DataError::Io { .. }) && e.to_string().contains("absent"),
        "{e}"
    );
}

#[test]
fn corrupt_image_is_an_error_naming_it() {
    let dir = Scratch::new("f-corrupt");
    let r = dir.path();
    for i in 0..20 {
        png(&r.join(format!("train/lung/a/{i}.png")), 8, 8, i);
        png(&r.join(format!("train/lung/b/{i}.png")), 8, 8, i);
    }
    let bad = r.join("train/lung/b/broken.png");
    let mut bytes = std::fs::read(r.join("train/lung/b/0.png")).unwrap();
    bytes.truncate(bytes.len() / 2);
    std::fs::write(&bad, &bytes).unwrap();
    let bad_jpg = r.join("train/lung/a/zz.jpg");
    std::fs::write(&bad_jpg, b"\xff\xd8\xff\xe0 definitely not a jpeg").unwrap();

    let ds = std::sync::Arc::new(open(r).unwrap());
    let e = ds.validate().err().unwrap();
    assert!(matches!(e, DataError::Image { .. }), "{e}");
    // The loader reports it as an error batch naming the file; nothing panics.
    let errs: Vec<String> = Loader::new(
        ds.clone(),
        Split::Train,
        LoaderConfig::eval(4, Transform::imagenet(8, 3)),
    )
    .filter_map(|b| b.err())
    .map(|e| e.to_string())
    .collect();
    println!("{errs:?}");
    assert_eq!(errs.len(), 2);
    assert!(errs.iter().any(|e| e.contains("broken.png")));
    assert!(errs.iter().any(|e| e.contains("zz.jpg")));
}
