//! The few Python semantics the configuration classes' `__init__` code depends on, over JSON
//! values as `json.load` gives them (a JSON integer is a Python `int`, a number with a fraction
//! or exponent a `float`, `true`/`false` a `bool`, which Python treats as the integers 1 and 0).
//! A Python exception is a [`Raised`]: it makes `AutoConfig.from_pretrained` fail, and the
//! converter then reads config.json as raw JSON.

use std::cmp::Ordering;

use serde_json::Value as Json;

/// A Python exception raised while transformers builds the configuration object.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Raised(pub String);

/// `Result` of code that may raise.
pub type Py<T> = Result<T, Raised>;

/// Raises a Python exception.
pub fn raise<T>(msg: impl Into<String>) -> Py<T> {
    Err(Raised(msg.into()))
}

/// A Python number.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Num {
    Int(i128),
    Float(f64),
}

impl Num {
    /// The number a JSON value is in Python (`bool` included), `None` for other types.
    pub fn of(v: &Json) -> Option<Num> {
        match v {
            Json::Bool(b) => Some(Num::Int(i128::from(*b))),
            Json::Number(n) => {
                if let Some(i) = n.as_i64() {
                    Some(Num::Int(i128::from(i)))
                } else if let Some(u) = n.as_u64() {
                    Some(Num::Int(i128::from(u)))
                } else {
                    n.as_f64().map(Num::Float)
                }
            }
            _ => None,
        }
    }

    fn f(self) -> f64 {
        match self {
            Num::Int(i) => i as f64,
            Num::Float(f) => f,
        }
    }

    /// The JSON value of this number (`json.dumps` of it).
    pub fn json(self) -> Json {
        match self {
            Num::Int(i) => {
                if let Ok(v) = i64::try_from(i) {
                    Json::from(v)
                } else if let Ok(v) = u64::try_from(i) {
                    Json::from(v)
                } else {
                    Json::from(i as f64)
                }
            }
            Num::Float(f) => Json::from(f),
        }
    }
}

fn num(v: &Json, op: &str) -> Py<Num> {
    Num::of(v).ok_or_else(|| Raised(format!("TypeError: unsupported operand {v} for {op}")))
}

/// `a // b`.
pub fn floordiv(a: &Json, b: &Json) -> Py<Json> {
    let (x, y) = (num(a, "//")?, num(b, "//")?);
    match (x, y) {
        (Num::Int(_), Num::Int(0)) => {
            raise("ZeroDivisionError: integer division or modulo by zero")
        }
        (Num::Int(p), Num::Int(q)) => {
            Ok(Num::Int(p.div_euclid(q) - i128::from(q < 0 && p.rem_euclid(q) != 0)).json())
        }
        _ if y.f() == 0.0 => raise("ZeroDivisionError: float floor division by zero"),
        _ => Ok(Num::Float((x.f() / y.f()).floor()).json()),
    }
}

/// `a / b`.
pub fn truediv(a: &Json, b: &Json) -> Py<f64> {
    let (x, y) = (num(a, "/")?, num(b, "/")?);
    if y.f() == 0.0 {
        return raise("ZeroDivisionError: division by zero");
    }
    Ok(x.f() / y.f())
}

/// `a + b` of numbers.
pub fn add(a: &Json, b: &Json) -> Py<Json> {
    Ok(match (num(a, "+")?, num(b, "+")?) {
        (Num::Int(p), Num::Int(q)) => Num::Int(p + q),
        (x, y) => Num::Float(x.f() + y.f()),
    }
    .json())
}

/// `a * b` of numbers.
pub fn mul(a: &Json, b: &Json) -> Py<Json> {
    Ok(match (num(a, "*")?, num(b, "*")?) {
        (Num::Int(p), Num::Int(q)) => Num::Int(p * q),
        (x, y) => Num::Float(x.f() * y.f()),
    }
    .json())
}

/// `int(v)` of a number (a float truncates toward zero).
pub fn int(v: &Json) -> Py<i128> {
    match num(v, "int()")? {
        Num::Int(i) => Ok(i),
        Num::Float(f) if f.is_finite() => Ok(f.trunc() as i128),
        Num::Float(_) => raise("ValueError: cannot convert float NaN or infinity to integer"),
    }
}

/// `float(v)`.
pub fn float(v: &Json) -> Py<Json> {
    match v {
        Json::String(s) => match s.trim().parse::<f64>() {
            Ok(f) => Ok(Json::from(f)),
            Err(_) => raise(format!(
                "ValueError: could not convert string to float: {s:?}"
            )),
        },
        _ => Ok(Json::from(num(v, "float()")?.f())),
    }
}

/// `range(v)`: the number of items, for an `int` only.
pub fn range_len(v: &Json) -> Py<usize> {
    match Num::of(v) {
        Some(Num::Int(i)) => Ok(usize::try_from(i.max(0)).unwrap_or(usize::MAX)),
        _ => raise(format!(
            "TypeError: {v} cannot be interpreted as an integer"
        )),
    }
}

/// Python truthiness.
pub fn truthy(v: &Json) -> bool {
    match v {
        Json::Null => false,
        Json::Bool(b) => *b,
        Json::Number(n) => n.as_f64() != Some(0.0),
        Json::String(s) => !s.is_empty(),
        Json::Array(a) => !a.is_empty(),
        Json::Object(o) => !o.is_empty(),
    }
}

/// `a or b`.
pub fn or<'a>(a: &'a Json, b: &'a Json) -> &'a Json {
    if truthy(a) {
        a
    } else {
        b
    }
}

/// The ordering of `a` and `b` (`<`, `<=`, `>=`), which raises for values Python cannot order.
pub fn cmp(a: &Json, b: &Json) -> Py<Ordering> {
    match (Num::of(a), Num::of(b), a, b) {
        (Some(x), Some(y), _, _) => x
            .f()
            .partial_cmp(&y.f())
            .map_or_else(|| raise("comparison with NaN"), Ok),
        (_, _, Json::String(x), Json::String(y)) => Ok(x.cmp(y)),
        _ => raise(format!(
            "TypeError: '<' not supported between instances of {a} and {b}"
        )),
    }
}

/// `a == b`: numbers by value (`1 == 1.0 == True`), everything else structurally.
pub fn eq(a: &Json, b: &Json) -> bool {
    match (Num::of(a), Num::of(b)) {
        (Some(x), Some(y)) => x.f() == y.f(),
        _ => a == b,
    }
}

/// `key in v` for a string key: a dict's keys, a list's items, a string's substrings; other
/// values raise.
pub fn contains(v: &Json, key: &str) -> Py<bool> {
    match v {
        Json::Object(m) => Ok(m.contains_key(key)),
        Json::Array(a) => Ok(a.iter().any(|x| x.as_str() == Some(key))),
        Json::String(s) => Ok(s.contains(key)),
        _ => raise(format!("TypeError: argument of type {v} is not iterable")),
    }
}

/// `len(v)`.
pub fn len(v: &Json) -> Py<usize> {
    match v {
        Json::Object(m) => Ok(m.len()),
        Json::Array(a) => Ok(a.len()),
        Json::String(s) => Ok(s.chars().count()),
        _ => raise(format!("TypeError: object {v} has no len()")),
    }
}

/// `str(v)` of a scalar.
pub fn str(v: &Json) -> String {
    match v {
        Json::Null => "None".into(),
        Json::Bool(true) => "True".into(),
        Json::Bool(false) => "False".into(),
        Json::String(s) => s.clone(),
        Json::Number(_) => match Num::of(v) {
            Some(Num::Int(i)) => i.to_string(),
            Some(Num::Float(f)) => float_repr(f),
            None => v.to_string(),
        },
        _ => v.to_string(),
    }
}

/// Python's `repr` of a float (shortest round-trip digits, `.0` for integral values).
fn float_repr(f: f64) -> String {
    if f.is_nan() {
        return "nan".into();
    }
    if f.is_infinite() {
        return if f > 0.0 { "inf" } else { "-inf" }.into();
    }
    let s = format!("{f:?}");
    if s.contains('e') || s.contains('.') || s.contains("inf") {
        s
    } else {
        format!("{s}.0")
    }
}

/// `str(pathlib.Path(p))`: repeated and trailing separators and `.` components dropped, a
/// leading `//` kept, `.` for an empty path.
pub fn path_str(p: &str) -> String {
    let lead = if p.starts_with("//") && !p.starts_with("///") {
        "//"
    } else if p.starts_with('/') {
        "/"
    } else {
        ""
    };
    let parts: Vec<&str> = p
        .split('/')
        .filter(|s| !s.is_empty() && *s != ".")
        .collect();
    let s = format!("{lead}{}", parts.join("/"));
    if s.is_empty() {
        ".".into()
    } else {
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn floor_division_follows_python() {
        assert_eq!(floordiv(&json!(256), &json!(8)).unwrap(), json!(32));
        assert_eq!(floordiv(&json!(-7), &json!(2)).unwrap(), json!(-4));
        assert_eq!(floordiv(&json!(7), &json!(-2)).unwrap(), json!(-4));
        assert_eq!(floordiv(&json!(256.0), &json!(8)).unwrap(), json!(32.0));
        assert_eq!(floordiv(&json!(true), &json!(1)).unwrap(), json!(1));
        assert!(floordiv(&json!(1), &json!(0)).is_err());
        assert!(floordiv(&json!(null), &json!(2)).is_err());
        assert!(floordiv(&json!("8"), &json!(2)).is_err());
    }

    #[test]
    fn paths_print_as_pathlib_does() {
        assert_eq!(path_str("a//b/./c/"), "a/b/c");
        assert_eq!(path_str("./x"), "x");
        assert_eq!(path_str(""), ".");
        assert_eq!(path_str("/"), "/");
        assert_eq!(path_str("//srv/m"), "//srv/m");
        assert_eq!(path_str("///srv/m"), "/srv/m");
        assert_eq!(path_str("../m/"), "../m");
    }

    #[test]
    fn comparisons_raise_where_python_does() {
        assert_eq!(cmp(&json!(4.0), &json!(1)).unwrap(), Ordering::Greater);
        assert!(cmp(&json!(null), &json!(1)).is_err());
        assert!(cmp(&json!("a"), &json!(1)).is_err());
        assert_eq!(str(&json!(2.0)), "2.0");
    }
}
