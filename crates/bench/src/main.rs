//! recovery-bench: a load tool for recovery-service. See `--help` and README.md beside
//! Cargo.toml.

mod argon;
mod cli;
mod client;
mod cpu;
mod ids;
mod load;
mod mail;
mod outcome;
mod overload;
mod pgbench;
mod phases;
mod prepare;
mod report;
mod run;
mod spawn;
mod stats;
mod ui;

use std::process::ExitCode;

use clap::Parser as _;

#[tokio::main]
async fn main() -> ExitCode {
    let args = cli::Args::parse();
    // Ctrl-C drops the run, and with it the spawned service (kill_on_drop) and temp files.
    let result = tokio::select! {
        result = run::run(&args) => result,
        _ = tokio::signal::ctrl_c() => Err(anyhow::anyhow!("interrupted")),
    };
    match result {
        Ok(report) => {
            if args.json {
                match serde_json::to_string_pretty(&report) {
                    Ok(json) => println!("{json}"),
                    Err(err) => {
                        eprintln!("recovery-bench: {err}");
                        return ExitCode::FAILURE;
                    }
                }
            } else {
                print!("\n{}", report.text());
            }
            ExitCode::SUCCESS
        }
        Err(err) => {
            eprintln!("recovery-bench: {err:#}");
            ExitCode::FAILURE
        }
    }
}
