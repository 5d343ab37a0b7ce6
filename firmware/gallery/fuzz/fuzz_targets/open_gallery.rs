//! Any bytes given to the gallery parser: an error or a gallery that searches, never a panic.
#![no_main]

use std::sync::OnceLock;

use gallery::{Gallery, Kernel, Searcher};
use libfuzzer_sys::fuzz_target;

/// One searcher for the whole run, as in the product: a pool per input would leave rayon's
/// detached worker threads behind, which LeakSanitizer reports as leaks.
static SEARCHER: OnceLock<Searcher> = OnceLock::new();

fuzz_target!(|data: &[u8]| {
    // The parser proper (no I/O): it must never panic.
    let validated = gallery::format::validate(data);
    // The same bytes through the real open path (a file, mapped), then used.
    let path = std::env::temp_dir().join(format!("gallery-fuzz-{}.gal", std::process::id()));
    std::fs::write(&path, data).unwrap();
    let opened = Gallery::open(&path);
    assert_eq!(validated.is_ok(), opened.is_ok(), "parser and open disagree");
    if let Ok(g) = opened {
        let _ = g.info();
        let searcher = SEARCHER.get_or_init(|| Searcher::new(Kernel::best(), 1).unwrap());
        let query = vec![0u8; g.code_bytes()];
        let hits = searcher.knn(&g, &query, 5, None).unwrap();
        assert!(hits.len() <= 5.min(g.len()));
        for row in 0..g.len() {
            let _ = (g.code(row), g.id(row));
        }
    }
});
