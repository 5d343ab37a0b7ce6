//! The fault-injection hook of the tests: `FLASH_FAULT_AT=<step>:<n>` makes the process abort
//! (SIGABRT, no unwinding, no cleanup: what a power cut or a kill leaves) the `n`-th time it
//! passes the point named `step`. The points of a deploy, in order:
//!
//! * `write` — halfway through sending each file into the slot (its temporary is half written);
//! * `readback` — before the slot is read back and every hash checked;
//! * `seal` — between writing the slot's manifest and its signature;
//! * `switch` — 1: after state.toml records the trial, before the new link; 2: after the new
//!   link is made under its temporary name, before the rename; 3: after the rename;
//! * `selftest` — 1: before the self-test runs; 2: after it ran, before its outcome is recorded;
//! * `rollback` — between the temporary link and the rename when switching back after a failed
//!   self-test.
//!
//! Without the variable every point is a no-op.

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};

/// The environment variable naming the point to abort at.
pub const FAULT_ENV: &str = "FLASH_FAULT_AT";

fn armed() -> &'static Option<(String, u32)> {
    static ARMED: OnceLock<Option<(String, u32)>> = OnceLock::new();
    ARMED.get_or_init(|| {
        let spec = std::env::var(FAULT_ENV).ok()?;
        let (step, n) = spec.split_once(':')?;
        Some((step.to_owned(), n.parse().ok()?))
    })
}

/// Passes point `step`; aborts the process when it is the armed one.
pub fn point(step: &str) {
    let Some((armed_step, armed_n)) = armed() else {
        return;
    };
    static COUNTS: Mutex<Option<HashMap<String, u32>>> = Mutex::new(None);
    let mut counts = COUNTS.lock().unwrap_or_else(|p| p.into_inner());
    let n = counts
        .get_or_insert_with(HashMap::new)
        .entry(step.to_owned())
        .or_insert(0);
    *n += 1;
    if step == armed_step && *n == *armed_n {
        eprintln!("{FAULT_ENV}: aborting at {step}:{n}");
        std::process::abort();
    }
}
