//! MedMNIST `.npz` files exactly as distributed: one file per department holding
//! `{train,val,test}_images` (uint8 `[N,H,W]` or `[N,H,W,3]`) and `{train,val,test}_labels`
//! (integer `[N,1]`). MedMNIST+ names files `pathmnist_64.npz`; `pathmnist` finds it when it
//! is the only size present.
//!
//! Every header is checked before any allocation it implies: the shape (overflow included),
//! the dtype, C order, and that the payload really holds `N·H·W·C` bytes (see the `npy` module).

use std::fs::File;
use std::io::BufReader;
use std::path::{Path, PathBuf};

use zip::read::ZipFile;
use zip::result::ZipError;
use zip::ZipArchive;

use crate::dataset::{Department, Item, Opened, Source, Split};
use crate::error::DataError;
use crate::npy::{self, NpyHeader};
use ndarray::{Array1, Array4};

/// One split's pixels `[N,H,W,C]` and labels `[N]`.
pub(crate) struct SplitArray {
    pub pixels: Array4<u8>,
    pub labels: Array1<i64>,
}

/// One department's file, all splits loaded.
pub(crate) struct DeptArrays {
    pub splits: [SplitArray; 3],
}

/// Largest accepted image side: 224 is MedMNIST+'s biggest; leave room, refuse absurd headers.
const MAX_SIDE: u64 = 4096;

/// Class names of the 2D MedMNIST v2 datasets (from the `INFO` table of the `medmnist` package).
pub fn known_classes(name: &str) -> Option<&'static [&'static str]> {
    // `pathmnist_64` → `pathmnist`.
    let base = match name.rsplit_once('_') {
        Some((b, size)) if size.chars().all(|c| c.is_ascii_digit()) => b,
        _ => name,
    };
    Some(match base {
        "pathmnist" => &[
            "adipose",
            "background",
            "debris",
            "lymphocytes",
            "mucus",
            "smooth muscle",
            "normal colon mucosa",
            "cancer-associated stroma",
            "colorectal adenocarcinoma epithelium",
        ],
        "dermamnist" => &[
            "actinic keratoses and intraepithelial carcinoma",
            "basal cell carcinoma",
            "benign keratosis-like lesions",
            "dermatofibroma",
            "melanoma",
            "melanocytic nevi",
            "vascular lesions",
        ],
        "octmnist" => &[
            "choroidal neovascularization",
            "diabetic macular edema",
            "drusen",
            "normal",
        ],
        "pneumoniamnist" => &["normal", "pneumonia"],
        "retinamnist" => &["0", "1", "2", "3", "4"],
        "breastmnist" => &["malignant", "normal, benign"],
        "bloodmnist" => &[
            "basophil",
            "eosinophil",
            "erythroblast",
            "immature granulocytes",
            "lymphocyte",
            "monocyte",
            "neutrophil",
            "platelet",
        ],
        "tissuemnist" => &[
            "Collecting Duct, Connecting Tubule",
            "Distal Convoluted Tubule",
            "Glomerular endothelial cells",
            "Interstitial endothelial cells",
            "Leukocytes",
            "Podocytes",
            "Proximal Tubule Segments",
            "Thick Ascending Limb",
        ],
        "organamnist" | "organcmnist" | "organsmnist" => &[
            "bladder",
            "femur-left",
            "femur-right",
            "heart",
            "kidney-left",
            "kidney-right",
            "liver",
            "lung-left",
            "lung-right",
            "pancreas",
            "spleen",
        ],
        _ => return None,
    })
}

fn list_npz(dir: &Path) -> Result<Vec<PathBuf>, DataError> {
    let rd = std::fs::read_dir(dir).map_err(|e| DataError::io(dir, e))?;
    let mut files = Vec::new();
    for e in rd {
        let e = e.map_err(|e| DataError::io(dir, e))?;
        let p = e.path();
        if p.extension().is_some_and(|x| x == "npz") && p.is_file() {
            files.push(p);
        }
    }
    files.sort();
    Ok(files)
}

/// Finds `DIR/name.npz`, else the single `DIR/name_<size>.npz`.
fn resolve(dir: &Path, name: &str) -> Result<PathBuf, DataError> {
    let exact = dir.join(format!("{name}.npz"));
    if exact.is_file() {
        return Ok(exact);
    }
    let prefix = format!("{name}_");
    let sized: Vec<PathBuf> = list_npz(dir)?
        .into_iter()
        .filter(|p| {
            p.file_stem()
                .and_then(|s| s.to_str())
                .and_then(|s| s.strip_prefix(&prefix))
                .is_some_and(|rest| !rest.is_empty() && rest.chars().all(|c| c.is_ascii_digit()))
        })
        .collect();
    match sized.len() {
        0 => Err(DataError::io(
            exact,
            std::io::Error::new(std::io::ErrorKind::NotFound, "no such MedMNIST file"),
        )),
        1 => Ok(sized.into_iter().next().expect("one element")),
        _ => Err(DataError::Spec {
            spec: format!("{}:{name}", dir.display()),
            reason: format!(
                "several sizes of {name} ({}); name one, e.g. {}",
                sized
                    .iter()
                    .filter_map(|p| p.file_name().and_then(|f| f.to_str()))
                    .collect::<Vec<_>>()
                    .join(", "),
                sized[0]
                    .file_stem()
                    .and_then(|s| s.to_str())
                    .unwrap_or(name)
            ),
        }),
    }
}

pub(crate) fn open(dir: &Path, names: &[String]) -> Result<Opened, DataError> {
    let files: Vec<(String, PathBuf)> = if names.is_empty() {
        let files = list_npz(dir)?;
        if files.is_empty() {
            return Err(DataError::Empty {
                path: dir.to_path_buf(),
                what: "no .npz files in this folder".into(),
            });
        }
        files
            .into_iter()
            .map(|p| {
                let stem = p
                    .file_stem()
                    .and_then(|s| s.to_str())
                    .unwrap_or("department")
                    .to_string();
                (stem, p)
            })
            .collect()
    } else {
        names
            .iter()
            .map(|n| Ok((n.clone(), resolve(dir, n)?)))
            .collect::<Result<_, DataError>>()?
    };

    let mut departments = Vec::with_capacity(files.len());
    let mut arrays = Vec::with_capacity(files.len());
    let mut splits: [Vec<Item>; 3] = Default::default();
    for (d, (name, path)) in files.iter().enumerate() {
        let dept = read_file(path)?;
        let classes: Vec<String> = match known_classes(name) {
            Some(c) => c.iter().map(|s| s.to_string()).collect(),
            None => {
                let max = dept
                    .splits
                    .iter()
                    .flat_map(|s| s.labels.iter())
                    .copied()
                    .max()
                    .unwrap_or(0);
                (0..=max.max(0)).map(|c| c.to_string()).collect()
            }
        };
        for split in Split::ALL {
            let a = &dept.splits[split as usize];
            for (i, &l) in a.labels.iter().enumerate() {
                if l < 0 || l as usize >= classes.len() {
                    return Err(DataError::LabelOutOfRange {
                        path: path.clone(),
                        what: format!("{split}_labels"),
                        index: i,
                        label: l,
                        classes: classes.len(),
                    });
                }
                splits[split as usize].push(Item {
                    dept: d as u32,
                    class: l as u32,
                    key: i as u32,
                });
            }
        }
        departments.push(Department {
            name: name.clone(),
            classes,
        });
        arrays.push(dept);
    }
    Ok((departments, splits, Source::MedMnist(arrays)))
}

fn npz_err(path: &Path, what: impl std::fmt::Display) -> DataError {
    DataError::Npz {
        path: path.to_path_buf(),
        what: what.to_string(),
    }
}

fn read_file(path: &Path) -> Result<DeptArrays, DataError> {
    let f = File::open(path).map_err(|e| DataError::io(path, e))?;
    let mut zip = ZipArchive::new(BufReader::new(f)).map_err(|e| npz_err(path, e))?;
    let mut read_split = |split: Split| -> Result<SplitArray, DataError> {
        let ikey = format!("{split}_images");
        let lkey = format!("{split}_labels");
        let pixels = read_images(&mut zip, path, &ikey)?;
        let labels = read_labels(&mut zip, path, &lkey)?;
        let n = pixels.len_of(ndarray::Axis(0));
        if labels.len() != n {
            return Err(DataError::LengthMismatch {
                path: path.to_path_buf(),
                images_key: ikey,
                images: n,
                labels_key: lkey,
                labels: labels.len(),
            });
        }
        Ok(SplitArray { pixels, labels })
    };
    let train = read_split(Split::Train)?;
    let val = read_split(Split::Val)?;
    let test = read_split(Split::Test)?;
    if train.labels.is_empty() {
        return Err(DataError::Empty {
            path: path.to_path_buf(),
            what: "department has no training images (train_images is empty)".into(),
        });
    }
    Ok(DeptArrays {
        splits: [train, val, test],
    })
}

type Npz = ZipArchive<BufReader<File>>;

/// Opens member `key.npy` and parses its header; the reader is left at the payload.
fn member<'a>(
    zip: &'a mut Npz,
    path: &Path,
    key: &str,
) -> Result<(NpyHeader, ZipFile<'a>), DataError> {
    let mut f = match zip.by_name(&format!("{key}.npy")) {
        Ok(f) => f,
        Err(ZipError::FileNotFound) => {
            return Err(DataError::MissingArray {
                path: path.to_path_buf(),
                key: key.to_string(),
            })
        }
        Err(e) => return Err(npz_err(path, format!("{key}: {e}"))),
    };
    let h = npy::read_header(&mut f).map_err(|e| npz_err(path, format!("{key}: {e}")))?;
    if h.fortran_order {
        return Err(npz_err(
            path,
            format!("{key}: Fortran-ordered arrays are not supported"),
        ));
    }
    Ok((h, f))
}

fn read_images(zip: &mut Npz, path: &Path, key: &str) -> Result<Array4<u8>, DataError> {
    let (h, mut f) = member(zip, path, key)?;
    let shape_err = || DataError::Shape {
        path: path.to_path_buf(),
        key: key.to_string(),
        expected: "[N,H,W] or [N,H,W,3] with 1 <= H,W <= 4096".into(),
        got: h.shape.clone(),
    };
    let (h_, w, c) = match *h.shape.as_slice() {
        [_, h, w] => (h, w, 1),
        [_, h, w, c] if c == 3 || c == 1 => (h, w, c),
        _ => return Err(shape_err()),
    };
    if !(1..=MAX_SIDE).contains(&h_) || !(1..=MAX_SIDE).contains(&w) {
        return Err(shape_err());
    }
    if !matches!(h.descr.as_str(), "|u1" | "<u1" | ">u1" | "=u1") {
        return Err(DataError::Dtype {
            path: path.to_path_buf(),
            key: key.to_string(),
            expected: "uint8 (|u1)".into(),
            got: h.descr.clone(),
        });
    }
    npy::numel(&h.shape).ok_or_else(shape_err)?;
    let n = h.shape[0] as usize;
    let pixels = npy::read_u8(&mut f, &h).map_err(|e| npz_err(path, format!("{key}: {e}")))?;
    // `[N,H,W]` is `[N,H,W,1]`: the same bytes.
    pixels
        .into_shape_with_order((n, h_ as usize, w as usize, c as usize))
        .map_err(|_| shape_err())
}

fn read_labels(zip: &mut Npz, path: &Path, key: &str) -> Result<Array1<i64>, DataError> {
    let (h, mut f) = member(zip, path, key)?;
    let shape_err = || DataError::Shape {
        path: path.to_path_buf(),
        key: key.to_string(),
        expected:
            "[N,1] (one class per image; multi-label files such as chestmnist are not supported)"
                .into(),
        got: h.shape.clone(),
    };
    let n = match *h.shape.as_slice() {
        [n, 1] | [n] => n as usize,
        _ => return Err(shape_err()),
    };
    let bad_dtype = || DataError::Dtype {
        path: path.to_path_buf(),
        key: key.to_string(),
        expected: "an integer type (u1, i8, …)".into(),
        got: h.descr.clone(),
    };
    npy::read_ints(&mut f, &h)
        .map_err(|e| npz_err(path, format!("{key}: {e}")))?
        .ok_or_else(bad_dtype)?
        .into_shape_with_order(n)
        .map_err(|_| shape_err())
}
