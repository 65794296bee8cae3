//! C2SP tlog-checkpoint: the signed tree head of a log.
//!
//! A checkpoint is a signed note whose text is the log's origin line, the
//! tree size in decimal (no leading zeroes), the base64 root hash, and
//! optional non-empty extension lines:
//!
//! ```text
//! example.com/behind-the-sofa
//! 20852163
//! CsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=
//! ```

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;

use crate::error::CheckpointError;
use crate::merkle::Hash;
use crate::note::{Ed25519Signer, Note, NoteVerifier, VerifiedNote};

/// A checkpoint's contents.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    origin: String,
    size: u64,
    root: Hash,
    extensions: Vec<String>,
}

/// A checkpoint opened from a signed note.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedCheckpoint {
    /// The checkpoint the note's text encodes.
    pub checkpoint: Checkpoint,
    /// The note it came in, with all its signatures.
    pub note: VerifiedNote,
}

fn check_line(line: &str, what: &'static str) -> Result<(), CheckpointError> {
    if line.is_empty() {
        return Err(CheckpointError::Malformed(what));
    }
    if line.chars().any(|c| c == '\n' || c.is_control()) {
        return Err(CheckpointError::Malformed(
            "a line holds a control character",
        ));
    }
    Ok(())
}

impl Checkpoint {
    /// A checkpoint. The origin and the extension lines must be non-empty
    /// single lines.
    pub fn new(
        origin: &str,
        size: u64,
        root: Hash,
        extensions: Vec<String>,
    ) -> Result<Self, CheckpointError> {
        check_line(origin, "the origin is empty")?;
        for e in &extensions {
            check_line(e, "an extension line is empty")?;
        }
        Ok(Self {
            origin: origin.to_owned(),
            size,
            root,
            extensions,
        })
    }

    /// The log's origin.
    pub fn origin(&self) -> &str {
        &self.origin
    }

    /// The tree size.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// The root hash.
    pub fn root(&self) -> &Hash {
        &self.root
    }

    /// The extension lines.
    pub fn extensions(&self) -> &[String] {
        &self.extensions
    }

    /// The note text (the body a signature covers).
    pub fn to_text(&self) -> String {
        let mut s = format!(
            "{}\n{}\n{}\n",
            self.origin,
            self.size,
            BASE64.encode(self.root.as_bytes())
        );
        for e in &self.extensions {
            s.push_str(e);
            s.push('\n');
        }
        s
    }

    /// Parses a checkpoint from note text.
    pub fn from_text(text: &str) -> Result<Self, CheckpointError> {
        let body = text.strip_suffix('\n').ok_or(CheckpointError::Malformed(
            "the text does not end in a newline",
        ))?;
        let mut lines = body.split('\n');
        let origin = lines
            .next()
            .ok_or(CheckpointError::Malformed("no origin line"))?;
        let size = lines
            .next()
            .ok_or(CheckpointError::Malformed("no tree size line"))?;
        let root = lines
            .next()
            .ok_or(CheckpointError::Malformed("no root hash line"))?;
        if size.is_empty()
            || !size.bytes().all(|b| b.is_ascii_digit())
            || (size.len() > 1 && size.starts_with('0'))
        {
            return Err(CheckpointError::Malformed(
                "the tree size is not a decimal without leading zeroes",
            ));
        }
        let size: u64 = size
            .parse()
            .map_err(|_| CheckpointError::Malformed("the tree size does not fit 64 bits"))?;
        let root = BASE64
            .decode(root)
            .ok()
            .and_then(|b| Hash::from_slice(&b).ok())
            .ok_or(CheckpointError::Malformed(
                "the root hash is not base64 of 32 bytes",
            ))?;
        let extensions = lines.map(str::to_owned).collect();
        Self::new(origin, size, root, extensions)
    }

    /// The signed note of this checkpoint, signed by `signer`.
    pub fn sign(&self, signer: &Ed25519Signer) -> Result<String, CheckpointError> {
        let mut note = Note::new(self.to_text())?;
        note.sign(signer);
        Ok(note.to_text())
    }

    /// Opens a signed checkpoint: the note must verify against `known`
    /// (see [`Note::open`]) and its text must be a checkpoint.
    pub fn open(
        msg: &[u8],
        known: &[&dyn NoteVerifier],
    ) -> Result<SignedCheckpoint, CheckpointError> {
        let note = Note::open(msg, known)?;
        let checkpoint = Self::from_text(note.note.text())?;
        Ok(SignedCheckpoint { checkpoint, note })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::NoteError;

    #[test]
    fn spec_example_parses() {
        let text =
            "example.com/behind-the-sofa\n20852163\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n";
        let c = Checkpoint::from_text(text).unwrap();
        assert_eq!(c.origin(), "example.com/behind-the-sofa");
        assert_eq!(c.size(), 20_852_163);
        assert!(c.extensions().is_empty());
        assert_eq!(c.to_text(), text);
    }

    #[test]
    fn sign_and_open_with_extensions() {
        let signer = Ed25519Signer::from_seed("example.com/log", &[7; 32]).unwrap();
        let c =
            Checkpoint::new("example.com/log", 3, Hash([9; 32]), vec!["ext one".into()]).unwrap();
        let msg = c.sign(&signer).unwrap();
        let opened = Checkpoint::open(msg.as_bytes(), &[&signer.verifier()]).unwrap();
        assert_eq!(opened.checkpoint, c);
        let other = Ed25519Signer::from_seed("example.com/log", &[8; 32]).unwrap();
        assert_eq!(
            Checkpoint::open(msg.as_bytes(), &[&other.verifier()]),
            Err(CheckpointError::Note(NoteError::NoKnownSignature))
        );
    }

    #[test]
    fn malformed_checkpoints_are_refused() {
        let root = "CsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=";
        for bad in [
            String::new(),
            "o\n1\n".to_owned(),
            format!("\n1\n{root}\n"),
            format!("o\n01\n{root}\n"),
            format!("o\n+1\n{root}\n"),
            format!("o\n1\n{root}"),
            "o\n1\nAAAA\n".to_owned(),
            format!("o\n1\n{root}\n\n"),
            format!("o\n18446744073709551616\n{root}\n"),
        ] {
            assert!(Checkpoint::from_text(&bad).is_err(), "{bad:?}");
        }
        assert!(Checkpoint::from_text(&format!("o\n0\n{root}\n")).is_ok());
    }

    proptest::proptest! {
        /// Parsing never panics, and checkpoints round-trip through text.
        #[test]
        fn parse_is_total_and_round_trips(
            junk in "\\PC{0,200}",
            origin in "[a-z./]{1,30}",
            size in proptest::prelude::any::<u64>(),
            root in proptest::prelude::any::<[u8; 32]>(),
            extensions in proptest::collection::vec("[a-z ]{1,10}", 0..3),
        ) {
            let _ = Checkpoint::from_text(&junk);
            let c = Checkpoint::new(&origin, size, Hash(root), extensions).unwrap();
            proptest::prop_assert_eq!(Checkpoint::from_text(&c.to_text()).unwrap(), c);
        }
    }
}
