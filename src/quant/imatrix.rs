//! Importance matrices ("imatrix" files) read exactly as llama-quantize reads them.
//!
//! Reference (b11312): `common/imatrix-loader.cpp` (`common_imatrix_load`: the GGUF layout and
//! the legacy `.dat` layout), `tools/quantize/quantize.cpp` (`load_imatrix`: normalisation,
//! `prepare_imatrix`: `--include-weights`/`--exclude-weights`, and the `quantize.imatrix.*`
//! keys of `main`), `src/llama-quant.cpp` (the finiteness check, the lookup by tensor name, the
//! size check, and `imatrix_for_row`).
//!
//! Policy: every file llama-quantize accepts with well-defined behaviour gives the same entries,
//! values and metadata here; where llama-quantize crashes or reads undefined memory (a negative
//! name length, an entry with no counts, a count that `lround` cannot represent, a metadata key
//! `gguf_get_val_u32` asserts on) the file is rejected with an error naming the file and entry.
//! GGUF containers go through gmat's strict reader plus the checks ggml's `gguf_init_from_file`
//! adds (duplicate or empty keys, duplicate or over-long tensor names, `general.alignment` not
//! u32, tensors not packed back to back, data section shorter than its padded size).

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;

use anyhow::{bail, Context, Result};

use crate::gguf::{align_up, GgufFile, Value, ValueType, DEFAULT_ALIGNMENT};
use crate::quant::GgmlType;

/// `LLM_KV_QUANTIZE_IMATRIX_FILE`: the `--imatrix` argument as given (string).
pub const KEY_FILE: &str = "quantize.imatrix.file";
/// `LLM_KV_QUANTIZE_IMATRIX_DATASET`: the first dataset of the imatrix (string).
pub const KEY_DATASET: &str = "quantize.imatrix.dataset";
/// `LLM_KV_QUANTIZE_IMATRIX_N_ENTRIES`: entries kept after filtering (u32).
pub const KEY_N_ENTRIES: &str = "quantize.imatrix.entries_count";
/// `LLM_KV_QUANTIZE_IMATRIX_N_CHUNKS`: chunks the imatrix was computed on (u32, only if > 0).
pub const KEY_N_CHUNKS: &str = "quantize.imatrix.chunks_count";

const KEY_DATASETS: &str = "imatrix.datasets";
const KEY_CHUNK_COUNT: &str = "imatrix.chunk_count";
const KEY_CHUNK_SIZE: &str = "imatrix.chunk_size";
const SUFFIX_SUMS: &str = ".in_sum2";
const SUFFIX_COUNTS: &str = ".counts";
/// ggml's `GGML_MAX_NAME`: tensor names must be shorter.
const GGML_MAX_NAME: usize = 64;
/// llama-quantize copies string overrides with `strncpy(val_str, s, 127)`.
const MAX_OVERRIDE_STR: usize = 127;

/// The on-disk layout an imatrix was read from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ImatrixFormat {
    /// GGUF: `<name>.in_sum2` and `<name>.counts` tensors plus `imatrix.*` metadata.
    Gguf,
    /// The legacy binary `.dat` layout.
    Legacy,
}

impl fmt::Display for ImatrixFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ImatrixFormat::Gguf => "GGUF",
            ImatrixFormat::Legacy => "legacy .dat",
        })
    }
}

/// Normalised importance weights by tensor name, as llama-quantize hands them to the quantizer.
#[derive(Clone, Debug)]
pub struct Imatrix {
    file: String,
    format: ImatrixFormat,
    /// Names are bytes: the legacy format stores arbitrary bytes and llama-quantize keeps them.
    entries: BTreeMap<Vec<u8>, Vec<f32>>,
    datasets: Vec<Vec<u8>>,
    chunk_count: i32,
    chunk_size: i32,
    /// The metadata strings llama-quantize would write (truncated to 127 bytes), checked UTF-8.
    file_meta: String,
    dataset_meta: Option<String>,
}

/// What `common_imatrix_load` returns, before normalisation.
pub(crate) struct Raw {
    entries: BTreeMap<Vec<u8>, RawEntry>,
    datasets: Vec<Vec<u8>>,
    chunk_count: i32,
    chunk_size: i32,
    format: ImatrixFormat,
}

struct RawEntry {
    sums: Vec<f32>,
    counts: Vec<i64>,
}

impl Imatrix {
    /// llama-quantize's `prepare_imatrix` followed by the checks of `llama_model_quantize_impl`:
    /// loads `path`, applies the include/exclude filters and rejects non-finite values.
    /// `None` when no entry is left: llama-quantize then quantizes exactly as without
    /// `--imatrix` (no `quantize.imatrix.*` keys, types chosen as without an imatrix, and
    /// types that need one refuse).
    pub fn prepare(path: &Path, include: &[String], exclude: &[String]) -> Result<Option<Imatrix>> {
        let mut m = Imatrix::load(path)?;
        m.filter(include, exclude)?;
        if m.is_empty() {
            return Ok(None);
        }
        m.check_finite()?;
        Ok(Some(m))
    }

    /// Reads a GGUF or legacy imatrix (detected by the GGUF magic) and normalises it like
    /// llama-quantize's `load_imatrix`. `path` is kept as given for `quantize.imatrix.file`.
    pub fn load(path: &Path) -> Result<Imatrix> {
        let shown = path.display();
        let file_bytes = path.as_os_str().as_encoded_bytes();
        let file = std::str::from_utf8(file_bytes)
            .with_context(|| format!("imatrix path {shown} is not UTF-8"))?
            .to_string();
        let file_meta =
            override_str(file.as_bytes()).with_context(|| format!("imatrix path {shown}"))?;
        let raw = if is_gguf(path)? {
            let f = GgufFile::open(path).with_context(|| format!("imatrix {shown}"))?;
            load_gguf(&f).with_context(|| format!("imatrix {shown}"))?
        } else {
            // Mapped, not read: the parse allocates only what the entries declare, each checked
            // against the bytes left, so a huge or hostile file cannot exhaust memory.
            let f = crate::fsio::open_input(path).with_context(|| format!("imatrix {shown}"))?;
            // SAFETY: a read-only map of a regular file gmat does not write.
            let map =
                unsafe { memmap2::Mmap::map(&f) }.with_context(|| format!("cannot map {shown}"))?;
            load_legacy(&map).with_context(|| format!("imatrix {shown} (legacy format)"))?
        };
        let dataset_meta = match raw.datasets.first() {
            Some(d) => Some(override_str(d).with_context(|| format!("imatrix {shown}: dataset"))?),
            None => None,
        };
        let mut entries = BTreeMap::new();
        for (name, e) in raw.entries {
            let v = normalise(&e, raw.format).with_context(|| {
                format!("imatrix {shown}: entry {}", String::from_utf8_lossy(&name))
            })?;
            entries.insert(name, v);
        }
        Ok(Imatrix {
            file,
            format: raw.format,
            entries,
            datasets: raw.datasets,
            chunk_count: raw.chunk_count,
            chunk_size: raw.chunk_size,
            file_meta,
            dataset_meta,
        })
    }

    /// `prepare_imatrix`'s filters: `exclude` drops every entry whose name contains one of the
    /// strings, `include` keeps only entries containing one of them. llama-quantize refuses both
    /// at once (usage error), and so does this.
    pub fn filter(&mut self, include: &[String], exclude: &[String]) -> Result<()> {
        if !include.is_empty() && !exclude.is_empty() {
            bail!("imatrix {}: include and exclude filters cannot be combined (llama-quantize refuses --include-weights with --exclude-weights)", self.file);
        }
        if !exclude.is_empty() {
            self.entries
                .retain(|name, _| !exclude.iter().any(|p| contains(name, p.as_bytes())));
        }
        if !include.is_empty() {
            self.entries
                .retain(|name, _| include.iter().any(|p| contains(name, p.as_bytes())));
        }
        Ok(())
    }

    /// llama-quantize refuses an imatrix holding a NaN or infinity in any entry, used or not
    /// ("imatrix contains non-finite value"); the check runs after filtering.
    pub fn check_finite(&self) -> Result<()> {
        for (name, v) in &self.entries {
            if let Some((i, x)) = v.iter().enumerate().find(|(_, x)| !x.is_finite()) {
                bail!(
                    "imatrix {}: entry {} holds the non-finite value {x} at index {i} (llama-quantize refuses it)",
                    self.file,
                    String::from_utf8_lossy(name)
                );
            }
        }
        Ok(())
    }

    /// The importance weights for the quantized tensor `gguf_name` whose dimensions are
    /// `[ne0, ne1, n_expert]` (`n_expert` is `ne[2]`: 1 for a 2-D tensor), as
    /// llama-quantize looks them up:
    /// - no entry of that name: `None` (llama-quantize quantizes it without importance weights);
    /// - an entry of exactly `ne0 * n_expert` values: those values; row `r` (of `ne1 * n_expert`
    ///   rows) uses [`row_weights`], i.e. expert `r / ne1`'s slice `e*ne0..(e+1)*ne0`;
    /// - any other size: an error, except for `token_embd.weight` and
    ///   `per_layer_token_embd.weight`, which llama-quantize then quantizes without (`None`).
    pub fn for_tensor(
        &self,
        gguf_name: &str,
        ne0: usize,
        n_expert: usize,
    ) -> Result<Option<&[f32]>> {
        let Some(v) = self.entries.get(gguf_name.as_bytes()) else {
            return Ok(None);
        };
        if ne0.checked_mul(n_expert) == Some(v.len()) {
            return Ok(Some(v));
        }
        if is_token_embd(gguf_name) {
            return Ok(None);
        }
        bail!(
            "imatrix {}: entry {gguf_name} has {} values but tensor {gguf_name} needs ne0 x n_expert = {ne0} x {n_expert} (llama-quantize: \"imatrix size {} is different from tensor size {}\")",
            self.file,
            v.len(),
            v.len(),
            ne0.saturating_mul(n_expert)
        );
    }

    /// The `quantize.imatrix.*` keys llama-quantize appends to its output, in its order and with
    /// its value types: file (string, the `--imatrix` argument), dataset (string, the first
    /// dataset, only if there is one), entries_count (u32, after filtering), chunks_count (u32,
    /// only if positive). Strings are cut to 127 bytes like llama-quantize's `strncpy`. Empty
    /// when no entry is left (llama-quantize then writes none of them).
    pub fn metadata(&self) -> Vec<(String, Value)> {
        if self.entries.is_empty() {
            return Vec::new();
        }
        let mut m = vec![(KEY_FILE.to_string(), Value::String(self.file_meta.clone()))];
        if let Some(d) = &self.dataset_meta {
            m.push((KEY_DATASET.to_string(), Value::String(d.clone())));
        }
        m.push((
            KEY_N_ENTRIES.to_string(),
            Value::U32(u32::try_from(self.entries.len()).unwrap_or(u32::MAX)),
        ));
        if self.chunk_count > 0 {
            m.push((
                KEY_N_CHUNKS.to_string(),
                Value::U32(self.chunk_count as u32),
            ));
        }
        m
    }

    /// The normalised values of entry `name`, whatever their size.
    pub fn entry(&self, name: &str) -> Option<&[f32]> {
        self.entries.get(name.as_bytes()).map(Vec::as_slice)
    }

    /// Entry names in byte order (lossy for the rare non-UTF-8 legacy name).
    pub fn names(&self) -> impl Iterator<Item = String> + '_ {
        self.entries
            .keys()
            .map(|n| String::from_utf8_lossy(n).into_owned())
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether no entry is left.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The path as given to [`Imatrix::load`].
    pub fn file(&self) -> &str {
        &self.file
    }

    /// The layout the file was read from.
    pub fn format(&self) -> ImatrixFormat {
        self.format
    }

    /// Datasets the imatrix was computed on (lossy for non-UTF-8 legacy names).
    pub fn datasets(&self) -> Vec<String> {
        self.datasets
            .iter()
            .map(|d| String::from_utf8_lossy(d).into_owned())
            .collect()
    }

    /// `imatrix.chunk_count` (GGUF) or the trailing call count (legacy; 0 if absent).
    pub fn chunk_count(&self) -> i32 {
        self.chunk_count
    }

    /// `imatrix.chunk_size` (GGUF); 0 for the legacy format.
    pub fn chunk_size(&self) -> i32 {
        self.chunk_size
    }
}

/// The weights of row `row` of a tensor with `ne1` rows per expert (`imatrix_for_row`):
/// expert `row / ne1`'s slice of `ne0` values. `weights` comes from [`Imatrix::for_tensor`].
pub fn row_weights(weights: &[f32], ne0: usize, ne1: usize, row: usize) -> &[f32] {
    let e = row / ne1;
    &weights[e * ne0..(e + 1) * ne0]
}

fn is_token_embd(name: &str) -> bool {
    name == "token_embd.weight" || name == "per_layer_token_embd.weight"
}

/// `load_imatrix`'s normalisation of one entry.
fn normalise(e: &RawEntry, format: ImatrixFormat) -> Result<Vec<f32>> {
    let mut out = vec![0f32; e.sums.len()];
    match format {
        ImatrixFormat::Gguf => {
            // Per expert: sums / count, or 1 where the expert saw no tokens. Values past
            // ncounts * ne0 (sizes that do not divide) stay 0, as in llama-quantize.
            let ncounts = e.counts.len();
            if ncounts == 0 {
                bail!("the counts tensor is empty (llama-quantize divides by zero)");
            }
            let ne0 = e.sums.len() / ncounts;
            for (j, &c) in e.counts.iter().enumerate() {
                let count = c as f32;
                let (o, s) = (
                    &mut out[j * ne0..(j + 1) * ne0],
                    &e.sums[j * ne0..(j + 1) * ne0],
                );
                if count > 0.0 {
                    for (o, &s) in o.iter_mut().zip(s) {
                        *o = s / count;
                    }
                } else {
                    o.fill(1.0);
                }
            }
        }
        ImatrixFormat::Legacy => {
            // Stored as (sum / count) * ncall: divide by ncall when positive.
            let ncall = e.counts.first().copied().unwrap_or(0);
            if ncall > 0 {
                let n = ncall as f32;
                for (o, &s) in out.iter_mut().zip(&e.sums) {
                    *o = s / n;
                }
            } else {
                out.copy_from_slice(&e.sums);
            }
        }
    }
    Ok(out)
}

fn is_gguf(path: &Path) -> Result<bool> {
    use std::io::Read;
    let mut f = crate::fsio::open_input(path).context("imatrix")?;
    let mut magic = Vec::with_capacity(4);
    f.by_ref()
        .take(4)
        .read_to_end(&mut magic)
        .with_context(|| format!("cannot read {}", path.display()))?;
    Ok(magic == crate::gguf::MAGIC)
}

/// A C string: the bytes before the first NUL.
fn c_str(b: &[u8]) -> &[u8] {
    b.iter().position(|&c| c == 0).map_or(b, |n| &b[..n])
}

/// A string as llama-quantize's KV override stores it: a C string cut to 127 bytes.
fn override_str(b: &[u8]) -> Result<String> {
    let b = c_str(b);
    let b = &b[..b.len().min(MAX_OVERRIDE_STR)];
    String::from_utf8(b.to_vec()).map_err(|_| {
        anyhow::anyhow!(
            "{:?} cut to {MAX_OVERRIDE_STR} bytes (as llama-quantize writes it) is not UTF-8",
            String::from_utf8_lossy(b)
        )
    })
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    needle.is_empty() || hay.windows(needle.len()).any(|w| w == needle)
}

/// `common_imatrix_load` for a GGUF file.
fn load_gguf(f: &GgufFile) -> Result<Raw> {
    check_like_ggml(f)?;
    if f.tensors.is_empty() {
        bail!("no data (the GGUF has no tensors)");
    }
    let mut datasets = Vec::new();
    if let Some(Value::Array(ValueType::String, items)) = f.get(KEY_DATASETS) {
        for it in items {
            if let Value::String(s) = it {
                datasets.push(c_str(s.as_bytes()).to_vec());
            }
        }
    }
    let has_metadata = f.get(KEY_DATASETS).is_some()
        && f.get(KEY_CHUNK_COUNT).is_some()
        && f.get(KEY_CHUNK_SIZE).is_some();
    // gguf_get_val_u32 asserts the type; llama-quantize aborts on anything else.
    let u32_key = |key: &str| -> Result<i32> {
        match f.get(key) {
            None => Ok(0),
            Some(Value::U32(v)) => Ok(*v as i32),
            Some(v) => bail!(
                "key {key} is {:?}, not u32 (llama-quantize aborts)",
                v.value_type()
            ),
        }
    };
    let chunk_count = u32_key(KEY_CHUNK_COUNT)?;
    let chunk_size = u32_key(KEY_CHUNK_SIZE)?;

    type Pair<'a> = (
        Option<&'a crate::gguf::TensorInfo>,
        Option<&'a crate::gguf::TensorInfo>,
    );
    let mut pairs: BTreeMap<Vec<u8>, Pair> = BTreeMap::new();
    for t in &f.tensors {
        // ggml keeps the name as a C string.
        let name = c_str(t.name.as_bytes());
        if name.is_empty() {
            continue;
        }
        if let Some(base) = name.strip_suffix(SUFFIX_SUMS.as_bytes()) {
            pairs.entry(base.to_vec()).or_default().0 = Some(t);
        } else if let Some(base) = name.strip_suffix(SUFFIX_COUNTS.as_bytes()) {
            pairs.entry(base.to_vec()).or_default().1 = Some(t);
        }
    }
    let mut entries = BTreeMap::new();
    for (name, pair) in pairs {
        let shown = String::from_utf8_lossy(&name).into_owned();
        let (Some(sums), Some(counts)) = pair else {
            bail!("entry {shown}: mismatched sums and counts (one of {shown}{SUFFIX_SUMS}, {shown}{SUFFIX_COUNTS} is missing)");
        };
        for t in [sums, counts] {
            if t.ggml_type != GgmlType::F32 {
                bail!(
                    "entry {shown}: tensor {} is {}, sums and counts must be F32",
                    t.name,
                    t.ggml_type
                );
            }
        }
        let sums_v = f32s(f.tensor_data(sums));
        let mut counts_v = Vec::with_capacity(counts.n_elements() as usize);
        for (j, c) in f32s(f.tensor_data(counts)).into_iter().enumerate() {
            counts_v.push(lround(c).with_context(|| {
                format!("entry {shown}: count {j} is {c}, which lround cannot represent")
            })?);
        }
        entries.insert(
            name,
            RawEntry {
                sums: sums_v,
                counts: counts_v,
            },
        );
    }
    if !has_metadata {
        bail!("missing imatrix metadata ({KEY_DATASETS}, {KEY_CHUNK_COUNT} and {KEY_CHUNK_SIZE} are all required)");
    }
    Ok(Raw {
        entries,
        datasets,
        chunk_count,
        chunk_size,
        format: ImatrixFormat::Gguf,
    })
}

/// C's `lround` where it is defined: halves away from zero, and the result must fit i64.
fn lround(x: f32) -> Option<i64> {
    let r = x.round();
    (r.is_finite() && r >= -(2f32.powi(63)) && r < 2f32.powi(63)).then_some(r as i64)
}

fn f32s(b: &[u8]) -> Vec<f32> {
    b.chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

/// What ggml's `gguf_init_from_file` rejects beyond gmat's reader: llama-quantize would then
/// try the legacy layout, which a file starting with "GGUF" cannot satisfy.
fn check_like_ggml(f: &GgufFile) -> Result<()> {
    let mut seen = std::collections::HashSet::new();
    for (k, _) in &f.metadata {
        if k.is_empty() {
            bail!("empty metadata key");
        }
        if !seen.insert(k.as_str()) {
            bail!("duplicate metadata key {k}");
        }
    }
    let alignment = match f.get("general.alignment") {
        None => DEFAULT_ALIGNMENT,
        Some(Value::U32(a)) => *a as u64,
        Some(v) => bail!("general.alignment is {:?}, not u32", v.value_type()),
    };
    let mut names = std::collections::HashSet::new();
    let mut expected = 0u64;
    for t in &f.tensors {
        if t.name.len() >= GGML_MAX_NAME {
            bail!(
                "tensor name {} is {} bytes, ggml allows at most {}",
                t.name,
                t.name.len(),
                GGML_MAX_NAME - 1
            );
        }
        if !names.insert(t.name.as_str()) {
            bail!("duplicate tensor name {}", t.name);
        }
        if t.offset != expected {
            bail!(
                "tensor {} has offset {}, expected {expected}",
                t.name,
                t.offset
            );
        }
        let n = t.n_bytes().with_context(|| format!("tensor {}", t.name))?;
        expected = align_up(expected + n, alignment);
    }
    let len = f
        .data_offset
        .checked_add(expected)
        .context("data section overflows")?;
    let file_len = std::fs::metadata(&f.path)
        .with_context(|| format!("cannot stat {}", f.path.display()))?
        .len();
    if !f.tensors.is_empty() && file_len < len {
        bail!("data section is truncated: the file has {file_len} bytes, the tensors need {len}");
    }
    Ok(())
}

/// A byte reader with `std::istream::read` semantics where llama's loader relies on them.
struct Istream<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Istream<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let end = self.pos.checked_add(n).filter(|&e| e <= self.buf.len())?;
        let s = &self.buf[self.pos..end];
        self.pos = end;
        Some(s)
    }
    fn i32(&mut self) -> Option<i32> {
        self.take(4)
            .map(|b| i32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }
    fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }
}

/// `common_imatrix_load_legacy`: i32 entry count; per entry i32 name length, name, i32 ncall,
/// i32 nval, nval f32; then optionally i32 chunk count, i32 dataset length, dataset name.
pub(crate) fn load_legacy(buf: &[u8]) -> Result<Raw> {
    let mut r = Istream { buf, pos: 0 };
    let n_entries = match r.i32() {
        Some(n) if n >= 1 => n,
        Some(n) => bail!("no data (entry count {n})"),
        None => bail!("no data (the file is shorter than its entry count)"),
    };
    let mut entries: BTreeMap<Vec<u8>, RawEntry> = BTreeMap::new();
    for i in 0..n_entries {
        // llama numbers entries from 1 in this message and from 0 in the next two.
        let len = r
            .i32()
            .with_context(|| format!("failed reading name for entry {}", i + 1))?;
        if len < 0 || len == i32::MAX {
            bail!(
                "entry {}: name length {len} (llama-quantize's behaviour is undefined)",
                i + 1
            );
        }
        let name = r.take(len as usize).with_context(|| {
            format!(
                "failed reading name for entry {} ({len} bytes, {} left)",
                i + 1,
                r.remaining()
            )
        })?;
        let name = c_str(name).to_vec();
        let shown = String::from_utf8_lossy(&name).into_owned();
        let (ncall, nval) = match (r.i32(), r.i32()) {
            (Some(c), Some(v)) if v >= 1 => (c, v),
            (Some(_), Some(v)) => {
                bail!("entry {i} ({shown}): number of values is {v}, must be at least 1")
            }
            _ => bail!("entry {i} ({shown}): failed reading the call and value counts"),
        };
        let data = r.take(nval as usize * 4).with_context(|| {
            format!(
                "entry {i} ({shown}): failed reading {nval} values ({} bytes left)",
                r.remaining()
            )
        })?;
        // A repeated name replaces the earlier entry, as std::map::operator[] does.
        entries.insert(
            name,
            RawEntry {
                sums: f32s(data),
                counts: vec![ncall as i64],
            },
        );
    }
    // The optional trailer, read with istream semantics: a short read of the chunk count keeps
    // the bytes it got (little-endian, the rest 0); a missing or short dataset is dropped.
    let mut chunk_count = 0;
    let mut datasets = Vec::new();
    if r.remaining() > 0 {
        let n = r.remaining().min(4);
        let mut b = [0u8; 4];
        b[..n].copy_from_slice(&r.buf[r.pos..r.pos + n]);
        r.pos += n;
        chunk_count = i32::from_le_bytes(b);
        if n == 4 {
            if let Some(len) = r.i32() {
                if len == i32::MAX {
                    bail!("dataset name length {len} (llama-quantize's behaviour is undefined)");
                }
                if len > 0 {
                    if let Some(d) = r.take(len as usize) {
                        datasets.push(c_str(d).to_vec());
                    }
                }
            }
        }
    }
    Ok(Raw {
        entries,
        datasets,
        chunk_count,
        chunk_size: 0,
        format: ImatrixFormat::Legacy,
    })
}

#[cfg(test)]
mod tests;
