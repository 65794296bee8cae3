//! What a decrypted body says, per envelope kind, and its strict encoding.
//!
//! ```text
//! content  = version u8 (1 or 2) || kind code u8 || fields
//! Setup    = creator account || slot set || members [|| history]
//! Update   = change || next slot set || next members [|| history]
//! Message  = bytes
//! Receipt  = through index || head || count || index...
//! Noise, Rekey = (no fields)
//! slot set = count || (key || role code)...
//! members  = count || (account || role code || slot u32)...
//! change   = 1 account role (add) | 2 account (remove) | 3 (leave)
//!          | 4 account role (role change) | 5 (history policy only)
//! history  = 1 (joined) | 2 (shared)
//! ```
//!
//! A Setup or Update whose history policy is `joined` and whose change is
//! not 5 is encoded in version 1, without the history byte (the bytes of
//! every content made before history policies existed); any other Setup or
//! Update is version 2 and ends with the history byte. Other kinds are
//! always version 1.
//!
//! Every member runs this same parser over the same plaintext (the key
//! commitment guarantees it), so a malformed body is refused identically
//! everywhere.

use crate::codec::{Canonical, DecodeError, Reader};
use grompi_proto::limits::{MAX_BODY_BYTES, MAX_SLOTS};
use grompi_proto::{
    AccountId, EnvelopeKind, Head, Index, SlotEntry, SlotIndex, SlotKey, SlotRole, SlotSet,
};

/// Version byte of the content format (every kind; a Setup or Update
/// stating a history policy other than the default uses
/// [`CONTENT_VERSION_HISTORY`]).
pub const CONTENT_VERSION: u8 = 1;
/// Version byte of a Setup or Update content that ends with its history
/// policy.
pub const CONTENT_VERSION_HISTORY: u8 = 2;

/// Who reads a conversation's history (`docs/PROTOCOL.md` section 4.6):
/// stated by the Setup and by every Update for the epoch it starts.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Visibility {
    /// Members added later read nothing sent before they joined (the
    /// default, and the only policy of a pairwise-keyed conversation).
    #[default]
    Joined,
    /// Members added later read what was sent while the policy was
    /// `shared`, back to the last epoch that was `joined`: the epoch's
    /// envelopes carry history blocks.
    Shared,
}

impl Visibility {
    /// The wire code.
    pub fn code(self) -> u8 {
        match self {
            Self::Joined => 1,
            Self::Shared => 2,
        }
    }

    /// The policy with this wire code.
    pub fn from_code(code: u8) -> Option<Self> {
        match code {
            1 => Some(Self::Joined),
            2 => Some(Self::Shared),
            _ => None,
        }
    }

    /// The policy's name, as `grompi members` shows it.
    pub fn name(self) -> &'static str {
        match self {
            Self::Joined => "joined",
            Self::Shared => "shared",
        }
    }
}

impl std::fmt::Display for Visibility {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}
/// Most indices one receipt lists as undecryptable.
pub const MAX_RECEIPT_INDICES: usize = 1024;

/// One member of a conversation epoch: who, with what role, in which slot.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct MemberEntry {
    /// The member's account.
    pub account: AccountId,
    /// The member's role.
    pub role: SlotRole,
    /// The slot the member holds in the epoch's slot set.
    pub slot: SlotIndex,
}

/// The body of a Setup.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SetupContent {
    /// The account that created the conversation.
    pub creator: AccountId,
    /// The padded slot set the conversation was opened with.
    pub slots: SlotSet,
    /// Every member and its slot.
    pub members: Vec<MemberEntry>,
    /// The history policy of epoch 0.
    pub history: Visibility,
}

/// One membership change, as an Update's sender requests it; the
/// membership rules decide whether it is authorized.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Change {
    /// Adds an account with a role.
    Add {
        /// The account to add; it must not be a member already.
        account: AccountId,
        /// The role it gets in the next epoch (Admin or Member).
        role: SlotRole,
    },
    /// Removes a member.
    Remove {
        /// The member to remove; the Update must come from an Admin.
        account: AccountId,
    },
    /// The sender leaves: the account authenticated as its sender is
    /// removed. Only an Admin may leave by Update (a Member asks an Admin).
    Leave,
    /// Changes a member's role.
    SetRole {
        /// The member whose role changes.
        account: AccountId,
        /// The role it has from the next epoch on; the last Admin cannot be
        /// demoted.
        role: SlotRole,
    },
    /// Changes only the history policy (the Update's `history`): the
    /// member list stays as it is. Admins only.
    SetHistory,
}

/// The body of an Update.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UpdateContent {
    /// The change requested; `next_members` must be the current list with
    /// it applied.
    pub change: Change,
    /// The next epoch's padded slot set.
    pub next_slots: SlotSet,
    /// The next epoch's complete member list and slots.
    pub next_members: Vec<MemberEntry>,
    /// The next epoch's history policy.
    pub history: Visibility,
}

/// The body of a Receipt: "processed through `through` with head `head`,
/// could not decrypt `undecryptable`".
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReceiptContent {
    /// The last index the sender processed, before the Receipt's own index.
    pub through: Index,
    /// The head after `through` in the sender's transcript; members
    /// compare it with their own (else `ReceiptMismatch`).
    pub head: Head,
    /// Indices that could not be decrypted.
    pub undecryptable: Vec<Index>,
}

/// A decrypted body, decoded; its variant matches the header's kind.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Content {
    /// A Setup: the creator, the opening slot set and every member's slot.
    Setup(SetupContent),
    /// An application message: the application's payload, uninterpreted.
    Message(Vec<u8>),
    /// An Update: one change and the complete next member list and slots.
    Update(UpdateContent),
    /// A Receipt: how far the sender processed, and what it could not open.
    Receipt(ReceiptContent),
    /// Cover traffic.
    Noise,
    /// A new key generation of a group-keyed conversation: the RN1 travels
    /// in the blocks and its commitment in the header, so the content has
    /// no fields.
    Rekey,
}

impl Content {
    /// The envelope kind that carries this content.
    pub fn kind(&self) -> EnvelopeKind {
        match self {
            Self::Setup(_) => EnvelopeKind::Setup,
            Self::Message(_) => EnvelopeKind::Message,
            Self::Update(_) => EnvelopeKind::Update,
            Self::Receipt(_) => EnvelopeKind::Receipt,
            Self::Noise => EnvelopeKind::Noise,
            Self::Rekey => EnvelopeKind::Rekey,
        }
    }

    /// The canonical encoding (content version, kind, fields) that the
    /// body ciphertext encrypts.
    pub fn encode(&self) -> Vec<u8> {
        let history = match self {
            Self::Setup(s) => Some(s.history).filter(|h| *h != Visibility::Joined),
            Self::Update(u) => Some(u.history)
                .filter(|h| *h != Visibility::Joined || u.change == Change::SetHistory),
            _ => None,
        };
        let version = if history.is_some() {
            CONTENT_VERSION_HISTORY
        } else {
            CONTENT_VERSION
        };
        let c = Canonical::new().u8(version).u8(self.kind().code());
        let c = match self {
            Self::Setup(s) => members(
                slot_set(c.fixed(s.creator.as_bytes()), &s.slots),
                &s.members,
            ),
            Self::Message(m) => c.bytes(m),
            Self::Update(u) => {
                let c = match u.change {
                    Change::Add { account, role } => {
                        c.u8(1).fixed(account.as_bytes()).u8(role.code())
                    }
                    Change::Remove { account } => c.u8(2).fixed(account.as_bytes()),
                    Change::Leave => c.u8(3),
                    Change::SetRole { account, role } => {
                        c.u8(4).fixed(account.as_bytes()).u8(role.code())
                    }
                    Change::SetHistory => c.u8(5),
                };
                members(slot_set(c, &u.next_slots), &u.next_members)
            }
            Self::Receipt(r) => {
                let mut c = c
                    .u64(r.through.0)
                    .fixed(r.head.as_bytes())
                    .count(r.undecryptable.len());
                for i in &r.undecryptable {
                    c = c.u64(i.0);
                }
                c
            }
            Self::Noise | Self::Rekey => c,
        };
        let c = match history {
            Some(h) => c.u8(h.code()),
            None => c,
        };
        c.as_bytes().to_vec()
    }

    /// Parses the encoding, which must be of `kind`.
    pub fn decode(kind: EnvelopeKind, bytes: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::new("content", bytes);
        let version = r.u8()?;
        let with_history = match version {
            CONTENT_VERSION => false,
            CONTENT_VERSION_HISTORY
                if matches!(kind, EnvelopeKind::Setup | EnvelopeKind::Update) =>
            {
                true
            }
            _ => return Err(invalid("content.version", "unknown content version")),
        };
        let read_history = |r: &mut Reader<'_>| -> Result<Visibility, DecodeError> {
            if !with_history {
                return Ok(Visibility::Joined);
            }
            Visibility::from_code(r.u8()?)
                .ok_or(invalid("content.history", "unknown history policy code"))
        };
        if r.u8()? != kind.code() {
            return Err(invalid(
                "content.kind",
                "content kind differs from the header's kind",
            ));
        }
        let content = match kind {
            EnvelopeKind::Setup => {
                let creator = AccountId::from_bytes(r.fixed()?);
                let slots = read_slot_set(&mut r)?;
                let members = read_members(&mut r)?;
                let history = read_history(&mut r)?;
                if with_history && history == Visibility::Joined {
                    return Err(invalid(
                        "content.history",
                        "a version 2 Setup must state a policy other than joined",
                    ));
                }
                Self::Setup(SetupContent {
                    creator,
                    slots,
                    members,
                    history,
                })
            }
            EnvelopeKind::Message => {
                Self::Message(r.bytes("content.message", MAX_BODY_BYTES)?.to_vec())
            }
            EnvelopeKind::Update => {
                let change = match r.u8()? {
                    1 => Change::Add {
                        account: AccountId::from_bytes(r.fixed()?),
                        role: read_role(&mut r)?,
                    },
                    2 => Change::Remove {
                        account: AccountId::from_bytes(r.fixed()?),
                    },
                    3 => Change::Leave,
                    4 => Change::SetRole {
                        account: AccountId::from_bytes(r.fixed()?),
                        role: read_role(&mut r)?,
                    },
                    5 if with_history => Change::SetHistory,
                    _ => return Err(invalid("content.change", "unknown change code")),
                };
                let next_slots = read_slot_set(&mut r)?;
                let next_members = read_members(&mut r)?;
                let history = read_history(&mut r)?;
                if with_history && history == Visibility::Joined && change != Change::SetHistory {
                    return Err(invalid(
                        "content.history",
                        "a version 2 Update must change the policy or state one other than joined",
                    ));
                }
                Self::Update(UpdateContent {
                    change,
                    next_slots,
                    next_members,
                    history,
                })
            }
            EnvelopeKind::Receipt => {
                let through = Index(r.u64()?);
                let head = Head::from_bytes(r.fixed()?);
                let n = r.count("content.undecryptable", MAX_RECEIPT_INDICES)?;
                let mut undecryptable = Vec::with_capacity(n);
                for _ in 0..n {
                    undecryptable.push(Index(r.u64()?));
                }
                Self::Receipt(ReceiptContent {
                    through,
                    head,
                    undecryptable,
                })
            }
            EnvelopeKind::Noise => Self::Noise,
            EnvelopeKind::Rekey => Self::Rekey,
        };
        r.finish()?;
        Ok(content)
    }
}

fn invalid(field: &'static str, reason: &'static str) -> DecodeError {
    DecodeError::Invalid { field, reason }
}

pub(crate) fn slot_set(mut c: Canonical, s: &SlotSet) -> Canonical {
    c = c.count(s.len());
    for e in s.entries() {
        c = c.fixed(e.key.as_bytes()).u8(e.role.code());
    }
    c
}

pub(crate) fn members(mut c: Canonical, m: &[MemberEntry]) -> Canonical {
    c = c.count(m.len());
    for e in m {
        c = c
            .fixed(e.account.as_bytes())
            .u8(e.role.code())
            .u32(e.slot.0);
    }
    c
}

pub(crate) fn read_role(r: &mut Reader<'_>) -> Result<SlotRole, DecodeError> {
    SlotRole::from_code(i32::from(r.u8()?)).ok_or(invalid("content.role", "unknown role code"))
}

pub(crate) fn read_slot_set(r: &mut Reader<'_>) -> Result<SlotSet, DecodeError> {
    let n = r.count("content.slots", MAX_SLOTS)?;
    let mut entries = Vec::with_capacity(n);
    for _ in 0..n {
        let key = SlotKey::from_bytes(r.fixed()?);
        let role = read_role(r)?;
        entries.push(SlotEntry { key, role });
    }
    SlotSet::new(entries).map_err(|_| invalid("content.slots", "empty slot set or a key twice"))
}

pub(crate) fn read_members(r: &mut Reader<'_>) -> Result<Vec<MemberEntry>, DecodeError> {
    let n = r.count("content.members", MAX_SLOTS)?;
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let account = AccountId::from_bytes(r.fixed()?);
        let role = read_role(r)?;
        let slot = SlotIndex(r.u32()?);
        out.push(MemberEntry {
            account,
            role,
            slot,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn set() -> SlotSet {
        SlotSet::new(vec![
            SlotEntry {
                key: SlotKey::from_bytes([1; 32]),
                role: SlotRole::Admin,
            },
            SlotEntry {
                key: SlotKey::from_bytes([2; 32]),
                role: SlotRole::Member,
            },
        ])
        .unwrap()
    }

    fn samples() -> Vec<Content> {
        let m = vec![MemberEntry {
            account: AccountId::from_bytes([9; 32]),
            role: SlotRole::Admin,
            slot: SlotIndex(0),
        }];
        vec![
            Content::Setup(SetupContent {
                creator: AccountId::from_bytes([9; 32]),
                slots: set(),
                members: m.clone(),
                history: Default::default(),
            }),
            Content::Message(b"hi".to_vec()),
            Content::Update(UpdateContent {
                change: Change::SetRole {
                    account: AccountId::from_bytes([8; 32]),
                    role: SlotRole::Member,
                },
                next_slots: set(),
                next_members: m,
                history: Default::default(),
            }),
            Content::Receipt(ReceiptContent {
                through: Index(4),
                head: Head::from_bytes([3; 32]),
                undecryptable: vec![Index(2)],
            }),
            Content::Noise,
        ]
    }

    #[test]
    fn every_kind_round_trips() {
        for c in samples() {
            let bytes = c.encode();
            assert_eq!(Content::decode(c.kind(), &bytes).unwrap(), c);
        }
    }

    #[test]
    fn kind_must_match_the_header() {
        let bytes = Content::Message(b"x".to_vec()).encode();
        assert_eq!(
            Content::decode(EnvelopeKind::Receipt, &bytes),
            Err(invalid(
                "content.kind",
                "content kind differs from the header's kind"
            ))
        );
    }

    // ---- Published vectors (docs/PROTOCOL.md, section 4.3) -------------

    fn hex32(v: &serde_json::Value) -> [u8; 32] {
        hex::decode(v.as_str().unwrap())
            .unwrap()
            .try_into()
            .unwrap()
    }

    fn role_of(v: &serde_json::Value) -> SlotRole {
        SlotRole::from_code(i32::try_from(v.as_u64().unwrap()).unwrap()).unwrap()
    }

    fn slots_of(v: &serde_json::Value) -> SlotSet {
        SlotSet::new(
            v.as_array()
                .unwrap()
                .iter()
                .map(|e| SlotEntry {
                    key: SlotKey::from_bytes(hex32(&e["key"])),
                    role: role_of(&e["role"]),
                })
                .collect(),
        )
        .unwrap()
    }

    fn members_of(v: &serde_json::Value) -> Vec<MemberEntry> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|e| MemberEntry {
                account: AccountId::from_bytes(hex32(&e["account"])),
                role: role_of(&e["role"]),
                slot: SlotIndex(u32::try_from(e["slot"].as_u64().unwrap()).unwrap()),
            })
            .collect()
    }

    /// The content a published vector's fields describe.
    fn content_of(v: &grompi_proto::vectors::Vector) -> Content {
        let f = &v.fields;
        let version = f["version"].as_u64().unwrap();
        assert!(
            version == u64::from(CONTENT_VERSION) || version == u64::from(CONTENT_VERSION_HISTORY)
        );
        let history = f
            .get("history")
            .and_then(serde_json::Value::as_u64)
            .map_or(Visibility::Joined, |h| {
                Visibility::from_code(u8::try_from(h).unwrap()).unwrap()
            });
        let kind =
            EnvelopeKind::from_code(i32::try_from(f["kind"].as_u64().unwrap()).unwrap()).unwrap();
        match kind {
            EnvelopeKind::Setup => Content::Setup(SetupContent {
                creator: AccountId::from_bytes(hex32(&f["creator"])),
                slots: slots_of(&f["slots"]),
                members: members_of(&f["members"]),
                history,
            }),
            EnvelopeKind::Message => Content::Message(v.field_bytes("message").unwrap()),
            EnvelopeKind::Update => {
                let c = &f["change"];
                let account = || AccountId::from_bytes(hex32(&c["account"]));
                let change = match c["code"].as_u64().unwrap() {
                    1 => Change::Add {
                        account: account(),
                        role: role_of(&c["role"]),
                    },
                    2 => Change::Remove { account: account() },
                    3 => Change::Leave,
                    4 => Change::SetRole {
                        account: account(),
                        role: role_of(&c["role"]),
                    },
                    5 => Change::SetHistory,
                    other => panic!("unknown change code {other}"),
                };
                Content::Update(UpdateContent {
                    change,
                    next_slots: slots_of(&f["next_slots"]),
                    next_members: members_of(&f["next_members"]),
                    history,
                })
            }
            EnvelopeKind::Receipt => Content::Receipt(ReceiptContent {
                through: Index(f["through"].as_u64().unwrap()),
                head: Head::from_bytes(hex32(&f["head"])),
                undecryptable: f["undecryptable"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|i| Index(i.as_u64().unwrap()))
                    .collect(),
            }),
            EnvelopeKind::Noise => Content::Noise,
            EnvelopeKind::Rekey => Content::Rekey,
        }
    }

    /// The client's encoder gives exactly the published bytes, and its
    /// decoder reads them back.
    fn check_vector(name: &str) -> Content {
        let v = grompi_proto::vectors::find(name).unwrap();
        assert_eq!(v.primitive, "encrypted_plaintext");
        let content = content_of(&v);
        let published = v.input_bytes().unwrap();
        assert_eq!(content.encode(), published, "{name}: encoding");
        assert_eq!(
            Content::decode(content.kind(), &published).unwrap(),
            content,
            "{name}: decoding"
        );
        // The kind byte is the header's kind: any other kind refuses it.
        for other in [
            EnvelopeKind::Setup,
            EnvelopeKind::Message,
            EnvelopeKind::Noise,
        ] {
            if other != content.kind() {
                assert!(Content::decode(other, &published).is_err(), "{name}");
            }
        }
        content
    }

    #[test]
    fn setup_matches_the_published_vector() {
        let Content::Setup(s) = check_vector("content_setup") else {
            panic!("not a Setup");
        };
        // Its slot set is the one `slot_set_hash_role_codes` hashes.
        let hash = grompi_proto::vectors::find("slot_set_hash_role_codes").unwrap();
        assert_eq!(
            s.slots.hash().as_bytes().to_vec(),
            hash.output_bytes().unwrap()
        );
        let mut c = Canonical::new();
        c = slot_set(c, &s.slots);
        assert_eq!(c.as_bytes(), &hash.input_bytes().unwrap()[..]);
    }

    #[test]
    fn history_policies_match_the_published_vectors() {
        let Content::Setup(s) = check_vector("content_setup_shared") else {
            panic!("not a Setup");
        };
        assert_eq!(s.history, Visibility::Shared);
        let Content::Update(u) = check_vector("content_update_set_history") else {
            panic!("not an Update");
        };
        assert_eq!(
            (u.change, u.history),
            (Change::SetHistory, Visibility::Joined)
        );
        // The version 1 layout stays `joined`; a version 2 content that
        // states `joined` without changing the policy is not canonical.
        let Content::Setup(v1) = check_vector("content_setup") else {
            panic!("not a Setup");
        };
        assert_eq!(v1.history, Visibility::Joined);
        let mut bytes = Content::Setup(SetupContent {
            history: Visibility::Shared,
            ..v1.clone()
        })
        .encode();
        *bytes.last_mut().unwrap() = Visibility::Joined.code();
        assert!(Content::decode(EnvelopeKind::Setup, &bytes).is_err());
        *bytes.last_mut().unwrap() = 9;
        assert!(Content::decode(EnvelopeKind::Setup, &bytes).is_err());
        // Change 5 exists only in version 2; version 2 only for Setup and
        // Update.
        let mut bytes = Content::Update(u.clone()).encode();
        bytes[0] = CONTENT_VERSION;
        bytes.pop();
        assert!(Content::decode(EnvelopeKind::Update, &bytes).is_err());
        let mut m = Content::Message(b"x".to_vec()).encode();
        m[0] = CONTENT_VERSION_HISTORY;
        assert!(Content::decode(EnvelopeKind::Message, &m).is_err());
    }

    #[test]
    fn message_matches_the_published_vector() {
        assert_eq!(
            check_vector("content_message"),
            Content::Message(b"hello, group".to_vec())
        );
    }

    #[test]
    fn update_add_matches_the_published_vector() {
        let Content::Update(u) = check_vector("content_update_add") else {
            panic!("not an Update");
        };
        assert!(matches!(u.change, Change::Add { .. }));
    }

    #[test]
    fn update_remove_matches_the_published_vector() {
        let Content::Update(u) = check_vector("content_update_remove") else {
            panic!("not an Update");
        };
        assert!(matches!(u.change, Change::Remove { .. }));
    }

    #[test]
    fn update_leave_matches_the_published_vector() {
        let Content::Update(u) = check_vector("content_update_leave") else {
            panic!("not an Update");
        };
        assert_eq!(u.change, Change::Leave);
    }

    #[test]
    fn update_set_role_matches_the_published_vector() {
        let Content::Update(u) = check_vector("content_update_set_role") else {
            panic!("not an Update");
        };
        assert!(matches!(u.change, Change::SetRole { .. }));
    }

    #[test]
    fn receipt_matches_the_published_vector() {
        let Content::Receipt(r) = check_vector("content_receipt") else {
            panic!("not a Receipt");
        };
        let head = grompi_proto::vectors::find("head_1").unwrap();
        assert_eq!(r.head.as_bytes().to_vec(), head.output_bytes().unwrap());
    }

    #[test]
    fn noise_matches_the_published_vector() {
        assert_eq!(check_vector("content_noise"), Content::Noise);
        assert_eq!(check_vector("content_rekey"), Content::Rekey);
    }

    #[test]
    fn the_published_contents_follow_the_membership_rules() {
        use crate::membership::Membership;
        let Content::Setup(setup) = check_vector("content_setup") else {
            panic!("not a Setup");
        };
        let creator = setup.creator;
        let m = Membership::from_setup(
            grompi_proto::Epoch(0),
            Some(setup.slots.hash()),
            SlotIndex(0),
            creator,
            &setup,
        )
        .unwrap();
        let update = |name: &str| match check_vector(name) {
            Content::Update(u) => u,
            _ => panic!("not an Update"),
        };
        for name in [
            "content_update_add",
            "content_update_remove",
            "content_update_set_role",
        ] {
            let u = update(name);
            let out = m.apply_update(&creator, Some(u.next_slots.hash()), &u);
            assert_eq!(out.refusal, None, "{name}");
        }
        // Leave follows the role change that made the second member an Admin.
        let u = update("content_update_set_role");
        let after = m
            .apply_update(&creator, Some(u.next_slots.hash()), &u)
            .next
            .unwrap();
        let u = update("content_update_leave");
        let out = after.apply_update(&creator, Some(u.next_slots.hash()), &u);
        assert_eq!(out.refusal, None);
    }

    #[test]
    fn the_documented_decoder_limits_hold() {
        // Unknown version, change code and role code; a receipt over its
        // bound; trailing bytes.
        let mut bytes = Content::Noise.encode();
        bytes[0] = 2;
        assert!(Content::decode(EnvelopeKind::Noise, &bytes).is_err());
        let update = grompi_proto::vectors::find("content_update_leave")
            .unwrap()
            .input_bytes()
            .unwrap();
        let mut bad = update.clone();
        bad[2] = 5;
        assert!(Content::decode(EnvelopeKind::Update, &bad).is_err());
        let setup = grompi_proto::vectors::find("content_setup")
            .unwrap()
            .input_bytes()
            .unwrap();
        let mut bad = setup.clone();
        // The first slot's role code: version, kind, creator, count, key.
        bad[2 + 32 + 8 + 32] = 3;
        assert!(Content::decode(EnvelopeKind::Setup, &bad).is_err());
        let over = Canonical::new()
            .u8(CONTENT_VERSION)
            .u8(EnvelopeKind::Receipt.code())
            .u64(1)
            .fixed(&[0; 32])
            .count(MAX_RECEIPT_INDICES + 1);
        assert!(matches!(
            Content::decode(EnvelopeKind::Receipt, over.as_bytes()),
            Err(DecodeError::TooMany { max: 1024, .. })
        ));
        let mut long = setup;
        long.push(0);
        assert!(Content::decode(EnvelopeKind::Setup, &long).is_err());
    }

    proptest! {
        #[test]
        fn truncations_and_garbage_are_refused_without_panic(
            which in 0usize..5, cut in 0usize..200, noise in proptest::collection::vec(any::<u8>(), 0..80)
        ) {
            let c = &samples()[which];
            let bytes = c.encode();
            let cut = cut.min(bytes.len());
            if cut < bytes.len() {
                prop_assert!(Content::decode(c.kind(), &bytes[..cut]).is_err());
            }
            let _ = Content::decode(c.kind(), &noise);
        }
    }
}
