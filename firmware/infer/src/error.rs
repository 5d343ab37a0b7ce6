//! The one error type of the crate: each variant says what went wrong and where.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum InferError {
    #[error("reading model {path}: {message}")]
    Load { path: PathBuf, message: String },

    /// tract rejected the graph (shapes, types, unknown ops): the model itself is unusable.
    #[error("checking the model with tract: {0}")]
    Tract(String),

    /// A node the GPU plan cannot run; the plan never falls back silently.
    #[error("node `{node}` ({op}): {reason}")]
    Unsupported {
        node: String,
        op: String,
        reason: String,
    },

    /// The plan's own shape inference disagrees with tract's: a bug, never a silent wrong result.
    #[error("plan output shape {plan:?} differs from tract's {tract:?}")]
    ShapeMismatch { plan: Vec<usize>, tract: Vec<usize> },

    #[error("no GPU adapter: {0}")]
    NoAdapter(String),

    #[error("GPU device: {0}")]
    Device(String),

    #[error("GPU error during {during}: {message}")]
    Gpu {
        during: &'static str,
        message: String,
    },

    #[error("input: {0}")]
    Input(String),

    /// Asked of the CPU backend, which only runs the network on prepared floats.
    #[error("{0} runs on the GPU backend only (on the CPU, preprocess first and call run)")]
    GpuOnly(&'static str),

    #[error("running the model on the CPU: {0}")]
    Cpu(String),
}

impl InferError {
    pub(crate) fn unsupported(node: &str, op: &str, reason: impl Into<String>) -> Self {
        InferError::Unsupported {
            node: node.to_owned(),
            op: op.to_owned(),
            reason: reason.into(),
        }
    }
}
