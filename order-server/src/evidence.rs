//! Evidence of equivocation attempts: a refused request to attest a
//! different envelope at an already attested index, kept as it arrived
//! (C2SP tlog-witness keeps refused checkpoints for the same reason). A
//! non-zero count means whoever holds the router's certificate tried to
//! fork a conversation.

use crate::store::{StoreError, StoreRead};
use grompi_proto::pb;

/// One kept refused request, summarised for an operator.
#[derive(Debug, Clone, PartialEq)]
pub struct EvidenceEntry {
    /// Its number (arrival order, from 0).
    pub number: u64,
    /// The refused request as it arrived (an encoded `AttestItem`).
    pub item: pb::AttestItem,
}

impl std::fmt::Display for EvidenceEntry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let header = self.item.envelope.as_ref().and_then(|e| e.header.as_ref());
        let hash = crate::request::AttestRequest::try_from(self.item.clone())
            .map(|r| r.envelope.hash().to_hex())
            .unwrap_or_else(|e| format!("(does not parse: {e})"));
        write!(
            f,
            "#{} conversation {} index {} sender slot {} sequence {} envelope {}",
            self.number,
            header
                .map(|h| hex::encode(&h.conversation_id))
                .unwrap_or_default(),
            self.item.index,
            header.map(|h| h.sender_slot).unwrap_or_default(),
            header.map(|h| h.sequence).unwrap_or_default(),
            hash
        )
    }
}

/// The total count of refused equivocation attempts, and the first `limit`
/// kept ones.
pub fn list(store: &impl StoreRead, limit: u64) -> Result<(u64, Vec<EvidenceEntry>), StoreError> {
    let total = store.evidence_total()?;
    let mut entries = Vec::new();
    for number in 0..total.min(limit) {
        let Some(bytes) = store.evidence(number)? else {
            break;
        };
        let item = prost::Message::decode(bytes.as_slice())
            .map_err(|_| StoreError::Inconsistent("a kept evidence record is not an AttestItem"))?;
        entries.push(EvidenceEntry { number, item });
    }
    Ok((total, entries))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mem_store::MemStore;
    use crate::store::StoreWrite;

    #[test]
    fn lists_kept_evidence_and_the_total() {
        let mut store = MemStore::new();
        let mut txn = store.begin();
        let item = pb::AttestItem {
            index: 4,
            ..Default::default()
        };
        txn.put_evidence(0, &prost::Message::encode_to_vec(&item))
            .unwrap();
        txn.set_evidence_total(3).unwrap();
        txn.commit();
        let (total, entries) = list(&store, 10).unwrap();
        assert_eq!(total, 3);
        assert_eq!(entries.len(), 1);
        assert_eq!(entries[0].item.index, 4);
        assert!(entries[0].to_string().contains("index 4"));
        assert!(entries[0].to_string().contains("does not parse"));
    }
}
