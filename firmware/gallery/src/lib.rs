//! The appliance's catalogue: a file of binary codes, one per enrolled item, and the exact
//! Hamming top-K search over it.
//!
//! * [`Gallery`] creates, opens (memory-mapped, validated completely) and appends to a gallery
//!   file; appends are crash-safe. The layout and bit order are documented in [`format`].
//! * [`Searcher`] runs exact k-nearest-neighbour and range queries, ordered by
//!   (Hamming distance, item id), on every core, with a kernel picked at run time ([`Kernel`]).
//!
//! The gallery knows nothing of models or images: codes are opaque bit strings.

mod error;
pub mod format;
mod kernels;
mod search;
mod store;

pub use error::{GalleryError, Result};
pub use format::{Header, MAX_CODE_BITS, MIN_CODE_BITS, SlotState};
pub use kernels::Kernel;
pub use search::{Hit, KnnScratch, MAX_K, Searcher};
pub use store::{Gallery, GalleryInfo};
