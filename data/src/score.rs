//! The one loop that scores a packed bundle on a dataset split through the device runtime
//! (feature `runtime`): `lorkd eval` and `lorkd-train eval-bundle` both call
//! [`score_department`], so their numbers cannot drift apart. No tract, no libtorch.
use lorkd_runtime::engine::Engine;
use lorkd_runtime::format::{Bundle, Dept, InputSpec};

use crate::{DataError, Dataset, Sample, Split, Transform};

/// The data transform of a bundle's input spec (resize, channels, normalisation).
pub fn transform(spec: &InputSpec) -> Transform {
    Transform {
        size: u32::from(spec.size),
        channels: usize::from(spec.channels),
        mean: spec.mean,
        std: spec.std,
    }
}

/// Why scoring stopped.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ScoreError {
    /// The bundle's department has no department of that name in the data.
    #[error("department {0} of the bundle is not in the data")]
    MissingDepartment(String),
    /// A sample could not be read.
    #[error(transparent)]
    Data(#[from] DataError),
    /// The runtime refused the bundle, department or input.
    #[error("{0}")]
    Runtime(String),
}

/// One department's count.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Score {
    /// Images scored.
    pub images: usize,
    /// Of which top-1 equals the label.
    pub correct: usize,
}

impl Score {
    /// `correct / images` (0 for no images).
    pub fn accuracy(&self) -> f64 {
        self.correct as f64 / self.images.max(1) as f64
    }
}

/// Images of data department `name` that [`score_department`] scores: the split's, at most
/// `limit`.
///
/// # Errors
/// No data department of that name.
pub fn indices(
    ds: &Dataset,
    name: &str,
    split: Split,
    limit: Option<usize>,
) -> Result<Vec<usize>, ScoreError> {
    let di = ds
        .departments()
        .iter()
        .position(|x| x.name == name)
        .ok_or_else(|| ScoreError::MissingDepartment(name.to_string()))?;
    let mut idx = ds.indices_of(split, di);
    if let Some(l) = limit {
        idx.truncate(l);
    }
    Ok(idx)
}

/// Scores delta `d` (the bundle's own, or an update slot's parsed against `bundle`) on the
/// images of the data department of the same name with `engine` (an engine over `bundle`,
/// in the caller's mode and threads): top-1 of the runtime's logits against the label.
/// `each` sees every sample after it is scored (progress, saving inputs).
///
/// # Errors
/// A missing data department, an unreadable sample, a runtime error, or `each`'s error.
pub fn score_department<'a>(
    bundle: &Bundle<'a>,
    engine: &mut Engine<'_, 'a>,
    d: Dept<'a>,
    ds: &Dataset,
    split: Split,
    limit: Option<usize>,
    mut each: impl FnMut(usize, &Sample) -> Result<(), ScoreError>,
) -> Result<Score, ScoreError> {
    let name = d.manifest.name;
    let rt = |e: &dyn std::fmt::Display| ScoreError::Runtime(format!("{name}: {e}"));
    let t = transform(&bundle.manifest().input);
    let idx = indices(ds, name, split, limit)?;
    engine.select_blob(d).map_err(|e| rt(&e))?;
    let mut logits = vec![0f32; d.manifest.classes.len()];
    let mut correct = 0usize;
    for &i in &idx {
        let s = ds.sample(split, i, &t, false)?;
        let n = engine
            .infer(&crate::flat(&s.image), &mut logits)
            .map_err(|e| rt(&e))?;
        let l = &logits[..n];
        let top = l
            .iter()
            .enumerate()
            .fold(0, |b, (j, v)| if *v > l[b] { j } else { b });
        correct += usize::from(top == s.class);
        each(i, &s)?;
    }
    Ok(Score {
        images: idx.len(),
        correct,
    })
}
