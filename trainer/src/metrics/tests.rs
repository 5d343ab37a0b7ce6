//! `evaluate` on small hand-made cases; every expected number is worked out in the comments.

use super::*;

const EPS: f64 = 1e-12;

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() < EPS
}

fn no_nmi() -> EvalOptions {
    EvalOptions {
        nmi: false,
        ..EvalOptions::default()
    }
}

fn assert_recalls(m: &Metrics, expected: &[(usize, f64)]) {
    for &(k, r) in expected {
        let got = m.recall(k).unwrap();
        assert!(close(got, r), "R@{k}: {got}, expected {r}");
    }
}

/// Five 2-d items, labels A A B A C: B and C are lone queries.
///
/// ```text
/// row  vector      angle    label  sign bits (x>0, y>0)
/// 0    ( 1,  0.1)    5.7°   A      11
/// 1    ( 1,  0.2)   11.3°   A      11
/// 2    ( 1, -0.1)   -5.7°   B      01 (bit 0 only)
/// 3    (-1,  0.1)  174.3°   A      10 (bit 1 only)
/// 4    (-1, -0.1)  185.7°   C      00
/// ```
const SAME_SET: [f32; 10] = [1.0, 0.1, 1.0, 0.2, 1.0, -0.1, -1.0, 0.1, -1.0, -0.1];
const SAME_SET_LABELS: [char; 5] = ['A', 'A', 'B', 'A', 'C'];

#[test]
fn same_set_by_hand_float() {
    // Neighbours by angle, the query itself excluded:
    //   q0: 1 2 3 4    q1: 0 2 3 4    q2: 0 1 4 3    q3: 4 1 0 2    q4: 3 2 1 0
    // R (other A's): q0 2, q1 2, q3 2; q2 (B) and q4 (C) are lone: R = 0.
    //   q0: top 2 = 1(A) 2(B): R-precision 1/2, AP@R = (1/2)(1/1) = 1/2, first hit rank 1
    //   q1: top 2 = 0(A) 2(B): 1/2, 1/2, rank 1
    //   q3: top 2 = 4(C) 1(A): 1/2, AP@R = (1/2)(1/2) = 1/4, rank 2
    //   q2, q4: no same-label item anywhere: misses for Recall, left out of R-prec and MAP@R.
    // R@1 = 2/5, R@2 = 3/5, R@4 = 3/5, R@100 (beyond the database) = 3/5.
    // R-precision = (1/2 + 1/2 + 1/2) / 3 = 1/2; MAP@R = (1/2 + 1/2 + 1/4) / 3 = 5/12.
    let report = evaluate_with(
        &SAME_SET,
        2,
        &SAME_SET_LABELS,
        &[1, 2, 4, 100],
        &Protocol::SameSet,
        &no_nmi(),
    )
    .unwrap();
    let f = &report.float;
    assert_recalls(f, &[(1, 0.4), (2, 0.6), (4, 0.6), (100, 0.6)]);
    assert!(close(f.r_precision, 0.5), "{}", f.r_precision);
    assert!(close(f.map_at_r, 5.0 / 12.0), "{}", f.map_at_r);
    assert_eq!(f.nmi, None);

    let lists = knn_cosine(&SAME_SET, 2, &Protocol::SameSet, 4).unwrap();
    assert_eq!(
        lists,
        vec![
            vec![1, 2, 3, 4],
            vec![0, 2, 3, 4],
            vec![0, 1, 4, 3],
            vec![4, 1, 0, 2],
            vec![3, 2, 1, 0]
        ]
    );
}

#[test]
fn same_set_by_hand_binary_ties_by_row() {
    // Hamming distances between the 2-bit codes 11 11 01 10 00, ties by row, self excluded:
    //   q0 (11): 1 (0), 2 (1), 3 (1), 4 (2)        -> 1 2 3 4
    //   q1 (11): 0 (0), 2 (1), 3 (1), 4 (2)        -> 0 2 3 4
    //   q2 (01): 0 (1), 1 (1), 4 (1), 3 (2)        -> 0 1 4 3
    //   q3 (10): 0 (1), 1 (1), 4 (1), 2 (2)        -> 0 1 4 2
    //   q4 (00): 2 (1), 3 (1), 0 (2), 1 (2)        -> 2 3 0 1
    // q0, q1 as for floats (1/2, 1/2, rank 1); q3: top 2 = 0(A) 1(A): R-precision 1,
    // AP@R = (1/2)(1/1 + 2/2) = 1, rank 1. q2, q4 lone.
    // R@1 = R@2 = R@4 = 3/5; R-precision = (1/2 + 1/2 + 1) / 3 = 2/3; MAP@R = 2/3.
    let report = evaluate_with(
        &SAME_SET,
        2,
        &SAME_SET_LABELS,
        &[1, 2, 4],
        &Protocol::SameSet,
        &no_nmi(),
    )
    .unwrap();
    let b = &report.binary;
    assert_recalls(b, &[(1, 0.6), (2, 0.6), (4, 0.6)]);
    assert!(close(b.r_precision, 2.0 / 3.0), "{}", b.r_precision);
    assert!(close(b.map_at_r, 2.0 / 3.0), "{}", b.map_at_r);

    let codes = pack_signs(&SAME_SET, 2).unwrap();
    assert_eq!(codes, vec![0b11, 0b11, 0b01, 0b10, 0b00]);
    let lists = knn_hamming(&codes, 2, &Protocol::SameSet, 4).unwrap();
    assert_eq!(
        lists,
        vec![
            vec![1, 2, 3, 4],
            vec![0, 2, 3, 4],
            vec![0, 1, 4, 3],
            vec![0, 1, 4, 2],
            vec![2, 3, 0, 1]
        ]
    );
}

#[test]
fn query_excluded_from_its_own_results() {
    // Two identical items of different labels and one far item with the first's label.
    // Without the exclusion every query would find itself first (R@1 = 1).
    // q0 (A): neighbours 1 (B), 2 (A): R@1 miss, R@2 hit; R = 1: R-precision 0, AP 0.
    // q1 (B): lone. q2 (A): nearest other is 0 or 1 at the same cosine, tie by row -> 0 (A).
    // R@1 = 1/3, R@2 = 2/3; R-precision = MAP@R = (0 + 1) / 2 = 1/2, in both searches.
    let e = [1.0, 1.0, 1.0, 1.0, -1.0, -0.5];
    let labels = [7i64, 8, 7];
    let report = evaluate_with(&e, 2, &labels, &[1, 2], &Protocol::SameSet, &no_nmi()).unwrap();
    for m in [&report.float, &report.binary] {
        assert_recalls(m, &[(1, 1.0 / 3.0), (2, 2.0 / 3.0)]);
        assert!(close(m.r_precision, 0.5));
        assert!(close(m.map_at_r, 0.5));
    }
}

#[test]
fn in_shop_query_gallery_by_hand() {
    // Gallery rows 0..3, query rows 3..6 (labels shared between the two sets):
    //   row  vector       angle   label  role     bits
    //   0    ( 1,   0.2)  11.3°   1      gallery  11
    //   1    ( 0.2, 1  )  78.7°   1      gallery  11
    //   2    (-1,   0.2) 168.7°   2      gallery  10
    //   3    ( 1,   0.3)  16.7°   1      query    11
    //   4    ( 0.3, 1  )  73.3°   2      query    11
    //   5    ( 0.3,-1  ) -73.3°   9      query    01
    // Float: q3 -> 0 1 2 (R = 2: both hits, R-prec 1, AP 1, rank 1);
    //        q4 -> 1 0 2 (R = 1: top 1 is label 1, R-prec 0, AP 0; first hit rank 3);
    //        q5: label 9 is not in the gallery: R = 0, a miss.
    // Binary: q3 and q4 (11) -> 0 (0) 1 (0) 2 (1), ties by row: the same numbers.
    // R@1 = R@2 = 1/3, R@3 = R@10 = 2/3; R-precision = MAP@R = (1 + 0) / 2 = 1/2.
    let e = [
        1.0, 0.2, 0.2, 1.0, -1.0, 0.2, // gallery
        1.0, 0.3, 0.3, 1.0, 0.3, -1.0, // queries
    ];
    let labels = [1usize, 1, 2, 1, 2, 9];
    let protocol = Protocol::QueryGallery {
        queries: vec![3, 4, 5],
        gallery: vec![0, 1, 2],
    };
    let report = evaluate_with(&e, 2, &labels, &[1, 2, 3, 10], &protocol, &no_nmi()).unwrap();
    for m in [&report.float, &report.binary] {
        assert_recalls(
            m,
            &[
                (1, 1.0 / 3.0),
                (2, 1.0 / 3.0),
                (3, 2.0 / 3.0),
                (10, 2.0 / 3.0),
            ],
        );
        assert!(close(m.r_precision, 0.5));
        assert!(close(m.map_at_r, 0.5));
    }
    assert_eq!(
        knn_cosine(&e, 2, &protocol, 3).unwrap(),
        vec![vec![0, 1, 2], vec![1, 0, 2], vec![0, 2, 1]]
    );
}

#[test]
fn query_gallery_excludes_nothing() {
    // Row 0 is both a query and in the gallery: it finds itself (R@1 = 1), and it counts in R.
    let e = [1.0, 0.0, 0.0, 1.0];
    let labels = [3, 4];
    let protocol = Protocol::QueryGallery {
        queries: vec![0],
        gallery: vec![1, 0],
    };
    let report = evaluate_with(&e, 2, &labels, &[1], &protocol, &no_nmi()).unwrap();
    for m in [&report.float, &report.binary] {
        assert_recalls(m, &[(1, 1.0)]);
        assert!(close(m.map_at_r, 1.0));
    }
}

#[test]
fn perfect_clustering_gives_nmi_one_in_both_searches() {
    // Three classes, each a tight group around a distinct sign pattern (64-d): k-means on the
    // normalised embeddings and on the sign vectors both recover the classes.
    let d = 64;
    let mut e = Vec::new();
    let mut labels = Vec::new();
    for i in 0..24 {
        let class = i % 3;
        for j in 0..d {
            let sign = if (j / 8 + class) % 3 == 0 { 1.0 } else { -1.0 };
            let jitter = 0.05 * ((i * d + j) as f32 * 0.7).sin();
            e.push(sign * (1.0 + jitter));
        }
        labels.push(class as u32);
    }
    let report = evaluate(&e, d, &labels, &[1, 2], &Protocol::SameSet).unwrap();
    for m in [&report.float, &report.binary] {
        let nmi = m.nmi.unwrap();
        assert!((nmi - 1.0).abs() < 1e-9, "{nmi}");
        assert_recalls(m, &[(1, 1.0), (2, 1.0)]);
        assert!(close(m.map_at_r, 1.0));
        assert!(close(m.r_precision, 1.0));
    }
}

#[test]
fn classes_larger_than_the_gallery_k_limit_are_not_capped() {
    // 1100 items of class 0 on one side, 5 of class 1 on the other: R = 1099 for class 0, more
    // than the gallery's MAX_K, so the binary search goes through range queries. Every search
    // is perfect, so MAP@R = R-precision = 1 exactly (a cap at 1000 would show as 1000/1099).
    let d = 64;
    let n0 = 1100;
    let mut e = Vec::new();
    for i in 0..n0 + 5 {
        let sign = if i < n0 { 1.0 } else { -1.0 };
        e.extend((0..d).map(|j| sign * (1.0 + 0.01 * ((i + j) % 7) as f32)));
    }
    let labels: Vec<u8> = (0..n0 + 5).map(|i| u8::from(i >= n0)).collect();
    let report = evaluate_with(&e, d, &labels, &[1], &Protocol::SameSet, &no_nmi()).unwrap();
    for m in [&report.float, &report.binary] {
        assert!(close(m.map_at_r, 1.0), "{}", m.map_at_r);
        assert!(close(m.r_precision, 1.0));
        assert_recalls(m, &[(1, 1.0)]);
    }
}

#[test]
fn report_serialises_as_float_and_binary() {
    let report = evaluate(&SAME_SET, 2, &SAME_SET_LABELS, &[1, 2], &Protocol::SameSet).unwrap();
    let json = serde_json::to_value(&report).unwrap();
    let object = json.as_object().unwrap();
    assert_eq!(object.len(), 2);
    for side in ["float", "binary"] {
        let m = json[side].as_object().unwrap();
        for key in ["recall_at_k", "nmi", "r_precision", "map_at_r"] {
            assert!(m.contains_key(key), "{side}.{key}");
        }
        assert!(json[side]["recall_at_k"]["1"].is_f64());
        let nmi = json[side]["nmi"].as_f64().unwrap();
        assert!((0.0..=1.0 + 1e-9).contains(&nmi));
    }
    let back: Report = serde_json::from_value(json).unwrap();
    assert_eq!(back, report);
}

#[test]
fn bad_input_is_an_error_not_a_panic() {
    let ss = Protocol::SameSet;
    let labels = [0, 1];
    let e = [1.0, 0.0, 0.0, 1.0];
    let empty: [i64; 0] = [];
    assert!(matches!(
        evaluate(&[], 2, &empty, &[1], &ss),
        Err(MetricsError::Empty { .. })
    ));
    assert!(matches!(
        evaluate(&e, 0, &labels, &[1], &ss),
        Err(MetricsError::ZeroDimension)
    ));
    assert!(matches!(
        evaluate(&e[..3], 2, &labels, &[1], &ss),
        Err(MetricsError::Ragged { .. })
    ));
    assert!(matches!(
        evaluate(&e, 2, &labels[..1], &[1], &ss),
        Err(MetricsError::LengthMismatch { .. })
    ));
    assert!(matches!(
        evaluate(&e, 2, &labels, &[1, 0], &ss),
        Err(MetricsError::ZeroK)
    ));
    assert!(matches!(
        evaluate(&[1.0, f32::INFINITY, 0.0, 1.0], 2, &labels, &[1], &ss),
        Err(MetricsError::NonFinite { row: 0, column: 1 })
    ));
    let qg = |queries: Vec<usize>, gallery: Vec<usize>| Protocol::QueryGallery { queries, gallery };
    assert!(matches!(
        evaluate(&e, 2, &labels, &[1], &qg(vec![], vec![1])),
        Err(MetricsError::Empty { what: "queries" })
    ));
    assert!(matches!(
        evaluate(&e, 2, &labels, &[1], &qg(vec![0], vec![])),
        Err(MetricsError::Empty { what: "gallery" })
    ));
    assert!(matches!(
        evaluate(&e, 2, &labels, &[1], &qg(vec![0], vec![2])),
        Err(MetricsError::IndexOutOfRange { index: 2, .. })
    ));
    assert!(matches!(
        evaluate(&e, 2, &labels, &[1], &qg(vec![0, 0], vec![1])),
        Err(MetricsError::DuplicateIndex { index: 0, .. })
    ));
    assert!(matches!(
        evaluate(&[1.0; 4100], 4100, &[0], &[1], &ss),
        Err(MetricsError::CodeTooWide { bits: 4100 })
    ));
}

#[test]
fn degenerate_but_valid_inputs() {
    // One item: nothing to find, every query lone; one class, so NMI is 1 by definition.
    let report = evaluate(&[0.5, -0.5], 2, &[1], &[1, 5], &Protocol::SameSet).unwrap();
    for m in [&report.float, &report.binary] {
        assert_eq!(m.recall(1), Some(0.0));
        assert_eq!(m.recall(5), Some(0.0));
        assert_eq!(m.map_at_r, 0.0);
        assert_eq!(m.r_precision, 0.0);
        assert_eq!(m.nmi, Some(1.0));
    }
    // No K at all: the other metrics still come.
    let report = evaluate(&SAME_SET, 2, &SAME_SET_LABELS, &[], &Protocol::SameSet).unwrap();
    assert!(report.float.recall_at_k.is_empty());
    assert!(close(report.float.map_at_r, 5.0 / 12.0));
    // All-zero embeddings: every similarity 0, every code 0; ties by row everywhere.
    // q0 -> 1 (label 0): hit; q1 -> 0: hit; q2 -> 0 (label 0 vs 1): miss, lone anyway.
    let report = evaluate(&[0.0; 6], 2, &[0, 0, 1], &[1], &Protocol::SameSet).unwrap();
    for m in [&report.float, &report.binary] {
        assert!(close(m.recall(1).unwrap(), 2.0 / 3.0));
        assert!(close(m.map_at_r, 1.0));
    }
}
