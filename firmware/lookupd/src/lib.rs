//! `lookupd`: the product-lookup appliance, as a library the binary and the tests call.
//!
//! * [`Appliance`]: opens a bundle (the manifest and every hash verified, the gallery validated
//!   and matched to the model, the labels read, the model loaded, every buffer allocated once),
//!   names frames ([`Appliance::lookup_rgb8`]: preprocess, embed and pack, Hamming top-k) and
//!   enrols new items crash-safely ([`Appliance::enroll`], see [`enrol`]).
//! * [`selftest()`]: every check a bundle must pass, without changing it.
//!
//! * [`run()`]: the appliance loop over them: a [`camera`] source, [`trigger`]s, the status
//!   [`led`], and [`report`]s (JSON lines, serial frames), configured by [`config`].

mod appliance;
pub mod camera;
pub mod config;
pub mod enrol;
mod error;
pub mod frame;
pub mod led;
mod parts;
pub mod report;
mod run;
mod selftest;
mod skus;
pub mod trigger;

pub use appliance::{Appliance, Lookup, LookupHit, StageTimings, Verdict};
pub use enrol::{EnrolItem, EnrolStep, JOURNAL_FILE};
pub use error::{ApplianceError, Result};
pub use run::{RunSummary, run};
pub use selftest::{Check, SelfTestReport, selftest};
