//! Recall@K, R-precision and MAP@R from neighbour lists.

use std::collections::BTreeMap;
use std::ops::Range;

use serde::{Deserialize, Serialize};

use super::{Label, Metrics, MetricsError, Protocol, Result, Split, check_ks, dense_classes};

/// Queries scored per search call: bounds the neighbour lists held at once.
const QUERY_CHUNK: usize = 1024;

/// The retrieval metrics of one search, before NMI.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RetrievalScores {
    /// Recall@K keyed by K written in decimal.
    pub recall_at_k: BTreeMap<String, f64>,
    /// Mean over the queries with R > 0 (0 where there are none).
    pub r_precision: f64,
    /// Mean over the queries with R > 0 (0 where there are none).
    pub map_at_r: f64,
    /// Queries scored (all count for Recall@K).
    pub queries: usize,
    /// Queries with at least one same-label item in the database (those of R-precision and MAP@R).
    pub queries_with_r: usize,
}

impl RetrievalScores {
    pub(crate) fn into_metrics(self, nmi: Option<f64>) -> Metrics {
        Metrics {
            recall_at_k: self.recall_at_k,
            nmi,
            r_precision: self.r_precision,
            map_at_r: self.map_at_r,
        }
    }
}

/// Scores neighbour lists that were computed elsewhere.
///
/// `labels` has one label per embedding row; `neighbours[q]` lists the row indices of the
/// database items nearest to query `q` (the `q`-th query of `protocol`), nearest first, without
/// the query itself under [`Protocol::SameSet`]. Each list must hold at least
/// `min(max(max K, R), items the query can be compared with)` items, where R is the number of
/// same-label items in the database; longer lists are fine.
pub fn retrieval_scores<L: Label>(
    labels: &[L],
    protocol: &Protocol,
    neighbours: &[Vec<usize>],
    ks: &[usize],
) -> Result<RetrievalScores> {
    check_ks(ks)?;
    let n = labels.len();
    let split = Split::new(protocol, n)?;
    if neighbours.len() != split.queries.len() {
        return Err(MetricsError::LengthMismatch {
            what: "neighbour lists (one per query)",
            expected: split.queries.len(),
            actual: neighbours.len(),
        });
    }
    let classes = dense_classes(labels);
    let plan = Plan::new(&split, &classes, ks);

    let mut in_database = vec![false; n];
    for &i in &split.database {
        in_database[i] = true;
    }
    // Stamp of the last query that listed each item: finds repeats without clearing.
    let mut listed_by = vec![usize::MAX; n];
    for (q, list) in neighbours.iter().enumerate() {
        let query_row = split.queries[q];
        for &item in list {
            let member = in_database.get(item).copied().unwrap_or(false);
            if !member || (split.same_set && item == query_row) {
                return Err(MetricsError::NotANeighbour { query: q, item });
            }
            if listed_by[item] == q {
                return Err(MetricsError::RepeatedNeighbour { query: q, item });
            }
            listed_by[item] = q;
        }
        if list.len() < plan.depth[q] {
            return Err(MetricsError::ShortNeighbourList {
                query: q,
                len: list.len(),
                needed: plan.depth[q],
            });
        }
    }
    plan.run(|range, _| Ok(neighbours[range].to_vec()))
}

/// What one query contributes.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct QueryScore {
    /// Rank (0-based) of the first same-label neighbour.
    pub first_hit: Option<usize>,
    /// Same-label items in the database (the query itself excluded).
    pub r: usize,
    pub r_precision: f64,
    pub average_precision_at_r: f64,
}

/// Scores one query from the labels of its neighbours, nearest first.
pub(crate) fn score_query(
    query_class: u32,
    neighbour_classes: impl IntoIterator<Item = u32>,
    r: usize,
) -> QueryScore {
    let mut first_hit = None;
    let (mut hits, mut precision_sum) = (0usize, 0.0f64);
    for (i, class) in neighbour_classes.into_iter().enumerate() {
        if class != query_class {
            continue;
        }
        first_hit.get_or_insert(i);
        if i < r {
            hits += 1;
            precision_sum += hits as f64 / (i + 1) as f64;
        } else {
            break;
        }
    }
    let (r_precision, average_precision_at_r) = if r > 0 {
        (hits as f64 / r as f64, precision_sum / r as f64)
    } else {
        (0.0, 0.0)
    };
    QueryScore {
        first_hit,
        r,
        r_precision,
        average_precision_at_r,
    }
}

/// Means over the queries.
pub(crate) fn aggregate(scores: &[QueryScore], ks: &[usize]) -> RetrievalScores {
    let n = scores.len().max(1) as f64;
    let recall_at_k = ks
        .iter()
        .map(|&k| {
            let found = scores
                .iter()
                .filter(|s| s.first_hit.is_some_and(|rank| rank < k))
                .count();
            (k.to_string(), found as f64 / n)
        })
        .collect();
    let with_r: Vec<&QueryScore> = scores.iter().filter(|s| s.r > 0).collect();
    let mean = |f: fn(&QueryScore) -> f64| {
        if with_r.is_empty() {
            0.0
        } else {
            with_r.iter().map(|s| f(s)).sum::<f64>() / with_r.len() as f64
        }
    };
    RetrievalScores {
        recall_at_k,
        r_precision: mean(|s| s.r_precision),
        map_at_r: mean(|s| s.average_precision_at_r),
        queries: scores.len(),
        queries_with_r: with_r.len(),
    }
}

/// Per query: R and the number of neighbours the metrics need.
#[derive(Debug)]
pub(crate) struct Plan<'a> {
    split: &'a Split,
    /// Dense class of every embedding row.
    classes: &'a [u32],
    ks: Vec<usize>,
    r: Vec<usize>,
    /// max(max K, R) capped by the items a query can be compared with.
    pub depth: Vec<usize>,
}

impl<'a> Plan<'a> {
    pub fn new(split: &'a Split, classes: &'a [u32], ks: &[usize]) -> Plan<'a> {
        let classes_len = classes.iter().map(|&c| c as usize + 1).max().unwrap_or(0);
        let mut in_database = vec![0usize; classes_len];
        for &i in &split.database {
            in_database[classes[i] as usize] += 1;
        }
        // Under SameSet the query is one of the database items of its class.
        let own = usize::from(split.same_set);
        let r: Vec<usize> = split
            .queries
            .iter()
            .map(|&q| in_database[classes[q] as usize].saturating_sub(own))
            .collect();
        let max_k = ks.iter().copied().max().unwrap_or(0);
        let available = split.available();
        let depth = r.iter().map(|&r| r.max(max_k).min(available)).collect();
        Plan {
            split,
            classes,
            ks: ks.to_vec(),
            r,
            depth,
        }
    }

    /// Scores every query, a chunk at a time: `search(queries, depths)` returns, for the queries
    /// at those positions of the query list, their nearest database rows (self excluded), at
    /// least `depths[i]` of them.
    pub fn run(
        &self,
        mut search: impl FnMut(Range<usize>, &[usize]) -> Result<Vec<Vec<usize>>>,
    ) -> Result<RetrievalScores> {
        let nq = self.split.queries.len();
        let mut scores = Vec::with_capacity(nq);
        let mut start = 0;
        while start < nq {
            let end = (start + QUERY_CHUNK).min(nq);
            let lists = search(start..end, &self.depth[start..end])?;
            for (q, list) in (start..end).zip(lists) {
                let class = self.classes[self.split.queries[q]];
                let neighbour_classes = list.iter().map(|&i| self.classes[i]);
                scores.push(score_query(class, neighbour_classes, self.r[q]));
            }
            start = end;
        }
        Ok(aggregate(&scores, &self.ks))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EPS: f64 = 1e-12;

    #[test]
    fn one_query_by_hand() {
        // R = 3; relevant at ranks 1, 3, 4 (1-based); the 4th is past R.
        // R-precision = 2/3; MAP@R = (1/3) * (1/1 + 2/3) = 5/9.
        let s = score_query(7, [7, 1, 7, 7, 2], 3);
        assert_eq!(s.first_hit, Some(0));
        assert!((s.r_precision - 2.0 / 3.0).abs() < EPS);
        assert!((s.average_precision_at_r - 5.0 / 9.0).abs() < EPS);
    }

    #[test]
    fn first_hit_past_r_still_counts_for_recall() {
        // R = 1, the only same-label item is at rank 3 (0-based 2).
        let s = score_query(0, [1, 2, 0], 1);
        assert_eq!(s.first_hit, Some(2));
        assert_eq!(s.r_precision, 0.0);
        assert_eq!(s.average_precision_at_r, 0.0);
        let agg = aggregate(&[s], &[1, 2, 3, 100]);
        assert_eq!(agg.recall_at_k["1"], 0.0);
        assert_eq!(agg.recall_at_k["2"], 0.0);
        assert_eq!(agg.recall_at_k["3"], 1.0);
        assert_eq!(agg.recall_at_k["100"], 1.0);
    }

    #[test]
    fn all_lone_queries_give_zero_not_nan() {
        let s = score_query(0, [1, 2], 0);
        let agg = aggregate(&[s, s], &[1]);
        assert_eq!(agg.queries_with_r, 0);
        assert_eq!(agg.map_at_r, 0.0);
        assert_eq!(agg.r_precision, 0.0);
        assert_eq!(agg.recall_at_k["1"], 0.0);
    }

    #[test]
    fn lists_from_outside_are_checked() {
        let labels = [0, 0, 1, 1];
        let ks = [1];
        let ok = vec![vec![1], vec![0], vec![3], vec![2]];
        let s = retrieval_scores(&labels, &Protocol::SameSet, &ok, &ks).unwrap();
        assert_eq!(s.recall_at_k["1"], 1.0);
        assert_eq!(s.map_at_r, 1.0);

        let with_self = vec![vec![0], vec![0], vec![3], vec![2]];
        assert!(matches!(
            retrieval_scores(&labels, &Protocol::SameSet, &with_self, &ks),
            Err(MetricsError::NotANeighbour { query: 0, item: 0 })
        ));
        let repeated = vec![vec![1, 1], vec![0], vec![3], vec![2]];
        assert!(matches!(
            retrieval_scores(&labels, &Protocol::SameSet, &repeated, &ks),
            Err(MetricsError::RepeatedNeighbour { query: 0, item: 1 })
        ));
        let out_of_range = vec![vec![9], vec![0], vec![3], vec![2]];
        assert!(matches!(
            retrieval_scores(&labels, &Protocol::SameSet, &out_of_range, &ks),
            Err(MetricsError::NotANeighbour { query: 0, item: 9 })
        ));
        // K = 2 needs two neighbours per query.
        assert!(matches!(
            retrieval_scores(&labels, &Protocol::SameSet, &ok, &[2]),
            Err(MetricsError::ShortNeighbourList {
                query: 0,
                len: 1,
                needed: 2
            })
        ));
        assert!(matches!(
            retrieval_scores(&labels, &Protocol::SameSet, &ok[..3], &ks),
            Err(MetricsError::LengthMismatch { .. })
        ));
        assert!(matches!(
            retrieval_scores(&labels, &Protocol::SameSet, &ok, &[0]),
            Err(MetricsError::ZeroK)
        ));
        let empty: [i64; 0] = [];
        assert!(matches!(
            retrieval_scores(&empty, &Protocol::SameSet, &[], &ks),
            Err(MetricsError::Empty { .. })
        ));
        // Not in the gallery.
        let qg = Protocol::QueryGallery {
            queries: vec![0],
            gallery: vec![1, 2],
        };
        assert!(matches!(
            retrieval_scores(&labels, &qg, &[vec![3]], &ks),
            Err(MetricsError::NotANeighbour { query: 0, item: 3 })
        ));
    }
}
