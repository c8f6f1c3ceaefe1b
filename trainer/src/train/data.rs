//! Bridge from `lorkd-data` to libtorch: dataset departments ↔ checkpoint config, batches →
//! tensors, the model's input transform.

use lorkd_data::{Batch, Dataset, Transform};
use tch::{Device, Tensor};

use crate::config::{Config, Department};

/// The checkpoint's departments for a dataset (same names and classes, same order).
pub fn departments(ds: &Dataset) -> Vec<Department> {
    ds.departments()
        .iter()
        .map(|d| Department {
            name: d.name.clone(),
            classes: d.classes.clone(),
        })
        .collect()
}

/// Checks that a checkpoint was trained on a dataset laid out like `ds`.
pub fn check_matches(cfg: &Config, ds: &Dataset) -> anyhow::Result<()> {
    let want = departments(ds);
    anyhow::ensure!(
        cfg.departments.len() == want.len()
            && cfg
                .departments
                .iter()
                .zip(&want)
                .all(|(a, b)| a.name == b.name && a.classes.len() == b.classes.len()),
        "the checkpoint's departments {:?} do not match the data's {:?}",
        cfg.departments
            .iter()
            .map(|d| format!("{}({})", d.name, d.classes.len()))
            .collect::<Vec<_>>(),
        want.iter()
            .map(|d| format!("{}({})", d.name, d.classes.len()))
            .collect::<Vec<_>>()
    );
    Ok(())
}

/// The input transform a config was trained with.
pub fn transform(cfg: &Config) -> Transform {
    let mut t = Transform::imagenet(cfg.input_size as u32, cfg.in_channels as usize);
    for c in 0..cfg.in_channels.min(3) as usize {
        t.mean[c] = cfg.mean[c] as f32;
        t.std[c] = cfg.std[c] as f32;
    }
    t
}

/// Default square input size for a dataset: the synthetic or MedMNIST native side, else 224.
pub fn default_input_size(ds: &Dataset) -> i64 {
    ds.native_size().map_or(224, i64::from)
}

/// Images `[n, c, s, s]` on `device`.
pub fn images(b: &Batch, device: Device) -> Tensor {
    let s = b.shape.map(|d| d as i64);
    crate::upload(&lorkd_data::flat(&b.images), device).reshape(s)
}
