//! Crash safety of `Gallery::append`: a child process appends items in a loop and reports each
//! append that returned; the parent kills it (SIGKILL) at a random instant, then checks that the
//! file opens, validates, and holds every reported item with the right content. Hundreds of
//! rounds on the same file, through in-place appends and file growth alike.

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use gallery::Gallery;
use rand::{Rng, SeedableRng, rngs::StdRng};

const BITS: u32 = 256;
const ROUNDS: usize = 300;

/// The code of item `i`: a pure function of `i`, so the parent can check every row.
fn code_of(i: u64) -> Vec<u8> {
    let mut rng = StdRng::seed_from_u64(i ^ 0x9e37_79b9_7f4a_7c15);
    (0..BITS / 8).map(|_| rng.random()).collect()
}

fn child(path: &Path, seed: u64) -> ! {
    let mut g = Gallery::open(path).expect("child: open");
    let mut rng = StdRng::seed_from_u64(seed);
    let mut out = std::io::stdout().lock();
    loop {
        // Mostly small appends (in place), sometimes a large one (forces the file to grow).
        let n = if rng.random_ratio(1, 12) {
            150
        } else {
            rng.random_range(1..=6)
        };
        let first = g.len() as u64;
        let ids: Vec<u64> = (first..first + n).collect();
        let codes: Vec<u8> = ids.iter().flat_map(|&i| code_of(i)).collect();
        g.append(&codes, &ids).expect("child: append");
        writeln!(out, "{}", g.len())
            .and_then(|()| out.flush())
            .expect("child: report");
    }
}

fn check(path: &Path, reported: u64, round: usize) -> u64 {
    let g = Gallery::open(path)
        .unwrap_or_else(|e| panic!("round {round}: gallery unreadable after kill: {e}"));
    let len = g.len() as u64;
    assert!(
        len >= reported,
        "round {round}: {len} items after the kill, but {reported} appends had returned"
    );
    for row in 0..g.len() {
        assert_eq!(g.id(row), row as u64, "round {round}: id of row {row}");
        assert_eq!(
            g.code(row),
            code_of(row as u64),
            "round {round}: code of row {row}"
        );
    }
    len
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let [_, flag, path, seed] = &args[..]
        && flag == "--child"
    {
        child(Path::new(path), seed.parse().expect("seed"));
    }
    // Under `cargo test -- <filter>` and friends, the harness's own flags land here: ignore them.
    let started = Instant::now();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("crash.gal");
    Gallery::create(&path, BITS, [1; 32], &[], &[]).unwrap();
    let me = std::env::current_exe().unwrap();
    let mut rng = StdRng::seed_from_u64(2026);
    let mut reported_total = 0u64;
    let mut grew = 0;
    let mut capacity = 0;
    for round in 0..ROUNDS {
        let mut child = Command::new(&me)
            .args(["--child", path.to_str().unwrap(), &round.to_string()])
            .stdout(Stdio::piped())
            .spawn()
            .expect("spawn child");
        let stdout = child.stdout.take().unwrap();
        let reader = std::thread::spawn(move || {
            let mut last = 0u64;
            for line in BufReader::new(stdout).lines() {
                match line {
                    Ok(l) => last = l.trim().parse().expect("child report"),
                    Err(_) => break,
                }
            }
            last
        });
        std::thread::sleep(Duration::from_micros(rng.random_range(0..25_000)));
        child.kill().expect("kill child");
        let status = child.wait().unwrap();
        assert!(
            !status.success(),
            "round {round}: the child must die by the kill"
        );
        let reported = reader.join().unwrap();
        let len = check(&path, reported.max(reported_total), round);
        reported_total = len;
        let cap = Gallery::open(&path).unwrap().header().capacity;
        if cap != capacity {
            grew += 1;
            capacity = cap;
        }
    }
    println!(
        "crash_append: {ROUNDS} kills, {reported_total} items intact, file grew {grew} times, {:.1} s",
        started.elapsed().as_secs_f64()
    );
    println!("test result: ok. 1 passed; 0 failed; 0 ignored; 0 measured; 0 filtered out");
}
