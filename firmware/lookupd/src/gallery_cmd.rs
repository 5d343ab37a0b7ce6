//! `lookupd gallery ...`: the gallery file from the shell.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand};
use gallery::{Gallery, Hit, Kernel, Searcher};
use serde::Serialize;

use crate::npy;

#[derive(Debug, Subcommand)]
pub enum GalleryCommand {
    /// Build a gallery file from a uint8 .npy of codes (items x bits/8) and optional uint64 ids.
    Import {
        /// Codes, uint8, shape (items, bits/8), bit i = bit (i % 8) of byte (i / 8).
        #[arg(long)]
        codes: PathBuf,
        /// Item ids, uint64, shape (items,); default: row numbers.
        #[arg(long)]
        ids: Option<PathBuf>,
        /// Hash of the model that made the codes, 64 hex digits (default: zeros).
        #[arg(long)]
        model_hash: Option<String>,
        /// The gallery file to write (replaced atomically if it exists).
        #[arg(long)]
        out: PathBuf,
    },
    /// Write a gallery's codes (and ids) back to .npy files.
    Export {
        gallery: PathBuf,
        #[arg(long)]
        codes: PathBuf,
        #[arg(long)]
        ids: Option<PathBuf>,
    },
    /// Print a gallery's header as JSON.
    Info { gallery: PathBuf },
    /// Check every part of a gallery; exit code 0 only if all checks pass.
    Verify { gallery: PathBuf },
    /// Exact k-nearest search by (Hamming distance, item id).
    Search {
        gallery: PathBuf,
        #[command(flatten)]
        query: QueryArgs,
        /// Print a JSON array, one object per query: {"query": i, "hits": [{"id", "distance"}]}.
        #[arg(long)]
        json: bool,
    },
    /// Time searches after a warm-up and print one JSON object.
    Bench {
        gallery: PathBuf,
        #[command(flatten)]
        query: QueryArgs,
        /// Queries per batch (1: one query at a time).
        #[arg(long, default_value_t = 1)]
        batch: usize,
        /// Timed rounds over the queries (each query, or each batch, is timed `rounds` times).
        #[arg(long, default_value_t = 1)]
        rounds: usize,
    },
}

#[derive(Debug, Args)]
pub struct QueryArgs {
    /// Queries, uint8 .npy of shape (queries, bits/8).
    #[arg(long)]
    queries: PathBuf,
    /// Neighbours per query (1 to 1000).
    #[arg(long, default_value_t = 10)]
    k: usize,
    /// Only items within this Hamming distance.
    #[arg(long)]
    max_distance: Option<u32>,
    /// Search threads (0: one per core).
    #[arg(long, default_value_t = 0)]
    threads: usize,
    /// Distance kernel (default: the fastest this CPU runs): avx512-vpopcntdq, avx2, neon, portable.
    #[arg(long)]
    kernel: Option<String>,
}

impl QueryArgs {
    fn searcher(&self) -> Result<Searcher> {
        let kernel = match &self.kernel {
            Some(name) => Kernel::from_name(name)?,
            None => Kernel::best(),
        };
        Ok(Searcher::new(kernel, self.threads)?)
    }

    fn load(&self, gallery: &Gallery) -> Result<(usize, Vec<u8>)> {
        let (n, cols, data) = npy::read_u8_matrix(&self.queries)?;
        if cols != gallery.code_bytes() {
            bail!(
                "{}: queries have {cols} bytes, the gallery's codes have {} ({} bits)",
                self.queries.display(),
                gallery.code_bytes(),
                gallery.code_bits()
            );
        }
        if n == 0 {
            bail!("{}: no queries", self.queries.display());
        }
        Ok((n, data))
    }
}

fn open(path: &Path) -> Result<Gallery> {
    Gallery::open(path).with_context(|| format!("gallery {}", path.display()))
}

fn parse_hash(hex: Option<&str>) -> Result<[u8; 32]> {
    let mut out = [0u8; 32];
    let Some(hex) = hex else { return Ok(out) };
    if hex.len() != 64 || !hex.is_ascii() {
        bail!("--model-hash must be 64 hex digits, got {hex:?}");
    }
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16)
            .with_context(|| format!("--model-hash: {hex:?} is not hexadecimal"))?;
    }
    Ok(out)
}

pub fn run(cmd: GalleryCommand) -> Result<ExitCode> {
    match cmd {
        GalleryCommand::Import {
            codes,
            ids,
            model_hash,
            out,
        } => {
            let (n, cols, data) = npy::read_u8_matrix(&codes)?;
            let ids = match ids {
                Some(path) => {
                    let ids = npy::read_u64_vec(&path)?;
                    if ids.len() != n {
                        bail!("{}: {} ids for {n} codes", path.display(), ids.len());
                    }
                    ids
                }
                None => (0..n as u64).collect(),
            };
            let bits = u32::try_from(cols * 8).context("codes are too wide")?;
            let hash = parse_hash(model_hash.as_deref())?;
            let g = Gallery::create(&out, bits, hash, &data, &ids)
                .with_context(|| format!("writing gallery {}", out.display()))?;
            tracing::info!(items = g.len(), bits, path = %out.display(), "gallery written");
            print_json(&g.info())?;
        }
        GalleryCommand::Export {
            gallery,
            codes,
            ids,
        } => {
            let g = open(&gallery)?;
            let data: Vec<u8> = (0..g.len())
                .flat_map(|r| g.code(r).iter().copied())
                .collect();
            npy::write_u8_matrix(&codes, g.len(), g.code_bytes(), &data)?;
            if let Some(ids) = ids {
                let all: Vec<u64> = (0..g.len()).map(|r| g.id(r)).collect();
                npy::write_u64_vec(&ids, &all)?;
            }
        }
        GalleryCommand::Info { gallery } => print_json(&open(&gallery)?.info())?,
        GalleryCommand::Verify { gallery } => match Gallery::open(&gallery) {
            Ok(g) => {
                let info = g.info();
                let damaged = info
                    .header_copies
                    .iter()
                    .filter(|c| !c.starts_with("valid"));
                for copy in damaged {
                    tracing::warn!(
                        "a header copy is damaged ({copy}); the next append rewrites it"
                    );
                }
                print_json(&serde_json::json!({"ok": true, "info": info}))?;
            }
            Err(e) => {
                print_json(&serde_json::json!({"ok": false, "error": e.to_string()}))?;
                eprintln!("lookupd: {}: {e}", gallery.display());
                return Ok(ExitCode::FAILURE);
            }
        },
        GalleryCommand::Search {
            gallery,
            query,
            json,
        } => search(&gallery, &query, json)?,
        GalleryCommand::Bench {
            gallery,
            query,
            batch,
            rounds,
        } => bench(&gallery, &query, batch, rounds)?,
    }
    Ok(ExitCode::SUCCESS)
}

fn print_json(value: &impl Serialize) -> Result<()> {
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}

#[derive(Serialize)]
struct QueryHits {
    query: usize,
    hits: Vec<JsonHit>,
}

#[derive(Serialize)]
struct JsonHit {
    id: u64,
    distance: u32,
}

/// Queries searched together by `search` (bounds the memory of the per-query results).
const SEARCH_CHUNK: usize = 256;

fn search(path: &Path, query: &QueryArgs, json: bool) -> Result<()> {
    let g = open(path)?;
    let searcher = query.searcher()?;
    let (n, data) = query.load(&g)?;
    let mut out = Vec::with_capacity(n);
    for (c, chunk) in data.chunks(SEARCH_CHUNK * g.code_bytes()).enumerate() {
        let results = searcher.knn_batch(&g, chunk, query.k, query.max_distance)?;
        for (i, hits) in results.into_iter().enumerate() {
            out.push(QueryHits {
                query: c * SEARCH_CHUNK + i,
                hits: hits
                    .into_iter()
                    .map(|Hit { id, distance, .. }| JsonHit { id, distance })
                    .collect(),
            });
        }
    }
    if json {
        println!("{}", serde_json::to_string(&out)?);
    } else {
        for q in &out {
            let hits: Vec<String> = q
                .hits
                .iter()
                .map(|h| format!("{}@{}", h.id, h.distance))
                .collect();
            println!("query {}: {}", q.query, hits.join(" "));
        }
    }
    Ok(())
}

#[derive(Serialize)]
struct BenchReport {
    ms_per_query: f64,
    ms_per_query_mean: f64,
    ms_per_query_p90: f64,
    timed: usize,
    queries: usize,
    threads: usize,
    batch: usize,
    k: usize,
    items: usize,
    bits: u32,
    kernel: &'static str,
    gb_per_s: f64,
}

fn bench(path: &Path, query: &QueryArgs, batch: usize, rounds: usize) -> Result<()> {
    if batch == 0 || rounds == 0 {
        bail!("--batch and --rounds must be at least 1");
    }
    let g = open(path)?;
    let searcher = query.searcher()?;
    let (n, data) = query.load(&g)?;
    let cb = g.code_bytes();
    let batches: Vec<&[u8]> = data
        .chunks(batch * cb)
        .filter(|c| c.len() == batch * cb)
        .collect();
    if batches.is_empty() {
        bail!("{n} queries make no full batch of {batch}");
    }
    let run_one = |q: &[u8]| -> Result<()> {
        if batch == 1 {
            std::hint::black_box(searcher.knn(&g, q, query.k, query.max_distance)?);
        } else {
            std::hint::black_box(searcher.knn_batch(&g, q, query.k, query.max_distance)?);
        }
        Ok(())
    };
    // Warm-up: the mapping is paged in and the threads are started.
    for q in batches.iter().take(3) {
        run_one(q)?;
    }
    let mut ms = Vec::with_capacity(batches.len() * rounds);
    for _ in 0..rounds {
        for q in &batches {
            let t = Instant::now();
            run_one(q)?;
            ms.push(t.elapsed().as_secs_f64() * 1e3 / batch as f64);
        }
    }
    ms.sort_by(f64::total_cmp);
    let median = ms[ms.len() / 2];
    let bytes = (g.len() * g.header().row_bytes()) as f64;
    let report = BenchReport {
        ms_per_query: median,
        ms_per_query_mean: ms.iter().sum::<f64>() / ms.len() as f64,
        ms_per_query_p90: ms[ms.len() * 9 / 10],
        timed: ms.len(),
        queries: batches.len() * batch,
        threads: searcher.threads(),
        batch,
        k: query.k,
        items: g.len(),
        bits: g.code_bits(),
        kernel: searcher.kernel().name(),
        // Gallery bytes streamed per second (a batch streams the gallery once).
        gb_per_s: bytes / (median * batch as f64 * 1e-3) / 1e9,
    };
    println!("{}", serde_json::to_string(&report)?);
    Ok(())
}
