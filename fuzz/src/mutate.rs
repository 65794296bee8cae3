//! Mutations: byte-level (bit flips, inserts, deletes, truncation,
//! interesting values, dictionary tokens, splicing) and, for protobuf
//! targets, field-level (change a varint, resize or rewrite a payload,
//! recurse into a nested message, duplicate, drop, swap or add fields).

use crate::protobuf::{self, FIXED32, FIXED64, Field, LEN, VARINT};
use crate::rng::Rng;

/// Interesting single bytes.
const BYTES: [u8; 10] = [0, 1, 2, 5, 0x1f, 0x20, 0x7f, 0x80, 0xfe, 0xff];

/// Interesting integers (written at various widths and byte orders).
const INTS: [u64; 16] = [
    0,
    1,
    2,
    5,
    6,
    31,
    32,
    33,
    64,
    65,
    1024,
    1025,
    4096,
    4097,
    0x7fff_ffff,
    u64::MAX,
];

/// Interesting payload lengths (protocol sizes and their neighbours).
const LENGTHS: [usize; 9] = [0, 1, 16, 31, 32, 33, 63, 64, 65];

/// What a mutation may use besides the input itself.
pub struct Context<'a> {
    /// Other inputs, for splicing.
    pub corpus: &'a [Vec<u8>],
    /// Tokens worth inserting for this target.
    pub dictionary: &'a [&'a [u8]],
    /// Whether the input is a protobuf message.
    pub protobuf: bool,
    /// Longest input to produce.
    pub max_len: usize,
}

/// Applies a random stack of 1 to 8 mutations.
pub fn mutate(rng: &mut Rng, input: &[u8], ctx: &Context<'_>) -> Vec<u8> {
    let mut out = input.to_vec();
    let exp = rng.below(4);
    let rounds = 1 + rng.below(1 << exp).min(7);
    for _ in 0..rounds {
        if ctx.protobuf
            && rng.chance(2, 5)
            && let Some(m) = mutate_message(rng, &out, 0)
        {
            out = m;
            continue;
        }
        mutate_bytes(rng, &mut out, ctx);
    }
    out.truncate(ctx.max_len);
    out
}

fn mutate_bytes(rng: &mut Rng, out: &mut Vec<u8>, ctx: &Context<'_>) {
    let len = out.len();
    match rng.below(13) {
        0 => {
            if let Some(b) = out.get_mut(rng.below(len)) {
                *b ^= 1 << rng.below(8);
            }
        }
        1 => {
            let v = rng.byte();
            if let Some(b) = out.get_mut(rng.below(len)) {
                *b = v;
            }
        }
        2 => {
            let v = rng.pick(&BYTES).copied().unwrap_or(0);
            if let Some(b) = out.get_mut(rng.below(len)) {
                *b = v;
            }
        }
        3 => {
            let delta = u8::try_from(1 + rng.below(16)).unwrap_or(1);
            let up = rng.chance(1, 2);
            if let Some(b) = out.get_mut(rng.below(len)) {
                *b = if up {
                    b.wrapping_add(delta)
                } else {
                    b.wrapping_sub(delta)
                };
            }
        }
        4 => {
            let at = rng.below(len + 1);
            let n = 1 + rng.below(8);
            let bytes: Vec<u8> = (0..n).map(|_| rng.byte()).collect();
            splice_in(out, at, &bytes);
        }
        5 => {
            if let Some(token) = rng.pick(ctx.dictionary) {
                let at = rng.below(len + 1);
                splice_in(out, at, token);
            } else {
                out.push(rng.byte());
            }
        }
        6 => {
            if len > 0 {
                let at = rng.below(len);
                let n = 1 + rng.below((len - at).min(16));
                out.drain(at..at + n);
            }
        }
        7 => {
            if len > 0 {
                let at = rng.below(len);
                let n = 1 + rng.below((len - at).min(64));
                let chunk = out.get(at..at + n).map(<[u8]>::to_vec).unwrap_or_default();
                let to = rng.below(len + 1);
                splice_in(out, to, &chunk);
            }
        }
        8 => {
            let keep = rng.below(len + 1);
            out.truncate(keep);
        }
        9 => {
            let v = rng.pick(&INTS).copied().unwrap_or(0);
            let width = [1usize, 2, 4, 8][rng.below(4)];
            let bytes = if rng.chance(1, 2) {
                v.to_be_bytes()
            } else {
                v.to_le_bytes()
            };
            let bytes = if bytes.first() == Some(&0) || rng.chance(1, 2) {
                bytes.get(8 - width..).map(<[u8]>::to_vec)
            } else {
                bytes.get(..width).map(<[u8]>::to_vec)
            }
            .unwrap_or_default();
            let at = rng.below(len + 1);
            let end = (at + bytes.len()).min(len);
            out.splice(at..end, bytes);
        }
        10 => {
            if let Some(other) = rng.pick(ctx.corpus) {
                let cut = rng.below(len + 1);
                let from = rng.below(other.len() + 1);
                out.truncate(cut);
                out.extend_from_slice(other.get(from..).unwrap_or_default());
            }
        }
        11 => {
            if let Some(other) = rng.pick(ctx.corpus)
                && !other.is_empty()
            {
                let from = rng.below(other.len());
                let n = 1 + rng.below((other.len() - from).min(64));
                let chunk = other.get(from..from + n).unwrap_or_default();
                let at = rng.below(len + 1);
                splice_in(out, at, chunk);
            }
        }
        _ => {
            // Repeat a byte many times: long runs find length handling bugs.
            let b = out.get(rng.below(len)).copied().unwrap_or(0);
            let n = 1 + rng.below(256);
            let at = rng.below(len + 1);
            splice_in(out, at, &vec![b; n]);
        }
    }
}

fn splice_in(out: &mut Vec<u8>, at: usize, bytes: &[u8]) {
    let at = at.min(out.len());
    out.splice(at..at, bytes.iter().copied());
}

fn field_bytes<'a>(bytes: &'a [u8], f: &Field) -> &'a [u8] {
    bytes.get(f.span.clone()).unwrap_or_default()
}

fn rebuild(bytes: &[u8], fields: &[Field], replace: usize, with: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(bytes.len() + with.len());
    for (i, f) in fields.iter().enumerate() {
        if i == replace {
            out.extend_from_slice(with);
        } else {
            out.extend_from_slice(field_bytes(bytes, f));
        }
    }
    out
}

/// A field-aware mutation of a protobuf message; `None` when `bytes` does
/// not scan as one.
pub fn mutate_message(rng: &mut Rng, bytes: &[u8], depth: u32) -> Option<Vec<u8>> {
    let fields = protobuf::scan(bytes)?;
    let Some(i) = (!fields.is_empty()).then(|| rng.below(fields.len())) else {
        return Some(random_field(rng));
    };
    let f = fields.get(i)?;
    match rng.below(8) {
        0..=2 => {
            let new = match f.wire {
                VARINT => protobuf::varint_field(f.number, interesting_varint(rng)),
                LEN => {
                    let payload = bytes.get(f.value.clone())?;
                    let new_payload = if depth < 4 && rng.chance(2, 3) {
                        mutate_message(rng, payload, depth + 1)
                            .unwrap_or_else(|| resize(rng, payload))
                    } else {
                        resize(rng, payload)
                    };
                    protobuf::len_field(f.number, &new_payload)
                }
                _ => {
                    let mut v = field_bytes(bytes, f).to_vec();
                    if let Some(b) = v.last_mut() {
                        *b ^= 0x80;
                    }
                    v
                }
            };
            Some(rebuild(bytes, &fields, i, &new))
        }
        3 => {
            // Duplicate a field (repeated fields grow; singular ones merge).
            let copy = field_bytes(bytes, f).to_vec();
            let mut out = bytes.to_vec();
            let at = fields.get(rng.below(fields.len()))?.span.end;
            out.splice(at..at, copy);
            Some(out)
        }
        4 => Some(rebuild(bytes, &fields, i, &[])),
        5 => {
            let j = rng.below(fields.len());
            let (a, b) = (field_bytes(bytes, f).to_vec(), fields.get(j)?);
            let b = field_bytes(bytes, b).to_vec();
            let mut out = Vec::with_capacity(bytes.len());
            for (k, g) in fields.iter().enumerate() {
                if k == i {
                    out.extend_from_slice(&b);
                } else if k == j {
                    out.extend_from_slice(&a);
                } else {
                    out.extend_from_slice(field_bytes(bytes, g));
                }
            }
            Some(out)
        }
        6 => {
            // The same value under another field number or wire type.
            let value = bytes.get(f.value.clone())?;
            let number = if rng.chance(1, 2) {
                1 + rng.below(12) as u64
            } else {
                f.number
            };
            let new = if f.wire == LEN {
                protobuf::varint_field(number, value.len() as u64)
            } else {
                protobuf::len_field(number, value)
            };
            Some(rebuild(bytes, &fields, i, &new))
        }
        _ => {
            let mut out = bytes.to_vec();
            let at = rng.below(fields.len() + 1);
            let pos = fields.get(at).map_or(bytes.len(), |g| g.span.start);
            out.splice(pos..pos, random_field(rng));
            Some(out)
        }
    }
}

fn interesting_varint(rng: &mut Rng) -> u64 {
    match rng.below(4) {
        0 => rng.pick(&INTS).copied().unwrap_or(0),
        1 => rng.next_u64() >> rng.below(64),
        2 => u64::from(u32::MAX) + rng.below(3) as u64 - 1,
        _ => rng.below(8) as u64,
    }
}

/// The payload at an interesting length: cut, padded, or replaced.
fn resize(rng: &mut Rng, payload: &[u8]) -> Vec<u8> {
    let n = rng.pick(&LENGTHS).copied().unwrap_or(0);
    match rng.below(3) {
        0 => {
            let mut v = payload.to_vec();
            v.resize(n, rng.byte());
            v
        }
        1 => {
            let mut v = payload.to_vec();
            if rng.chance(1, 2) {
                v.pop();
            } else {
                v.push(rng.byte());
            }
            v
        }
        _ => {
            let b = rng.pick(&BYTES).copied().unwrap_or(0);
            vec![b; n]
        }
    }
}

fn random_field(rng: &mut Rng) -> Vec<u8> {
    let number = 1 + rng.below(12) as u64;
    match rng.below(4) {
        0 => protobuf::varint_field(number, interesting_varint(rng)),
        1 => {
            let n = rng.pick(&LENGTHS).copied().unwrap_or(0);
            let v: Vec<u8> = (0..n).map(|_| rng.byte()).collect();
            protobuf::len_field(number, &v)
        }
        2 => {
            let mut out = Vec::new();
            protobuf::write_tag(number, FIXED64, &mut out);
            out.extend_from_slice(&rng.next_u64().to_le_bytes());
            out
        }
        _ => {
            let mut out = Vec::new();
            protobuf::write_tag(number, FIXED32, &mut out);
            out.extend_from_slice(&rng.next_u64().to_le_bytes()[..4]);
            out
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mutation_is_reproducible_and_bounded() {
        let corpus = vec![vec![1, 2, 3], protobuf::len_field(1, &[7; 40])];
        let ctx = Context {
            corpus: &corpus,
            dictionary: &[b"abc"],
            protobuf: true,
            max_len: 64,
        };
        let run = |seed| {
            let mut rng = Rng::new(seed);
            let mut x = corpus[1].clone();
            let mut all = Vec::new();
            for _ in 0..500 {
                x = mutate(&mut rng, &x, &ctx);
                if x.is_empty() {
                    x = corpus[1].clone();
                }
                assert!(x.len() <= 64);
                all.push(x.clone());
            }
            all
        };
        assert_eq!(run(1), run(1));
        assert_ne!(run(1), run(2));
    }
}
