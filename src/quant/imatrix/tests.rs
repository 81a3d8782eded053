//! Fixtures: testdata/imatrix/ (see its README.md and make_fixtures.sh). The reference files
//! were written by llama-imatrix; expected.json holds their normalised values computed
//! independently in Python and what llama-quantize wrote with them.

use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use super::*;
use crate::gguf::GgufHeader;
use crate::quant::codec;

const DIR: &str = "testdata/imatrix";

fn expected() -> serde_json::Value {
    let p = Path::new(DIR).join("expected.json");
    let b = std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    serde_json::from_slice(&b).unwrap()
}

fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn f32_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

fn strings(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

fn err_of<T>(r: Result<T>) -> String {
    match r {
        Ok(_) => panic!("expected an error"),
        Err(e) => format!("{e:#}"),
    }
}

// ---- synthetic files ----

/// A GGUF imatrix: `meta` plus F32 (or `ty`) tensors with the given values.
fn gguf_bytes(
    meta: Vec<(String, Value)>,
    tensors: &[(&str, Vec<u64>, GgmlType, Vec<u8>)],
) -> Vec<u8> {
    let mut h = GgufHeader {
        metadata: meta,
        ..Default::default()
    };
    for (name, dims, ty, _) in tensors {
        h.push_tensor(name.to_string(), dims.clone(), *ty);
    }
    let mut out = h.to_bytes();
    let base = out.len();
    out.resize(base + h.data_size() as usize, 0);
    for (t, (_, _, _, data)) in h.tensors.iter().zip(tensors) {
        let at = base + t.offset as usize;
        out[at..at + data.len()].copy_from_slice(data);
    }
    out
}

fn std_meta(chunks: u32) -> Vec<(String, Value)> {
    vec![
        ("general.type".into(), Value::String("imatrix".into())),
        (KEY_DATASETS.into(), Value::strings(["data.txt"])),
        (KEY_CHUNK_COUNT.into(), Value::U32(chunks)),
        (KEY_CHUNK_SIZE.into(), Value::U32(512)),
    ]
}

/// One entry as llama-imatrix writes it: `in_sum2` [ne0, n], `counts` [1, n].
fn entry_tensors(
    name: &str,
    sums: &[f32],
    counts: &[f32],
) -> Vec<(String, Vec<u64>, GgmlType, Vec<u8>)> {
    let n = counts.len() as u64;
    vec![
        (
            format!("{name}.in_sum2"),
            vec![sums.len() as u64 / n.max(1), n],
            GgmlType::F32,
            f32_bytes(sums),
        ),
        (
            format!("{name}.counts"),
            vec![1, n],
            GgmlType::F32,
            f32_bytes(counts),
        ),
    ]
}

fn write_gguf(
    dir: &Path,
    file: &str,
    meta: Vec<(String, Value)>,
    tensors: Vec<(String, Vec<u64>, GgmlType, Vec<u8>)>,
) -> PathBuf {
    let t: Vec<_> = tensors
        .iter()
        .map(|(n, d, ty, b)| (n.as_str(), d.clone(), *ty, b.clone()))
        .collect();
    let p = dir.join(file);
    std::fs::write(&p, gguf_bytes(meta, &t)).unwrap();
    p
}

/// A legacy file: entries (name, ncall, values), then `tail` verbatim.
fn dat_bytes(entries: &[(&[u8], i32, &[f32])], tail: &[u8]) -> Vec<u8> {
    let mut b = Vec::new();
    b.extend_from_slice(&(entries.len() as i32).to_le_bytes());
    for (name, ncall, vals) in entries {
        b.extend_from_slice(&(name.len() as i32).to_le_bytes());
        b.extend_from_slice(name);
        b.extend_from_slice(&ncall.to_le_bytes());
        b.extend_from_slice(&(vals.len() as i32).to_le_bytes());
        b.extend_from_slice(&f32_bytes(vals));
    }
    b.extend_from_slice(tail);
    b
}

fn trailer(chunks: i32, dataset: &[u8]) -> Vec<u8> {
    let mut b = chunks.to_le_bytes().to_vec();
    b.extend_from_slice(&(dataset.len() as i32).to_le_bytes());
    b.extend_from_slice(dataset);
    b
}

fn write(dir: &Path, file: &str, bytes: &[u8]) -> PathBuf {
    let p = dir.join(file);
    std::fs::write(&p, bytes).unwrap();
    p
}

// ---- the reference files ----

#[test]
fn reference_files_normalise_like_llama_quantize() {
    let exp = expected();
    for (file, want) in exp["normalised"].as_object().unwrap() {
        let m = Imatrix::load(&Path::new(DIR).join(file)).unwrap();
        let format = if want["format"] == "gguf" {
            ImatrixFormat::Gguf
        } else {
            ImatrixFormat::Legacy
        };
        assert_eq!(m.format(), format, "{file}");
        assert_eq!(
            serde_json::json!(m.datasets()),
            want["datasets"],
            "{file} datasets"
        );
        assert_eq!(
            m.chunk_count() as i64,
            want["chunk_count"].as_i64().unwrap(),
            "{file}"
        );
        assert_eq!(
            m.chunk_size() as i64,
            want["chunk_size"].as_i64().unwrap(),
            "{file}"
        );
        let entries = want["entries"].as_object().unwrap();
        assert_eq!(
            m.names().collect::<Vec<_>>(),
            entries.keys().cloned().collect::<Vec<_>>(),
            "{file} entry names"
        );
        for (name, e) in entries {
            let v = m.entry(name).unwrap();
            assert_eq!(v.len() as u64, e["n"].as_u64().unwrap(), "{file} {name}");
            let head: Vec<f32> = e["head"]
                .as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_f64().unwrap() as f32)
                .collect();
            assert_eq!(&v[..head.len()], &head[..], "{file} {name} head");
            assert_eq!(
                sha256_hex(&f32_bytes(v)),
                e["sha256"].as_str().unwrap(),
                "{file} {name} values"
            );
        }
    }
}

#[test]
fn gguf_and_legacy_of_one_run_agree() {
    // The legacy writer stores (sum / count) * ncall and the reader divides by ncall again, so
    // the two formats of one run agree to rounding, not bit for bit.
    for m in ["llama-tiny", "mixtral-tiny"] {
        let g = Imatrix::load(&Path::new(DIR).join(format!("{m}.imatrix.gguf"))).unwrap();
        let d = Imatrix::load(&Path::new(DIR).join(format!("{m}.imatrix.dat"))).unwrap();
        assert_eq!(g.names().collect::<Vec<_>>(), d.names().collect::<Vec<_>>());
        assert_eq!((g.chunk_count(), d.chunk_count()), (3, 3));
        assert_eq!((g.chunk_size(), d.chunk_size()), (128, 0));
        for name in g.names() {
            let (a, b) = (g.entry(&name).unwrap(), d.entry(&name).unwrap());
            assert_eq!(a.len(), b.len(), "{m} {name}");
            for (x, y) in a.iter().zip(b) {
                assert!(
                    (x - y).abs() <= 1e-6 * x.abs().max(1e-30),
                    "{m} {name}: {x} vs {y}"
                );
            }
        }
    }
}

/// The filters of each llama-quantize run in make_fixtures.sh.
fn run_filters(run: &str) -> (Vec<String>, Vec<String>) {
    match run {
        "lt-incl-attn_q" => (strings(&["attn_q", "blk.0."]), vec![]),
        "lt-excl-ffn" => (vec![], strings(&["ffn"])),
        _ => (vec![], vec![]),
    }
}

#[test]
fn metadata_matches_llama_quantize() {
    let exp = expected();
    let runs = exp["quantize"].as_object().unwrap();
    assert_eq!(runs.len(), 8);
    for (run, want) in runs {
        let meta = want["metadata"].as_array().unwrap();
        // The file key is the --imatrix argument, given relative to the repository root.
        let file = meta[0][2].as_str().unwrap();
        let (inc, exc) = run_filters(run);
        let m = Imatrix::prepare(Path::new(file), &inc, &exc)
            .unwrap()
            .unwrap();
        let got: Vec<serde_json::Value> = m
            .metadata()
            .into_iter()
            .map(|(k, v)| match v {
                Value::String(s) => serde_json::json!([k, "string", s]),
                Value::U32(n) => serde_json::json!([k, "u32", n]),
                other => panic!("{run}: unexpected value type {other:?}"),
            })
            .collect();
        assert_eq!(&got, meta, "{run}");
        // llama-quantize appends them after general.quantization_version and general.file_type.
        let last: Vec<&str> = want["last_keys"]
            .as_array()
            .unwrap()
            .iter()
            .map(|k| k.as_str().unwrap())
            .collect();
        assert_eq!(
            &last[..2],
            ["general.quantization_version", "general.file_type"]
        );
    }
}

#[test]
fn mixtral_entries_hold_one_slice_per_expert() {
    let m = Imatrix::load(&Path::new(DIR).join("mixtral-tiny.imatrix.gguf")).unwrap();
    // blk.0.ffn_up_exps.weight is [256, 512, 4]: 4 experts of 512 rows of 256.
    let w = m
        .for_tensor("blk.0.ffn_up_exps.weight", 256, 4)
        .unwrap()
        .unwrap();
    assert_eq!(w.len(), 1024);
    assert_eq!(row_weights(w, 256, 512, 0), &w[..256]);
    assert_eq!(row_weights(w, 256, 512, 511), &w[..256]);
    assert_eq!(row_weights(w, 256, 512, 512), &w[256..512]);
    assert_eq!(row_weights(w, 256, 512, 2047), &w[768..]);
    // The router is 2-D.
    assert_eq!(
        m.for_tensor("blk.0.ffn_gate_inp.weight", 256, 1)
            .unwrap()
            .unwrap()
            .len(),
        256
    );
    // A per-expert entry never stands in for a single matrix, nor the other way round.
    let e = err_of(m.for_tensor("blk.0.ffn_up_exps.weight", 256, 1));
    assert!(
        e.contains("blk.0.ffn_up_exps.weight") && e.contains("1024") && e.contains("256"),
        "{e}"
    );
    let e = err_of(m.for_tensor("blk.0.ffn_gate_inp.weight", 256, 4));
    assert!(
        e.contains("blk.0.ffn_gate_inp.weight") && e.contains("1024"),
        "{e}"
    );
}

#[test]
fn lookup_rules() {
    let dir = tempfile::tempdir().unwrap();
    let mut t = entry_tensors("blk.0.attn_q.weight", &[1.0; 8], &[1.0]);
    t.extend(entry_tensors("token_embd.weight", &[1.0; 8], &[1.0]));
    t.extend(entry_tensors(
        "per_layer_token_embd.weight",
        &[1.0; 8],
        &[1.0],
    ));
    t.extend(entry_tensors("output.weight", &[1.0; 8], &[1.0]));
    let p = write_gguf(dir.path(), "m.gguf", std_meta(1), t);
    let m = Imatrix::load(&p).unwrap();
    assert_eq!(
        m.for_tensor("blk.0.attn_q.weight", 8, 1)
            .unwrap()
            .unwrap()
            .len(),
        8
    );
    // No entry: quantized without.
    assert!(m.for_tensor("blk.0.attn_k.weight", 8, 1).unwrap().is_none());
    // Wrong size: an error naming the tensor, the file and both sizes...
    let e = err_of(m.for_tensor("blk.0.attn_q.weight", 16, 1));
    assert!(
        e.contains("blk.0.attn_q.weight")
            && e.contains("m.gguf")
            && e.contains("8 values")
            && e.contains("16"),
        "{e}"
    );
    let e = err_of(m.for_tensor("output.weight", 4, 1));
    assert!(e.contains("output.weight"), "{e}");
    // ...except for the token embeddings, which are then quantized without.
    assert!(m.for_tensor("token_embd.weight", 16, 1).unwrap().is_none());
    assert!(m
        .for_tensor("per_layer_token_embd.weight", 4, 3)
        .unwrap()
        .is_none());
    assert!(m.for_tensor("token_embd.weight", 8, 1).unwrap().is_some());
}

// ---- GGUF layout ----

#[test]
fn gguf_counts_normalise_per_expert() {
    let dir = tempfile::tempdir().unwrap();
    let sums = [2.0, 4.0, 6.0, 8.0, 3.0, 9.0, 5.0, 7.0];
    // count 0 and negative counts give 1.0; 2.5 rounds half away from zero to 3.
    let mut t = entry_tensors("e", &sums, &[2.0, 0.0, 2.5, -4.0]);
    // Sizes that do not divide: ne0 = 5 / 2 = 2, the last value stays 0.
    t.push((
        "odd.in_sum2".into(),
        vec![5],
        GgmlType::F32,
        f32_bytes(&[4.0, 8.0, 6.0, 6.0, 9.0]),
    ));
    t.push((
        "odd.counts".into(),
        vec![2],
        GgmlType::F32,
        f32_bytes(&[4.0, 3.0]),
    ));
    // Tensors without either suffix are ignored.
    t.push((
        "unrelated".into(),
        vec![2],
        GgmlType::F32,
        f32_bytes(&[1.0, 1.0]),
    ));
    let p = write_gguf(dir.path(), "m.gguf", std_meta(7), t);
    let m = Imatrix::load(&p).unwrap();
    assert_eq!(m.names().collect::<Vec<_>>(), ["e", "odd"]);
    assert_eq!(
        m.entry("e").unwrap(),
        [1.0, 2.0, 1.0, 1.0, 1.0, 3.0, 1.0, 1.0]
    );
    assert_eq!(m.entry("odd").unwrap(), [1.0, 2.0, 2.0, 2.0, 0.0]);
    assert_eq!((m.chunk_count(), m.chunk_size()), (7, 512));
    assert_eq!(m.datasets(), ["data.txt"]);
}

#[test]
fn gguf_errors_name_the_file_and_entry() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let ok = entry_tensors("blk.0.attn_q.weight", &[1.0; 4], &[2.0]);

    // Metadata: all three keys are required, the two counts must be u32.
    for drop in [KEY_DATASETS, KEY_CHUNK_COUNT, KEY_CHUNK_SIZE] {
        let meta = std_meta(1).into_iter().filter(|(k, _)| k != drop).collect();
        let p = write_gguf(d, "nometa.gguf", meta, ok.clone());
        let e = err_of(Imatrix::load(&p));
        assert!(
            e.contains("nometa.gguf") && e.contains("missing imatrix metadata"),
            "{e}"
        );
    }
    let mut meta = std_meta(1);
    meta[2].1 = Value::I32(1);
    let e = err_of(Imatrix::load(&write_gguf(d, "i32.gguf", meta, ok.clone())));
    assert!(e.contains(KEY_CHUNK_COUNT) && e.contains("not u32"), "{e}");
    // Datasets of another type are ignored, as long as the key exists.
    let mut meta = std_meta(1);
    meta[1].1 = Value::U32(5);
    let m = Imatrix::load(&write_gguf(d, "ds.gguf", meta, ok.clone())).unwrap();
    assert!(m.datasets().is_empty());
    assert!(m.metadata().iter().all(|(k, _)| k != KEY_DATASET));

    // Sums without counts, and the other way round.
    let e = err_of(Imatrix::load(&write_gguf(
        d,
        "half.gguf",
        std_meta(1),
        vec![ok[0].clone()],
    )));
    assert!(
        e.contains("half.gguf") && e.contains("blk.0.attn_q.weight") && e.contains("mismatched"),
        "{e}"
    );
    let e = err_of(Imatrix::load(&write_gguf(
        d,
        "half2.gguf",
        std_meta(1),
        vec![ok[1].clone()],
    )));
    assert!(
        e.contains("blk.0.attn_q.weight") && e.contains("mismatched"),
        "{e}"
    );

    // Not F32.
    let mut t = ok.clone();
    t[1] = (
        "blk.0.attn_q.weight.counts".into(),
        vec![1],
        GgmlType::F16,
        vec![0, 0x40],
    );
    let e = err_of(Imatrix::load(&write_gguf(d, "f16.gguf", std_meta(1), t)));
    assert!(
        e.contains("blk.0.attn_q.weight") && e.contains("F32"),
        "{e}"
    );

    // No counts at all (llama-quantize would divide by zero), a count lround cannot represent.
    let t = vec![
        (
            "z.in_sum2".to_string(),
            vec![4],
            GgmlType::F32,
            f32_bytes(&[1.0; 4]),
        ),
        ("z.counts".to_string(), vec![1, 0], GgmlType::F32, vec![]),
    ];
    let e = err_of(Imatrix::load(&write_gguf(d, "zero.gguf", std_meta(1), t)));
    assert!(e.contains("entry z") && e.contains("empty"), "{e}");
    let t = entry_tensors("nan", &[1.0; 4], &[f32::NAN]);
    let e = err_of(Imatrix::load(&write_gguf(d, "nan.gguf", std_meta(1), t)));
    assert!(e.contains("entry nan") && e.contains("count 0"), "{e}");

    // No tensors.
    let e = err_of(Imatrix::load(&write_gguf(
        d,
        "empty.gguf",
        std_meta(1),
        vec![],
    )));
    assert!(e.contains("empty.gguf") && e.contains("no data"), "{e}");

    // What ggml's reader rejects: tensors not packed back to back, duplicate names.
    let good = std::fs::read(write_gguf(d, "good.gguf", std_meta(1), ok.clone())).unwrap();
    let mut h = GgufHeader {
        metadata: std_meta(1),
        ..Default::default()
    };
    h.push_tensor("a.in_sum2".into(), vec![4], GgmlType::F32);
    h.push_tensor("a.counts".into(), vec![1], GgmlType::F32);
    h.tensors[1].offset = 64;
    let mut b = h.to_bytes();
    b.resize(b.len() + 128, 0);
    let e = err_of(Imatrix::load(&write(d, "gap.gguf", &b)));
    assert!(
        e.contains("gap.gguf") && e.contains("offset 64, expected 32"),
        "{e}"
    );
    let mut t = ok.clone();
    t.push(t[0].clone());
    let e = err_of(Imatrix::load(&write_gguf(d, "dup.gguf", std_meta(1), t)));
    assert!(e.contains("duplicate tensor name"), "{e}");

    // Truncated anywhere: an error, never a panic.
    for cut in [8, 30, good.len() / 2, good.len() - 1] {
        let p = write(d, "cut.gguf", &good[..cut]);
        let e = err_of(Imatrix::load(&p));
        assert!(e.contains("cut.gguf"), "cut at {cut}: {e}");
    }
}

#[test]
fn gguf_entry_without_suffix_data_means_no_imatrix() {
    // Tensors but no entries: llama-quantize goes on as if no imatrix had been given.
    let dir = tempfile::tempdir().unwrap();
    let t = vec![(
        "x".to_string(),
        vec![2],
        GgmlType::F32,
        f32_bytes(&[1.0, 2.0]),
    )];
    let p = write_gguf(dir.path(), "m.gguf", std_meta(1), t);
    assert!(Imatrix::load(&p).unwrap().is_empty());
    assert!(Imatrix::prepare(&p, &[], &[]).unwrap().is_none());
}

// ---- legacy layout ----

#[test]
fn legacy_values_and_trailer() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let entries: [(&[u8], i32, &[f32]); 3] = [
        (b"a", 4, &[8.0, 2.0]),
        (b"b", 0, &[3.0, 5.0]),
        (b"c", -2, &[7.0]),
    ];
    // The usual trailer: chunk count and dataset.
    let p = write(d, "m.dat", &dat_bytes(&entries, &trailer(9, b"wiki.txt")));
    let m = Imatrix::load(&p).unwrap();
    assert_eq!(m.format(), ImatrixFormat::Legacy);
    assert_eq!(m.entry("a").unwrap(), [2.0, 0.5]);
    // ncall <= 0: the values as stored.
    assert_eq!(m.entry("b").unwrap(), [3.0, 5.0]);
    assert_eq!(m.entry("c").unwrap(), [7.0]);
    assert_eq!((m.chunk_count(), m.chunk_size()), (9, 0));
    assert_eq!(m.datasets(), ["wiki.txt"]);
    let p_str = p.to_str().unwrap().to_string();
    assert_eq!(
        m.metadata(),
        vec![
            (KEY_FILE.to_string(), Value::String(p_str.clone())),
            (KEY_DATASET.to_string(), Value::String("wiki.txt".into())),
            (KEY_N_ENTRIES.to_string(), Value::U32(3)),
            (KEY_N_CHUNKS.to_string(), Value::U32(9)),
        ]
    );

    // No trailer (older files): no dataset, no chunk count, so neither key.
    let m = Imatrix::load(&write(d, "old.dat", &dat_bytes(&entries, &[]))).unwrap();
    assert_eq!((m.chunk_count(), m.datasets().len()), (0, 0));
    let keys: Vec<String> = m.metadata().into_iter().map(|(k, _)| k).collect();
    assert_eq!(keys, [KEY_FILE, KEY_N_ENTRIES]);

    // Empty dataset name; trailing bytes after the trailer are ignored.
    let mut tail = trailer(-5, b"");
    tail.extend_from_slice(b"junk");
    let m = Imatrix::load(&write(d, "t1.dat", &dat_bytes(&entries, &tail))).unwrap();
    assert_eq!(m.chunk_count(), -5);
    assert!(m.datasets().is_empty());
    let keys: Vec<String> = m.metadata().into_iter().map(|(k, _)| k).collect();
    assert_eq!(keys, [KEY_FILE, KEY_N_ENTRIES]);

    // istream semantics: a short chunk count keeps the bytes it got; a short dataset is dropped.
    let m = Imatrix::load(&write(d, "t2.dat", &dat_bytes(&entries, &[0x34, 0x12]))).unwrap();
    assert_eq!(m.chunk_count(), 0x1234);
    let mut tail = trailer(3, b"dataset");
    tail.truncate(tail.len() - 2);
    let m = Imatrix::load(&write(d, "t3.dat", &dat_bytes(&entries, &tail))).unwrap();
    assert_eq!((m.chunk_count(), m.datasets().len()), (3, 0));
    let m = Imatrix::load(&write(d, "t4.dat", &dat_bytes(&entries, &[3, 0, 0, 0, 1]))).unwrap();
    assert_eq!((m.chunk_count(), m.datasets().len()), (3, 0));

    // Names and datasets are C strings; a repeated name replaces the earlier entry.
    let entries: [(&[u8], i32, &[f32]); 3] = [
        (b"x\0ignored", 1, &[1.0]),
        (b"y", 1, &[1.0, 1.0]),
        (b"y", 2, &[4.0]),
    ];
    let m = Imatrix::load(&write(
        d,
        "t5.dat",
        &dat_bytes(&entries, &trailer(1, b"d\0e")),
    ))
    .unwrap();
    assert_eq!(m.names().collect::<Vec<_>>(), ["x", "y"]);
    assert_eq!(m.entry("y").unwrap(), [2.0]);
    assert_eq!(m.datasets(), ["d"]);
}

#[test]
fn legacy_errors_name_the_file_and_entry() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let entries: [(&[u8], i32, &[f32]); 2] = [(b"first", 1, &[1.0, 2.0]), (b"second", 1, &[3.0])];
    let good = dat_bytes(&entries, &[]);
    // Every cut inside the entries fails (a cut after them is a file without trailer).
    for cut in 0..good.len() {
        let p = write(d, "cut.dat", &good[..cut]);
        let e = err_of(Imatrix::load(&p));
        assert!(e.contains("cut.dat"), "cut at {cut}: {e}");
        if cut >= 4 + 4 + 5 + 8 + 8 + 4 {
            assert!(
                e.contains("entry 2") || e.contains("entry 1 (second)"),
                "cut at {cut}: {e}"
            );
        }
    }
    let e = err_of(Imatrix::load(&write(d, "n0.dat", &0i32.to_le_bytes())));
    assert!(e.contains("n0.dat") && e.contains("no data"), "{e}");
    let e = err_of(Imatrix::load(&write(
        d,
        "nval.dat",
        &dat_bytes(&[(b"v", 1, &[])], &[]),
    )));
    assert!(
        e.contains("nval.dat") && e.contains("entry 0 (v)") && e.contains("at least 1"),
        "{e}"
    );
    let mut b = 1i32.to_le_bytes().to_vec();
    b.extend_from_slice(&(-3i32).to_le_bytes());
    let e = err_of(Imatrix::load(&write(d, "neg.dat", &b)));
    assert!(e.contains("neg.dat") && e.contains("name length -3"), "{e}");
    // A huge count fails on the data, it does not allocate.
    let mut b = dat_bytes(&[(b"big", 1, &[1.0])], &[]);
    b[12..16].copy_from_slice(&i32::MAX.to_le_bytes());
    let e = err_of(Imatrix::load(&write(d, "big.dat", &b)));
    assert!(
        e.contains("entry 0 (big)") && e.contains("failed reading"),
        "{e}"
    );
}

// ---- filters, finiteness, metadata strings ----

#[test]
fn filters_work_like_prepare_imatrix() {
    let p = Path::new(DIR).join("llama-tiny.imatrix.gguf");
    let m = Imatrix::prepare(&p, &strings(&["attn_q", "blk.0."]), &[])
        .unwrap()
        .unwrap();
    let want: Vec<String> = (0..4)
        .map(|i| format!("blk.{i}.attn_q.weight"))
        .chain(
            [
                "attn_k",
                "attn_output",
                "attn_v",
                "ffn_down",
                "ffn_gate",
                "ffn_up",
            ]
            .iter()
            .map(|n| format!("blk.0.{n}.weight")),
        )
        .collect();
    let mut want = want;
    want.sort();
    assert_eq!(m.names().collect::<Vec<_>>(), want);
    let m = Imatrix::prepare(&p, &[], &strings(&["ffn", "attn_k"]))
        .unwrap()
        .unwrap();
    assert_eq!(m.len(), 12);
    assert!(m
        .names()
        .all(|n| n.contains("attn_") && !n.contains("attn_k")));
    // An empty pattern matches everything.
    assert_eq!(
        Imatrix::prepare(&p, &strings(&[""]), &[])
            .unwrap()
            .unwrap()
            .len(),
        28
    );
    assert!(Imatrix::prepare(&p, &[], &strings(&[""]))
        .unwrap()
        .is_none());
    assert!(Imatrix::prepare(&p, &strings(&["nothing"]), &[])
        .unwrap()
        .is_none());
    let e = err_of(Imatrix::prepare(&p, &strings(&["a"]), &strings(&["b"])));
    assert!(e.contains("cannot be combined"), "{e}");
}

#[test]
fn non_finite_values_are_refused_after_filtering() {
    let dir = tempfile::tempdir().unwrap();
    let entries: [(&[u8], i32, &[f32]); 2] =
        [(b"good", 1, &[1.0]), (b"bad", 1, &[1.0, f32::INFINITY])];
    let p = write(dir.path(), "inf.dat", &dat_bytes(&entries, &[]));
    // Loading keeps it (a filter may drop the entry)...
    assert_eq!(Imatrix::load(&p).unwrap().len(), 2);
    let e = err_of(Imatrix::prepare(&p, &[], &[]));
    assert!(
        e.contains("inf.dat") && e.contains("entry bad") && e.contains("index 1"),
        "{e}"
    );
    assert_eq!(
        Imatrix::prepare(&p, &[], &strings(&["bad"]))
            .unwrap()
            .unwrap()
            .len(),
        1
    );
}

#[test]
fn metadata_strings_are_cut_like_strncpy() {
    let dir = tempfile::tempdir().unwrap();
    let long_name = format!("{}.dat", "i".repeat(150));
    let dataset = "d".repeat(200);
    let entries: [(&[u8], i32, &[f32]); 1] = [(b"e", 1, &[1.0])];
    let p = write(
        dir.path(),
        &long_name,
        &dat_bytes(&entries, &trailer(2, dataset.as_bytes())),
    );
    let m = Imatrix::load(&p).unwrap();
    let full = p.to_str().unwrap();
    assert!(full.len() > 127);
    let meta = m.metadata();
    assert_eq!(meta[0].1, Value::String(full[..127].to_string()));
    assert_eq!(meta[1].1, Value::String("d".repeat(127)));
    assert_eq!(m.file(), full);
    // Cutting inside a UTF-8 character would write invalid UTF-8: refused.
    let dataset = format!("{}é", "d".repeat(126));
    let p = write(
        dir.path(),
        "u.dat",
        &dat_bytes(&entries, &trailer(2, dataset.as_bytes())),
    );
    let e = err_of(Imatrix::load(&p));
    assert!(e.contains("u.dat") && e.contains("not UTF-8"), "{e}");
}

// ---- end to end against llama-quantize (needs the reference kit) ----

/// Quantizes `tensor` of the kit's BF16 GGUF of `model` row by row with the imatrix weights as
/// llama-quantize picks them, and returns the bytes.
fn quantize_like_llama(kit: &Path, model: &str, m: &Imatrix, tensor: &str, t: GgmlType) -> Vec<u8> {
    let f = GgufFile::open(
        &kit.join(model)
            .join("expected")
            .join(format!("{model}-bf16.gguf")),
    )
    .unwrap();
    let info = f.tensor(tensor).unwrap();
    assert_eq!(info.ggml_type, GgmlType::BF16);
    let ne0 = info.dims[0] as usize;
    let ne1 = info.dims[1] as usize;
    let ne2 = info.dims.get(2).copied().unwrap_or(1) as usize;
    let src = f.tensor_data(info);
    let mut row = vec![0f32; ne0];
    let row_bytes = t.row_bytes(ne0 as u64).unwrap() as usize;
    let mut out = vec![0u8; row_bytes * ne1 * ne2];
    let weights = m.for_tensor(tensor, ne0, ne2).unwrap();
    let bf16 = codec(GgmlType::BF16).unwrap();
    let c = codec(t).unwrap();
    for r in 0..ne1 * ne2 {
        bf16.dequantize_row(&src[r * ne0 * 2..(r + 1) * ne0 * 2], &mut row);
        let w = weights.map(|w| row_weights(w, ne0, ne1, r));
        c.quantize_row(&row, w, &mut out[r * row_bytes..(r + 1) * row_bytes]);
    }
    out
}

#[test]
fn quantized_bytes_match_llama_quantize_with_imatrix() {
    let Some(kit) = crate::testkit::kit("imatrix quantization of kit tensors") else {
        return;
    };
    let exp = expected();
    let cases: [(&str, &str, &str, &[&str]); 5] = [
        (
            "lt-q4k-gguf",
            "llama-tiny",
            "llama-tiny.imatrix.gguf",
            &[
                "blk.0.attn_q.weight",
                "blk.3.ffn_down.weight",
                "blk.2.attn_v.weight",
                "token_embd.weight",
            ],
        ),
        (
            "lt-q4k-dat",
            "llama-tiny",
            "llama-tiny.imatrix.dat",
            &["blk.0.attn_q.weight", "blk.1.ffn_down.weight"],
        ),
        (
            "lt-iq4xs-gguf",
            "llama-tiny",
            "llama-tiny.imatrix.gguf",
            &["blk.1.attn_output.weight", "blk.2.ffn_down.weight"],
        ),
        (
            "mx-q4k-gguf",
            "mixtral-tiny",
            "mixtral-tiny.imatrix.gguf",
            &[
                "blk.1.ffn_down_exps.weight",
                "blk.0.ffn_up_exps.weight",
                "blk.0.attn_k.weight",
            ],
        ),
        (
            "mx-iq4xs-gguf",
            "mixtral-tiny",
            "mixtral-tiny.imatrix.gguf",
            &["blk.1.ffn_gate_exps.weight"],
        ),
    ];
    let mut checked = 0;
    for (run, model, file, tensors) in cases {
        let m = Imatrix::prepare(&Path::new(DIR).join(file), &[], &[])
            .unwrap()
            .unwrap();
        for &name in tensors {
            let want = &exp["quantize"][run]["tensors"][name];
            let ty = want["type"].as_str().unwrap();
            let t = GgmlType::all().find(|t| t.name() == ty).unwrap();
            let got = quantize_like_llama(&kit, model, &m, name, t);
            assert_eq!(
                sha256_hex(&got),
                want["sha256"].as_str().unwrap(),
                "{run}: {name} as {t} differs from llama-quantize"
            );
            checked += 1;
        }
    }
    assert_eq!(checked, 12);
}
