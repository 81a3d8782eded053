//! Test access to the reference kit (unit and integration tests; not part of gmat's API): small
//! HF models with llama.cpp's converter output, at `../shared/reference/models` beside the clone
//! (or `$GMAT_REFERENCE_MODELS`). A user's clone has no kit: tests that need it then skip with a
//! message naming it, and their core checks run on the fixtures in `testdata/`.

use std::path::PathBuf;

/// The kit folder, or `None` (after printing why `test` is skipped) when it is not there.
pub fn kit(test: &str) -> Option<PathBuf> {
    let p = std::env::var_os("GMAT_REFERENCE_MODELS")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/../shared/reference/models"
            ))
        });
    if p.is_dir() {
        Some(p)
    } else {
        eprintln!(
            "skipped {test}: needs the reference kit at {} (shared/reference/models beside the \
             clone, or set GMAT_REFERENCE_MODELS)",
            p.display()
        );
        None
    }
}

/// The config.json of a config-ablation case (`testdata/config-ablation`, written by
/// `bench/parity_configs.py`): `base` with the case's edits applied, each `["del", path]` or
/// `["set", path, value]` with `path` a list of keys.
pub fn apply_ops(base: &serde_json::Value, ops: &serde_json::Value) -> serde_json::Value {
    let mut cfg = base.clone();
    for op in ops.as_array().expect("ops is a list") {
        let path: Vec<&str> = op[1]
            .as_array()
            .expect("an op's path is a list")
            .iter()
            .map(|k| k.as_str().expect("keys are strings"))
            .collect();
        let (last, parents) = path.split_last().expect("a path has a key");
        let mut d = &mut cfg;
        for k in parents {
            d = d.get_mut(*k).expect("the path exists");
        }
        let m = d.as_object_mut().expect("the parent is an object");
        match op[0].as_str() {
            Some("del") => {
                m.shift_remove(*last);
            }
            Some("set") => {
                m.insert((*last).to_string(), op[2].clone());
            }
            other => panic!("unknown op {other:?}"),
        }
    }
    cfg
}
