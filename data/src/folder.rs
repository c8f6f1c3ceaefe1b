//! ImageFolder layout (as RadImageNet ships it): `DIR/<department>/<class>/*.png|jpg`.
//!
//! With `DIR/train/` present, the splits are `DIR/{train,val,test}/<department>/<class>/…`
//! (val and test optional, their classes must exist in train). Without it every image is
//! assigned by a hash of its path relative to `DIR` (FNV-1a): 1 in 10 to val, 1 in 10 to
//! test, the rest to train — the same split on every machine and for every file order.
//! Departments and classes are sorted by name; files other than png/jpg are ignored.

use std::path::{Path, PathBuf};

use image::DynamicImage;

use crate::dataset::{Department, Item, Opened, Source, Split};
use crate::error::DataError;

fn sorted_dirs(dir: &Path) -> Result<Vec<PathBuf>, DataError> {
    let rd = std::fs::read_dir(dir).map_err(|e| DataError::io(dir, e))?;
    let mut out = Vec::new();
    for e in rd {
        let p = e.map_err(|e| DataError::io(dir, e))?.path();
        let hidden = p
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.starts_with('.'));
        if p.is_dir() && !hidden {
            out.push(p);
        }
    }
    out.sort();
    Ok(out)
}

fn sorted_images(dir: &Path) -> Result<Vec<PathBuf>, DataError> {
    let rd = std::fs::read_dir(dir).map_err(|e| DataError::io(dir, e))?;
    let mut out = Vec::new();
    for e in rd {
        let p = e.map_err(|e| DataError::io(dir, e))?.path();
        let ext = p
            .extension()
            .and_then(|x| x.to_str())
            .map(|x| x.to_ascii_lowercase())
            .unwrap_or_default();
        if p.is_file() && matches!(ext.as_str(), "png" | "jpg" | "jpeg") {
            out.push(p);
        }
    }
    out.sort();
    Ok(out)
}

fn name_of(p: &Path) -> String {
    p.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// FNV-1a 64 over the bytes of a relative path: a stable, platform-independent hash.
fn fnv1a(s: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in s.bytes() {
        h ^= b as u64;
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// The split a file goes to when the folder has no `train/`.
pub fn hashed_split(relative: &str) -> Split {
    match fnv1a(relative) % 10 {
        0 => Split::Val,
        1 => Split::Test,
        _ => Split::Train,
    }
}

pub(crate) fn open(dir: &Path) -> Result<Opened, DataError> {
    let mut departments = Vec::new();
    let mut splits: [Vec<Item>; 3] = Default::default();
    let mut paths: [Vec<PathBuf>; 3] = Default::default();
    let mut push = |split: Split, d: usize, c: usize, p: PathBuf| {
        let s = split as usize;
        splits[s].push(Item {
            dept: d as u32,
            class: c as u32,
            key: paths[s].len() as u32,
        });
        paths[s].push(p);
    };

    let train_root = dir.join("train");
    if train_root.is_dir() {
        for (d, ddir) in sorted_dirs(&train_root)?.into_iter().enumerate() {
            let dname = name_of(&ddir);
            let class_dirs = sorted_dirs(&ddir)?;
            let classes: Vec<String> = class_dirs.iter().map(|p| name_of(p)).collect();
            let mut n_train = 0;
            for (c, cdir) in class_dirs.iter().enumerate() {
                for p in sorted_images(cdir)? {
                    push(Split::Train, d, c, p);
                    n_train += 1;
                }
            }
            if n_train == 0 {
                return Err(DataError::Empty {
                    path: ddir,
                    what: "department has no training images (<class>/*.png|jpg)".into(),
                });
            }
            for split in [Split::Val, Split::Test] {
                let sdir = dir.join(split.name()).join(&dname);
                if !sdir.is_dir() {
                    continue;
                }
                for cdir in sorted_dirs(&sdir)? {
                    let cname = name_of(&cdir);
                    let images = sorted_images(&cdir)?;
                    let Some(c) = classes.iter().position(|x| *x == cname) else {
                        if images.is_empty() {
                            continue;
                        }
                        return Err(DataError::UnknownClass {
                            path: cdir,
                            department: dname,
                            class: cname,
                        });
                    };
                    for p in images {
                        push(split, d, c, p);
                    }
                }
            }
            departments.push(Department {
                name: dname,
                classes,
            });
        }
        // A department only under val/ or test/ has nothing to learn from.
        for split in [Split::Val, Split::Test] {
            let sroot = dir.join(split.name());
            if sroot.is_dir() {
                for ddir in sorted_dirs(&sroot)? {
                    let n = name_of(&ddir);
                    if !departments.iter().any(|d| d.name == n) {
                        return Err(DataError::Empty {
                            path: train_root.join(&n),
                            what: format!(
                                "department {n:?} appears in {split}/ but has no training images"
                            ),
                        });
                    }
                }
            }
        }
    } else {
        for (d, ddir) in sorted_dirs(dir)?.into_iter().enumerate() {
            let dname = name_of(&ddir);
            let class_dirs = sorted_dirs(&ddir)?;
            let classes: Vec<String> = class_dirs.iter().map(|p| name_of(p)).collect();
            let mut n_train = 0;
            for (c, cdir) in class_dirs.iter().enumerate() {
                for p in sorted_images(cdir)? {
                    let rel = format!("{dname}/{}/{}", classes[c], name_of(&p));
                    let split = hashed_split(&rel);
                    n_train += (split == Split::Train) as usize;
                    push(split, d, c, p);
                }
            }
            if n_train == 0 {
                return Err(DataError::Empty {
                    path: ddir,
                    what: "department has no training images (<class>/*.png|jpg)".into(),
                });
            }
            departments.push(Department {
                name: dname,
                classes,
            });
        }
    }
    if departments.is_empty() {
        return Err(DataError::Empty {
            path: if train_root.is_dir() {
                train_root
            } else {
                dir.to_path_buf()
            },
            what: "no department folders (<department>/<class>/*.png|jpg)".into(),
        });
    }
    Ok((departments, splits, Source::Folder(paths)))
}

/// Decodes one image file as the dataset sources do (8-bit grey or RGB; alpha and 16 bits
/// dropped); the error names it. `lorkd run` decodes its images here too.
pub fn decode(path: &Path) -> Result<DynamicImage, DataError> {
    let bytes = std::fs::read(path).map_err(|e| DataError::io(path, e))?;
    let img = image::ImageReader::new(std::io::Cursor::new(bytes))
        .with_guessed_format()
        .map_err(|e| DataError::io(path, e))?
        .decode()
        .map_err(|e| DataError::Image {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
    Ok(match img {
        DynamicImage::ImageLuma8(_) | DynamicImage::ImageRgb8(_) => img,
        // 16-bit, alpha, LA: keep the colour, drop the rest.
        other if other.color().has_color() => DynamicImage::ImageRgb8(other.to_rgb8()),
        other => DynamicImage::ImageLuma8(other.to_luma8()),
    })
}
