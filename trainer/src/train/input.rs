//! The input pipeline of every training and evaluation loop: a split is prepared once as
//! `uint8` at the model's size ([`lorkd_data::PreparedImages`], in memory or a memory-mapped
//! cache file reused across runs, per [`Control::data_cache`]); batches are gathered from it
//! by index on the loader's threads, copied to the device as `uint8` (from pinned memory on
//! CUDA, without waiting), and flipped and normalised there ([`Normaliser`]). With
//! `--data-cache off` the loader decodes, flips and normalises on the CPU as before.

use std::sync::{Arc, Mutex};

use lorkd_data::{CacheMode, Dataset, Loader, LoaderConfig, PreparedImages, Split, Transform};
use tch::{Device, Kind, Tensor};

use super::data as bridge;
use super::run::{progress_bar, Control};

/// Flip and normalisation of `uint8` batches on the device: `(x/255 − mean)/std`.
pub struct Normaliser {
    mean: Tensor,
    std: Tensor,
}

impl Normaliser {
    /// For `t`'s channels and statistics, on `device`.
    pub fn new(t: &Transform, device: Device) -> Self {
        let c = t.channels as i64;
        let v = |a: &[f32; 3]| {
            Tensor::from_slice(&a[..t.channels])
                .reshape([1, c, 1, 1])
                .to_device(device)
        };
        Normaliser {
            mean: v(&t.mean),
            std: v(&t.std),
        }
    }

    /// `pixels` `[n, c, s, s]` uint8 on the device, `flips` `[n]` bool: f32 model input.
    pub fn apply(&self, pixels: &Tensor, flips: &Tensor) -> Tensor {
        let n = pixels.size()[0];
        let mirrored = pixels.flip([3]);
        let x = mirrored.where_self(&flips.reshape([n, 1, 1, 1]), pixels);
        (x.to_kind(Kind::Float) / 255.0 - &self.mean) / &self.std
    }
}

/// A dataset and transform with its prepared splits: where batches come from.
pub struct Input {
    /// The data.
    pub ds: Arc<Dataset>,
    /// The model's transform.
    pub transform: Transform,
    mode: CacheMode,
    device: Device,
    channels_last: bool,
    workers: usize,
    progress: bool,
    norm: Normaliser,
    prepared: Mutex<[Option<Option<Arc<PreparedImages>>>; 3]>,
}

impl Input {
    /// Batches of `ds` for `transform`, prepared as `ctl.data_cache` says.
    pub fn new(ds: Arc<Dataset>, transform: Transform, ctl: &Control) -> Self {
        Input {
            norm: Normaliser::new(&transform, ctl.device),
            ds,
            transform,
            mode: ctl.data_cache.clone(),
            device: ctl.device,
            channels_last: ctl.channels_last,
            workers: ctl.workers.max(1),
            progress: ctl.progress,
            prepared: Mutex::new([None, None, None]),
        }
    }

    /// The split prepared (once per `Input`; None with the cache off).
    ///
    /// # Errors
    /// A corrupt image, an unwritable cache directory.
    pub fn prepared(&self, split: Split) -> anyhow::Result<Option<Arc<PreparedImages>>> {
        let slot = split as usize;
        let mut held = self.prepared.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(p) = &held[slot] {
            return Ok(p.clone());
        }
        let started = std::time::Instant::now();
        let pb = progress_bar(
            self.progress && self.mode != CacheMode::Off,
            self.ds.len(split) as u64,
            &format!("preparing {split} images"),
        );
        let p = PreparedImages::prepare(
            &self.ds,
            split,
            &self.transform,
            &self.mode,
            self.workers,
            &|done, _| pb.set_position(done as u64),
        )?;
        pb.finish_and_clear();
        if let Some(p) = &p {
            let secs = started.elapsed().as_secs_f64();
            if secs > 1.0 {
                eprintln!("prepared {split}: {p:?} in {secs:.1} s");
            }
        }
        held[slot] = Some(p.clone());
        Ok(p)
    }

    /// The loader of one epoch: gathering prepared bytes, or decoding (cache off).
    ///
    /// # Errors
    /// As [`Input::prepared`].
    pub fn loader(&self, split: Split, cfg: LoaderConfig) -> anyhow::Result<Loader> {
        Ok(match self.prepared(split)? {
            Some(p) => Loader::prepared(self.ds.clone(), split, cfg, p),
            None => Loader::new(self.ds.clone(), split, cfg),
        })
    }

    /// A batch's images as f32 model input on the device (channels_last when asked).
    pub fn images(&self, b: &lorkd_data::Batch) -> Tensor {
        let x = self.images_nchw(b);
        if self.channels_last {
            crate::amp::to_channels_last(&x)
        } else {
            x
        }
    }

    fn images_nchw(&self, b: &lorkd_data::Batch) -> Tensor {
        if b.pixels.is_empty() {
            return bridge::images(b, self.device);
        }
        let s = b.shape.map(|d| d as i64);
        let px = crate::upload(&lorkd_data::flat(&b.pixels), self.device).reshape(s);
        let fl = crate::upload(&b.flips, self.device);
        self.norm.apply(&px, &fl)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_normalisation_equals_the_cpu_loader() {
        let seed = crate::testing::seeded("input");
        let ds = Arc::new(
            Dataset::open_str(&format!(
                "synthetic:departments=2,classes=2,size=16,per_class=4,seed={}",
                seed % 1000
            ))
            .unwrap(),
        );
        for ch in [3usize, 1] {
            let mut t = Transform::imagenet(10, ch);
            t.mean[0] = 0.4;
            t.std[0] = 0.3;
            let mut lc = LoaderConfig::train(5, t.clone(), seed, 1);
            lc.workers = 1;
            let live: Vec<_> = Loader::new(ds.clone(), Split::Train, lc.clone())
                .map(|b| b.unwrap())
                .collect();
            let ctl = Control {
                device: Device::Cpu,
                progress: false,
                workers: 2,
                data_cache: CacheMode::Memory,
                ..Control::default()
            };
            let input = Input::new(ds.clone(), t.clone(), &ctl);
            let fast: Vec<_> = input
                .loader(Split::Train, lc)
                .unwrap()
                .map(|b| b.unwrap())
                .collect();
            assert_eq!(live.len(), fast.len());
            let tol = if ch == 1 {
                0.5 / 255.0 / 0.3 + 1e-5
            } else {
                1e-5
            };
            for (l, f) in live.iter().zip(&fast) {
                assert!(f.images.is_empty() && !f.pixels.is_empty());
                let a = input.images(l);
                let b = input.images(f);
                assert_eq!(a.size(), b.size());
                let d = (a - b).abs().max().double_value(&[]);
                assert!(d <= tol, "channels {ch}: max diff {d}");
            }
        }
    }
}
