//! Just enough of the protobuf wire format to mutate messages field by
//! field without their schema: scan the top-level fields of a buffer, and
//! rebuild a buffer from (possibly changed) fields.

use std::ops::Range;

/// Wire type of a varint field.
pub const VARINT: u8 = 0;
/// Wire type of a 64-bit fixed field.
pub const FIXED64: u8 = 1;
/// Wire type of a length-delimited field (bytes, strings, messages, packed).
pub const LEN: u8 = 2;
/// Wire type of a 32-bit fixed field.
pub const FIXED32: u8 = 5;

/// One field as found in a buffer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Field {
    /// The bytes of the whole field (tag included).
    pub span: Range<usize>,
    /// The field number.
    pub number: u64,
    /// The wire type.
    pub wire: u8,
    /// The value bytes (for a varint: the encoded varint; for LEN: the payload).
    pub value: Range<usize>,
}

/// Reads a varint at `pos`; returns its value and the position after it.
pub fn read_varint(bytes: &[u8], mut pos: usize) -> Option<(u64, usize)> {
    let mut value = 0u64;
    for shift in (0..64).step_by(7) {
        let b = *bytes.get(pos)?;
        pos += 1;
        value |= u64::from(b & 0x7f) << shift;
        if b & 0x80 == 0 {
            return Some((value, pos));
        }
    }
    None
}

/// Appends `v` as a varint.
pub fn write_varint(mut v: u64, out: &mut Vec<u8>) {
    loop {
        let b = u8::try_from(v & 0x7f).unwrap_or(0);
        v >>= 7;
        if v == 0 {
            out.push(b);
            return;
        }
        out.push(b | 0x80);
    }
}

/// Appends a field header.
pub fn write_tag(number: u64, wire: u8, out: &mut Vec<u8>) {
    write_varint((number << 3) | u64::from(wire & 7), out);
}

/// The top-level fields of `bytes`, or `None` when it is not a well-formed
/// sequence of fields.
pub fn scan(bytes: &[u8]) -> Option<Vec<Field>> {
    let mut fields = Vec::new();
    let mut pos = 0;
    while pos < bytes.len() {
        let start = pos;
        let (tag, p) = read_varint(bytes, pos)?;
        let wire = u8::try_from(tag & 7).ok()?;
        let number = tag >> 3;
        if number == 0 {
            return None;
        }
        let (value, end) = match wire {
            VARINT => {
                let (_, e) = read_varint(bytes, p)?;
                (p..e, e)
            }
            FIXED64 => (p..p.checked_add(8)?, p.checked_add(8)?),
            FIXED32 => (p..p.checked_add(4)?, p.checked_add(4)?),
            LEN => {
                let (n, q) = read_varint(bytes, p)?;
                let e = q.checked_add(usize::try_from(n).ok()?)?;
                (q..e, e)
            }
            _ => return None,
        };
        if end > bytes.len() {
            return None;
        }
        fields.push(Field {
            span: start..end,
            number,
            wire,
            value,
        });
        pos = end;
    }
    Some(fields)
}

/// A length-delimited field with `payload`.
pub fn len_field(number: u64, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(payload.len() + 4);
    write_tag(number, LEN, &mut out);
    write_varint(payload.len() as u64, &mut out);
    out.extend_from_slice(payload);
    out
}

/// A varint field with `value`.
pub fn varint_field(number: u64, value: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(11);
    write_tag(number, VARINT, &mut out);
    write_varint(value, &mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use grompi_proto::pb;
    use prost::Message;

    #[test]
    fn scans_what_prost_writes() {
        let m = pb::HeadProof {
            server: 3,
            conversation_id: vec![1; 32],
            epoch: 300,
            count: 0,
            head: vec![2; 32],
            nonce: vec![],
            tag: vec![4; 32],
        };
        let bytes = m.encode_to_vec();
        let fields = scan(&bytes).unwrap();
        assert_eq!(
            fields.iter().map(|f| f.number).collect::<Vec<_>>(),
            vec![1, 2, 3, 5, 7]
        );
        let mut rebuilt = varint_field(1, 3);
        rebuilt.extend(len_field(2, &[1; 32]));
        rebuilt.extend(varint_field(3, 300));
        rebuilt.extend(len_field(5, &[2; 32]));
        rebuilt.extend(len_field(7, &[4; 32]));
        assert_eq!(rebuilt, bytes);
        assert!(scan(&[0x0a, 0x05, 1]).is_none());
        assert_eq!(read_varint(&[0xff; 11], 0), None);
    }
}
