//! An attestation request, parsed from the wire.

use grompi_proto::pb;
use grompi_proto::{EnvelopeSummary, Head, Index, SlotSet, Tag, WireError};

/// One item of an Attest request: an envelope summary the router asks to be
/// attested at `index`, after `previous_head`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AttestRequest {
    /// The envelope's header and block digests.
    pub envelope: EnvelopeSummary,
    /// The sender's submission tag for this server.
    pub submission_tag: Tag,
    /// The index the router expects.
    pub index: Index,
    /// The head the router expects before it.
    pub previous_head: Head,
    /// For an Update: the next epoch's slot set.
    pub next_slots: Option<SlotSet>,
}

impl TryFrom<pb::AttestItem> for AttestRequest {
    type Error = WireError;

    fn try_from(item: pb::AttestItem) -> Result<Self, WireError> {
        Ok(Self {
            envelope: EnvelopeSummary::try_from(
                item.envelope
                    .ok_or(WireError::MissingField("item.envelope"))?,
            )?,
            submission_tag: Tag::parse("item.submission_tag", &item.submission_tag)?,
            index: Index(item.index),
            previous_head: Head::parse("item.previous_head", &item.previous_head)?,
            next_slots: item.next_slots.map(SlotSet::try_from).transpose()?,
        })
    }
}

impl From<&AttestRequest> for pb::AttestItem {
    fn from(r: &AttestRequest) -> Self {
        Self {
            envelope: Some((&r.envelope).into()),
            submission_tag: r.submission_tag.to_vec(),
            index: r.index.0,
            previous_head: r.previous_head.to_vec(),
            next_slots: r.next_slots.as_ref().map(Into::into),
        }
    }
}
