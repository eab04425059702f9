//! Evaluation metrics of the reference fraud protocol: ROC AUC, average precision and
//! Card Precision@k (Le Borgne et al., handbook ch. 3 and 4). Pure functions.

use std::collections::{HashMap, HashSet};

/// Area under the ROC curve: the probability that a random fraud scores above a random
/// genuine transaction (ties count one half). `None` without both classes.
pub fn roc_auc(scores: &[f64], labels: &[bool]) -> Option<f64> {
    assert_eq!(scores.len(), labels.len(), "one label per score");
    let positives = labels.iter().filter(|l| **l).count();
    let negatives = labels.len() - positives;
    if positives == 0 || negatives == 0 {
        return None;
    }
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_by(|&a, &b| scores[a].total_cmp(&scores[b]));
    // Mann–Whitney U with average ranks for ties.
    let mut positive_rank_sum = 0.0;
    let mut i = 0;
    while i < order.len() {
        let mut j = i;
        while j + 1 < order.len() && scores[order[j + 1]] == scores[order[i]] {
            j += 1;
        }
        let average_rank = (i + j) as f64 / 2.0 + 1.0;
        positive_rank_sum += average_rank * order[i..=j].iter().filter(|&&k| labels[k]).count() as f64;
        i = j + 1;
    }
    let p = positives as f64;
    Some((positive_rank_sum - p * (p + 1.0) / 2.0) / (p * negatives as f64))
}

/// Average precision, as scikit-learn computes it: Σ (Rₙ − Rₙ₋₁) Pₙ over the distinct
/// score thresholds, highest first. `None` without any positive.
pub fn average_precision(scores: &[f64], labels: &[bool]) -> Option<f64> {
    assert_eq!(scores.len(), labels.len(), "one label per score");
    let positives = labels.iter().filter(|l| **l).count();
    if positives == 0 {
        return None;
    }
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]));
    let (mut true_positives, mut seen, mut previous_recall, mut ap) = (0usize, 0usize, 0.0, 0.0);
    let mut i = 0;
    while i < order.len() {
        // All transactions with the same score cross the threshold together.
        let mut j = i;
        while j < order.len() && scores[order[j]] == scores[order[i]] {
            true_positives += usize::from(labels[order[j]]);
            seen += 1;
            j += 1;
        }
        let recall = true_positives as f64 / positives as f64;
        let precision = true_positives as f64 / seen as f64;
        ap += (recall - previous_recall) * precision;
        previous_recall = recall;
        i = j;
    }
    Some(ap)
}

/// One scored transaction for Card Precision@k.
#[derive(Clone, Debug)]
pub struct ScoredTransaction<'a> {
    pub day: i64,
    pub card: &'a str,
    pub score: f64,
    pub is_fraud: bool,
}

/// Card Precision@k per test day and its mean: each day, group the day's transactions
/// by card (highest score; fraud if any transaction is), leave out cards already
/// detected on earlier days, rank cards by score and count frauds among the top `k`,
/// divided by `k`. Detected = frauds in a day's top `k`.
pub fn card_precision_at_k(transactions: &[ScoredTransaction<'_>], k: usize) -> (Vec<(i64, f64)>, f64) {
    let mut days: Vec<i64> = transactions.iter().map(|t| t.day).collect();
    days.sort_unstable();
    days.dedup();
    let mut detected: HashSet<&str> = HashSet::new();
    let mut per_day = Vec::with_capacity(days.len());
    for day in days {
        let mut cards: HashMap<&str, (f64, bool)> = HashMap::new();
        for t in transactions.iter().filter(|t| t.day == day && !detected.contains(t.card)) {
            let entry = cards.entry(t.card).or_insert((f64::NEG_INFINITY, false));
            entry.0 = entry.0.max(t.score);
            entry.1 |= t.is_fraud;
        }
        let mut ranked: Vec<(&str, f64, bool)> = cards.into_iter().map(|(c, (s, f))| (c, s, f)).collect();
        // Highest score first; card id breaks ties so results are deterministic.
        ranked.sort_by(|a, b| b.1.total_cmp(&a.1).then_with(|| a.0.cmp(b.0)));
        let found: Vec<&str> = ranked.iter().take(k).filter(|(_, _, fraud)| *fraud).map(|(c, _, _)| *c).collect();
        per_day.push((day, found.len() as f64 / k as f64));
        detected.extend(found);
    }
    let mean =
        if per_day.is_empty() { 0.0 } else { per_day.iter().map(|(_, p)| p).sum::<f64>() / per_day.len() as f64 };
    (per_day, mean)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-12
    }

    #[test]
    fn roc_auc_by_hand() {
        // Scores 0.1 0.4 0.35 0.8 with labels 0 0 1 1 (scikit-learn's example): 0.75.
        assert!(close(roc_auc(&[0.1, 0.4, 0.35, 0.8], &[false, false, true, true]).unwrap(), 0.75));
        // Perfect and inverted rankings; ties count one half.
        assert!(close(roc_auc(&[0.1, 0.9], &[false, true]).unwrap(), 1.0));
        assert!(close(roc_auc(&[0.9, 0.1], &[false, true]).unwrap(), 0.0));
        assert!(close(roc_auc(&[0.5, 0.5], &[false, true]).unwrap(), 0.5));
        assert_eq!(roc_auc(&[0.5], &[true]), None);
    }

    #[test]
    fn average_precision_by_hand() {
        // scikit-learn's example: ranks 0.8 (P), 0.4 (N), 0.35 (P), 0.1 (N):
        // AP = 0.5 × 1 + 0.5 × 2/3 = 0.8333…
        assert!(close(
            average_precision(&[0.1, 0.4, 0.35, 0.8], &[false, false, true, true]).unwrap(),
            0.5 + 1.0 / 3.0
        ));
        // A tie between a fraud and a genuine one at the top: precision 1/2 at recall 1.
        assert!(close(average_precision(&[0.9, 0.9], &[true, false]).unwrap(), 0.5));
        assert_eq!(average_precision(&[0.1], &[false]), None);
    }

    #[test]
    fn card_precision_by_hand() {
        let t = |day, card, score, is_fraud| ScoredTransaction { day, card, score, is_fraud };
        let transactions = vec![
            // Day 0: cards a (fraud, 0.9), b (genuine, 0.8 and 0.2 → 0.8), c (fraud, 0.1).
            t(0, "a", 0.9, true),
            t(0, "b", 0.8, false),
            t(0, "b", 0.2, false),
            t(0, "c", 0.1, true),
            // Day 1: a is detected already and left out; c now ranks first.
            t(1, "a", 0.99, true),
            t(1, "c", 0.7, true),
            t(1, "d", 0.6, false),
        ];
        let (per_day, mean) = card_precision_at_k(&transactions, 2);
        assert_eq!(per_day, vec![(0, 0.5), (1, 0.5)]);
        assert!(close(mean, 0.5));
        let (per_day, _) = card_precision_at_k(&transactions, 1);
        assert_eq!(per_day, vec![(0, 1.0), (1, 1.0)]);
    }
}
