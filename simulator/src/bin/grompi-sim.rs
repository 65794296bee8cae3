//! Command-line entry point of the simulator.
#![forbid(unsafe_code)]

fn main() -> std::process::ExitCode {
    let command = std::env::args().nth(1).unwrap_or_else(|| "demo".to_owned());
    eprintln!(
        "grompi-sim {command}: not yet available in this version of the project.\n\
         The wire contract (crate grompi-proto) is in place; the order server, router,\n\
         client and simulator are being built. Run the test suite with\n\
         `cargo test --workspace`."
    );
    std::process::ExitCode::from(2)
}
