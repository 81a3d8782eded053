//! TEMPORARY placeholder until the tokenizer module lands.
pub fn tokenizer_metadata(
    _dir: &std::path::Path,
    _arch: &str,
    _hp: &serde_json::Value,
) -> anyhow::Result<Vec<(String, crate::gguf::Value)>> {
    Ok(Vec::new())
}
