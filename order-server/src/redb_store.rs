//! The durable store: one redb database file.
//!
//! redb commits with `Durability::Immediate` are on disk (fsync'd) when
//! `commit` returns, and a crash at any moment leaves either the previous or
//! the new commit, never a mix. sled was considered and rejected: its
//! `flush` is `sync_file_range`, not an fsync, and it has had no stable
//! release since 2021; an order server that forgets its last attestation
//! after a power loss could re-attest a different envelope at that index.
//!
//! | table | key | value |
//! |---|---|---|
//! | `chain` | conversation id, `0x00`, index (BE) | [`IndexRecord`] layout |
//! | `chain` | conversation id, `0x01` | [`ConversationState`] layout |
//! | `chain` | conversation id, `0x02`, epoch (BE), slot (BE) | last sequence (BE) |
//! | `opened` | conversation id | nothing: the conversation was opened |
//! | `slot_sets` | conversation id, epoch (BE) | slot set layout |
//! | `evidence` | number | encoded `AttestItem` of a refused equivocation |
//! | `meta` | name | value (`evidence_total`, `server_public_key`) |
//!
//! Everything one attestation writes lives in `chain` under keys that start
//! with its conversation id, and the state key sorts right after the newest
//! record: a batch touches about one leaf page per conversation, which is
//! what makes group commit cheap.

use crate::state::{ConversationState, IndexRecord, decode_slot_set, encode_slot_set};
use crate::store::{StoreError, StoreRead, StoreWrite};
use grompi_proto::{ConversationId, Epoch, Index, OrderServerKey, Sequence, SlotIndex, SlotSet};
use redb::{
    Database, Durability, ReadOnlyTable, ReadTransaction, ReadableDatabase, ReadableTable, Table,
    TableDefinition, WriteTransaction,
};
use std::path::Path;

const CHAIN: TableDefinition<&[u8], &[u8]> = TableDefinition::new("chain");
const OPENED: TableDefinition<&[u8; 32], ()> = TableDefinition::new("opened");
const SLOT_SETS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("slot_sets");
const EVIDENCE: TableDefinition<u64, &[u8]> = TableDefinition::new("evidence");
const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");

const EVIDENCE_TOTAL: &str = "evidence_total";
const SERVER_PUBLIC_KEY: &str = "server_public_key";

fn backend(e: impl std::fmt::Display) -> StoreError {
    StoreError::Backend(e.to_string())
}

fn epoch_key(id: &ConversationId, epoch: Epoch) -> [u8; 40] {
    let mut k = [0u8; 40];
    k[..32].copy_from_slice(id.as_bytes());
    k[32..].copy_from_slice(&epoch.0.to_be_bytes());
    k
}

const RECORD_TAG: u8 = 0;
const STATE_TAG: u8 = 1;
const SEQUENCE_TAG: u8 = 2;

fn record_key(id: &ConversationId, index: Index) -> [u8; 41] {
    let mut k = [0u8; 41];
    k[..32].copy_from_slice(id.as_bytes());
    k[32] = RECORD_TAG;
    k[33..].copy_from_slice(&index.0.to_be_bytes());
    k
}

fn state_key(id: &ConversationId) -> [u8; 33] {
    let mut k = [0u8; 33];
    k[..32].copy_from_slice(id.as_bytes());
    k[32] = STATE_TAG;
    k
}

fn sequence_key(id: &ConversationId, epoch: Epoch, slot: SlotIndex) -> [u8; 45] {
    let mut k = [0u8; 45];
    k[..32].copy_from_slice(id.as_bytes());
    k[32] = SEQUENCE_TAG;
    k[33..41].copy_from_slice(&epoch.0.to_be_bytes());
    k[41..].copy_from_slice(&slot.0.to_be_bytes());
    k
}

fn decode_u64(bytes: &[u8]) -> Result<u64, StoreError> {
    <[u8; 8]>::try_from(bytes)
        .map(u64::from_be_bytes)
        .map_err(|_| StoreError::Inconsistent("a stored counter is not 8 bytes"))
}

/// The redb database of an order server.
pub struct RedbStore {
    db: Database,
}

impl RedbStore {
    /// Opens (or creates) the database at `path` and makes sure every table
    /// exists. redb recovers from an unclean shutdown here if it must.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let db = Database::create(path).map_err(backend)?;
        let store = Self { db };
        let txn = store.begin_write()?;
        RedbWrite::open(&txn)?;
        Self::commit(txn)?;
        Ok(store)
    }

    /// Records the server's public key on first use; afterwards refuses to
    /// run with any other key (a replaced key file would make every earlier
    /// tag unverifiable and is almost certainly an operator mistake).
    pub fn check_server_key(&self, key: &OrderServerKey) -> Result<(), StoreError> {
        let txn = self.begin_write()?;
        {
            let mut meta = txn.open_table(META).map_err(backend)?;
            let stored = meta
                .get(SERVER_PUBLIC_KEY)
                .map_err(backend)?
                .map(|g| g.value().to_vec());
            match stored {
                Some(s) if s.as_slice() == key.as_bytes() => {}
                Some(_) => {
                    return Err(StoreError::Inconsistent(
                        "the database was written under a different order server key; \
                         restore the original key file",
                    ));
                }
                None => {
                    meta.insert(SERVER_PUBLIC_KEY, key.as_bytes().as_slice())
                        .map_err(backend)?;
                }
            }
        }
        Self::commit(txn)
    }

    /// How many conversations were ever opened.
    pub fn conversation_count(&self) -> Result<u64, StoreError> {
        use redb::ReadableTableMetadata;
        let txn = self.begin_read()?;
        let table = txn.open_table(OPENED).map_err(backend)?;
        table.len().map_err(backend)
    }

    /// Begins a write transaction that commits durably (fsync).
    pub fn begin_write(&self) -> Result<WriteTransaction, StoreError> {
        let mut txn = self.db.begin_write().map_err(backend)?;
        txn.set_durability(Durability::Immediate).map_err(backend)?;
        Ok(txn)
    }

    /// Commits a write transaction; when this returns `Ok`, it is on disk.
    pub fn commit(txn: WriteTransaction) -> Result<(), StoreError> {
        txn.commit().map_err(backend)
    }

    /// Begins a read snapshot of the last commit.
    pub fn begin_read(&self) -> Result<ReadTransaction, StoreError> {
        self.db.begin_read().map_err(backend)
    }
}

/// The tables of one write transaction, implementing [`StoreWrite`].
pub struct RedbWrite<'t> {
    chain: Table<'t, &'static [u8], &'static [u8]>,
    opened: Table<'t, &'static [u8; 32], ()>,
    slot_sets: Table<'t, &'static [u8], &'static [u8]>,
    evidence: Table<'t, u64, &'static [u8]>,
    meta: Table<'t, &'static str, &'static [u8]>,
}

impl<'t> RedbWrite<'t> {
    /// Opens (creating if needed) every table in `txn`.
    pub fn open(txn: &'t WriteTransaction) -> Result<Self, StoreError> {
        Ok(Self {
            chain: txn.open_table(CHAIN).map_err(backend)?,
            opened: txn.open_table(OPENED).map_err(backend)?,
            slot_sets: txn.open_table(SLOT_SETS).map_err(backend)?,
            evidence: txn.open_table(EVIDENCE).map_err(backend)?,
            meta: txn.open_table(META).map_err(backend)?,
        })
    }
}

/// The tables of one read snapshot, implementing [`StoreRead`].
pub struct RedbRead {
    chain: ReadOnlyTable<&'static [u8], &'static [u8]>,
    slot_sets: ReadOnlyTable<&'static [u8], &'static [u8]>,
    evidence: ReadOnlyTable<u64, &'static [u8]>,
    meta: ReadOnlyTable<&'static str, &'static [u8]>,
}

impl RedbRead {
    /// Opens every table in `txn`.
    pub fn open(txn: &ReadTransaction) -> Result<Self, StoreError> {
        Ok(Self {
            chain: txn.open_table(CHAIN).map_err(backend)?,
            slot_sets: txn.open_table(SLOT_SETS).map_err(backend)?,
            evidence: txn.open_table(EVIDENCE).map_err(backend)?,
            meta: txn.open_table(META).map_err(backend)?,
        })
    }
}

macro_rules! impl_read {
    ($ty:ty) => {
        impl StoreRead for $ty {
            fn conversation(
                &self,
                id: &ConversationId,
            ) -> Result<Option<ConversationState>, StoreError> {
                match self.chain.get(state_key(id).as_slice()).map_err(backend)? {
                    Some(g) => Ok(Some(ConversationState::decode(g.value())?)),
                    None => Ok(None),
                }
            }

            fn slot_set(
                &self,
                id: &ConversationId,
                epoch: Epoch,
            ) -> Result<Option<SlotSet>, StoreError> {
                match self
                    .slot_sets
                    .get(epoch_key(id, epoch).as_slice())
                    .map_err(backend)?
                {
                    Some(g) => Ok(Some(decode_slot_set(g.value())?)),
                    None => Ok(None),
                }
            }

            fn last_sequence(
                &self,
                id: &ConversationId,
                epoch: Epoch,
                slot: SlotIndex,
            ) -> Result<Option<Sequence>, StoreError> {
                match self
                    .chain
                    .get(sequence_key(id, epoch, slot).as_slice())
                    .map_err(backend)?
                {
                    Some(g) => Ok(Some(Sequence(decode_u64(g.value())?))),
                    None => Ok(None),
                }
            }

            fn record(
                &self,
                id: &ConversationId,
                index: Index,
            ) -> Result<Option<IndexRecord>, StoreError> {
                match self
                    .chain
                    .get(record_key(id, index).as_slice())
                    .map_err(backend)?
                {
                    Some(g) => Ok(Some(IndexRecord::decode(g.value())?)),
                    None => Ok(None),
                }
            }

            fn evidence_total(&self) -> Result<u64, StoreError> {
                match self.meta.get(EVIDENCE_TOTAL).map_err(backend)? {
                    Some(g) => decode_u64(g.value()),
                    None => Ok(0),
                }
            }

            fn evidence(&self, number: u64) -> Result<Option<Vec<u8>>, StoreError> {
                Ok(self
                    .evidence
                    .get(number)
                    .map_err(backend)?
                    .map(|g| g.value().to_vec()))
            }
        }
    };
}

impl_read!(RedbWrite<'_>);
impl_read!(RedbRead);

impl StoreWrite for RedbWrite<'_> {
    fn put_conversation(
        &mut self,
        id: &ConversationId,
        state: &ConversationState,
    ) -> Result<(), StoreError> {
        self.chain
            .insert(state_key(id).as_slice(), state.encode().as_slice())
            .map_err(backend)?;
        // Only opening writes a state with nothing attested yet.
        if state.next_index == Index(0) {
            self.opened.insert(id.as_bytes(), ()).map_err(backend)?;
        }
        Ok(())
    }

    fn put_slot_set(
        &mut self,
        id: &ConversationId,
        epoch: Epoch,
        slots: &SlotSet,
    ) -> Result<(), StoreError> {
        self.slot_sets
            .insert(
                epoch_key(id, epoch).as_slice(),
                encode_slot_set(slots).as_slice(),
            )
            .map_err(backend)?;
        Ok(())
    }

    fn put_last_sequence(
        &mut self,
        id: &ConversationId,
        epoch: Epoch,
        slot: SlotIndex,
        sequence: Sequence,
    ) -> Result<(), StoreError> {
        self.chain
            .insert(
                sequence_key(id, epoch, slot).as_slice(),
                sequence.0.to_be_bytes().as_slice(),
            )
            .map_err(backend)?;
        Ok(())
    }

    fn put_record(
        &mut self,
        id: &ConversationId,
        index: Index,
        record: &IndexRecord,
    ) -> Result<(), StoreError> {
        self.chain
            .insert(record_key(id, index).as_slice(), record.encode().as_slice())
            .map_err(backend)?;
        Ok(())
    }

    fn put_evidence(&mut self, number: u64, evidence: &[u8]) -> Result<(), StoreError> {
        self.evidence.insert(number, evidence).map_err(backend)?;
        Ok(())
    }

    fn set_evidence_total(&mut self, total: u64) -> Result<(), StoreError> {
        self.meta
            .insert(EVIDENCE_TOTAL, total.to_be_bytes().as_slice())
            .map_err(backend)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use grompi_proto::{EnvelopeHash, EnvelopeKind, Head, SlotEntry, SlotKey, SlotRole};

    #[test]
    fn committed_writes_survive_reopen_and_aborted_ones_do_not() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("order.redb");
        let c = ConversationId::from_bytes([1; 32]);
        let set = SlotSet::new(vec![SlotEntry {
            key: SlotKey::from_bytes([9; 32]),
            role: SlotRole::Admin,
        }])
        .unwrap();
        let rec = IndexRecord {
            epoch: Epoch(0),
            kind: EnvelopeKind::Setup,
            envelope: EnvelopeHash::from_bytes([3; 32]),
            head: Head::from_bytes([4; 32]),
        };
        {
            let store = RedbStore::open(&path).unwrap();
            let txn = store.begin_write().unwrap();
            {
                let mut w = RedbWrite::open(&txn).unwrap();
                w.put_conversation(&c, &ConversationState::opened(&c, &set))
                    .unwrap();
                w.put_slot_set(&c, Epoch(0), &set).unwrap();
                w.put_record(&c, Index(0), &rec).unwrap();
                w.put_last_sequence(&c, Epoch(0), SlotIndex(0), Sequence(5))
                    .unwrap();
                w.put_evidence(0, b"e").unwrap();
                w.set_evidence_total(1).unwrap();
                assert_eq!(w.record(&c, Index(0)).unwrap(), Some(rec));
            }
            RedbStore::commit(txn).unwrap();
            let txn = store.begin_write().unwrap();
            {
                let mut w = RedbWrite::open(&txn).unwrap();
                w.put_record(&c, Index(1), &rec).unwrap();
            }
            drop(txn);
        }
        let store = RedbStore::open(&path).unwrap();
        let r = RedbRead::open(&store.begin_read().unwrap()).unwrap();
        assert_eq!(r.record(&c, Index(0)).unwrap(), Some(rec));
        assert_eq!(r.record(&c, Index(1)).unwrap(), None);
        assert_eq!(r.slot_set(&c, Epoch(0)).unwrap(), Some(set));
        assert_eq!(
            r.last_sequence(&c, Epoch(0), SlotIndex(0)).unwrap(),
            Some(Sequence(5))
        );
        assert_eq!(r.evidence_total().unwrap(), 1);
        assert_eq!(r.evidence(0).unwrap().as_deref(), Some(&b"e"[..]));
    }

    #[test]
    fn a_different_server_key_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let store = RedbStore::open(&dir.path().join("db")).unwrap();
        store
            .check_server_key(&OrderServerKey::from_bytes([1; 32]))
            .unwrap();
        store
            .check_server_key(&OrderServerKey::from_bytes([1; 32]))
            .unwrap();
        let err = store
            .check_server_key(&OrderServerKey::from_bytes([2; 32]))
            .unwrap_err();
        assert!(err.to_string().contains("different order server key"));
    }
}
