//! Reading a SentencePiece `tokenizer.model` (a serialized `sentencepiece.ModelProto`).
//!
//! The converter asks `SentencePieceProcessor` for each id's piece, score and kind
//! (`IsUnknown`/`IsControl`/`IsUnused`/`IsByte`); all of that is the repeated `pieces` field
//! (1) of `ModelProto`, each a `SentencePiece { piece = 1; score = 2; type = 3 }`. The other
//! fields (trainer/normalizer specs) do not reach the GGUF on this path — `add_space_prefix`
//! comes from tokenizer_config.json — so they are skipped. Loading also rejects what
//! `SentencePieceProcessor.LoadFromFile` rejects (empty or duplicate pieces, no or several
//! `<unk>`), because there the converter stops too.

use std::collections::HashSet;
use std::path::Path;

use anyhow::{bail, Context, Result};

use super::protobuf::{Reader, Wire};

/// `ModelProto.SentencePiece.Type`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum PieceType {
    Normal,
    Unknown,
    Control,
    UserDefined,
    Unused,
    Byte,
}

impl PieceType {
    /// Proto2 keeps an unknown enum value as an unknown field, so the getter returns the
    /// default (`NORMAL`).
    fn from_wire(v: u64) -> PieceType {
        match v {
            2 => PieceType::Unknown,
            3 => PieceType::Control,
            4 => PieceType::UserDefined,
            5 => PieceType::Unused,
            6 => PieceType::Byte,
            _ => PieceType::Normal,
        }
    }
}

/// One vocabulary entry.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Piece {
    pub piece: String,
    pub score: f32,
    pub kind: PieceType,
}

/// Reads and validates `path`.
pub(crate) fn load(path: &Path) -> Result<Vec<Piece>> {
    let bytes = crate::fsio::read_limited(path, crate::fsio::SMALL_FILE_LIMIT)?;
    parse(&bytes).with_context(|| {
        format!(
            "{} is not a valid SentencePiece model (tokenizer.model)",
            path.display()
        )
    })
}

/// Parses a serialized `ModelProto`.
pub(crate) fn parse(bytes: &[u8]) -> Result<Vec<Piece>> {
    let mut pieces = Vec::new();
    let mut r = Reader::new(bytes);
    while let Some((field, value)) = r.next_field()? {
        if field == 1 {
            let Wire::Bytes(msg) = value else {
                bail!("field `pieces` has the wrong wire type");
            };
            let piece = parse_piece(msg).with_context(|| format!("piece {}", pieces.len()))?;
            pieces.push(piece);
        }
    }
    validate(&pieces)?;
    Ok(pieces)
}

fn parse_piece(msg: &[u8]) -> Result<Piece> {
    let mut piece = Piece {
        piece: String::new(),
        score: 0.0,
        kind: PieceType::Normal,
    };
    let mut r = Reader::new(msg);
    while let Some((field, value)) = r.next_field()? {
        match (field, value) {
            (1, Wire::Bytes(b)) => {
                piece.piece =
                    String::from_utf8(b.to_vec()).context("`piece` is not valid UTF-8")?;
            }
            (2, Wire::Fixed32(bits)) => piece.score = f32::from_bits(bits),
            (3, Wire::Varint(v)) => piece.kind = PieceType::from_wire(v),
            (1..=3, _) => bail!("field {field} has the wrong wire type"),
            _ => {}
        }
    }
    Ok(piece)
}

/// The checks of `ModelInterface::InitializePieces` in sentencepiece.
fn validate(pieces: &[Piece]) -> Result<()> {
    if pieces.is_empty() {
        bail!("the model has no pieces");
    }
    let mut seen = HashSet::with_capacity(pieces.len());
    let mut unk = None;
    for (id, p) in pieces.iter().enumerate() {
        if p.piece.is_empty() {
            bail!("piece {id} is empty");
        }
        if !seen.insert(p.piece.as_str()) {
            bail!("piece {id} ({:?}) is already defined", p.piece);
        }
        if p.kind == PieceType::Unknown {
            if unk.is_some() {
                bail!("<unk> is defined twice (piece {id})");
            }
            unk = Some(id);
        }
    }
    if unk.is_none() {
        bail!("no piece has type UNKNOWN (<unk> is not defined)");
    }
    Ok(())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Serializes pieces the way protobuf does (for building test models).
    pub(crate) fn encode(pieces: &[(&str, f32, u8)]) -> Vec<u8> {
        let mut out = Vec::new();
        for (piece, score, kind) in pieces {
            let mut msg = vec![0x0a, piece.len() as u8];
            msg.extend_from_slice(piece.as_bytes());
            msg.push(0x15);
            msg.extend_from_slice(&score.to_le_bytes());
            msg.extend_from_slice(&[0x18, *kind]);
            out.push(0x0a);
            out.push(msg.len() as u8);
            out.extend_from_slice(&msg);
        }
        out
    }

    #[test]
    fn parses_pieces() {
        let bytes = encode(&[("<unk>", 0.0, 2), ("<s>", 0.0, 3), ("▁a", -1.5, 1)]);
        let p = parse(&bytes).unwrap();
        assert_eq!(p.len(), 3);
        assert_eq!(p[2].piece, "▁a");
        assert_eq!(p[2].score, -1.5);
        assert_eq!(p[1].kind, PieceType::Control);
    }

    #[test]
    fn rejects_invalid_models() {
        let ok = encode(&[("<unk>", 0.0, 2), ("a", 0.0, 1)]);
        for cut in 1..ok.len() {
            // Every strict prefix either fails to parse or loses the second piece.
            if let Ok(p) = parse(&ok[..cut]) {
                assert!(p.len() < 2, "prefix {cut} parsed fully");
            }
        }
        assert!(parse(&ok[..ok.len() - 1]).is_err());
        assert!(parse(&[]).is_err());
        assert!(parse(&encode(&[("a", 0.0, 1)])).is_err()); // no <unk>
        assert!(parse(&encode(&[("<unk>", 0.0, 2), ("a", 0.0, 1), ("a", 0.0, 1)])).is_err());
    }
}
