//! A search keeps the codes in the mapped file: its heap use is O(k x threads), whatever the
//! gallery size. A counting allocator measures the peak heap of one query.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

use gallery::{Gallery, Kernel, Searcher};

struct Counting;

static CURRENT: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);
thread_local! {
    // Per thread: the test harness's own threads allocate meanwhile. `const`, no destructor:
    // reading it never allocates.
    static CALLS: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

// SAFETY: forwards to the system allocator, only counting.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        CALLS.with(|n| n.set(n.get() + 1));
        let now = CURRENT.fetch_add(layout.size(), Ordering::SeqCst) + layout.size();
        PEAK.fetch_max(now, Ordering::SeqCst);
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        CURRENT.fetch_sub(layout.size(), Ordering::SeqCst);
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

/// The counters are process-wide: the tests of this file take turns.
static TURN: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Peak heap growth while `f` runs.
fn peak_during(f: impl FnOnce()) -> usize {
    let base = CURRENT.load(Ordering::SeqCst);
    PEAK.store(base, Ordering::SeqCst);
    f();
    PEAK.load(Ordering::SeqCst) - base
}

#[test]
fn one_query_uses_kilobytes_of_heap_on_a_large_gallery() {
    let _turn = TURN.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let n = 200_000; // 51 MB of 2048-bit codes
    let codes: Vec<u8> = (0..n * 256)
        .map(|i| ((i * 2_654_435_761usize) >> 13) as u8)
        .collect();
    let ids: Vec<u64> = (0..n as u64).collect();
    let g = Gallery::create(dir.path().join("g.gal"), 2048, [0; 32], &codes, &ids).unwrap();
    drop(codes);
    let query = vec![0x5au8; 256];
    for threads in [1, 2] {
        let s = Searcher::new(Kernel::best(), threads).unwrap();
        s.knn(&g, &query, 10, None).unwrap(); // the pool's threads start outside the measurement
        let peak = peak_during(|| {
            std::hint::black_box(s.knn(&g, &query, 10, None).unwrap());
        });
        println!(
            "k=10, {threads} thread(s): peak heap {peak} bytes for a {} MB gallery",
            (n * 256) >> 20
        );
        assert!(peak < 64 << 10, "one query took {peak} bytes of heap");
        let peak = peak_during(|| {
            std::hint::black_box(s.knn(&g, &query, 1000, None).unwrap());
        });
        assert!(peak < 1 << 20, "k=1000 took {peak} bytes of heap");
    }
}

#[test]
fn a_query_with_scratch_buffers_allocates_nothing() {
    let _turn = TURN.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    // Small enough for one part, large enough for several blocks.
    let n: usize = 5_000;
    let codes: Vec<u8> = (0..n * 256).map(|i| ((i * 40_503) >> 7) as u8).collect();
    let ids: Vec<u64> = (0..n as u64).collect();
    let g = Gallery::create(dir.path().join("g.gal"), 2048, [0; 32], &codes, &ids).unwrap();
    let s = Searcher::new(Kernel::best(), 1).unwrap();
    let mut scratch = s.knn_scratch(&g, 10).unwrap();
    let query = vec![0x3cu8; 256];
    let want = s.knn(&g, &query, 10, None).unwrap();
    let before = CALLS.with(|n| n.get());
    for _ in 0..100 {
        let hits = s.knn_into(&g, &query, 10, None, &mut scratch).unwrap();
        std::hint::black_box(hits);
    }
    let calls = CALLS.with(|n| n.get()) - before;
    assert_eq!(
        calls, 0,
        "100 queries with scratch buffers allocated {calls} times"
    );
    assert_eq!(
        s.knn_into(&g, &query, 10, None, &mut scratch).unwrap(),
        want.as_slice()
    );
    let err = s.knn_into(&g, &query, 11, None, &mut scratch).unwrap_err();
    assert!(err.to_string().contains("11"), "{err}");
}
