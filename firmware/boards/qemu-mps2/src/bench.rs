//! `bench …` command lines: the work whose guest instructions `run-qemu --bench` counts.
//! `infer N` / `switch N` run the default (best, here the DSP) kernel table through
//! `checks::bench`, `infer-auto N` / `switch-auto N` the same with the per-layer switch plan
//! (`Mode::Auto`: few-pixel experts stream, the rest are rebuilt); `infer-ref N` / `switch-ref N` the same work on the scalar reference
//! table (the "before" of the same image); `infer-null N` with the conv slots doing
//! nothing (the engine's work outside the conv kernels); `macs` prints the multiply-accumulates of one
//! inference, counted by a table of wrappers around the reference kernels.
use crate::checks;
use crate::Tally;
use core::sync::atomic::{AtomicU32, Ordering::Relaxed};
use cortex_m_semihosting::hprintln;
use lorkd_runtime::engine::Engine;
use lorkd_runtime::format::Mode;
use lorkd_runtime::kernels::{reference as r, Geom, Kernels, OutQ};

/// Most f32 values of one input image.
const MAX_INPUT: usize = 3 * 64 * 64;

static CONV: AtomicU32 = AtomicU32::new(0);
static DW: AtomicU32 = AtomicU32::new(0);

fn count(c: &AtomicU32, g: &Geom, per_out: usize) {
    c.fetch_add((g.ho * g.wo * g.cout * per_out) as u32, Relaxed);
}

fn c1x1(g: &Geom, x: &[i8], zx: i32, w: &[i8], rq: &[[i32; 3]], q: OutQ, y: &mut [i8]) {
    count(&CONV, g, g.cin);
    r::conv1x1::conv1x1_i8(g, x, zx, w, rq, q, y)
}
fn ckxk(g: &Geom, x: &[i8], zx: i32, w: &[i8], rq: &[[i32; 3]], q: OutQ, y: &mut [i8]) {
    count(&CONV, g, g.cin * g.k * g.k);
    r::conv::conv_i8(g, x, zx, w, rq, q, y)
}
fn cdw(g: &Geom, x: &[i8], zx: i32, w: &[i8], rq: &[[i32; 3]], q: OutQ, y: &mut [i8]) {
    count(&DW, g, 9);
    r::dwconv3x3::dwconv3x3_i8(g, x, zx, w, rq, q, y)
}

/// A conv slot that computes nothing: `infer-null` counts the engine's work outside the
/// three int8 conv kernels (quantising the input, pools, concat/shuffle, rescales, head).
fn null(_: &Geom, _: &[i8], _: i32, _: &[i8], _: &[[i32; 3]], _: OutQ, _: &mut [i8]) {}

pub fn run(t: &mut Tally, what: &str, n: usize) {
    let table = match what {
        "infer" | "switch" | "infer-auto" | "switch-auto" => return checks::bench(t, what, n),
        "infer-ref" | "switch-ref" => Kernels::reference(),
        "infer-null" => Kernels {
            conv1x1_i8: null,
            conv_i8: null,
            dwconv3x3_i8: null,
            ..Kernels::reference()
        },
        "macs" => Kernels {
            conv1x1_i8: c1x1,
            conv_i8: ckxk,
            dwconv3x3_i8: cdw,
            ..Kernels::reference()
        },
        _ => {
            return t.check(
                "bench: infer|switch|infer-auto|switch-auto|infer-ref|switch-ref|infer-null|macs",
                false,
            )
        }
    };
    let Some((f, bundle, arena)) = checks::engine_setup(t) else {
        return;
    };
    let Ok(mut engine) = Engine::new(&bundle, arena, Mode::Materialized) else {
        return t.check("engine starts", false);
    };
    engine.set_kernels(table);
    let mut x = [0f32; MAX_INPUT];
    let x = &mut x[..f.input_len];
    f.image(0, x);
    let mut logits = [0f32; 64];
    let mut ok = engine.select(0).is_ok();
    if what == "macs" {
        ok &= engine.infer(x, &mut logits).is_ok();
        let (c, d) = (CONV.load(Relaxed), DW.load(Relaxed));
        hprintln!("[fw] bench macs: {} (conv {}, depthwise {})", c + d, c, d);
    } else {
        for i in 0..n {
            ok &= match what {
                "infer-ref" | "infer-null" => engine.infer(x, &mut logits).is_ok(),
                _ => engine.select((i + 1) % f.departments).is_ok(),
            };
        }
    }
    t.check("bench run", ok);
}
