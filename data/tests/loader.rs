//! The threaded loader: every image once per epoch, deterministic whatever the worker
//! count, flips and normalisation exact, departments filter, unified-head classes.

use std::sync::Arc;

use lorkd_data::{Batch, Dataset, Loader, LoaderConfig, Split, Transform};

fn ds() -> Arc<Dataset> {
    Arc::new(
        Dataset::open_str("synthetic:departments=3,classes=3,size=20,per_class=7,seed=5").unwrap(),
    )
}

fn collect(ds: &Arc<Dataset>, split: Split, cfg: LoaderConfig) -> Vec<Batch> {
    let mut l = Loader::new(ds.clone(), split, cfg);
    let n = l.batches();
    let out: Vec<Batch> = l.by_ref().map(|b| b.unwrap()).collect();
    assert_eq!(out.len(), n);
    println!("loader: {:.0} images/s", l.images_per_sec());
    out
}

#[test]
fn every_image_once_and_deterministic() {
    let ds = ds();
    let t = Transform::imagenet(16, 3);
    let mut cfg = LoaderConfig::train(8, t.clone(), 42, 0);
    cfg.workers = 3;
    cfg.prefetch = 4;
    let a = collect(&ds, Split::Train, cfg.clone());
    let mut seen: Vec<usize> = a.iter().flat_map(|b| b.indices.clone()).collect();
    assert_eq!(seen.len(), ds.len(Split::Train));
    seen.sort();
    seen.dedup();
    assert_eq!(seen.len(), ds.len(Split::Train), "each image exactly once");
    assert_eq!(a.last().unwrap().len(), ds.len(Split::Train) % 8);

    // One worker or three: the same batches, bit for bit.
    let mut one = cfg.clone();
    one.workers = 1;
    one.prefetch = 1;
    let b = collect(&ds, Split::Train, one);
    for (x, y) in a.iter().zip(&b) {
        assert_eq!(x.indices, y.indices);
        assert_eq!(x.images, y.images);
    }
    // Another epoch: another order.
    let mut e1 = cfg.clone();
    e1.epoch = 1;
    let c = collect(&ds, Split::Train, e1);
    assert_ne!(a[0].indices, c[0].indices);

    let mut dl = cfg;
    dl.drop_last = true;
    let d = collect(&ds, Split::Train, dl);
    assert!(d.iter().all(|b| b.len() == 8));
    assert_eq!(d.len(), ds.len(Split::Train) / 8);
}

#[test]
fn labels_offsets_and_normalisation() {
    let ds = ds();
    let t = Transform::imagenet(20, 3);
    let batches = collect(&ds, Split::Test, LoaderConfig::eval(5, t.clone()));
    let mut k = 0;
    for b in &batches {
        assert_eq!(b.shape, [b.len(), 3, 20, 20]);
        for j in 0..b.len() {
            let i = b.indices[j];
            assert_eq!(i, k, "eval order is the split order");
            k += 1;
            let (d, c) = ds.label(Split::Test, i);
            assert_eq!((b.departments[j], b.classes[j]), (d as i64, c as i64));
            assert_eq!(b.global_classes[j], (3 * d + c) as i64);
            // No resize at size 20: exactly (x/255 - mean)/std.
            let raw = ds.raw_image(Split::Test, i).unwrap();
            let px = raw.as_bytes();
            for ch in 0..3 {
                for p in (0..400).step_by(37) {
                    let want = (px[p * 3 + ch] as f32 / 255.0 - t.mean[ch]) / t.std[ch];
                    assert!(
                        (b.images.as_slice().unwrap()[j * 1200 + ch * 400 + p] - want).abs() < 1e-5
                    );
                }
            }
        }
    }
}

#[test]
fn flips_are_mirrors_and_only_in_training() {
    let ds = ds();
    let t = Transform::imagenet(20, 1);
    let mut cfg = LoaderConfig::train(100, t.clone(), 9, 0);
    cfg.shuffle = false;
    let flipped = collect(&ds, Split::Train, cfg.clone());
    cfg.flip = false;
    let plain = collect(&ds, Split::Train, cfg);
    let (mut n_flip, mut n_same) = (0, 0);
    for (fb, pb) in flipped.iter().zip(&plain) {
        for j in 0..fb.len() {
            let f = &fb.images.as_slice().unwrap()[j * 400..(j + 1) * 400];
            let p = &pb.images.as_slice().unwrap()[j * 400..(j + 1) * 400];
            if f == p {
                n_same += 1;
            } else {
                for y in 0..20 {
                    for x in 0..20 {
                        assert_eq!(
                            f[y * 20 + x],
                            p[y * 20 + 19 - x],
                            "flip is a horizontal mirror"
                        );
                    }
                }
                n_flip += 1;
            }
        }
    }
    println!("flipped {n_flip}, kept {n_same}");
    assert!(n_flip > 10 && n_same > 10, "about half flipped");
}

#[test]
fn department_filter_and_resize() {
    let ds = ds();
    let mut cfg = LoaderConfig::train(4, Transform::imagenet(32, 3), 1, 0);
    cfg.departments = Some(vec![2]);
    let b = collect(&ds, Split::Train, cfg);
    let n: usize = b.iter().map(Batch::len).sum();
    assert_eq!(n, ds.indices_of(Split::Train, 2).len());
    assert!(b.iter().all(|b| b.departments.iter().all(|&d| d == 2)));
    assert_eq!(b[0].shape, [4, 3, 32, 32]);
}

#[test]
fn dropping_a_loader_early_does_not_hang() {
    let ds = ds();
    let mut cfg = LoaderConfig::train(2, Transform::imagenet(16, 3), 0, 0);
    cfg.workers = 2;
    cfg.prefetch = 2;
    let mut l = Loader::new(ds, Split::Train, cfg);
    assert!(l.next().unwrap().is_ok());
    drop(l);
}
