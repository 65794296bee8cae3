//! `grompi`: the command-line client. Each command opens the encrypted
//! account in the home directory, does its work through
//! [`grompi_client::client::Client`], saves, and exits: 0 on success, 1 on
//! an error (printed to stderr), 2 on a usage error.
#![forbid(unsafe_code)]

#[path = "grompi/args.rs"]
mod args;
#[path = "grompi/audit.rs"]
mod audit;
#[path = "grompi/secret.rs"]
mod secret;
#[path = "grompi/show.rs"]
mod show;

use args::{Cli, Command, ContactsAction, MembersAction, NetworkAction, Toggle};
use clap::Parser;
use grompi_client::client::{
    ApiError, Binding, Client, ForkBound, Progress, ResumeOutcome, Resumed,
};
use grompi_client::local_store::KdfParams;
use grompi_client_core::content::Change;
use grompi_client_core::conversation::{Event, Phase};
use grompi_proto::{ConversationId, SlotRole};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

/// An error for the user: what failed, with context.
struct Failure(String);

impl From<ApiError> for Failure {
    fn from(e: ApiError) -> Self {
        Self(e.to_string())
    }
}

impl From<String> for Failure {
    fn from(e: String) -> Self {
        Self(e)
    }
}

type Outcome = Result<(), Failure>;

fn home(cli: &Cli) -> Result<PathBuf, Failure> {
    if let Some(h) = &cli.home {
        return Ok(h.clone());
    }
    std::env::var_os("HOME")
        .map(|h| PathBuf::from(h).join(".grompi"))
        .ok_or_else(|| Failure("no home directory: pass --home DIR or set GROMPI_HOME".into()))
}

fn open(cli: &Cli) -> Result<Client, Failure> {
    let secret = secret::load(cli.key_file.as_deref(), false)?;
    let client = Client::open(&home(cli)?, &secret)?;
    if client.adopted_network() {
        eprintln!(
            "note: this account's store did not hold its network descriptor yet; it now \
             trusts the network.toml in its home directory (network {:?}), and refuses a \
             changed file from now on",
            client.descriptor().name
        );
    }
    Ok(client)
}

/// The network's quorum and what it tolerates, in one line.
fn print_fork_bound(client: &Client) {
    println!("{}", ForkBound::of(client.descriptor()));
}

/// The trusted network: name, router, order servers, quorum.
fn print_network(d: &grompi_proto::descriptor::NetworkDescriptor) {
    println!("network: {}", d.name);
    println!("router: {}", d.router.address);
    for (i, s) in d.order_servers.iter().enumerate() {
        println!(
            "order server {i}: {} {} key {}",
            s.name,
            s.address,
            s.public_key.to_hex()
        );
    }
    println!("{}", ForkBound::of(d));
}

/// A conversation named on the command line: a local name or id prefix,
/// or a full id not known yet (which is then fetched: joined).
async fn conversation(client: &mut Client, what: &str) -> Result<ConversationId, Failure> {
    match client.resolve_conversation(what) {
        Ok(id) => Ok(id),
        Err(ApiError::UnknownConversation(_)) if what.len() == 64 => {
            let bytes = hex::decode(what).map_err(|_| Failure(format!("{what:?} is not an id")))?;
            let id = ConversationId::parse("conversation", &bytes)
                .map_err(|e| Failure(e.to_string()))?;
            client.sync(id).await?;
            Ok(id)
        }
        Err(e) => Err(e.into()),
    }
}

fn warn_key_change(name: &str, old: &str, new: &str, was_verified: bool) {
    eprintln!("!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!");
    eprintln!("WARNING: THE IDENTITY OF {name:?} HAS CHANGED");
    eprintln!("  before: {old}");
    eprintln!("  now:    {new}");
    if was_verified {
        eprintln!("  You had verified the previous identity.");
    }
    eprintln!("  This is either a new device or someone impersonating {name:?}.");
    eprintln!("  Compare safety numbers again: grompi verify {name}");
    eprintln!("!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!");
}

fn own_message_index(client: &Client, p: &Progress) -> Option<(u64, Option<u64>)> {
    let me = client.account();
    p.events.iter().rev().find_map(|(_, e)| match e {
        Event::Message {
            index,
            sender,
            last_seen,
            ..
        } if *sender == me => Some((index.0, last_seen.map(|i| i.0))),
        _ => None,
    })
}

async fn run(cli: Cli) -> Outcome {
    match &cli.command {
        Command::Init { network, thin } => {
            let text = std::fs::read_to_string(network)
                .map_err(|e| Failure(format!("read {}: {e}", network.display())))?;
            let secret = secret::load(cli.key_file.as_deref(), true)?;
            let home = home(&cli)?;
            let mut client = Client::init(&home, &text, &secret, KdfParams::default())?;
            if *thin {
                client.set_thin(true)?;
                println!("thin terminal: no message text is kept on this device");
            }
            println!("account: {}", client.account().to_hex());
            println!("home: {}", home.display());
            println!(
                "network: {} (kept in the encrypted store; a changed network.toml is refused)",
                client.descriptor().name
            );
            print_fork_bound(&client);
            println!("next: grompi register");
            Ok(())
        }
        Command::Network { action } => match action {
            NetworkAction::Show => {
                let client = open(&cli)?;
                print_network(client.descriptor());
                Ok(())
            }
            NetworkAction::Accept { file } => {
                let text = std::fs::read_to_string(file)
                    .map_err(|e| Failure(format!("read {}: {e}", file.display())))?;
                let secret = secret::load(cli.key_file.as_deref(), false)?;
                let (client, previous) = Client::accept_network(&home(&cli)?, &secret, &text)?;
                match previous {
                    Some(old) if &old == client.descriptor() => {
                        println!("the network is unchanged");
                    }
                    Some(old) => {
                        println!("replaced the trusted network; before:");
                        print_network(&old);
                        println!("now:");
                        print_network(client.descriptor());
                        println!(
                            "existing conversations are checked against these order server \
                             keys and this quorum from now on"
                        );
                    }
                    None => {
                        println!("the account now trusts:");
                        print_network(client.descriptor());
                    }
                }
                Ok(())
            }
        },
        Command::Register => {
            let mut client = open(&cli)?;
            let account = client.register().await?;
            println!("registered account: {}", account.to_hex());
            Ok(())
        }
        Command::Id => {
            let client = open(&cli)?;
            println!("{}", client.account().to_hex());
            Ok(())
        }
        Command::Contacts { action } => contacts(&cli, action.as_ref()).await,
        Command::Verify { contact, confirm } => {
            let mut client = open(&cli)?;
            let c = client
                .contact(contact)?
                .ok_or_else(|| ApiError::UnknownContact(contact.clone()))?;
            let number = client.safety_number(&c)?;
            println!("contact: {} ({})", c.name, c.account);
            println!("safety number: {number}");
            if *confirm {
                client.mark_verified(&c.name)?;
                println!("{} is now marked verified", c.name);
            } else if c.verified {
                println!("status: verified");
            } else {
                println!("status: NOT verified (trusted on first use)");
                println!(
                    "compare the digits with {} out of band, then: grompi verify {} --confirm",
                    c.name, c.name
                );
            }
            Ok(())
        }
        Command::Audit {
            conversation: c,
            network,
            min_cosignatures,
        } => {
            let alarming = match (c, network) {
                (None, Some(network)) => audit::run(network, *min_cosignatures).await?,
                (c, network) => {
                    let mut client = open(&cli)?;
                    let text = match network {
                        Some(n) => std::fs::read_to_string(n)
                            .map_err(|e| Failure(format!("read {}: {e}", n.display())))?,
                        None => client.descriptor_text()?,
                    };
                    let id = match c {
                        Some(c) => Some(conversation(&mut client, c).await?),
                        None => None,
                    };
                    audit::run_account(&mut client, &text, id, *min_cosignatures).await?
                }
            };
            if alarming {
                Err(Failure(
                    "the audit found alerts: an order server's log is not cosigned as it \
                     must be, or misses an index it attested"
                        .into(),
                ))
            } else {
                Ok(())
            }
        }
        Command::Thin { state } => {
            let mut client = open(&cli)?;
            client.set_thin(*state == Toggle::On)?;
            println!(
                "thin terminal: {}",
                if client.thin() {
                    "on (no message text is kept on this device)"
                } else {
                    "off"
                }
            );
            Ok(())
        }
        Command::Create {
            name,
            members,
            renew_every,
            pairwise,
            history,
        } => {
            let mut client = open(&cli)?;
            let mut peers = Vec::new();
            for m in members {
                peers.push(client.resolve_account(m)?);
            }
            let period = (!*pairwise).then_some(*renew_every);
            let id = client
                .create_conversation_with(name.as_deref(), &peers, period, (*history).into())
                .await?;
            println!("created conversation {}", show::conv(&client, &id));
            println!("id: {}", id.to_hex());
            println!("members join with: grompi join {}", id.to_hex());
            Ok(())
        }
        Command::Join { conversation, name } => {
            let mut client = open(&cli)?;
            let bytes = hex::decode(conversation)
                .map_err(|_| Failure(format!("{conversation:?} is not a conversation id")))?;
            let id = ConversationId::parse("conversation", &bytes)
                .map_err(|e| Failure(e.to_string()))?;
            let p = client.sync(id).await?;
            if let Some(n) = name {
                client.name_conversation(id, n)?;
            }
            show::progress(&client, &p, None);
            let phase = client
                .conversation(&id)
                .map(|c| show::phase(c.phase()))
                .unwrap_or_default();
            println!("joined {}: {phase}", show::conv(&client, &id));
            Ok(())
        }
        Command::Send {
            conversation: c,
            text,
        } => {
            let mut client = open(&cli)?;
            let id = conversation(&mut client, c).await?;
            let text = text.join(" ");
            // An earlier send that was not acknowledged goes first, as the
            // same envelope. When it carried this very text, this command
            // is its retry: the text is not composed a second time.
            let resumed = resume(&mut client, id).await?;
            let retried = resumed.iter().find(|r| {
                r.send.text.as_deref() == Some(text.as_str())
                    && !matches!(r.outcome, ResumeOutcome::Refused(_))
            });
            let p = if let Some(r) = retried {
                println!("that send was this text: not sent a second time");
                let accepted = match r.outcome {
                    ResumeOutcome::AlreadyAccepted(i) => Some(i.0),
                    _ => None,
                };
                let p = client.sync(id).await?;
                if own_message_index(&client, &p).is_none()
                    && let Some(i) = accepted
                {
                    println!("sent as #{i}");
                    return Ok(());
                }
                p
            } else {
                match client.send(id, &text).await {
                    Ok(p) => p,
                    Err(e) => return Err(unacknowledged(&client, id, e)),
                }
            };
            for a in &p.alerts {
                println!("ALERT: {a}");
            }
            match own_message_index(&client, &p) {
                Some((index, seen)) => {
                    let status = client
                        .conversation(&id)
                        .map(|c| {
                            grompi_client::client::Status::from(
                                c.status(grompi_proto::Index(index)),
                            )
                        })
                        .unwrap_or(grompi_client::client::Status::Pending);
                    let seen = seen.map_or_else(|| "nothing".to_owned(), |s| format!("up to #{s}"));
                    println!("sent as #{index} [{status}] (having seen {seen})");
                }
                None => println!("sent [pending]: not yet attested by the quorum"),
            }
            Ok(())
        }
        Command::Watch {
            conversation: c,
            once,
            timeout,
        } => watch(&cli, c.as_deref(), *once, *timeout).await,
        Command::History {
            conversation: c,
            offline,
            json,
        } => {
            let mut client = open(&cli)?;
            let Some(c) = c else {
                if !offline {
                    client.sync_all().await?;
                }
                for (id, _) in client.conversations() {
                    let phase = client
                        .conversation(&id)
                        .map(|c| show::phase(c.phase()))
                        .unwrap_or_default();
                    let n = client.history(&id)?.len();
                    println!("{}  {n} entries  {phase}", show::conv(&client, &id));
                }
                return Ok(());
            };
            let id = if *offline {
                client.resolve_conversation(c)?
            } else {
                let id = conversation(&mut client, c).await?;
                client.sync(id).await?;
                id
            };
            // A thin terminal keeps no text: it reads the whole history
            // from the router, verified, every time. Otherwise what was
            // shared before this member joined is read (and verified) once.
            let records = if client.thin() {
                if *offline {
                    return Err(Failure(
                        "a thin terminal keeps no messages; run without --offline".into(),
                    ));
                }
                client.read_history(id).await?
            } else {
                if !*offline {
                    client.load_history_before_join(id).await?;
                }
                client.history(&id)?
            };
            if *json {
                print!("{}", show::json(&records)?);
            } else {
                println!("== {}", show::conv(&client, &id));
                // A history read from the router starts at the first index
                // it still stores (its retention setting): say what is gone.
                if let Some(first) = records
                    .iter()
                    .find(|r| r.status == grompi_client::client::Status::BeforeJoin)
                    .map(|r| r.index)
                    .filter(|i| *i > 0)
                {
                    println!("(#0 to #{}: no longer kept by the router)", first - 1);
                }
                for r in &records {
                    println!("{}", show::record(&client, r));
                }
                if let Some(c) = client.conversation(&id)
                    && c.phase() != &Phase::Active
                {
                    println!("({})", show::phase(c.phase()));
                }
            }
            Ok(())
        }
        Command::Members {
            conversation: c,
            action,
        } => {
            let mut client = open(&cli)?;
            let id = conversation(&mut client, c).await?;
            let change = match action {
                None | Some(MembersAction::List) => {
                    client.sync(id).await?;
                    let s = client
                        .summary(&id)
                        .ok_or_else(|| ApiError::UnknownConversation(c.clone()))?;
                    show::members(&client, &s);
                    print_fork_bound(&client);
                    return Ok(());
                }
                Some(MembersAction::Add { contact, admin }) => Change::Add {
                    account: client.resolve_account(contact)?,
                    role: if *admin {
                        SlotRole::Admin
                    } else {
                        SlotRole::Member
                    },
                },
                Some(MembersAction::Remove { contact }) => Change::Remove {
                    account: client.resolve_account(contact)?,
                },
                Some(MembersAction::Leave) => Change::Leave,
                Some(MembersAction::History { policy }) => {
                    let p = client.set_history(id, (*policy).into()).await?;
                    show::progress(&client, &p, Some(&id));
                    let s = client
                        .summary(&id)
                        .ok_or_else(|| ApiError::UnknownConversation(c.clone()))?;
                    show::members(&client, &s);
                    return Ok(());
                }
            };
            let p = client.update_members(id, change).await?;
            show::progress(&client, &p, Some(&id));
            let s = client
                .summary(&id)
                .ok_or_else(|| ApiError::UnknownConversation(c.clone()))?;
            println!("{}: {}", show::conv(&client, &id), show::phase(&s.phase));
            if s.phase == Phase::Active {
                show::members(&client, &s);
            }
            print_fork_bound(&client);
            Ok(())
        }
        Command::Rekey { conversation: c } => {
            let mut client = open(&cli)?;
            let id = conversation(&mut client, c).await?;
            client.rekey(id).await?;
            let s = client
                .summary(&id)
                .ok_or_else(|| ApiError::UnknownConversation(c.clone()))?;
            println!("rekeyed: {}", show::keys(&s.keys));
            Ok(())
        }
        Command::Receipt { conversation: c } => {
            let mut client = open(&cli)?;
            let id = conversation(&mut client, c).await?;
            client.send_receipt(id).await?;
            let through = client
                .conversation(&id)
                .map_or(0, |c| c.next_expected().0.saturating_sub(1));
            println!("receipt sent: processed through about #{through}");
            Ok(())
        }
        Command::Status {
            conversation: c,
            offline,
        } => {
            let mut client = open(&cli)?;
            let ids = match c {
                Some(c) => vec![if *offline {
                    client.resolve_conversation(c)?
                } else {
                    conversation(&mut client, c).await?
                }],
                None => client
                    .conversations()
                    .into_iter()
                    .map(|(id, _)| id)
                    .collect(),
            };
            println!("account: {}", client.account().to_hex());
            print_fork_bound(&client);
            for id in ids {
                let outcomes = if *offline {
                    Vec::new()
                } else {
                    client.prove_heads(id).await?.0
                };
                if let Some(s) = client.summary(&id) {
                    show::summary(&client, &s);
                    if !offline {
                        show::proofs(&client, &outcomes);
                    }
                }
            }
            let alerts = client.alerts()?;
            // The order servers' audit logs, when the trusted descriptor
            // names them: a server restored from an old copy, or forking
            // its log, is refused by its peers' witnesses.
            let mut audit_alerts = Vec::new();
            if !offline {
                let text = client.descriptor_text()?;
                let findings = audit::audit_text(&text, None).await?;
                if findings
                    .iter()
                    .any(|f| !matches!(f, audit::Finding::NotListed { .. }))
                {
                    println!("audit logs:");
                    for f in &findings {
                        println!("  {f}");
                        if let audit::Finding::Alert { name, reason } = f {
                            audit_alerts.push(format!("order server {name}'s audit log: {reason}"));
                        }
                    }
                }
            }
            if alerts.is_empty() && audit_alerts.is_empty() {
                println!("alerts: none");
            } else {
                println!("alerts: {}", alerts.len() + audit_alerts.len());
                for a in alerts {
                    println!("  ALERT: {}", a.text);
                }
                for a in audit_alerts {
                    println!("  ALERT: {a}");
                }
            }
            Ok(())
        }
    }
}

/// Resubmits the sends of `id` that were saved but not acknowledged (the
/// same envelopes), saying so.
async fn resume(client: &mut Client, id: ConversationId) -> Result<Vec<Resumed>, Failure> {
    let pending = client.pending_sends(Some(id))?;
    for s in &pending {
        println!("resuming the unacknowledged send of {}", s.describe());
    }
    match client.resume_pending(id).await {
        Ok(resumed) => {
            print_resumed(&resumed);
            Ok(resumed)
        }
        Err(e) if !pending.is_empty() => Err(Failure(format!(
            "{e}\nthe earlier send is still not acknowledged; it stays saved and is \
             resubmitted (the same envelope, so it arrives once) by the next command"
        ))),
        Err(e) => Err(e.into()),
    }
}

fn print_resumed(resumed: &[Resumed]) {
    for r in resumed {
        println!("  {}: {}", r.send.describe(), r.outcome);
    }
}

/// A failed send, with what happens to its envelope when it was saved.
fn unacknowledged(client: &Client, id: ConversationId, e: ApiError) -> Failure {
    match client.pending_sends(Some(id)) {
        Ok(p) if !p.is_empty() => Failure(format!(
            "{e}\nthe message is saved but not acknowledged (the router may hold it); run \
             the same `grompi send` again, or any command that syncs, to resubmit it: it \
             arrives once"
        )),
        _ => e.into(),
    }
}

async fn contacts(cli: &Cli, action: Option<&ContactsAction>) -> Outcome {
    let mut client = open(cli)?;
    match action {
        None | Some(ContactsAction::List) => {
            let all = client.contacts()?;
            if all.is_empty() {
                println!("no contacts; add one with: grompi contacts add NAME ACCOUNT");
            }
            for c in all {
                let state = if c.verified { "verified" } else { "unverified" };
                println!("{}  {}  {state}", c.name, c.account);
            }
            Ok(())
        }
        Some(ContactsAction::Add {
            name,
            account,
            replace,
        }) => {
            let bytes = hex::decode(account).map_err(|_| {
                Failure(format!("{account:?} is not an account id (64 hex digits)"))
            })?;
            let id = grompi_proto::AccountId::parse("account", &bytes)
                .map_err(|e| Failure(e.to_string()))?;
            match client.add_contact(name, id, *replace).await? {
                Binding::New(c) => {
                    println!(
                        "added {} ({}), trusted on first use, not verified",
                        c.name, c.account
                    );
                    println!("compare safety numbers with: grompi verify {}", c.name);
                    Ok(())
                }
                Binding::Unchanged(c) => {
                    println!("{} is already bound to {}", c.name, c.account);
                    Ok(())
                }
                Binding::Replaced {
                    contact,
                    old_account,
                    was_verified,
                } => {
                    warn_key_change(&contact.name, &old_account, &contact.account, was_verified);
                    println!(
                        "{} is now bound to {} (not verified)",
                        contact.name, contact.account
                    );
                    Ok(())
                }
                Binding::Conflict { existing } => {
                    warn_key_change(
                        &existing.name,
                        &existing.account,
                        &id.to_hex(),
                        existing.verified,
                    );
                    Err(ApiError::ContactConflict {
                        name: existing.name,
                        old: existing.account,
                    }
                    .into())
                }
            }
        }
    }
}

async fn watch(cli: &Cli, only: Option<&str>, once: bool, timeout: Option<u64>) -> Outcome {
    let mut client = open(cli)?;
    let only = match only {
        Some(c) => Some(conversation(&mut client, c).await?),
        None => None,
    };
    // Subscribe first, then catch up: nothing falls between the two.
    let mut stream = if once {
        None
    } else {
        Some(client.subscribe().await?)
    };
    let p = match only {
        Some(id) => client.sync(id).await?,
        None => client.sync_all().await?,
    };
    for r in &p.resumed {
        println!(
            "resumed the unacknowledged send of {}: {}",
            r.send.describe(),
            r.outcome
        );
    }
    show::progress(&client, &p, only.as_ref());
    let Some(stream) = stream.as_mut() else {
        return Ok(());
    };
    eprintln!("watching for new messages (Ctrl-C to stop)");
    let deadline = timeout.map(|t| tokio::time::Instant::now() + Duration::from_secs(t));
    loop {
        let message = tokio::select! {
            m = before_deadline(deadline, stream.message()) => m,
            _ = tokio::signal::ctrl_c() => return Ok(()),
        };
        match message {
            None => return Ok(()),
            Some(Ok(Some(d))) => {
                let p = client.receive(d)?;
                show::progress(&client, &p, only.as_ref());
                for id in client.gaps() {
                    let p = client.sync(id).await?;
                    show::progress(&client, &p, only.as_ref());
                }
            }
            Some(Ok(None)) => return Err(Failure("the router closed the live stream".into())),
            Some(Err(s)) => return Err(ApiError::router("Subscribe", s).into()),
        }
    }
}

/// `next`'s output, or `None` once `deadline` has passed. The deadline is
/// checked first, so an item already waiting never beats an expired
/// deadline: a stream that keeps sending still ends at its timeout.
async fn before_deadline<F: std::future::Future>(
    deadline: Option<tokio::time::Instant>,
    next: F,
) -> Option<F::Output> {
    let Some(deadline) = deadline else {
        return Some(next.await);
    };
    // The clock itself, not only the timer: a task that never waits never
    // lets the runtime fire its timers.
    if tokio::time::Instant::now() >= deadline {
        return None;
    }
    tokio::select! {
        biased;
        () = tokio::time::sleep_until(deadline) => None,
        m = next => Some(m),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure(message)) => {
            eprintln!("error: {message}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

    use super::before_deadline;
    use std::time::Duration;
    use tokio::time::Instant;

    /// A stream that always has the next item ready (a router that keeps
    /// sending) still ends at the deadline.
    #[tokio::test]
    async fn the_deadline_beats_a_stream_that_never_pauses() {
        let start = Instant::now();
        let deadline = Some(start + Duration::from_millis(100));
        let mut received = 0u64;
        while before_deadline(deadline, std::future::ready(()))
            .await
            .is_some()
        {
            received += 1;
            assert!(
                start.elapsed() < Duration::from_secs(5),
                "still receiving {received} items after the deadline"
            );
        }
        assert!(start.elapsed() >= Duration::from_millis(100));
        assert!(received > 0, "items before the deadline are received");
        // An expired deadline wins over an item already waiting.
        assert!(
            before_deadline(Some(Instant::now()), std::future::ready(()))
                .await
                .is_none()
        );
        assert_eq!(before_deadline(None, std::future::ready(7)).await, Some(7));
    }
}
