//! Bad input: one clear error, exit code 1, and no output that looks valid.

mod common;

use common::*;

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn tiny_model(dir: &Path) -> PathBuf {
    let m = dir.join("m");
    std::fs::create_dir_all(&m).unwrap();
    let example = repo().join("example/tiny_llm");
    copy_side_files(&example, &m);
    std::fs::copy(
        example.join("model.safetensors"),
        m.join("model.safetensors"),
    )
    .unwrap();
    m
}

#[test]
fn missing_config_json() {
    let d = tempfile::tempdir().unwrap();
    let m = tiny_model(d.path());
    std::fs::remove_file(m.join("config.json")).unwrap();
    let e = gmat_err(&["import", "--model", s(&m), "-o", s(&d.path().join("o"))]);
    assert!(e.contains("config.json"), "{e}");
    assert!(!d.path().join("o/model.gmat/metadata.json").exists());
}

#[test]
fn truncated_safetensors() {
    let d = tempfile::tempdir().unwrap();
    let m = tiny_model(d.path());
    let f = m.join("model.safetensors");
    let bytes = std::fs::read(&f).unwrap();
    std::fs::write(&f, &bytes[..bytes.len() - 1000]).unwrap();
    let e = gmat_err(&["import", "--model", s(&m), "-o", s(&d.path().join("o"))]);
    assert!(
        e.contains("model.safetensors") && e.contains("truncated"),
        "{e}"
    );
    assert!(!d.path().join("o/model.gmat/metadata.json").exists());
}

#[test]
fn header_offsets_past_the_file() {
    let d = tempfile::tempdir().unwrap();
    let m = tiny_model(d.path());
    write_safetensors(
        &m.join("model.safetensors"),
        &[("x".into(), "F32".into(), vec![4], vec![0; 16])],
    );
    // Rewrite the header so the tensor claims 64 bytes while the file holds 16.
    let h = br#"{"x":{"dtype":"F32","shape":[16],"data_offsets":[0,64]}}"#;
    let mut out = (h.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(h);
    out.extend_from_slice(&[0; 16]);
    std::fs::write(m.join("model.safetensors"), out).unwrap();
    let e = gmat_err(&["import", "--model", s(&m), "-o", s(&d.path().join("o"))]);
    assert!(e.contains("model.safetensors"), "{e}");
    assert!(!d.path().join("o/model.gmat/metadata.json").exists());
}

#[test]
fn import_config_target_that_is_not_a_uuid() {
    let d = tempfile::tempdir().unwrap();
    let m = tiny_model(d.path());
    let cfg = d.path().join("import.json");
    std::fs::write(
        &cfg,
        r#"{"tensor_map": [{"source": "lm_head.weight", "target": "../../etc/x"}]}"#,
    )
    .unwrap();
    let e = gmat_err(&[
        "import",
        "--model",
        s(&m),
        "--config",
        s(&cfg),
        "-o",
        s(&d.path().join("o")),
    ]);
    assert!(e.contains("../../etc/x") && e.contains("not a UUID"), "{e}");
    assert!(
        !d.path().join("etc").exists() && !d.path().join("o/model.gmat/metadata.json").exists()
    );
}

#[test]
fn unknown_type_in_export_config() {
    let d = tempfile::tempdir().unwrap();
    let m = tiny_model(d.path());
    gmat_ok(&[
        "import",
        "-q",
        "--model",
        s(&m),
        "-o",
        s(&d.path().join("st")),
    ]);
    let cfg = d.path().join("export.json");
    std::fs::write(&cfg, r#"{"quantization": {"default_type": "Q9_K"}}"#).unwrap();
    let out = d.path().join("o.gguf");
    let e = gmat_err(&[
        "export",
        "--model",
        s(&d.path().join("st")),
        "--config",
        s(&cfg),
        "-o",
        s(&out),
    ]);
    assert!(e.contains("Q9_K") && e.contains("default_type"), "{e}");
    std::fs::write(
        &cfg,
        r#"{"quantization": {"per_tensor": {"output.weight": "Q9"}}}"#,
    )
    .unwrap();
    let e = gmat_err(&[
        "export",
        "--model",
        s(&d.path().join("st")),
        "--config",
        s(&cfg),
        "-o",
        s(&out),
    ]);
    assert!(e.contains("output.weight") && e.contains("Q9"), "{e}");
    std::fs::write(&cfg, r#"{"quantisation": {}}"#).unwrap();
    let e = gmat_err(&[
        "export",
        "--model",
        s(&d.path().join("st")),
        "--config",
        s(&cfg),
        "-o",
        s(&out),
    ]);
    assert!(e.contains("quantisation"), "{e}");
    assert!(!out.exists());
}

#[test]
fn corrupted_store_and_nan_weights_leave_no_output() {
    let d = tempfile::tempdir().unwrap();
    let m = tiny_model(d.path());
    // NaN in a weight: the export names the tensor and writes nothing.
    let mut tensors = read_safetensors(&m.join("model.safetensors"));
    let t = tensors
        .iter_mut()
        .find(|t| t.0 == "model.layers.1.mlp.down_proj.weight")
        .unwrap();
    t.3[10] = 0xc0;
    t.3[11] = 0x7f; // bf16 0x7fc0 = NaN
    write_safetensors(&m.join("model.safetensors"), &tensors);
    gmat_ok(&[
        "import",
        "-q",
        "--model",
        s(&m),
        "-o",
        s(&d.path().join("st")),
    ]);
    let out = d.path().join("o.gguf");
    let e = gmat_err(&[
        "export",
        "--model",
        s(&d.path().join("st")),
        "--type",
        "Q8_0",
        "-o",
        s(&out),
    ]);
    assert!(
        e.contains("model.layers.1.mlp.down_proj.weight") && e.contains("NaN"),
        "{e}"
    );
    assert!(!out.exists());
    let left: Vec<_> = std::fs::read_dir(d.path())
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".gmat-tmp") || n.ends_with(".lock"))
        .collect();
    assert!(left.is_empty(), "temporary or lock files left: {left:?}");
    // A flipped byte in a stored tensor: the content hash catches it.
    let m2 = tiny_model(&d.path().join("b"));
    gmat_ok(&[
        "import",
        "-q",
        "--model",
        s(&m2),
        "-o",
        s(&d.path().join("st2")),
    ]);
    let tdir = d.path().join("st2/model.gmat/tensors");
    let victim = std::fs::read_dir(&tdir)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let mut bytes = std::fs::read(&victim).unwrap();
    let n = bytes.len();
    bytes[n - 1] ^= 0x55;
    std::fs::write(&victim, bytes).unwrap();
    let e = gmat_err(&["export", "--model", s(&d.path().join("st2")), "-o", s(&out)]);
    assert!(e.contains("corrupt"), "{e}");
    assert!(!out.exists());
}

#[test]
fn unsupported_architecture_is_named_before_any_output() {
    let d = tempfile::tempdir().unwrap();
    let m = tiny_model(d.path());
    let cfg = m.join("config.json");
    let text = std::fs::read_to_string(&cfg).unwrap();
    std::fs::write(&cfg, text.replace("LlamaForCausalLM", "MambaForCausalLM")).unwrap();
    // The store is architecture-agnostic: import keeps the model as it is.
    let st = d.path().join("st");
    gmat_ok(&["import", "-q", "--model", s(&m), "-o", s(&st)]);
    let out = d.path().join("out.gguf");
    let cfg_out = d.path().join("x.json");
    for extra in [
        &[][..],
        &["--dry-run"][..],
        &["--generate-config", s(&cfg_out)][..],
    ] {
        let mut args = vec!["export", "--model", s(&st), "--type", "Q8_0", "-o", s(&out)];
        args.extend_from_slice(extra);
        let e = gmat_err(&args);
        assert!(
            e.contains("MambaForCausalLM is not supported")
                && e.contains("LlamaForCausalLM")
                && e.contains("Gemma3ForCausalLM")
                && e.contains("BertModel"),
            "{e}"
        );
        assert_eq!(e.lines().count(), 1, "one message: {e}");
    }
    assert!(!out.exists());
    assert!(!cfg_out.exists());
}

// ---------------------------------------------------------------------------------------------
// Issue 11: nothing lost, nothing misleading.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn import_tiny(d: &Path) -> (PathBuf, PathBuf) {
    let m = tiny_model(d);
    let st = d.join("st");
    gmat_ok(&["import", "-q", "--model", s(&m), "-o", s(&st)]);
    (m, st.join("model.gmat"))
}

fn spawn(args: &[&str]) -> Child {
    Command::new(env!("CARGO_BIN_EXE_gmat"))
        // no cache: a cached tensor is not read from the store (see common::gmat)
        .env("GMAT_CACHE_SIZE", "0")
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("gmat starts")
}

/// Waits for `child` at most `secs` seconds; a hang is a test failure, not a stuck test.
fn finish(mut child: Child, secs: u64) -> (bool, String) {
    let start = Instant::now();
    loop {
        if let Some(_status) = child.try_wait().unwrap() {
            let out = child.wait_with_output().unwrap();
            return (
                out.status.success(),
                String::from_utf8_lossy(&out.stderr).into_owned(),
            );
        }
        if start.elapsed() > Duration::from_secs(secs) {
            let _ = child.kill();
            panic!("gmat did not finish within {secs}s (a hang)");
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn signal(child: &Child, sig: i32) {
    // SAFETY: kill on our own child's pid.
    unsafe {
        libc::kill(child.id() as i32, sig);
    }
}

/// Whether some process holds a flock on the file `path` (Linux /proc/locks).
fn flock_held(path: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    let Ok(m) = std::fs::metadata(path) else {
        return false;
    };
    let ino = format!(":{}", m.ino());
    std::fs::read_to_string("/proc/locks")
        .unwrap_or_default()
        .lines()
        .any(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            f.get(1) == Some(&"FLOCK") && f.get(5).is_some_and(|id| id.ends_with(&ino))
        })
}

/// Starts `first`, stops it while it holds the lock file `lock`, runs `second` to the end,
/// then lets `first` finish. Returns both outcomes (first, second). Retries when `first` was
/// too quick to be caught holding the lock.
fn race_with_first_holding(
    first: &[&str],
    second: &[&str],
    lock: &Path,
    reset: &dyn Fn(),
) -> ((bool, String), (bool, String)) {
    for _ in 0..40 {
        reset();
        let a = spawn(first);
        let start = Instant::now();
        let mut caught = false;
        while start.elapsed() < Duration::from_secs(30) {
            if flock_held(lock) {
                signal(&a, libc::SIGSTOP);
                caught = flock_held(lock);
                if !caught {
                    signal(&a, libc::SIGCONT);
                }
                break;
            }
            std::thread::yield_now();
        }
        if !caught {
            let _ = finish(a, 60);
            continue;
        }
        let b = finish(spawn(second), 60);
        signal(&a, libc::SIGCONT);
        let a = finish(a, 60);
        return (a, b);
    }
    panic!("the first gmat was never caught holding {}", lock.display());
}

#[test]
fn two_exports_to_one_file_one_wins_and_the_file_is_complete() {
    let d = tempfile::tempdir().unwrap();
    let (_, st) = import_tiny(d.path());
    let reference = d.path().join("ref.gguf");
    gmat_ok(&[
        "export",
        "-q",
        "--model",
        s(&st),
        "--type",
        "Q4_K_M",
        "-o",
        s(&reference),
    ]);
    let out = d.path().join("o.gguf");
    let args = [
        "export",
        "-q",
        "--model",
        s(&st),
        "--type",
        "Q4_K_M",
        "-o",
        s(&out),
    ];
    // Deterministic: the second starts while the first holds the output.
    let lock = d.path().join(".o.gguf.lock");
    let reset = || {
        let _ = std::fs::remove_file(&out);
    };
    let (a, b) = race_with_first_holding(&args, &args, &lock, &reset);
    assert!(a.0, "the first writer fails: {}", a.1);
    assert!(
        !b.0,
        "the second writer reports success while the first holds the file"
    );
    assert!(
        b.1.contains("another gmat process is writing") && b.1.contains("o.gguf"),
        "{}",
        b.1
    );
    assert_eq!(
        std::fs::read(&out).unwrap(),
        std::fs::read(&reference).unwrap()
    );
    // Free-running: whatever the timing, a failure is the lock message and the file is whole.
    for _ in 0..4 {
        let _ = std::fs::remove_file(&out);
        let (x, y) = (spawn(&args), spawn(&args));
        let (x, y) = (finish(x, 60), finish(y, 60));
        assert!(x.0 || y.0, "both failed: {} | {}", x.1, y.1);
        for r in [&x, &y] {
            assert!(
                r.0 || r.1.contains("another gmat process is writing"),
                "{}",
                r.1
            );
        }
        assert_eq!(
            std::fs::read(&out).unwrap(),
            std::fs::read(&reference).unwrap()
        );
    }
    let left: Vec<_> = std::fs::read_dir(d.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with('.'))
        .collect();
    assert!(left.is_empty(), "temporary or lock files left: {left:?}");
}

#[test]
fn two_imports_into_one_store_one_wins_and_the_store_verifies() {
    let d = tempfile::tempdir().unwrap();
    let m = tiny_model(d.path());
    let st = d.path().join("st");
    let lock = st.join("model.gmat/.lock");
    let args = [
        "import",
        "-q",
        "--model",
        s(&m),
        "-o",
        s(&st),
        "--encoding",
        "raw",
    ];
    let reset = || {
        let _ = std::fs::remove_dir_all(&st);
    };
    let (a, b) = race_with_first_holding(&args, &args, &lock, &reset);
    assert!(a.0, "the first import fails: {}", a.1);
    assert!(
        !b.0,
        "the second import reports success while the first writes"
    );
    assert!(
        b.1.contains("another gmat import is writing the store"),
        "{}",
        b.1
    );
    gmat_ok(&["verify", "-q", s(&st)]);
}

#[test]
fn an_import_over_a_store_and_an_export_of_it_exclude_each_other() {
    let d = tempfile::tempdir().unwrap();
    let (m, st) = import_tiny(d.path());
    let lock = st.join(".lock");
    let out = d.path().join("o.gguf");
    let reference = d.path().join("ref.gguf");
    let export = |o: &Path| {
        [
            "export",
            "-q",
            "--model",
            s(&st),
            "--type",
            "Q8_0",
            "-o",
            s(o),
        ]
        .map(String::from)
    };
    let reference_args = export(&reference);
    gmat_ok(&reference_args.iter().map(|a| &**a).collect::<Vec<_>>());
    let export_args = export(&out);
    let export_args: Vec<&str> = export_args.iter().map(|a| &**a).collect();
    let parent = d.path().join("st");
    let import_args = ["import", "-q", "--model", s(&m), "-o", s(&parent)];

    // An export reads the store: an import over it is refused, the export's file is whole.
    let reset = || {
        let _ = std::fs::remove_file(&out);
    };
    let (a, b) = race_with_first_holding(&export_args, &import_args, &lock, &reset);
    assert!(a.0, "the export fails: {}", a.1);
    assert!(!b.0, "the import over a store being read reports success");
    assert!(
        b.1.contains("being read by another gmat process"),
        "{}",
        b.1
    );
    assert_eq!(
        std::fs::read(&out).unwrap(),
        std::fs::read(&reference).unwrap()
    );

    // An import writes the store: an export of it is refused and writes nothing.
    let reset = || {
        let _ = std::fs::remove_file(&out);
    };
    let (a, b) = race_with_first_holding(&import_args, &export_args, &lock, &reset);
    assert!(a.0, "the import fails: {}", a.1);
    assert!(!b.0, "an export of a store being written reports success");
    assert!(
        b.1.contains("import") && (b.1.contains("is writing") || b.1.contains("being written")),
        "{}",
        b.1
    );
    assert!(!out.exists(), "the refused export left its output");
    gmat_ok(&["verify", "-q", s(&st)]);
}

#[test]
fn a_killed_export_leaves_nothing_that_blocks_or_looks_valid() {
    let d = tempfile::tempdir().unwrap();
    let (_, st) = import_tiny(d.path());
    let out = d.path().join("o.gguf");
    let args = [
        "export",
        "-q",
        "--model",
        s(&st),
        "--type",
        "Q4_K_M",
        "-o",
        s(&out),
    ];
    let lock = d.path().join(".o.gguf.lock");
    for _ in 0..40 {
        let a = spawn(&args);
        let start = Instant::now();
        while !flock_held(&lock) && start.elapsed() < Duration::from_secs(30) {
            std::thread::yield_now();
        }
        signal(&a, libc::SIGKILL);
        let _ = finish(a, 30);
        if !out.exists() {
            break;
        }
        std::fs::remove_file(&out).unwrap();
    }
    assert!(!out.exists(), "a killed export left its output");
    gmat_ok(&[
        "export",
        "-q",
        "--model",
        s(&st),
        "--type",
        "Q4_K_M",
        "-o",
        s(&out),
    ]);
    gmat::gguf::GgufFile::open(&out).unwrap();
    let left: Vec<_> = std::fs::read_dir(d.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with('.'))
        .collect();
    assert!(left.is_empty(), "stale temporary or lock files: {left:?}");
}

#[test]
fn symlinks_at_old_temporary_names_and_lock_names_are_never_followed() {
    let d = tempfile::tempdir().unwrap();
    let (m, st) = import_tiny(d.path());
    let victim = d.path().join("victim");
    std::fs::write(&victim, b"precious").unwrap();
    let out = d.path().join("o.gguf");
    std::os::unix::fs::symlink(&victim, d.path().join("o.gguf.partial")).unwrap();
    std::os::unix::fs::symlink(&victim, st.join(".metadata.json.partial")).unwrap();
    let t = std::fs::read_dir(st.join("tensors"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap();
    let name = t
        .file_name()
        .to_string_lossy()
        .replace(".gmat", ".gmat.partial");
    std::fs::remove_file(t.path()).unwrap();
    std::os::unix::fs::symlink(&victim, st.join("tensors").join(name)).unwrap();
    gmat_ok(&[
        "import",
        "-q",
        "--model",
        s(&m),
        "-o",
        s(&d.path().join("st")),
    ]);
    gmat_ok(&[
        "export",
        "-q",
        "--model",
        s(&st),
        "--type",
        "Q8_0",
        "-o",
        s(&out),
    ]);
    assert_eq!(std::fs::read(&victim).unwrap(), b"precious");
    gmat_ok(&["verify", "-q", s(&st)]);
    // A symlink planted at the lock name is refused, not followed.
    let out2 = d.path().join("p.gguf");
    std::os::unix::fs::symlink(&victim, d.path().join(".p.gguf.lock")).unwrap();
    let e = gmat_err(&[
        "export",
        "-q",
        "--model",
        s(&st),
        "--type",
        "Q8_0",
        "-o",
        s(&out2),
    ]);
    assert!(e.contains(".p.gguf.lock"), "{e}");
    assert_eq!(std::fs::read(&victim).unwrap(), b"precious");
    assert!(!out2.exists());
}

#[test]
fn outputs_that_are_inputs_are_refused_before_any_work() {
    let d = tempfile::tempdir().unwrap();
    let (m, st) = import_tiny(d.path());
    let manifest = st.join("metadata.json");
    let before = std::fs::read(&manifest).unwrap();
    let tensor = std::fs::read_dir(st.join("tensors"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let dotted = d.path().join("st/../st/model.gmat/config.json");
    for o in [
        &manifest,
        &tensor,
        &st.join("config.json"),
        &dotted,
        &st.join("new.gguf"),
    ] {
        let e = gmat_err(&["export", "--model", s(&st), "--type", "Q8_0", "-o", s(o)]);
        assert!(e.contains("-o") && e.contains("input"), "{e}");
        let e = gmat_err(&["export", "--model", s(&st), "--generate-config", s(o)]);
        assert!(e.contains("--generate-config"), "{e}");
    }
    let e = gmat_err(&[
        "export",
        "--model",
        s(&st),
        "--mmproj",
        s(&manifest),
        "-o",
        s(&d.path().join("x.gguf")),
    ]);
    assert!(e.contains("--mmproj"), "{e}");
    let link = d.path().join("link.json");
    std::os::unix::fs::symlink(&manifest, &link).unwrap();
    let e = gmat_err(&["export", "--model", s(&st), "--generate-config", s(&link)]);
    assert!(e.contains("input"), "{e}");
    assert_eq!(std::fs::read(&manifest).unwrap(), before);
    gmat_ok(&["verify", "-q", s(&st)]);
    // The export config itself.
    let cfg = d.path().join("c.json");
    std::fs::write(&cfg, r#"{"quantization": {"default_type": "Q8_0"}}"#).unwrap();
    let e = gmat_err(&[
        "export",
        "--model",
        s(&st),
        "--config",
        s(&cfg),
        "--generate-config",
        s(&cfg),
    ]);
    assert!(e.contains("export config"), "{e}");
    // Import: the model's own files.
    for f in ["model.safetensors", "config.json", "tokenizer.json"] {
        let before = std::fs::read(m.join(f)).unwrap();
        let e = gmat_err(&[
            "import",
            "--model",
            s(&m),
            "--generate-config",
            s(&m.join(f)),
        ]);
        assert!(e.contains("--generate-config") && e.contains(f), "{e}");
        let e = gmat_err(&[
            "import",
            "--model",
            s(&m.join("model.safetensors")),
            "--generate-config",
            s(&m.join(f)),
        ]);
        assert!(e.contains("input"), "{e}");
        assert_eq!(std::fs::read(m.join(f)).unwrap(), before);
    }
    // A fine-tune written into its base store, or an export into the base of a fine-tune.
    let e = gmat_err(&[
        "import",
        "--model",
        s(&m),
        "--base",
        s(&st),
        "-o",
        s(&d.path().join("st")),
    ]);
    assert!(e.contains("base store"), "{e}");
    let ft = d.path().join("ft");
    gmat_ok(&[
        "import",
        "-q",
        "--model",
        s(&m),
        "--base",
        s(&st),
        "-o",
        s(&ft),
    ]);
    let e = gmat_err(&[
        "export",
        "--model",
        s(&ft),
        "--type",
        "Q8_0",
        "-o",
        s(&st.join("x.gguf")),
    ]);
    assert!(e.contains("base store"), "{e}");
    // Outputs onto a directory fail before any work and leave nothing.
    let dir = d.path().join("outdir");
    std::fs::create_dir(&dir).unwrap();
    let e = gmat_err(&["export", "--model", s(&st), "--type", "Q8_0", "-o", s(&dir)]);
    assert!(e.contains("is a directory"), "{e}");
    let e = gmat_err(&["export", "--model", s(&st), "--generate-config", s(&dir)]);
    assert!(e.contains("is a directory"), "{e}");
    let e = gmat_err(&["import", "--model", s(&m), "--generate-config", s(&dir)]);
    assert!(e.contains("is a directory"), "{e}");
    // A name ending in `/` names a folder: refused before the work, not at the final rename.
    let slash = format!("{}/", d.path().join("new.gguf").display());
    let e = gmat_err(&["export", "--model", s(&st), "--type", "Q8_0", "-o", &slash]);
    assert!(e.contains("names a folder"), "{e}");
    assert!(!d.path().join("new.gguf").exists());
    assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 0);
    let file = d.path().join("afile");
    std::fs::write(&file, b"x").unwrap();
    let e = gmat_err(&["import", "--model", s(&m), "-o", s(&file)]);
    assert!(e.contains("not a folder"), "{e}");
}

fn corrupt_last_byte(p: &Path) {
    let mut b = std::fs::read(p).unwrap();
    let n = b.len();
    b[n - 1] ^= 0x55;
    std::fs::write(p, b).unwrap();
}

#[test]
fn reimport_and_base_only_reuse_files_that_verify() {
    let d = tempfile::tempdir().unwrap();
    let (m, st) = import_tiny(d.path());
    let t = std::fs::read_dir(st.join("tensors"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    corrupt_last_byte(&t);
    assert!(gmat_err(&["verify", "-q", s(&st)]).contains("corrupt"));
    // Re-import rewrites the corrupt file.
    gmat_ok(&[
        "import",
        "-q",
        "--model",
        s(&m),
        "-o",
        s(&d.path().join("st")),
    ]);
    gmat_ok(&["verify", "-q", s(&st)]);
    // A corrupt base is refused, not hard-linked or referenced.
    let t = std::fs::read_dir(st.join("tensors"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    corrupt_last_byte(&t);
    let ft = d.path().join("ft");
    let e = gmat_err(&[
        "import",
        "-q",
        "--model",
        s(&m),
        "--base",
        s(&st),
        "-o",
        s(&ft),
    ]);
    assert!(e.contains("base store") && e.contains("corrupt"), "{e}");
    assert!(!ft.join("model.gmat/metadata.json").exists());
}

#[test]
fn another_model_over_a_store_leaves_no_orphans_and_verify_reports_them() {
    let d = tempfile::tempdir().unwrap();
    let (m, st) = import_tiny(d.path());
    // A different model: fewer tensors, other names.
    let m2 = d.path().join("m2");
    copy_side_files(&m, &m2);
    let tensors: Vec<_> = read_safetensors(&m.join("model.safetensors"))
        .into_iter()
        .filter(|t| !t.0.contains("layers.1."))
        .collect();
    write_safetensors(&m2.join("model.safetensors"), &tensors);
    std::fs::remove_file(m2.join("tokenizer.model")).unwrap();
    gmat_ok(&[
        "import",
        "-q",
        "--model",
        s(&m2),
        "-o",
        s(&d.path().join("st")),
    ]);
    let files = std::fs::read_dir(st.join("tensors")).unwrap().count();
    assert_eq!(files, tensors.len(), "orphan tensor files remain");
    assert!(
        !st.join("tokenizer.model").exists(),
        "the old model's side file remains"
    );
    gmat_ok(&["verify", "-q", s(&st)]);
    // verify names an orphan file.
    std::fs::write(
        st.join("tensors/00000000-0000-0000-0000-000000000000.gmat"),
        b"x",
    )
    .unwrap();
    let e = gmat_err(&["verify", "-q", s(&st)]);
    assert!(e.contains("orphan") && e.contains("00000000-0000"), "{e}");
    // ... and an empty manifest.
    let p = st.join("metadata.json");
    let mut v: serde_json::Value = serde_json::from_slice(&std::fs::read(&p).unwrap()).unwrap();
    v["tensors"] = serde_json::json!([]);
    std::fs::write(&p, serde_json::to_vec(&v).unwrap()).unwrap();
    let e = gmat_err(&["verify", "-q", s(&st)]);
    assert!(e.contains("no tensors"), "{e}");
}

fn mkfifo(p: &Path) {
    let c = std::ffi::CString::new(p.to_str().unwrap()).unwrap();
    // SAFETY: mkfifo on a test path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o644) }, 0);
}

fn err_within(args: &[&str], secs: u64) -> String {
    let (ok, e) = finish(spawn(args), secs);
    assert!(!ok, "gmat {args:?} should fail");
    e
}

#[test]
fn fifos_devices_and_huge_files_are_refused_without_hanging() {
    let d = tempfile::tempdir().unwrap();
    let (m, st) = import_tiny(d.path());
    // A FIFO as the weights file.
    let w = m.join("model.safetensors");
    let keep = std::fs::read(&w).unwrap();
    std::fs::remove_file(&w).unwrap();
    mkfifo(&w);
    let e = err_within(
        &["import", "--model", s(&m), "-o", s(&d.path().join("o"))],
        30,
    );
    assert!(e.contains("FIFO") && e.contains("model.safetensors"), "{e}");
    std::fs::remove_file(&w).unwrap();
    std::fs::write(&w, keep).unwrap();
    // A FIFO as a tensor file, and a directory as one.
    let t = std::fs::read_dir(st.join("tensors"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    std::fs::remove_file(&t).unwrap();
    mkfifo(&t);
    let out = d.path().join("o.gguf");
    let e = err_within(
        &["export", "--model", s(&st), "--type", "Q8_0", "-o", s(&out)],
        30,
    );
    assert!(e.contains("FIFO"), "{e}");
    let e = err_within(&["verify", s(&st)], 30);
    assert!(e.contains("FIFO"), "{e}");
    std::fs::remove_file(&t).unwrap();
    std::fs::create_dir(&t).unwrap();
    let e = err_within(
        &["export", "--model", s(&st), "--type", "Q8_0", "-o", s(&out)],
        30,
    );
    assert!(
        e.contains("is a directory") && !e.contains("No such device"),
        "{e}"
    );
    std::fs::remove_dir(&t).unwrap();
    gmat_ok(&[
        "import",
        "-q",
        "--model",
        s(&m),
        "-o",
        s(&d.path().join("st")),
    ]);
    // Endless devices and oversized files where small ones are expected.
    for flag in ["--imatrix", "--config"] {
        let e = err_within(
            &[
                "export",
                "--model",
                s(&st),
                "--type",
                "Q4_K_M",
                flag,
                "/dev/zero",
                "-o",
                s(&out),
            ],
            30,
        );
        assert!(
            e.contains("/dev/zero") && e.contains("character device"),
            "{e}"
        );
    }
    let big = d.path().join("big.json");
    std::fs::File::create(&big)
        .unwrap()
        .set_len(300 << 20)
        .unwrap();
    let e = err_within(
        &[
            "export",
            "--model",
            s(&st),
            "--config",
            s(&big),
            "-o",
            s(&out),
        ],
        30,
    );
    assert!(e.contains("big.json") && e.contains("256 MiB"), "{e}");
    let e = err_within(
        &[
            "import",
            "--model",
            s(&m),
            "--config",
            s(&big),
            "-o",
            s(&d.path().join("o")),
        ],
        30,
    );
    assert!(e.contains("big.json") && e.contains("256 MiB"), "{e}");
    let cfg = m.join("config.json");
    std::fs::remove_file(&cfg).unwrap();
    mkfifo(&cfg);
    let e = err_within(
        &["import", "--model", s(&m), "-o", s(&d.path().join("o"))],
        30,
    );
    assert!(e.contains("config.json"), "{e}");
    assert!(!out.exists());
}

#[test]
fn duplicate_names_and_control_characters_are_reported_as_such() {
    let d = tempfile::tempdir().unwrap();
    let m = tiny_model(d.path());
    // JSON escapes: the name itself holds ESC [ 2 J (clear screen).
    let h = r#"{"a\u001b[2J":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"a\u001b[2J":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}"#;
    let mut out = (h.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(h.as_bytes());
    out.extend_from_slice(&[0; 8]);
    std::fs::write(m.join("model.safetensors"), out).unwrap();
    let e = gmat_err(&["import", "--model", s(&m), "-o", s(&d.path().join("o"))]);
    assert!(e.contains("listed twice"), "{e}");
    assert!(!e.contains('\u{1b}') && e.contains("\\u{1b}[2J"), "{e:?}");
}

#[test]
fn a_store_that_is_its_own_base_is_one_short_message() {
    let d = tempfile::tempdir().unwrap();
    let (m, st) = import_tiny(d.path());
    let ft = d.path().join("ft");
    let m2 = d.path().join("m2");
    copy_side_files(&m, &m2);
    let mut t = read_safetensors(&m.join("model.safetensors"));
    t[5].3[0] ^= 1;
    write_safetensors(&m2.join("model.safetensors"), &t);
    gmat_ok(&[
        "import",
        "-q",
        "--model",
        s(&m2),
        "--base",
        s(&st),
        "-o",
        s(&ft),
    ]);
    let p = ft.join("model.gmat/metadata.json");
    let mut v: serde_json::Value = serde_json::from_slice(&std::fs::read(&p).unwrap()).unwrap();
    v["base"]["path"] = ".".into();
    std::fs::write(&p, serde_json::to_vec(&v).unwrap()).unwrap();
    for args in [
        vec![
            "export",
            "--model",
            s(&ft),
            "--type",
            "Q8_0",
            "-o",
            s(&d.path().join("x.gguf")),
        ],
        vec!["verify", s(&ft)],
    ] {
        let e = gmat_err(&args);
        assert!(e.contains("its own base"), "{e}");
        assert!(e.len() < 700, "{} characters: {e}", e.len());
    }
}

fn bf16_model_with(d: &Path, name: &str, value: f32) -> PathBuf {
    let m = tiny_model(d);
    let mut tensors = read_safetensors(&m.join("model.safetensors"));
    let t = tensors.iter_mut().find(|t| t.0 == name).unwrap();
    let bits = ((value.to_bits() >> 16) as u16).to_le_bytes();
    t.3[6..8].copy_from_slice(&bits);
    write_safetensors(&m.join("model.safetensors"), &tensors);
    m
}

#[test]
fn finite_values_that_overflow_the_output_type_are_refused_unless_allowed() {
    let d = tempfile::tempdir().unwrap();
    let w = "model.layers.0.mlp.up_proj.weight";
    let m = bf16_model_with(&d.path().join("a"), w, 1.0e5);
    let st = d.path().join("st");
    gmat_ok(&["import", "-q", "--model", s(&m), "-o", s(&st)]);
    let out = d.path().join("o.gguf");
    let e = gmat_err(&["export", "--model", s(&st), "--type", "F16", "-o", s(&out)]);
    assert!(
        e.contains("blk.0.ffn_up.weight")
            && e.contains(w)
            && e.contains("99840")
            && e.contains("--allow-overflow"),
        "{e}"
    );
    assert!(!out.exists());
    gmat_ok(&[
        "export",
        "-q",
        "--model",
        s(&st),
        "--type",
        "F16",
        "--allow-overflow",
        "-o",
        s(&out),
    ]);
    gmat_ok(&[
        "export",
        "-q",
        "--model",
        s(&st),
        "--type",
        "BF16",
        "-o",
        s(&d.path().join("b.gguf")),
    ]);
    // A quantized type whose block scale (F16) overflows.
    let m = bf16_model_with(&d.path().join("b"), w, 1.0e7);
    let st = d.path().join("st2");
    gmat_ok(&["import", "-q", "--model", s(&m), "-o", s(&st)]);
    let e = gmat_err(&["export", "--model", s(&st), "--type", "Q8_0", "-o", s(&out)]);
    assert!(
        e.contains("blk.0.ffn_up.weight") && e.contains("llama-quantize refuses"),
        "{e}"
    );
}

#[test]
fn configs_that_are_not_objects_and_special_ids_outside_the_vocabulary_are_refused() {
    let d = tempfile::tempdir().unwrap();
    let (m, st) = import_tiny(d.path());
    let cfg = d.path().join("c.json");
    let out = d.path().join("o.gguf");
    for (text, want) in [
        ("[]", "must be a JSON object"),
        (
            r#"["gguf", {"default_type": "Q8_0"}]"#,
            "must be a JSON object",
        ),
        (
            r#"{"quantization": ["Q8_0"]}"#,
            "quantization must be a JSON object",
        ),
        (
            r#"{"tensor_map": [["a", "b"]]}"#,
            "tensor_map[0] must be a JSON object",
        ),
        (
            r#"{"special_token_keys": {"eos": 3000}}"#,
            "not a token of the vocabulary",
        ),
        (
            r#"{"special_token_keys": {"bogus": 1}}"#,
            "not a special token type",
        ),
    ] {
        std::fs::write(&cfg, text).unwrap();
        let e = gmat_err(&[
            "export",
            "--model",
            s(&st),
            "--type",
            "Q8_0",
            "--config",
            s(&cfg),
            "-o",
            s(&out),
        ]);
        assert!(e.contains(want), "{text}: {e}");
    }
    std::fs::write(&cfg, r#"{"special_token_keys": {"eos": 2999}}"#).unwrap();
    gmat_ok(&[
        "export",
        "-q",
        "--model",
        s(&st),
        "--type",
        "Q8_0",
        "--config",
        s(&cfg),
        "-o",
        s(&out),
    ]);
    std::fs::write(&cfg, "[]").unwrap();
    let e = gmat_err(&[
        "import",
        "--model",
        s(&m),
        "--config",
        s(&cfg),
        "-o",
        s(&d.path().join("o")),
    ]);
    assert!(e.contains("must be a JSON object"), "{e}");
}

#[test]
fn verify_compares_the_tensor_list_with_the_source_model() {
    let d = tempfile::tempdir().unwrap();
    let m = tiny_model(d.path());
    // One tensor left out on purpose by the import config: not "missing".
    let cfg = d.path().join("import.json");
    gmat_ok(&["import", "--model", s(&m), "--generate-config", s(&cfg)]);
    let mut c: serde_json::Value = serde_json::from_slice(&std::fs::read(&cfg).unwrap()).unwrap();
    let rows = c["tensor_map"].as_array_mut().unwrap();
    let skipped = rows
        .iter_mut()
        .find(|r| r["source"] == "model.layers.0.input_layernorm.weight")
        .unwrap();
    skipped["include"] = false.into();
    std::fs::write(&cfg, serde_json::to_vec(&c).unwrap()).unwrap();
    let st = d.path().join("st");
    gmat_ok(&[
        "import",
        "-q",
        "--model",
        s(&m),
        "--config",
        s(&cfg),
        "-o",
        s(&st),
    ]);
    let st = st.join("model.gmat");
    let ok = gmat_ok(&["verify", s(&st)]);
    assert!(
        !String::from_utf8_lossy(&ok.stderr).contains("note:"),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    // A tensor dropped from the manifest (and its file): the manifest is incomplete.
    let p = st.join("metadata.json");
    let good = std::fs::read(&p).unwrap();
    let mut v: serde_json::Value = serde_json::from_slice(&good).unwrap();
    let tensors = v["tensors"].as_array_mut().unwrap();
    let at = tensors
        .iter()
        .position(|t| t["name"] == "model.norm.weight")
        .unwrap();
    let gone = tensors.remove(at);
    std::fs::write(&p, serde_json::to_vec(&v).unwrap()).unwrap();
    std::fs::remove_file(st.join(format!("tensors/{}.gmat", gone["uuid"].as_str().unwrap())))
        .unwrap();
    let e = gmat_err(&["verify", "-q", s(&st)]);
    assert!(
        e.contains("incomplete")
            && e.contains("model.norm.weight")
            && !e.contains("input_layernorm"),
        "{e}"
    );
    // The source gone: verify says it could not compare, and passes on the hashes alone.
    std::fs::rename(&m, d.path().join("moved")).unwrap();
    let out = gmat_ok(&["verify", s(&st)]);
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(
        text.contains("note:") && text.contains("not found"),
        "{text}"
    );
}

/// A float weight stored as integers (issue 11, cause 4): the converter casts it and writes a
/// file llama.cpp computes garbage with; gmat refuses, naming the tensor and the dtype.
#[test]
fn integer_weights_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let example = repo().join("example/tiny_llm");
    let hf = dir.path().join("tiny_llm");
    copy_side_files(&example, &hf);
    let mut tensors = read_safetensors(&example.join("model.safetensors"));
    let t = tensors
        .iter_mut()
        .find(|t| t.0.ends_with("q_proj.weight"))
        .unwrap();
    assert_eq!(t.1, "BF16");
    t.1 = "I16".into();
    let name = t.0.clone();
    write_safetensors(&hf.join("model.safetensors"), &tensors);
    let store = dir.path().join("st");
    gmat_ok(&[
        "import",
        "-q",
        "--model",
        hf.to_str().unwrap(),
        "-o",
        store.to_str().unwrap(),
    ]);
    let out = dir.path().join("out.gguf");
    let err = gmat_err(&[
        "export",
        "-q",
        "--model",
        store.to_str().unwrap(),
        "--type",
        "Q8_0",
        "-o",
        out.to_str().unwrap(),
    ]);
    assert!(err.contains(&name) && err.contains("I16"), "{err}");
    assert!(!out.exists());
}
