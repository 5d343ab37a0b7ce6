pub(super) fn distances(query: &[u64], rows: &[u64], out: &mut [u32]) {
    for (row, o) in rows.chunks_exact(query.len()).zip(out) {
        *o = row
            .iter()
            .zip(query)
            .map(|(a, b)| (a ^ b).count_ones())
            .sum();
    }
}
