//! What a fuzz target is, what running one input can end in, and how
//! outcomes are named so that the fuzzer can tell them apart.

use std::cell::RefCell;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Once;

/// A parsed input broke a property the decoder promises (for example, a
/// value does not survive re-encoding). Treated as a crash.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invariant broken: {0}")]
pub struct Violation(pub String);

/// What a target reports for one input: a short label naming the decoder
/// outcome (`ok:...` or `err:...`), or a broken invariant.
pub type Outcome = Result<String, Violation>;

/// One fuzz target: a decoder of untrusted bytes and the checks run on
/// what it accepts.
pub struct Target {
    /// Name used on the command line and as the corpus directory.
    pub name: &'static str,
    /// The decoder reached, in words.
    pub reaches: &'static str,
    /// Feeds one input to the decoder.
    pub run: fn(&[u8]) -> Outcome,
    /// Valid inputs built from real values, and edge cases.
    pub seeds: fn() -> Vec<(String, Vec<u8>)>,
    /// Tokens worth inserting.
    pub dictionary: &'static [&'static [u8]],
    /// Whether inputs are protobuf messages (enables field mutations).
    pub protobuf: bool,
}

/// How one execution ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Execution {
    /// The decoder returned; the label names the outcome.
    Outcome(String),
    /// An invariant was broken.
    Violation(String),
    /// The target panicked.
    Panic(String),
}

impl Execution {
    /// Whether this is a crash (a panic or a broken invariant).
    pub fn is_crash(&self) -> bool {
        !matches!(self, Self::Outcome(_))
    }

    /// A one-line description.
    pub fn describe(&self) -> String {
        match self {
            Self::Outcome(l) => l.clone(),
            Self::Violation(v) => format!("invariant broken: {v}"),
            Self::Panic(p) => format!("panic: {p}"),
        }
    }
}

thread_local! {
    static LAST_PANIC: RefCell<Option<String>> = const { RefCell::new(None) };
}

static QUIET_HOOK: Once = Once::new();

/// Replaces the panic hook with one that records the message for
/// [`execute`] instead of printing it (installed once per process).
pub fn install_quiet_panic_hook() {
    QUIET_HOOK.call_once(|| {
        std::panic::set_hook(Box::new(|info| {
            let payload = info.payload();
            let msg = payload
                .downcast_ref::<&str>()
                .map(|s| (*s).to_owned())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "(non-string panic payload)".to_owned());
            let at = info
                .location()
                .map(|l| format!(" at {}:{}", l.file(), l.line()))
                .unwrap_or_default();
            LAST_PANIC.with(|p| *p.borrow_mut() = Some(format!("{msg}{at}")));
        }));
    });
}

/// Runs one input through a target, catching panics.
pub fn execute(target: &Target, input: &[u8]) -> Execution {
    install_quiet_panic_hook();
    match catch_unwind(AssertUnwindSafe(|| (target.run)(input))) {
        Ok(Ok(label)) => Execution::Outcome(label),
        Ok(Err(v)) => Execution::Violation(v.0),
        Err(_) => Execution::Panic(
            LAST_PANIC
                .with(|p| p.borrow_mut().take())
                .unwrap_or_else(|| "(no message)".to_owned()),
        ),
    }
}

/// Fails with a violation unless `cond` holds.
pub fn ensure(cond: bool, what: &str) -> Result<(), Violation> {
    if cond {
        Ok(())
    } else {
        Err(Violation(what.to_owned()))
    }
}

/// The label of a rejected input: the error's variant and fields, with
/// numbers and long hex runs blanked so that one kind of error is one label.
pub fn rejected(e: &impl std::fmt::Debug) -> Outcome {
    Ok(format!("err:{}", label(&format!("{e:?}"))))
}

/// The label of an error's debug text. Protobuf decoding errors (whatever
/// the message path) collapse to the kind of framing error, so that the
/// fuzzer keeps inputs for what happens after decoding rather than for
/// every field a framing error can occur in.
pub fn label(debug: &str) -> String {
    const PROST: &str = "failed to decode Protobuf message: ";
    match debug.find(PROST) {
        Some(at) => {
            let rest = debug.get(at + PROST.len()..).unwrap_or_default();
            let what: Vec<&str> = rest
                .split(": ")
                .filter(|seg| seg.contains(' ') || !seg.contains('.'))
                .collect();
            let what = what.join(": ");
            let kind = what.split(['(', '"']).next().unwrap_or_default().trim();
            format!("protobuf:{}", normalize(kind))
        }
        None => normalize(debug),
    }
}

/// Blanks numbers, hex runs and long base64-like runs (keys, key ids),
/// and bounds the length of a label.
pub fn normalize(s: &str) -> String {
    let mut out = String::with_capacity(s.len().min(160));
    let chars = blank_long_tokens(s);
    let mut i = 0;
    while i < chars.len() && out.len() < 160 {
        let c = chars.get(i).copied().unwrap_or(' ');
        if c.is_ascii_hexdigit() {
            let mut j = i;
            while chars.get(j).is_some_and(char::is_ascii_hexdigit) {
                j += 1;
            }
            let run = j - i;
            let all_digits = chars
                .get(i..j)
                .is_some_and(|r| r.iter().all(char::is_ascii_digit));
            let word_start = i == 0 || chars.get(i - 1).is_some_and(|p| !p.is_alphanumeric());
            if all_digits || (run >= 8 && word_start) {
                out.push('#');
                i = j;
                continue;
            }
        }
        out.push(c);
        i += 1;
    }
    out
}

/// Replaces every run of 16 or more base64 characters with `#`.
fn blank_long_tokens(s: &str) -> Vec<char> {
    let is_b64 = |c: &char| c.is_ascii_alphanumeric() || matches!(c, '+' | '/');
    let mut out = Vec::with_capacity(s.len());
    let mut run: Vec<char> = Vec::new();
    for c in s.chars().chain(std::iter::once(' ')) {
        if is_b64(&c) {
            run.push(c);
            continue;
        }
        if run.len() >= 16 {
            out.push('#');
        } else {
            out.append(&mut run);
        }
        run.clear();
        out.push(c);
    }
    out.pop();
    out
}

/// Replaces the contents of every double-quoted string with `_`.
pub fn blank_quoted(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut quoted = false;
    let mut escaped = false;
    for c in s.chars() {
        if quoted {
            if escaped {
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == '"' {
                quoted = false;
                out.push_str("_\"");
            }
        } else {
            out.push(c);
            quoted = c == '"';
        }
    }
    out
}

/// `ceil(log2(n + 1))`: a size bucket for labels of accepted inputs.
pub fn bucket(n: usize) -> u32 {
    usize::BITS - n.leading_zeros()
}

/// Splits `[key length u8] || key || value`, the input layout of targets
/// whose decoder takes a stored key and value.
pub fn split_kv(data: &[u8]) -> (&[u8], &[u8]) {
    match data.split_first() {
        None => (&[], &[]),
        Some((&n, rest)) => rest.split_at(usize::from(n).min(rest.len())),
    }
}

/// The input for [`split_kv`].
pub fn join_kv(key: &[u8], value: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(1 + key.len() + value.len());
    out.push(u8::try_from(key.len()).unwrap_or(u8::MAX));
    out.extend_from_slice(key.get(..255).unwrap_or(key));
    out.extend_from_slice(value);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_ignore_numbers_and_hex() {
        assert_eq!(
            normalize("WrongLength { field: \"header.body_hash\", expected: 32, got: 5 }"),
            "WrongLength { field: \"header.body_hash\", expected: #, got: # }"
        );
        assert_eq!(
            normalize("member 3b6a27bcceb6a42d listed"),
            "member # listed"
        );
        assert_eq!(normalize("Decode"), "Decode");
        assert_eq!(
            normalize("unknown one-time key: xQldMEuu8bHm+tp63AGF2EBPVKcHjxABMZRt/WlwNnc\")"),
            "unknown one-time key: #\")"
        );
        assert_eq!(
            blank_quoted(r#"invalid type: string "a\"b", expected u32"#),
            r#"invalid type: string "_", expected u32"#
        );
        assert_eq!(
            label(
                "Decode(\"failed to decode Protobuf message: EnvelopeHeader.epoch: Envelope.header: invalid wire type: SixtyFourBit (expected Varint)\")"
            ),
            "protobuf:invalid wire type: SixtyFourBit"
        );
        assert_eq!(bucket(0), 0);
        assert_eq!(bucket(1), 1);
        assert_eq!(bucket(4), 3);
    }

    #[test]
    fn kv_layout_round_trips() {
        let d = join_kv(b"key", b"value");
        assert_eq!(split_kv(&d), (&b"key"[..], &b"value"[..]));
        assert_eq!(split_kv(&[9, 1]), (&[1u8][..], &[][..]));
        assert_eq!(split_kv(&[]), (&[][..], &[][..]));
    }

    #[test]
    fn panics_are_caught_and_named() {
        fn boom(_: &[u8]) -> Outcome {
            let v: Vec<u8> = Vec::new();
            Ok(format!("{}", v[1]))
        }
        let t = Target {
            name: "boom",
            reaches: "",
            run: boom,
            seeds: Vec::new,
            dictionary: &[],
            protobuf: false,
        };
        match execute(&t, b"") {
            Execution::Panic(m) => assert!(m.contains("index out of bounds"), "{m}"),
            other => panic!("{other:?}"),
        }
    }
}
