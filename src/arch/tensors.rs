//! The converter's tensor stream as data: which stored tensors become which GGUF tensors.
//!
//! `convert_hf_to_gguf.py` runs every source tensor through `filter_tensors` and
//! `modify_tensors`, which yield `(gguf_name, torch_tensor)` pairs. gmat runs the same decisions
//! on names and shapes only: an architecture module turns each [`SourceTensor`] into
//! [`OutTensor`]s whose data is a list of [`Piece`]s (a view of a stored tensor and a value
//! operation), and the pipeline reads the bytes later, while streaming.

use std::collections::{BTreeMap, HashMap};

use anyhow::{bail, Context, Result};

use super::dequant::BlockScale;
use super::name_map::NameMap;
use super::tensor_names::TensorKind;
use super::transform::{ValueOp, View};
use crate::source::Dtype;

/// One stored tensor as `modify_tensors` sees it.
#[derive(Clone, Debug)]
pub struct SourceTensor {
    /// Position in the store's tensor list.
    pub index: usize,
    /// The name after `filter_tensors`.
    pub name: String,
    pub dtype: Dtype,
    /// Shape, outermost first (torch order).
    pub shape: Vec<u64>,
    /// `prepare_tensors`' block id: the first all-digit part of the name.
    pub bid: Option<usize>,
    /// Block scales of a quantized checkpoint's weight (`dequant_model`).
    pub scale: Option<BlockScale>,
}

impl SourceTensor {
    /// A source tensor; `bid` is derived from `name` as `prepare_tensors` derives it.
    pub fn new(index: usize, name: String, dtype: Dtype, shape: Vec<u64>) -> SourceTensor {
        let bid = block_id(&name);
        SourceTensor {
            index,
            name,
            dtype,
            shape,
            bid,
            scale: None,
        }
    }

    /// All of this tensor, unchanged.
    pub fn whole(&self) -> Piece {
        self.piece(View::contiguous(&self.shape))
    }

    /// This tensor read through `view` (dequantized first when it has block scales).
    pub fn piece(&self, view: View) -> Piece {
        Piece {
            source: self.index,
            view,
            op: ValueOp::None,
            scale: self.scale.clone(),
            mxfp4: None,
        }
    }

    /// The shape as a torch view of it would see it (for building views).
    pub fn view(&self) -> View {
        View::contiguous(&self.shape)
    }
}

/// `prepare_tensors`: "use the first number-like part of the tensor name as the block id".
pub fn block_id(name: &str) -> Option<usize> {
    name.split('.')
        .find(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
        .and_then(|p| p.parse().ok())
}

/// Part of an output tensor: a view of one stored tensor and an element-wise operation.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Piece {
    /// Position in the store's tensor list.
    pub source: usize,
    pub view: View,
    pub op: ValueOp,
    /// The source's block scales: its values are dequantized before the view and the op.
    pub scale: Option<BlockScale>,
    /// For a checkpoint's MXFP4 weights (gpt-oss): the source holds the 4-bit codes (16 bytes
    /// per block of 32 values, two codes a byte) and this the E8M0 scales (one byte a block);
    /// the piece is ggml MXFP4 blocks repacked from both (`repack_mxfp4`), no values change.
    pub mxfp4: Option<Mxfp4Scales>,
}

/// The scale bytes of MXFP4 blocks: a view of the scale tensor with one element per block, in
/// the same order as the blocks of the piece's view.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Mxfp4Scales {
    /// Position of the scale tensor in the store's tensor list.
    pub source: usize,
    pub view: View,
}

impl Piece {
    /// The same piece with `op` applied to its values.
    pub fn with_op(mut self, op: ValueOp) -> Piece {
        self.op = op;
        self
    }
}

/// Where an output tensor's values come from.
#[derive(Clone, Debug, PartialEq)]
pub enum Data {
    /// Pieces written one after another (one, or one per stacked expert).
    Pieces(Vec<Piece>),
    /// Values the converter computes (`generate_extra_tensors`: rope factors).
    Generated(Vec<f32>),
}

/// One tensor the converter writes, before its type is chosen.
#[derive(Clone, Debug, PartialEq)]
pub struct OutTensor {
    /// GGUF name.
    pub name: String,
    pub kind: TensorKind,
    /// Shape, outermost first (torch order; ggml order is the reverse).
    pub shape: Vec<u64>,
    pub data: Data,
}

/// How a family names its per-expert tensors and stacks them (the `_experts` buffers of
/// `modify_tensors`): when a layer has all `n_experts × projections` tensors, one stacked
/// tensor per projection is made, in `projections` order, and mapped by its merged name.
#[derive(Debug)]
pub struct ExpertLayout {
    /// An expert tensor's source name; `{bid}`, `{xid}` (expert) and `{w}` (projection).
    pub expert: &'static str,
    /// The stacked tensor's name handed to `map_tensor_name`; `{bid}` and `{w}`.
    pub merged: &'static str,
    /// Projection names in the order the converter stacks them.
    pub projections: &'static [&'static str],
}

/// Collects the output tensors of `modify_tensors` calls, in order.
pub struct TensorSink<'a> {
    names: &'a NameMap,
    out: Vec<OutTensor>,
    /// Expert tensors waiting for their layer to complete: block → source name → tensor.
    experts: BTreeMap<usize, HashMap<String, SourceTensor>>,
}

impl<'a> TensorSink<'a> {
    pub fn new(names: &'a NameMap) -> TensorSink<'a> {
        TensorSink {
            names,
            out: Vec::new(),
            experts: BTreeMap::new(),
        }
    }

    /// The architecture's name map.
    pub fn names(&self) -> &NameMap {
        self.names
    }

    /// Adds a tensor whose GGUF name and kind are known.
    pub fn push(&mut self, t: OutTensor) {
        self.out.push(t);
    }

    /// `TextModel.modify_tensors` for one tensor: `name` mapped to its GGUF name (an error if it
    /// has none), with `shape` (outermost first) and one piece.
    pub fn map(&mut self, name: &str, shape: Vec<u64>, piece: Piece) -> Result<()> {
        let m = self.names.map(name)?;
        let n: u64 = shape.iter().product();
        if n != piece.view.len() {
            bail!(
                "tensor {name}: shape {shape:?} does not hold the {} values of its view",
                piece.view.len()
            );
        }
        self.out.push(OutTensor {
            name: m.name,
            kind: m.kind,
            shape,
            data: Data::Pieces(vec![piece]),
        });
        Ok(())
    }

    /// `TextModel.modify_tensors` of a whole source tensor under its own name.
    pub fn map_whole(&mut self, t: &SourceTensor) -> Result<()> {
        self.map(&t.name, t.shape.clone(), t.whole())
    }

    /// Buffers an expert tensor of `layout`; once its layer has every tensor, stacks them.
    pub fn stack_expert(
        &mut self,
        layout: &ExpertLayout,
        n_experts: usize,
        t: &SourceTensor,
    ) -> Result<()> {
        let Some(bid) = t.bid else {
            bail!("expert tensor {} has no block number", t.name);
        };
        let layer = self.experts.entry(bid).or_default();
        layer.insert(t.name.clone(), t.clone());
        if layer.len() < n_experts * layout.projections.len() {
            return Ok(());
        }
        let b = bid.to_string();
        for w in layout.projections {
            let mut pieces = Vec::with_capacity(n_experts);
            let mut shape: Option<Vec<u64>> = None;
            for xid in 0..n_experts {
                let name = layout
                    .expert
                    .replace("{bid}", &b)
                    .replace("{xid}", &xid.to_string())
                    .replace("{w}", w);
                let layer = self.experts.entry(bid).or_default();
                let e = layer.remove(&name).with_context(|| {
                    format!("layer {bid}: expert tensor {name} is missing (the model has {n_experts} experts)")
                })?;
                match &shape {
                    Some(s) if *s != e.shape => bail!(
                        "layer {bid}: experts of {w} have different shapes ({s:?} vs {:?} of {name})",
                        e.shape
                    ),
                    Some(_) => {}
                    None => shape = Some(e.shape.clone()),
                }
                pieces.push(e.whole());
            }
            let mut stacked = vec![n_experts as u64];
            stacked.extend(shape.unwrap_or_default());
            let merged = layout.merged.replace("{bid}", &b).replace("{w}", w);
            let m = self.names.map(&merged)?;
            self.out.push(OutTensor {
                name: m.name,
                kind: m.kind,
                shape: stacked,
                data: Data::Pieces(pieces),
            });
        }
        if self.experts.get(&bid).is_some_and(HashMap::is_empty) {
            self.experts.remove(&bid);
        }
        Ok(())
    }

    /// The tensors, in the order they were produced; an error if experts were left over
    /// (`prepare_tensors`' "Unprocessed experts").
    pub fn finish(self) -> Result<Vec<OutTensor>> {
        if let Some((bid, layer)) = self.experts.iter().next() {
            let mut names: Vec<&String> = layer.keys().collect();
            names.sort();
            bail!(
                "unprocessed expert tensors in layer {bid} (an expert count or name the model does not follow): {}",
                names
                    .iter()
                    .take(4)
                    .map(|s| s.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        }
        Ok(self.out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn block_ids_are_the_first_number_like_part() {
        assert_eq!(
            block_id("model.layers.12.mlp.experts.3.w1.weight"),
            Some(12)
        );
        assert_eq!(block_id("lm_head.weight"), None);
        assert_eq!(block_id("layers.x1.y"), None);
    }

    #[test]
    fn experts_stack_when_the_layer_completes() {
        let names = NameMap::new("qwen3moe", 2).unwrap();
        let layout = ExpertLayout {
            expert: "model.layers.{bid}.mlp.experts.{xid}.{w}.weight",
            merged: "model.layers.{bid}.mlp.experts.{w}.weight",
            projections: &["down_proj", "gate_proj", "up_proj"],
        };
        let mut sink = TensorSink::new(&names);
        let mut i = 0;
        for xid in [1, 0] {
            for w in ["up_proj", "gate_proj", "down_proj"] {
                let t = SourceTensor::new(
                    i,
                    format!("model.layers.1.mlp.experts.{xid}.{w}.weight"),
                    Dtype::BF16,
                    vec![4, 8],
                );
                sink.stack_expert(&layout, 2, &t).unwrap();
                i += 1;
            }
        }
        let out = sink.finish().unwrap();
        let got: Vec<&str> = out.iter().map(|t| t.name.as_str()).collect();
        assert_eq!(
            got,
            [
                "blk.1.ffn_down_exps.weight",
                "blk.1.ffn_gate_exps.weight",
                "blk.1.ffn_up_exps.weight"
            ]
        );
        assert_eq!(out[0].shape, [2, 4, 8]);
        let Data::Pieces(p) = &out[0].data else {
            panic!()
        };
        // expert 0's down_proj was the 6th tensor seen (index 5), expert 1's the 3rd
        assert_eq!(p.iter().map(|p| p.source).collect::<Vec<_>>(), [5, 2]);

        let mut sink = TensorSink::new(&names);
        let t = SourceTensor::new(
            0,
            "model.layers.0.mlp.experts.0.up_proj.weight".into(),
            Dtype::BF16,
            vec![4, 8],
        );
        sink.stack_expert(&layout, 2, &t).unwrap();
        let e = sink.finish().unwrap_err().to_string();
        assert!(e.contains("unprocessed expert tensors in layer 0"), "{e}");
    }
}
