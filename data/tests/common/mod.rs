//! Test helpers: scratch folders and MedMNIST-layout `.npz` writers.
#![allow(dead_code)]

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use npyz::WriterBuilder;

/// A fresh empty folder under the system temp dir, removed on drop.
pub struct Scratch(pub PathBuf);

impl Scratch {
    pub fn new(tag: &str) -> Self {
        static N: AtomicUsize = AtomicUsize::new(0);
        let p = std::env::temp_dir().join(format!(
            "lorkd-data-{tag}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        Scratch(p)
    }
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A seed per run, printed so a failure can be replayed with LORKD_TEST_SEED.
pub fn seed() -> u64 {
    let s = std::env::var("LORKD_TEST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
        });
    println!("seed = {s} (LORKD_TEST_SEED={s} to replay)");
    s
}

/// One array of an npz under construction.
pub enum Arr {
    U8(Vec<u64>, Vec<u8>),
    I64(Vec<u64>, Vec<i64>),
    F32(Vec<u64>, Vec<f32>),
    /// Raw `.npy` bytes, written as-is (for malformed members).
    Raw(Vec<u8>),
}

/// Writes an `.npz` (deflate-compressed, as `np.savez_compressed` does) with these members.
pub fn write_npz(path: &Path, arrays: &[(&str, Arr)]) {
    let opts =
        zip::write::FileOptions::default().compression_method(zip::CompressionMethod::Deflated);
    let mut npz = npyz::npz::NpzWriter::create(path).unwrap();
    for (name, a) in arrays {
        match a {
            Arr::U8(shape, data) => {
                let mut w = npz
                    .array::<u8>(name, opts)
                    .unwrap()
                    .default_dtype()
                    .shape(shape)
                    .begin_nd()
                    .unwrap();
                w.extend(data.iter().copied()).unwrap();
                w.finish().unwrap();
            }
            Arr::I64(shape, data) => {
                let mut w = npz
                    .array::<i64>(name, opts)
                    .unwrap()
                    .default_dtype()
                    .shape(shape)
                    .begin_nd()
                    .unwrap();
                w.extend(data.iter().copied()).unwrap();
                w.finish().unwrap();
            }
            Arr::F32(shape, data) => {
                let mut w = npz
                    .array::<f32>(name, opts)
                    .unwrap()
                    .default_dtype()
                    .shape(shape)
                    .begin_nd()
                    .unwrap();
                w.extend(data.iter().copied()).unwrap();
                w.finish().unwrap();
            }
            Arr::Raw(bytes) => {
                let z = npz.zip_writer();
                z.start_file(format!("{name}.npy"), opts).unwrap();
                z.write_all(bytes).unwrap();
            }
        }
    }
    npz.zip_writer().finish().unwrap();
}

/// A `.npy` v1.0 header for a C-ordered array; `data` appended as given (may be short).
pub fn raw_npy(descr: &str, shape: &[u64], data: &[u8]) -> Vec<u8> {
    let dims: Vec<String> = shape.iter().map(|d| d.to_string()).collect();
    let shape = if dims.len() == 1 {
        format!("({},)", dims[0])
    } else {
        format!("({})", dims.join(", "))
    };
    let mut dict = format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': {shape}, }}");
    while (10 + dict.len() + 1) % 64 != 0 {
        dict.push(' ');
    }
    dict.push('\n');
    let mut out = b"\x93NUMPY\x01\x00".to_vec();
    out.extend_from_slice(&(dict.len() as u16).to_le_bytes());
    out.extend_from_slice(dict.as_bytes());
    out.extend_from_slice(data);
    out
}

/// MedMNIST-layout arrays: `n` images per split of side `side` (`rgb`: `[N,H,W,3]`), labels
/// `[N,1]` uint8 cycling over `classes`; pixel `p` of image `i` of split `s` is
/// `(31·i + 7·p + 50·s) mod 256` so tests can check every byte.
pub fn medmnist_arrays(
    n: [usize; 3],
    side: usize,
    rgb: bool,
    classes: u8,
) -> Vec<(&'static str, Arr)> {
    let c = if rgb { 3 } else { 1 };
    let mut out = Vec::new();
    for (s, (ik, lk)) in [
        ("train_images", "train_labels"),
        ("val_images", "val_labels"),
        ("test_images", "test_labels"),
    ]
    .into_iter()
    .enumerate()
    {
        let per = side * side * c;
        let px: Vec<u8> = (0..n[s] * per)
            .map(|q| expected_pixel(s, q / per, q % per))
            .collect();
        let mut shape = vec![n[s] as u64, side as u64, side as u64];
        if rgb {
            shape.push(3);
        }
        out.push((ik, Arr::U8(shape, px)));
        let labels: Vec<u8> = (0..n[s]).map(|i| (i % classes as usize) as u8).collect();
        out.push((lk, Arr::U8(vec![n[s] as u64, 1], labels)));
    }
    out
}

pub fn expected_pixel(split: usize, i: usize, p: usize) -> u8 {
    ((31 * i + 7 * p + 50 * split) % 256) as u8
}
