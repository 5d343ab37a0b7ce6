//! tract 0.23 panics on some malformed models instead of returning an error (an `axes` input
//! beyond the tensor's rank, a stride of 0, padding whose output size overflows). Loading and
//! CPU runs go through [`catch_tract_panic`], which turns such a panic into an error naming it,
//! without the panic message on stderr: a bad model file is bad input, not a crash.

use std::cell::{Cell, RefCell};
use std::panic::{self, AssertUnwindSafe};
use std::sync::Once;

use crate::InferError;

thread_local! {
    /// Set while this thread runs under `catch_tract_panic`.
    static CATCHING: Cell<bool> = const { Cell::new(false) };
    /// The message and place of the panic caught on this thread.
    static CAUGHT: RefCell<Option<String>> = const { RefCell::new(None) };
}

static HOOK: Once = Once::new();

/// Runs `f`; a panic inside it becomes [`InferError::Tract`] saying `what` failed and why.
/// Panics on other threads, or outside `f`, go to the hook installed before (printed as usual).
pub(crate) fn catch_tract_panic<T>(
    what: &str,
    f: impl FnOnce() -> Result<T, InferError>,
) -> Result<T, InferError> {
    HOOK.call_once(|| {
        let previous = panic::take_hook();
        panic::set_hook(Box::new(move |info| {
            if CATCHING.get() {
                let message = info
                    .payload()
                    .downcast_ref::<&str>()
                    .map(|s| (*s).to_owned())
                    .or_else(|| info.payload().downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "no message".to_owned());
                let place = info
                    .location()
                    .map(|l| format!(" ({}:{})", l.file(), l.line()))
                    .unwrap_or_default();
                CAUGHT.set(Some(format!("{message}{place}")));
            } else {
                previous(info);
            }
        }));
    });
    let outer = CATCHING.replace(true);
    let result = panic::catch_unwind(AssertUnwindSafe(f));
    CATCHING.set(outer);
    result.unwrap_or_else(|_| {
        let why = CAUGHT.take().unwrap_or_else(|| "no message".to_owned());
        Err(InferError::Tract(format!(
            "{what} failed: tract stopped on this model with `{why}`"
        )))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_panic_becomes_an_error_naming_it() {
        let err = catch_tract_panic("checking", || -> Result<(), InferError> {
            panic!("axis 3 out of range")
        })
        .unwrap_err();
        let text = err.to_string();
        assert!(text.contains("checking failed"), "{text}");
        assert!(text.contains("axis 3 out of range"), "{text}");
        assert!(text.contains("guard.rs"), "{text}");
        // Results and errors pass through unchanged, and nothing is left caught.
        assert_eq!(catch_tract_panic("x", || Ok(7)).unwrap(), 7);
        assert!(matches!(
            catch_tract_panic("x", || -> Result<(), _> {
                Err(InferError::Input("e".into()))
            }),
            Err(InferError::Input(_))
        ));
        assert!(!CATCHING.get());
    }
}
