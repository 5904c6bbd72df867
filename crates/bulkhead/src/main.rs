//! The `bulkhead` command: argument parsing, file IO and printing. Logic lives in the
//! library crates.

mod files;
mod flows_cmd;
mod pcap;
mod policy_cmd;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Exit code for input the user must fix (invalid policy, inventory, arguments).
pub const EXIT_INVALID: u8 = 2;

#[derive(Parser, Debug)]
#[command(
    name = "bulkhead",
    version,
    about = "Label-based microsegmentation: policy as code, verdicts, enforcement"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Check, format, explain and analyze policy-as-code.
    #[command(subcommand)]
    Policy(policy_cmd::PolicyCommand),
    /// Decode, import, collect and query flows.
    #[command(subcommand)]
    Flows(flows_cmd::FlowsCommand),
    /// Check inventory files and show what label rules assign.
    #[command(subcommand)]
    Inventory(policy_cmd::InventoryCommand),
}

/// An error that has already been reported to the user, with the exit code to use.
#[derive(Debug)]
pub struct Reported(pub u8);

impl std::fmt::Display for Reported {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "exit {}", self.0)
    }
}

impl std::error::Error for Reported {}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Policy(c) => policy_cmd::run_policy(c),
        Command::Inventory(c) => policy_cmd::run_inventory(c),
        Command::Flows(c) => flows_cmd::run(c),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => match e.downcast_ref::<Reported>() {
            Some(Reported(code)) => ExitCode::from(*code),
            None => {
                eprintln!("error: {e:#}");
                ExitCode::from(1)
            }
        },
    }
}
