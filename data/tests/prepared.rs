//! Prepared `uint8` images: normalising them gives exactly what the decoding loader gives
//! (grey and RGB, both flips, resized or not), batches gathered from them carry the same
//! order, labels and flips, and the cache file is reused, and rebuilt when stale.

mod common;

use std::sync::Arc;

use common::Scratch;
use lorkd_data::{CacheMode, Dataset, Loader, LoaderConfig, PreparedImages, Split, Transform};
use ndarray::{Array3, Axis};
use rand::{Rng, SeedableRng};

fn prepare(ds: &Dataset, split: Split, t: &Transform, mode: &CacheMode) -> Arc<PreparedImages> {
    PreparedImages::prepare(ds, split, t, mode, 2, &|_, _| {})
        .unwrap()
        .expect("a cache mode was given")
}

#[test]
fn normalised_prepared_images_equal_the_decoding_path() {
    let seed = common::seed();
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let data_seed: u32 = rng.gen_range(0..1000);
    let ds = Dataset::open_str(&format!(
        "synthetic:departments=2,classes=2,size=20,per_class=3,seed={data_seed}"
    ))
    .unwrap();
    // Native size and a resize, three channels and one (RGB → luma).
    for (size, ch) in [(20u32, 3usize), (13, 3), (20, 1), (11, 1)] {
        let mut t = Transform::imagenet(size, ch);
        t.mean[0] = rng.gen_range(0.3..0.6);
        t.std[0] = rng.gen_range(0.2..0.4);
        let p = prepare(&ds, Split::Val, &t, &CacheMode::Memory);
        assert_eq!(p.len(), ds.len(Split::Val));
        let (mut a, mut b) = (Array3::zeros(t.dim()), Array3::zeros(t.dim()));
        for i in 0..ds.len(Split::Val) {
            let img = ds.raw_image(Split::Val, i).unwrap();
            for flip in [false, true] {
                t.apply(&img, flip, a.view_mut());
                t.normalise_u8(p.image(i).unwrap(), flip, b.view_mut());
                // Luma is rounded to 8 bits when prepared: at most half a level apart.
                let tol = if ch == 1 {
                    0.5 / 255.0 / t.std[0] + 1e-6
                } else {
                    0.0
                };
                for (x, y) in a.iter().zip(&b) {
                    assert!((x - y).abs() <= tol, "size {size} ch {ch}: {x} vs {y}");
                }
            }
        }
    }
}

#[test]
fn prepared_batches_match_the_decoding_loader_and_the_file_is_reused() {
    let ds = Arc::new(
        Dataset::open_str("synthetic:departments=3,classes=2,size=16,per_class=5,seed=3").unwrap(),
    );
    let t = Transform::imagenet(16, 3);
    let scratch = Scratch::new("prepared");
    let mode = CacheMode::Dir(scratch.path().join("cache"));
    let p = prepare(&ds, Split::Train, &t, &mode);
    assert!(p.is_mapped());
    let mut cfg = LoaderConfig::train(4, t.clone(), 9, 2);
    cfg.workers = 2;
    let live: Vec<_> = Loader::new(ds.clone(), Split::Train, cfg.clone())
        .map(|b| b.unwrap())
        .collect();
    let gathered: Vec<_> = Loader::prepared(ds.clone(), Split::Train, cfg, p.clone())
        .map(|b| b.unwrap())
        .collect();
    assert_eq!(live.len(), gathered.len());
    let mut out = Array3::zeros(t.dim());
    for (l, g) in live.iter().zip(&gathered) {
        assert_eq!(l.indices, g.indices);
        assert_eq!(l.flips, g.flips);
        assert_eq!(l.classes, g.classes);
        assert_eq!(l.global_classes, g.global_classes);
        assert!(g.images.is_empty());
        for j in 0..g.len() {
            let px = g.pixels.index_axis(Axis(0), j);
            t.normalise_u8(px, g.flips[j], out.view_mut());
            assert_eq!(l.images.index_axis(Axis(0), j), out);
        }
    }
    // A second run maps the same file; a truncated file is rebuilt.
    let files: Vec<_> = std::fs::read_dir(scratch.path().join("cache"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(files.len(), 1, "{files:?}");
    let again = prepare(&ds, Split::Train, &t, &mode);
    assert!(again.is_mapped());
    assert_eq!(again.image(3), p.image(3));
    let want = p.image(3).unwrap().to_owned();
    // No map may outlive an in-place rewrite of its file (the cache itself only renames).
    drop((p, again));
    let len = std::fs::metadata(&files[0]).unwrap().len();
    std::fs::write(&files[0], b"LORKDU8\0junk").unwrap();
    let rebuilt = prepare(&ds, Split::Train, &t, &mode);
    assert_eq!(std::fs::metadata(&files[0]).unwrap().len(), len);
    assert_eq!(rebuilt.image(3).unwrap(), want);
    // Another size is another file.
    let _ = prepare(&ds, Split::Train, &Transform::imagenet(8, 3), &mode);
    assert_eq!(
        std::fs::read_dir(scratch.path().join("cache"))
            .unwrap()
            .count(),
        2
    );
}
