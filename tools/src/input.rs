//! Model inputs from files, the one way every `lorkd` command reads them: `.npy` tensors
//! through `lorkd_data`'s strict reader, images through `lorkd_data`'s decoder and
//! [`Transform`] — the same resize, grey/RGB conversion and normalisation as training and
//! `lorkd eval`, so one image scores the same everywhere.
use std::path::Path;

use anyhow::{bail, ensure, Context, Result};
use lorkd_data::score::transform;
use lorkd_runtime::format::InputSpec;
use ndarray::{ArrayD, Axis};

/// A float32 `.npy` file in memory, as an array of its shape.
///
/// # Errors
/// A malformed or non-float32 file (see [`lorkd_data::npy::read_f32`]).
pub fn read_npy(bytes: &[u8]) -> Result<ArrayD<f32>> {
    lorkd_data::npy::read_f32(bytes).map_err(|e| anyhow::anyhow!("not a float32 .npy: {e}"))
}

/// An image file resized and normalised as the bundle's input spec says (CHW, flat).
///
/// # Errors
/// An unreadable or undecodable file, or a spec with neither 1 nor 3 channels.
pub fn load_image(path: &Path, spec: &InputSpec) -> Result<Vec<f32>> {
    let t = transform(spec);
    ensure!(
        t.channels == 1 || t.channels == 3,
        "the model takes {} channels; images give 1 or 3",
        t.channels
    );
    let img = lorkd_data::folder::decode(path)?;
    Ok(lorkd_data::flat(&t.image(&img, false)).into_owned())
}

/// The model inputs in `path`: `(name, CHW data)` per image. `.npy` float32 `[C,H,W]` or
/// `[N,C,H,W]` (used as is), or `.png` / `.jpg` images ([`load_image`]).
///
/// # Errors
/// One line naming the file and the problem.
pub fn load_inputs(path: &Path, spec: &InputSpec) -> Result<Vec<(String, Vec<f32>)>> {
    let name = path.display().to_string();
    let ext = path
        .extension()
        .and_then(|e| e.to_str())
        .unwrap_or("")
        .to_ascii_lowercase();
    match ext.as_str() {
        "npy" => {
            let bytes = std::fs::read(path).with_context(|| format!("reading {name}"))?;
            let x = read_npy(&bytes).with_context(|| name.clone())?;
            let shape = x.shape();
            let want = [
                spec.channels as usize,
                spec.size as usize,
                spec.size as usize,
            ];
            match shape.len() {
                3 => {
                    ensure!(
                        shape == want,
                        "{name}: shape {shape:?}, the model takes {want:?}"
                    );
                    Ok(vec![(name, lorkd_data::flat(&x).into_owned())])
                }
                4 => {
                    ensure!(
                        shape[1..] == want,
                        "{name}: shape {shape:?}, the model takes [N, {}, {}, {}]",
                        want[0],
                        want[1],
                        want[2]
                    );
                    Ok(x.axis_iter(Axis(0))
                        .enumerate()
                        .map(|(i, x)| (format!("{name}[{i}]"), lorkd_data::flat(&x).into_owned()))
                        .collect())
                }
                _ => bail!("{name}: shape {shape:?}; expected [C,H,W] or [N,C,H,W]"),
            }
        }
        "png" | "jpg" | "jpeg" => Ok(vec![(name, load_image(path, spec)?)]),
        _ => bail!("{name}: unsupported input (use .npy, .png or .jpg)"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use lorkd_data::{Dataset, Split};

    fn spec(channels: u16, size: u16) -> InputSpec {
        InputSpec {
            channels,
            size,
            mean: [0.5, 0.4, 0.3],
            std: [0.25, 0.2, 0.3],
        }
    }

    /// The same grey and RGB images give the same tensor through `lorkd run`'s input path
    /// as through the dataset path training and `lorkd eval` use (folder source), for 1- and
    /// 3-channel models. Before, `lorkd run` converted RGB to grey with the `image` crate's
    /// luma weights (BT.709) while the data path uses BT.601.
    #[test]
    fn run_inputs_match_the_dataset_path() {
        let seed: u64 = std::env::var("LORKD_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(rand::random);
        println!("seed {seed} (LORKD_SEED)");
        use rand::{Rng, SeedableRng};
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        let dir = std::env::temp_dir().join(format!("lorkd-input-{seed}"));
        // One file per class, so a sample's class names its file.
        let files = [
            dir.join("dept").join("c0").join("rgb.png"),
            dir.join("dept").join("c1").join("grey.png"),
        ];
        for f in &files {
            std::fs::create_dir_all(f.parent().unwrap()).unwrap();
        }
        let (w, h) = (rng.gen_range(10..40), rng.gen_range(10..40));
        image::RgbImage::from_fn(w, h, |_, _| image::Rgb(rng.gen()))
            .save(&files[0])
            .unwrap();
        image::GrayImage::from_fn(w, h, |_, _| image::Luma([rng.gen()]))
            .save(&files[1])
            .unwrap();
        let ds = Dataset::open_str(&format!("folder:{}", dir.display())).unwrap();
        for channels in [1u16, 3] {
            let s = spec(channels, 16);
            let t = transform(&s);
            let mut seen = 0;
            for split in Split::ALL {
                for i in 0..ds.len(split) {
                    let (_, class) = ds.label(split, i);
                    let want = ds.sample(split, i, &t, false).unwrap().into_chw();
                    let got = load_inputs(&files[class], &s).unwrap();
                    assert_eq!(got[0].1, want, "class {class} at {channels} channels");
                    seen += 1;
                }
            }
            assert_eq!(seen, 2);
        }
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn npy_inputs_and_errors() {
        let s = spec(3, 4);
        let dir = std::env::temp_dir().join(format!("lorkd-input-npy-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let x: Vec<f32> = (0..96).map(|i| i as f32).collect();
        let p = dir.join("b.npy");
        let arr = |shape: &[usize], n| ndarray::ArrayView::from_shape(shape, &x[..n]).unwrap();
        std::fs::write(&p, lorkd_data::npy::write_f32(&arr(&[2, 3, 4, 4], 96))).unwrap();
        let got = load_inputs(&p, &s).unwrap();
        assert_eq!(got.len(), 2);
        assert_eq!(got[1].1, x[48..]);
        std::fs::write(&p, lorkd_data::npy::write_f32(&arr(&[3, 4, 3], 36))).unwrap();
        let e = load_inputs(&p, &s).unwrap_err().to_string();
        assert!(e.contains("b.npy") && e.contains("shape"), "{e}");
        let mut crafted = lorkd_data::npy::write_f32(&arr(&[3, 4, 4], 48));
        let at = crafted.windows(8).position(|w| w == b"'shape':").unwrap();
        crafted[at + 9] = b')';
        std::fs::write(&p, &crafted).unwrap();
        let e = format!("{:#}", load_inputs(&p, &s).unwrap_err());
        assert!(e.contains("b.npy"), "{e}");
        std::fs::remove_dir_all(&dir).ok();
    }
}
