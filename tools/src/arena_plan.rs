//! Offline activation-arena planning by buffer liveness (TFLite-Micro's greedy-by-size
//! planner): each value lives from the op that writes it to the last op that reads it; two
//! values whose lifetimes intersect get disjoint bytes. The input value lives from "before
//! op 0". An op's output is live at that op, as are its inputs, so they never alias.

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
        let (reads, out): (Vec<u16>, Option<u16>) = match *n {
            Node::Conv { input, output, .. } | Node::DwConv { input, output, .. } => {
                (vec![input.value], Some(output))
            }
            Node::MaxPool { input, output } => (vec![input], Some(output)),
            Node::ConcatShuffle { a, b, output } => (vec![a.value, b.value], Some(output)),
            Node::PoolHead { input } => (vec![input], None),
        };
        if let Some(o) = out {
            life[o as usize] = (i, i);
        }
        for r in reads {
            life[r as usize].1 = life[r as usize].1.max(i);
        }
    }
    life
}

/// Plans the arena for values of `elem` bytes per element.
pub fn plan(g: &Graph, elem: usize) -> Plan {
    let life = lifetimes(g);
    let sizes: Vec<usize> = g
        .values
        .iter()
        .map(|&(h, w, c)| align(h * w * c * elem))
        .collect();
    let mut order: Vec<usize> = (0..sizes.len()).collect();
    order.sort_by_key(|&v| (std::cmp::Reverse(sizes[v]), v));
    let mut offsets = vec![0usize; sizes.len()];
    let mut placed: Vec<usize> = Vec::new();
    for &v in &order {
        // Blocks of already placed values alive at the same time, by offset.
        let mut busy: Vec<(usize, usize)> = placed
            .iter()
            .filter(|&&w| life[w].0 <= life[v].1 && life[v].0 <= life[w].1)
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
                    let live = life[a].0 <= life[b].1 && life[b].0 <= life[a].1;
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
}
