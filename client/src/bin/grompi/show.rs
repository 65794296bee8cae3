//! How things are printed.

use grompi_client::client::{Client, KeySummary, Progress, Record, Summary};
use grompi_client_core::conversation::{Event, Phase};
use grompi_client_core::head_proof::HeadProofOutcome;
use grompi_proto::{AccountId, ConversationId, SlotRole};
use std::collections::BTreeSet;

/// A person's display name: contact name, "me", or an id prefix.
pub fn who(client: &Client, account: &AccountId) -> String {
    client
        .name_of(account)
        .unwrap_or_else(|| account.to_hex().chars().take(12).collect())
}

fn who_hex(client: &Client, hex: &str) -> String {
    match hex::decode(hex)
        .ok()
        .and_then(|b| AccountId::parse("a", &b).ok())
    {
        Some(a) => who(client, &a),
        None => "?".to_owned(),
    }
}

/// A conversation's display name.
pub fn conv(client: &Client, id: &ConversationId) -> String {
    let short: String = id.to_hex().chars().take(12).collect();
    match client.conversation_name(id) {
        Some(n) => format!("{n} ({short})"),
        None => short,
    }
}

/// One transcript line.
pub fn record(client: &Client, r: &Record) -> String {
    let sender = r
        .sender
        .as_deref()
        .map_or_else(|| "?".to_owned(), |s| who_hex(client, s));
    let context = match r.last_seen {
        Some(i) => format!("sent having seen up to #{i}"),
        None => "sent having seen nothing".to_owned(),
    };
    let body = match (r.kind.as_str(), &r.text, &r.note) {
        (_, _, _) if r.undecryptable => "(could not be decrypted)".to_owned(),
        ("message", Some(t), _) => format!("{sender}: {t}"),
        (_, _, Some(n)) => format!("{sender} [{}] {n}", r.kind),
        (k, _, _) => format!("{sender} [{k}]"),
    };
    format!("#{:<4} [{}] {body}   ({context})", r.index, r.status)
}

/// Records as JSON lines.
pub fn json(records: &[Record]) -> Result<String, String> {
    let mut out = String::new();
    for r in records {
        out.push_str(&serde_json::to_string(r).map_err(|e| e.to_string())?);
        out.push('\n');
    }
    Ok(out)
}

/// Prints what a batch of deliveries did: each index touched, once, with
/// its record as stored now; status upgrades; alerts.
pub fn progress(client: &Client, p: &Progress, only: Option<&ConversationId>) {
    let mut touched: BTreeSet<(ConversationId, u64)> = BTreeSet::new();
    for (id, e) in &p.events {
        if only.is_some_and(|o| o != id) {
            continue;
        }
        match e {
            Event::StatusChanged { index, status } => {
                println!(
                    "{}: #{} is now {}",
                    conv(client, id),
                    index.0,
                    grompi_client::client::Status::from(*status)
                );
            }
            Event::Accepted { index, .. } => {
                touched.insert((*id, index.0));
            }
            _ => {}
        }
    }
    let mut last: Option<ConversationId> = None;
    for (id, index) in touched {
        let Ok(records) = client.history(&id) else {
            continue;
        };
        if last != Some(id) {
            println!("== {}", conv(client, &id));
            last = Some(id);
        }
        if let Some(r) = records.iter().find(|r| r.index == index) {
            println!("{}", record(client, r));
        }
    }
    for a in &p.alerts {
        if only.is_some_and(|o| *o != a.conversation) {
            continue;
        }
        println!("ALERT: {a}");
    }
}

/// Prints the members, one a line: name (or account id), admin mark, id.
/// How a conversation is keyed, e.g. "group key, generation 1, period 3
/// (renewed every 100 messages)".
pub fn keys(k: &KeySummary) -> String {
    match k {
        KeySummary::Pairwise => "pairwise (each message's key sent to every member)".to_owned(),
        KeySummary::Group {
            generation,
            period,
            period_length,
        } => match generation {
            Some(g) => format!(
                "group key, generation {g}, period {period} (renewed every {period_length} messages)"
            ),
            None => "group key NOT HELD: this member got no valid key for this epoch (see alerts)"
                .to_owned(),
        },
    }
}

/// The member list, then the epoch and how the conversation is keyed.
pub fn members(client: &Client, s: &Summary) {
    for (a, role) in &s.members {
        let role = match role {
            SlotRole::Admin => " (admin)",
            SlotRole::Member => "",
        };
        println!("{}{role}  {}", who(client, a), a.to_hex());
    }
    if let Some(e) = s.epoch {
        println!("epoch {e}; keys: {}", keys(&s.keys));
        println!(
            "history: {}",
            match s.history {
                grompi_client_core::content::Visibility::Shared =>
                    "shared (members added later read it, verified)",
                grompi_client_core::content::Visibility::Joined =>
                    "joined (members added later read nothing from before they joined)",
            }
        );
    }
}

/// The phase as the CLI words it, e.g. "waiting for its setup".
pub fn phase(p: &Phase) -> String {
    match p {
        Phase::AwaitingSetup => "waiting for its setup".to_owned(),
        Phase::AwaitingJoin => "waiting to be added".to_owned(),
        Phase::Active => "active".to_owned(),
        Phase::Removed => "you are no longer a member".to_owned(),
        Phase::Halted(why) => format!("HALTED: {why}"),
    }
}

/// A conversation's status.
pub fn summary(client: &Client, s: &Summary) {
    println!("conversation {}", conv(client, &s.id));
    println!("  id: {}", s.id.to_hex());
    println!(
        "  state: {}{}",
        phase(&s.phase),
        s.epoch.map(|e| format!(", epoch {e}")).unwrap_or_default()
    );
    let names: Vec<String> = s
        .members
        .iter()
        .map(|(a, r)| {
            let n = who(client, a);
            if *r == SlotRole::Admin {
                format!("{n} (admin)")
            } else {
                n
            }
        })
        .collect();
    println!("  members: {}", names.join(", "));
    println!("  keys: {}", keys(&s.keys));
    println!(
        "  accepted: {} indices ({} fully attested, {} with the quorum only)",
        s.fully_attested + s.quorum_only,
        s.fully_attested,
        s.quorum_only
    );
    if s.processed.is_empty() {
        println!("  receipts: none yet");
    }
    for (a, i) in &s.processed {
        println!(
            "  receipt: {} has processed through #{}",
            who(client, a),
            i.0
        );
    }
    if !s.undecryptable.is_empty() {
        println!("  could not decrypt: {:?}", s.undecryptable);
    }
}

/// Head proof outcomes.
pub fn proofs(client: &Client, outcomes: &[HeadProofOutcome]) {
    let name = |s: u32| {
        usize::try_from(s)
            .ok()
            .and_then(|i| client.descriptor().order_servers.get(i))
            .map_or_else(|| format!("server {s}"), |e| e.name.clone())
    };
    if outcomes.is_empty() {
        println!("  head proofs: none received");
    }
    for o in outcomes {
        match o {
            HeadProofOutcome::Consistent { server, count } => {
                println!(
                    "  order server {}: attested {count} indices, consistent",
                    name(*server)
                );
            }
            HeadProofOutcome::AheadOfAccepted { server, count } => println!(
                "  order server {}: attested {count} indices, some not accepted here yet",
                name(*server)
            ),
            HeadProofOutcome::NotProved { server, reason } => {
                println!("  order server {}: NOT PROVED: {reason}", name(*server));
            }
            HeadProofOutcome::Misbehaviour(m) => println!("  ALERT: {m}"),
        }
    }
}
