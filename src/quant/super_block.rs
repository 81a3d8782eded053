//! The row walk shared by the IQ1 and IQ2 quantizers.
//!
//! ggml quantizes these types one 256-value super-block at a time, from the block's values, its
//! share of the importance weights and its output bytes. Walking a row with `zip` alone would
//! silently drop a trailing partial block or ignore surplus weights, so the row contract is
//! checked once here, before the first block, for every type that walks its row this way.

use crate::gguf::ggml_type::QK_K;

/// Checks the row contract of [`super::TypeCodec::quantize_row`] for a 256-element block type.
fn check_row(src: &[f32], imatrix: Option<&[f32]>, dst: &[u8], block_bytes: usize) {
    assert!(
        src.len().is_multiple_of(QK_K),
        "row length not a multiple of 256"
    );
    assert_eq!(
        dst.len(),
        src.len() / QK_K * block_bytes,
        "destination size"
    );
    if let Some(qw) = imatrix {
        assert_eq!(qw.len(), src.len(), "importance weights per row");
    }
}

/// The super-blocks of a row as (values, importance weights if given, output block), for the
/// types that also quantize without an importance matrix.
pub(super) fn super_blocks<'a>(
    src: &'a [f32],
    imatrix: Option<&'a [f32]>,
    dst: &'a mut [u8],
    block_bytes: usize,
) -> impl Iterator<Item = (&'a [f32], Option<&'a [f32]>, &'a mut [u8])> {
    check_row(src, imatrix, dst, block_bytes);
    // check_row made the weights exactly as long as the values, so they never run out first.
    let mut weights = imatrix.map(|w| w.chunks_exact(QK_K));
    src.chunks_exact(QK_K)
        .zip(dst.chunks_exact_mut(block_bytes))
        .map(move |(x, y)| (x, weights.as_mut().and_then(Iterator::next), y))
}

/// The super-blocks of a row as (values, importance weights, output block), for the types ggml
/// refuses to quantize without an importance matrix (`ggml_quantize_requires_imatrix`).
/// The plan refuses such tensors when the imatrix has no entry for them, so missing weights here
/// are a bug in gmat: they panic, naming `type_name`, before any block is written.
pub(super) fn weighted_super_blocks<'a>(
    src: &'a [f32],
    imatrix: Option<&'a [f32]>,
    dst: &'a mut [u8],
    block_bytes: usize,
    type_name: &str,
) -> impl Iterator<Item = (&'a [f32], &'a [f32], &'a mut [u8])> {
    check_row(src, imatrix, dst, block_bytes);
    let Some(qw) = imatrix else {
        panic!("{type_name} requires importance weights");
    };
    src.chunks_exact(QK_K)
        .zip(qw.chunks_exact(QK_K))
        .zip(dst.chunks_exact_mut(block_bytes))
        .map(|((x, w), y)| (x, w, y))
}
