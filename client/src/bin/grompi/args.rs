//! The command line.

use clap::{Parser, Subcommand, ValueEnum};
use std::path::PathBuf;

/// grompi: group messaging where no single server can rewrite a
/// conversation.
///
/// Your account lives in a home directory (--home, or GROMPI_HOME, or
/// ~/.grompi), encrypted under a passphrase (GROMPI_PASSPHRASE) or a key
/// file (--key-file or GROMPI_KEY_FILE). Only one grompi command may use a
/// home directory at a time.
///
/// Conversations are named by a local name or by their id (hex, or a
/// unique prefix); people by a contact name or their account id (hex).
#[derive(Debug, Parser)]
#[command(name = "grompi", version, propagate_version = true)]
pub struct Cli {
    /// The account's home directory.
    #[arg(long, global = true, env = "GROMPI_HOME")]
    pub home: Option<PathBuf>,
    /// A file holding the 32-byte store key (hex) instead of a passphrase.
    /// With `init`, the file is created if it does not exist.
    #[arg(long, global = true, env = "GROMPI_KEY_FILE")]
    pub key_file: Option<PathBuf>,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands, one per thing a user does.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create a new account in the home directory for the network described
    /// by a descriptor file (from the network's operators). Prints your
    /// account id, which you give to the people you talk to.
    Init {
        /// The network descriptor (TOML): router, order servers, quorum.
        #[arg(long)]
        network: PathBuf,
        /// A thin terminal: keep keys and state only, never message text;
        /// `history` then fetches and verifies the conversation from the
        /// router each time (see also `grompi thin`).
        #[arg(long)]
        thin: bool,
    },
    /// Check the order servers' audit logs. Every server's checkpoint must
    /// verify under its log key and carry the other servers' witnesses'
    /// cosignatures: a server restored from an old copy, or forking its
    /// log, is refused by its witnesses, and this reports it. With a
    /// CONVERSATION, also check that every index this account accepted in
    /// it is in each server's log: its entry is recomputed from this
    /// account's own transcript, found (where the server said it logged it,
    /// or by reading the log) and proved included in the cosigned
    /// checkpoint; an index a server attested but did not log is an alert,
    /// the newest indices wait for the next checkpoint. Exit status 1 on
    /// any alert. With --network FILE and no CONVERSATION it needs no
    /// account; otherwise it uses the account's trusted descriptor.
    Audit {
        /// The conversation to audit (name, or id in hex).
        conversation: Option<String>,
        /// A network descriptor (TOML) to check instead of the account's,
        /// with the order servers' `log_key`, `log_url` and `witness_key`.
        #[arg(long)]
        network: Option<PathBuf>,
        /// Cosignatures each checkpoint needs from the other servers'
        /// witnesses (default: all of them).
        #[arg(long)]
        min_cosignatures: Option<usize>,
    },
    /// Turn the thin-terminal mode on or off: with it on, no message text
    /// is written to this account's store (text already there is removed),
    /// and `history` fetches and verifies the conversation from the router
    /// each time it is shown. What the history keys do not reach cannot
    /// be shown again.
    Thin {
        /// on or off.
        state: Toggle,
    },
    /// The network this account trusts. Its descriptor (pinned order server
    /// keys, quorum, router) is kept inside the encrypted store since
    /// `init`; a changed network.toml is refused until you accept the new
    /// file deliberately here.
    Network {
        /// What to do.
        #[command(subcommand)]
        action: NetworkAction,
    },
    /// Register the account with the router and upload its first prekeys
    /// and order keys.
    Register,
    /// Print your account id.
    Id,
    /// List your contacts, or bind a name to an account id (trust on first
    /// use; a name already bound to another identity is refused unless you
    /// pass --replace, with a loud warning).
    Contacts {
        /// What to do (default: list).
        #[command(subcommand)]
        action: Option<ContactsAction>,
    },
    /// Show the safety number you share with a contact. Compare it with
    /// theirs in person or on a call: if the digits match, nobody sits
    /// between you. Then run again with --confirm to mark them verified.
    Verify {
        /// The contact (name or account id).
        contact: String,
        /// Mark the contact verified (only after comparing the digits).
        #[arg(long)]
        confirm: bool,
    },
    /// Create a conversation with some of your contacts (you are its admin).
    ///
    /// Its messages use a group key from two sources: a secret you send
    /// each member in its pairwise channel, and shares from the order
    /// servers that renew the key every `--renew-every` messages (and at
    /// every membership change and `rekey`). `--pairwise` instead encrypts
    /// every message's key to each member separately: more work per
    /// message, and each message is tied to its sender's own channel.
    Create {
        /// A local name for the conversation.
        #[arg(long)]
        name: Option<String>,
        /// Renew the group key every this many messages.
        #[arg(long, default_value_t = grompi_client::client::DEFAULT_KEY_PERIOD,
              value_parser = clap::value_parser!(u64).range(1..))]
        renew_every: u64,
        /// No group key: every message's key goes to each member in its
        /// pairwise channel (the high-assurance mode).
        #[arg(long, conflicts_with = "renew_every")]
        pairwise: bool,
        /// Who reads what was sent before they joined: `joined` (nobody;
        /// the default) or `shared` (members added later read the history,
        /// verified against the attested chain; needs the group key, so
        /// not with --pairwise). Admins can change it later with
        /// `grompi members CONV history POLICY`.
        #[arg(long, value_enum, default_value_t = HistoryPolicy::Joined)]
        history: HistoryPolicy,
        /// The other members (contact names or account ids).
        #[arg(required = true)]
        members: Vec<String>,
    },
    /// Fetch a conversation you were invited to, by its id, and give it a
    /// local name. (`watch` and `history` also pick up conversations you
    /// were added to, unnamed.)
    Join {
        /// The conversation id (64 hex digits).
        conversation: String,
        /// A local name for it, used instead of the id in later commands.
        #[arg(long)]
        name: Option<String>,
    },
    /// Send a message.
    Send {
        /// The conversation: its local name, id, or a unique id prefix.
        conversation: String,
        /// The text (several words are joined with spaces).
        #[arg(required = true)]
        text: Vec<String>,
    },
    /// Follow your conversations live: each message with its attestation
    /// status (pending, quorum, fully attested) and the sender's causal
    /// context ("sent having seen up to #12"), late attestations, and
    /// alerts. Stop with Ctrl-C.
    Watch {
        /// Only this conversation.
        conversation: Option<String>,
        /// Catch up, print what is new, and exit.
        #[arg(long)]
        once: bool,
        /// Exit after this many seconds.
        #[arg(long)]
        timeout: Option<u64>,
    },
    /// Without a conversation: list your conversations. With one: fetch
    /// what is new and print its transcript.
    History {
        /// The conversation: its local name, id, or a unique id prefix.
        conversation: Option<String>,
        /// Do not contact the router; print what is stored locally.
        #[arg(long)]
        offline: bool,
        /// One JSON object per line (index, kind, sender, text, status,
        /// last_seen), for scripts.
        #[arg(long)]
        json: bool,
    },
    /// Show or change who is in a conversation.
    Members {
        /// The conversation: its local name, id, or a unique id prefix.
        conversation: String,
        /// What to do (default: list).
        #[command(subcommand)]
        action: Option<MembersAction>,
    },
    /// Start the next group key of a conversation (admins only): a fresh
    /// secret for every current member, so that what an earlier key or a
    /// removed member knew opens nothing from here on.
    Rekey {
        /// The conversation: its local name, id, or a unique id prefix.
        conversation: String,
    },
    /// Tell the other members how far you have processed the conversation
    /// (they compare it with their own transcript).
    Receipt {
        /// The conversation: its local name, id, or a unique id prefix.
        conversation: String,
    },
    /// Alerts, receipts (who has processed what), attestation counts, and
    /// a fresh head proof from every order server (detects withholding and
    /// forks).
    Status {
        /// Only this conversation.
        conversation: Option<String>,
        /// Do not contact the router.
        #[arg(long)]
        offline: bool,
    },
}

/// Network actions.
#[derive(Debug, Subcommand)]
pub enum NetworkAction {
    /// Print the network this account trusts (from the encrypted store)
    /// and what its quorum tolerates.
    Show,
    /// Make a new descriptor the network this account trusts, replacing
    /// the one kept since `init`. Only do this when the network's operators
    /// changed the network and you checked the new file with them: the
    /// descriptor decides which order servers your client believes.
    Accept {
        /// The new network descriptor (TOML).
        file: PathBuf,
    },
}

/// Contact actions.
#[derive(Debug, Subcommand)]
pub enum ContactsAction {
    /// List contacts with their verification state.
    List,
    /// Bind a name to an account id (fetches and pins its identity keys).
    Add {
        /// The local name to bind (shown instead of the account id).
        name: String,
        /// The account id (64 hex digits).
        account: String,
        /// Replace an existing binding of this name to another identity.
        #[arg(long)]
        replace: bool,
    },
}

/// Member actions.
#[derive(Debug, Subcommand)]
pub enum MembersAction {
    /// List the members and their roles.
    List,
    /// Add a contact (admins only).
    Add {
        /// The contact: its local name, or its account id (or a unique prefix).
        contact: String,
        /// Make them an admin.
        #[arg(long)]
        admin: bool,
    },
    /// Remove a member (admins only). They cannot read anything sent after.
    Remove {
        /// The member: a contact name, or an account id (or a unique prefix).
        contact: String,
    },
    /// Leave the conversation (admins; a member asks an admin to remove it,
    /// since only admins may send Updates).
    Leave,
    /// Change who reads the history from now on (admins only): `shared`
    /// lets members added later read what is sent from now on (and what
    /// was shared before, back to the last time it was `joined`);
    /// `joined` closes everything sent so far to members added later.
    History {
        /// joined or shared.
        policy: HistoryPolicy,
    },
}

/// A conversation's history policy on the command line.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum HistoryPolicy {
    /// Members added later read nothing from before they joined.
    Joined,
    /// Members added later read the shared history, verified.
    Shared,
}

impl From<HistoryPolicy> for grompi_client_core::content::Visibility {
    fn from(p: HistoryPolicy) -> Self {
        match p {
            HistoryPolicy::Joined => Self::Joined,
            HistoryPolicy::Shared => Self::Shared,
        }
    }
}

/// A switch on the command line.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Toggle {
    /// Turn it on.
    On,
    /// Turn it off.
    Off,
}
