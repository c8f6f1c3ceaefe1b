//! The `--data` string: `synthetic[:k=v,…]`, `medmnist:DIR[:name,…]`, `folder:DIR`.

use std::fmt;
use std::path::PathBuf;

use crate::error::DataError;

/// Parameters of the synthetic departments (see [`crate::synthetic`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SyntheticSpec {
    /// Number of departments (looks cycle every 4; the deciding cue shifts after that).
    pub departments: usize,
    /// Classes per department (2 ..= 16).
    pub classes: usize,
    /// Rendered image side in pixels (16 ..= 512).
    pub size: u32,
    /// Training images per class per department; val and test get `max(1, per_class / 4)` each.
    pub per_class: usize,
    /// Seed of the generator: same seed, same images, on every machine.
    pub seed: u64,
}

impl Default for SyntheticSpec {
    fn default() -> Self {
        SyntheticSpec {
            departments: 4,
            classes: 3,
            size: 64,
            per_class: 200,
            seed: 0,
        }
    }
}

/// Where the images come from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DataSpec {
    /// Generated on the fly.
    Synthetic(SyntheticSpec),
    /// MedMNIST `.npz` files as distributed, one file per department. `names` empty = every
    /// `*.npz` in `dir`, sorted.
    MedMnist {
        /// Folder holding the files.
        dir: PathBuf,
        /// Department names (`pathmnist`, `octmnist_64`, …).
        names: Vec<String>,
    },
    /// ImageFolder `DIR/<department>/<class>/*.png|jpg`, or `DIR/{train,val,test}/<department>/<class>/…`.
    Folder {
        /// Root folder.
        dir: PathBuf,
    },
}

impl DataSpec {
    /// Parses a `--data` string. `DIR` must not contain `:` when names follow it.
    ///
    /// # Errors
    /// [`DataError::Spec`] naming the bad part.
    pub fn parse(s: &str) -> Result<Self, DataError> {
        let (kind, rest) = match s.split_once(':') {
            Some((k, r)) => (k, Some(r)),
            None => (s, None),
        };
        match kind {
            "synthetic" => {
                let mut spec = SyntheticSpec::default();
                for kv in rest.unwrap_or("").split(',').filter(|p| !p.is_empty()) {
                    let (k, v) = kv.split_once('=').ok_or_else(|| {
                        DataError::spec(s, format!("expected key=value, got {kv:?}"))
                    })?;
                    let num = |max: u64| -> Result<u64, DataError> {
                        let n: u64 = v.trim().parse().map_err(|_| {
                            DataError::spec(s, format!("{k}={v:?} is not a number"))
                        })?;
                        if n > max {
                            return Err(DataError::spec(s, format!("{k}={n} exceeds {max}")));
                        }
                        Ok(n)
                    };
                    match k.trim() {
                        "departments" => spec.departments = num(64)? as usize,
                        "classes" => spec.classes = num(16)? as usize,
                        "size" => spec.size = num(512)? as u32,
                        "per_class" => spec.per_class = num(1_000_000)? as usize,
                        "seed" => spec.seed = num(u64::MAX)?,
                        other => {
                            return Err(DataError::spec(
                                s,
                                format!("unknown key {other:?} (departments, classes, size, per_class, seed)"),
                            ))
                        }
                    }
                }
                if spec.departments == 0 {
                    return Err(DataError::spec(s, "departments must be at least 1"));
                }
                if spec.classes < 2 {
                    return Err(DataError::spec(s, "classes must be at least 2"));
                }
                if spec.size < 16 {
                    return Err(DataError::spec(s, "size must be at least 16"));
                }
                if spec.per_class == 0 {
                    return Err(DataError::spec(s, "per_class must be at least 1"));
                }
                Ok(DataSpec::Synthetic(spec))
            }
            "medmnist" => {
                let rest = rest
                    .filter(|r| !r.is_empty())
                    .ok_or_else(|| DataError::spec(s, "expected medmnist:DIR[:name,…]"))?;
                let (dir, names) = match rest.rsplit_once(':') {
                    Some((d, n)) => (d, n),
                    None => (rest, ""),
                };
                let names: Vec<String> = names
                    .split(',')
                    .map(str::trim)
                    .filter(|n| !n.is_empty())
                    .map(|n| n.strip_suffix(".npz").unwrap_or(n).to_string())
                    .collect();
                if names.iter().any(|n| n.contains('/')) {
                    return Err(DataError::spec(s, "department names must not contain '/'"));
                }
                if dir.is_empty() {
                    return Err(DataError::spec(s, "empty DIR"));
                }
                Ok(DataSpec::MedMnist {
                    dir: PathBuf::from(dir),
                    names,
                })
            }
            "folder" => {
                let dir = rest
                    .filter(|r| !r.is_empty())
                    .ok_or_else(|| DataError::spec(s, "expected folder:DIR"))?;
                Ok(DataSpec::Folder {
                    dir: PathBuf::from(dir),
                })
            }
            other => Err(DataError::spec(
                s,
                format!("unknown source {other:?} (synthetic, medmnist:DIR, folder:DIR)"),
            )),
        }
    }
}

impl std::str::FromStr for DataSpec {
    type Err = DataError;
    fn from_str(s: &str) -> Result<Self, DataError> {
        DataSpec::parse(s)
    }
}

impl fmt::Display for DataSpec {
    /// The canonical form; `parse(spec.to_string()) == spec`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DataSpec::Synthetic(s) => write!(
                f,
                "synthetic:departments={},classes={},size={},per_class={},seed={}",
                s.departments, s.classes, s.size, s.per_class, s.seed
            ),
            DataSpec::MedMnist { dir, names } if names.is_empty() => {
                write!(f, "medmnist:{}", dir.display())
            }
            DataSpec::MedMnist { dir, names } => {
                write!(f, "medmnist:{}:{}", dir.display(), names.join(","))
            }
            DataSpec::Folder { dir } => write!(f, "folder:{}", dir.display()),
        }
    }
}
