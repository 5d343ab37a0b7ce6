//! AVX-512 (VPOPCNTDQ) and AVX2 kernels.

use std::arch::x86_64::*;

/// How far ahead to touch the next pages when streaming a gallery from memory.
const PREFETCH_BYTES: usize = 16384;

/// Mask of the first `n` (< 8) 64-bit lanes.
fn tail_mask(n: usize) -> __mmask8 {
    ((1u16 << n) - 1) as __mmask8
}

/// One row against one query held in registers: `CHUNKS` full 512-bit chunks, then a masked tail.
#[inline]
#[target_feature(enable = "avx512f,avx512vpopcntdq")]
unsafe fn row_acc<const CHUNKS: usize>(
    q: &[__m512i; CHUNKS],
    q_tail: __m512i,
    row: *const u64,
    tail: __mmask8,
) -> __m512i {
    let mut acc = _mm512_setzero_si512();
    for (c, qc) in q.iter().enumerate() {
        // SAFETY: the caller guarantees `row` points at CHUNKS * 8 (+ tail) readable words.
        let r = unsafe { _mm512_loadu_si512(row.add(c * 8).cast()) };
        acc = _mm512_add_epi64(acc, _mm512_popcnt_epi64(_mm512_xor_si512(r, *qc)));
    }
    if tail != 0 {
        // SAFETY: as above; masked-off lanes are not read.
        let r = unsafe { _mm512_maskz_loadu_epi64(tail, row.add(CHUNKS * 8).cast()) };
        acc = _mm512_add_epi64(acc, _mm512_popcnt_epi64(_mm512_xor_si512(r, q_tail)));
    }
    acc
}

#[target_feature(enable = "avx512f,avx512vpopcntdq")]
unsafe fn avx512_single<const CHUNKS: usize>(query: &[u64], rows: &[u64], out: &mut [u32]) {
    let words = query.len();
    let tail = tail_mask(words - CHUNKS * 8);
    // SAFETY: `query` holds CHUNKS * 8 words plus the tail.
    let q: [__m512i; CHUNKS] =
        std::array::from_fn(|c| unsafe { _mm512_loadu_si512(query.as_ptr().add(c * 8).cast()) });
    // SAFETY: as above, masked.
    let q_tail = unsafe { _mm512_maskz_loadu_epi64(tail, query.as_ptr().add(CHUNKS * 8).cast()) };
    let row_bytes = words * 8;
    let ahead = PREFETCH_BYTES.div_ceil(row_bytes) * words;
    for (r, o) in out.iter_mut().enumerate() {
        let row = rows.as_ptr().wrapping_add(r * words);
        // The hardware prefetcher stops at page boundaries: touch the page PREFETCH_BYTES
        // ahead once, when a row starts a new page. A prefetch is only a hint: an address past
        // the end is never dereferenced.
        if (row as usize) % 4096 < row_bytes {
            _mm_prefetch::<_MM_HINT_T0>(row.wrapping_add(ahead).cast());
        }
        // SAFETY: rows.len() == out.len() * words (checked by the dispatcher).
        let acc = unsafe { row_acc::<CHUNKS>(&q, q_tail, row, tail) };
        *o = _mm512_reduce_add_epi64(acc) as u32;
    }
}

/// Field width of one query's distance in a packed accumulator: 4 fields of 13 bits fit the
/// 52 bits that `vpmadd52luq` adds, and 13 bits hold any distance up to 4096.
const FIELD_BITS: u64 = 13;

/// Sum of the 8 lanes of each of `v[0..8]`, as lane `j` of the result for `v[j]`.
#[inline]
#[target_feature(enable = "avx512f")]
fn transpose_sum8(v: &[__m512i; 8]) -> __m512i {
    // Pairs: lanes [a0+a1, b0+b1, a2+a3, b2+b3, ...] (each 128-bit block holds one a and one b).
    let pair = |a: __m512i, b: __m512i| {
        _mm512_add_epi64(_mm512_unpacklo_epi64(a, b), _mm512_unpackhi_epi64(a, b))
    };
    // Blocks: add blocks (0,1) and (2,3) of each input: [x01, x23, y01, y23].
    let quad = |x: __m512i, y: __m512i| {
        _mm512_add_epi64(
            _mm512_shuffle_i64x2::<0b10_00_10_00>(x, y),
            _mm512_shuffle_i64x2::<0b11_01_11_01>(x, y),
        )
    };
    let (ab, cd, ef, gh) = (
        pair(v[0], v[1]),
        pair(v[2], v[3]),
        pair(v[4], v[5]),
        pair(v[6], v[7]),
    );
    quad(quad(ab, cd), quad(ef, gh))
}

#[target_feature(enable = "avx512f,avx512vpopcntdq,avx512ifma")]
unsafe fn avx512_tile<const CHUNKS: usize>(
    queries: &[u64],
    words: usize,
    rows: &[u64],
    out: &mut [u32],
) {
    let tail = tail_mask(words - CHUNKS * 8);
    let nrows = rows.len() / words;
    let load_q = |qi: usize| {
        let base = queries.as_ptr().wrapping_add(qi * words);
        // SAFETY: `queries` holds 4 queries of `words` words.
        let full: [__m512i; CHUNKS] =
            std::array::from_fn(|c| unsafe { _mm512_loadu_si512(base.add(c * 8).cast()) });
        // SAFETY: as above, masked.
        let t = unsafe { _mm512_maskz_loadu_epi64(tail, base.add(CHUNKS * 8).cast()) };
        (full, t)
    };
    let (q0, t0) = load_q(0);
    let (q1, t1) = load_q(1);
    let (q2, t2) = load_q(2);
    let (q3, t3) = load_q(3);
    let m1 = _mm512_set1_epi64(1 << FIELD_BITS);
    let m2 = _mm512_set1_epi64(1 << (2 * FIELD_BITS));
    let m3 = _mm512_set1_epi64(1 << (3 * FIELD_BITS));
    // The four distances of a row end in one register, query j in field j: one reduction then
    // serves four pairs. Each query sums its chunks with plain adds (short dependency chains);
    // three multiply-adds shift and merge the sums.
    let packed_row = |r: usize| {
        let row = rows.as_ptr().wrapping_add(r * words);
        let pc = |x: __m512i, q: __m512i| _mm512_popcnt_epi64(_mm512_xor_si512(x, q));
        let mut s = [_mm512_setzero_si512(); 4];
        let mut add4 = |x: __m512i, q: [__m512i; 4]| {
            for j in 0..4 {
                s[j] = _mm512_add_epi64(s[j], pc(x, q[j]));
            }
        };
        for c in 0..CHUNKS {
            // SAFETY: row `r` < nrows has `words` words.
            let x = unsafe { _mm512_loadu_si512(row.add(c * 8).cast()) };
            add4(x, [q0[c], q1[c], q2[c], q3[c]]);
        }
        if tail != 0 {
            // SAFETY: as above, masked.
            let x = unsafe { _mm512_maskz_loadu_epi64(tail, row.add(CHUNKS * 8).cast()) };
            add4(x, [t0, t1, t2, t3]);
        }
        let acc = _mm512_madd52lo_epu64(s[0], s[1], m1);
        let acc = _mm512_madd52lo_epu64(acc, s[2], m2);
        _mm512_madd52lo_epu64(acc, s[3], m3)
    };
    let field = _mm512_set1_epi64((1 << FIELD_BITS) - 1);
    let full = nrows / 8 * 8;
    for r0 in (0..full).step_by(8) {
        let packed: [__m512i; 8] = std::array::from_fn(|j| packed_row(r0 + j));
        let sums = transpose_sum8(&packed);
        for (f, shift) in [0u32, 13, 26, 39].into_iter().enumerate() {
            let d = _mm512_and_si512(
                _mm512_srlv_epi64(sums, _mm512_set1_epi64(shift as i64)),
                field,
            );
            let d = _mm512_cvtepi64_epi32(d);
            let dst = &mut out[f * nrows + r0..f * nrows + r0 + 8];
            // SAFETY: `dst` holds 8 u32.
            unsafe { _mm256_storeu_si256(dst.as_mut_ptr().cast(), d) };
        }
    }
    for r in full..nrows {
        let sums = _mm512_reduce_add_epi64(packed_row(r)) as u64;
        for f in 0..4 {
            out[f * nrows + r] =
                ((sums >> (f as u64 * FIELD_BITS)) & ((1 << FIELD_BITS) - 1)) as u32;
        }
    }
}

macro_rules! by_chunks {
    ($words:expr, $f:ident, $($arg:expr),*) => {
        match $words / 8 {
            0 => $f::<0>($($arg),*),
            1 => $f::<1>($($arg),*),
            2 => $f::<2>($($arg),*),
            3 => $f::<3>($($arg),*),
            4 => $f::<4>($($arg),*),
            5 => $f::<5>($($arg),*),
            6 => $f::<6>($($arg),*),
            7 => $f::<7>($($arg),*),
            8 => $f::<8>($($arg),*),
            _ => unreachable!("codes are at most 4096 bits"),
        }
    };
}

/// # Safety
/// The CPU must support AVX-512F and AVX-512 VPOPCNTDQ; `rows.len() == out.len() * query.len()`.
#[target_feature(enable = "avx512f,avx512vpopcntdq")]
pub(super) unsafe fn avx512_distances(query: &[u64], rows: &[u64], out: &mut [u32]) {
    // SAFETY: forwarded from the caller.
    unsafe { by_chunks!(query.len(), avx512_single, query, rows, out) }
}

/// # Safety
/// As [`avx512_distances`], with AVX-512 IFMA too, and exactly 4 queries of `words` words.
#[target_feature(enable = "avx512f,avx512vpopcntdq,avx512ifma")]
pub(super) unsafe fn avx512_distances_tile(
    queries: &[u64],
    words: usize,
    rows: &[u64],
    out: &mut [u32],
) {
    // SAFETY: forwarded from the caller.
    unsafe { by_chunks!(words, avx512_tile, queries, words, rows, out) }
}

/// Per-byte popcount of a 256-bit vector (nibble lookup, Mula's method).
#[inline]
#[target_feature(enable = "avx2")]
fn popcnt_bytes(v: __m256i) -> __m256i {
    let lookup = _mm256_setr_epi8(
        0, 1, 1, 2, 1, 2, 2, 3, 1, 2, 2, 3, 2, 3, 3, 4, 0, 1, 1, 2, 1, 2, 2, 3, 1, 2, 2, 3, 2, 3,
        3, 4,
    );
    let low = _mm256_set1_epi8(0x0f);
    let lo = _mm256_and_si256(v, low);
    let hi = _mm256_and_si256(_mm256_srli_epi16::<4>(v), low);
    _mm256_add_epi8(
        _mm256_shuffle_epi8(lookup, lo),
        _mm256_shuffle_epi8(lookup, hi),
    )
}

/// # Safety
/// The CPU must support AVX2 and POPCNT; `rows.len() == out.len() * query.len()`.
#[target_feature(enable = "avx2,popcnt")]
pub(super) unsafe fn avx2_distances(query: &[u64], rows: &[u64], out: &mut [u32]) {
    let words = query.len();
    let chunks = words / 4;
    let row_bytes = words * 8;
    let ahead = PREFETCH_BYTES.div_ceil(row_bytes) * words;
    for (r, o) in out.iter_mut().enumerate() {
        let row = &rows[r * words..(r + 1) * words];
        _mm_prefetch::<_MM_HINT_T0>(rows.as_ptr().wrapping_add(r * words + ahead).cast());
        // Byte counts grow by at most 8 per chunk; 16 chunks (4096 bits) stay below 256.
        let mut bytes = _mm256_setzero_si256();
        for c in 0..chunks {
            // SAFETY: c * 4 + 4 <= words, within both slices.
            let (a, b) = unsafe {
                (
                    _mm256_loadu_si256(row.as_ptr().add(c * 4).cast()),
                    _mm256_loadu_si256(query.as_ptr().add(c * 4).cast()),
                )
            };
            bytes = _mm256_add_epi8(bytes, popcnt_bytes(_mm256_xor_si256(a, b)));
        }
        let sums = _mm256_sad_epu8(bytes, _mm256_setzero_si256());
        let mut d = (_mm256_extract_epi64::<0>(sums)
            + _mm256_extract_epi64::<1>(sums)
            + _mm256_extract_epi64::<2>(sums)
            + _mm256_extract_epi64::<3>(sums)) as u32;
        for w in chunks * 4..words {
            d += (row[w] ^ query[w]).count_ones();
        }
        *o = d;
    }
}

/// Smallest value of `d` (vectorised by the compiler for the enabled features).
///
/// # Safety
/// The CPU must support AVX2.
#[target_feature(enable = "avx2")]
pub(super) unsafe fn avx2_min(d: &[u32]) -> u32 {
    d.iter().copied().fold(u32::MAX, u32::min)
}

/// # Safety
/// The CPU must support AVX-512F.
#[target_feature(enable = "avx512f")]
pub(super) unsafe fn avx512_min(d: &[u32]) -> u32 {
    d.iter().copied().fold(u32::MAX, u32::min)
}
