//! `lorkd delta make|remove|verify|apply|image|format|status`: signed department updates (`.lkdu`,
//! docs/update-format.md) and device flash images (see [`crate::delta`]). A department the
//! bundle lacks (`delta make --add`, or detected) is *added* in the field, into one of the
//! image's added-department slot pairs.
use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Subcommand;

use crate::checkpoint::Checkpoint;

/// Make, check and apply department updates.
#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(subcommand)]
    pub command: DeltaCommand,
}

#[derive(Subcommand, Debug)]
pub enum DeltaCommand {
    /// Make a signed update of one department from a retrained checkpoint, or (a department
    /// the bundle lacks) a package that adds it in the field.
    Make {
        /// The bundle the update applies to.
        #[arg(long)]
        base: PathBuf,
        /// Checkpoint with the department's new factors (same shared weights).
        #[arg(long = "from")]
        from: PathBuf,
        #[arg(long)]
        dept: String,
        /// Add a department the bundle does not have (refused if it has it); without the
        /// flag a department absent from the bundle is detected and added too.
        #[arg(long)]
        add: bool,
        /// The department's new version (must exceed the device's current one).
        #[arg(long)]
        version: u32,
        /// Security counter: the device never again runs a version below it (default 0).
        #[arg(long, default_value_t = 0)]
        security_counter: u32,
        /// ed25519 secret key file (`lorkd keygen`).
        #[arg(long)]
        key: PathBuf,
        /// int8 bundles: calibration images, a dataset spec as `lorkd pack --calib-data` takes
        /// it (give the bundle's own; default: the same seeded synthetic set as `lorkd pack`).
        #[arg(long)]
        calib_data: Option<String>,
        /// Calibration images per department (as `lorkd pack`).
        #[arg(long, default_value_t = 128)]
        calib_count: usize,
        #[arg(short, long)]
        output: PathBuf,
    },
    /// Make a signed package removing a department that was added in the field.
    Remove {
        /// The bundle the package applies to.
        #[arg(long)]
        base: PathBuf,
        #[arg(long)]
        dept: String,
        /// The removal's version (must exceed the department's current one).
        #[arg(long)]
        version: u32,
        /// Security counter (default: the version, so older packages never install again).
        #[arg(long)]
        security_counter: Option<u32>,
        /// ed25519 secret key file (`lorkd keygen`).
        #[arg(long)]
        key: PathBuf,
        #[arg(short, long)]
        output: PathBuf,
    },
    /// Check a package against a bundle and a public key.
    Verify {
        package: PathBuf,
        #[arg(long)]
        base: PathBuf,
        #[arg(long)]
        pubkey: PathBuf,
        #[arg(long)]
        json: bool,
    },
    /// Apply a package to a device flash image (bundle + update store), in place.
    Apply {
        package: PathBuf,
        #[arg(long)]
        image: PathBuf,
        #[arg(long)]
        pubkey: PathBuf,
        #[arg(long)]
        json: bool,
    },
    /// Write a factory flash image: the bundle, then an empty update store.
    Image {
        #[arg(long)]
        base: PathBuf,
        #[arg(short, long)]
        output: PathBuf,
    },
    /// Format the update store of a flash image whose journal is damaged (explicit: `apply`
    /// and `status` refuse such an image; security counters that can be read are kept).
    Format {
        #[arg(long)]
        image: PathBuf,
        #[arg(long)]
        pubkey: PathBuf,
        #[arg(long)]
        json: bool,
    },
    /// Show which version each department of a flash image runs.
    Status {
        #[arg(long)]
        image: PathBuf,
        #[arg(long)]
        pubkey: PathBuf,
        #[arg(long)]
        json: bool,
    },
}

fn read(p: &PathBuf) -> Result<Vec<u8>> {
    std::fs::read(p).with_context(|| format!("reading {}", p.display()))
}

fn print_status(s: &[crate::delta::DeptStatus]) {
    for d in s {
        let v = d.version.map_or("-".to_string(), |v| format!("v{v}"));
        println!(
            "{:<16} {:<6} {:<12} security counter {}{}",
            d.department,
            v,
            d.source,
            d.security_counter,
            if d.added {
                "  (added in the field)"
            } else {
                ""
            }
        );
    }
}

pub fn run(a: Args) -> Result<()> {
    match a.command {
        DeltaCommand::Make {
            base,
            from,
            dept,
            add,
            version,
            security_counter,
            key,
            calib_data,
            calib_count,
            output,
        } => {
            let ck = Checkpoint::load(&from)
                .with_context(|| format!("checkpoint {}", from.display()))?;
            let key = crate::keys::load_signing_key(&key)?;
            let base_bytes = read(&base)?;
            let (int8, in_base) = {
                let al = lorkd_runtime::engine::AlignedBytes::new(&base_bytes);
                let b = lorkd_runtime::format::Bundle::parse(al.as_slice())
                    .map_err(|e| anyhow::anyhow!("bundle {}: {e}", base.display()))?;
                (
                    b.manifest().precision == lorkd_runtime::format::Precision::Int8,
                    b.find_department(&dept).is_some(),
                )
            };
            anyhow::ensure!(
                !(add && in_base),
                "--add: the bundle {} already has department `{dept}` (update it without --add)",
                base.display()
            );
            let images = if int8 {
                let spec = calib_data
                    .unwrap_or_else(|| crate::pack::default_calib_spec(&ck, calib_count, 0));
                Some(crate::pack::dataset_images(&ck, &spec, calib_count)?)
            } else {
                None
            };
            let pkg = crate::delta::make_calibrated(
                &base_bytes,
                &ck,
                &dept,
                version,
                security_counter,
                &key,
                images,
            )?;
            crate::fsio::write_atomic(&output, &pkg)?;
            eprintln!(
                "wrote {} ({} bytes: department {dept} v{version}{})",
                output.display(),
                pkg.len(),
                if in_base { "" } else { ", added in the field" }
            );
        }
        DeltaCommand::Remove {
            base,
            dept,
            version,
            security_counter,
            key,
            output,
        } => {
            let key = crate::keys::load_signing_key(&key)?;
            let counter = security_counter.unwrap_or(version);
            let pkg = crate::delta::make_removal(&read(&base)?, &dept, version, counter, &key)?;
            crate::fsio::write_atomic(&output, &pkg)?;
            eprintln!(
                "wrote {} ({} bytes: removes department {dept} at v{version})",
                output.display(),
                pkg.len()
            );
        }
        DeltaCommand::Verify {
            package,
            base,
            pubkey,
            json,
        } => {
            let key = crate::keys::load_verifying_key(&pubkey)?;
            let info = crate::delta::verify(&read(&package)?, &read(&base)?, &key)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&info)?);
            } else {
                println!(
                    "{}: {} {} v{} ({} classes, security counter {}), {} blob bytes, base {}, signature {}",
                    package.display(),
                    match (info.added, info.removal) {
                        (_, true) => "removes department",
                        (true, _) => "adds department",
                        _ => "department",
                    },
                    info.department,
                    info.version,
                    info.classes,
                    info.security_counter,
                    info.blob_bytes,
                    &info.base_id[..16],
                    info.signature
                );
            }
        }
        DeltaCommand::Apply {
            package,
            image,
            pubkey,
            json,
        } => {
            let key = crate::keys::load_verifying_key(&pubkey)?;
            let mut img = read(&image)?;
            let st = crate::delta::apply(&read(&package)?, &mut img, &key)?;
            crate::fsio::write_atomic(&image, &img)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&st)?);
            } else {
                print_status(std::slice::from_ref(&st));
            }
        }
        DeltaCommand::Image { base, output } => {
            let bytes = read(&base)?;
            let img = crate::delta::image(&bytes)?;
            crate::fsio::write_atomic(&output, &img)?;
            let al = lorkd_runtime::engine::AlignedBytes::new(&bytes);
            let layout = lorkd_runtime::format::Bundle::parse(al.as_slice())
                .map(|b| crate::delta::standard_layout(&b))
                .map_err(|e| anyhow::anyhow!("bundle {}: {e}", base.display()))?;
            eprintln!(
                "wrote {} ({} bytes; room for {} departments added in the field, {}-byte slots)",
                output.display(),
                img.len(),
                layout.added,
                layout.slot_size
            );
        }
        DeltaCommand::Format {
            image,
            pubkey,
            json,
        } => {
            let key = crate::keys::load_verifying_key(&pubkey)?;
            let mut img = read(&image)?;
            let st = crate::delta::format(&mut img, &key)?;
            std::fs::write(&image, &img).with_context(|| format!("writing {}", image.display()))?;
            if json {
                println!("{}", serde_json::to_string_pretty(&st)?);
            } else {
                print_status(&st);
            }
        }
        DeltaCommand::Status {
            image,
            pubkey,
            json,
        } => {
            let key = crate::keys::load_verifying_key(&pubkey)?;
            let img = read(&image)?;
            let st = crate::delta::status(&img, &key)?;
            let cap = crate::delta::capacity(&img, &key)?;
            if json {
                // A list, as before (`lorkd inspect --json` states the capacity).
                println!("{}", serde_json::to_string_pretty(&st)?);
            } else {
                print_status(&st);
                println!(
                    "added departments: {} of {} slot pairs used ({}-byte slots)",
                    cap.added_used, cap.added_slots, cap.slot_bytes
                );
            }
        }
    }
    Ok(())
}
