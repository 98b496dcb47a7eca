//! Plays the device against a running recovery-service: makes a code, enrols it with a keyset
//! sealed under OPAQUE's export key, then recovers (BeginRecovery, VerifyEmail with the code
//! from the mail, StartZeroKnowledgeRecovery, FinishZeroKnowledgeRecovery) and prints the
//! keyset it got back.
//!
//! ```sh
//! target/release/recovery-service &                 # SQLite, mail as .eml files under ./mail
//! cargo run -p recovery-device --example zk_client -- --email zoe@example.com --mail-dir ./mail
//! ```
//!
//! Without `--mail-dir` it asks for the 6-digit code on standard input.

#![allow(clippy::print_stdout)]

use std::{
    io::BufRead as _,
    path::{Path, PathBuf},
    time::{Duration, Instant, SystemTime},
};

use anyhow::{Context as _, bail};
use clap::Parser;
use recovery_device as device;
use recovery_proto::v1::{self as api, recovery_service_client::RecoveryServiceClient};

#[derive(Debug, Parser)]
#[command(about = "Zero-knowledge recovery, played end to end against a running service")]
struct Args {
    /// The service's address.
    #[arg(long, default_value = "http://127.0.0.1:50051")]
    addr: String,
    /// The account to enrol and recover.
    #[arg(long, default_value = "acct-zk-demo")]
    account: String,
    /// The recovery address.
    #[arg(long)]
    email: String,
    /// The keyset to seal (what a real device keeps: the account's vault key).
    #[arg(long, default_value = "the vault key of acct-zk-demo")]
    keyset: String,
    /// Read the verification code from the `.eml` files the service writes here
    /// (`RECOVERY_MAIL_DIR`); without it, type the code.
    #[arg(long)]
    mail_dir: Option<PathBuf>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let mut c = RecoveryServiceClient::connect(args.addr.clone())
        .await
        .with_context(|| format!("cannot reach {}", args.addr))?;

    let code = device::make_code();
    println!("1. the device made a recovery code (the service never sees it):\n   {code}");
    let enrolled = device::enrol(
        &mut c,
        &args.account,
        &args.email,
        code.as_bytes(),
        args.keyset.as_bytes(),
    )
    .await?;
    println!(
        "2. enrolled {} as {} with the keyset sealed under OPAQUE's export key ({} bytes sent)",
        args.account,
        enrolled.code_id,
        enrolled.sealed_keyset.len()
    );
    let status = c
        .get_recovery_status(api::GetRecoveryStatusRequest {
            account_id: args.account.clone(),
        })
        .await?
        .into_inner();
    println!(
        "   GetRecoveryStatus: enrolled={} mode={:?} email_hint={}",
        status.enrolled,
        status.mode(),
        status.email_hint
    );

    let asked = SystemTime::now();
    let flow = c
        .begin_recovery(api::BeginRecoveryRequest {
            email: args.email.clone(),
            client: None,
        })
        .await?
        .into_inner()
        .flow_id;
    println!("3. locked out: BeginRecovery started {flow}");
    let email_code = match &args.mail_dir {
        Some(dir) => newest_code(dir, &args.email, asked)?,
        None => {
            println!("   type the 6-digit code mailed to {}:", args.email);
            let mut line = String::new();
            std::io::stdin().lock().read_line(&mut line)?;
            line.trim().to_owned()
        }
    };
    c.verify_email(api::VerifyEmailRequest {
        flow_id: flow.clone(),
        email_code,
    })
    .await?;
    println!("4. VerifyEmail: the mailbox is proven");
    let keyset = device::recover(&mut c, &flow, code.as_bytes()).await?;
    println!(
        "5. recovered with the code; the keyset opened with the rebuilt export key:\n   {}",
        String::from_utf8_lossy(&keyset)
    );
    Ok(())
}

/// The 6-digit code of the newest message to `to` written after `after` (waits up to 30 s).
fn newest_code(dir: &Path, to: &str, after: SystemTime) -> anyhow::Result<String> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let mut newest: Option<(SystemTime, String)> = None;
        for entry in std::fs::read_dir(dir).with_context(|| format!("{}", dir.display()))? {
            let path = entry?.path();
            let modified = std::fs::metadata(&path)?.modified()?;
            if path.extension().is_none_or(|e| e != "eml") || modified < after {
                continue;
            }
            let text = std::fs::read_to_string(&path).unwrap_or_default();
            let addressed = text
                .lines()
                .any(|l| l.starts_with("To: ") && l.to_lowercase().contains(&to.to_lowercase()));
            let code = text
                .lines()
                .map(str::trim)
                .find(|l| l.len() == 6 && l.bytes().all(|b| b.is_ascii_digit()));
            if let (true, Some(code)) = (addressed, code)
                && newest.as_ref().is_none_or(|(at, _)| modified > *at)
            {
                newest = Some((modified, code.to_owned()));
            }
        }
        if let Some((_, code)) = newest {
            return Ok(code);
        }
        if Instant::now() > deadline {
            bail!(
                "no verification code mailed to {to} under {}",
                dir.display()
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}
