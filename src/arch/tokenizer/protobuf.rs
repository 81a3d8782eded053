//! A minimal, bounds-checked protobuf wire-format reader.
//!
//! Reading `tokenizer.model` needs only the pieces of SentencePiece's `ModelProto` (three scalar
//! fields per piece). A hand-written reader of the four wire types is ~80 lines, never allocates
//! beyond the input, and turns every malformed length, tag or truncation into an error instead
//! of a panic; pulling in a protobuf code generator and the `.proto` schema for that would cost
//! more than it saves.

use anyhow::{bail, Result};

/// One field value as it appears on the wire.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) enum Wire<'a> {
    Varint(u64),
    Fixed64(u64),
    Bytes(&'a [u8]),
    Fixed32(u32),
}

/// Iterates the `(field number, value)` pairs of one message.
pub(crate) struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    pub fn new(buf: &'a [u8]) -> Self {
        Reader { buf, pos: 0 }
    }

    fn varint(&mut self) -> Result<u64> {
        let mut value = 0u64;
        for shift in (0..64).step_by(7) {
            let Some(&b) = self.buf.get(self.pos) else {
                bail!("truncated varint at byte {}", self.pos);
            };
            self.pos += 1;
            value |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Ok(value);
            }
        }
        bail!("varint longer than 10 bytes at byte {}", self.pos)
    }

    fn take(&mut self, n: u64) -> Result<&'a [u8]> {
        let start = self.pos;
        let end = usize::try_from(n)
            .ok()
            .and_then(|n| start.checked_add(n))
            .filter(|&e| e <= self.buf.len());
        let Some(end) = end else {
            bail!(
                "field of {n} bytes at byte {start} runs past the end ({} bytes)",
                self.buf.len()
            );
        };
        self.pos = end;
        Ok(&self.buf[start..end])
    }

    /// The next field, or `None` at the end of the message.
    pub fn next_field(&mut self) -> Result<Option<(u64, Wire<'a>)>> {
        if self.pos >= self.buf.len() {
            return Ok(None);
        }
        let at = self.pos;
        let key = self.varint()?;
        let field = key >> 3;
        if field == 0 {
            bail!("invalid field number 0 at byte {at}");
        }
        let value = match key & 7 {
            0 => Wire::Varint(self.varint()?),
            1 => {
                let b = self.take(8)?;
                Wire::Fixed64(u64::from_le_bytes([
                    b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7],
                ]))
            }
            2 => {
                let len = self.varint()?;
                Wire::Bytes(self.take(len)?)
            }
            5 => {
                let b = self.take(4)?;
                Wire::Fixed32(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            }
            w => bail!("unsupported wire type {w} (field {field}) at byte {at}"),
        };
        Ok(Some((field, value)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_all_wire_types() {
        // field 1 varint 300, field 2 bytes "hi", field 3 fixed32 1.5f, field 4 fixed64 7
        let mut buf = vec![0x08, 0xac, 0x02, 0x12, 2, b'h', b'i', 0x1d];
        buf.extend_from_slice(&1.5f32.to_le_bytes());
        buf.push(0x21);
        buf.extend_from_slice(&7u64.to_le_bytes());
        let mut r = Reader::new(&buf);
        assert_eq!(r.next_field().unwrap(), Some((1, Wire::Varint(300))));
        assert_eq!(r.next_field().unwrap(), Some((2, Wire::Bytes(b"hi"))));
        assert_eq!(
            r.next_field().unwrap(),
            Some((3, Wire::Fixed32(1.5f32.to_bits())))
        );
        assert_eq!(r.next_field().unwrap(), Some((4, Wire::Fixed64(7))));
        assert_eq!(r.next_field().unwrap(), None);
    }

    #[test]
    fn malformed_input_is_an_error() {
        for bad in [
            &[0x08, 0x80][..],    // truncated varint
            &[0x12, 5, b'a'][..], // length past the end
            &[
                0x12, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01,
            ][..], // huge length
            &[0x1d, 0, 0][..],    // truncated fixed32
            &[0x0b][..],          // group (wire type 3)
            &[0x00][..],          // field 0
            &[
                0x08, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01,
            ][..], // 11-byte varint
        ] {
            let mut r = Reader::new(bad);
            let mut res = Ok(None);
            for _ in 0..4 {
                res = r.next_field();
                if !matches!(res, Ok(Some(_))) {
                    break;
                }
            }
            assert!(res.is_err(), "{bad:?} should fail");
        }
    }
}
