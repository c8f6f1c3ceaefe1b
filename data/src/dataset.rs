//! The one dataset abstraction: an indexable list of (image, department, class within
//! department) per split, whatever the source.

use std::path::PathBuf;

use image::{DynamicImage, GrayImage, RgbImage};

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

    /// The resized image as `uint8` CHW in `channels` channels, before flip and normalisation:
    /// what the prepared-image cache holds. Resizing is [`Transform::apply`]'s (the same
    /// filter on the same 8-bit image), grey is replicated to RGB exactly; RGB to one channel
    /// rounds the luma to the nearest 8-bit value (≤ 0.5/255 from `apply`'s f32 luma).
    ///
    /// # Panics
    /// If `out.len() != self.numel_u8()` or `channels` is not 1 or 3 (caller bugs).
    pub fn prepare_u8(&self, img: &DynamicImage, out: &mut [u8]) {
        assert_eq!(out.len(), self.numel_u8(), "output buffer size");
        assert!(
            self.channels == 1 || self.channels == 3,
            "channels must be 1 or 3"
        );
        let s = self.size;
        let plane = (s * s) as usize;
        let filter = image::imageops::FilterType::Triangle;
        match img {
            DynamicImage::ImageLuma8(g) => {
                let g = if g.dimensions() == (s, s) {
                    std::borrow::Cow::Borrowed(g)
                } else {
                    std::borrow::Cow::Owned(image::imageops::resize(g, s, s, filter))
                };
                for c in 0..self.channels {
                    out[c * plane..(c + 1) * plane].copy_from_slice(g.as_raw());
                }
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
                let rgb = if rgb.dimensions() == (s, s) {
                    std::borrow::Cow::Borrowed(rgb)
                } else {
                    std::borrow::Cow::Owned(image::imageops::resize(rgb, s, s, filter))
                };
                for (o, p) in rgb.pixels().enumerate() {
                    let p = p.0;
                    if self.channels == 3 {
                        for c in 0..3 {
                            out[c * plane + o] = p[c];
                        }
                    } else {
                        let l = 0.299 * p[0] as f32 + 0.587 * p[1] as f32 + 0.114 * p[2] as f32;
                        out[o] = l.round().clamp(0.0, 255.0) as u8;
                    }
                }
            }
        }
    }

    /// A prepared image ([`Transform::prepare_u8`]) mirrored when `flip` and normalised into
    /// `out`: `(x/255 − mean)/std` per channel, in f32 as [`Transform::apply`] computes it.
    ///
    /// # Panics
    /// If the lengths are not `numel()`.
    pub fn normalise_u8(&self, px: &[u8], flip: bool, out: &mut [f32]) {
        assert_eq!(px.len(), self.numel(), "input size");
        assert_eq!(out.len(), self.numel(), "output size");
        let s = self.size as usize;
        for c in 0..self.channels {
            let (m, d) = (self.mean[c], self.std[c]);
            for y in 0..s {
                let row = c * s * s + y * s;
                for x in 0..s {
                    let sx = if flip { s - 1 - x } else { x };
                    out[row + x] = (px[row + sx] as f32 / 255.0 - m) / d;
                }
            }
        }
    }

    /// Writes the transformed image into `out` (`numel()` floats, CHW).
    ///
    /// # Panics
    /// If `out.len() != self.numel()` or `channels` is not 1 or 3 (caller bugs, not data).
    pub fn apply(&self, img: &DynamicImage, flip: bool, out: &mut [f32]) {
        assert_eq!(out.len(), self.numel(), "output buffer size");
        assert!(
            self.channels == 1 || self.channels == 3,
            "channels must be 1 or 3"
        );
        let s = self.size;
        let plane = (s * s) as usize;
        let filter = image::imageops::FilterType::Triangle;
        // Work in the image's own channel count; convert only at the end (cheaper for grey).
        match img {
            DynamicImage::ImageLuma8(g) => {
                let g = if g.dimensions() == (s, s) {
                    std::borrow::Cow::Borrowed(g)
                } else {
                    std::borrow::Cow::Owned(image::imageops::resize(g, s, s, filter))
                };
                for y in 0..s {
                    for x in 0..s {
                        let sx = if flip { s - 1 - x } else { x };
                        let v = g.get_pixel(sx, y).0[0] as f32 / 255.0;
                        let o = (y * s + x) as usize;
                        for c in 0..self.channels {
                            out[c * plane + o] = (v - self.mean[c]) / self.std[c];
                        }
                    }
                }
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
                let rgb = if rgb.dimensions() == (s, s) {
                    std::borrow::Cow::Borrowed(rgb)
                } else {
                    std::borrow::Cow::Owned(image::imageops::resize(rgb, s, s, filter))
                };
                for y in 0..s {
                    for x in 0..s {
                        let sx = if flip { s - 1 - x } else { x };
                        let p = rgb.get_pixel(sx, y).0;
                        let o = (y * s + x) as usize;
                        if self.channels == 3 {
                            for c in 0..3 {
                                out[c * plane + o] =
                                    (p[c] as f32 / 255.0 - self.mean[c]) / self.std[c];
                            }
                        } else {
                            let l =
                                (0.299 * p[0] as f32 + 0.587 * p[1] as f32 + 0.114 * p[2] as f32)
                                    / 255.0;
                            out[o] = (l - self.mean[0]) / self.std[0];
                        }
                    }
                }
            }
        }
    }
}

/// One model-ready sample.
#[derive(Clone, Debug)]
pub struct Sample {
    /// `channels·size·size` floats, CHW, normalised.
    pub image: Vec<f32>,
    /// Department index.
    pub department: usize,
    /// Class within the department.
    pub class: usize,
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
                let (h, w, c) = (a.height, a.width, a.channels);
                let n = (h * w * c) as usize;
                let off = it.key as usize * n;
                let px = a.pixels[off..off + n].to_vec();
                // Sizes were checked when the array was read, so the buffers fit.
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
        let img = self.raw_image(split, i)?;
        let mut image = vec![0.0; t.numel()];
        t.apply(&img, flip, &mut image);
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
            Source::MedMnist(d) => d.first().map(|a| a.splits[0].height),
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
