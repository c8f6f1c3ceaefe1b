//! The `lorkd-train` binary under bad input, run as a user runs it: a missing checkpoint or
//! bundle, a bad `--data` spec, an unknown department — each exits non-zero (never 101, a
//! panic) with one error line naming the file or value and the problem, and writes nothing.
//! (`lorkd-train` prints a `device` line first; the error is the one other line.)
use std::path::Path;
use std::process::{Command, Output};

fn train(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_lorkd-train"))
        .current_dir(dir)
        .args(args)
        .output()
        .unwrap()
}

fn files(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut v: Vec<_> = walk(dir);
    v.sort();
    v
}

fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    std::fs::read_dir(dir)
        .unwrap()
        .flat_map(|e| {
            let p = e.unwrap().path();
            if p.is_dir() {
                walk(&p)
            } else {
                vec![p]
            }
        })
        .collect()
}

fn fails(dir: &Path, args: &[&str], says: &[&str]) {
    let before = files(dir);
    let out = train(dir, args);
    let err = String::from_utf8_lossy(&out.stderr);
    let code = out.status.code();
    assert!(
        code.is_some() && code != Some(0) && code != Some(101),
        "lorkd-train {args:?}: exit {code:?}, stderr {err}"
    );
    let lines: Vec<&str> = err
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with("lorkd-train: device"))
        .collect();
    assert_eq!(lines.len(), 1, "lorkd-train {args:?}: stderr:\n{err}");
    for s in says {
        assert!(
            lines[0].contains(s),
            "lorkd-train {args:?}: {:?} lacks {s:?}",
            lines[0]
        );
    }
    assert_eq!(files(dir), before, "lorkd-train {args:?} wrote a file");
}

#[test]
fn bad_input_fails_with_one_line() {
    let dir = std::env::temp_dir().join(format!("lorkd-train-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let d = dir.as_path();
    fails(
        d,
        &["eval", "no-such-run", "--data", "synthetic"],
        &["no-such-run"],
    );
    fails(
        d,
        &["eval-bundle", "no-such.lorkd", "--data", "synthetic"],
        &["no-such.lorkd"],
    );
    fails(
        d,
        &[
            "finetune",
            "--from",
            "no-such-run",
            "--dept",
            "xray",
            "-o",
            "out",
        ],
        &["no-such-run"],
    );
    // A real checkpoint, then a bad --data spec and an unknown department.
    let init = train(
        d,
        &[
            "init",
            "--arch",
            "shufflenet_v2_x0_5",
            "--departments",
            "2",
            "--classes",
            "2",
            "--rank",
            "2",
            "--input-size",
            "32",
            "-o",
            "ck",
        ],
    );
    assert!(
        init.status.success(),
        "{}",
        String::from_utf8_lossy(&init.stderr)
    );
    fails(d, &["eval", "ck", "--data", "bogus:spec"], &["bogus:spec"]);
    fails(
        d,
        &[
            "finetune",
            "--from",
            "ck",
            "--dept",
            "no-such-dept",
            "--data",
            "synthetic:departments=2,size=32,per_class=2",
            "--epochs",
            "1",
            "-o",
            "out",
        ],
        &["no-such-dept"],
    );
    std::fs::remove_dir_all(&dir).ok();
}
