//! Every file `lorkd` writes (bundle, flash image, key, package, ONNX, inputs) goes through
//! [`write_atomic`]: a temporary file in the target's directory, synced, then renamed over
//! the target, so a crash or a full disk leaves the old file or the new one, never half.
use std::io::Write;
use std::path::Path;

use anyhow::{bail, Context, Result};

/// How [`write_file`] treats an existing target.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Existing {
    /// Replace it (atomically).
    Replace,
    /// Refuse: an error naming the file, and the file untouched.
    Refuse,
}

/// Writes `bytes` to `path` atomically, replacing an existing file.
///
/// # Errors
/// The directory is not writable, the disk is full; the error names `path`.
pub fn write_atomic(path: impl AsRef<Path>, bytes: &[u8]) -> Result<()> {
    write_file(path.as_ref(), bytes, Existing::Replace, None)
}

/// Writes `bytes` to `path` through a temporary file and a rename; `mode` sets the Unix
/// permissions before any byte is written (e.g. 0o600 for a secret key; the temporary file
/// is created 0600 anyway).
///
/// # Errors
/// As [`write_atomic`], and with [`Existing::Refuse`] an existing `path`.
pub fn write_file(path: &Path, bytes: &[u8], existing: Existing, mode: Option<u32>) -> Result<()> {
    let shown = path.display();
    if existing == Existing::Refuse && path.exists() {
        bail!("{shown} exists; refusing to overwrite it (pass --force to replace it)");
    }
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let mut tmp = tempfile::Builder::new()
        .prefix(".lorkd-")
        .suffix(".tmp")
        .tempfile_in(dir)
        .with_context(|| {
            format!(
                "writing {shown}: creating a temporary file in {}",
                dir.display()
            )
        })?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let m = mode.unwrap_or(0o644);
        tmp.as_file()
            .set_permissions(std::fs::Permissions::from_mode(m))
            .with_context(|| format!("writing {shown}: setting permissions"))?;
    }
    #[cfg(not(unix))]
    let _ = mode;
    tmp.write_all(bytes)
        .and_then(|()| tmp.as_file().sync_all())
        .with_context(|| format!("writing {shown}"))?;
    match existing {
        Existing::Replace => tmp
            .persist(path)
            .map(drop)
            .map_err(|e| e.error)
            .with_context(|| format!("writing {shown}")),
        // Not replacing a file that appeared meanwhile either.
        Existing::Refuse => tmp
            .persist_noclobber(path)
            .map(drop)
            .map_err(|e| e.error)
            .with_context(|| format!("writing {shown}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replaces_refuses_and_leaves_no_temporaries() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f.bin");
        write_atomic(&p, b"one").unwrap();
        write_atomic(&p, b"two").unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"two");
        let e = write_file(&p, b"three", Existing::Refuse, None).unwrap_err();
        assert!(e.to_string().contains("f.bin") && e.to_string().contains("--force"));
        assert_eq!(std::fs::read(&p).unwrap(), b"two");
        write_file(&dir.path().join("k"), b"s", Existing::Refuse, Some(0o600)).unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let m = std::fs::metadata(dir.path().join("k"))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(m & 0o777, 0o600);
        }
        // A missing directory is an error naming the file, and nothing is left behind.
        assert!(write_atomic(dir.path().join("no/such/f"), b"x").is_err());
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names.len(), 2, "{names:?}");
    }
}
