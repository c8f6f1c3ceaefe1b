//! Classification metrics of one department from its logits: top-1, the confusion matrix,
//! balanced accuracy (mean per-class recall) and one-vs-rest ROC AUC (MedMNIST's standard
//! metric besides accuracy). Used by `lorkd-train eval` and the experiments script; pure
//! Rust so the numbers do not depend on the backend that produced the logits.
use serde::{Deserialize, Serialize};

/// A department's metrics.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ClassMetrics {
    /// Images scored.
    pub images: usize,
    /// Top-1 accuracy.
    pub top1: f64,
    /// Mean recall over the classes present in the labels.
    pub balanced_accuracy: f64,
    /// Macro one-vs-rest ROC AUC over the classes with both positives and negatives, on the
    /// softmax of the logits (NaN when no class has both).
    pub auc: f64,
    /// `confusion[true][predicted]` counts.
    pub confusion: Vec<Vec<usize>>,
}

impl ClassMetrics {
    /// Metrics of `labels[i]` against row `i` of `logits` (row-major, `classes` columns).
    /// Predictions are the first maximum of each row (as `argmax`).
    ///
    /// # Panics
    /// When `logits.len() != labels.len() * classes` or a label is `>= classes`: callers
    /// build both from the same batches, so a mismatch is a bug.
    pub fn from_logits(labels: &[usize], logits: &[f32], classes: usize) -> ClassMetrics {
        assert_eq!(logits.len(), labels.len() * classes, "logits shape");
        let n = labels.len();
        let mut confusion = vec![vec![0usize; classes]; classes];
        let mut probs = vec![0f64; logits.len()];
        for (i, &y) in labels.iter().enumerate() {
            assert!(y < classes, "label {y} of {classes} classes");
            let row = &logits[i * classes..(i + 1) * classes];
            let top = row
                .iter()
                .enumerate()
                .fold(0, |b, (j, v)| if *v > row[b] { j } else { b });
            confusion[y][top] += 1;
            // Softmax in f64 with the max subtracted: AUC ranks need no more precision.
            let m = f64::from(row[top]);
            let e: Vec<f64> = row.iter().map(|&v| (f64::from(v) - m).exp()).collect();
            let s: f64 = e.iter().sum();
            for (c, v) in e.into_iter().enumerate() {
                probs[i * classes + c] = v / s;
            }
        }
        let correct: usize = (0..classes).map(|c| confusion[c][c]).sum();
        let recalls: Vec<f64> = (0..classes)
            .filter_map(|c| {
                let total: usize = confusion[c].iter().sum();
                (total > 0).then(|| confusion[c][c] as f64 / total as f64)
            })
            .collect();
        let aucs: Vec<f64> = (0..classes)
            .filter_map(|c| {
                let scores: Vec<f64> = (0..n).map(|i| probs[i * classes + c]).collect();
                let pos: Vec<bool> = labels.iter().map(|&y| y == c).collect();
                binary_auc(&scores, &pos)
            })
            .collect();
        ClassMetrics {
            images: n,
            top1: correct as f64 / n.max(1) as f64,
            balanced_accuracy: mean_or_nan(&recalls),
            auc: mean_or_nan(&aucs),
            confusion,
        }
    }
}

fn mean_or_nan(v: &[f64]) -> f64 {
    if v.is_empty() {
        f64::NAN
    } else {
        v.iter().sum::<f64>() / v.len() as f64
    }
}

/// ROC AUC of `scores` for the positives `pos`: the probability that a random positive
/// scores above a random negative, ties counting one half (the Mann–Whitney U statistic
/// from average ranks). `None` without both positives and negatives.
pub fn binary_auc(scores: &[f64], pos: &[bool]) -> Option<f64> {
    let n_pos = pos.iter().filter(|&&p| p).count();
    let n_neg = pos.len() - n_pos;
    if n_pos == 0 || n_neg == 0 {
        return None;
    }
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_by(|&a, &b| scores[a].total_cmp(&scores[b]));
    let mut rank_sum_pos = 0f64;
    let mut i = 0;
    while i < order.len() {
        let mut j = i;
        while j + 1 < order.len() && scores[order[j + 1]] == scores[order[i]] {
            j += 1;
        }
        // Ranks i+1..=j+1 share their average.
        let avg = (i + j + 2) as f64 / 2.0;
        rank_sum_pos += avg * order[i..=j].iter().filter(|&&k| pos[k]).count() as f64;
        i = j + 1;
    }
    let u = rank_sum_pos - (n_pos * (n_pos + 1)) as f64 / 2.0;
    Some(u / (n_pos as f64 * n_neg as f64))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    fn seed() -> u64 {
        let s = std::env::var("LORKD_SEED")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(rand::random);
        eprintln!("metrics: LORKD_SEED={s}");
        s
    }

    /// AUC by definition: every positive/negative pair, ties one half.
    fn pairwise_auc(scores: &[f64], pos: &[bool]) -> Option<f64> {
        let (mut num, mut den) = (0f64, 0f64);
        for (i, &pi) in pos.iter().enumerate() {
            for (j, &pj) in pos.iter().enumerate() {
                if pi && !pj {
                    den += 1.0;
                    num += match scores[i].partial_cmp(&scores[j]).unwrap() {
                        std::cmp::Ordering::Greater => 1.0,
                        std::cmp::Ordering::Equal => 0.5,
                        std::cmp::Ordering::Less => 0.0,
                    };
                }
            }
        }
        (den > 0.0).then(|| num / den)
    }

    #[test]
    fn auc_matches_the_pairwise_definition_with_ties() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed());
        for _ in 0..50 {
            let n = rng.gen_range(1..60);
            // Few distinct values, so ties are common.
            let scores: Vec<f64> = (0..n).map(|_| f64::from(rng.gen_range(0..6u8))).collect();
            let pos: Vec<bool> = (0..n).map(|_| rng.gen_bool(0.4)).collect();
            let (a, b) = (binary_auc(&scores, &pos), pairwise_auc(&scores, &pos));
            match (a, b) {
                (Some(a), Some(b)) => assert!((a - b).abs() < 1e-12, "{a} vs {b}"),
                (a, b) => assert_eq!(a, b),
            }
        }
        assert_eq!(binary_auc(&[0.1, 0.9], &[false, true]), Some(1.0));
        assert_eq!(binary_auc(&[0.9, 0.1], &[false, true]), Some(0.0));
    }

    #[test]
    fn confusion_top1_and_balanced_accuracy_count_by_hand() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed());
        let (n, k) = (200usize, 4usize);
        let labels: Vec<usize> = (0..n).map(|_| rng.gen_range(0..k)).collect();
        let logits: Vec<f32> = (0..n * k).map(|_| rng.gen_range(-3.0..3.0)).collect();
        let m = ClassMetrics::from_logits(&labels, &logits, k);
        let pred: Vec<usize> = (0..n)
            .map(|i| {
                let r = &logits[i * k..(i + 1) * k];
                (0..k).max_by(|&a, &b| r[a].total_cmp(&r[b])).unwrap()
            })
            .collect();
        let correct = (0..n).filter(|&i| pred[i] == labels[i]).count();
        assert_eq!(m.images, n);
        assert!((m.top1 - correct as f64 / n as f64).abs() < 1e-12);
        assert_eq!(m.confusion.iter().flatten().sum::<usize>(), n);
        for i in 0..n {
            assert!(m.confusion[labels[i]][pred[i]] > 0);
        }
        let mut recall = 0.0;
        let mut present = 0;
        for c in 0..k {
            let tot = labels.iter().filter(|&&y| y == c).count();
            if tot > 0 {
                present += 1;
                let hit = (0..n).filter(|&i| labels[i] == c && pred[i] == c).count();
                recall += hit as f64 / tot as f64;
            }
        }
        assert!((m.balanced_accuracy - recall / present as f64).abs() < 1e-12);
        // Random logits: AUC near one half, and within [0, 1].
        assert!((0.0..=1.0).contains(&m.auc), "{}", m.auc);

        // Logits that put the true class on top score 1 everywhere.
        let perfect: Vec<f32> = (0..n * k)
            .map(|j| if labels[j / k] == j % k { 5.0 } else { 0.0 })
            .collect();
        let p = ClassMetrics::from_logits(&labels, &perfect, k);
        assert_eq!((p.top1, p.balanced_accuracy, p.auc), (1.0, 1.0, 1.0));
    }
}
