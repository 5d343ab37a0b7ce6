//! Batches decoded and augmented on a background thread (images of a batch in parallel with
//! rayon) while the model trains, a few batches ahead through a bounded channel.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use rand::SeedableRng;
use rand::rngs::StdRng;
use rayon::prelude::*;

use super::sampler::mix;
use super::{ClassBalancedSampler, DataError, Preprocess, Split};

/// Keeps the augmentation streams apart from the sampler's, which share the user's seed.
const AUGMENT_SALT: u64 = 0x4155_474d_454e_5401;

/// After this many training batches in a row with no readable image the loader gives up (the
/// data is unreadable as a whole), ending the stream instead of spinning.
const MAX_EMPTY_BATCHES: u32 = 100;

/// Images ready for the network, with what they are.
#[derive(Debug, Clone, Default)]
pub struct Batch {
    /// `len() x 3 x S x S` floats, image after image, RGB planes.
    pub images: Vec<f32>,
    /// Dense labels of the images, in order.
    pub labels: Vec<usize>,
    /// Indices into the split's samples of the images, in order (unreadable ones are absent).
    pub indices: Vec<usize>,
    /// Training: the sampler step it was drawn at. Evaluation: the chunk number.
    pub step: u64,
}

impl Batch {
    pub fn len(&self) -> usize {
        self.labels.len()
    }
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }
}

/// How far ahead to work, and on which threads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LoaderOptions {
    /// Batches ready and waiting at most (the channel's bound), at least 1.
    pub prefetch: usize,
    /// Decode on a pool of its own with this many threads; `None` shares rayon's global pool.
    pub threads: Option<usize>,
}

impl Default for LoaderOptions {
    fn default() -> Self {
        Self {
            prefetch: 3,
            threads: None,
        }
    }
}

/// An iterator of [`Batch`]es made on a background thread. Dropping it stops the thread.
#[derive(Debug)]
pub struct Loader {
    rx: Option<Receiver<Batch>>,
    worker: Option<JoinHandle<()>>,
    stop: Arc<AtomicBool>,
}

impl Loader {
    /// Endless training batches from `sampler` (starting at its current step): each image
    /// cropped and flipped by a generator seeded from (`seed`, step, position in the batch), so
    /// the pixels do not depend on thread scheduling.
    pub fn train(
        split: Arc<Split>,
        sampler: ClassBalancedSampler,
        preprocess: Preprocess,
        seed: u64,
        options: LoaderOptions,
    ) -> Result<Self, DataError> {
        let mut sampler = sampler;
        Self::spawn(split, preprocess, options, move |maker, tx, stop| {
            let mut empty_run = 0;
            while !stop.load(Ordering::Relaxed) {
                let step = sampler.step();
                let indices = sampler.next_batch();
                let batch = maker.make(&indices, step, Some(seed));
                if batch.is_empty() {
                    tracing::warn!(
                        "training step {step}: none of its {} images could be read; batch skipped",
                        indices.len()
                    );
                    empty_run += 1;
                    if empty_run >= MAX_EMPTY_BATCHES {
                        tracing::error!(
                            "{empty_run} batches in a row without a readable image; the loader stops"
                        );
                        return;
                    }
                    continue;
                }
                empty_run = 0;
                if tx.send(batch).is_err() {
                    return;
                }
            }
        })
    }

    /// The whole split once, in sample order, in chunks of `batch_size` (the last may be
    /// shorter), centre-cropped; chunk k has `step` k.
    pub fn eval(
        split: Arc<Split>,
        preprocess: Preprocess,
        batch_size: usize,
        options: LoaderOptions,
    ) -> Result<Self, DataError> {
        if batch_size == 0 {
            return Err(DataError::Config(
                "evaluation batch size must be positive".into(),
            ));
        }
        let n = split.len();
        Self::spawn(split, preprocess, options, move |maker, tx, stop| {
            for (chunk, start) in (0..n).step_by(batch_size).enumerate() {
                if stop.load(Ordering::Relaxed) {
                    return;
                }
                let indices: Vec<usize> = (start..(start + batch_size).min(n)).collect();
                let batch = maker.make(&indices, chunk as u64, None);
                if batch.is_empty() {
                    tracing::warn!(
                        "evaluation images {start}..{}: none could be read; chunk skipped",
                        start + indices.len()
                    );
                    continue;
                }
                if tx.send(batch).is_err() {
                    return;
                }
            }
        })
    }

    fn spawn(
        split: Arc<Split>,
        preprocess: Preprocess,
        options: LoaderOptions,
        job: impl FnOnce(&BatchMaker, SyncSender<Batch>, &AtomicBool) + Send + 'static,
    ) -> Result<Self, DataError> {
        preprocess.validate()?;
        let pool = match options.threads {
            Some(t) => Some(
                rayon::ThreadPoolBuilder::new()
                    .num_threads(t.max(1))
                    .thread_name(|i| format!("data-decode-{i}"))
                    .build()
                    .map_err(|e| {
                        DataError::Config(format!("cannot start the decoding pool: {e}"))
                    })?,
            ),
            None => None,
        };
        let (tx, rx) = sync_channel(options.prefetch.max(1));
        let stop = Arc::new(AtomicBool::new(false));
        let maker = BatchMaker {
            split,
            preprocess,
            pool,
            reported: Mutex::new(HashSet::new()),
        };
        let worker_stop = stop.clone();
        let worker = std::thread::Builder::new()
            .name("data-loader".into())
            .spawn(move || job(&maker, tx, &worker_stop))
            .map_err(|e| DataError::Config(format!("cannot start the loader thread: {e}")))?;
        Ok(Self {
            rx: Some(rx),
            worker: Some(worker),
            stop,
        })
    }
}

impl Iterator for Loader {
    type Item = Batch;

    /// The next batch, waiting for it if need be; `None` once the stream has ended.
    fn next(&mut self) -> Option<Batch> {
        self.rx.as_ref()?.recv().ok()
    }
}

impl Drop for Loader {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        // Closing the channel first wakes a worker blocked on a full channel.
        self.rx.take();
        if let Some(worker) = self.worker.take()
            && worker.join().is_err()
        {
            tracing::error!("the data loader thread panicked");
        }
    }
}

/// What the background thread needs to turn sample indices into a batch.
struct BatchMaker {
    split: Arc<Split>,
    preprocess: Preprocess,
    pool: Option<rayon::ThreadPool>,
    /// Samples already warned about, so a bad file is reported once, not every epoch.
    reported: Mutex<HashSet<usize>>,
}

impl BatchMaker {
    /// Decodes and preprocesses `indices` in parallel; `augment_seed` picks the training view.
    fn make(&self, indices: &[usize], step: u64, augment_seed: Option<u64>) -> Batch {
        let len = self.preprocess.out_len();
        let mut images = vec![0.0f32; indices.len() * len];
        let work = |images: &mut Vec<f32>| -> Vec<bool> {
            images
                .par_chunks_mut(len)
                .zip(indices.par_iter())
                .enumerate()
                .map(|(pos, (out, &index))| {
                    self.one(index, out, augment_seed.map(|s| (s, step, pos)))
                })
                .collect()
        };
        let ok = match &self.pool {
            Some(pool) => pool.install(|| work(&mut images)),
            None => work(&mut images),
        };
        // Move the good images down over the bad ones, keeping the order.
        let mut batch = Batch {
            step,
            ..Batch::default()
        };
        for (pos, &index) in indices.iter().enumerate().filter(|(pos, _)| ok[*pos]) {
            let kept = batch.indices.len();
            if kept != pos {
                images.copy_within(pos * len..(pos + 1) * len, kept * len);
            }
            batch.indices.push(index);
            batch.labels.push(self.split.samples[index].label);
        }
        images.truncate(batch.indices.len() * len);
        batch.images = images;
        batch
    }

    /// One image into `out`; false (after a warning, once per sample) when it cannot be read.
    fn one(&self, index: usize, out: &mut [f32], augment: Option<(u64, u64, usize)>) -> bool {
        let Some(sample) = self.split.samples.get(index) else {
            tracing::warn!(
                "sample index {index} is outside the split of {}; skipped",
                self.split.len()
            );
            return false;
        };
        let result = sample.source.decode().and_then(|img| match augment {
            Some((seed, step, pos)) => {
                let mut rng = StdRng::seed_from_u64(mix(&[AUGMENT_SALT, seed, step, pos as u64]));
                self.preprocess.train(&img, &mut rng, out)
            }
            None => self.preprocess.eval(&img, out),
        });
        match result {
            Ok(()) => true,
            Err(e) => {
                let first = self
                    .reported
                    .lock()
                    .map(|mut r| r.insert(index))
                    .unwrap_or(true);
                if first {
                    match e {
                        // These name the file already.
                        DataError::Image { .. } | DataError::Io { .. } => {
                            tracing::warn!("image skipped: {e}")
                        }
                        _ => tracing::warn!("{}: image skipped: {e}", sample.source.describe()),
                    }
                }
                false
            }
        }
    }
}
