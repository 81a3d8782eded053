//! gguf-py's token types and the converter's test for added tokens that look special.

use crate::gguf::Value;

/// gguf-py `TokenType` (and the converter's `SentencePieceTokenTypes`, same values).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(i32)]
pub enum TokenType {
    Normal = 1,
    Unknown = 2,
    Control = 3,
    UserDefined = 4,
    Unused = 5,
    Byte = 6,
}

/// The token-type array as gguf-py writes a `list[int]` (INT32 elements).
pub(crate) fn token_types_value(types: &[TokenType]) -> Value {
    Value::i32s(types.iter().map(|t| *t as i32))
}

/// `TextModel.does_token_look_special`: added tokens some models forgot to mark special.
pub(crate) fn does_token_look_special(token: &str) -> bool {
    matches!(token, "<pad>" | "<mask>" | "<2mass>" | "[@BOS@]")
        || (token.starts_with("<|") && token.ends_with("|>"))
        || (token.starts_with("<｜") && token.ends_with("｜>"))
        || (token.starts_with("<unused") && token.ends_with('>'))
}
