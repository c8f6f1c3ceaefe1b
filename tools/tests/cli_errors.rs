//! The `lorkd` binary under bad input, run as a user runs it: each case exits non-zero (never
//! 101, a panic) with exactly one line on stderr naming the file and the problem, and leaves
//! every file in its directory byte-for-byte unchanged. Plus the trust rules of the commands
//! that act like the device: `run --image` / `eval --image` boot only a bundle whose
//! signature verifies under `--pubkey` (or, loudly, with `--allow-unsigned`), and `inspect`
//! / `verify` with `--pubkey` fail on a missing or wrong signature.
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use ed25519_dalek::SigningKey;
use lorkd_runtime::format::{DeltaDType, Precision};
use lorkd_tools::checkpoint::{random_checkpoint, Checkpoint, RandomSpec};
use lorkd_tools::pack::{pack, PackOptions};

fn seed() -> u64 {
    let s = std::env::var("LORKD_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(rand::random);
    println!("seed {s} (LORKD_SEED)");
    s
}

/// A directory of fixtures: a signed bundle, an unsigned one, keys A and B, flash images of
/// each, a checkpoint, an input.
struct Fixture {
    dir: tempfile::TempDir,
}

impl Fixture {
    fn p(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn new(seed: u64) -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let f = Fixture { dir };
        let spec = RandomSpec {
            arch: "shufflenet_v2_x0_5".into(),
            in_channels: 3,
            input_size: 32,
            rank: 2,
            classes: vec![3, 4],
            seed,
        };
        let ck_bytes = random_checkpoint(&spec).unwrap();
        std::fs::write(f.p("model.safetensors"), &ck_bytes).unwrap();
        let ck = Checkpoint::from_bytes(&ck_bytes).unwrap();
        let opts = PackOptions {
            weights: Precision::F32,
            delta: DeltaDType::F32,
            ..PackOptions::default()
        };
        let cal =
            |b: &[u8], imgs: &[Vec<Vec<f32>>]| lorkd_tools::calibrate::activation_ranges(b, imgs);
        let a = lorkd_tools::keys::generate(f.p("a.key")).unwrap();
        lorkd_tools::keys::generate(f.p("b.key")).unwrap();
        let signed = pack(&ck, &opts, Some(&a), None, &cal).unwrap();
        let unsigned = pack(&ck, &opts, None, None, &cal).unwrap();
        std::fs::write(f.p("signed.lorkd"), &signed).unwrap();
        std::fs::write(f.p("unsigned.lorkd"), &unsigned).unwrap();
        let img_s = lorkd_tools::delta::image(&signed).unwrap();
        std::fs::write(f.p("signed.img"), &img_s).unwrap();
        std::fs::write(
            f.p("unsigned.img"),
            lorkd_tools::delta::image(&unsigned).unwrap(),
        )
        .unwrap();
        // Shorter than the bundle it starts with.
        std::fs::write(f.p("short.img"), &img_s[..signed.len() - 10]).unwrap();
        std::fs::write(f.p("truncated.lorkd"), &signed[..signed.len() / 2]).unwrap();
        let mut flipped = signed.clone();
        let mid = flipped.len() / 2;
        flipped[mid] ^= 0x04;
        std::fs::write(f.p("flipped.lorkd"), &flipped).unwrap();
        // A folder dataset whose departments carry the bundle's names.
        for (d, classes) in [("dept0", 3), ("dept1", 4)] {
            for c in 0..classes {
                let dir = f.p("data").join(d).join(format!("c{c}"));
                std::fs::create_dir_all(&dir).unwrap();
                for i in 0..4u8 {
                    image::RgbImage::from_pixel(8, 8, image::Rgb([i * 60, c * 50, 90]))
                        .save(dir.join(format!("{i}.png")))
                        .unwrap();
                }
            }
        }
        let x = vec![0.25f32; 3 * 32 * 32];
        std::fs::write(
            f.p("x.npy"),
            lorkd_data::npy::write_f32(&ndarray::ArrayView::from_shape([3, 32, 32], &x).unwrap()),
        )
        .unwrap();
        // Crafted headers that panicked the old parser of `lorkd run`.
        let good =
            lorkd_data::npy::write_f32(&ndarray::ArrayView::from_shape([3, 32, 32], &x).unwrap());
        let header = |h: &str| {
            let mut v = b"\x93NUMPY\x01\x00".to_vec();
            v.extend_from_slice(&(h.len() as u16).to_le_bytes());
            v.extend_from_slice(h.as_bytes());
            v.extend_from_slice(&good[good.len() - 4 * x.len()..]);
            v
        };
        std::fs::write(
            f.p("shape-paren.npy"),
            header("{'descr': '<f4', 'fortran_order': False, 'shape': ), }\n"),
        )
        .unwrap();
        std::fs::write(
            f.p("descr-utf8.npy"),
            header("{'descr': '<f\u{e9}\u{e9}\u{e9}\u{e9}', 'fortran_order': False, 'shape': (3, 32, 32), }\n"),
        )
        .unwrap();
        f
    }

    fn snapshot(&self) -> BTreeMap<PathBuf, Vec<u8>> {
        std::fs::read_dir(self.dir.path())
            .unwrap()
            .map(|e| {
                let p = e.unwrap().path();
                let b = std::fs::read(&p).unwrap_or_default();
                (p, b)
            })
            .collect()
    }
}

fn lorkd(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_lorkd"))
        .current_dir(dir)
        .args(args)
        .output()
        .unwrap()
}

/// Runs `args` in the fixture dir; asserts a clean failure whose one stderr line contains
/// every string of `says`, and no changed file.
fn fails(f: &Fixture, args: &[&str], says: &[&str]) {
    let before = f.snapshot();
    let out = lorkd(f.dir.path(), args);
    let err = String::from_utf8_lossy(&out.stderr);
    let code = out.status.code();
    assert!(
        code.is_some() && code != Some(0) && code != Some(101),
        "lorkd {args:?}: exit {code:?}, stderr {err}"
    );
    let lines: Vec<&str> = err.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(
        lines.len(),
        1,
        "lorkd {args:?}: stderr not one line:\n{err}"
    );
    for s in says {
        assert!(
            lines[0].contains(s),
            "lorkd {args:?}: {:?} lacks {s:?}",
            lines[0]
        );
    }
    assert!(
        f.snapshot() == before,
        "lorkd {args:?} changed a file in the fixture directory"
    );
}

fn succeeds(f: &Fixture, args: &[&str]) -> Output {
    let out = lorkd(f.dir.path(), args);
    assert!(
        out.status.success(),
        "lorkd {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

#[test]
fn bad_files_fail_with_one_line_and_change_nothing() {
    let f = Fixture::new(seed());
    let missing = ["no-such.lorkd", "No such file"];
    fails(&f, &["inspect", "no-such.lorkd"], &missing);
    fails(&f, &["verify", "no-such.lorkd"], &missing);
    fails(
        &f,
        &["run", "no-such.lorkd", "--dept", "dept0", "x.npy"],
        &missing,
    );
    fails(
        &f,
        &["eval", "no-such.lorkd", "--data", "synthetic"],
        &missing,
    );
    fails(
        &f,
        &["run", "signed.lorkd", "--dept", "dept0", "nope.npy"],
        &["nope.npy", "No such file"],
    );
    fails(&f, &["inspect", "truncated.lorkd"], &["truncated.lorkd"]);
    fails(&f, &["verify", "truncated.lorkd"], &["truncated.lorkd"]);
    fails(
        &f,
        &["run", "truncated.lorkd", "--dept", "dept0", "x.npy"],
        &["truncated.lorkd"],
    );
    fails(&f, &["inspect", "flipped.lorkd"], &["flipped.lorkd"]);
    fails(&f, &["verify", "flipped.lorkd"], &["flipped.lorkd"]);
    fails(
        &f,
        &["run", "flipped.lorkd", "--dept", "dept0", "x.npy"],
        &["flipped.lorkd"],
    );
    fails(
        &f,
        &[
            "run",
            "--image",
            "short.img",
            "--pubkey",
            "a.key.pub",
            "--dept",
            "dept0",
            "x.npy",
        ],
        &["short.img", "shorter"],
    );
    fails(
        &f,
        &[
            "eval",
            "--image",
            "short.img",
            "--pubkey",
            "a.key.pub",
            "--data",
            "synthetic",
        ],
        &["short.img", "shorter"],
    );
    // Crafted .npy headers: errors, not panics.
    for npy in ["shape-paren.npy", "descr-utf8.npy"] {
        fails(&f, &["run", "signed.lorkd", "--dept", "dept0", npy], &[npy]);
    }
    fails(
        &f,
        &["run", "signed.lorkd", "--dept", "nope", "x.npy"],
        &["nope", "dept0"],
    );
    fails(
        &f,
        &["eval", "signed.lorkd", "--data", "bogus:spec"],
        &["bogus:spec"],
    );
    fails(
        &f,
        &[
            "eval",
            "signed.lorkd",
            "--data",
            "synthetic",
            "--dept",
            "nope",
        ],
        &["nope"],
    );
    fails(
        &f,
        &["pack", "no-such.safetensors", "-o", "out.lorkd"],
        &["no-such.safetensors"],
    );
    fails(
        &f,
        &[
            "export-onnx",
            "signed.lorkd",
            "--dept",
            "nope",
            "-o",
            "x.onnx",
        ],
        &["nope"],
    );
    fails(
        &f,
        &["inspect", "signed.lorkd", "--pubkey", "no.pub"],
        &["no.pub"],
    );
    // The happy path still works on the same fixtures.
    succeeds(&f, &["run", "signed.lorkd", "--dept", "dept0", "x.npy"]);
}

#[test]
fn inspect_and_verify_with_pubkey_fail_on_a_missing_or_wrong_signature() {
    let f = Fixture::new(seed());
    for cmd in ["inspect", "verify"] {
        succeeds(&f, &[cmd, "signed.lorkd", "--pubkey", "a.key.pub"]);
        fails(
            &f,
            &[cmd, "signed.lorkd", "--pubkey", "b.key.pub"],
            &["signed.lorkd", "signature"],
        );
        fails(
            &f,
            &[cmd, "unsigned.lorkd", "--pubkey", "a.key.pub"],
            &["unsigned.lorkd", "signature"],
        );
        // Without a key the signature is only reported.
        succeeds(&f, &[cmd, "unsigned.lorkd"]);
    }
}

#[test]
fn device_paths_boot_only_verified_bundles() {
    let f = Fixture::new(seed());
    let run = |img: &'static str, key: &'static str| {
        vec![
            "run", "--image", img, "--pubkey", key, "--dept", "dept1", "x.npy",
        ]
    };
    let eval = |img: &'static str, key: &'static str| {
        vec![
            "eval",
            "--image",
            img,
            "--pubkey",
            key,
            "--data",
            "folder:data",
            "--split",
            "train",
            "--limit",
            "2",
            "--quiet",
        ]
    };
    for args in [
        run("signed.img", "a.key.pub"),
        eval("signed.img", "a.key.pub"),
    ] {
        succeeds(&f, &args);
    }
    for mk in [run, eval] {
        // Signed with A, the device trusts B.
        fails(
            &f,
            &mk("signed.img", "b.key.pub"),
            &["signed.img", "signature"],
        );
        // Unsigned.
        fails(
            &f,
            &mk("unsigned.img", "a.key.pub"),
            &["unsigned.img", "signature"],
        );
        // The explicit opt-in runs it, with a warning.
        let mut args = mk("unsigned.img", "a.key.pub");
        args.push("--allow-unsigned");
        let out = succeeds(&f, &args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("WARNING") && err.contains("--allow-unsigned"),
            "{err}"
        );
    }
    // A plain bundle with --pubkey is held to the same rule.
    fails(
        &f,
        &[
            "run",
            "signed.lorkd",
            "--pubkey",
            "b.key.pub",
            "--dept",
            "dept0",
            "x.npy",
        ],
        &["signed.lorkd", "signature"],
    );
    succeeds(
        &f,
        &[
            "run",
            "signed.lorkd",
            "--pubkey",
            "a.key.pub",
            "--dept",
            "dept0",
            "x.npy",
        ],
    );
}

#[test]
fn keygen_refuses_to_overwrite_and_writes_atomically() {
    let f = Fixture::new(seed());
    fails(&f, &["keygen", "-o", "a.key"], &["a.key", "--force"]);
    // Only the .pub existing is refused too.
    std::fs::write(f.p("c.key.pub"), "x").unwrap();
    fails(&f, &["keygen", "-o", "c.key"], &["c.key.pub", "--force"]);
    let before = std::fs::read(f.p("a.key")).unwrap();
    succeeds(&f, &["keygen", "-o", "a.key", "--force"]);
    assert_ne!(std::fs::read(f.p("a.key")).unwrap(), before);
    // The new pair matches and no temporary file is left behind.
    let k = lorkd_tools::keys::load_signing_key(f.p("a.key")).unwrap();
    assert_eq!(
        lorkd_tools::keys::load_verifying_key(f.p("a.key.pub")).unwrap(),
        k.verifying_key()
    );
    let _: SigningKey = k;
    let stray: Vec<_> = std::fs::read_dir(f.dir.path())
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().ends_with(".tmp"))
        .collect();
    assert!(stray.is_empty(), "{stray:?}");
}

/// A reader that is gone before `lorkd` prints (`lorkd inspect … | head -0`): the process
/// ends quietly by SIGPIPE, as any Unix filter, not with a panic (exit 101) about printing.
#[cfg(unix)]
#[test]
fn closed_stdout_is_quiet() {
    use std::os::unix::process::ExitStatusExt;
    let f = Fixture::new(seed());
    for args in [
        &["inspect", "signed.lorkd"][..],
        &["inspect", "signed.lorkd", "--json"],
    ] {
        let (reader, writer) = std::io::pipe().unwrap();
        drop(reader);
        let out = Command::new(env!("CARGO_BIN_EXE_lorkd"))
            .current_dir(f.dir.path())
            .args(args)
            .stdout(writer)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!err.contains("panicked"), "{args:?}: {err}");
        assert_eq!(
            out.status.signal(),
            Some(libc::SIGPIPE),
            "{args:?}: {:?} {err}",
            out.status
        );
    }
}
