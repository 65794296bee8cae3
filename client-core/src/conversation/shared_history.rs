//! Shared history in a conversation (`docs/PROTOCOL.md` section 4.6): the
//! current policy, the history block of this member's own envelopes, and
//! the anchor a verified history is read against.

use super::Conversation;
use crate::content::{Content, Visibility};
use crate::group_key::{GroupKeys, KeyGeneration, Rn1};
use crate::history::{Capsule, HistoryAnchor, HistoryKey, HistoryKeyId, HistoryRoot, HistorySeal};
use grompi_proto::{EnvelopeHeader, EnvelopeKind, Epoch, Head, Index, Misbehaviour};

/// What a member held before it applied an accepted envelope: the policy
/// and the newest history key of the epoch then current, which an Update's
/// or a Rekey's history block must link.
pub(super) struct HistoryBefore {
    visibility: Visibility,
    epoch: Option<Epoch>,
    newest: Option<(KeyGeneration, HistoryKey)>,
}

/// The newest generation of `keys` and its history key.
fn newest_history_key(keys: Option<&GroupKeys>) -> Option<(KeyGeneration, HistoryKey)> {
    let k = keys?;
    let current = k.current();
    HistoryKey::of(k, current).map(|key| (current, key))
}

impl Conversation {
    /// The current epoch's history policy: `Shared` only in a group-keyed
    /// conversation whose Setup or last Update said so.
    pub fn history_visibility(&self) -> Visibility {
        self.history
    }

    /// Sets the policy a Setup or an accepted Update states for the epoch
    /// now current (`Joined` in a pairwise-keyed conversation).
    pub(super) fn set_history(&mut self, history: Visibility) {
        self.history = if self.group.is_some() {
            history
        } else {
            Visibility::Joined
        };
    }

    /// The root a member added at `index` (head `head`) reads its pre-join
    /// history from: the history key of the epoch's generation 0, if the
    /// epoch shares its history and this member holds its keys.
    pub(super) fn history_root_at(&self, index: Index, head: Head) -> Option<HistoryRoot> {
        if self.history != Visibility::Shared {
            return None;
        }
        let g = self.group.as_ref()?;
        let key = HistoryKey::of(g.keys.as_ref()?, KeyGeneration(0))?;
        Some(HistoryRoot {
            through: index,
            head,
            id: HistoryKeyId {
                epoch: g.epoch,
                generation: KeyGeneration(0),
            },
            key,
        })
    }

    /// What this member reads its conversation's history against: the last
    /// index it accepted, its head there, its first own index, and the
    /// history keys it holds (those of the current epoch if it shares its
    /// history, and the one it joined with). `None` before anything was
    /// accepted.
    pub fn history_anchor(&self) -> Option<HistoryAnchor> {
        let last = self.transcript.last()?;
        let mut keys = Vec::new();
        if self.history == Visibility::Shared
            && let Some(g) = self.group.as_ref()
            && let Some(k) = g.keys.as_ref()
        {
            let current = k.current();
            for generation in [current.0.checked_sub(1), Some(current.0)]
                .into_iter()
                .flatten()
                .map(KeyGeneration)
            {
                if let Some(key) = HistoryKey::of(k, generation) {
                    keys.push((
                        HistoryKeyId {
                            epoch: g.epoch,
                            generation,
                        },
                        key,
                    ));
                }
            }
        }
        if let Some(root) = &self.history_root {
            keys.push((root.id, root.key.clone()));
        }
        Some(HistoryAnchor {
            conversation: self.id,
            through: last.index,
            head: last.head,
            first_own: self.transcript.first(),
            keys,
        })
    }

    /// The history block's key and link for an envelope this member sends
    /// with `content` in `epoch`: a Message or Receipt under key generation
    /// `generation`, or a Setup, Update or Rekey starting a generation with
    /// `rn1`. `None` when the envelope carries no history block.
    pub(super) fn history_seal(
        &self,
        content: &Content,
        epoch: Epoch,
        generation: Option<KeyGeneration>,
        rn1: Option<&Rn1>,
    ) -> Option<HistorySeal> {
        let keys = self.group.as_ref()?.keys.as_ref();
        let newest = newest_history_key(keys);
        match content {
            Content::Message(_) | Content::Receipt(_) if self.history == Visibility::Shared => {
                Some(HistorySeal {
                    key: HistoryKey::of(keys?, generation?)?,
                    link: None,
                })
            }
            Content::Rekey if self.history == Visibility::Shared => {
                let mut next = keys?.clone();
                let generation = generation?;
                next.rekey(generation, rn1?, []).ok()?;
                Some(HistorySeal {
                    key: HistoryKey::of(&next, generation)?,
                    link: newest,
                })
            }
            Content::Update(u) if u.history == Visibility::Shared => {
                let next = GroupKeys::start_epoch(self.id, epoch.next()?, rn1?, []);
                Some(HistorySeal {
                    key: HistoryKey::of(&next, KeyGeneration(0))?,
                    link: newest,
                })
            }
            _ => None,
        }
    }

    /// The policy and, before an envelope of `kind` that must link it (an
    /// Update or a Rekey), the newest history key, before applying it.
    pub(super) fn history_before(&self, kind: EnvelopeKind) -> HistoryBefore {
        let g = self.group.as_ref();
        let links = matches!(kind, EnvelopeKind::Update | EnvelopeKind::Rekey);
        HistoryBefore {
            visibility: self.history,
            epoch: g.map(|g| g.epoch),
            newest: g
                .filter(|_| links)
                .and_then(|g| newest_history_key(g.keys.as_ref())),
        }
    }

    /// Checks the history block of another member's accepted envelope at
    /// `index` (`docs/PROTOCOL.md` section 4.6), after it was applied: in
    /// an epoch that shares its history, it must be there, open under the
    /// history key its header names, give the body key the header commits
    /// to, and (an Update's or a Rekey's) link the newest history key
    /// `before` held. Otherwise [`Misbehaviour::BadHistoryBlock`]: members
    /// added later would not read it. A member that holds no key for the
    /// block (a bad RN1, already reported) checks nothing.
    pub(super) fn check_history_block(
        &mut self,
        index: Index,
        header: &EnvelopeHeader,
        block: Option<&[u8]>,
        before: HistoryBefore,
    ) {
        let expected = match header.kind() {
            EnvelopeKind::Noise => return,
            EnvelopeKind::Message | EnvelopeKind::Receipt | EnvelopeKind::Rekey => {
                before.visibility == Visibility::Shared
            }
            EnvelopeKind::Setup | EnvelopeKind::Update => self.history == Visibility::Shared,
        };
        if !expected {
            return;
        }
        let Some(block) = block else {
            self.alert(
                Misbehaviour::BadHistoryBlock(
                    "an envelope of an epoch that shares its history came without a history block",
                ),
                Some(index),
                None,
            );
            return;
        };
        let Some(id) = HistoryKeyId::sealing(header) else {
            return;
        };
        let key = self
            .group
            .as_ref()
            .filter(|g| g.epoch == id.epoch)
            .and_then(|g| g.keys.as_ref())
            .and_then(|k| HistoryKey::of(k, id.generation));
        let Some(key) = key else { return };
        let verdict = match Capsule::open(&key, &header.core_hash(), block) {
            Err(reason) => Err(reason),
            Ok(c) if c.body_key.commitment() != header.key_commitment() => {
                Err("its body key is not the one the header commits to")
            }
            Ok(c) => {
                let wants_link =
                    matches!(header.kind(), EnvelopeKind::Update | EnvelopeKind::Rekey)
                        && before.epoch == Some(header.epoch());
                match (c.link, wants_link, &before.newest) {
                    (None, false, _) => Ok(()),
                    (Some(_), false, _) => Err("a link where none belongs"),
                    (None, true, None) => Ok(()),
                    (None, true, Some(_)) => Err("no link to the history key before it"),
                    (Some((g, k)), true, Some((want_g, want_k))) => {
                        if g == *want_g && k.matches(want_k) {
                            Ok(())
                        } else {
                            Err("a link to a history key that is not the one before it")
                        }
                    }
                    // This member holds no key to compare with.
                    (Some(_), true, None) => Ok(()),
                }
            }
        };
        if let Err(reason) = verdict {
            self.alert(Misbehaviour::BadHistoryBlock(reason), Some(index), None);
        }
    }
}
