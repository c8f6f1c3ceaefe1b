//! ed25519 key files for bundle and update signing.
//!
//! Text files, one line each after a tag line:
//! ```text
//! lorkd-ed25519-secret-v1        lorkd-ed25519-public-v1
//! <64 hex digits: 32-byte seed>  <64 hex digits: 32-byte public key>
//! ```
//! `lorkd keygen -o KEY` writes `KEY` (mode 0600) and `KEY.pub`.

use std::path::Path;

use anyhow::{bail, Context, Result};
use ed25519_dalek::{SigningKey, VerifyingKey};

const SECRET_TAG: &str = "lorkd-ed25519-secret-v1";
const PUBLIC_TAG: &str = "lorkd-ed25519-public-v1";

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn unhex32(s: &str) -> Option<[u8; 32]> {
    let s = s.trim();
    if s.len() != 64 || !s.is_ascii() {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, o) in out.iter_mut().enumerate() {
        *o = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(out)
}

fn read_tagged(path: &Path, tag: &str) -> Result<[u8; 32]> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading key {}", path.display()))?;
    let mut lines = text.lines();
    if lines.next().map(str::trim) != Some(tag) {
        bail!("{}: not a `{tag}` key file", path.display());
    }
    lines
        .next()
        .and_then(unhex32)
        .with_context(|| format!("{}: key line is not 64 hex digits", path.display()))
}

/// Secret key file text.
pub fn signing_key_text(k: &SigningKey) -> String {
    format!("{SECRET_TAG}\n{}\n", hex(&k.to_bytes()))
}

/// Public key file text.
pub fn verifying_key_text(k: &VerifyingKey) -> String {
    format!("{PUBLIC_TAG}\n{}\n", hex(k.as_bytes()))
}

/// Reads a secret key file.
pub fn load_signing_key(path: impl AsRef<Path>) -> Result<SigningKey> {
    Ok(SigningKey::from_bytes(&read_tagged(
        path.as_ref(),
        SECRET_TAG,
    )?))
}

/// Reads a public key file (or derives it from a secret key file).
pub fn load_verifying_key(path: impl AsRef<Path>) -> Result<VerifyingKey> {
    let path = path.as_ref();
    if let Ok(k) = read_tagged(path, PUBLIC_TAG) {
        return VerifyingKey::from_bytes(&k)
            .with_context(|| format!("{}: invalid ed25519 public key", path.display()));
    }
    Ok(load_signing_key(path)?.verifying_key())
}

/// Generates a key pair and writes `path` (0600) and `path.pub`; refuses when either exists
/// (see [`generate_with`]).
pub fn generate(path: impl AsRef<Path>) -> Result<SigningKey> {
    generate_with(path, false)
}

/// Generates a key pair and writes `path` (0600) and `path.pub`. Refuses when either
/// exists unless `force` (a replaced signing key cannot sign for devices that trust the old
/// one); both files are written to temporaries and renamed.
pub fn generate_with(path: impl AsRef<Path>, force: bool) -> Result<SigningKey> {
    use crate::fsio::{write_file, Existing};
    let path = path.as_ref();
    let mut pub_path = path.as_os_str().to_owned();
    pub_path.push(".pub");
    let pub_path = std::path::PathBuf::from(pub_path);
    let existing = if force {
        Existing::Replace
    } else {
        for p in [path, pub_path.as_path()] {
            if p.exists() {
                bail!(
                    "{} exists; refusing to replace a key (pass --force to replace it)",
                    p.display()
                );
            }
        }
        Existing::Refuse
    };
    let key = SigningKey::generate(&mut rand::rngs::OsRng);
    write_file(
        path,
        signing_key_text(&key).as_bytes(),
        existing,
        Some(0o600),
    )?;
    write_file(
        &pub_path,
        verifying_key_text(&key.verifying_key()).as_bytes(),
        existing,
        Some(0o644),
    )?;
    Ok(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keygen_roundtrip_and_permissions() {
        let dir = std::env::temp_dir().join(format!("lorkd-keys-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("k");
        let k = generate(&p).unwrap();
        // Never silently replaced; --force replaces both files.
        let e = generate(&p).unwrap_err().to_string();
        assert!(e.contains("exists") && e.contains("--force"), "{e}");
        assert_eq!(load_signing_key(&p).unwrap().to_bytes(), k.to_bytes());
        let k2 = generate_with(&p, true).unwrap();
        assert_ne!(k2.to_bytes(), k.to_bytes());
        assert_eq!(
            load_verifying_key(dir.join("k.pub")).unwrap(),
            k2.verifying_key()
        );
        let k = k2;
        assert_eq!(load_signing_key(&p).unwrap().to_bytes(), k.to_bytes());
        assert_eq!(
            load_verifying_key(dir.join("k.pub")).unwrap(),
            k.verifying_key()
        );
        assert_eq!(load_verifying_key(&p).unwrap(), k.verifying_key());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(
                std::fs::metadata(&p).unwrap().permissions().mode() & 0o777,
                0o600
            );
        }
        std::fs::write(dir.join("bad"), "lorkd-ed25519-secret-v1\nzz\n").unwrap();
        assert!(load_signing_key(dir.join("bad")).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
