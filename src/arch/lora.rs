//! LoRA adapters through the architecture modules, as `convert_lora_to_gguf.py` does it.
//!
//! The converter subclasses the base model's converter class and feeds its `modify_tensors`
//! a `LoraTorchTensor`: a stand-in for the adapted weight `B @ A` (out × in) that turns every
//! torch operation on the weight into operations on `A` (rank × in) and `B` (out × rank). The
//! rearrangements the text-model classes do on a weight reorder or select its rows (Llama's Q/K
//! permutation, a fused tensor's split): on the stand-in those apply to the rows of `B` and leave
//! `A` as it is. gmat does the same with its [`View`]s: each adapted weight goes through its
//! architecture's [`ArchSpec::modify_tensor`] as a virtual source tensor of shape out × in, and
//! each view of it that only selects whole rows becomes the same view of `B`'s rows. Anything
//! else (a value operation, a view that mixes columns, stacked experts) is refused by name
//! instead of guessed.
//!
//! Each resulting GGUF tensor `NAME` is written as `NAME.lora_a` (A, ggml dims in × rank) and
//! `NAME.lora_b` (B, ggml dims rank × out), which is what llama.cpp's adapter loader reads.

use anyhow::{bail, Context, Result};

use super::tensors::{Data, SourceTensor, TensorSink};
use super::transform::{ValueOp, View};
use super::{ArchSpec, Cx};
use crate::source::Dtype;

/// One adapted weight as the architecture names and arranges it.
#[derive(Clone, Debug, PartialEq)]
pub struct LoraTensor {
    /// The GGUF name of the base weight (`blk.0.attn_q.weight`); the adapter's tensors are this
    /// plus `.lora_a` and `.lora_b`.
    pub name: String,
    /// Index of the adapted weight in the caller's list.
    pub pair: usize,
    /// Shape of `A`, outermost first: rank × in.
    pub a_shape: [u64; 2],
    /// Which elements of `B` (out × rank, row-major) make the output's `B`, in order.
    pub b_view: View,
    /// Shape of the output's `B`, outermost first.
    pub b_shape: Vec<u64>,
}

/// An adapted base weight: its name in the base model and its shape (out × in) and rank.
#[derive(Clone, Debug)]
pub struct AdaptedWeight {
    pub base_name: String,
    pub shape: [u64; 2],
    pub rank: u64,
}

/// `LoraModel.get_tensors` + `modify_tensors`: the GGUF tensors of every adapted weight, in
/// the converter's order. Weights the class filters out are skipped (as the converter does).
pub fn lora_tensors(
    spec: &dyn ArchSpec,
    cx: &Cx,
    weights: &[AdaptedWeight],
) -> Result<Vec<LoraTensor>> {
    let mut out = Vec::new();
    for (i, w) in weights.iter().enumerate() {
        let Some(name) = spec.filter_tensor(&w.base_name) else {
            continue;
        };
        let source = SourceTensor::new(i, name.clone(), Dtype::F32, w.shape.to_vec());
        let mut sink = TensorSink::new(cx.names);
        spec.modify_tensor(cx, &source, &mut sink)
            .with_context(|| format!("adapted tensor {}", w.base_name))?;
        let made = sink
            .finish()
            .with_context(|| format!("adapted tensor {}", w.base_name))?;
        if made.is_empty() && name == "lm_head.weight" {
            // the converter: "lm_head is present in adapter, but is ignored in base model"
            bail!("the adapter adapts lm_head.weight, which the base model does not have as its own tensor (tied to the token embeddings)");
        }
        for t in made {
            let piece = match &t.data {
                Data::Pieces(p) if p.len() == 1 => &p[0],
                _ => bail!(
                    "adapted tensor {}: {} is assembled from several tensors (stacked experts), which a LoRA adapter cannot express",
                    w.base_name,
                    t.name
                ),
            };
            if piece.op != ValueOp::None {
                bail!(
                    "adapted tensor {}: the architecture changes the values of {} ({:?}), which a LoRA adapter cannot express",
                    w.base_name,
                    t.name,
                    piece.op
                );
            }
            let (b_view, b_shape) = rows_of_b(&piece.view, &t.shape, w.shape[1], w.rank)
                .with_context(|| format!("adapted tensor {} ({})", w.base_name, t.name))?;
            out.push(LoraTensor {
                name: t.name,
                pair: i,
                a_shape: [w.rank, w.shape[1]],
                b_view,
                b_shape,
            });
        }
    }
    Ok(out)
}

/// A view of the weight (out × `cols`) that selects whole rows, turned into the same view of
/// `B` (out × `rank`): `LoraTorchTensor`'s reshape/permute/split of the output side.
fn rows_of_b(view: &View, shape: &[u64], cols: u64, rank: u64) -> Result<(View, Vec<u64>)> {
    let whole_rows = cols > 0
        && view.dims.last() == Some(&cols)
        && view.strides.last() == Some(&1)
        && view.offset.is_multiple_of(cols)
        && view.dims.len() >= 2
        && view.strides[..view.strides.len() - 1]
            .iter()
            .zip(&view.dims)
            .all(|(s, d)| s.is_multiple_of(cols) || *d == 1)
        && shape.len() == 2
        && shape.last() == Some(&cols);
    if !whole_rows {
        bail!("the architecture rearranges the weight across its columns (view {view:?} as {shape:?}), which only a merge can express");
    }
    let last = view.dims.len() - 1;
    let mut dims = view.dims.clone();
    dims[last] = rank;
    let mut strides: Vec<u64> = view.strides[..last]
        .iter()
        .map(|s| s / cols * rank)
        .collect();
    strides.push(1);
    let b = View {
        offset: view.offset / cols * rank,
        dims,
        strides,
    };
    Ok((b, vec![shape[0], rank]))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::arch::models::llama::permute;

    #[test]
    fn a_row_permutation_of_the_weight_permutes_the_rows_of_b() {
        // 8 rows of 6 columns, rank 2, 2 heads: the weight's rows 0 2 1 3 4 6 5 7
        let w = permute(&View::contiguous(&[8, 6]), 2).unwrap();
        let (b, shape) = rows_of_b(&w, &[8, 6], 6, 2).unwrap();
        assert_eq!(shape, [8, 2]);
        let rows: Vec<u64> = (0..b.len())
            .step_by(2)
            .map(|i| b.source_index(i) / 2)
            .collect();
        assert_eq!(rows, [0, 2, 1, 3, 4, 6, 5, 7]);
        assert_eq!(b.source_index(1), 1);
    }

    #[test]
    fn a_row_slice_selects_rows_of_b_and_a_transpose_is_refused() {
        let v = View::contiguous(&[8, 6]).narrow(0, 2, 4).unwrap();
        let (b, shape) = rows_of_b(&v, &[4, 6], 6, 3).unwrap();
        assert_eq!(shape, [4, 3]);
        assert_eq!(b.source_index(0), 6);
        let t = View::contiguous(&[8, 6]).swap_axes(0, 1);
        assert!(rows_of_b(&t, &[6, 8], 6, 3).is_err());
    }
}
