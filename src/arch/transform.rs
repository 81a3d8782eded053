//! How an output tensor is made from stored tensors, as data the plan records and the pipeline
//! executes while streaming.
//!
//! Every tensor rearrangement the converter does with torch (`reshape`, `view`, `swapaxes`,
//! `transpose`, slicing, `split`, `chunk`) reads the source elements in some order without
//! changing them. [`View`] describes that order the way numpy describes a strided view: an
//! offset, a shape and a stride per axis (in elements). The elements of the output are the
//! view's elements in row-major order, so a torch `reshape` after a transpose (which copies in
//! row-major order) is the same view under another output shape. Element values change only
//! through a [`ValueOp`] (Gemma's norm + 1). Stacking experts is several pieces, one view each,
//! written one after the other.

use anyhow::{bail, Result};

/// A strided view of a stored tensor's elements (see the module documentation).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct View {
    /// Index of the first element, in elements of the source tensor.
    pub offset: u64,
    /// Extent of each axis, outermost first.
    pub dims: Vec<u64>,
    /// Source elements between neighbours along each axis.
    pub strides: Vec<u64>,
}

impl View {
    /// All elements of a tensor of `shape`, in order.
    pub fn contiguous(shape: &[u64]) -> View {
        let mut strides = vec![1u64; shape.len()];
        for i in (0..shape.len().saturating_sub(1)).rev() {
            strides[i] = strides[i + 1] * shape[i + 1];
        }
        View {
            offset: 0,
            dims: shape.to_vec(),
            strides,
        }
    }

    /// Number of elements.
    pub fn len(&self) -> u64 {
        self.dims.iter().product()
    }

    /// Whether the view has no elements.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether the view reads `shape`'s elements exactly in storage order.
    pub fn is_whole(&self, shape: &[u64]) -> bool {
        let n: u64 = shape.iter().product();
        self.offset == 0 && self.len() == n && self.runs_are_contiguous_to(n)
    }

    fn runs_are_contiguous_to(&self, n: u64) -> bool {
        // Contiguous iff, dropping axes of extent 1, each stride is the product of the inner
        // extents.
        let mut expect = 1u64;
        for (d, s) in self.dims.iter().zip(&self.strides).rev() {
            if *d == 1 {
                continue;
            }
            if *s != expect {
                return false;
            }
            expect *= d;
        }
        expect == n || n == 0
    }

    /// `reshape` of a contiguous tensor (torch `view`/`reshape` without a copy): the same
    /// elements in the same order, split into other axes. Views that are not contiguous keep
    /// their element order and simply take another output shape at the tensor level, so this
    /// is only needed before a further `swapaxes`/slice.
    pub fn reshape(&self, shape: &[u64]) -> Result<View> {
        let n: u64 = shape.iter().product();
        if n != self.len() {
            bail!("cannot reshape {:?} into {shape:?}", self.dims);
        }
        if !self.runs_are_contiguous_to(self.len()) {
            bail!(
                "cannot split the axes of a non-contiguous view {:?}",
                self.dims
            );
        }
        let mut v = View::contiguous(shape);
        v.offset = self.offset;
        Ok(v)
    }

    /// `swapaxes(a, b)` / `transpose(a, b)`.
    pub fn swap_axes(mut self, a: usize, b: usize) -> View {
        self.dims.swap(a, b);
        self.strides.swap(a, b);
        self
    }

    /// `narrow(axis, start, len)`: elements `start..start+len` along `axis` (`x[..., a:b, ...]`).
    pub fn narrow(mut self, axis: usize, start: u64, len: u64) -> Result<View> {
        if axis >= self.dims.len() || start + len > self.dims[axis] {
            bail!(
                "slice {start}..{} of axis {axis} is outside {:?}",
                start + len,
                self.dims
            );
        }
        self.offset += start * self.strides[axis];
        self.dims[axis] = len;
        Ok(self)
    }

    /// Source element index of the view's `i`-th element (row-major over `dims`).
    pub fn source_index(&self, mut i: u64) -> u64 {
        let mut at = self.offset;
        for (d, s) in self.dims.iter().zip(&self.strides).rev() {
            at += (i % d) * s;
            i /= d;
        }
        at
    }

    /// A superset of the source elements `[lo, hi)` that view elements `a..b` read (`a < b`):
    /// exact for contiguous views, whole blocks of the varying axis otherwise.
    pub fn source_span(&self, a: u64, b: u64) -> (u64, u64) {
        debug_assert!(a < b && b <= self.len());
        let ia = self.multi_index(a);
        let ib = self.multi_index(b - 1);
        let Some(k) = (0..self.dims.len()).find(|&k| ia[k] != ib[k]) else {
            let at = self.source_index(a);
            return (at, at + 1);
        };
        let fixed: u64 = self.offset + (0..k).map(|j| ia[j] * self.strides[j]).sum::<u64>();
        let inner: u64 = (k + 1..self.dims.len())
            .map(|j| (self.dims[j] - 1) * self.strides[j])
            .sum();
        let lo = fixed + ia[k] * self.strides[k];
        let hi = fixed + ib[k] * self.strides[k] + inner + 1;
        if self.runs_are_contiguous_to(self.len()) {
            (self.source_index(a), self.source_index(b - 1) + 1)
        } else {
            (lo, hi)
        }
    }

    fn multi_index(&self, mut i: u64) -> Vec<u64> {
        let mut idx = vec![0; self.dims.len()];
        for k in (0..self.dims.len()).rev() {
            idx[k] = i % self.dims[k];
            i /= self.dims[k];
        }
        idx
    }

    /// Calls `f(source_start, len)` for each run of consecutive source elements that view
    /// elements `a..b` read, in order.
    pub fn for_each_run(&self, a: u64, b: u64, mut f: impl FnMut(u64, u64)) {
        if a >= b {
            return;
        }
        let Some(last) = self.dims.len().checked_sub(1) else {
            f(self.offset, 1);
            return;
        };
        let (inner, stride) = (self.dims[last], self.strides[last]);
        let run_ok = stride == 1;
        let mut i = a;
        while i < b {
            let pos = i % inner;
            let n = if run_ok { (inner - pos).min(b - i) } else { 1 };
            f(self.source_index(i), n);
            i += n;
        }
    }
}

/// An element-wise change of values, done in the arithmetic the converter uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ValueOp {
    None,
    /// `data_torch + 1` (Gemma's RMSNorm weights): in f32 for f32 and bf16 sources (the
    /// converter widens bf16 to f32 first), in f16 for f16 sources (torch rounds the sum).
    AddOne,
}

impl ValueOp {
    /// Applies the operation to values converted from a source of dtype `f16_source`.
    pub fn apply(self, values: &mut [f32], f16_source: bool) {
        match self {
            ValueOp::None => {}
            ValueOp::AddOne => {
                for v in values {
                    let s = *v + 1.0;
                    *v = if f16_source {
                        half::f16::from_f32(s).to_f32()
                    } else {
                        s
                    };
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn elements(v: &View) -> Vec<u64> {
        (0..v.len()).map(|i| v.source_index(i)).collect()
    }

    #[test]
    fn llama_permute_is_reshape_swapaxes() {
        // w.reshape(n_head, 2, rows / n_head / 2, cols).swapaxes(1, 2) on 8 rows of 3, 2 heads
        let (rows, cols, n_head) = (8u64, 3u64, 2u64);
        let v = View::contiguous(&[rows, cols])
            .reshape(&[n_head, 2, rows / n_head / 2, cols])
            .unwrap()
            .swap_axes(1, 2);
        let got: Vec<u64> = elements(&v)
            .chunks(cols as usize)
            .map(|r| r[0] / cols)
            .collect();
        assert_eq!(got, [0, 2, 1, 3, 4, 6, 5, 7]);
        assert!(!v.is_whole(&[rows, cols]));
        assert!(View::contiguous(&[rows, cols]).is_whole(&[rows, cols]));
    }

    #[test]
    fn transposed_slice_reads_columns() {
        // kv_b.view(2 heads, 3 + 1 rows, 2 cols)[:, :3, :].transpose(1, 2)
        let v = View::contiguous(&[8, 2])
            .reshape(&[2, 4, 2])
            .unwrap()
            .narrow(1, 0, 3)
            .unwrap()
            .swap_axes(1, 2);
        assert_eq!(v.dims, [2, 2, 3]);
        assert_eq!(elements(&v), [0, 2, 4, 1, 3, 5, 8, 10, 12, 9, 11, 13]);
        // every element of a window lies in its span
        for a in 0..v.len() {
            for b in a + 1..=v.len() {
                let (lo, hi) = v.source_span(a, b);
                assert!((a..b).all(|i| (lo..hi).contains(&v.source_index(i))));
            }
        }
        let mut runs = Vec::new();
        v.for_each_run(1, 5, |s, n| runs.push((s, n)));
        assert_eq!(runs, [(2, 1), (4, 1), (1, 1), (3, 1)]);
    }

    #[test]
    fn contiguous_runs_and_spans_are_exact() {
        let v = View::contiguous(&[4, 5]).narrow(0, 1, 2).unwrap();
        assert_eq!(v.source_span(0, 10), (5, 15));
        let mut runs = Vec::new();
        v.for_each_run(3, 8, |s, n| runs.push((s, n)));
        assert_eq!(runs, [(8, 2), (10, 3)]);
    }

    #[test]
    fn add_one_rounds_like_the_source_dtype() {
        let x = 1e-4f32;
        let mut f32s = [x];
        ValueOp::AddOne.apply(&mut f32s, false);
        assert_eq!(f32s[0], 1.0001);
        let mut f16s = [half::f16::from_f32(x).to_f32()];
        ValueOp::AddOne.apply(&mut f16s, true);
        assert_eq!(f16s[0], 1.0); // 1.0001 is not an f16
    }
}
