//! The run-time choice of burn backend. The model code is written once against burn's
//! `Device`; only this file knows which backends the build carries.

use std::fmt;
use std::str::FromStr;

use burn::tensor::Device;
use serde::{Deserialize, Serialize};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Backend {
    /// burn's pure-Rust CPU backend: nothing to install; the default build's only backend.
    Flex,
    /// PyTorch's CPU kernels through burn's LibTorch backend (cargo feature `libtorch`).
    Libtorch,
    /// PyTorch's CUDA kernels on GPU 0 (cargo feature `libtorch`).
    LibtorchCuda,
    /// burn's wgpu backend pinned to Vulkan (cargo feature `vulkan`).
    Vulkan,
}

#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    #[error("unknown backend '{0}' (known: flex, libtorch, libtorch-cuda, vulkan)")]
    Unknown(String),
    #[error("backend '{backend}' is not in this build: rebuild with `--features {feature}`")]
    NotBuilt {
        backend: Backend,
        feature: &'static str,
    },
}

impl Backend {
    pub fn name(self) -> &'static str {
        match self {
            Backend::Flex => "flex",
            Backend::Libtorch => "libtorch",
            Backend::LibtorchCuda => "libtorch-cuda",
            Backend::Vulkan => "vulkan",
        }
    }

    /// The device to compute on, without autodiff.
    pub fn device(self) -> Result<Device, BackendError> {
        match self {
            Backend::Flex => Ok(Device::flex()),
            #[cfg(feature = "libtorch")]
            #[allow(deprecated)]
            // burn 0.22 deprecates LibTorch, but it is the fast path today
            Backend::Libtorch => Ok(Device::libtorch()),
            #[cfg(feature = "libtorch")]
            #[allow(deprecated)]
            Backend::LibtorchCuda => Ok(Device::libtorch_cuda(0)),
            #[cfg(feature = "vulkan")]
            Backend::Vulkan => Ok(Device::vulkan(burn::tensor::DeviceKind::DefaultDevice)),
            #[allow(unreachable_patterns)]
            other => Err(BackendError::NotBuilt {
                backend: other,
                feature: if other == Backend::Vulkan {
                    "vulkan"
                } else {
                    "libtorch"
                },
            }),
        }
    }
}

impl Backend {
    /// The first `count` devices of this backend, for data-parallel training: GPUs 0..count for
    /// the GPU backends; for the CPU backends `count` replicas on the one CPU, each in its own
    /// thread (what the data-parallel step needs, though LibTorch already uses every core).
    pub fn devices(self, count: usize) -> Result<Vec<Device>, BackendError> {
        match self {
            #[cfg(feature = "libtorch")]
            #[allow(deprecated)]
            Backend::LibtorchCuda => Ok((0..count).map(Device::libtorch_cuda).collect()),
            #[cfg(feature = "vulkan")]
            Backend::Vulkan => Ok((0..count)
                .map(|index| Device::vulkan(burn::tensor::DeviceKind::DiscreteGpu(index)))
                .collect()),
            other => {
                let device = other.device()?;
                Ok(vec![device; count])
            }
        }
    }
}

impl fmt::Display for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Backend {
    type Err = BackendError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text {
            "flex" => Ok(Backend::Flex),
            "libtorch" => Ok(Backend::Libtorch),
            "libtorch-cuda" => Ok(Backend::LibtorchCuda),
            "vulkan" => Ok(Backend::Vulkan),
            other => Err(BackendError::Unknown(other.to_owned())),
        }
    }
}

/// The backend named by `TRAINER_BACKEND` (default `flex`): lets the same test suite run on
/// every backend of a build (`TRAINER_BACKEND=libtorch cargo test --features libtorch`).
pub fn from_env() -> Result<Backend, BackendError> {
    match std::env::var("TRAINER_BACKEND") {
        Ok(name) if !name.is_empty() => name.parse(),
        _ => Ok(Backend::Flex),
    }
}

/// The device of [`from_env`]'s backend, for tests and tools.
pub fn device_from_env() -> Result<Device, BackendError> {
    let backend = from_env()?;
    tracing::info!("backend: {backend}");
    backend.device()
}
