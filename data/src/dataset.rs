//! The one dataset abstraction: an indexable list of (image, department, class within
//! department) per split, whatever the source.

use std::path::PathBuf;

use image::{DynamicImage, GrayImage, RgbImage};
use ndarray::{Array3, ArrayView, ArrayView2, ArrayView3, ArrayViewMut3, Axis, Dimension, Zip};

use crate::error::DataError;
use crate::spec::{DataSpec, SyntheticSpec};
use crate::{folder, medmnist, synthetic};

/// A partition of the data.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Split {
    /// Training images (augmented by the loader).
    Train,
    /// Validation images (model selection).
    Val,
    /// Held-out test images (the numbers we report).
    Test,
}

impl Split {
    /// All splits, in order.
    pub const ALL: [Split; 3] = [Split::Train, Split::Val, Split::Test];

    /// `train`, `val` or `test`: the MedMNIST key prefix and the ImageFolder folder name.
    pub fn name(self) -> &'static str {
        match self {
            Split::Train => "train",
            Split::Val => "val",
            Split::Test => "test",
        }
    }

    pub(crate) fn index(self) -> usize {
        self as usize
    }
}

impl std::str::FromStr for Split {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "train" => Ok(Split::Train),
            "val" | "valid" | "validation" => Ok(Split::Val),
            "test" => Ok(Split::Test),
            _ => Err(format!("unknown split {s:?} (train, val, test)")),
        }
    }
}

impl std::fmt::Display for Split {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// A department (one task of the paper): its name and the names of its classes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Department {
    /// Name, e.g. `pathmnist` or the ImageFolder folder name.
    pub name: String,
    /// Class names; a label is an index into this list.
    pub classes: Vec<String>,
}

/// One labelled entry of a split. `key` is where the source finds the pixels.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Item {
    pub dept: u32,
    pub class: u32,
    pub key: u32,
}

/// What a source's `open` returns: departments, items per split, where the pixels are.
pub(crate) type Opened = (Vec<Department>, [Vec<Item>; 3], Source);

pub(crate) enum Source {
    Synthetic(SyntheticSpec),
    MedMnist(Vec<medmnist::DeptArrays>),
    /// Image paths per split; `Item::key` indexes them.
    Folder([Vec<PathBuf>; 3]),
}

/// How raw pixels become model input: resize to `size`×`size` (bilinear), convert to
/// `channels` (grey replicated to RGB, RGB to luma for 1 channel), optionally mirror, then
/// `(x/255 − mean)/std` per channel, CHW order.
#[derive(Clone, Debug, PartialEq)]
pub struct Transform {
    /// Output side in pixels.
    pub size: u32,
    /// 1 or 3.
    pub channels: usize,
    /// Per-channel mean of `x/255` (only the first is used for 1 channel).
    pub mean: [f32; 3],
    /// Per-channel standard deviation of `x/255`.
    pub std: [f32; 3],
}

impl Transform {
    /// ImageNet statistics, what ImageNet-pretrained teachers (torchvision, TorchScript) expect.
    pub fn imagenet(size: u32, channels: usize) -> Self {
        Transform {
            size,
            channels,
            mean: [0.485, 0.456, 0.406],
            std: [0.229, 0.224, 0.225],
        }
    }

    /// Floats per image: `channels·size·size`.
    pub fn numel(&self) -> usize {
        self.channels * (self.size as usize) * (self.size as usize)
    }

    /// Bytes per prepared image ([`Transform::prepare_u8`]): `channels·size·size`.
    pub fn numel_u8(&self) -> usize {
        self.numel()
    }

    /// The shape of one transformed image: `(channels, size, size)`.
    pub fn dim(&self) -> (usize, usize, usize) {
        let s = self.size as usize;
        (self.channels, s, s)
    }

    /// The image resized to `size`×`size` in its own channel count (grey stays grey: cheaper),
    /// as `[H, W]` or `[H, W, 3]` pixels.
    ///
    /// # Panics
    /// If `channels` is not 1 or 3 (a caller bug, not data).
    fn resized(&self, img: &DynamicImage) -> Resized {
        assert!(
            self.channels == 1 || self.channels == 3,
            "channels must be 1 or 3"
        );
        let s = self.size;
        let filter = image::imageops::FilterType::Triangle;
        match img {
            DynamicImage::ImageLuma8(g) if g.dimensions() == (s, s) => Resized::Grey(g.to_vec()),
            DynamicImage::ImageLuma8(g) => {
                Resized::Grey(image::imageops::resize(g, s, s, filter).into_raw())
            }
            other => {
                let rgb_owned;
                let rgb: &RgbImage = match other {
                    DynamicImage::ImageRgb8(r) => r,
                    _ => {
                        rgb_owned = other.to_rgb8();
                        &rgb_owned
                    }
                };
                Resized::Rgb(if rgb.dimensions() == (s, s) {
                    rgb.to_vec()
                } else {
                    image::imageops::resize(rgb, s, s, filter).into_raw()
                })
            }
        }
    }

    /// The resized image as `uint8` CHW in `channels` channels, before flip and normalisation:
    /// what the prepared-image cache holds. Resizing is [`Transform::apply`]'s (the same
    /// filter on the same 8-bit image), grey is replicated to RGB exactly; RGB to one channel
    /// rounds the luma to the nearest 8-bit value (≤ 0.5/255 from `apply`'s f32 luma).
    ///
    /// # Panics
    /// If `out` is not [`Transform::dim`] or `channels` is not 1 or 3 (caller bugs).
    pub fn prepare_u8(&self, img: &DynamicImage, mut out: ArrayViewMut3<u8>) {
        assert_eq!(out.dim(), self.dim(), "output buffer shape");
        let s = self.size as usize;
        match self.resized(img) {
            Resized::Grey(g) => {
                let g = ArrayView2::from_shape((s, s), &g).expect("resized to size×size");
                for mut plane in out.outer_iter_mut() {
                    plane.assign(&g);
                }
            }
            Resized::Rgb(px) => {
                let rgb = ArrayView3::from_shape((s, s, 3), &px).expect("resized to size×size");
                if self.channels == 3 {
                    out.assign(&rgb.permuted_axes([2, 0, 1]));
                } else {
                    Zip::from(out.index_axis_mut(Axis(0), 0))
                        .and(rgb.lanes(Axis(2)))
                        .for_each(|o, p| {
                            let l = 0.299 * p[0] as f32 + 0.587 * p[1] as f32 + 0.114 * p[2] as f32;
                            *o = l.round().clamp(0.0, 255.0) as u8;
                        });
                }
            }
        }
    }

    /// A prepared image ([`Transform::prepare_u8`]) mirrored when `flip` and normalised into
    /// `out`: `(x/255 − mean)/std` per channel, in f32 as [`Transform::apply`] computes it.
    ///
    /// # Panics
    /// If the shapes are not [`Transform::dim`].
    pub fn normalise_u8(&self, px: ArrayView3<u8>, flip: bool, mut out: ArrayViewMut3<f32>) {
        assert_eq!(px.dim(), self.dim(), "input shape");
        assert_eq!(out.dim(), self.dim(), "output shape");
        let px = mirrored(px, flip);
        for (c, (mut o, p)) in out.outer_iter_mut().zip(px.outer_iter()).enumerate() {
            let (m, d) = (self.mean[c], self.std[c]);
            Zip::from(&mut o)
                .and(&p)
                .for_each(|o, &p| *o = (p as f32 / 255.0 - m) / d);
        }
    }

    /// Writes the transformed image into `out` (`[channels, size, size]`).
    ///
    /// # Panics
    /// If `out` is not [`Transform::dim`] or `channels` is not 1 or 3 (caller bugs, not data).
    pub fn apply(&self, img: &DynamicImage, flip: bool, mut out: ArrayViewMut3<f32>) {
        assert_eq!(out.dim(), self.dim(), "output buffer shape");
        let s = self.size as usize;
        match self.resized(img) {
            Resized::Grey(g) => {
                let g = ArrayView2::from_shape((s, s), &g).expect("resized to size×size");
                let g = mirrored(g, flip);
                for (c, mut plane) in out.outer_iter_mut().enumerate() {
                    let (m, d) = (self.mean[c], self.std[c]);
                    Zip::from(&mut plane)
                        .and(&g)
                        .for_each(|o, &p| *o = (p as f32 / 255.0 - m) / d);
                }
            }
            Resized::Rgb(px) => {
                let rgb = ArrayView3::from_shape((s, s, 3), &px).expect("resized to size×size");
                let rgb = mirrored(rgb.permuted_axes([2, 0, 1]), flip);
                if self.channels == 3 {
                    for (c, (mut plane, p)) in
                        out.outer_iter_mut().zip(rgb.outer_iter()).enumerate()
                    {
                        let (m, d) = (self.mean[c], self.std[c]);
                        Zip::from(&mut plane)
                            .and(&p)
                            .for_each(|o, &p| *o = (p as f32 / 255.0 - m) / d);
                    }
                } else {
                    let (m, d) = (self.mean[0], self.std[0]);
                    let ch = |c| rgb.index_axis(Axis(0), c);
                    Zip::from(out.index_axis_mut(Axis(0), 0))
                        .and(ch(0))
                        .and(ch(1))
                        .and(ch(2))
                        .for_each(|o, &r, &g, &b| {
                            let l =
                                (0.299 * r as f32 + 0.587 * g as f32 + 0.114 * b as f32) / 255.0;
                            *o = (l - m) / d;
                        });
                }
            }
        }
    }

    /// The transformed image as a new `[channels, size, size]` array ([`Transform::apply`]).
    ///
    /// # Panics
    /// If `channels` is not 1 or 3 (a caller bug, not data).
    pub fn image(&self, img: &DynamicImage, flip: bool) -> Array3<f32> {
        let mut out = Array3::zeros(self.dim());
        self.apply(img, flip, out.view_mut());
        out
    }
}

/// A resized image in its own channel count: `[H, W]` grey or `[H, W, 3]` RGB bytes.
enum Resized {
    Grey(Vec<u8>),
    Rgb(Vec<u8>),
}

/// `a` mirrored along its last axis (the image's x) when `flip`.
fn mirrored<A, D: Dimension>(mut a: ArrayView<'_, A, D>, flip: bool) -> ArrayView<'_, A, D> {
    if flip {
        let last = Axis(a.ndim() - 1);
        a.invert_axis(last);
    }
    a
}

/// One model-ready sample.
#[derive(Clone, Debug)]
pub struct Sample {
    /// `[channels, size, size]`, normalised.
    pub image: Array3<f32>,
    /// Department index.
    pub department: usize,
    /// Class within the department.
    pub class: usize,
}

impl Sample {
    /// The image as a flat CHW vector (no copy: samples are made in standard layout), for
    /// consumers that take flat buffers.
    pub fn into_chw(self) -> Vec<f32> {
        crate::array::into_flat(self.image)
    }
}

/// A dataset: departments with their classes, and per split a list of labelled images.
///
/// Opening checks the labels and the structure (shapes, dtypes, empty departments); folder
/// images are decoded lazily, so a corrupt file is reported when it is loaded
/// ([`Dataset::validate`] decodes everything up front).
pub struct Dataset {
    spec: DataSpec,
    departments: Vec<Department>,
    splits: [Vec<Item>; 3],
    source: Source,
}

impl Dataset {
    /// Opens the dataset a spec names.
    ///
    /// # Errors
    /// Any [`DataError`]; file errors name the file.
    pub fn open(spec: &DataSpec) -> Result<Self, DataError> {
        let (departments, splits, source) = match spec {
            DataSpec::Synthetic(s) => synthetic::open(s),
            DataSpec::MedMnist { dir, names } => medmnist::open(dir, names)?,
            DataSpec::Folder { dir } => folder::open(dir)?,
        };
        Ok(Dataset {
            spec: spec.clone(),
            departments,
            splits,
            source,
        })
    }

    /// Parses and opens a `--data` string.
    ///
    /// # Errors
    /// As [`DataSpec::parse`] and [`Dataset::open`].
    pub fn open_str(spec: &str) -> Result<Self, DataError> {
        Self::open(&DataSpec::parse(spec)?)
    }

    /// The spec this dataset was opened from.
    pub fn spec(&self) -> &DataSpec {
        &self.spec
    }

    /// Departments, in label order.
    pub fn departments(&self) -> &[Department] {
        &self.departments
    }

    /// Classes of each department.
    pub fn classes_per_department(&self) -> Vec<usize> {
        self.departments.iter().map(|d| d.classes.len()).collect()
    }

    /// Total classes over all departments: the width of the unified (teacher) head.
    pub fn total_classes(&self) -> usize {
        self.departments.iter().map(|d| d.classes.len()).sum()
    }

    /// Index of department `dept`'s class 0 in the unified head.
    ///
    /// # Panics
    /// If `dept` is out of range.
    pub fn class_offset(&self, dept: usize) -> usize {
        self.departments[..dept]
            .iter()
            .map(|d| d.classes.len())
            .sum()
    }

    /// Number of images in a split.
    pub fn len(&self, split: Split) -> usize {
        self.splits[split.index()].len()
    }

    /// True when a split holds no images.
    pub fn is_empty(&self, split: Split) -> bool {
        self.len(split) == 0
    }

    /// (department, class) of image `i` of a split.
    ///
    /// # Panics
    /// If `i >= len(split)`.
    pub fn label(&self, split: Split, i: usize) -> (usize, usize) {
        let it = self.splits[split.index()][i];
        (it.dept as usize, it.class as usize)
    }

    /// Indices of a split's images that belong to one department.
    pub fn indices_of(&self, split: Split, dept: usize) -> Vec<usize> {
        self.splits[split.index()]
            .iter()
            .enumerate()
            .filter(|(_, it)| it.dept as usize == dept)
            .map(|(i, _)| i)
            .collect()
    }

    /// The source pixels of image `i` of a split (decoded, not resized).
    ///
    /// # Errors
    /// [`DataError::Io`] / [`DataError::Image`] naming the file for folder images.
    ///
    /// # Panics
    /// If `i >= len(split)`.
    pub fn raw_image(&self, split: Split, i: usize) -> Result<DynamicImage, DataError> {
        let it = self.splits[split.index()][i];
        match &self.source {
            Source::Synthetic(s) => Ok(DynamicImage::ImageRgb8(synthetic::render(
                s,
                it.dept as usize,
                it.class as usize,
                split,
                it.key as usize,
            ))),
            Source::MedMnist(depts) => {
                let a = &depts[it.dept as usize].splits[split.index()];
                let (_, h, w, c) = a.pixels.dim();
                let (h, w) = (h as u32, w as u32);
                // `[H,W,C]` in logical order: the interleaved bytes `image` expects. Sizes were
                // checked when the array was read, so the buffers fit.
                let px = a
                    .pixels
                    .index_axis(Axis(0), it.key as usize)
                    .iter()
                    .copied()
                    .collect();
                Ok(if c == 1 {
                    DynamicImage::ImageLuma8(
                        GrayImage::from_raw(w, h, px).ok_or(DataError::Worker)?,
                    )
                } else {
                    DynamicImage::ImageRgb8(RgbImage::from_raw(w, h, px).ok_or(DataError::Worker)?)
                })
            }
            Source::Folder(paths) => folder::decode(&paths[split.index()][it.key as usize]),
        }
    }

    /// Image `i` of a split, transformed for the model.
    ///
    /// # Errors
    /// As [`Dataset::raw_image`].
    pub fn sample(
        &self,
        split: Split,
        i: usize,
        t: &Transform,
        flip: bool,
    ) -> Result<Sample, DataError> {
        let (department, class) = self.label(split, i);
        let image = t.image(&self.raw_image(split, i)?, flip);
        Ok(Sample {
            image,
            department,
            class,
        })
    }

    /// What identifies a split's images for the prepared-image cache: the spec (with a
    /// canonical directory), the labels in order and, for folders, the file paths.
    pub(crate) fn identity(&self, split: Split) -> Vec<u8> {
        let canon = |d: &std::path::Path| std::fs::canonicalize(d).unwrap_or(d.to_path_buf());
        let spec = match &self.spec {
            DataSpec::MedMnist { dir, names } => format!(
                "{}",
                DataSpec::MedMnist {
                    dir: canon(dir),
                    names: names.clone()
                }
            ),
            DataSpec::Folder { dir } => format!("{}", DataSpec::Folder { dir: canon(dir) }),
            other => other.to_string(),
        };
        let mut id = format!("{spec}\n{split}\n").into_bytes();
        for it in &self.splits[split.index()] {
            id.extend_from_slice(&it.dept.to_le_bytes());
            id.extend_from_slice(&it.class.to_le_bytes());
            id.extend_from_slice(&it.key.to_le_bytes());
        }
        if let Source::Folder(paths) = &self.source {
            for p in &paths[split.index()] {
                id.extend_from_slice(p.to_string_lossy().as_bytes());
                id.push(0);
            }
        }
        id
    }

    /// Decodes every image of every split, returning the first error (a corrupt file).
    ///
    /// # Errors
    /// The first [`DataError`] met.
    pub fn validate(&self) -> Result<(), DataError> {
        for split in Split::ALL {
            for i in 0..self.len(split) {
                self.raw_image(split, i)?;
            }
        }
        Ok(())
    }

    /// The side of the source images when they all share one: the synthetic size, or the first
    /// MedMNIST file's; None for folders (sizes vary).
    pub fn native_size(&self) -> Option<u32> {
        match &self.source {
            Source::Synthetic(s) => Some(s.size),
            Source::MedMnist(d) => d.first().map(|a| a.splits[0].pixels.dim().1 as u32),
            Source::Folder(_) => None,
        }
    }

    /// A one-line description: source, departments with class counts, split sizes.
    pub fn summary(&self) -> String {
        let depts: Vec<String> = self
            .departments
            .iter()
            .map(|d| format!("{}({})", d.name, d.classes.len()))
            .collect();
        format!(
            "{}: {} departments [{}], train {} / val {} / test {}",
            self.spec,
            self.departments.len(),
            depts.join(", "),
            self.len(Split::Train),
            self.len(Split::Val),
            self.len(Split::Test)
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    /// The per-pixel scalar transform the ndarray one replaced, kept as the reference.
    fn reference(t: &Transform, img: &DynamicImage, flip: bool) -> Vec<f32> {
        let s = t.size;
        let plane = (s * s) as usize;
        let f = image::imageops::FilterType::Triangle;
        // As the old code: the native size is used as is, anything else resized.
        let rgb = img.to_rgb8();
        let rgb = if rgb.dimensions() == (s, s) {
            rgb
        } else {
            image::imageops::resize(&rgb, s, s, f)
        };
        let grey = match img {
            DynamicImage::ImageLuma8(g) if g.dimensions() == (s, s) => Some(g.clone()),
            DynamicImage::ImageLuma8(g) => Some(image::imageops::resize(g, s, s, f)),
            _ => None,
        };
        let mut out = vec![0.0; t.numel()];
        for y in 0..s {
            for x in 0..s {
                let sx = if flip { s - 1 - x } else { x };
                let o = (y * s + x) as usize;
                if let Some(g) = &grey {
                    let v = g.get_pixel(sx, y).0[0] as f32 / 255.0;
                    for c in 0..t.channels {
                        out[c * plane + o] = (v - t.mean[c]) / t.std[c];
                    }
                    continue;
                }
                let p = rgb.get_pixel(sx, y).0;
                if t.channels == 3 {
                    for c in 0..3 {
                        out[c * plane + o] = (p[c] as f32 / 255.0 - t.mean[c]) / t.std[c];
                    }
                } else {
                    let l =
                        (0.299 * p[0] as f32 + 0.587 * p[1] as f32 + 0.114 * p[2] as f32) / 255.0;
                    out[o] = (l - t.mean[0]) / t.std[0];
                }
            }
        }
        out
    }

    /// `apply` is bit-identical to the scalar reference for grey, RGB and RGBA sources, at
    /// the native size and resized, mirrored or not, into 1 and 3 channels; `prepare_u8` then
    /// `normalise_u8` equals it exactly for RGB → 3 channels and grey.
    #[test]
    fn apply_equals_the_scalar_reference_bit_for_bit() {
        let seed: u64 = std::env::var("LORKD_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(rand::random);
        println!("seed {seed} (LORKD_SEED)");
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        for _ in 0..20 {
            let (w, h) = (rng.gen_range(1..30), rng.gen_range(1..30));
            // Square sources at their native size sometimes (no resize).
            let h = if rng.gen_bool(0.3) { w } else { h };
            let img = match rng.gen_range(0..3) {
                0 => DynamicImage::ImageLuma8(GrayImage::from_fn(w, h, |_, _| {
                    image::Luma([rng.gen()])
                })),
                1 => DynamicImage::ImageRgb8(RgbImage::from_fn(w, h, |_, _| image::Rgb(rng.gen()))),
                _ => DynamicImage::ImageRgba8(image::RgbaImage::from_fn(w, h, |_, _| {
                    image::Rgba(rng.gen())
                })),
            };
            let size = if w == h && rng.gen_bool(0.5) {
                w
            } else {
                rng.gen_range(1..20)
            };
            for channels in [1, 3] {
                let mut t = Transform::imagenet(size, channels);
                t.mean[0] = rng.gen_range(0.2..0.6);
                t.std[1] = rng.gen_range(0.1..0.4);
                for flip in [false, true] {
                    let got = t.image(&img, flip);
                    let want = reference(&t, &img, flip);
                    let same = got
                        .iter()
                        .zip(&want)
                        .all(|(a, b)| a.to_bits() == b.to_bits());
                    assert!(same, "{w}x{h} → {size}, {channels} ch, flip {flip}");
                    let grey = matches!(img, DynamicImage::ImageLuma8(_));
                    if channels == 3 || grey {
                        let mut px = Array3::zeros(t.dim());
                        t.prepare_u8(&img, px.view_mut());
                        let mut out = Array3::zeros(t.dim());
                        t.normalise_u8(px.view(), flip, out.view_mut());
                        assert_eq!(out, got);
                    }
                }
            }
        }
    }
}
