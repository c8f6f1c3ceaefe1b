//! Loader images/s on the CPU, decoding path vs prepared `uint8` images, in one run:
//! `cargo run --release -p lorkd-data --example loader_speed -- [SPEC] [SIZE] [WORKERS]`.
//! The prepared path is timed as the trainer's CPU path uses it (gather by index, then flip
//! and normalise into f32 with `Transform::normalise_u8`; the trainer does that last part
//! with libtorch on its device).
use std::sync::Arc;
use std::time::Instant;

use lorkd_data::{CacheMode, Dataset, Loader, LoaderConfig, PreparedImages, Split, Transform};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let spec = args
        .get(1)
        .cloned()
        .unwrap_or_else(|| "synthetic:departments=4,classes=5,size=64,per_class=60".into());
    let size: u32 = args.get(2).map_or(Ok(64), |s| s.parse())?;
    let workers: usize = args.get(3).map_or(Ok(1), |s| s.parse())?;
    let ds = Arc::new(Dataset::open_str(&spec)?);
    let t = Transform::imagenet(size, 3);
    let mut cfg = LoaderConfig::train(64, t.clone(), 0, 0);
    cfg.workers = workers;
    cfg.prefetch = 2 * workers;
    let n = ds.len(Split::Train);

    let start = Instant::now();
    for b in Loader::new(ds.clone(), Split::Train, cfg.clone()) {
        std::hint::black_box(b?.images.len());
    }
    let decode = n as f64 / start.elapsed().as_secs_f64();

    let start = Instant::now();
    let p = PreparedImages::prepare(
        &ds,
        Split::Train,
        &t,
        &CacheMode::Memory,
        workers,
        &|_, _| {},
    )?
    .ok_or("no cache")?;
    let prepare_s = start.elapsed().as_secs_f64();

    let start = Instant::now();
    let (c, h, w) = t.dim();
    let mut out = ndarray::Array4::zeros((64, c, h, w));
    for b in Loader::prepared(ds.clone(), Split::Train, cfg, p) {
        let b = b?;
        for ((px, o), &flip) in b
            .pixels
            .outer_iter()
            .zip(out.outer_iter_mut())
            .zip(&b.flips)
        {
            t.normalise_u8(px, flip, o);
        }
        std::hint::black_box(&out);
    }
    let prepared = n as f64 / start.elapsed().as_secs_f64();
    println!(
        "{spec} @{size}, {n} images, {workers} worker(s): decode {decode:.0} img/s ({:.0}/worker) | prepared {prepared:.0} img/s ({:.0}/worker), {:.1}x | prepare once {prepare_s:.2} s",
        decode / workers as f64,
        prepared / workers as f64,
        prepared / decode
    );
    Ok(())
}
