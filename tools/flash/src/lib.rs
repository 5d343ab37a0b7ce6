//! `flash`: signs bundles and deploys them to the appliance A/B, with verification and rollback.
//!
//! * [`archive`]: the signed archive (pack, verify, extract);
//! * [`keys`]: ed25519 key files;
//! * [`target`]: `dir:` and `ssh://` targets;
//! * [`slots`]: the target layout, deploy, status and rollback;
//! * [`fault`]: the fault-injection hook of the tests.
//!
//! The binary (`main.rs`) only parses arguments and prints.

pub mod archive;
pub mod build;
pub mod elf;
mod error;
pub mod fault;
pub mod keys;
pub mod progress;
pub mod slots;
pub mod target;

pub use error::{FlashError, Result};
