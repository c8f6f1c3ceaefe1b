//! The host side of verified boot: the commands that act like the device (`lorkd run
//! --image`, `lorkd eval --image`) accept a bundle only when its ed25519 signature verifies
//! under the key the device trusts (`Bundle::parse_signed`, as the firmware boots), and run
//! an unsigned or badly signed one only on an explicit, loud `--allow-unsigned`.
use anyhow::{anyhow, Context, Result};
use ed25519_dalek::VerifyingKey;
use lorkd_runtime::engine::AlignedBytes;
use lorkd_runtime::format::Bundle;

/// Checks the signature of bundle `bytes` (named `what` in messages) under `key`.
/// `Ok(true)`: verified. `Ok(false)`: not verified (no key, unsigned or wrong signature)
/// but `allow_unsigned`, after a warning on stderr. A bundle that does not parse at all is
/// an error either way.
///
/// # Errors
/// An unverified signature without `allow_unsigned`, or a damaged bundle; one line naming
/// `what` and the problem.
pub fn check_bundle(
    bytes: &[u8],
    what: &str,
    key: Option<&VerifyingKey>,
    allow_unsigned: bool,
) -> Result<bool> {
    let al = AlignedBytes::new(bytes);
    let why = match key {
        Some(k) => match Bundle::parse_signed(al.as_slice(), k.as_bytes()) {
            Ok(_) => return Ok(true),
            Err(e) => e.to_string(),
        },
        None => "not checked (no --pubkey)".to_string(),
    };
    // Damaged beyond the signature: refused whatever the flag says.
    Bundle::parse(al.as_slice()).map_err(|e| anyhow!("{what}: invalid bundle: {e}"))?;
    if !allow_unsigned {
        return Err(anyhow!(
            "{what}: bundle signature: {why}; a device refuses to boot it (--allow-unsigned runs it anyway)"
        ));
    }
    eprintln!(
        "lorkd: WARNING: {what}: bundle signature {why}; running it only because of --allow-unsigned — a device would refuse to boot it"
    );
    Ok(false)
}

/// Reads a device flash image and checks the bundle at its start as the device boots it
/// ([`check_bundle`]). Returns the image bytes.
///
/// # Errors
/// An unreadable file, an image shorter than its bundle, a refused bundle.
pub fn read_image(
    path: &std::path::Path,
    key: &VerifyingKey,
    allow_unsigned: bool,
) -> Result<Vec<u8>> {
    let what = format!("image {}", path.display());
    let img = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let n = crate::delta::bundle_len(&img).with_context(|| what.clone())?;
    let bundle = img.get(..n).with_context(|| {
        format!(
            "{what}: {} bytes, shorter than the bundle it starts with ({n} bytes)",
            img.len()
        )
    })?;
    check_bundle(bundle, &what, Some(key), allow_unsigned)?;
    Ok(img)
}
