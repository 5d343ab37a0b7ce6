//! The CPU backend: tract's optimised runnable model, the same ONNX file.

use tract_onnx::pb;
use tract_onnx::prelude::*;

use crate::InferError;

#[derive(Debug)]
pub(crate) struct CpuModel {
    plan: std::sync::Arc<TypedRunnableModel>,
    /// Per-sample input shape (without batch).
    inner: Vec<usize>,
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
    pub fn new(
        onnx: &tract_onnx::model::Onnx,
        proto: &pb::ModelProto,
        fixed_batch: Option<usize>,
        inner: &[usize],
    ) -> Result<Self, InferError> {
        let plan = inference_model(onnx, proto, fixed_batch, inner)?
            .into_optimized()
            .map_err(tract_err)?
            .into_runnable()
            .map_err(tract_err)?;
        Ok(CpuModel {
            plan,
            inner: inner.to_vec(),
        })
    }

    /// Runs `batch` samples; writes the first output, which must hold `out.len()` values.
    pub fn run(&self, batch: usize, input: &[f32], out: &mut [f32]) -> Result<(), InferError> {
        let mut shape = vec![batch];
        shape.extend(&self.inner);
        let x = Tensor::from_shape(&shape, input).map_err(|e| InferError::Input(e.to_string()))?;
        let result = self
            .plan
            .run(tvec![x.into_tvalue()])
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
