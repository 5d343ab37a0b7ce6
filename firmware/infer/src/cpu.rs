//! The CPU backend: tract's optimised runnable model, the same ONNX file.
//!
//! tract optimises much better for concrete shapes than for a symbolic batch (measured on the
//! Lite0 fixture: about 4x), so a runnable model is built for each batch size on its first use
//! and kept.

use std::sync::Arc;

use tract_linalg::multithread::{Executor, multithread_tract_scope};
use tract_onnx::pb;
use tract_onnx::prelude::*;

use crate::InferError;
use crate::guard::catch_tract_panic;

pub(crate) struct CpuModel {
    onnx: tract_onnx::model::Onnx,
    proto: pb::ModelProto,
    /// Per-sample input shape (without batch).
    inner: Vec<usize>,
    /// Runnable models by batch size.
    plans: Vec<(usize, Arc<TypedRunnableModel>)>,
    /// Where tract runs its matrix products: this thread alone, or a pool of this model's.
    executor: Executor,
    threads: usize,
}

impl std::fmt::Debug for CpuModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let batches: Vec<usize> = self.plans.iter().map(|(b, _)| *b).collect();
        f.debug_struct("CpuModel")
            .field("inner", &self.inner)
            .field("batches", &batches)
            .field("threads", &self.threads)
            .finish_non_exhaustive()
    }
}

fn tract_err(e: impl std::fmt::Display) -> InferError {
    InferError::Tract(format!("{e:#}"))
}

/// The tract inference model with the input fixed to `[batch, inner...]`, where `batch` is a
/// concrete size or a symbol.
pub(crate) fn inference_model(
    onnx: &tract_onnx::model::Onnx,
    proto: &pb::ModelProto,
    batch: Option<usize>,
    inner: &[usize],
) -> Result<InferenceModel, InferError> {
    let mut model = onnx.model_for_proto_model(proto).map_err(tract_err)?;
    let mut dims: Vec<TDim> = vec![match batch {
        Some(b) => b.into(),
        None => model.symbols.sym("N").into(),
    }];
    dims.extend(inner.iter().map(|&d| TDim::from(d)));
    model = model
        .with_input_fact(0, f32::fact(dims).into())
        .map_err(tract_err)?;
    Ok(model)
}

impl CpuModel {
    /// Builds the runnable model for `first_batch` now, so load-time errors surface at load.
    /// `threads` above 1 runs tract's matrix products on a pool of that many threads (made
    /// here, once).
    pub fn new(
        onnx: tract_onnx::model::Onnx,
        proto: pb::ModelProto,
        inner: &[usize],
        first_batch: usize,
        threads: usize,
    ) -> Result<Self, InferError> {
        let executor = if threads > 1 {
            let pool = rayon::ThreadPoolBuilder::new()
                .thread_name(|i| format!("infer-cpu-{i}"))
                .num_threads(threads)
                .build()
                .map_err(|e| InferError::Cpu(format!("a pool of {threads} threads: {e}")))?;
            Executor::MultiThread(Arc::new(pool))
        } else {
            Executor::SingleThread
        };
        let mut m = CpuModel {
            onnx,
            proto,
            inner: inner.to_vec(),
            plans: Vec::new(),
            executor,
            threads: threads.max(1),
        };
        m.plan(first_batch)?;
        Ok(m)
    }

    fn plan(&mut self, batch: usize) -> Result<Arc<TypedRunnableModel>, InferError> {
        if let Some((_, p)) = self.plans.iter().find(|(b, _)| *b == batch) {
            return Ok(p.clone());
        }
        let plan = inference_model(&self.onnx, &self.proto, Some(batch), &self.inner)?
            .into_optimized()
            .map_err(tract_err)?
            .into_runnable()
            .map_err(tract_err)?;
        self.plans.push((batch, plan.clone()));
        Ok(plan)
    }

    /// Runs `batch` samples; writes the first output, which must hold `out.len()` values.
    pub fn run(&mut self, batch: usize, input: &[f32], out: &mut [f32]) -> Result<(), InferError> {
        catch_tract_panic("running the model on the CPU", || {
            self.run_unguarded(batch, input, out)
        })
    }

    fn run_unguarded(
        &mut self,
        batch: usize,
        input: &[f32],
        out: &mut [f32],
    ) -> Result<(), InferError> {
        let plan = self.plan(batch)?;
        let mut shape = vec![batch];
        shape.extend(&self.inner);
        let x = Tensor::from_shape(&shape, input).map_err(|e| InferError::Input(e.to_string()))?;
        let result =
            multithread_tract_scope(self.executor.clone(), || plan.run(tvec![x.into_tvalue()]))
                .map_err(|e| InferError::Cpu(format!("{e:#}")))?;
        let y = result[0]
            .try_as_plain_ram()
            .and_then(|v| v.as_slice::<f32>())
            .map_err(|e| InferError::Cpu(format!("first output: {e}")))?;
        if y.len() != out.len() {
            return Err(InferError::Cpu(format!(
                "first output has {} values, expected {}",
                y.len(),
                out.len()
            )));
        }
        out.copy_from_slice(y);
        Ok(())
    }
}
