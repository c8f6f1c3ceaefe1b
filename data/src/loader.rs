//! Batches on worker threads with prefetch: decode, resize, random horizontal flip (train),
//! normalise — so the accelerator is not starved.
//!
//! Deterministic whatever the thread timing: the epoch's order is a Fisher–Yates shuffle
//! seeded by `(seed, epoch)`, each image's flip is a hash of `(seed, epoch, index)`, and
//! worker `w` builds batches `w, w+W, w+2W, …` into its own bounded channel, read back in
//! order. A resumed run that asks for the same `(seed, epoch)` gets the same batches.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{sync_channel, Receiver};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Instant;

use ndarray::Array4;
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use crate::cache::PreparedImages;
use crate::dataset::{Dataset, Split, Transform};
use crate::error::DataError;

/// What a [`Loader`] delivers and how.
#[derive(Clone, Debug)]
pub struct LoaderConfig {
    /// Images per batch.
    pub batch_size: usize,
    /// Shuffle the order each epoch.
    pub shuffle: bool,
    /// Random horizontal flip (training augmentation).
    pub flip: bool,
    /// Drop a last, smaller batch.
    pub drop_last: bool,
    /// Seed of the order and the flips.
    pub seed: u64,
    /// Epoch number, mixed into the seed so each epoch differs.
    pub epoch: u64,
    /// Worker threads (at least 1).
    pub workers: usize,
    /// Batches prepared ahead of the consumer, over all workers (at least 1).
    pub prefetch: usize,
    /// Only these departments (None: all).
    pub departments: Option<Vec<usize>>,
    /// Pixels → model input.
    pub transform: Transform,
}

impl LoaderConfig {
    /// Training defaults: shuffled, flipped, `workers` = available cores up to 8, prefetch 2 per worker.
    pub fn train(batch_size: usize, transform: Transform, seed: u64, epoch: u64) -> Self {
        let workers = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
            .min(8);
        LoaderConfig {
            batch_size,
            shuffle: true,
            flip: true,
            drop_last: false,
            seed,
            epoch,
            workers,
            prefetch: 2 * workers,
            departments: None,
            transform,
        }
    }

    /// Evaluation defaults: in order, no augmentation.
    pub fn eval(batch_size: usize, transform: Transform) -> Self {
        LoaderConfig {
            shuffle: false,
            flip: false,
            ..Self::train(batch_size, transform, 0, 0)
        }
    }
}

/// A batch, ready for a tensor constructor.
#[derive(Clone, Debug)]
pub struct Batch {
    /// `[n, channels, size, size]` floats (empty when the batch was gathered from
    /// [`PreparedImages`]: then `pixels` holds it).
    pub images: Array4<f32>,
    /// `[n, channels, size, size]` prepared bytes, not flipped nor normalised (only from
    /// [`Loader::prepared`]; empty otherwise).
    pub pixels: Array4<u8>,
    /// Whether each image is (for `images`) or must be (for `pixels`) mirrored.
    pub flips: Vec<bool>,
    /// `[n, channels, size, size]`.
    pub shape: [usize; 4],
    /// Department of each image.
    pub departments: Vec<i64>,
    /// Class within the department.
    pub classes: Vec<i64>,
    /// Class in the unified head (`class_offset(department) + class`).
    pub global_classes: Vec<i64>,
    /// Index of each image in its split.
    pub indices: Vec<usize>,
}

impl Batch {
    /// Images in the batch.
    pub fn len(&self) -> usize {
        self.shape[0]
    }

    /// True for a batch of no images (never produced by a [`Loader`]).
    pub fn is_empty(&self) -> bool {
        self.shape[0] == 0
    }
}

fn mix(a: u64, b: u64, c: u64) -> u64 {
    let mut z = a ^ b.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ c.wrapping_mul(0xC2B2_AE3D_27D4_EB4F);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The order of a split's images for one epoch (shuffled or not, optionally one department).
pub fn epoch_order(ds: &Dataset, split: Split, cfg: &LoaderConfig) -> Vec<usize> {
    let mut order: Vec<usize> = match &cfg.departments {
        None => (0..ds.len(split)).collect(),
        Some(ds_) => (0..ds.len(split))
            .filter(|&i| ds_.contains(&ds.label(split, i).0))
            .collect(),
    };
    if cfg.shuffle {
        let mut rng = ChaCha8Rng::seed_from_u64(mix(cfg.seed, cfg.epoch, 0x5EED));
        order.shuffle(&mut rng);
    }
    order
}

/// Whether image `i` is mirrored in `cfg`'s epoch.
fn flip_of(cfg: &LoaderConfig, i: usize) -> bool {
    cfg.flip && mix(cfg.seed, cfg.epoch, i as u64 + 1) & 1 == 1
}

/// Labels, indices and flips of a batch; no pixels yet.
fn labels(ds: &Dataset, split: Split, idx: &[usize], cfg: &LoaderConfig) -> Batch {
    let t = &cfg.transform;
    let mut b = Batch {
        images: Array4::zeros((0, t.channels, t.size as usize, t.size as usize)),
        pixels: Array4::zeros((0, t.channels, t.size as usize, t.size as usize)),
        flips: idx.iter().map(|&i| flip_of(cfg, i)).collect(),
        shape: [idx.len(), t.channels, t.size as usize, t.size as usize],
        departments: Vec::with_capacity(idx.len()),
        classes: Vec::with_capacity(idx.len()),
        global_classes: Vec::with_capacity(idx.len()),
        indices: idx.to_vec(),
    };
    for &i in idx {
        let (d, c) = ds.label(split, i);
        b.departments.push(d as i64);
        b.classes.push(c as i64);
        b.global_classes.push((ds.class_offset(d) + c) as i64);
    }
    b
}

fn build_batch(
    ds: &Dataset,
    split: Split,
    idx: &[usize],
    cfg: &LoaderConfig,
    prepared: Option<&PreparedImages>,
) -> Result<Batch, DataError> {
    let mut b = labels(ds, split, idx, cfg);
    if let Some(p) = prepared {
        b.pixels = p.gather(idx)?;
        return Ok(b);
    }
    let t = &cfg.transform;
    let (c, h, w) = t.dim();
    b.images = Array4::zeros((idx.len(), c, h, w));
    for ((out, &i), &flip) in b.images.outer_iter_mut().zip(idx).zip(&b.flips) {
        t.apply(&ds.raw_image(split, i)?, flip, out);
    }
    Ok(b)
}

/// An iterator of batches over one split for one epoch, built by worker threads.
pub struct Loader {
    receivers: Vec<Receiver<Result<Batch, DataError>>>,
    handles: Vec<JoinHandle<()>>,
    stop: Arc<AtomicBool>,
    next: usize,
    batches: usize,
    images: usize,
    delivered: usize,
    start: Instant,
}

impl Loader {
    /// Starts the workers. Batches come back in order; an error batch names the bad file.
    pub fn new(ds: Arc<Dataset>, split: Split, cfg: LoaderConfig) -> Self {
        Self::start(ds, split, cfg, None)
    }

    /// As [`Loader::new`], but the workers only gather `prepared` bytes by index into
    /// [`Batch::pixels`] (with [`Batch::flips`] to apply): no decoding, no arithmetic.
    /// `prepared` must hold `split` of `ds` prepared for `cfg.transform`.
    pub fn prepared(
        ds: Arc<Dataset>,
        split: Split,
        cfg: LoaderConfig,
        prepared: Arc<PreparedImages>,
    ) -> Self {
        Self::start(ds, split, cfg, Some(prepared))
    }

    fn start(
        ds: Arc<Dataset>,
        split: Split,
        cfg: LoaderConfig,
        prepared: Option<Arc<PreparedImages>>,
    ) -> Self {
        let order = epoch_order(&ds, split, &cfg);
        let bs = cfg.batch_size.max(1);
        let batches = if cfg.drop_last {
            order.len() / bs
        } else {
            order.len().div_ceil(bs)
        };
        let images = if cfg.drop_last {
            batches * bs
        } else {
            order.len()
        };
        let workers = cfg.workers.clamp(1, batches.max(1));
        let depth = cfg.prefetch.max(1).div_ceil(workers);
        let order = Arc::new(order);
        let cfg = Arc::new(cfg);
        let stop = Arc::new(AtomicBool::new(false));
        let mut receivers = Vec::with_capacity(workers);
        let mut handles = Vec::with_capacity(workers);
        for w in 0..workers {
            let (tx, rx) = sync_channel(depth);
            receivers.push(rx);
            let (ds, order, cfg, stop) = (ds.clone(), order.clone(), cfg.clone(), stop.clone());
            let prepared = prepared.clone();
            handles.push(std::thread::spawn(move || {
                for b in (w..batches).step_by(workers) {
                    if stop.load(Ordering::Relaxed) {
                        return;
                    }
                    let idx = &order[b * bs..((b + 1) * bs).min(order.len())];
                    let res = build_batch(&ds, split, idx, &cfg, prepared.as_deref());
                    if tx.send(res).is_err() {
                        return; // The loader was dropped.
                    }
                }
            }));
        }
        Loader {
            receivers,
            handles,
            stop,
            next: 0,
            batches,
            images,
            delivered: 0,
            start: Instant::now(),
        }
    }

    /// Batches this epoch.
    pub fn batches(&self) -> usize {
        self.batches
    }

    /// Images this epoch.
    pub fn images(&self) -> usize {
        self.images
    }

    /// Images delivered so far per second since the loader started (what the consumer got).
    pub fn images_per_sec(&self) -> f64 {
        let s = self.start.elapsed().as_secs_f64();
        if s > 0.0 {
            self.delivered as f64 / s
        } else {
            0.0
        }
    }
}

impl Iterator for Loader {
    type Item = Result<Batch, DataError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.next >= self.batches {
            return None;
        }
        let w = self.next % self.receivers.len();
        self.next += 1;
        match self.receivers[w].recv() {
            Ok(Ok(b)) => {
                self.delivered += b.len();
                Some(Ok(b))
            }
            Ok(Err(e)) => Some(Err(e)),
            // The worker ended without sending: it panicked (a bug); report, do not hang.
            Err(_) => {
                self.next = self.batches;
                Some(Err(DataError::Worker))
            }
        }
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let n = self.batches - self.next;
        (n, Some(n))
    }
}

impl Drop for Loader {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        // Dropping the receivers makes a blocked `send` fail, so every worker ends promptly.
        self.receivers.clear();
        for h in self.handles.drain(..) {
            let _ = h.join();
        }
    }
}
