//! `gmat inspect`: a store's tensor table and totals, from the manifest (no tensor is decoded).

use std::path::Path;

use anyhow::Result;

use crate::pipeline::progress::human_bytes;
use crate::store::{Holding, Store};

/// Runs the command: prints to stdout.
pub fn run(path: &Path) -> Result<()> {
    let store = Store::open(path)?;
    print!("{}", crate::escape::controls_keep_lines(&describe(&store)));
    Ok(())
}

/// The report `gmat inspect` prints.
pub fn describe(store: &Store) -> String {
    let m = &store.manifest;
    let mut out = String::new();
    let name = m.model.get("name").and_then(|v| v.as_str()).unwrap_or("?");
    out += &format!("store:   {}\n", store.location);
    out += &format!(
        "model:   {name} ({} tensors, model hash {})\n",
        m.tensors.len(),
        m.model_hash()
    );
    out += &format!(
        "source:  {} ({}: {})\n",
        m.source.path,
        m.source.format,
        m.source.files.join(", ")
    );
    if let (Some(b), Some(p)) = (&m.base, store.base_path()) {
        let state = match store.base() {
            Ok(s) if s.manifest.model_hash() == b.model_hash => "present, unchanged".to_string(),
            Ok(_) => "present, CHANGED since the import (model hash differs)".to_string(),
            Err(_) => "MISSING".to_string(),
        };
        out += &format!(
            "base:    {} = {} (model hash {}): {state}\n",
            b.path,
            p.display(),
            b.model_hash
        );
    }
    out += "\n";
    let rows: Vec<[String; 8]> = m
        .tensors
        .iter()
        .map(|t| {
            let enc = match t.holding() {
                Holding::Linked => format!("{} (linked)", t.encoding),
                _ => t.encoding.to_string(),
            };
            let stored = match t.holding() {
                Holding::Referenced => "-".to_string(),
                _ => human_bytes(t.stored_bytes),
            };
            let hash = t.hash.strip_prefix("blake3:").unwrap_or(&t.hash);
            [
                t.name.clone(),
                t.uuid.to_string(),
                t.dtype.to_string(),
                format!("{:?}", t.shape),
                enc,
                stored,
                human_bytes(t.raw_bytes),
                hash.chars().take(12).collect(),
            ]
        })
        .collect();
    let head = [
        "name", "uuid", "dtype", "shape", "encoding", "stored", "raw", "hash",
    ];
    let mut w: Vec<usize> = head.iter().map(|h| h.len()).collect();
    for r in &rows {
        for (i, c) in r.iter().enumerate() {
            w[i] = w[i].max(c.chars().count());
        }
    }
    let line = |cells: &[&str]| -> String {
        let mut s = String::new();
        for (i, c) in cells.iter().enumerate() {
            // Sizes right-aligned, the rest left-aligned.
            if i == 5 || i == 6 {
                s += &format!("{c:>width$}  ", width = w[i]);
            } else {
                s += &format!("{c:<width$}  ", width = w[i]);
            }
        }
        s.trim_end().to_string() + "\n"
    };
    out += &line(&head);
    for r in &rows {
        let cells: Vec<&str> = r.iter().map(|s| s.as_str()).collect();
        out += &line(&cells);
    }
    let t = Totals::of(store);
    out += "\n";
    out += &format!("raw:     {} ({} bytes)\n", human_bytes(t.raw), t.raw);
    out += &format!(
        "stored:  {} ({} bytes, {:.1}% of raw) in this store's own files\n",
        human_bytes(t.stored),
        t.stored,
        100.0 * t.stored as f64 / t.raw.max(1) as f64
    );
    if m.base.is_some() || t.shared_tensors > 0 {
        out += &format!(
            "shared:  {} tensors, {} raw ({} hard-linked from the base, {} read from the base)\n",
            t.shared_tensors,
            human_bytes(t.shared_raw),
            t.linked,
            t.referenced
        );
        out += &format!(
            "deltas:  {} tensors, {} stored for {} raw ({:.1}%)\n",
            t.delta_tensors,
            human_bytes(t.delta_stored),
            human_bytes(t.delta_raw),
            100.0 * t.delta_stored as f64 / t.delta_raw.max(1) as f64
        );
    }
    let mut enc: Vec<(String, usize)> = Vec::new();
    for tensor in &m.tensors {
        let e = tensor.encoding.to_string();
        match enc.iter_mut().find(|(k, _)| *k == e) {
            Some((_, n)) => *n += 1,
            None => enc.push((e, 1)),
        }
    }
    let enc: Vec<String> = enc.iter().map(|(k, n)| format!("{k} {n}")).collect();
    out += &format!("encodings: {}\n", enc.join(", "));
    out
}

/// Store totals.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Totals {
    /// Decoded bytes of every tensor.
    pub raw: u64,
    /// Bytes of the files this store holds alone (own files and deltas, not hard links).
    pub stored: u64,
    pub shared_tensors: usize,
    pub shared_raw: u64,
    pub linked: usize,
    pub referenced: usize,
    pub delta_tensors: usize,
    pub delta_raw: u64,
    pub delta_stored: u64,
}

impl Totals {
    /// Adds up the manifest.
    pub fn of(store: &Store) -> Totals {
        let mut t = Totals::default();
        for e in &store.manifest.tensors {
            t.raw += e.raw_bytes;
            match e.holding() {
                Holding::Own => t.stored += e.stored_bytes,
                Holding::Linked | Holding::Referenced => {
                    t.shared_tensors += 1;
                    t.shared_raw += e.raw_bytes;
                    if e.holding() == Holding::Linked {
                        t.linked += 1;
                    } else {
                        t.referenced += 1;
                    }
                }
                Holding::Delta => {
                    t.stored += e.stored_bytes;
                    t.delta_tensors += 1;
                    t.delta_raw += e.raw_bytes;
                    t.delta_stored += e.stored_bytes;
                }
            }
        }
        t
    }
}
