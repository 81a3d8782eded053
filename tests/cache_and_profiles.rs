//! The quantized-tensor cache and several profiles in one pass, on the real binary: cached and
//! one-pass exports must be byte-identical to plain separate exports, any change of what
//! decides a tensor's bytes must miss, and a damaged entry must be ignored and written again.

mod common;

use std::path::{Path, PathBuf};

use common::*;

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// A store of example/tiny_llm in `dir`.
fn store(dir: &Path) -> PathBuf {
    let example = repo().join("example/tiny_llm");
    gmat_ok(&["import", "-q", "--model", s(&example), "-o", s(dir)]);
    dir.join("model.gmat")
}

/// Runs an export with the cache at `cache`; returns stderr (the summary).
fn export_cached(cache: &Path, args: &[&str]) -> String {
    let mut all = vec!["export"];
    all.extend_from_slice(args);
    let out = gmat_ok_env(
        &all,
        &[("GMAT_CACHE_DIR", s(cache)), ("GMAT_CACHE_SIZE", "1G")],
    );
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// "N from the cache" of the summary line of `file`.
fn from_cache(summary: &str, file: &str) -> usize {
    let line = summary
        .lines()
        .find(|l| l.starts_with("wrote ") && l.contains(file))
        .unwrap_or_else(|| panic!("no summary line for {file} in {summary}"));
    let before = line.split(" from the cache").next().unwrap();
    before
        .rsplit(' ')
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no cache count in {line}"))
}

fn entries(cache: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(cache)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "gq"))
        .collect();
    v.sort();
    v
}

fn read(p: &Path) -> Vec<u8> {
    std::fs::read(p).unwrap()
}

#[test]
fn cached_exports_equal_uncached_ones_and_any_key_change_misses() {
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    let store = store(dir.path());
    let st = s(&store);
    let plain = dir.path().join("plain.gguf");
    gmat_ok(&["export", "-q", "-m", st, "-t", "Q4_K_M", "-o", s(&plain)]);

    let first = dir.path().join("first.gguf");
    let log = export_cached(&cache, &["-m", st, "-t", "Q4_K_M", "-o", s(&first)]);
    assert_eq!(from_cache(&log, "first.gguf"), 0, "{log}");
    let n = entries(&cache).len();
    assert!(n > 5, "the quantized tensors are cached: {n}");
    assert_eq!(
        read(&first),
        read(&plain),
        "filling the cache changes nothing"
    );

    let again = dir.path().join("again.gguf");
    let log = export_cached(&cache, &["-m", st, "-t", "Q4_K_M", "-o", s(&again)]);
    let hits = from_cache(&log, "again.gguf");
    assert!(
        hits >= n,
        "every quantized tensor from the cache: {hits} of {n}\n{log}"
    );
    assert_eq!(
        read(&again),
        read(&plain),
        "cached bytes are the same bytes"
    );

    // one tensor's type changed: only that tensor misses
    let one = dir.path().join("one.gguf");
    let log = export_cached(
        &cache,
        &[
            "-m",
            st,
            "-t",
            "Q4_K_M",
            "--tensor-type",
            "blk.1.ffn_up=q8_0",
            "-o",
            s(&one),
        ],
    );
    assert_eq!(from_cache(&log, "one.gguf"), hits - 1, "{log}");
    let one_plain = dir.path().join("one-plain.gguf");
    gmat_ok(&[
        "export",
        "-q",
        "-m",
        st,
        "-t",
        "Q4_K_M",
        "--tensor-type",
        "blk.1.ffn_up=q8_0",
        "-o",
        s(&one_plain),
    ]);
    assert_eq!(read(&one), read(&one_plain));

    // another file type: other types miss; --no-cache neither reads nor writes
    let before = entries(&cache).len();
    let log = export_cached(
        &cache,
        &["-m", st, "-t", "Q5_0", "--no-cache", "-o", s(&one)],
    );
    assert!(!log.contains("from the cache"), "{log}");
    assert_eq!(entries(&cache).len(), before);
}

#[test]
fn a_source_tensor_with_other_content_misses() {
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    let a = store(&dir.path().join("a"));
    let log = export_cached(
        &cache,
        &[
            "-m",
            s(&a),
            "-t",
            "Q8_0",
            "-o",
            s(&dir.path().join("a.gguf")),
        ],
    );
    assert_eq!(from_cache(&log, "a.gguf"), 0, "{log}");
    // the same model with one weight changed: every tensor but that one is reused
    let hf = dir.path().join("hf");
    std::fs::create_dir_all(&hf).unwrap();
    copy_side_files(&repo().join("example/tiny_llm"), &hf);
    let mut tensors = read_safetensors(&repo().join("example/tiny_llm/model.safetensors"));
    let t = tensors
        .iter_mut()
        .find(|t| t.0 == "model.layers.1.mlp.up_proj.weight")
        .unwrap();
    t.3[0] ^= 0x40;
    write_safetensors(&hf.join("model.safetensors"), &tensors);
    gmat_ok(&[
        "import",
        "-q",
        "--model",
        s(&hf),
        "-o",
        s(&dir.path().join("b")),
    ]);
    let b = dir.path().join("b/model.gmat");
    let log = export_cached(
        &cache,
        &[
            "-m",
            s(&b),
            "-t",
            "Q8_0",
            "-o",
            s(&dir.path().join("b.gguf")),
        ],
    );
    let all = from_cache(
        &export_cached(
            &cache,
            &[
                "-m",
                s(&a),
                "-t",
                "Q8_0",
                "-o",
                s(&dir.path().join("a2.gguf")),
            ],
        ),
        "a2.gguf",
    );
    assert_eq!(from_cache(&log, "b.gguf"), all - 1, "{log}");
    let plain = dir.path().join("b-plain.gguf");
    gmat_ok(&["export", "-q", "-m", s(&b), "-t", "Q8_0", "-o", s(&plain)]);
    assert_eq!(read(&dir.path().join("b.gguf")), read(&plain));
}

#[test]
fn a_damaged_entry_is_ignored_and_written_again() {
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    let store = store(dir.path());
    let st = s(&store);
    let plain = dir.path().join("plain.gguf");
    gmat_ok(&["export", "-q", "-m", st, "-t", "Q6_K", "-o", s(&plain)]);
    let out = dir.path().join("out.gguf");
    export_cached(&cache, &["-m", st, "-t", "Q6_K", "-o", s(&out)]);
    let all = entries(&cache);
    let good: Vec<Vec<u8>> = all.iter().map(|p| read(p)).collect();
    // flip a payload byte of one entry, truncate another
    let mut bytes = good[0].clone();
    let last = bytes.len() - 1;
    bytes[last] ^= 0x10;
    std::fs::write(&all[0], &bytes).unwrap();
    std::fs::write(&all[1], &good[1][..good[1].len() - 3]).unwrap();
    let log = export_cached(&cache, &["-m", st, "-t", "Q6_K", "-o", s(&out)]);
    assert!(log.contains("is damaged"), "{log}");
    assert_eq!(from_cache(&log, "out.gguf"), all.len() - 2, "{log}");
    assert_eq!(
        read(&out),
        read(&plain),
        "the damaged entries' tensors were quantized again"
    );
    assert_eq!(
        read(&all[0]),
        good[0],
        "the damaged entry was written again"
    );
    assert_eq!(read(&all[1]), good[1], "the short entry was written again");
    let log = export_cached(&cache, &["-m", st, "-t", "Q6_K", "-o", s(&out)]);
    assert_eq!(from_cache(&log, "out.gguf"), all.len(), "{log}");
}

#[test]
fn the_cache_is_kept_under_its_size_limit() {
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    let store = store(dir.path());
    let out = dir.path().join("out.gguf");
    gmat_ok_env(
        &[
            "export",
            "-q",
            "-m",
            s(&store),
            "-t",
            "Q8_0",
            "-o",
            s(&out),
            "--cache-size",
            "200K",
        ],
        &[("GMAT_CACHE_DIR", s(&cache))],
    );
    let total: u64 = entries(&cache)
        .iter()
        .map(|p| std::fs::metadata(p).unwrap().len())
        .sum();
    assert!(total > 0 && total <= 200_000, "{total}");
}

#[test]
fn several_profiles_in_one_pass_equal_separate_exports() {
    let dir = tempfile::tempdir().unwrap();
    let store = store(dir.path());
    let st = s(&store);
    let types = ["Q4_K_M", "Q6_K", "Q8_0", "BF16"];
    let sep = dir.path().join("sep");
    std::fs::create_dir_all(&sep).unwrap();
    for t in types {
        let o = sep.join(format!("{t}.gguf"));
        gmat_ok(&["export", "-q", "-m", st, "-t", t, "-o", s(&o)]);
    }
    // a folder: NAME-TYPE.gguf in it
    let one = dir.path().join("one");
    std::fs::create_dir_all(&one).unwrap();
    let out = gmat_ok(&["export", "-m", st, "-t", &types.join(","), "-o", s(&one)]);
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(log.contains("shared with an earlier file"), "{log}");
    let mut names: Vec<String> = std::fs::read_dir(&one)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names.len(), types.len(), "{names:?}");
    for t in types {
        let got = names
            .iter()
            .find(|n| n.ends_with(&format!("-{t}.gguf")))
            .unwrap();
        assert_eq!(
            read(&one.join(got)),
            read(&sep.join(format!("{t}.gguf"))),
            "{t} in one pass"
        );
    }
    // a name template, and the config's profiles
    let cfg = dir.path().join("profiles.json");
    std::fs::write(&cfg, r#"{"quantization": {"profiles": ["Q8_0", "Q6_K"]}}"#).unwrap();
    let tpl = dir.path().join("tpl-{type}.gguf");
    gmat_ok(&["export", "-q", "-m", st, "-c", s(&cfg), "-o", s(&tpl)]);
    for t in ["Q8_0", "Q6_K"] {
        assert_eq!(
            read(&dir.path().join(format!("tpl-{t}.gguf"))),
            read(&sep.join(format!("{t}.gguf")))
        );
    }
}

#[test]
fn several_profiles_need_a_folder_or_a_template() {
    let dir = tempfile::tempdir().unwrap();
    let store = store(dir.path());
    let e = gmat_err(&[
        "export",
        "-m",
        s(&store),
        "-t",
        "Q8_0,Q6_K",
        "-o",
        s(&dir.path().join("x.gguf")),
    ]);
    assert!(e.contains("{type}"), "{e}");
    let e = gmat_err(&["export", "-m", s(&store), "-t", "Q8_0,Q8_0"]);
    assert!(e.contains("twice"), "{e}");
    let cfg = dir.path().join("both.json");
    std::fs::write(
        &cfg,
        r#"{"quantization": {"default_type": "Q8_0", "profiles": ["Q6_K"]}}"#,
    )
    .unwrap();
    let e = gmat_err(&["export", "-m", s(&store), "-c", s(&cfg)]);
    assert!(e.contains("not both"), "{e}");
    assert!(!dir.path().join("x.gguf").exists());
}
