//! Round trips through real stores: every encoding and every base path (hard link, reference,
//! XOR delta, delta of a delta) decodes to exactly the source bytes, and a missing, changed or
//! corrupt base is a clear error.

use std::path::{Path, PathBuf};

use super::*;
use crate::config::import_config::{default_uuid, ImportDecision};
use crate::pipeline::import::{self, ImportOptions};
use crate::source::HfModel;

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn normal_bf16(&mut self, n: usize, scale: f32) -> Vec<u8> {
        (0..n)
            .flat_map(|_| {
                // Sum of uniforms: close enough to normal for exponent statistics.
                let s: f32 = (0..4)
                    .map(|_| (self.next() % 10_000) as f32 / 10_000.0)
                    .sum();
                let v = (s - 2.0) * scale;
                ((v.to_bits() >> 16) as u16).to_le_bytes()
            })
            .collect()
    }
}

type Tensor = (String, &'static str, Vec<u64>, Vec<u8>);

fn write_model(dir: &Path, tensors: &[Tensor]) -> PathBuf {
    std::fs::create_dir_all(dir).unwrap();
    crate::source::safetensors::write_file(&dir.join("model.safetensors"), tensors).unwrap();
    std::fs::write(dir.join("config.json"), "{}").unwrap();
    dir.to_path_buf()
}

fn import(model: &Path, out: &Path, encoding: Encoding, base: Option<&Store>) -> Store {
    let m = HfModel::open(model).unwrap();
    let decisions: Vec<ImportDecision> = m
        .tensors()
        .map(|r| ImportDecision {
            uuid: default_uuid(&r.tensor.name),
            include: true,
        })
        .collect();
    let root = out.join("model.gmat");
    let opts = ImportOptions { encoding, base };
    import::run(
        &m,
        model,
        &decisions,
        Default::default(),
        &root,
        &opts,
        true,
    )
    .unwrap();
    Store::open(&root).unwrap()
}

/// Every tensor decodes to the source bytes, whole and in odd windows, hash-checked.
fn assert_decodes(store: &Store, tensors: &[Tensor]) {
    assert_eq!(store.manifest.tensors.len(), tensors.len());
    for (name, _, _, bytes) in tensors {
        let e = store.manifest.by_name(name).unwrap();
        assert_eq!(e.hash, hash::content_hash(bytes), "{name}");
        let got = store.reader(e).unwrap().read_all().unwrap();
        assert!(got == *bytes, "{name} ({}) does not round-trip", e.encoding);
        // Windows forward, backward and across chunk boundaries.
        let mut r = store.reader(e).unwrap();
        let n = bytes.len();
        let cuts = [
            (0, n / 3),
            (n / 5, n / 2),
            (n / 2, n),
            (0, n.min(7)),
            (n / 3, n / 3),
        ];
        for (s, t) in cuts {
            assert_eq!(
                r.window(s, t).unwrap(),
                &bytes[s..t],
                "{name} window {s}..{t}"
            );
        }
        assert!(r.window(0, n + 1).is_err());
        r.finish().unwrap();
        // Decoded into the caller's buffer, as a delta reads its base (a reader that does not
        // hash): whole, on chunk boundaries or not.
        let mut r = crate::store::TensorReader::open(store, e, false).unwrap();
        for (s, t) in [(0, n), (n / 2, n), (n / 3, n / 2), (0, 0)] {
            let mut out = vec![0u8; t - s];
            r.read_into(s, t, &mut out).unwrap();
            assert!(out == bytes[s..t], "{name} read_into {s}..{t}");
        }
        assert!(r.read_into(0, n, &mut [0u8; 1]).is_err() || n == 1);
        // Windows read with read-ahead of the next one, as export does: forward steps that
        // overlap by a few bytes, then a read-ahead that is not used (a jump back).
        // Meanwhile a second reader of the tensor preloads its first window, as export does for
        // the next tensor; it must then read and hash-check as if it had not.
        let mut r = store.reader(e).unwrap();
        let mut other = store.reader(e).unwrap();
        let step = (n / 4).max(1);
        let mut s = 0;
        while s < n {
            let t = (s + step).min(n);
            let next = (t < n).then(|| (t.saturating_sub(3).max(s + 1), (t + step).min(n)));
            let side = || {
                if s == 0 {
                    other.preload(0, step.min(n))
                }
            };
            let got = r.with_window(s, t, next, side, |b| b.to_vec()).unwrap();
            assert_eq!(got, &bytes[s..t], "{name} with_window {s}..{t}");
            s = next.map_or(n, |(a, _)| a);
        }
        let got = r.with_window(0, n / 2, Some((n / 2, n)), || {}, |b| b.to_vec());
        assert_eq!(got.unwrap(), &bytes[..n / 2]);
        assert_eq!(r.window(0, n.min(10)).unwrap(), &bytes[..n.min(10)]);
        r.finish().unwrap();
        assert_eq!(&other.read_all().unwrap(), bytes, "{name} after preload");
        // The same through verify-style reading (no window at all).
        store.reader(e).unwrap().finish().unwrap();
    }
}

fn awkward_tensors(rng: &mut Rng) -> Vec<Tensor> {
    let big = codec::CHUNK_BYTES / 2 * 2 + 3; // BF16 elements: two chunks and an odd tail
    let rand = |rng: &mut Rng, n: usize| (0..n).map(|_| rng.next() as u8).collect::<Vec<u8>>();
    vec![
        ("empty".into(), "BF16", vec![0], vec![]),
        ("empty2d".into(), "F32", vec![3, 0], vec![]),
        ("one_bf16".into(), "BF16", vec![1], vec![0x80, 0x3f]),
        ("one_u8".into(), "U8", vec![1], vec![7]),
        ("odd_f16".into(), "F16", vec![3, 7], rand(rng, 42)),
        ("odd_u8".into(), "U8", vec![1001], rand(rng, 1001)),
        ("zeros".into(), "BF16", vec![4096], vec![0; 8192]),
        (
            "constant".into(),
            "F32",
            vec![5, 1000],
            [0, 0, 0x80, 0x3f].repeat(5000),
        ),
        ("random_f32".into(), "F32", vec![70_001], rand(rng, 280_004)),
        ("random_i64".into(), "I64", vec![3, 333], rand(rng, 7992)),
        (
            "weights".into(),
            "BF16",
            vec![big as u64],
            rng.normal_bf16(big, 0.02),
        ),
        (
            "norm".into(),
            "BF16",
            vec![4099],
            rng.normal_bf16(4099, 1.0),
        ),
    ]
}

#[test]
fn every_encoding_round_trips_awkward_tensors() {
    let d = tempfile::tempdir().unwrap();
    let mut rng = Rng(0x5eed);
    let tensors = awkward_tensors(&mut rng);
    let model = write_model(&d.path().join("m"), &tensors);
    for enc in [Encoding::Raw, Encoding::Zstd] {
        let store = import(&model, &d.path().join(enc.name()), enc, None);
        assert!(store.manifest.tensors.iter().all(|t| t.encoding == enc));
        assert_decodes(&store, &tensors);
        if enc == Encoding::Zstd {
            let w = store.manifest.by_name("weights").unwrap();
            assert!(w.stored_bytes < w.raw_bytes * 3 / 4, "{}", w.stored_bytes);
            let z = store.manifest.by_name("zeros").unwrap();
            assert!(z.stored_bytes < 1024, "{}", z.stored_bytes);
        }
    }
    // Re-running an import keeps complete files (same inode) and gives the same manifest.
    let root = d.path().join("zstd");
    let before = std::fs::read(root.join("model.gmat/metadata.json")).unwrap();
    import(&model, &root, Encoding::Zstd, None);
    assert_eq!(
        before,
        std::fs::read(root.join("model.gmat/metadata.json")).unwrap()
    );
}

/// A fine-tune of `base`: some tensors identical, some nudged (delta), one renamed copy
/// (reference by content), one reshaped, one unrelated.
fn finetune(base: &[Tensor], rng: &mut Rng) -> Vec<Tensor> {
    let mut out = Vec::new();
    for (name, dtype, shape, bytes) in base {
        let b = match name.as_str() {
            // Low mantissa bits change, as a small relative update does.
            "weights" | "norm" | "random_f32" | "odd_f16" | "constant" => bytes
                .iter()
                .enumerate()
                .map(|(i, &v)| {
                    if i % 2 == 0 {
                        v ^ (rng.next() as u8 & 3)
                    } else {
                        v
                    }
                })
                .collect(),
            // Unrelated content: a delta would not pay.
            "random_i64" => (0..bytes.len()).map(|_| rng.next() as u8).collect(),
            _ => bytes.clone(),
        };
        out.push((name.clone(), *dtype, shape.clone(), b));
    }
    if !out.iter().any(|t| t.0 == "renamed_norm") {
        let w = base.iter().find(|t| t.0 == "norm").unwrap();
        out.push(("renamed_norm".into(), w.1, w.2.clone(), w.3.clone()));
    }
    let odd = out.iter_mut().find(|t| t.0 == "odd_u8").unwrap();
    odd.2 = vec![7, 143];
    odd.3 = odd.3[..1001].to_vec();
    out
}

#[test]
fn fine_tunes_share_reference_and_delta_against_their_base() {
    let d = tempfile::tempdir().unwrap();
    let mut rng = Rng(0xfeed);
    let base_t = awkward_tensors(&mut rng);
    let ft_t = finetune(&base_t, &mut rng);
    let ft2_t = finetune(&ft_t, &mut rng);
    let base_m = write_model(&d.path().join("base-hf"), &base_t);
    let ft_m = write_model(&d.path().join("ft-hf"), &ft_t);
    let ft2_m = write_model(&d.path().join("ft2-hf"), &ft2_t);
    for enc in [Encoding::Zstd, Encoding::Raw] {
        let dir = d.path().join(enc.name());
        let base = import(&base_m, &dir.join("base"), enc, None);
        let ft = import(&ft_m, &dir.join("ft"), enc, Some(&base));
        assert_decodes(&ft, &ft_t);
        let holding = |s: &Store, n: &str| s.manifest.by_name(n).unwrap().holding();
        assert_eq!(holding(&ft, "one_u8"), Holding::Linked);
        assert_eq!(holding(&ft, "zeros"), Holding::Linked);
        assert_eq!(holding(&ft, "renamed_norm"), Holding::Referenced);
        assert_eq!(holding(&ft, "weights"), Holding::Delta);
        assert_eq!(holding(&ft, "random_f32"), Holding::Delta);
        assert_eq!(holding(&ft, "random_i64"), Holding::Own);
        // Same bytes under another shape: not linkable (the file header has the shape).
        assert_eq!(holding(&ft, "odd_u8"), Holding::Referenced);
        // Hard links share the inode with the base's file.
        use std::os::unix::fs::MetadataExt;
        let e = ft.manifest.by_name("zeros").unwrap();
        let ino = |s: &Store| {
            std::fs::metadata(Store::tensor_path(&s.root, &e.uuid))
                .unwrap()
                .ino()
        };
        assert_eq!(ino(&ft), ino(&base));
        // A delta is much smaller than the tensor alone.
        let w = ft.manifest.by_name("weights").unwrap();
        assert!(w.stored_bytes < w.raw_bytes / 3, "{}", w.stored_bytes);
        assert_eq!(
            ft.manifest.base.as_ref().unwrap().path,
            "../../base/model.gmat"
        );
        // A fine-tune of the fine-tune: deltas of deltas and references through two stores.
        let ft2 = import(&ft2_m, &dir.join("ft2"), enc, Some(&ft));
        assert_decodes(&ft2, &ft2_t);
        assert_eq!(holding(&ft2, "weights"), Holding::Delta);
        assert_eq!(holding(&ft2, "renamed_norm"), Holding::Referenced);
        // Deleting the second fine-tune leaves the others intact.
        std::fs::remove_dir_all(dir.join("ft2")).unwrap();
        assert_decodes(&Store::open(&dir.join("ft/model.gmat")).unwrap(), &ft_t);
        assert_decodes(&Store::open(&dir.join("base/model.gmat")).unwrap(), &base_t);
    }
}

fn read_err(store: &Store, name: &str) -> String {
    let e = store.manifest.by_name(name).unwrap();
    let r = store.reader(e).and_then(|r| r.read_all());
    format!("{:#}", r.expect_err("reading fails"))
}

#[test]
fn missing_changed_or_corrupt_bases_are_clear_errors() {
    let d = tempfile::tempdir().unwrap();
    let mut rng = Rng(0xbad);
    let base_t = awkward_tensors(&mut rng);
    let ft_t = finetune(&base_t, &mut rng);
    let base_m = write_model(&d.path().join("base-hf"), &base_t);
    let ft_m = write_model(&d.path().join("ft-hf"), &ft_t);
    let base = import(&base_m, &d.path().join("base"), Encoding::Zstd, None);
    import(&ft_m, &d.path().join("ft"), Encoding::Zstd, Some(&base));
    let ft_root = d.path().join("ft/model.gmat");

    // A corrupt base file under a delta: the error says the base is at fault.
    let w = base.manifest.by_name("weights").unwrap();
    let p = Store::tensor_path(&base.root, &w.uuid);
    let good = std::fs::read(&p).unwrap();
    let mut bad = good.clone();
    let n = bad.len();
    bad[n - 100] ^= 0x10;
    std::fs::write(&p, &bad).unwrap();
    let ft = Store::open(&ft_root).unwrap();
    let e = read_err(&ft, "weights");
    assert!(e.contains("base store") && e.contains("corrupt"), "{e}");
    std::fs::write(&p, &good).unwrap();

    // A corrupt delta file: the fine-tune's tensor is named as corrupt.
    let fw = ft.manifest.by_name("weights").unwrap();
    let fp = Store::tensor_path(&ft.root, &fw.uuid);
    let fgood = std::fs::read(&fp).unwrap();
    let mut fbad = fgood.clone();
    let n = fbad.len();
    fbad[n - 50] ^= 0x01;
    std::fs::write(&fp, &fbad).unwrap();
    let e = read_err(&ft, "weights");
    assert!(e.contains("tensor weights is corrupt"), "{e}");
    std::fs::write(&fp, &fgood).unwrap();

    // The base re-imported with other content: deltas and references name the changed base.
    let mut changed = base_t.clone();
    for t in changed
        .iter_mut()
        .filter(|t| t.0 == "weights" || t.0 == "norm")
    {
        t.3[0] ^= 1;
    }
    write_model(&base_m, &changed);
    // Open stores hold shared locks that keep an import out: close them first.
    drop((ft, base));
    import(&base_m, &d.path().join("base"), Encoding::Zstd, None);
    let ft = Store::open(&ft_root).unwrap();
    for name in ["weights", "renamed_norm"] {
        let e = read_err(&ft, name);
        assert!(
            e.contains("has changed") && e.contains("base/model.gmat"),
            "{e}"
        );
    }
    // Hard-linked tensors do not depend on the base at all.
    assert_eq!(
        ft.reader(ft.manifest.by_name("zeros").unwrap())
            .unwrap()
            .read_all()
            .unwrap(),
        vec![0; 8192]
    );

    // The base gone: the error names where it was expected.
    std::fs::remove_dir_all(d.path().join("base")).unwrap();
    let ft = Store::open(&ft_root).unwrap();
    let e = read_err(&ft, "weights");
    assert!(
        e.contains("base store") && e.contains("cannot be opened"),
        "{e}"
    );
    assert_eq!(
        ft.reader(ft.manifest.by_name("zeros").unwrap())
            .unwrap()
            .read_all()
            .unwrap(),
        vec![0; 8192]
    );
}

#[test]
fn manifests_with_inconsistent_base_fields_are_refused() {
    let d = tempfile::tempdir().unwrap();
    let mut rng = Rng(7);
    let t = awkward_tensors(&mut rng);
    let store = import(
        &write_model(&d.path().join("m"), &t),
        d.path(),
        Encoding::Zstd,
        None,
    );
    let path = store.root.join(MANIFEST);
    let good: serde_json::Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    let nil = "00000000-0000-0000-0000-000000000000";
    type Edit = Box<dyn Fn(&mut serde_json::Value)>;
    let cases: Vec<(Edit, &str)> = vec![
        (
            Box::new(|m| m["tensors"][0]["encoding"] = "xor_zstd".into()),
            "needs a base tensor",
        ),
        (
            Box::new(move |m| {
                m["tensors"][6]["encoding"] = "base_ref".into();
                m["tensors"][6]["stored_bytes"] = 0.into();
                let h = m["tensors"][6]["hash"].clone();
                m["tensors"][6]["base"] = serde_json::json!({"uuid": nil, "hash": h});
            }),
            "names no base store",
        ),
        (
            Box::new(move |m| {
                m["tensors"][6]["base"] =
                    serde_json::json!({"uuid": nil, "hash": format!("blake3:{}", "0".repeat(64))})
            }),
            "hashes differ",
        ),
        (
            Box::new(|m| m["tensors"][6]["raw_bytes"] = 3.into()),
            "does not match shape",
        ),
        (
            Box::new(|m| m["base"] = serde_json::json!({"path": "", "model_hash": "x"})),
            "model hash",
        ),
        (
            Box::new(|m| m["tensors"][0]["encoding"] = "lz4".into()),
            "unknown variant",
        ),
    ];
    for (edit, want) in cases {
        let mut m = good.clone();
        edit(&mut m);
        std::fs::write(&path, serde_json::to_vec(&m).unwrap()).unwrap();
        let e = format!("{:#}", Store::open(&store.root).err().expect("refused"));
        assert!(e.contains(want), "{want}: {e}");
    }
}
