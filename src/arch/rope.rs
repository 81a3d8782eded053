//! The `rope_freqs` tensor the converter generates for Llama-3 style RoPE scaling
//! (`LlamaModel.generate_extra_tensors` in conversion/llama.py).

use anyhow::Result;

use super::hparams::Hparams;

/// Per-dimension RoPE frequency factors, or `None` when the model does not use llama3 scaling.
///
/// The converter computes these in float32 torch arithmetic; the steps below repeat that
/// arithmetic in f32 (torch's `scalar / tensor` is `reciprocal(tensor) * scalar`), which is what
/// makes the factors in the smooth band bit-identical.
pub fn llama3_rope_factors(hp: &Hparams) -> Result<Option<Vec<f32>>> {
    let p = hp.rope_parameters();
    let is_llama3 = p
        .get("rope_type")
        .and_then(|v| v.as_str())
        .is_some_and(|t| t.eq_ignore_ascii_case("llama3"));
    if !is_llama3 {
        return Ok(None);
    }
    let num = |k: &str, d: f64| p.get(k).and_then(|v| v.as_f64()).unwrap_or(d);
    let base = num("rope_theta", 10000.0) as f32;
    let dim = match hp.u64(&["head_dim"])? {
        Some(d) => d,
        None => hp.req_u64(&["hidden_size"])? / hp.req_u64(&["num_attention_heads"])?,
    };
    let factor = num("factor", 8.0) as f32;
    let low = num("low_freq_factor", 1.0);
    let high = num("high_freq_factor", 4.0);
    let old_ctx = num("original_max_position_embeddings", 8192.0);
    let low_wavelen = old_ctx / low;
    let high_wavelen = old_ctx / high;
    let two_pi = std::f64::consts::PI * 2.0;
    let mut out = Vec::new();
    for i in (0..dim).step_by(2) {
        let exponent = i as f32 / dim as f32;
        let freq = 1.0f32 / base.powf(exponent);
        let wavelen = (1.0f32 / freq) * two_pi as f32;
        let w = wavelen as f64;
        out.push(if w < high_wavelen {
            1.0
        } else if w > low_wavelen {
            factor
        } else {
            let smooth = ((1.0f32 / wavelen) * old_ctx as f32 - low as f32) / (high - low) as f32;
            1.0f32 / ((1.0f32 - smooth) / factor + smooth)
        });
    }
    Ok(Some(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_the_converter_for_llama3_scaling() {
        // llama-bpe-tiny's config; expected bits read from the converter's GGUF
        // (../shared/reference/models/llama-bpe-tiny/expected, tensor rope_freqs.weight).
        let cfg = serde_json::json!({
            "head_dim": 16, "hidden_size": 64, "num_attention_heads": 4, "rope_theta": 500000.0,
            "rope_scaling": {"factor": 8.0, "high_freq_factor": 4.0, "low_freq_factor": 1.0,
                             "original_max_position_embeddings": 8192, "rope_type": "llama3"}
        });
        let f = llama3_rope_factors(&Hparams::new(&cfg).unwrap())
            .unwrap()
            .unwrap();
        let bits: Vec<u32> = f.iter().map(|v| v.to_bits()).collect();
        assert_eq!(
            bits,
            [
                1065353216, 1065353216, 1065353216, 1065353216, 1076654894, 1090519040, 1090519040,
                1090519040
            ]
        );
        assert!(
            llama3_rope_factors(&Hparams::new(&serde_json::json!({})).unwrap())
                .unwrap()
                .is_none()
        );
    }
}
