#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code
use super::*;
use grompi_proto::{Epoch, Head};
use grompi_tlog::log::Log as TLog;
use grompi_tlog::storage::MemoryStorage;

/// An order server's log in memory, read at its current size.
struct MemLog(TLog<MemoryStorage>);

impl LogReader for MemLog {
    fn tile(&self, tile: &Tile) -> Result<Vec<u8>, String> {
        self.0.tile(*tile).map_err(|e| e.to_string())
    }
    fn bundle(&self, bundle: &Bundle) -> Result<Vec<u8>, String> {
        self.0.bundle(*bundle).map_err(|e| e.to_string())
    }
}

/// A reader that fails every read.
struct Down;

impl LogReader for Down {
    fn tile(&self, _: &Tile) -> Result<Vec<u8>, String> {
        Err("connection refused".into())
    }
    fn bundle(&self, _: &Bundle) -> Result<Vec<u8>, String> {
        Err("connection refused".into())
    }
}

fn conv() -> ConversationId {
    ConversationId::from_bytes([5; 32])
}

/// The conversation's indices 0..n with made-up heads.
fn accepted(n: u64) -> Vec<(Index, Epoch, Head)> {
    (0..n)
        .map(|i| {
            (
                Index(i),
                Epoch(i / 4),
                Head::from_bytes([(i % 251) as u8; 32]),
            )
        })
        .collect()
}

/// A log that interleaves other servers' traffic (`filler` entries before
/// each) with the entries of `logged` indices; returns it and where each
/// was logged.
fn log_with(n: u64, logged: &[u64], filler: usize) -> (MemLog, HashMap<Index, u64>) {
    let all = expected_entries(&conv(), accepted(n), &HashMap::new());
    let mut log = TLog::open(MemoryStorage::new()).unwrap();
    let mut at = HashMap::new();
    let mut other = 0u64;
    for e in &all {
        for _ in 0..filler {
            other += 1;
            log.append(format!("another conversation's entry {other}").as_bytes())
                .unwrap();
        }
        if logged.contains(&e.index.0) {
            at.insert(e.index, log.append(&e.entry).unwrap());
        }
    }
    (MemLog(log), at)
}

fn audit(log: &MemLog, expected: &[ExpectedEntry]) -> ServerAudit {
    audit_server(expected, log.0.size(), log.0.root().unwrap(), log)
}

#[test]
fn every_index_found_where_the_server_said_is_logged() {
    let (log, at) = log_with(300, &(0..300).collect::<Vec<_>>(), 1);
    let expected = expected_entries(&conv(), accepted(300), &at);
    let a = audit(&log, &expected);
    assert_eq!(a.logged(), 300);
    assert!(a.alerts().is_empty(), "{:?}", a.alerts());
    assert_eq!(a.verdicts[7].1, IndexVerdict::Logged(at[&Index(7)]));
    assert!(a.incomplete.is_none());
    assert_eq!(a.searched, 0, "every position given was right");
}

#[test]
fn entries_without_a_position_or_with_a_wrong_one_are_found_by_reading_the_log() {
    let (log, at) = log_with(40, &(0..40).collect::<Vec<_>>(), 3);
    let mut hints = at.clone();
    hints.remove(&Index(3));
    hints.remove(&Index(39));
    // The router moved one position onto another entry of the log.
    hints.insert(Index(10), at[&Index(11)]);
    let expected = expected_entries(&conv(), accepted(40), &hints);
    let a = audit(&log, &expected);
    assert_eq!(a.logged(), 40, "{:?}", a.alerts());
    assert_eq!(a.verdicts[10].1, IndexVerdict::Logged(at[&Index(10)]));
    assert_eq!(a.verdicts[39].1, IndexVerdict::Logged(at[&Index(39)]));
    assert_eq!(a.searched, 3, "indices 3, 10 and 39 were searched for");
}

#[test]
fn an_index_missing_before_a_logged_later_one_is_an_alert_naming_the_later_one() {
    let logged: Vec<u64> = (0..20).filter(|i| *i != 12).collect();
    let (log, at) = log_with(20, &logged, 2);
    // Even without any position from the router.
    for hints in [at.clone(), HashMap::new()] {
        let expected = expected_entries(&conv(), accepted(20), &hints);
        let a = audit(&log, &expected);
        assert_eq!(a.logged(), 19);
        let alerts = a.alerts();
        assert_eq!(alerts.len(), 1, "{alerts:?}");
        assert!(alerts[0].starts_with("index 12:"), "{alerts:?}");
        assert!(alerts[0].contains("index 13"), "{alerts:?}");
        assert!(alerts[0].contains("without logging it"), "{alerts:?}");
    }
}

#[test]
fn the_newest_indices_wait_for_the_next_checkpoint() {
    let (mut log, mut at) = log_with(10, &(0..10).collect::<Vec<_>>(), 1);
    let checkpoint = (log.0.size(), log.0.root().unwrap());
    // Indices 10 and 11 were attested and logged after the checkpoint.
    let more = expected_entries(&conv(), accepted(12), &HashMap::new());
    for e in &more[10..] {
        at.insert(e.index, log.0.append(&e.entry).unwrap());
    }
    for hints in [at.clone(), HashMap::new()] {
        let expected = expected_entries(&conv(), accepted(12), &hints);
        let a = audit_server(&expected, checkpoint.0, checkpoint.1, &log);
        assert_eq!(a.logged(), 10);
        assert_eq!(a.waiting(), vec![Index(10), Index(11)]);
        assert!(a.alerts().is_empty(), "{:?}", a.alerts());
    }
}

#[test]
fn a_position_inside_the_checkpoint_that_holds_nothing_of_it_is_an_alert() {
    // The server never logged index 4 (the last) but said it did at 2.
    let (log, mut at) = log_with(5, &[0, 1, 2, 3], 0);
    at.insert(Index(4), 2);
    let expected = expected_entries(&conv(), accepted(5), &at);
    let a = audit(&log, &expected);
    let alerts = a.alerts();
    assert_eq!(alerts.len(), 1, "{alerts:?}");
    assert!(alerts[0].starts_with("index 4:"), "{alerts:?}");
    assert!(alerts[0].contains("relayed by the router"), "{alerts:?}");
}

#[test]
fn tiles_the_checkpoint_does_not_commit_to_are_an_alert() {
    let (log, at) = log_with(8, &(0..8).collect::<Vec<_>>(), 0);
    let root = log.0.root().unwrap();
    let size = log.0.size();
    let mut storage = log.0.into_storage();
    // The stored leaf hash of position 5 (level 0, index 5) changed.
    let stored = grompi_tlog::merkle::stored_hash_index(0, 5);
    assert!(storage.overwrite_hash(stored, Hash([9; 32])));
    let log = MemLog(TLog::open(storage).unwrap());
    let expected = expected_entries(&conv(), accepted(8), &at);
    let a = audit_server(&expected, size, root, &log);
    assert!(
        a.verdicts
            .iter()
            .any(|(_, v)| matches!(v, IndexVerdict::Mismatch(_))),
        "{:?}",
        a.verdicts
    );
    assert!(!a.alerts().is_empty());
}

#[test]
fn a_log_that_cannot_be_read_concludes_nothing_and_says_why() {
    let (log, at) = log_with(4, &[0, 1, 2, 3], 0);
    let expected = expected_entries(&conv(), accepted(4), &at);
    let a = audit_server(&expected, log.0.size(), log.0.root().unwrap(), &Down);
    assert_eq!(a.logged(), 0);
    assert!(a.alerts().is_empty());
    assert!(
        a.incomplete
            .as_deref()
            .is_some_and(|w| w.contains("connection refused")),
        "{:?}",
        a.incomplete
    );
}

#[test]
fn only_http_log_urls_are_read() {
    assert!(HttpLog::new("https://log.example/x").is_err());
    let l = HttpLog::new("http://127.0.0.1:1/prefix/").unwrap();
    assert!(
        l.get("checkpoint", 10).is_err(),
        "nothing listens on port 1"
    );
}
