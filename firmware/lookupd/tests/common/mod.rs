//! The real bundle of these tests: the `test-bundle` crate's (infer's embed256 model, a gallery
//! of codes computed by infer from generated catalogue images, labels, hashes, self-test code).

#![allow(unused_imports)]

pub mod cli;

pub use test_bundle::*;
