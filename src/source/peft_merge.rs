//! Merging a LoRA adapter into its base weights, with PEFT's `merge_and_unload` arithmetic.
//!
//! For an adapted weight W (out × in, stored as F32, F16 or BF16) with `lora_A` (r × in) and
//! `lora_B` (out × r):
//!
//! ```text
//! W' = round_to_dtype( f32(W) + f32( f32(B @ A) · f32(scaling) ) )
//! scaling = lora_alpha / r            (lora_alpha / sqrt(r) with use_rslora)
//! ```
//!
//! which is what PEFT 0.17 computes when the adapter is loaded the usual way
//! (`PeftModel.from_pretrained`, whose default `autocast_adapter_dtype=True` keeps the adapter
//! weights in float32 whatever dtype they were saved in): `get_delta_weight` is
//! `(lora_B.weight @ lora_A.weight) * scaling` in float32, and `merge` adds it in place to the
//! base weight, which torch does in float32 and rounds to the weight's dtype (round to nearest,
//! ties to even). The product `B @ A` sums over the rank in order 0..r with a fused multiply-add
//! per term (what the CPU's float32 matrix product does for these shapes; the test data under
//! `testdata/lora/` made by PEFT itself checks every byte).

use anyhow::{bail, Result};

use super::peft::{LoraPair, PeftAdapter};
use super::Dtype;
use crate::quant::rounding::{
    bf16_bits_to_f32, f16_bits_to_f32, f32_to_bf16_bits, f32_to_f16_bits,
};

/// PEFT's `scaling` for one adapted weight, as the float32 factor torch multiplies by.
pub fn scaling(adapter: &PeftAdapter, pair: &LoraPair) -> Result<f32> {
    let r = pair.rank() as f64;
    if let Some(p) = adapter
        .config
        .get("alpha_pattern")
        .and_then(|v| v.as_object())
    {
        if !p.is_empty() {
            bail!("adapter_config.json: alpha_pattern (a lora_alpha per module) is not supported");
        }
    }
    // Python: lora_alpha / r (or / math.sqrt(r)) in double precision, then float32 in torch's mul
    let s = if adapter.use_rslora {
        adapter.alpha / r.sqrt()
    } else {
        adapter.alpha / r
    };
    Ok(s as f32)
}

/// The merged weight's bytes: `base` (the stored bytes of W, `dtype`, out × in row-major) plus
/// the adapter's delta, rounded back to `dtype`.
pub fn merge(
    base: &[u8],
    dtype: Dtype,
    a: &[f32],
    b: &[f32],
    shape: [u64; 2],
    rank: u64,
    scaling: f32,
) -> Result<Vec<u8>> {
    let (rows, cols, r) = (shape[0] as usize, shape[1] as usize, rank as usize);
    if a.len() != r * cols || b.len() != rows * r {
        bail!("the LoRA weights do not fit a {rows} × {cols} weight of rank {r}");
    }
    let width = match dtype {
        Dtype::F32 => 4,
        Dtype::F16 | Dtype::BF16 => 2,
        other => bail!(
            "a {} weight cannot be merged (F32, F16 or BF16 only)",
            other.name()
        ),
    };
    if base.len() != rows * cols * width {
        bail!(
            "the base weight holds {} bytes, not {rows} × {cols} {}",
            base.len(),
            dtype.name()
        );
    }
    let mut out = vec![0u8; base.len()];
    for i in 0..rows {
        let brow = &b[i * r..(i + 1) * r];
        for j in 0..cols {
            let mut acc = 0f32;
            for (k, bk) in brow.iter().enumerate() {
                acc = bk.mul_add(a[k * cols + j], acc);
            }
            let delta = acc * scaling;
            let at = (i * cols + j) * width;
            let src = &base[at..at + width];
            let dst = &mut out[at..at + width];
            match dtype {
                Dtype::F32 => {
                    let w = f32::from_le_bytes([src[0], src[1], src[2], src[3]]);
                    dst.copy_from_slice(&(w + delta).to_le_bytes());
                }
                Dtype::F16 => {
                    let w = f16_bits_to_f32(u16::from_le_bytes([src[0], src[1]]));
                    dst.copy_from_slice(&f32_to_f16_bits(w + delta).to_le_bytes());
                }
                _ => {
                    let w = bf16_bits_to_f32(u16::from_le_bytes([src[0], src[1]]));
                    dst.copy_from_slice(&f32_to_bf16_bits(w + delta).to_le_bytes());
                }
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_delta_is_scaled_and_rounded_to_the_weight_dtype() {
        // W = [[1, 2]], B = [[2]], A = [[0.5, 0.25]], scaling 2: W' = [[3, 3]]
        let w: Vec<u8> = [1.0f32, 2.0].iter().flat_map(|v| v.to_le_bytes()).collect();
        let m = merge(&w, Dtype::F32, &[0.5, 0.25], &[2.0], [1, 2], 1, 2.0).unwrap();
        let got: Vec<f32> = m
            .chunks(4)
            .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
            .collect();
        assert_eq!(got, [3.0, 3.0]);
        // bf16: 1 + 2^-9 rounds back to 1 (ties and below go to even)
        let w = f32_to_bf16_bits(1.0).to_le_bytes();
        let m = merge(&w, Dtype::BF16, &[1.0], &[1.0], [1, 1], 1, 1.0 / 512.0).unwrap();
        assert_eq!(bf16_bits_to_f32(u16::from_le_bytes([m[0], m[1]])), 1.0);
        assert!(merge(&w, Dtype::BF16, &[1.0, 2.0], &[1.0], [1, 1], 1, 1.0).is_err());
    }
}
