//! Field updates on the host: make a signed `.lkdu` from a retrained checkpoint, verify one
//! against a bundle, build a device flash image and apply packages to it through the
//! runtime's own update store (`lorkd_runtime::update`), exactly as a device would.
//!
//! A device flash image is the bundle at offset 0 followed by the store's journal and A/B
//! slots in [`Layout::standard`] with [`IMAGE_ERASE_SIZE`]-byte erase blocks, including
//! [`Layout::STANDARD_ADDED`] slot pairs for departments added in the field: a checkpoint
//! with a department the bundle lacks (`lorkd-train add-department`) makes an *add* package,
//! which an image takes beside the bundle's departments.
use anyhow::{bail, Context, Result};
use ed25519_dalek::{SigningKey, VerifyingKey};
use lorkd_runtime::engine::AlignedBytes;
use lorkd_runtime::format::header::{Header, SIGNATURE_LEN};
use lorkd_runtime::format::Bundle;
use lorkd_runtime::update::package::{write_signed, Package, PackageHeader};
use lorkd_runtime::update::sim::SimFlash;
use lorkd_runtime::update::{Active, Layout, UpdateBase, UpdateStore};
use serde::Serialize;

use crate::checkpoint::Checkpoint;
use crate::pack::{pack, PackOptions};

/// Erase block of the standard device image (a common NOR sector).
pub const IMAGE_ERASE_SIZE: usize = 4096;
/// Write unit of the standard device image.
pub const IMAGE_WRITE_SIZE: usize = 4;
/// Most departments a host-side store handles.
pub const MAX_DEPTS: usize = 64;

type ImageFlash = SimFlash<IMAGE_WRITE_SIZE, IMAGE_ERASE_SIZE>;
type ImageStore = UpdateStore<ImageFlash, MAX_DEPTS>;

/// What a package holds, for `delta verify` / `delta make`.
#[derive(Serialize, Debug, Clone, PartialEq)]
pub struct PackageInfo {
    pub department: String,
    /// A department the bundle does not have (added in the field).
    pub added: bool,
    /// Removes that added department.
    pub removal: bool,
    /// Classes of the department's head.
    pub classes: usize,
    pub version: u32,
    pub security_counter: u32,
    pub blob_bytes: usize,
    pub package_bytes: usize,
    pub base_id: String,
    pub signature: &'static str,
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn parse_bundle(bytes: &[u8]) -> Result<Bundle<'_>> {
    Bundle::parse(bytes).map_err(|e| anyhow::anyhow!("bundle: {e}"))
}

/// Makes a signed package for department `dept` from checkpoint `ck`, packed with the base
/// bundle's precisions. Refuses a checkpoint whose folded shared part differs from the
/// base's by a single bit (its base id would differ). int8 bundles are calibrated on
/// [`PackOptions::default`]'s seeded synthetic images; see [`make_calibrated`].
pub fn make(
    base_bytes: &[u8],
    ck: &Checkpoint,
    dept: &str,
    version: u32,
    counter: u32,
    key: &SigningKey,
) -> Result<Vec<u8>> {
    make_calibrated(base_bytes, ck, dept, version, counter, key, None)
}

/// [`make`] with the int8 calibration images per department (`lorkd pack --calib-data`'s:
/// pass the same images the base bundle was packed with, so the update's activation ranges
/// come from the department's real images). `None`: seeded synthetic images.
pub fn make_calibrated(
    base_bytes: &[u8],
    ck: &Checkpoint,
    dept: &str,
    version: u32,
    counter: u32,
    key: &SigningKey,
    images: Option<Vec<Vec<Vec<f32>>>>,
) -> Result<Vec<u8>> {
    let base_al = AlignedBytes::new(base_bytes);
    let base = parse_bundle(base_al.as_slice())?;
    let names: Vec<&str> = (0..base.department_count())
        .filter_map(|i| base.department(i))
        .map(|d| d.manifest.name)
        .collect();
    if base.find_department(dept).is_none() && !ck.meta.departments.iter().any(|d| d.name == dept) {
        bail!(
            "no department `{dept}` in the bundle (it has {}) or the checkpoint",
            names.join(", ")
        );
    }
    // A department the bundle lacks is added in the field; its factors use the storage of
    // the bundle's departments (all of a bundle's use one).
    let added = base.find_department(dept).is_none();
    let delta = base
        .department(0)
        .context("the bundle has no department")?
        .manifest
        .delta_dtype;
    let opts = PackOptions {
        weights: base.manifest().precision,
        delta,
        version,
        ..PackOptions::default()
    };
    let new_bytes = pack(ck, &opts, None, images, &|b, imgs| {
        crate::calibrate::activation_ranges(b, imgs)
    })?;
    let new_al = AlignedBytes::new(&new_bytes);
    let new = parse_bundle(new_al.as_slice())?;
    if new.base_id() != base.base_id() {
        bail!(
            "the checkpoint's shared weights differ from the bundle's after folding (base id {} vs {}): \
             an update may change only department factors and heads; retrain with the shared weights frozen or pack a new bundle",
            &hex(new.base_id())[..16],
            &hex(base.base_id())[..16]
        );
    }
    let ni = new
        .find_department(dept)
        .with_context(|| format!("the checkpoint has no department `{dept}`"))?;
    let blob = new.department_blob(ni).context("department blob")?;
    let header = if added {
        let classes = new.department(ni).context("department")?.classes();
        let classes = u16::try_from(classes).context("more than 65535 classes")?;
        PackageHeader::new_added(dept, version, counter, *base.base_id(), classes, blob)
    } else {
        PackageHeader::new(dept, version, counter, *base.base_id(), blob)
    }
    .map_err(|e| anyhow::anyhow!("package header: {e}"))?;
    let mut out = vec![0u8; header.package_len() as usize];
    write_signed(&header, blob, &key.to_bytes(), &mut out).map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok(out)
}

/// A signed package removing department `dept`, added in the field, at `version` (which must
/// exceed the version the device runs; with `counter = version` its older packages can never
/// install again).
///
/// # Errors
/// A department of the bundle (only added ones can be removed), a bad name or counter.
pub fn make_removal(
    base_bytes: &[u8],
    dept: &str,
    version: u32,
    counter: u32,
    key: &SigningKey,
) -> Result<Vec<u8>> {
    let al = AlignedBytes::new(base_bytes);
    let base = parse_bundle(al.as_slice())?;
    if base.find_department(dept).is_some() {
        bail!("`{dept}` is a department of the bundle; only departments added in the field can be removed");
    }
    let header = PackageHeader::new_removal(dept, version, counter, *base.base_id())
        .map_err(|e| anyhow::anyhow!("package header: {e}"))?;
    let mut out = vec![0u8; header.package_len() as usize];
    write_signed(&header, &[], &key.to_bytes(), &mut out).map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok(out)
}

/// Checks a package completely against a bundle: structure, SHA-256, signature, department,
/// base id, and the blob through the runtime's blob parser.
pub fn verify(pkg: &[u8], base_bytes: &[u8], pubkey: &VerifyingKey) -> Result<PackageInfo> {
    let p = Package::parse(pkg).map_err(|e| anyhow::anyhow!("package: {e}"))?;
    p.verify(pubkey.as_bytes())
        .map_err(|e| anyhow::anyhow!("package: {e}"))?;
    let al = AlignedBytes::new(base_bytes);
    let base = parse_bundle(al.as_slice())?;
    let h = p.header;
    let found = base.find_department(h.name());
    let d = match (h.is_added(), found) {
        (false, None) => bail!("package: the bundle has no department `{}`", h.name()),
        (true, Some(_)) => bail!(
            "package: adds department `{}`, which the bundle already has",
            h.name()
        ),
        (_, d) => d,
    };
    if &h.base_id != base.base_id() {
        bail!(
            "package: made for another bundle (base id {} vs {})",
            &hex(&h.base_id)[..16],
            &hex(base.base_id())[..16]
        );
    }
    let blob = AlignedBytes::new(p.blob());
    let (version, classes) = match (d, h.added_classes()) {
        _ if h.is_removal() => (h.version, 0),
        (Some(d), _) => {
            let (v, _) = base
                .check_blob(d, blob.as_slice())
                .map_err(|e| anyhow::anyhow!("package: {e}"))?;
            let classes = base.department(d).map_or(0, |x| x.classes());
            (v, classes)
        }
        (None, want) => {
            let (v, _, classes) = base
                .check_added_blob(h.name(), blob.as_slice())
                .map_err(|e| anyhow::anyhow!("package: {e}"))?;
            if want.map(usize::from) != Some(classes) {
                bail!("package: header says {want:?} classes, the blob has {classes}");
            }
            (v, classes)
        }
    };
    if version != h.version {
        bail!(
            "package: header version {} but the blob says {version}",
            h.version
        );
    }
    Ok(PackageInfo {
        department: h.name().to_string(),
        added: h.is_added(),
        removal: h.is_removal(),
        classes,
        version: h.version,
        security_counter: h.security_counter,
        blob_bytes: h.blob_len as usize,
        package_bytes: pkg.len(),
        base_id: hex(&h.base_id),
        signature: "verified",
    })
}

/// Bytes of the bundle at the start of a device image (signature included).
pub fn bundle_len(image: &[u8]) -> Result<usize> {
    let h = Header::decode(image).map_err(|e| anyhow::anyhow!("image: bundle header: {e}"))?;
    Ok(h.file_len as usize + if h.is_signed() { SIGNATURE_LEN } else { 0 })
}

/// The layout of a device image: the store right after the bundle, host image erase size.
pub fn standard_layout(bundle: &Bundle<'_>) -> Layout {
    Layout::for_bundle(bundle, bundle.bytes().len(), IMAGE_ERASE_SIZE)
}

/// A factory device image: the bundle, then erased journal and slots.
pub fn image(bundle_bytes: &[u8]) -> Result<Vec<u8>> {
    let al = AlignedBytes::new(bundle_bytes);
    let b = parse_bundle(al.as_slice())?;
    let layout = standard_layout(&b);
    let mut img = vec![0xFFu8; layout.end() as usize];
    img[..bundle_bytes.len()].copy_from_slice(bundle_bytes);
    Ok(img)
}

/// One department's state in an image.
#[derive(Serialize, Debug, Clone, PartialEq)]
pub struct DeptStatus {
    pub department: String,
    /// Added in the field (not a department of the bundle).
    pub added: bool,
    /// The store's department index (the bundle's first, then the added slot pairs).
    #[serde(skip)]
    pub index: usize,
    /// `factory`, `slot A`, `slot B` or `unavailable`.
    pub source: String,
    pub version: Option<u32>,
    pub security_counter: u32,
}

fn open_image(img: &[u8], pubkey: &VerifyingKey) -> Result<(AlignedBytes, ImageStore)> {
    let n = bundle_len(img)?;
    let bundle_bytes = AlignedBytes::new(img.get(..n).context("image: shorter than its bundle")?);
    let layout = {
        let b = parse_bundle(bundle_bytes.as_slice())?;
        standard_layout(&b)
    };
    if (img.len() as u64) < layout.end() {
        bail!(
            "image: {} bytes, the standard layout needs {} (make one with `lorkd delta image`)",
            img.len(),
            layout.end()
        );
    }
    let flash = ImageFlash::from_image(img, 0);
    let b = parse_bundle(bundle_bytes.as_slice())?;
    let store = ImageStore::open(flash, layout, pubkey.to_bytes(), &b)
        .map_err(|e| anyhow::anyhow!("image: update store: {e}"))?;
    Ok((bundle_bytes, store))
}

/// Every department's state in an image: the bundle's, then those added in the field.
pub fn status(img: &[u8], pubkey: &VerifyingKey) -> Result<Vec<DeptStatus>> {
    let (bb, store) = open_image(img, pubkey)?;
    let b = parse_bundle(bb.as_slice())?;
    Ok(statuses(&b, &store))
}

fn statuses(b: &Bundle<'_>, store: &ImageStore) -> Vec<DeptStatus> {
    let factory = (0..b.department_count()).map(|d| {
        let name = b.department(d).map(|x| x.manifest.name.to_string());
        (d, name.unwrap_or_default(), false)
    });
    let added = store
        .added()
        .map(|d| (d, store.added_name(d).unwrap_or("").to_string(), true));
    factory
        .chain(added)
        .map(|(d, department, added)| {
            let a = store.active(d);
            DeptStatus {
                department,
                added,
                index: d,
                source: match a {
                    Active::Factory { .. } => "factory".into(),
                    Active::Slot { slot, .. } => {
                        format!("slot {}", if slot == 0 { 'A' } else { 'B' })
                    }
                    _ => "unavailable".into(),
                },
                version: a.version(),
                security_counter: store.security_counter(d),
            }
        })
        .collect()
}

/// The update store's capacity in an image: added-department slot pairs used and reserved,
/// and the bytes a slot holds.
#[derive(Serialize, Debug, Clone, PartialEq)]
pub struct Capacity {
    pub added_used: usize,
    pub added_slots: usize,
    pub slot_bytes: u32,
}

/// [`Capacity`] of an image's store.
pub fn capacity(img: &[u8], pubkey: &VerifyingKey) -> Result<Capacity> {
    let (_, store) = open_image(img, pubkey)?;
    Ok(Capacity {
        added_used: store.added().count(),
        added_slots: store.layout().added as usize,
        slot_bytes: store.layout().slot_size,
    })
}

/// Applies a package to a device image in place (every check runs before the first write,
/// so a refused package leaves the image unchanged). Returns the department's new status.
pub fn apply(pkg: &[u8], img: &mut [u8], pubkey: &VerifyingKey) -> Result<DeptStatus> {
    let (bb, mut store) = open_image(img, pubkey)?;
    let b = parse_bundle(bb.as_slice())?;
    let mut scratch = vec![0u8; store.layout().slot_size as usize];
    let d = store
        .apply(pkg, &b, &mut scratch)
        .map_err(|e| anyhow::anyhow!("update refused: {e}"))?;
    let removed = match store.active(d) {
        Active::Removed { version } => Some(DeptStatus {
            department: Package::parse(pkg)
                .map(|p| p.header.name().to_string())
                .unwrap_or_default(),
            added: true,
            index: d,
            source: "removed".into(),
            version: Some(version),
            security_counter: store.security_counter(d),
        }),
        _ => None,
    };
    let flash = store.into_flash();
    img.copy_from_slice(&flash.image()[..img.len()]);
    if let Some(r) = removed {
        return Ok(r);
    }
    status(img, pubkey)?
        .into_iter()
        .find(|s| s.index == d)
        .context("department status")
}

/// Formats the update store of a device image explicitly (the answer to a damaged journal,
/// which `apply` and `status` refuse): fresh journal, the highest readable security counter
/// of every department kept, committed slots forgotten. Returns the departments' status.
pub fn format(img: &mut [u8], pubkey: &VerifyingKey) -> Result<Vec<DeptStatus>> {
    let n = bundle_len(img)?;
    let bundle_bytes = AlignedBytes::new(img.get(..n).context("image: shorter than its bundle")?);
    let b = parse_bundle(bundle_bytes.as_slice())?;
    let layout = standard_layout(&b);
    if (img.len() as u64) < layout.end() {
        bail!(
            "image: {} bytes, the standard layout needs {}",
            img.len(),
            layout.end()
        );
    }
    let store = ImageStore::format(
        ImageFlash::from_image(img, 0),
        layout,
        pubkey.to_bytes(),
        &b,
    )
    .map_err(|e| anyhow::anyhow!("image: update store: {e}"))?;
    let flash = store.into_flash();
    let len = img.len();
    img.copy_from_slice(&flash.image()[..len]);
    status(img, pubkey)
}

/// The blob department `dept` runs in an image (the bundle's own, or its active slot's).
pub fn active_blob(img: &[u8], pubkey: &VerifyingKey, dept: &str) -> Result<Vec<u8>> {
    let (bb, mut store) = open_image(img, pubkey)?;
    let b = parse_bundle(bb.as_slice())?;
    let d = b
        .find_department(dept)
        .or_else(|| store.find_added(dept))
        .with_context(|| format!("no department `{dept}`"))?;
    let mut buf = vec![0u8; store.layout().slot_size as usize];
    if let Some(blob) = store
        .read_active_blob(d, &mut buf)
        .map_err(|e| anyhow::anyhow!("{e}"))?
    {
        return Ok(blob.to_vec());
    }
    match store.active(d) {
        Active::Factory { .. } => Ok(b.department_blob(d).context("department blob")?.to_vec()),
        _ => bail!("department `{dept}` has no version at or above its security counter"),
    }
}

/// A device booted from a flash image, as the firmware boots: the bundle at offset 0 and,
/// per department, the blob the update store picks (the newest committed slot that still
/// hashes to its digest and passes the security counter, else the bundle's own blob, else
/// nothing). The departments are the bundle's, then those added in the field.
pub struct BootedImage {
    bundle: AlignedBytes,
    /// Per department: the slot blob it runs (`None`: the bundle's own blob or unavailable,
    /// see `status`).
    slots: Vec<Option<AlignedBytes>>,
    /// Per department: name, source and version.
    pub status: Vec<DeptStatus>,
}

impl BootedImage {
    /// The bundle of the image.
    ///
    /// # Errors
    /// Never for an image [`boot`] accepted.
    pub fn bundle(&self) -> Result<Bundle<'_>> {
        parse_bundle(self.bundle.as_slice())
    }

    /// Index (into [`BootedImage::status`]) of the department called `name`, or an error
    /// naming the ones the image has.
    ///
    /// # Errors
    /// No such department.
    pub fn find(&self, name: &str) -> Result<usize> {
        self.status
            .iter()
            .position(|s| s.department == name)
            .with_context(|| {
                let names: Vec<&str> = self.status.iter().map(|s| s.department.as_str()).collect();
                format!(
                    "no department `{name}` (the image has: {})",
                    names.join(", ")
                )
            })
    }

    /// The delta department `d` runs, parsed against `bundle` (from [`BootedImage::bundle`]).
    ///
    /// # Errors
    /// An unavailable department (no version at or above its security counter), or a slot
    /// blob the bundle refuses.
    pub fn department<'a>(
        &'a self,
        bundle: &Bundle<'a>,
        d: usize,
    ) -> Result<lorkd_runtime::format::Dept<'a>> {
        let name = self.status.get(d).map_or("?", |s| s.department.as_str());
        if self.status.get(d).and_then(|s| s.version).is_none() {
            bail!("department `{name}` has no version at or above its security counter");
        }
        match self.slots.get(d) {
            Some(Some(blob)) => lorkd_runtime::format::Dept::parse_blob(
                blob.as_slice(),
                bundle.manifest(),
                bundle.base_id(),
            )
            .map_err(|e| anyhow::anyhow!("department `{name}`: slot blob: {e}")),
            _ => bundle
                .department(d)
                .with_context(|| format!("department index {d}")),
        }
    }
}

/// Boots `img` (see [`BootedImage`]).
///
/// # Errors
/// Not a device image (`lorkd delta image`), a damaged bundle or journal.
pub fn boot(img: &[u8], pubkey: &VerifyingKey) -> Result<BootedImage> {
    let (bundle, mut store) = open_image(img, pubkey)?;
    let status = statuses(&parse_bundle(bundle.as_slice())?, &store);
    let mut buf = vec![0u8; store.layout().slot_size as usize];
    let mut slots = Vec::with_capacity(status.len());
    for s in &status {
        slots.push(
            store
                .read_active_blob(s.index, &mut buf)
                .map_err(|e| anyhow::anyhow!("image: {e}"))?
                .map(AlignedBytes::new),
        );
    }
    Ok(BootedImage {
        bundle,
        slots,
        status,
    })
}
