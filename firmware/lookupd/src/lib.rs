//! `lookupd`: the product-lookup appliance, as a library the binary and the tests call.
//!
//! * [`Appliance`]: opens a bundle (the manifest and every hash verified, the gallery validated
//!   and matched to the model, the labels read, the model loaded, every buffer allocated once),
//!   names frames ([`Appliance::lookup_rgb8`]: preprocess, embed and pack, Hamming top-k) and
//!   enrols new items crash-safely ([`Appliance::enroll`], see [`enrol`]).
//! * [`selftest()`]: every check a bundle must pass, without changing it.
//!
//! The camera, the trigger and the report loop build on these.

mod appliance;
pub mod enrol;
mod error;
mod parts;
mod selftest;

pub use appliance::{Appliance, Lookup, LookupHit, StageTimings, Verdict};
pub use enrol::{EnrolItem, EnrolStep, JOURNAL_FILE};
pub use error::{ApplianceError, Result};
pub use selftest::{Check, SelfTestReport, selftest};
