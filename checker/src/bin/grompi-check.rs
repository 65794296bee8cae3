//! Runs the model checker with bounds from the command line.

use clap::Parser;
use grompi_checker::cores::Weaken;
use grompi_checker::{Bounds, RouterMode};

/// Bounded model checking of the integrity properties over the real cores.
#[derive(Parser, Debug)]
#[command(name = "grompi-check")]
struct Args {
    /// Order servers (N).
    #[arg(long, default_value_t = 2)]
    servers: usize,
    /// Quorum (t).
    #[arg(long, default_value_t = 2)]
    quorum: usize,
    /// Colluding (equivocating) order servers, by position.
    #[arg(long, value_delimiter = ',')]
    equivocating: Vec<u32>,
    /// Members at the Setup (member 0 is the Admin).
    #[arg(long, default_value_t = 2)]
    members: usize,
    /// One more account the Admin may add.
    #[arg(long)]
    joiner: bool,
    /// The Admin may remove the last initial member.
    #[arg(long)]
    removal: bool,
    /// Honest Messages in total.
    #[arg(long, default_value_t = 1)]
    messages: usize,
    /// Honest Receipts in total.
    #[arg(long, default_value_t = 0)]
    receipts: usize,
    /// The router's puppet account composes.
    #[arg(long)]
    puppet: bool,
    /// The router offers next slot sets with Admin-role padding.
    #[arg(long)]
    admin_padding: bool,
    /// Head-proof rounds.
    #[arg(long)]
    head_proofs: bool,
    /// Member 0 (the Admin) is compromised.
    #[arg(long)]
    compromised_admin: bool,
    /// Who forwards: `adversary` (its own moves only), `driver` (only the
    /// shipping router driver) or `both`.
    #[arg(long, default_value_t = RouterMode::Adversary)]
    router: RouterMode,
    /// Maximum actions on a path.
    #[arg(long, default_value_t = 6)]
    depth: usize,
    /// Most states to visit.
    #[arg(long, default_value_t = 2_000_000)]
    max_states: usize,
    /// Seed of the keys.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Test-only: undo the joiner's binding to the tagged head.
    #[arg(long)]
    weaken_join_binding: bool,
    /// Test-only: undo the Admin-slot check.
    #[arg(long)]
    weaken_admin_slots: bool,
    /// Test-only: undo the head proofs' nonce check.
    #[arg(long)]
    weaken_head_proof_nonce: bool,
}

fn main() -> std::process::ExitCode {
    let a = Args::parse();
    let bounds = Bounds {
        servers: a.servers,
        quorum: a.quorum,
        equivocating: a.equivocating,
        members: a.members,
        joiner: a.joiner,
        removal: a.removal,
        messages: a.messages,
        receipts: a.receipts,
        puppet: a.puppet,
        admin_padding: a.admin_padding,
        head_proofs: a.head_proofs,
        compromised_admin: a.compromised_admin,
        router: a.router,
        depth: a.depth,
        weaken: Weaken {
            join_binding: a.weaken_join_binding,
            admin_slots: a.weaken_admin_slots,
            head_proof_nonce: a.weaken_head_proof_nonce,
        },
    };
    println!("{bounds:?}");
    let progress = |l: grompi_checker::explore::Level| {
        eprintln!(
            "depth {}: {} new states, {} in all, {:.1?}",
            l.depth, l.new_states, l.states, l.elapsed
        );
    };
    match grompi_checker::explore::explore_with(&bounds, a.seed, a.max_states, progress) {
        Ok(report) => {
            print!("{report}");
            if report.violation.is_some() {
                std::process::ExitCode::from(1)
            } else {
                std::process::ExitCode::SUCCESS
            }
        }
        Err(e) => {
            eprintln!("model error: {e}");
            std::process::ExitCode::from(2)
        }
    }
}
