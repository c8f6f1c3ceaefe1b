//! Teacher logits computed once: training augments only by a horizontal flip, so each training
//! image has exactly two teacher outputs. They are computed at the start of a run for every
//! image and both flips, kept on the training device as fp16 `[images·2, classes]` (row
//! `2·i + flip`), and saved in the run's `cache/` so a resumed run reuses them. Each step then
//! gathers its rows instead of running the teacher: with a ResNet teacher that is most of a
//! distillation step. `--teacher-cache off` runs the teacher every step instead.
//!
//! fp16 keeps ~3 significant digits: the distillation loss from the cache agrees with the
//! live teacher's to about 1e-3 relative (tested).

use std::path::{Path, PathBuf};

use anyhow::Context;
use lorkd_data::{LoaderConfig, Split};
use tch::{Device, Kind, Tensor};

use super::input::Input;
use super::run::{progress_bar, Control};
use super::teacher::Teacher;

/// Cached teacher logits of a training split.
pub struct TeacherCache {
    rows: Tensor,
    device: Device,
}

fn fnv1a(bytes: &[u8]) -> u64 {
    let mut h = 0xcbf2_9ce4_8422_2325u64;
    for &b in bytes {
        h = (h ^ b as u64).wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// The cache file for this teacher, data and transform inside `dir`.
fn cache_file(dir: &Path, teacher: &Path, input: &Input) -> PathBuf {
    let meta = std::fs::metadata(teacher).ok();
    let stamp = meta
        .as_ref()
        .map(|m| {
            let t = m
                .modified()
                .ok()
                .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                .map_or(0, |d| d.as_nanos());
            format!("{}:{t}", m.len())
        })
        .unwrap_or_default();
    let t = &input.transform;
    let id = format!(
        "{}\n{stamp}\n{}\n{}\n{} {} {:?} {:?}",
        std::fs::canonicalize(teacher)
            .unwrap_or_else(|_| teacher.to_path_buf())
            .display(),
        input.ds.spec(),
        input.ds.len(Split::Train),
        t.size,
        t.channels,
        t.mean,
        t.std
    );
    dir.join(format!("teacher-{:016x}.safetensors", fnv1a(id.as_bytes())))
}

impl TeacherCache {
    /// Loads the cache from `dir` when it matches, else computes it (every training image,
    /// unflipped and flipped) and saves it there. `teacher_path` identifies the teacher.
    ///
    /// # Errors
    /// Data or teacher errors; an unwritable `dir`.
    pub fn build(
        teacher: &Teacher,
        teacher_path: &Path,
        input: &Input,
        dir: &Path,
        batch: usize,
        ctl: &Control,
    ) -> anyhow::Result<TeacherCache> {
        let file = cache_file(dir, teacher_path, input);
        let n = input.ds.len(Split::Train) as i64;
        if let Ok(mut t) = Tensor::read_safetensors(&file) {
            if let Some((_, rows)) = t.pop() {
                if rows.dim() == 2 && rows.size()[0] == 2 * n && rows.kind() == Kind::Half {
                    return Ok(TeacherCache {
                        rows: rows.to_device(ctl.device),
                        device: ctl.device,
                    });
                }
            }
        }
        let rows = Self::compute(teacher, input, batch, ctl)?;
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let tmp = file.with_extension(format!("tmp{}", std::process::id()));
        Tensor::write_safetensors(&[("logits", rows.to_device(Device::Cpu))], &tmp)
            .with_context(|| format!("writing {}", tmp.display()))?;
        std::fs::rename(&tmp, &file).with_context(|| format!("writing {}", file.display()))?;
        Ok(TeacherCache {
            rows,
            device: ctl.device,
        })
    }

    /// Runs the teacher over the training split in order, both flips: fp16 `[2n, classes]`.
    ///
    /// # Errors
    /// Data or teacher errors.
    pub fn compute(
        teacher: &Teacher,
        input: &Input,
        batch: usize,
        ctl: &Control,
    ) -> anyhow::Result<Tensor> {
        let n = input.ds.len(Split::Train);
        let mut lc = LoaderConfig::eval(batch.max(1), input.transform.clone());
        lc.workers = ctl.workers.max(1);
        lc.prefetch = 2 * lc.workers;
        let pb = progress_bar(ctl.progress, n as u64, "teacher logits");
        let mut rows: Option<Tensor> = None;
        for b in input.loader(Split::Train, lc)? {
            let b = b?;
            let xs = input.images(&b);
            let (z, zf) = crate::amp::run(ctl.amp, || -> anyhow::Result<_> {
                Ok((teacher.logits(&xs)?, teacher.logits(&xs.flip([3]))?))
            })?;
            let k = z.size()[1];
            let rows = rows
                .get_or_insert_with(|| Tensor::zeros([2 * n as i64, k], (Kind::Half, ctl.device)));
            let idx: Vec<i64> = b.indices.iter().map(|&i| 2 * i as i64).collect();
            let idx = crate::upload(&idx, ctl.device);
            let _ = rows.index_copy_(0, &idx, &z.to_kind(Kind::Half));
            let _ = rows.index_copy_(0, &(idx + 1), &zf.to_kind(Kind::Half));
            pb.inc(b.len() as u64);
        }
        pb.finish_and_clear();
        rows.context("no training images to run the teacher on")
    }

    /// f32 logits `[B, classes]` of training images `indices`, mirrored where `flips` says.
    pub fn logits(&self, indices: &[usize], flips: &[bool]) -> Tensor {
        let rows: Vec<i64> = indices
            .iter()
            .zip(flips)
            .map(|(&i, &f)| 2 * i as i64 + f as i64)
            .collect();
        self.rows
            .index_select(0, &crate::upload(&rows, self.device))
            .to_kind(Kind::Float)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use lorkd_data::{CacheMode, Dataset};
    use tch::nn;

    use super::*;
    use crate::models::resnet::{ResNet, ResNetArch};
    use crate::train::loss::distillation;

    #[test]
    fn distillation_from_the_cache_equals_the_live_teacher() {
        let seed = crate::testing::seeded("teacher-cache");
        let ds = Arc::new(
            Dataset::open_str(&format!(
                "synthetic:departments=2,classes=3,size=16,per_class=4,seed={}",
                seed % 1000
            ))
            .unwrap(),
        );
        let classes = ds.total_classes() as i64;
        let vs = nn::VarStore::new(Device::Cpu);
        let net = ResNet::new(&vs.root(), ResNetArch::ResNet18, 3, classes, 1e-5);
        let meta = super::super::teacher::TeacherMeta {
            arch: "resnet18".into(),
            in_channels: 3,
            input_size: 16,
            mean: vec![0.485, 0.456, 0.406],
            std: vec![0.229, 0.224, 0.225],
            bn_eps: 1e-5,
            departments: vec![],
        };
        let teacher = Teacher::ResNet { vs, net, meta };
        let ctl = Control {
            device: Device::Cpu,
            progress: false,
            workers: 2,
            threads: Some(1),
            data_cache: CacheMode::Memory,
            ..Control::default()
        };
        let input = Input::new(ds.clone(), lorkd_data::Transform::imagenet(16, 3), &ctl);
        let dir = std::env::temp_dir().join(format!("lorkd-tcache-{}", std::process::id()));
        let path = dir.join("teacher.safetensors");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(&path, b"stand-in for the teacher file").unwrap();
        let cache = TeacherCache::build(&teacher, &path, &input, &dir, 5, &ctl).unwrap();
        // A training epoch's batches, flips included: cached vs live distillation loss.
        let lc = LoaderConfig::train(6, input.transform.clone(), seed, 3);
        let mut checked = 0;
        for b in input.loader(Split::Train, lc).unwrap() {
            let b = b.unwrap();
            let xs = input.images(&b);
            let live = teacher.logits(&xs).unwrap();
            let cached = cache.logits(&b.indices, &b.flips);
            let zs = Tensor::randn([b.len() as i64, classes], (Kind::Float, Device::Cpu)) * 3.0;
            let (a, c) = (
                distillation(&zs, &live, 10.0).double_value(&[]),
                distillation(&zs, &cached, 10.0).double_value(&[]),
            );
            assert!((a - c).abs() <= 1e-3 * a.abs().max(1e-3), "{a} vs {c}");
            checked += b.len();
        }
        assert_eq!(checked, ds.len(Split::Train));
        // Built again: read from the file, the same rows.
        let again = TeacherCache::build(&teacher, &path, &input, &dir, 5, &ctl).unwrap();
        assert!(again.rows.equal(&cache.rows));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
