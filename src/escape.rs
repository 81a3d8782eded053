//! Text from files (tensor names, keys, paths) shown on a terminal: control characters and
//! Unicode direction overrides are escaped, so a crafted name cannot move the cursor, change
//! colours or reorder what the user reads.

use std::borrow::Cow;

/// Whether `c` must not reach a terminal as it is.
fn unsafe_char(c: char) -> bool {
    c.is_control()
        || matches!(c, '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}' | '\u{200E}' | '\u{200F}' | '\u{061C}')
}

/// `s` with every control character (C0, DEL, C1) and direction override written as a Rust
/// escape (`\u{1b}`, `\n`, `\t`); unchanged (borrowed) when there is none.
pub fn controls(s: &str) -> Cow<'_, str> {
    if !s.chars().any(unsafe_char) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        if unsafe_char(c) {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

/// Like [`controls`], but keeps line breaks (for multi-line output such as `--dry-run`).
pub fn controls_keep_lines(s: &str) -> Cow<'_, str> {
    if !s.chars().any(|c| c != '\n' && unsafe_char(c)) {
        return Cow::Borrowed(s);
    }
    Cow::Owned(s.split('\n').map(controls).collect::<Vec<_>>().join("\n"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_are_escaped() {
        assert!(matches!(controls("model.layers.0.w"), Cow::Borrowed(_)));
        assert_eq!(controls("a\u{1b}[31mb"), "a\\u{1b}[31mb");
        assert_eq!(controls("x\ny\r"), "x\\ny\\r");
        assert_eq!(controls("\u{202E}evil"), "\\u{202e}evil");
        assert_eq!(controls_keep_lines("a\nb\u{7}"), "a\nb\\u{7}");
    }
}
