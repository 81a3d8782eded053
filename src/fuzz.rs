//! Property-based fuzzing, on stable Rust, of every parser of bytes that come from outside:
//! safetensors headers and index files, manifests, tensor file headers and chunk indexes (and
//! their zstd frames), the GGUF reader, imatrix files (GGUF and legacy .dat), SentencePiece
//! protobufs, tokenizer.json, and export/import configs.
//!
//! Each target feeds valid samples mutated at random (bytes flipped, cut, inserted, numbers
//! replaced by extreme values) and plain random bytes to the parser, and asserts that it
//! returns (an error or a value) without panicking, within [`CASE_LIMIT`] (a watchdog aborts
//! the run naming the target and the input's size when a case hangs), and without any single
//! allocation larger than a small multiple of its input: a size or count declared in a file
//! must never be trusted before it is checked against the bytes that are there.
//!
//! `make test` runs a few dozen cases per target (seconds); `make fuzz` sets `GMAT_FUZZ_CASES`
//! for a long run.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};

/// Counts the largest single allocation of the current thread while tracking is on.
struct Tracking;

thread_local! {
    static TRACK: Cell<bool> = const { Cell::new(false) };
    static LARGEST: Cell<usize> = const { Cell::new(0) };
}

fn note(size: usize) {
    let _ = TRACK.try_with(|t| {
        if t.get() {
            let _ = LARGEST.try_with(|l| l.set(l.get().max(size)));
        }
    });
}

// SAFETY: forwards to the system allocator; the bookkeeping only touches const-initialised
// thread-locals (no allocation, no destructor).
unsafe impl GlobalAlloc for Tracking {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note(layout.size());
        System.alloc(layout)
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        System.dealloc(ptr, layout)
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        note(layout.size());
        System.alloc_zeroed(layout)
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note(new_size);
        System.realloc(ptr, layout, new_size)
    }
}

#[global_allocator]
static ALLOC: Tracking = Tracking;

/// The longest one case may take: parsers of small inputs answer in milliseconds, so a case
/// this slow is a hang (a loop that does not advance, a read that waits).
const CASE_LIMIT: Duration = Duration::from_secs(60);

/// The cases running now, by a number per case: the target, the input's size, the start.
static RUNNING: Mutex<Vec<(u64, String, usize, Instant)>> = Mutex::new(Vec::new());

/// Starts, once, a thread that aborts the test process when a case runs past [`CASE_LIMIT`]:
/// a hung parser then fails the run with its name instead of stalling CI.
fn watchdog() {
    static START: std::sync::Once = std::sync::Once::new();
    START.call_once(|| {
        std::thread::spawn(|| loop {
            std::thread::sleep(Duration::from_secs(1));
            let running = RUNNING.lock().unwrap_or_else(|p| p.into_inner());
            if let Some((_, what, len, _)) =
                running.iter().find(|c| c.3.elapsed() > CASE_LIMIT)
            {
                eprintln!(
                    "fuzz: {what} did not return within {CASE_LIMIT:?} on an input of {len} bytes (a hang)"
                );
                std::process::abort();
            }
        });
    });
}

/// Runs `f` on `input` and checks the largest allocation it made on this thread, under the
/// watchdog.
fn bounded<R>(what: &str, input: &[u8], f: impl FnOnce(&[u8]) -> R) -> R {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    watchdog();
    let id = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    RUNNING.lock().unwrap_or_else(|p| p.into_inner()).push((
        id,
        what.to_string(),
        input.len(),
        Instant::now(),
    ));
    // Off the watchdog's list however the case ends (proptest catches a panic and goes on).
    struct Done(u64);
    impl Drop for Done {
        fn drop(&mut self) {
            RUNNING
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .retain(|c| c.0 != self.0);
        }
    }
    let _done = Done(id);
    LARGEST.with(|l| l.set(0));
    TRACK.with(|t| t.set(true));
    let r = f(input);
    TRACK.with(|t| t.set(false));
    let largest = LARGEST.with(|l| l.get());
    let limit = 64 * input.len() + (4 << 20);
    assert!(
        largest <= limit,
        "{what}: one allocation of {largest} bytes from {} bytes of input",
        input.len()
    );
    r
}

/// Cases per target: `GMAT_FUZZ_CASES`, else `default` (the short run of `make test`).
fn runner(default: u32) -> TestRunner {
    let cases = std::env::var("GMAT_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default);
    TestRunner::new(Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    })
}

/// One mutation of a byte string.
#[derive(Clone, Debug)]
enum Edit {
    Flip(usize, u8),
    Cut(usize),
    Insert(usize, Vec<u8>),
    Remove(usize, usize),
    /// A little-endian u32 / u64 at a position set to an extreme value.
    Word(usize, u64, bool),
}

fn edit() -> impl Strategy<Value = Edit> {
    let extreme = prop_oneof![
        Just(0u64),
        Just(1),
        Just(u64::MAX),
        Just(u32::MAX as u64),
        Just(i64::MAX as u64),
        Just(1 << 28),
        Just(1 << 40),
        any::<u64>(),
    ];
    prop_oneof![
        (any::<usize>(), any::<u8>()).prop_map(|(i, b)| Edit::Flip(i, b)),
        any::<usize>().prop_map(Edit::Cut),
        (
            any::<usize>(),
            proptest::collection::vec(any::<u8>(), 1..16)
        )
            .prop_map(|(i, v)| Edit::Insert(i, v)),
        (any::<usize>(), 1usize..64).prop_map(|(i, n)| Edit::Remove(i, n)),
        (any::<usize>(), extreme, any::<bool>()).prop_map(|(i, v, w)| Edit::Word(i, v, w)),
    ]
}

fn apply(mut b: Vec<u8>, edits: &[Edit]) -> Vec<u8> {
    for e in edits {
        let n = b.len().max(1);
        match e {
            Edit::Flip(i, x) => {
                if !b.is_empty() {
                    let i = i % n;
                    b[i] ^= x | 1;
                }
            }
            Edit::Cut(i) => b.truncate(i % n),
            Edit::Insert(i, v) => {
                let i = i % (b.len() + 1);
                b.splice(i..i, v.iter().copied());
            }
            Edit::Remove(i, k) => {
                let i = i % n;
                let e = (i + k).min(b.len());
                if i < e {
                    b.drain(i..e);
                }
            }
            Edit::Word(i, v, wide) => {
                let w = if *wide { 8 } else { 4 };
                if b.len() >= w {
                    let i = i % (b.len() - w + 1);
                    b[i..i + w].copy_from_slice(&v.to_le_bytes()[..w]);
                }
            }
        }
    }
    b
}

/// Samples mutated, or random bytes.
fn inputs(samples: Vec<Vec<u8>>) -> impl Strategy<Value = Vec<u8>> {
    let n = samples.len();
    prop_oneof![
        4 => (0..n, proptest::collection::vec(edit(), 1..6))
            .prop_map(move |(k, e)| apply(samples[k].clone(), &e)),
        1 => proptest::collection::vec(any::<u8>(), 0..512),
    ]
}

/// A JSON value to put somewhere in a document: extremes, wrong types, empty containers.
fn json_leaf() -> impl Strategy<Value = serde_json::Value> {
    use serde_json::{json, Value};
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|v| json!(v)),
        Just(json!(u64::MAX)),
        Just(json!(-1)),
        Just(json!(1e300)),
        Just(json!(0.5)),
        proptest::collection::vec(
            prop_oneof![
                Just('a'),
                Just('.'),
                Just('/'),
                Just('\u{1b}'),
                any::<char>()
            ],
            0..12
        )
        .prop_map(|c| Value::String(c.into_iter().collect())),
        Just(json!([])),
        Just(json!({})),
        Just(json!([1, "a", null, {"k": []}])),
        Just(json!({"type": "BPE", "vocab": {"a": 0}, "merges": ["a a"]})),
    ]
}

fn count_nodes(v: &serde_json::Value) -> usize {
    1 + match v {
        serde_json::Value::Array(a) => a.iter().map(count_nodes).sum(),
        serde_json::Value::Object(o) => o.values().map(count_nodes).sum(),
        _ => 0,
    }
}

/// Replaces the `k`-th node (pre-order) of `v` with `leaf`; returns how many nodes it passed.
fn replace_nth(v: &mut serde_json::Value, k: usize, leaf: &serde_json::Value) -> usize {
    if k == 0 {
        *v = leaf.clone();
        return usize::MAX;
    }
    let mut seen = 1;
    let children: Vec<&mut serde_json::Value> = match v {
        serde_json::Value::Array(a) => a.iter_mut().collect(),
        serde_json::Value::Object(o) => o.values_mut().collect(),
        _ => Vec::new(),
    };
    for c in children {
        let n = replace_nth(c, k - seen, leaf);
        if n == usize::MAX {
            return n;
        }
        seen += n;
        if seen > k {
            break;
        }
    }
    seen
}

/// Structure-aware inputs for JSON parsers: a sample with some nodes replaced (and sometimes
/// a key renamed), besides the byte-level mutations of [`inputs`].
fn json_inputs(samples: Vec<Vec<u8>>) -> impl Strategy<Value = Vec<u8>> {
    let docs: Vec<serde_json::Value> = samples
        .iter()
        .filter_map(|s| serde_json::from_slice(s).ok())
        .collect();
    let n = docs.len().max(1);
    let structural = (
        0..n,
        proptest::collection::vec((any::<usize>(), json_leaf()), 1..4),
    )
        .prop_map(move |(d, edits)| {
            let mut v = docs.get(d).cloned().unwrap_or_default();
            for (k, leaf) in edits {
                let total = count_nodes(&v);
                replace_nth(&mut v, k % total, &leaf);
            }
            serde_json::to_vec(&v).unwrap_or_default()
        });
    prop_oneof![1 => inputs(samples), 2 => structural]
}

/// [`fuzz`] with structure-aware JSON inputs.
fn fuzz_json(what: &str, default_cases: u32, samples: Vec<Vec<u8>>, check: impl Fn(&[u8])) {
    let mut r = runner(default_cases);
    r.run(&json_inputs(samples), |b| {
        bounded(what, &b, |b| check(b));
        Ok(())
    })
    .unwrap_or_else(|e| panic!("{what}: {e}"));
}

/// Runs `check` on `cases` inputs from `samples`.
fn fuzz(what: &str, default_cases: u32, samples: Vec<Vec<u8>>, check: impl Fn(&[u8])) {
    let mut r = runner(default_cases);
    r.run(&inputs(samples), |b| {
        bounded(what, &b, |b| check(b));
        Ok(())
    })
    .unwrap_or_else(|e| panic!("{what}: {e}"));
}

fn repo_file(p: &str) -> Vec<u8> {
    std::fs::read(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(p))
        .unwrap_or_else(|e| panic!("{p}: {e}"))
}

/// A small safetensors file: two tensors and metadata.
fn safetensors_sample() -> Vec<u8> {
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("m.safetensors");
    crate::source::safetensors::write_file(
        &p,
        &[
            ("a.weight", "BF16", vec![2, 3], vec![1u8; 12]),
            ("b", "F32", vec![2], vec![2u8; 8]),
        ],
    )
    .unwrap();
    std::fs::read(p).unwrap()
}

#[test]
fn safetensors_headers() {
    let mut small = safetensors_sample();
    // The same with a dtype gmat does not know and a shape that does not fit.
    let text = String::from_utf8_lossy(&small).replace("F32", "F64");
    small.extend_from_slice(&[0; 8]);
    fuzz(
        "safetensors header",
        64,
        vec![safetensors_sample(), text.into_bytes(), small],
        |b| {
            let _ = crate::source::safetensors::parse_header(b);
            let _ = crate::source::safetensors::duplicate_name(b);
        },
    );
}

#[test]
fn safetensors_index_files() {
    let sample = br#"{"metadata": {"total_size": 20}, "weight_map": {"a": "model-00001-of-00002.safetensors", "b": "model-00002-of-00002.safetensors"}}"#;
    fuzz_json("index", 64, vec![sample.to_vec()], |b| {
        let _ = crate::source::hf_folder::parse_weight_map(&String::from_utf8_lossy(b));
    });
}

/// A real store's manifest and one of its tensor files of each encoding.
fn store_samples() -> (Vec<u8>, Vec<Vec<u8>>) {
    use crate::store::tensor_file::{write_chunked, write_raw};
    use crate::store::{commit::CommitNow, Encoding, TensorHeader};
    let d = tempfile::tempdir().unwrap();
    let payload: Vec<u8> = (0..9000u32).map(|i| (i * 7 / 3) as u8).collect();
    let mut files = Vec::new();
    for enc in [Encoding::Raw, Encoding::Zstd] {
        let h = TensorHeader {
            name: "w".into(),
            dtype: crate::source::Dtype::BF16,
            shape: vec![4500],
            encoding: enc,
            raw_bytes: 9000,
            hash: crate::content_hash::content_hash(&payload),
            chunk_bytes: enc.is_chunked().then_some(4096),
            base: None,
        };
        let p = d.path().join("t.gmat");
        match enc {
            Encoding::Raw => write_raw(&p, &h, &payload).map(|_| ()),
            _ => write_chunked(&p, &h, &payload, None, &|_| {}, &CommitNow).map(|_| ()),
        }
        .unwrap();
        files.push(std::fs::read(&p).unwrap());
    }
    let manifest = serde_json::json!({
        "format": "gmat", "format_version": 1, "gmat_version": "0.1.0",
        "source": {"format": "safetensors", "path": "m", "files": ["model.safetensors"]},
        "model": {"name": "m"}, "side_files": ["config.json", "module/config.json"],
        "tensors": [{"name": "w", "uuid": "6a1f2c4e-8d7b-4f0a-9e35-b1c2d3e4f5a6", "dtype": "BF16",
            "shape": [2, 3], "encoding": "xor_zstd", "raw_bytes": 12, "stored_bytes": 100,
            "hash": crate::content_hash::content_hash(b"x"),
            "base": {"uuid": "6a1f2c4e-8d7b-4f0a-9e35-b1c2d3e4f5a7", "hash": crate::content_hash::content_hash(b"y")}}],
        "base": {"path": "../base", "model_hash": crate::content_hash::content_hash(b"z")}
    });
    (serde_json::to_vec_pretty(&manifest).unwrap(), files)
}

#[test]
fn manifests() {
    let (m, _) = store_samples();
    fuzz_json("manifest", 64, vec![m], |b| {
        let _ = crate::store::Manifest::parse(&String::from_utf8_lossy(b));
    });
}

#[test]
fn tensor_files_headers_indexes_and_frames() {
    use crate::store::codec::{decode_chunk, Planes};
    use crate::store::tensor_file::{parse_header, parse_index};
    let (_, files) = store_samples();
    fuzz("tensor file", 96, files, |b| {
        let Ok((h, start)) = parse_header(b) else {
            return;
        };
        let payload = &b[start..];
        let Ok(ends) = parse_index(payload, h.chunk_count()) else {
            return;
        };
        // Decode every frame into its exact size (bounded by the header's checked chunk size).
        let data = &payload[8 * ends.len()..];
        let cb = h.chunk_bytes.unwrap_or(0) as usize;
        let planes = Planes::for_dtype(h.dtype);
        let mut prev = 0usize;
        for (c, &e) in ends.iter().enumerate() {
            let len = cb.min(h.raw_bytes as usize - (c * cb).min(h.raw_bytes as usize));
            if len > 1 << 20 {
                break;
            }
            let mut out = vec![0u8; len];
            let _ = decode_chunk(&data[prev..e as usize], None, planes, &mut out);
            prev = e as usize;
        }
    });
}

/// A small GGUF: every value type, nested arrays, two tensors.
fn gguf_sample() -> Vec<u8> {
    use crate::gguf::{GgmlType, GgufHeader, Value, ValueType};
    let mut h = GgufHeader::default();
    h.metadata
        .push(("general.architecture".into(), Value::String("llama".into())));
    h.metadata.push(("a.u8".into(), Value::U8(1)));
    h.metadata.push(("a.i64".into(), Value::I64(-1)));
    h.metadata.push(("a.f64".into(), Value::F64(0.5)));
    h.metadata.push(("a.b".into(), Value::Bool(true)));
    h.metadata
        .push(("t.tokens".into(), Value::strings(["a", "bc", ""])));
    h.metadata.push((
        "a.nested".into(),
        Value::Array(ValueType::Array, vec![Value::i32s([1, 2])]),
    ));
    h.push_tensor("x".into(), vec![4], GgmlType::F32);
    h.push_tensor("q".into(), vec![32, 2], GgmlType::Q8_0);
    let mut b = h.to_bytes();
    b.resize(b.len() + h.data_size() as usize, 3);
    b
}

#[test]
fn gguf_files() {
    fuzz("gguf", 96, vec![gguf_sample()], |b| {
        let _ = crate::gguf::reader::parse(b);
    });
}

#[test]
fn legacy_imatrix_files() {
    let mut dat = Vec::new();
    dat.extend_from_slice(&2i32.to_le_bytes());
    for (name, n) in [("blk.0.ffn_up.weight", 4i32), ("output.weight", 2)] {
        dat.extend_from_slice(&(name.len() as i32).to_le_bytes());
        dat.extend_from_slice(name.as_bytes());
        dat.extend_from_slice(&3i32.to_le_bytes());
        dat.extend_from_slice(&n.to_le_bytes());
        for i in 0..n {
            dat.extend_from_slice(&(i as f32).to_le_bytes());
        }
    }
    dat.extend_from_slice(&10i32.to_le_bytes());
    dat.extend_from_slice(&4i32.to_le_bytes());
    dat.extend_from_slice(b"wiki");
    fuzz("legacy imatrix", 96, vec![dat], |b| {
        let _ = crate::quant::imatrix::load_legacy(b);
    });
}

#[test]
fn gguf_imatrix_files() {
    // Through the file: the GGUF path is the reader above plus the imatrix checks.
    let samples: Vec<Vec<u8>> = std::fs::read_dir(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/imatrix"),
    )
    .into_iter()
    .flatten()
    .flatten()
    .map(|e| e.path())
    .filter(|p| p.extension().is_some_and(|x| x == "gguf"))
    .filter(|p| std::fs::metadata(p).is_ok_and(|m| m.len() < 1 << 20))
    .take(2)
    .map(|p| std::fs::read(p).unwrap())
    .collect();
    if samples.is_empty() {
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("i.gguf");
    fuzz("gguf imatrix", 32, samples, |b| {
        std::fs::write(&p, b).unwrap();
        let _ = crate::quant::imatrix::Imatrix::load(&p);
    });
}

#[test]
fn sentencepiece_models() {
    let sample = repo_file("example/tiny_llm/tokenizer.model");
    // Small pieces of it too, so mutations reach the field parser often.
    let head = sample[..sample.len().min(600)].to_vec();
    fuzz("tokenizer.model", 64, vec![sample, head], |b| {
        let _ = crate::arch::tokenizer::spm::parse(b);
    });
}

#[test]
fn tokenizer_json() {
    let full: serde_json::Value =
        serde_json::from_slice(&repo_file("example/tiny_llm/tokenizer.json")).unwrap();
    // A small BPE tokenizer of the same shape, so mutations hit the structure.
    let small = serde_json::json!({
        "version": "1.0",
        "added_tokens": [{"id": 0, "content": "<s>", "single_word": false, "lstrip": false,
            "rstrip": false, "normalized": false, "special": true}],
        "normalizer": null,
        "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": true},
        "post_processor": null,
        "decoder": {"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true, "use_regex": true},
        "model": {"type": "BPE", "dropout": null, "unk_token": null, "continuing_subword_prefix": null,
            "end_of_word_suffix": null, "fuse_unk": false, "byte_fallback": false,
            "vocab": {"<s>": 0, "a": 1, "b": 2, "ab": 3}, "merges": ["a b"]}
    });
    let _ = full;
    fuzz_json(
        "tokenizer.json",
        48,
        vec![serde_json::to_vec(&small).unwrap()],
        |b| {
            if let Ok(j) = serde_json::from_slice::<serde_json::Value>(b) {
                let _ = crate::arch::tokenizer::hf_tokenizer::backend(&j);
            }
        },
    );
}

#[test]
fn configs() {
    use crate::config::json_strict::parse_config;
    use crate::config::{ExportConfig, ImportConfig};
    let export = repo_file("example/tiny_llm/export_config.json");
    let import = repo_file("example/tiny_llm/import_config.json");
    let extra = br#"{"_c": 1, "quantization": {"default_type": "Q4_K_M", "imatrix": "x.dat", "per_tensor": {"re:.*": "Q8_0"}}, "shard_size": "2G", "special_token_keys": {"eos": 2}, "mmproj": {"write": false}}"#;
    fuzz_json("config", 96, vec![export, import, extra.to_vec()], |b| {
        let t = String::from_utf8_lossy(b);
        let _ = parse_config::<ExportConfig>(&t);
        let _ = parse_config::<ImportConfig>(&t);
        if let Ok(c) = parse_config::<ExportConfig>(&t) {
            if let Some(serde_json::Value::String(s)) = &c.shard_size {
                let _ = crate::plan::split::parse_size(s);
            }
        }
    });
}

/// What fuzzing found, kept as plain regression tests.
#[test]
fn found_by_fuzzing() {
    use crate::gguf::{GgmlType, TensorInfo};
    // A declared size that overflows u64 (debug builds panicked, release builds wrapped).
    assert_eq!(GgmlType::F32.row_bytes(u64::MAX / 2), None);
    let t = TensorInfo {
        name: "x".into(),
        dims: vec![1 << 40, 1 << 40],
        ggml_type: GgmlType::F32,
        offset: 0,
    };
    assert_eq!(t.n_bytes(), None);
    assert_eq!(t.n_elements(), u64::MAX);
    // tokenizers panicked slicing a continuing-subword prefix off a shorter merge token.
    let j = serde_json::json!({"model": {"type": "BPE", "vocab": {"a": 0, "b": 1, "ab": 2},
        "merges": ["a b"], "continuing_subword_prefix": "##"}});
    let e = crate::arch::tokenizer::hf_tokenizer::backend(&j)
        .err()
        .unwrap();
    assert!(
        format!("{e:#}").contains("continuing_subword_prefix"),
        "{e:#}"
    );
}
