//! NEON kernel (aarch64: the device).

use std::arch::aarch64::*;

/// # Safety
/// The CPU must support NEON; `rows.len() == out.len() * query.len()`.
#[target_feature(enable = "neon")]
pub(super) unsafe fn distances(query: &[u64], rows: &[u64], out: &mut [u32]) {
    let words = query.len();
    let pairs = words / 2;
    for (r, o) in out.iter_mut().enumerate() {
        let row = &rows[r * words..(r + 1) * words];
        // 16-bit lanes gain at most 16 per 128-bit chunk: 32 chunks (4096 bits) stay below 2^16.
        let mut acc = vdupq_n_u16(0);
        for c in 0..pairs {
            // SAFETY: c * 2 + 2 <= words, within both slices.
            let (a, b) = unsafe {
                (
                    vld1q_u8(row.as_ptr().add(c * 2).cast()),
                    vld1q_u8(query.as_ptr().add(c * 2).cast()),
                )
            };
            acc = vpadalq_u8(acc, vcntq_u8(veorq_u8(a, b)));
        }
        let mut d = vaddlvq_u16(acc);
        if words % 2 == 1 {
            d += (row[words - 1] ^ query[words - 1]).count_ones();
        }
        *o = d;
    }
}
