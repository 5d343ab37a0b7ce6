//! labels.tsv: round trip and the errors of bad files.

use std::fs;

use bundle::{BundleError, LABELS_HEADER, LabelRow, Labels};

fn row(id: u64, sku: &str, source: &str) -> LabelRow {
    LabelRow {
        id,
        sku: sku.into(),
        source: source.into(),
    }
}

#[test]
fn round_trip_and_lookup() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("labels.tsv");
    let labels = Labels::from_rows([
        row(17, "4006381333931", "catalogue/a b.jpg"),
        row(3, "Müsli, 500 g", ""),
        row(u64::MAX, "last", "sop/class 9"),
    ])
    .unwrap();
    labels.write(&path).unwrap();
    assert!(!dir.path().join("labels.tsv.tmp").exists());
    let text = fs::read_to_string(&path).unwrap();
    assert!(text.starts_with(&format!("{LABELS_HEADER}\n17\t4006381333931\t")));
    let back = Labels::read(&path).unwrap();
    assert_eq!(back, labels);
    assert_eq!(back.len(), 3);
    assert_eq!(back.get(3).unwrap().sku, "Müsli, 500 g");
    assert_eq!(back.get(u64::MAX).unwrap().source, "sop/class 9");
    assert!(back.get(4).is_none());
    assert_eq!(back.rows()[0].id, 17);

    let empty = Labels::new();
    empty.write(&path).unwrap();
    assert!(Labels::read(&path).unwrap().is_empty());
}

#[test]
fn unwritable_fields_refused() {
    let mut labels = Labels::new();
    for bad in [
        row(1, "a\tb", ""),
        row(1, "a", "x\ny"),
        row(1, "a\r", ""),
        row(1, "", ""),
    ] {
        let err = labels.push(bad).unwrap_err();
        assert!(
            matches!(err, BundleError::LabelField { id: 1, .. }),
            "{err}"
        );
    }
    labels.push(row(1, "a", "")).unwrap();
    let err = labels.push(row(1, "b", "")).unwrap_err();
    assert!(err.to_string().contains("label 1"), "{err}");
}

/// Each bad file is refused naming its line.
#[test]
fn bad_lines_name_their_line() {
    let h = LABELS_HEADER;
    let cases: &[(String, usize, &str)] = &[
        (String::new(), 1, "header"),
        ("id\tname\tsource\n".into(), 1, "header"),
        (format!("{h}\n1\ta\tx\n2\tb\n"), 3, "2 tab-separated fields"),
        (
            format!("{h}\n1\ta\tx\textra\n"),
            2,
            "4 tab-separated fields",
        ),
        (format!("{h}\n1\ta\tx\n-4\tb\tx\n"), 3, "not a decimal u64"),
        (format!("{h}\n1\ta\tx\n\n"), 3, "1 tab-separated fields"),
        (
            format!("{h}\n1\ta\tx\n2\tb\tx\n1\tc\tx\n"),
            4,
            "already on line 2",
        ),
        (format!("{h}\n1\t\tx\n"), 2, "empty sku"),
        (format!("{h}\r\n1\ta\tx\r\n"), 1, "header"),
        (format!("{h}\n1\ta\tx\r\n"), 2, "carriage return"),
    ];
    for (text, line, what) in cases {
        let err = Labels::parse(text.as_bytes(), "b/labels.tsv").unwrap_err();
        match &err {
            BundleError::Labels { line: l, .. } => assert_eq!(l, line, "{text:?}: {err}"),
            other => panic!("{text:?}: expected a Labels error, got {other}"),
        }
        let msg = err.to_string();
        assert!(msg.contains(&format!("b/labels.tsv:{line}:")), "{msg}");
        assert!(msg.contains(what), "{text:?}: {msg}");
    }
    // Not UTF-8, on line 2.
    let mut bytes = format!("{h}\n1\ta").into_bytes();
    bytes.extend_from_slice(&[0xff, b'\t', b'\n']);
    let err = Labels::parse(&bytes, "l").unwrap_err();
    assert!(err.to_string().starts_with("l:2:"), "{err}");
    // No final newline is fine.
    assert_eq!(
        Labels::parse(format!("{h}\n1\ta\tx").as_bytes(), "l")
            .unwrap()
            .len(),
        1
    );
}
