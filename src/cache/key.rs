//! Keys of planned tensors: what determines their values and their bytes.
//!
//! A [`SourceKey`] names the f32 values a tensor is made from (stored pieces, views, ops, block
//! scales, shape): outputs with the same one share a decode. A [`ResultKey`] adds everything
//! else that decides the output bytes (ggml type, the converter's intermediate rounding, the
//! importance weights, the quantizer version): equal keys mean equal bytes, so they name cache
//! entries and let several profiles of one export share one quantization. Tensor names and
//! offsets are left out on purpose: they do not change the bytes.

use crate::plan::{PlannedTensor, SourcePiece, TensorSource};

/// Changes whenever any quantizer or conversion could write different bytes for the same
/// inputs; old cache entries then simply stop matching. The crate version is part of the key
/// too, so a new release never trusts an older one's entries.
pub const QUANTIZER_VERSION: u32 = 1;

/// BLAKE3 of a tensor's value-determining inputs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct SourceKey(pub [u8; 32]);

/// BLAKE3 of everything that determines a tensor's output bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ResultKey(pub [u8; 32]);

impl ResultKey {
    pub fn hex(&self) -> String {
        self.0.iter().map(|b| format!("{b:02x}")).collect()
    }
}

/// Length-prefixed fields, so that no two different inputs hash the same byte stream.
struct Fields(blake3::Hasher);

impl Fields {
    fn new(domain: &str) -> Self {
        let mut f = Fields(blake3::Hasher::new());
        f.bytes(domain.as_bytes());
        f.bytes(env!("CARGO_PKG_VERSION").as_bytes());
        f.u64(QUANTIZER_VERSION as u64);
        f
    }
    fn bytes(&mut self, b: &[u8]) {
        self.0.update(&(b.len() as u64).to_le_bytes());
        self.0.update(b);
    }
    fn str(&mut self, s: &str) {
        self.bytes(s.as_bytes());
    }
    fn u64(&mut self, v: u64) {
        self.0.update(&v.to_le_bytes());
    }
    fn u64s(&mut self, v: &[u64]) {
        self.u64(v.len() as u64);
        v.iter().for_each(|&x| self.u64(x));
    }
    fn f32s(&mut self, v: &[f32]) {
        self.u64(v.len() as u64);
        for chunk in v.chunks(4096) {
            let b: Vec<u8> = chunk.iter().flat_map(|x| x.to_le_bytes()).collect();
            self.0.update(&b);
        }
    }
    fn piece(&mut self, p: &SourcePiece) {
        // The content hash names the stored bytes; dtype and shape say how they are read.
        self.str(&p.entry.hash);
        self.str(p.entry.dtype.name());
        self.u64s(&p.entry.shape);
        self.str(&format!("{:?}", p.view));
        self.str(&format!("{:?}", p.op));
        match &p.scale {
            Some(sc) => {
                self.str("scale");
                self.str(&sc.entry.hash);
                self.str(sc.entry.dtype.name());
                self.u64s(&sc.entry.shape);
                self.u64s(&sc.block);
            }
            None => self.str("no scale"),
        }
        match &p.mxfp4 {
            Some(m) => {
                self.str("mxfp4");
                self.str(&m.entry.hash);
                self.u64s(&m.entry.shape);
                self.str(&format!("{:?}", m.view));
            }
            None => self.str("no mxfp4"),
        }
    }
    fn finish(self) -> [u8; 32] {
        *self.0.finalize().as_bytes()
    }
}

/// The key of the values `t` is made from.
pub fn source_key(t: &PlannedTensor) -> SourceKey {
    let mut f = Fields::new("gmat source values");
    f.u64s(&t.dims);
    match &t.source {
        TensorSource::Generated(v) => {
            f.str("generated");
            f.f32s(v);
        }
        TensorSource::Stored(pieces) => {
            f.str("stored");
            f.u64(pieces.len() as u64);
            pieces.iter().for_each(|p| f.piece(p));
        }
    }
    SourceKey(f.finish())
}

/// The key of `t`'s output bytes (`source` is [`source_key`] of `t`).
pub fn result_key(source: SourceKey, t: &PlannedTensor) -> ResultKey {
    let mut f = Fields::new("gmat quantized tensor");
    f.bytes(&source.0);
    f.str(t.ggml_type.name());
    f.str(t.intermediate.name());
    match &t.imatrix {
        Some(w) => {
            f.str("imatrix");
            f.f32s(w);
        }
        None => f.str("no imatrix"),
    }
    ResultKey(f.finish())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::arch::transform::ValueOp;
    use crate::arch::transform::View;
    use crate::arch::TensorKind;
    use crate::gguf::GgmlType;
    use crate::plan::SourcePiece;
    use crate::source::Dtype;
    use crate::store::TensorEntry;

    /// A 256 x 2 BF16 weight planned as Q4_K.
    pub(crate) fn tensor() -> PlannedTensor {
        let entry = TensorEntry {
            name: "model.layers.0.mlp.up_proj.weight".into(),
            uuid: uuid::Uuid::nil(),
            dtype: Dtype::BF16,
            shape: vec![2, 256],
            encoding: crate::store::Encoding::Raw,
            raw_bytes: 1024,
            stored_bytes: 1024,
            hash: "blake3:11".into(),
            base: None,
        };
        PlannedTensor {
            name: "blk.0.ffn_up.weight".into(),
            kind: TensorKind::FfnUp,
            dims: vec![256, 2],
            ggml_type: GgmlType::Q4_K,
            intermediate: GgmlType::BF16,
            source: TensorSource::Stored(vec![SourcePiece {
                view: View::contiguous(&entry.shape),
                entry,
                op: ValueOp::None,
                scale: None,
                mxfp4: None,
            }]),
            offset: 0,
            n_bytes: 288,
            imatrix: None,
        }
    }

    fn key(t: &PlannedTensor) -> ResultKey {
        result_key(source_key(t), t)
    }

    #[test]
    fn every_input_that_decides_the_bytes_changes_the_key() {
        let base = tensor();
        let k = key(&base);
        assert_eq!(k, key(&base.clone()), "keys are deterministic");

        let mut renamed = base.clone();
        renamed.name = "another.weight".into();
        renamed.offset = 4096;
        assert_eq!(
            k,
            key(&renamed),
            "the name and offset do not change the bytes"
        );

        let mut changes: Vec<(&str, PlannedTensor)> = Vec::new();
        let mut t = base.clone();
        t.ggml_type = GgmlType::Q6_K;
        changes.push(("type", t));
        let mut t = base.clone();
        t.intermediate = GgmlType::F16;
        changes.push(("intermediate", t));
        let mut t = base.clone();
        t.imatrix = Some(vec![1.0; 256]);
        changes.push(("imatrix", t.clone()));
        let mut t2 = t.clone();
        t2.imatrix.as_mut().unwrap()[7] = 2.0;
        changes.push(("imatrix entry", t2));
        let mut t = base.clone();
        if let TensorSource::Stored(p) = &mut t.source {
            p[0].entry.hash = "blake3:00".into();
        }
        changes.push(("content hash", t));
        let mut t = base.clone();
        if let TensorSource::Stored(p) = &mut t.source {
            p[0].op = ValueOp::AddOne;
        }
        changes.push(("op", t));
        let mut t = base.clone();
        if let TensorSource::Stored(p) = &mut t.source {
            p[0].view.offset += 1;
        }
        changes.push(("view", t));
        let mut t = base.clone();
        t.dims = vec![512, 1];
        changes.push(("shape", t));
        for (what, t) in changes {
            assert_ne!(k, key(&t), "changing the {what} must change the key");
        }
    }

    #[test]
    fn the_source_key_ignores_the_type() {
        let a = tensor();
        let mut b = a.clone();
        b.ggml_type = GgmlType::Q8_0;
        assert_eq!(source_key(&a), source_key(&b));
        assert_ne!(key(&a), key(&b));
    }
}
