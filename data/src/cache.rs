//! Prepared images: a split decoded and resized ONCE into `uint8` CHW at the training size
//! ([`Transform::prepare_u8`]), so an epoch only gathers bytes by index (the flip and the
//! normalisation happen later, on the device or in [`Transform::normalise_u8`]).
//!
//! Held in memory, or in a file of the cache directory that is memory-mapped and reused by
//! later runs. The file name is a hash of what identifies the images (the data spec with a
//! canonical directory, the split's labels and, for folders, the file paths) and of the size
//! and channels; a file whose header or length does not match is rebuilt. Editing images in
//! place without renaming them is not noticed: delete the cache directory then.
//!
//! File layout: `LORKDU8\0`, then little-endian u32 version, u64 images, u32 channels,
//! u32 size, then the images back to back.

use ndarray::{Array4, ArrayView3, ArrayViewMut3};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use crate::dataset::{Dataset, Split, Transform};
use crate::error::DataError;

const MAGIC: &[u8; 8] = b"LORKDU8\0";
const VERSION: u32 = 1;
const HEADER: usize = 8 + 4 + 8 + 4 + 4;

/// Where prepared images live.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CacheMode {
    /// Not prepared: every epoch decodes and resizes again.
    Off,
    /// Prepared into memory for this process.
    Memory,
    /// Prepared into a memory-mapped file in this directory, reused across runs.
    Dir(PathBuf),
}

impl CacheMode {
    /// `off`, `memory` or a directory.
    pub fn parse(s: &str) -> Self {
        match s {
            "off" | "none" => CacheMode::Off,
            "memory" | "mem" => CacheMode::Memory,
            d => CacheMode::Dir(PathBuf::from(d)),
        }
    }

    /// `$LORKD_CACHE_DIR/images`, else `$XDG_CACHE_HOME/lorkd/images`, else
    /// `~/.cache/lorkd/images`; memory when none of them is set.
    pub fn default_dir() -> Self {
        let base = std::env::var_os("LORKD_CACHE_DIR")
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("XDG_CACHE_HOME").map(|d| PathBuf::from(d).join("lorkd")))
            .or_else(|| std::env::var_os("HOME").map(|d| PathBuf::from(d).join(".cache/lorkd")));
        match base {
            Some(b) => CacheMode::Dir(b.join("images")),
            None => CacheMode::Memory,
        }
    }
}

enum Storage {
    Memory(Vec<u8>),
    Mapped(memmap2::Mmap),
}

/// One split's images prepared as `uint8` CHW.
pub struct PreparedImages {
    storage: Storage,
    images: usize,
    channels: usize,
    size: usize,
}

impl std::fmt::Debug for PreparedImages {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "PreparedImages({} × {}×{}×{}, {})",
            self.images,
            self.channels,
            self.size,
            self.size,
            match self.storage {
                Storage::Memory(_) => "memory",
                Storage::Mapped(_) => "mapped",
            }
        )
    }
}

fn fnv1a(bytes: &[u8]) -> u64 {
    let mut h = 0xcbf2_9ce4_8422_2325u64;
    for &b in bytes {
        h = (h ^ b as u64).wrapping_mul(0x0100_0000_01b3);
    }
    h
}

impl PreparedImages {
    /// Prepares `split` of `ds` for `t` (size, channels) as `mode` says (None for
    /// [`CacheMode::Off`]), decoding on `workers` threads; `progress(done, total)` is called
    /// as images are done (from the workers).
    ///
    /// # Errors
    /// A corrupt image (named), or the cache file cannot be written.
    pub fn prepare(
        ds: &Dataset,
        split: Split,
        t: &Transform,
        mode: &CacheMode,
        workers: usize,
        progress: &(dyn Fn(usize, usize) + Sync),
    ) -> Result<Option<Arc<PreparedImages>>, DataError> {
        let n = ds.len(split);
        let per = t.numel_u8();
        match mode {
            CacheMode::Off => Ok(None),
            CacheMode::Memory => {
                let mut buf = vec![0u8; n * per];
                fill(ds, split, t, &mut buf, workers, progress)?;
                Ok(Some(Arc::new(PreparedImages {
                    storage: Storage::Memory(buf),
                    images: n,
                    channels: t.channels,
                    size: t.size as usize,
                })))
            }
            CacheMode::Dir(dir) => {
                let mut id = ds.identity(split);
                id.extend_from_slice(format!("\n{}x{}", t.channels, t.size).as_bytes());
                let path = dir.join(format!("{:016x}.u8", fnv1a(&id)));
                if let Some(p) = Self::open(&path, n, t)? {
                    return Ok(Some(Arc::new(p)));
                }
                let io = |source| DataError::Io {
                    path: path.clone(),
                    source,
                };
                std::fs::create_dir_all(dir).map_err(|source| DataError::Io {
                    path: dir.clone(),
                    source,
                })?;
                let mut buf = vec![0u8; HEADER + n * per];
                buf[..8].copy_from_slice(MAGIC);
                buf[8..12].copy_from_slice(&VERSION.to_le_bytes());
                buf[12..20].copy_from_slice(&(n as u64).to_le_bytes());
                buf[20..24].copy_from_slice(&(t.channels as u32).to_le_bytes());
                buf[24..28].copy_from_slice(&t.size.to_le_bytes());
                fill(ds, split, t, &mut buf[HEADER..], workers, progress)?;
                // Another process may prepare the same file: write aside, rename into place.
                let tmp = path.with_extension(format!("tmp{}", std::process::id()));
                std::fs::write(&tmp, &buf).map_err(io)?;
                std::fs::rename(&tmp, &path).map_err(io)?;
                drop(buf);
                Self::open(&path, n, t)?
                    .map(Arc::new)
                    .map(Some)
                    .ok_or_else(|| DataError::Io {
                        path: path.clone(),
                        source: std::io::Error::other("cache file changed while written"),
                    })
            }
        }
    }

    /// Maps `path` when it holds `n` images of `t`'s shape; None when absent or stale.
    fn open(path: &Path, n: usize, t: &Transform) -> Result<Option<PreparedImages>, DataError> {
        let Ok(f) = std::fs::File::open(path) else {
            return Ok(None);
        };
        let want = HEADER + n * t.numel_u8();
        if f.metadata().map(|m| m.len()).unwrap_or(0) != want as u64 {
            return Ok(None);
        }
        // SAFETY: this module only ever replaces cache files by rename, never writes them in
        // place, so the mapped pages stay valid for the map's life (another program
        // truncating the file under us would be outside that contract). The length was
        // checked above and every access is bounds-checked slicing of the map.
        #[allow(unsafe_code)]
        let map = unsafe { memmap2::Mmap::map(&f) }.map_err(|source| DataError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        let ok = map.len() == want
            && &map[..8] == MAGIC
            && map[8..12] == VERSION.to_le_bytes()
            && map[12..20] == (n as u64).to_le_bytes()
            && map[20..24] == (t.channels as u32).to_le_bytes()
            && map[24..28] == t.size.to_le_bytes();
        Ok(ok.then_some(PreparedImages {
            storage: Storage::Mapped(map),
            images: n,
            channels: t.channels,
            size: t.size as usize,
        }))
    }

    fn bytes(&self) -> &[u8] {
        match &self.storage {
            Storage::Memory(v) => v,
            Storage::Mapped(m) => &m[HEADER..],
        }
    }

    /// Images held.
    pub fn len(&self) -> usize {
        self.images
    }

    /// True when no image is held.
    pub fn is_empty(&self) -> bool {
        self.images == 0
    }

    /// `[channels, size, size]` of each image.
    pub fn shape(&self) -> [usize; 3] {
        [self.channels, self.size, self.size]
    }

    /// Whether the bytes come from a memory-mapped cache file.
    pub fn is_mapped(&self) -> bool {
        matches!(self.storage, Storage::Mapped(_))
    }

    /// Image `i` (`[channels, size, size]`), or None out of range.
    pub fn image(&self, i: usize) -> Option<ArrayView3<'_, u8>> {
        let per = self.channels * self.size * self.size;
        let bytes = self.bytes().get(i * per..(i + 1) * per)?;
        ArrayView3::from_shape((self.channels, self.size, self.size), bytes).ok()
    }

    /// Images `idx` as one `[n, channels, size, size]` array.
    ///
    /// # Errors
    /// An index out of range (a caller bug reported as [`DataError::Worker`]).
    pub fn gather(&self, idx: &[usize]) -> Result<Array4<u8>, DataError> {
        let mut out = Array4::zeros((idx.len(), self.channels, self.size, self.size));
        for (mut o, &i) in out.outer_iter_mut().zip(idx) {
            o.assign(&self.image(i).ok_or(DataError::Worker)?);
        }
        Ok(out)
    }
}

/// Decodes and resizes every image of the split into `buf`, on `workers` threads.
fn fill(
    ds: &Dataset,
    split: Split,
    t: &Transform,
    buf: &mut [u8],
    workers: usize,
    progress: &(dyn Fn(usize, usize) + Sync),
) -> Result<(), DataError> {
    let per = t.numel_u8();
    let n = ds.len(split);
    if n == 0 || per == 0 {
        return Ok(());
    }
    let workers = workers.clamp(1, n);
    let chunk = n.div_ceil(workers);
    let done = AtomicUsize::new(0);
    std::thread::scope(|scope| {
        let handles: Vec<_> = buf
            .chunks_mut(chunk * per)
            .enumerate()
            .map(|(w, part)| {
                let done = &done;
                scope.spawn(move || -> Result<(), DataError> {
                    for (j, out) in part.chunks_mut(per).enumerate() {
                        let i = w * chunk + j;
                        // `per` bytes each: the shape fits by construction.
                        let out = ArrayViewMut3::from_shape(t.dim(), out)
                            .map_err(|_| DataError::Worker)?;
                        t.prepare_u8(&ds.raw_image(split, i)?, out);
                        let d = done.fetch_add(1, Ordering::Relaxed) + 1;
                        if d.is_multiple_of(64) || d == n {
                            progress(d, n);
                        }
                    }
                    Ok(())
                })
            })
            .collect();
        for h in handles {
            h.join().map_err(|_| DataError::Worker)??;
        }
        Ok(())
    })
}
