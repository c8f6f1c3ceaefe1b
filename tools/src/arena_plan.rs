//! Offline activation-arena planning by buffer liveness (TFLite-Micro's greedy-by-size
//! planner): each value lives from the op that writes it to the last op that reads it; two
//! values whose lifetimes intersect get disjoint bytes. The input value lives from "before
//! op 0". An op's output is live at that op, as are its inputs, so they never alias.
//!
//! Ops that a threaded engine runs as one job ([`fusion_groups`]: a depthwise conv and the
//! pointwise conv that reads it, a conv and the concat that reads it, the concat and the
//! pointwise conv that reads it) go together only where
//! none of their outputs overlaps another's output or any of their inputs: a part writes its
//! pixels of a later op's output while another part still reads its rows of an earlier op's
//! input (`engine::ops::fits_n`). Plain liveness lets a later op's output take the bytes an
//! earlier one read last; the plan keeps every value a group reads or writes live across the
//! whole group, group by group, wherever that does not grow the arena, else across as many
//! of its first ops as that allows (at 1.0x @224 11 of 16 concats and 5 of 19 depthwise
//! convs ran alone for it; now every group fits whole but the first downsampling block's,
//! whose pointwise conv after the concat would grow the arena).

use core::ops::Range;

use crate::graph::{Graph, Node};
use lorkd_runtime::format::layout::align;

/// Offsets (bytes, 16-aligned) of every value and the activation region's size.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Plan {
    pub offsets: Vec<u32>,
    pub activation_bytes: u32,
}

/// `[first, last]` op index during which each value must hold its bytes (value 0: from -1).
pub fn lifetimes(g: &Graph) -> Vec<(i64, i64)> {
    let mut life: Vec<(i64, i64)> = vec![(i64::MAX, i64::MIN); g.values.len()];
    life[0] = (-1, -1);
    for (i, n) in g.nodes.iter().enumerate() {
        let i = i as i64;
        let (reads, out) = io(n);
        if let Some(o) = out {
            life[o as usize] = (i, i);
        }
        for r in reads {
            life[r as usize].1 = life[r as usize].1.max(i);
        }
    }
    life
}

/// The runs of consecutive ops `[first, last]` that a threaded engine may run as one job:
/// a depthwise conv with the conv right after it that reads its output, a conv with the
/// concat right after it that reads its output as side `b` only, and that concat with the
/// pointwise conv right after it that reads its output (`engine::run`), chained.
pub fn fusion_groups(g: &Graph) -> Vec<(usize, usize)> {
    let goes_on = |n: &Node, next: &Node| match (*n, *next) {
        (Node::DwConv { output, .. }, Node::Conv { input, .. }) => input.value == output,
        (Node::Conv { output, .. }, Node::ConcatShuffle { a, b, .. }) => {
            b.value == output && a.value != output
        }
        (Node::ConcatShuffle { output, .. }, Node::Conv { conv, input, .. }) => {
            let c = &g.convs[conv];
            input.value == output && (c.k, c.stride, c.pad) == (1, 1, 0)
        }
        _ => false,
    };
    let mut groups: Vec<(usize, usize)> = Vec::new();
    for (i, w) in g.nodes.windows(2).enumerate() {
        if !goes_on(&w[0], &w[1]) {
            continue;
        }
        match groups.last_mut() {
            Some(last) if last.1 == i => last.1 = i + 1,
            _ => groups.push((i, i + 1)),
        }
    }
    groups
}

/// The values op `n` reads and the one it writes.
fn io(n: &Node) -> (Vec<u16>, Option<u16>) {
    match *n {
        Node::Conv { input, output, .. } | Node::DwConv { input, output, .. } => {
            (vec![input.value], Some(output))
        }
        Node::MaxPool { input, output } => (vec![input], Some(output)),
        Node::ConcatShuffle { a, b, output } => (vec![a.value, b.value], Some(output)),
        Node::PoolHead { input } => (vec![input], None),
    }
}

/// Plans the arena for values of `elem` bytes per element: by liveness, then with each
/// [`fusion_groups`] group's values live across the group where the arena does not grow.
pub fn plan(g: &Graph, elem: usize) -> Plan {
    let mut life = lifetimes(g);
    let mut best = place(g, elem, &life);
    for (s, e) in fusion_groups(g) {
        // The whole group, else without its last ops (the engine then runs those after).
        for e in (s + 1..=e).rev() {
            let mut wider = life.clone();
            for n in &g.nodes[s..=e] {
                let (reads, out) = io(n);
                for v in reads.into_iter().chain(out) {
                    let l = &mut wider[v as usize];
                    *l = (l.0.min(s as i64), l.1.max(e as i64));
                }
            }
            let p = place(g, elem, &wider);
            if p.activation_bytes <= best.activation_bytes {
                (life, best) = (wider, p);
                break;
            }
        }
    }
    settle(g, elem, &life, best)
}

/// One value's access in an inference's op sequence at 2 threads ([`schedule`]).
#[derive(Clone, Copy, Debug)]
struct Access {
    value: usize,
    bytes: usize,
    /// Bytes of the value before the cut: the first thread's, the rest the second's.
    first: usize,
    write: bool,
}

/// The accesses of two inferences at 2 threads, in order: each job (a [`fusion_groups`]
/// group or an op) cut as the engine cuts it (a depthwise conv's or k×k op's output rows,
/// else its pixels, half each), every value it reads or writes cut at the same pixels.
fn schedule(g: &Graph, elem: usize) -> Vec<Access> {
    let groups = fusion_groups(g);
    let mut out = Vec::new();
    let mut i = 0;
    while i < g.nodes.len() {
        let (s, e) = groups
            .iter()
            .find(|&&(s, _)| s == i)
            .copied()
            .unwrap_or((i, i));
        let (rows, v) = match g.nodes[s] {
            Node::DwConv { output, .. } | Node::MaxPool { output, .. } => (true, output),
            Node::Conv { conv, output, .. } => (g.convs[conv].k > 1, output),
            Node::ConcatShuffle { output, .. } => (false, output),
            Node::PoolHead { input } => (false, input),
        };
        let (ho, wo, _) = g.values[v as usize];
        let cut = if rows {
            ho.div_ceil(2) * wo
        } else {
            (ho * wo).div_ceil(2)
        };
        for n in &g.nodes[s..=e] {
            let (reads, w) = io(n);
            let acc = |v: u16, write| {
                let (h, w, c) = g.values[v as usize];
                let px = cut * (h * w) / (ho * wo);
                Access {
                    value: v as usize,
                    bytes: h * w * c * elem,
                    first: px * c * elem,
                    write,
                }
            };
            out.extend(reads.into_iter().map(|v| acc(v, false)));
            out.extend(w.map(|v| acc(v, true)));
        }
        i = e + 1;
    }
    let once = out.len();
    out.extend_from_within(..once);
    out
}

/// Of `lines` (64-byte lines of the arena), how many accesses of the second inference in
/// `sched` find a line the other thread wrote last, values at `offsets`.
fn crossed(sched: &[Access], offsets: &[usize], lines: Range<usize>) -> usize {
    let mut owner = vec![u8::MAX; lines.len()];
    let (mut n, half) = (0, sched.len() / 2);
    for (k, a) in sched.iter().enumerate() {
        let o = offsets[a.value];
        let split = o + a.first;
        let (lo, hi) = (
            (o / 64).max(lines.start),
            (o + a.bytes).div_ceil(64).min(lines.end),
        );
        for line in lo..hi {
            let t = u8::from(line * 64 >= split);
            let was = &mut owner[line - lines.start];
            n += usize::from(k >= half && *was != t && *was != u8::MAX);
            if a.write {
                *was = t;
            }
        }
    }
    n
}

/// Moves values, largest first, within the arena's bytes and where no value alive at the
/// same time (over `life`) lies, to where fewer lines cross between 2 threads ([`crossed`]):
/// a line one core wrote that the other writes next comes from the first core's cache,
/// ~20 ns each on the benchmark host (at 2 threads by-liveness plans crossed about a
/// quarter of each inference's lines).
fn settle(g: &Graph, elem: usize, life: &[(i64, i64)], plan: Plan) -> Plan {
    let (sizes, order) = sizes(g, elem);
    let total = plan.activation_bytes as usize;
    let mut offs: Vec<usize> = plan.offsets.iter().map(|&o| o as usize).collect();
    let sched = schedule(g, elem);
    for _ in 0..2 {
        for &v in &order {
            let size = sizes[v];
            let busy: Vec<(usize, usize)> = (0..sizes.len())
                .filter(|&w| w != v && meet(life[w], life[v]))
                .map(|w| (offs[w], offs[w] + sizes[w]))
                .collect();
            let free = |at: usize| {
                at + size <= total && busy.iter().all(|&(s, e)| at + size <= s || e <= at)
            };
            // Gaps' ends, and where the value's cut meets another value's (16-aligned).
            let mut cands: Vec<usize> = busy
                .iter()
                .flat_map(|&(s, e)| [e, s.saturating_sub(size)])
                .chain((0..sizes.len()).filter(|&w| w != v).map(|w| {
                    let mid = offs[w] + sizes[w] / 2;
                    mid.saturating_sub(size / 2) / 16 * 16
                }))
                .chain([0])
                .filter(|&at| free(at))
                .collect();
            cands.sort_unstable();
            cands.dedup();
            let cur = offs[v];
            let mut best = (0isize, cur);
            for at in cands {
                if at == cur {
                    continue;
                }
                let lines = cur.min(at) / 64..(cur.max(at) + size).div_ceil(64);
                let before = crossed(&sched, &offs, lines.clone()) as isize;
                offs[v] = at;
                let after = crossed(&sched, &offs, lines) as isize;
                offs[v] = cur;
                if after - before < best.0 {
                    best = (after - before, at);
                }
            }
            offs[v] = best.1;
        }
    }
    Plan {
        offsets: offs.into_iter().map(|o| o as u32).collect(),
        activation_bytes: plan.activation_bytes,
    }
}

/// Each value's bytes (16-aligned), and the values largest first (ties in index order).
fn sizes(g: &Graph, elem: usize) -> (Vec<usize>, Vec<usize>) {
    let sizes: Vec<usize> = g
        .values
        .iter()
        .map(|&(h, w, c)| align(h * w * c * elem))
        .collect();
    let mut order: Vec<usize> = (0..sizes.len()).collect();
    order.sort_by_key(|&v| (std::cmp::Reverse(sizes[v]), v));
    (sizes, order)
}

/// Whether two lifetimes (`[first, last]` ops) share an op.
fn meet(a: (i64, i64), b: (i64, i64)) -> bool {
    a.0 <= b.1 && b.0 <= a.1
}

/// Greedy-by-size placement of values alive over `life`.
fn place(g: &Graph, elem: usize, life: &[(i64, i64)]) -> Plan {
    let (sizes, order) = sizes(g, elem);
    let mut offsets = vec![0usize; sizes.len()];
    let mut placed: Vec<usize> = Vec::new();
    for &v in &order {
        // Blocks of already placed values alive at the same time, by offset.
        let mut busy: Vec<(usize, usize)> = placed
            .iter()
            .filter(|&&w| meet(life[w], life[v]))
            .map(|&w| (offsets[w], offsets[w] + sizes[w]))
            .collect();
        busy.sort();
        let mut at = 0usize;
        for (s, e) in busy {
            if at + sizes[v] <= s {
                break;
            }
            at = at.max(e);
        }
        offsets[v] = at;
        placed.push(v);
    }
    let total = offsets
        .iter()
        .zip(&sizes)
        .map(|(o, s)| o + s)
        .max()
        .unwrap_or(0);
    Plan {
        offsets: offsets.into_iter().map(|o| o as u32).collect(),
        activation_bytes: total as u32,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::graph::shufflenet_v2;

    #[test]
    fn live_values_never_share_bytes_and_plan_meets_peak() {
        for (arch, size) in [("shufflenet_v2_x0_5", 64), ("shufflenet_v2_x1_0", 224)] {
            let g = shufflenet_v2(arch, 3, size).unwrap();
            let p = plan(&g, 4);
            let life = lifetimes(&g);
            let sz = |v: usize| {
                let (h, w, c) = g.values[v];
                h * w * c * 4
            };
            for a in 0..g.values.len() {
                assert_eq!(p.offsets[a] % 16, 0);
                assert!(p.offsets[a] as usize + sz(a) <= p.activation_bytes as usize);
                for b in a + 1..g.values.len() {
                    let live = meet(life[a], life[b]);
                    let (ra, rb) = (
                        (p.offsets[a] as usize, p.offsets[a] as usize + sz(a)),
                        (p.offsets[b] as usize, p.offsets[b] as usize + sz(b)),
                    );
                    assert!(
                        !live || ra.1 <= rb.0 || rb.1 <= ra.0,
                        "{arch}: values {a} and {b} overlap while live"
                    );
                }
            }
            // Lower bound: the most bytes live at any one op. Greedy-by-size stays close.
            let peak = (-1..g.nodes.len() as i64)
                .map(|i| {
                    (0..g.values.len())
                        .filter(|&v| life[v].0 <= i && i <= life[v].1)
                        .map(sz)
                        .sum::<usize>()
                })
                .max()
                .unwrap();
            println!("{arch}: plan {} B, peak live {peak} B", p.activation_bytes);
            assert!(p.activation_bytes as usize >= peak);
            assert!(
                (p.activation_bytes as usize) * 4 <= peak * 5,
                "{arch}: plan {} vs peak {peak}",
                p.activation_bytes
            );
        }
    }

    /// Whether the ops of group `[s, e]` may run as one under `p`: their outputs disjoint,
    /// and each disjoint from every value the group reads from before it
    /// (`engine::ops::fits_n`).
    fn group_fits(g: &Graph, p: &Plan, elem: usize, (s, e): (usize, usize)) -> bool {
        let bytes = |v: u16| {
            let (h, w, c) = g.values[v as usize];
            let o = p.offsets[v as usize] as usize;
            o..o + h * w * c * elem
        };
        // (A value the group writes and then reads is one of its outputs.)
        let (mut ins, mut outs) = (Vec::new(), Vec::new());
        for n in &g.nodes[s..=e] {
            let (r, o) = io(n);
            ins.extend(r.into_iter().filter(|v| !outs.contains(v)));
            outs.extend(o);
        }
        let (ins, outs): (Vec<_>, Vec<_>) = (
            ins.into_iter().map(bytes).collect(),
            outs.into_iter().map(bytes).collect(),
        );
        let apart = |a: &core::ops::Range<usize>, b: &core::ops::Range<usize>| {
            a.end <= b.start || b.end <= a.start
        };
        outs.iter().enumerate().all(|(k, a)| {
            outs[k + 1..].iter().all(|b| apart(a, b)) && ins.iter().all(|b| apart(a, b))
        })
    }

    /// The ops a threaded engine may run as one job can (at both widths, int8 and f32; at
    /// most one group without its last op), and the arena is no larger than plain liveness
    /// makes it.
    #[test]
    fn fusion_groups_get_disjoint_bytes_at_no_arena_cost() {
        for (arch, size) in [
            ("shufflenet_v2_x0_5", 32),
            ("shufflenet_v2_x0_5", 64),
            ("shufflenet_v2_x1_0", 224),
        ] {
            let g = shufflenet_v2(arch, 3, size).unwrap();
            let groups = fusion_groups(&g);
            // Per block: dw + pw (+ concat), and the downsampling blocks' other branch.
            assert!(groups.len() >= 16, "{arch}: {groups:?}");
            for (s, e) in &groups {
                assert!(s < e);
                assert!(matches!(
                    g.nodes[*s],
                    Node::DwConv { .. } | Node::Conv { .. }
                ));
            }
            for elem in [1, 4] {
                let p = plan(&g, elem);
                let plain = place(&g, elem, &lifetimes(&g));
                let fit = |p: &Plan| {
                    groups
                        .iter()
                        .filter(|&&grp| group_fits(&g, p, elem, grp))
                        .count()
                };
                println!(
                    "{arch} @{size}, {elem} B: {} of {} groups fit ({} by liveness alone), \
                     arena {} B ({} by liveness alone)",
                    fit(&p),
                    groups.len(),
                    fit(&plain),
                    p.activation_bytes,
                    plain.activation_bytes
                );
                assert!(p.activation_bytes <= plain.activation_bytes);
                // Whole, or all but the last op: at 1.0x @224 the first downsampling
                // block's `[dw, pw, concat, pw]` spans its 56×56 input (the stem's peak).
                let whole = fit(&p);
                let short = |&(s, e): &(usize, usize)| group_fits(&g, &p, elem, (s, e - 1));
                assert!(groups
                    .iter()
                    .all(|gr| group_fits(&g, &p, elem, *gr) || short(gr)));
                assert!(whole + 1 >= groups.len(), "{arch} @{size}, {elem} B");
            }
        }
    }

    /// Of the 64-byte lines an inference reads and writes at 2 threads, how many the other
    /// thread wrote last: fewer with [`settle`] than by liveness alone, at every width.
    #[test]
    fn settled_plans_cross_fewer_lines() {
        for (arch, size) in [
            ("shufflenet_v2_x0_5", 32),
            ("shufflenet_v2_x0_5", 64),
            ("shufflenet_v2_x1_0", 224),
        ] {
            let g = shufflenet_v2(arch, 3, size).unwrap();
            for elem in [1, 4] {
                let sched = schedule(&g, elem);
                let count = |p: &Plan| {
                    let offs: Vec<usize> = p.offsets.iter().map(|&o| o as usize).collect();
                    crossed(&sched, &offs, 0..(p.activation_bytes as usize).div_ceil(64))
                };
                let (p, plain) = (plan(&g, elem), place(&g, elem, &lifetimes(&g)));
                let lines: usize = sched.iter().map(|a| a.bytes.div_ceil(64)).sum();
                println!(
                    "{arch} @{size}, {elem} B: {} of an inference's {} line accesses find the \
                     other thread's line ({} by liveness alone)",
                    count(&p),
                    lines / 2,
                    count(&plain),
                );
                assert!(count(&p) < count(&plain));
            }
        }
    }
}
