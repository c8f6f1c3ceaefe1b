//! `Engine::set_threads` (feature `threads`) and `Engine::infer_timed`: on random
//! ShuffleNetV2-shaped networks with every conv split (`set_split_min_macs(1)`: pixel runs
//! or channel blocks for the pointwise convs, rows for the stem and depthwise convs; cut
//! evenly, or at 3 threads in the pool's learned shares, which differ run to run), f32 and
//! int8, both modes, every department: the logits **and the whole arena** after an inference are
//! bit-identical for 1, 2, 3 and 4 threads, in the arena the bundle asks for — with the
//! concat + shuffle after a conv, an int8 depthwise conv before the pointwise one that
//! reads it, and an int8 pointwise conv on the concat's output after it, run inside the
//! conv's parts (`Engine::fused_ops`, `Engine::fused_depthwise`).
mod common;
use common::{ranges, seed};
use lorkd_runtime::engine::testnet::{NetSpec, Rng, TestNet};
use lorkd_runtime::engine::Engine;
use lorkd_runtime::format::{Bundle, Mode};
use lorkd_runtime::AlignedBytes;

/// A network with odd channel counts (not multiples of the split alignment) and enough
/// pixels that the pointwise convs split into several runs. `wide`: a head conv wider than
/// any three block convs, as in ShuffleNetV2 (1024 features), so the int8 requant region
/// holds a depthwise conv's table, the pointwise conv's after it and the next unit's first
/// conv's side by side (`Par::dw_conv_i8`, `par::Post`); otherwise narrower, as a small
/// network may be (then they run one after the other).
fn spec(r: &mut Rng, wide: bool) -> NetSpec {
    let cb = 12 + r.below(40) as u16;
    NetSpec {
        size: 40 + 2 * r.below(12) as u16,
        c0: 8 + r.below(30) as u16,
        cb,
        features: 24 + r.below(20) as u16 + if wide { 3 * cb } else { 0 },
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
    fused: &mut (usize, usize),
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
                fused.0 = fused.0.max(e.fused_ops());
                fused.1 = fused.1.max(e.fused_depthwise());
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
    for round in 0..3 {
        let mut sp = spec(&mut r, round != 1);
        if round == 2 {
            // A stem wider than three block convs and a narrow head: the requant region
            // (12 bytes a channel of the widest conv) holds the tables of a depthwise conv,
            // its pointwise conv and the post conv, and the head's table, the last one an
            // inference writes, does not cover it — so the arena shows where each table
            // lay (a post conv's at the region's end, in a conv's parts or on its own).
            sp.cb = 12 + r.below(8) as u16;
            sp.c0 = 3 * sp.cb + 2 + r.below(6) as u16;
            sp.features = 16 + r.below(8) as u16;
        }
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
                let mut fused = (0, 0);
                let (one, arena1) = outputs(b, mode, 1, 1, &xs, &mut fused);
                assert_eq!(fused, (0, 0), "one thread runs every op on its own");
                for threads in [2, 3, 4] {
                    // Every conv split (1), and the default threshold.
                    for min_macs in [1, 256 * 1024] {
                        let mut fused = (0, 0);
                        let (n, arena_n) = outputs(b, mode, threads, min_macs, &xs, &mut fused);
                        let at = format!("{name} {mode:?} at {threads} threads, {min_macs}");
                        assert_eq!(one, n, "logits: {at}");
                        assert!(arena1 == arena_n, "arena: {at}");
                        // The concats after a conv ran in its parts (`par::Then`), and int8
                        // depthwise convs in the parts of the pointwise conv after them
                        // where they split (`Par::dw_conv_i8`; of Streaming's pointwise
                        // experts only those it rebuilds per inference run the plain slot).
                        assert!(fused.0 > fused.1, "no concat fused: {at}");
                        let can = name == "int8";
                        assert!(can || fused.1 == 0, "depthwise fused {}: {at}", fused.1);
                        let must = can && mode != Mode::Streaming && round != 1 && min_macs == 1;
                        assert!(!must || fused.1 > 0, "no depthwise conv fused: {at}");
                        // Both concats, and in int8 the pointwise convs on their outputs
                        // where not streamed and their tables fit: in Materialized the
                        // stride-1 unit's first conv at least (the head conv's table may
                        // not fit beside two more).
                        let post = usize::from(can && mode == Mode::Materialized && round != 1);
                        let most = if can { 4 } else { 2 };
                        let cat_post = fused.0 - fused.1;
                        assert!((2 + post..=most).contains(&cat_post), "{cat_post}: {at}");
                    }
                }
            }
        }
    }
}

/// Every op (and the input) gets exactly one tick of a counting clock per timed inference,
/// and the logits are the plain inference's: f32 on one thread, and int8 on 2 threads with
/// every conv split, where concats and depthwise convs run inside a conv's parts.
#[test]
fn timed_inference_matches_and_accounts_every_op() {
    let s = seed();
    let mut r = Rng::new(s);
    let net = TestNet::random(spec(&mut r, true), r.next_u64());
    let fbytes = AlignedBytes::new(&net.bundle_f32());
    let fb = Bundle::parse(fbytes.as_slice()).unwrap();
    let cal = ranges(&fb, 3, &net.inputs(4, r.next_u64()));
    let qbytes = AlignedBytes::new(&net.bundle_int8(&cal));
    let qb = Bundle::parse(qbytes.as_slice()).unwrap();
    let x = &net.inputs(1, r.next_u64())[0];
    for (b, threads) in [(&fb, 1), (&qb, 2)] {
        let nops = b.manifest().ops.len();
        let mut arena = AlignedBytes::zeroed(b.arena_bytes(Mode::Materialized));
        let mut e = Engine::new(b, arena.as_mut_slice(), Mode::Materialized).unwrap();
        e.set_threads(threads).unwrap();
        e.set_split_min_macs(1);
        e.select(1).unwrap();
        let (mut plain, mut timed) = ([0.0f32; 16], [0.0f32; 16]);
        let n = e.infer(x, &mut plain).unwrap();
        // A counting clock: each boundary reads one more tick.
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
        assert!(
            ticks.iter().all(|&t| t == 3),
            "{threads} threads: {ticks:?}"
        );
        if threads > 1 {
            assert!(e.fused_depthwise() > 0 && e.fused_ops() > e.fused_depthwise());
        }
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
}
