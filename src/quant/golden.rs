//! Test support: golden vectors made by the real ggml (see `tools/make_quant_golden.py`).

use super::simd8::{with_path, Path};
use super::{codec, GgmlType};
use std::path::PathBuf;

/// One golden case: input rows, optional importance weights, ggml's bytes and to_float.
pub struct Case {
    pub name: String,
    pub n_rows: usize,
    pub n_per_row: usize,
    pub input: Vec<f32>,
    pub imatrix: Option<Vec<f32>>,
    pub bytes: Vec<u8>,
    pub dequant: Vec<f32>,
}

fn f32s(buf: &[u8], pos: &mut usize, n: usize) -> Vec<f32> {
    let v = buf[*pos..*pos + 4 * n]
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    *pos += 4 * n;
    v
}

fn u32le(buf: &[u8], pos: &mut usize) -> usize {
    let v = u32::from_le_bytes(buf[*pos..*pos + 4].try_into().unwrap()) as usize;
    *pos += 4;
    v
}

/// Loads `testdata/quant/<TYPE>.golden`.
pub fn load(t: GgmlType) -> Vec<Case> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join(format!("testdata/quant/{}.golden", t.name()));
    let buf = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut pos = 0;
    let mut cases = Vec::new();
    while pos < buf.len() {
        let n = u32le(&buf, &mut pos);
        let name = String::from_utf8(buf[pos..pos + n].to_vec()).unwrap();
        pos += n;
        let n_rows = u32le(&buf, &mut pos);
        let n_per_row = u32le(&buf, &mut pos);
        let has_imatrix = buf[pos] != 0;
        pos += 1;
        let input = f32s(&buf, &mut pos, n_rows * n_per_row);
        let imatrix = has_imatrix.then(|| f32s(&buf, &mut pos, n_per_row));
        let nb = u32le(&buf, &mut pos);
        let bytes = buf[pos..pos + nb].to_vec();
        pos += nb;
        let dequant = f32s(&buf, &mut pos, n_rows * n_per_row);
        cases.push(Case {
            name,
            n_rows,
            n_per_row,
            input,
            imatrix,
            bytes,
            dequant,
        });
    }
    assert!(!cases.is_empty(), "{} has no cases", path.display());
    cases
}

/// Checks gmat's codec for `t` against every golden case: quantized bytes, and to_float of
/// ggml's bytes, bit for bit; the quantizer runs once on every SIMD path this CPU has
/// (`simd8::Path`: scalar, SSE2, AVX2), each of which must give ggml's bytes.
pub fn check(t: GgmlType) {
    let paths = Path::available();
    assert!(paths.contains(&Path::Scalar));
    for p in paths {
        with_path(p, || check_path(t, p));
    }
}

fn check_path(t: GgmlType, p: Path) {
    let c = codec(t).unwrap_or_else(|| panic!("no codec for {t}"));
    for case in load(t) {
        let row_bytes = t.row_bytes(case.n_per_row as u64).unwrap() as usize;
        let mut out = vec![0u8; row_bytes * case.n_rows];
        for r in 0..case.n_rows {
            let src = &case.input[r * case.n_per_row..(r + 1) * case.n_per_row];
            c.quantize_row(
                src,
                case.imatrix.as_deref(),
                &mut out[r * row_bytes..(r + 1) * row_bytes],
            );
        }
        if out != case.bytes {
            let first = out
                .iter()
                .zip(&case.bytes)
                .position(|(a, b)| a != b)
                .unwrap_or(0);
            panic!(
                "{t} case '{}' on SIMD path {}: bytes differ from ggml, first at byte {first} \
                 (row {}, block {})",
                case.name,
                p.name(),
                first / row_bytes,
                (first % row_bytes) / t.type_size()
            );
        }
        let mut back = vec![0f32; case.input.len()];
        for r in 0..case.n_rows {
            c.dequantize_row(
                &case.bytes[r * row_bytes..(r + 1) * row_bytes],
                &mut back[r * case.n_per_row..(r + 1) * case.n_per_row],
            );
        }
        for (i, (a, b)) in back.iter().zip(&case.dequant).enumerate() {
            assert!(
                a.to_bits() == b.to_bits(),
                "{t} case '{}': to_float differs at element {i}: {a} vs ggml {b}",
                case.name
            );
        }
    }
}

/// One test per type, so a failure names the type.
macro_rules! golden_tests {
    ($($test:ident => $t:ident),* $(,)?) => {
        $(
            #[test]
            fn $test() {
                check(GgmlType::$t);
            }
        )*
    };
}

golden_tests! {
    f16_matches_ggml => F16,
    bf16_matches_ggml => BF16,
    q8_0_matches_ggml => Q8_0,
    q4_0_matches_ggml => Q4_0,
    q4_1_matches_ggml => Q4_1,
    q5_0_matches_ggml => Q5_0,
    q5_1_matches_ggml => Q5_1,
    q2_k_matches_ggml => Q2_K,
    q3_k_matches_ggml => Q3_K,
    q4_k_matches_ggml => Q4_K,
    q5_k_matches_ggml => Q5_K,
    q6_k_matches_ggml => Q6_K,
}
