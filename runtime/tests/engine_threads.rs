//! `Engine::set_threads` (feature `threads`) and `Engine::infer_timed`: on random
//! ShuffleNetV2-shaped networks with every conv split (`set_split_min_macs(1)`: pixel runs
//! or channel blocks for the pointwise convs, rows for the stem and depthwise convs; cut
//! evenly, or at 3 threads in the pool's learned shares, which differ run to run), f32 and
//! int8, both modes, every department: the logits **and the whole arena** after an inference are
//! bit-identical for 1, 2, 3 and 4 threads, in the arena the bundle asks for — with the
//! concat + shuffle after a conv run inside the conv's parts (`Engine::fused_ops`).
mod common;
use common::{ranges, seed};
use lorkd_runtime::engine::testnet::{NetSpec, Rng, TestNet};
use lorkd_runtime::engine::Engine;
use lorkd_runtime::format::{Bundle, Mode};
use lorkd_runtime::AlignedBytes;

/// A network with odd channel counts (not multiples of the split alignment) and enough
/// pixels that the pointwise convs split into several runs.
fn spec(r: &mut Rng) -> NetSpec {
    NetSpec {
        size: 40 + 2 * r.below(12) as u16,
        c0: 8 + r.below(30) as u16,
        cb: 12 + r.below(40) as u16,
        features: 24 + r.below(20) as u16,
        rank: 1 + r.below(6) as u16,
        ..NetSpec::small()
    }
}

/// Logits bits of every (department, input), and the arena after the last inference.
fn outputs(
    bundle: &Bundle<'_>,
    mode: Mode,
    threads: usize,
    min_macs: usize,
    xs: &[Vec<f32>],
    fused: &mut usize,
) -> (Vec<Vec<u32>>, Vec<u8>) {
    let mut arena = AlignedBytes::zeroed(bundle.arena_bytes(mode));
    let mut out = Vec::new();
    {
        let mut e = Engine::new(bundle, arena.as_mut_slice(), mode).unwrap();
        e.set_threads(threads).unwrap();
        assert_eq!(e.threads(), threads.max(1));
        // Cuts in learned shares at 3 threads, even at 2 and 4.
        e.set_balanced_cuts(threads == 3);
        // Split every conv (the default leaves small ones whole).
        e.set_split_min_macs(min_macs);
        for t in 0..bundle.department_count() {
            e.select(t).unwrap();
            for x in xs {
                let mut logits = [0.0f32; 16];
                let n = e.infer(x, &mut logits).unwrap();
                *fused = (*fused).max(e.fused_ops());
                out.push(logits[..n].iter().map(|v| v.to_bits()).collect());
            }
        }
    }
    (out, arena.as_slice().to_vec())
}

#[test]
fn any_thread_count_gives_the_same_bits() {
    let s = seed();
    let mut r = Rng::new(s);
    for round in 0..2 {
        let sp = spec(&mut r);
        println!("round {round}: {sp:?}");
        let net = TestNet::random(sp, r.next_u64());
        let xs = net.inputs(2, r.next_u64());
        let fbytes = AlignedBytes::new(&net.bundle_f32());
        let fb = Bundle::parse(fbytes.as_slice()).unwrap();
        let cal = ranges(&fb, sp.classes.len(), &net.inputs(4, r.next_u64()));
        let qbytes = AlignedBytes::new(&net.bundle_int8(&cal));
        let qb = Bundle::parse(qbytes.as_slice()).unwrap();
        for (name, b) in [("f32", &fb), ("int8", &qb)] {
            for mode in Mode::ALL {
                let mut fused = 0;
                let (one, arena1) = outputs(b, mode, 1, 1, &xs, &mut fused);
                assert_eq!(fused, 0, "one thread runs every op on its own");
                for threads in [2, 3, 4] {
                    // Every conv split (1), and the default threshold.
                    for min_macs in [1, 256 * 1024] {
                        let mut fused = 0;
                        let (n, arena_n) = outputs(b, mode, threads, min_macs, &xs, &mut fused);
                        let at = format!("{name} {mode:?} at {threads} threads, {min_macs}");
                        assert_eq!(one, n, "logits: {at}");
                        assert!(arena1 == arena_n, "arena: {at}");
                        // The concats after a conv ran in its parts (`par::Then`).
                        assert!(fused > 0, "no concat fused: {at}");
                    }
                }
            }
        }
    }
}

#[test]
fn timed_inference_matches_and_accounts_every_op() {
    let s = seed();
    let mut r = Rng::new(s);
    let net = TestNet::random(spec(&mut r), r.next_u64());
    let bytes = AlignedBytes::new(&net.bundle_f32());
    let b = Bundle::parse(bytes.as_slice()).unwrap();
    let nops = b.manifest().ops.len();
    let x = &net.inputs(1, r.next_u64())[0];
    let mut arena = AlignedBytes::zeroed(b.arena_bytes(Mode::Materialized));
    let mut e = Engine::new(&b, arena.as_mut_slice(), Mode::Materialized).unwrap();
    e.select(1).unwrap();
    let (mut plain, mut timed) = ([0.0f32; 16], [0.0f32; 16]);
    let n = e.infer(x, &mut plain).unwrap();
    // A counting clock: each boundary reads one more tick, so every op (and the input)
    // gets exactly one tick per inference.
    let mut clock = 0u64;
    let mut ticks = vec![0u64; nops + 1];
    for _ in 0..3 {
        let m = e
            .infer_timed(
                x,
                &mut timed,
                || {
                    clock += 1;
                    clock
                },
                &mut ticks,
            )
            .unwrap();
        assert_eq!(m, n);
        assert_eq!(plain[..n], timed[..n]);
    }
    assert!(ticks.iter().all(|&t| t == 3), "{ticks:?}");
    // A short tick buffer records what fits and changes nothing else.
    let mut short = vec![0u64; 2];
    e.infer_timed(
        x,
        &mut timed,
        || {
            clock += 1;
            clock
        },
        &mut short,
    )
    .unwrap();
    assert_eq!(short, [1, 1]);
    assert_eq!(plain[..n], timed[..n]);
}
