//! Command-line entry point (not yet available).
#![forbid(unsafe_code)]

fn main() -> std::process::ExitCode {
    eprintln!("grompi-sim: not yet available in this version of the project");
    std::process::ExitCode::FAILURE
}
