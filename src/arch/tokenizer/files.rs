//! Reading the tokenizer files of an HF folder, with errors that name the file.
//!
//! The converter tests `path.is_file()` before most reads and treats a missing file as "not
//! there" rather than an error; [`ModelDir`] keeps that distinction (`Option`) explicit.

use std::cell::RefCell;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::rc::Rc;

use anyhow::{Context, Result};
use serde_json::Value as Json;

/// The model folder, with each JSON file parsed at most once: tokenizer.json is read by the
/// vocabulary, the pre-tokenizer check and `SpecialVocab`, and for a 150k-token vocabulary one
/// parse costs more than everything else together.
pub struct ModelDir {
    dir: PathBuf,
    json: RefCell<HashMap<&'static str, Option<Rc<Json>>>>,
}

impl ModelDir {
    pub fn new(dir: &Path) -> ModelDir {
        ModelDir {
            dir: dir.to_path_buf(),
            json: RefCell::new(HashMap::new()),
        }
    }

    /// `dir/name`.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// Whether `dir/name` is a file (`Path.is_file()`).
    pub fn is_file(&self, name: &str) -> bool {
        self.path(name).is_file()
    }

    /// The parsed JSON of `dir/name`, or `None` if it is not a file; a malformed file is an
    /// error naming it.
    pub fn json(&self, name: &'static str) -> Result<Option<Rc<Json>>> {
        if let Some(v) = self.json.borrow().get(name) {
            return Ok(v.clone());
        }
        let p = self.path(name);
        let v = if p.is_file() {
            Some(Rc::new(read_json(&p)?))
        } else {
            None
        };
        self.json.borrow_mut().insert(name, v.clone());
        Ok(v)
    }

    /// The UTF-8 text of `dir/name` as Python's text-mode `open(...).read()` returns it
    /// (universal newlines), or `None` if it is not a file.
    pub fn text(&self, name: &str) -> Result<Option<String>> {
        let p = self.path(name);
        if !p.is_file() {
            return Ok(None);
        }
        crate::fsio::read_small_text(&p)
            .map(|t| Some(universal_newlines(&t)))
            .with_context(|| format!("cannot read {} as UTF-8 text", p.display()))
    }
}

/// The parsed JSON of `p`; a missing or malformed file is an error naming it.
pub(crate) fn read_json(p: &Path) -> Result<Json> {
    let bytes = crate::fsio::read_limited(p, crate::fsio::SMALL_FILE_LIMIT)?;
    serde_json::from_slice(&bytes).with_context(|| format!("{} is not valid JSON", p.display()))
}

/// Python text-mode reading turns "\r\n" and a lone "\r" into "\n".
pub(crate) fn universal_newlines(text: &str) -> String {
    if text.contains('\r') {
        text.replace("\r\n", "\n").replace('\r', "\n")
    } else {
        text.to_string()
    }
}

/// Python truthiness of a JSON value (`if x:`): null, false, 0, "", [] and {} are false.
pub(crate) fn truthy(v: &Json) -> bool {
    match v {
        Json::Null => false,
        Json::Bool(b) => *b,
        Json::Number(n) => n.as_f64().is_some_and(|f| f != 0.0),
        Json::String(s) => !s.is_empty(),
        Json::Array(a) => !a.is_empty(),
        Json::Object(o) => !o.is_empty(),
    }
}

/// Python's `d.get(key)` on a value that may not be a dict (then there is nothing to get).
pub(crate) fn get<'a>(v: &'a Json, key: &str) -> Option<&'a Json> {
    v.as_object().and_then(|o| o.get(key))
}

/// A JSON value as a Python `int` would be seen by `isinstance(x, int)`: integers, and
/// booleans (Python's `bool` is an `int`). Floats and everything else are not ints.
pub(crate) fn py_int(v: &Json) -> Option<i128> {
    match v {
        Json::Bool(b) => Some(*b as i128),
        Json::Number(n) => n
            .as_i64()
            .map(i128::from)
            .or_else(|| n.as_u64().map(i128::from)),
        _ => None,
    }
}
