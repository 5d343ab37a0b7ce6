//! The workstation trainer: NormSoftmax metric learning (Zhai & Wu, "Classification is a Strong
//! Baseline for Deep Metric Learning") in burn, written once against burn's run-time `Device`.

pub use burn;

pub mod backend;
pub mod bench;
pub mod classify;
pub mod config;
pub mod data;
pub mod evaluate;
pub mod export;
pub mod loss;
pub mod metrics;
pub mod model;
pub mod plot;
pub mod publish;
pub mod synth;
pub mod train;
pub mod weights;
