//! Whether BeginRecovery's timing tells an enrolled address from an unknown one: 2,000 calls
//! of each kind, interleaved in a fixed shuffle, each followed at once by a GetRecoveryStatus
//! (so that work a call leaves behind, such as mail or events woken by its commit, shows in
//! the call after it), on SQLite and, when `RECOVERY_TEST_DATABASE_URL` is set, on PostgreSQL.
//! Prints Welch's t for the call and for the call after it; |t| < 4.5 is the goal.
//!
//! Then the same for BeginContactRecovery over three kinds of address: unknown, enrolled
//! without recovery contacts, and enrolled with two active contacts (2,100 calls each, three
//! per address: the contract's limit per account per day), each pair compared.
//!
//! ```text
//! cargo build --release -p recovery-service && cargo bench -p recovery-e2e --bench begin_timing
//! ```

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // a benchmark fails loudly

use std::time::Instant;

use recovery_e2e::{Options, PgDatabase, Server, smtp::SmtpSink};
use recovery_proto::v1::{
    self as api, ClientContext, recovery_service_client::RecoveryServiceClient,
};

const KEY: &str = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";
const PER_KIND: usize = 2000;
const ACCOUNTS: usize = 200;

/// Mean, variance and count.
fn stats(v: &[f64]) -> (f64, f64, f64) {
    let n = v.len() as f64;
    let mean = v.iter().sum::<f64>() / n;
    let var = v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1.0);
    (mean, var, n)
}

fn welch(known: &[f64], unknown: &[f64]) -> String {
    let (mk, vk, nk) = stats(known);
    let (mu, vu, nu) = stats(unknown);
    let t = (mk - mu) / (vk / nk + vu / nu).sqrt();
    format!(
        "known {mk:.3} ms (sd {:.3}), unknown {mu:.3} ms (sd {:.3}), Welch's t = {t:.2}",
        vk.sqrt(),
        vu.sqrt()
    )
}

async fn run(label: &str, database_url: Option<String>) {
    let sink = SmtpSink::start().await.unwrap();
    let mut options = Options::default()
        .env("RECOVERY_SECRET_KEY", KEY)
        .env("RECOVERY_SMTP_URL", sink.url())
        .env("RECOVERY_STARTS_PER_EMAIL_PER_HOUR", "1000000")
        .env("RECOVERY_STARTS_PER_IP_PER_HOUR", "1000000")
        .env("RECOVERY_STARTS_PER_IP_PER_MINUTE", "1000000")
        .env("RUST_LOG", "warn,recovery_service::server=info");
    if let Some(url) = database_url {
        options = options.env("RECOVERY_DATABASE_URL", url);
    }
    let server = Server::start_with(options).unwrap();
    server.wait_serving("").await.unwrap();
    let mut c = RecoveryServiceClient::new(server.channel().await.unwrap());
    for i in 0..ACCOUNTS {
        c.create_recovery_code(api::CreateRecoveryCodeRequest {
            account_id: format!("acct-{i}"),
            email: format!("rec{i}@example.com"),
        })
        .await
        .unwrap();
    }
    let mut order: Vec<bool> = (0..2 * PER_KIND).map(|i| i % 2 == 0).collect();
    // A fixed shuffle (xorshift) so neither kind always follows the other.
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    for i in (1..order.len()).rev() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        order.swap(i, (x % (i as u64 + 1)) as usize);
    }
    let begin = |email: String, i: usize| api::BeginRecoveryRequest {
        email,
        client: Some(ClientContext {
            ip_address: format!("198.51.{}.{}", (i / 250) % 250, i % 250 + 1),
            user_agent: "bench".into(),
        }),
    };
    for i in 0..200 {
        // Warm-up, both kinds.
        c.begin_recovery(begin(format!("rec{}@example.com", i % ACCOUNTS), i))
            .await
            .unwrap();
        c.begin_recovery(begin(format!("warm{i}@example.com"), i))
            .await
            .unwrap();
    }
    let (mut known, mut unknown) = (Vec::new(), Vec::new());
    let (mut after_known, mut after_unknown) = (Vec::new(), Vec::new());
    for (i, is_known) in order.into_iter().enumerate() {
        let email = if is_known {
            format!("rec{}@example.com", i % ACCOUNTS)
        } else {
            format!("ghost{}@example.com", i % ACCOUNTS)
        };
        let t = Instant::now();
        c.begin_recovery(begin(email, i)).await.unwrap();
        let call = t.elapsed().as_secs_f64() * 1e3;
        let t = Instant::now();
        c.get_recovery_status(api::GetRecoveryStatusRequest {
            account_id: "acct-0".into(),
        })
        .await
        .unwrap();
        let after = t.elapsed().as_secs_f64() * 1e3;
        if is_known {
            known.push(call);
            after_known.push(after);
        } else {
            unknown.push(call);
            after_unknown.push(after);
        }
    }
    println!(
        "{label:<9} BeginRecovery, {PER_KIND} calls each: {}",
        welch(&known, &unknown)
    );
    println!(
        "{label:<9} the call right after:             {}",
        welch(&after_known, &after_unknown)
    );
    drop(server);
}

/// Addresses per kind in the contact-recovery run; each is begun 3 times.
const CONTACT_ADDRESSES: usize = 700;

async fn run_contacts(label: &str, database_url: Option<String>) {
    let sink = SmtpSink::start().await.unwrap();
    let mut options = Options::default()
        .env("RECOVERY_SECRET_KEY", KEY)
        .env("RECOVERY_SMTP_URL", sink.url())
        .env("RECOVERY_STARTS_PER_EMAIL_PER_HOUR", "1000000")
        .env("RECOVERY_STARTS_PER_IP_PER_HOUR", "1000000")
        .env("RECOVERY_STARTS_PER_IP_PER_MINUTE", "1000000")
        .env("RECOVERY_CREATES_PER_ACCOUNT_PER_HOUR", "1000000")
        .env("RECOVERY_CONTACT_ACTIVATION", "1s")
        .env("RECOVERY_HASH_ADMISSION_WAIT", "10s")
        .env("RUST_LOG", "warn,recovery_service::server=info");
    if let Some(url) = database_url {
        options = options.env("RECOVERY_DATABASE_URL", url);
    }
    let server = Server::start_with(options).unwrap();
    server.wait_serving("").await.unwrap();
    let mut c = RecoveryServiceClient::new(server.channel().await.unwrap());
    for i in 0..CONTACT_ADDRESSES {
        for kind in ["alone", "helped"] {
            c.create_recovery_code(api::CreateRecoveryCodeRequest {
                account_id: format!("{kind}-{i}"),
                email: format!("{kind}{i}@example.com"),
            })
            .await
            .unwrap();
        }
        for k in ["a", "b"] {
            let contact = format!("k{i}{k}");
            c.invite_recovery_contact(api::InviteRecoveryContactRequest {
                account_id: format!("helped-{i}"),
                contact_account_id: contact.clone(),
                contact_email: format!("{contact}@example.net"),
            })
            .await
            .unwrap();
            c.accept_recovery_contact(api::AcceptRecoveryContactRequest {
                account_id: format!("helped-{i}"),
                contact_account_id: contact,
            })
            .await
            .unwrap();
        }
    }
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    // Kind 0: unknown; 1: enrolled without contacts; 2: with two active contacts.
    let mut order: Vec<(usize, usize)> = (0..3 * CONTACT_ADDRESSES)
        .flat_map(|i| [(i % 3, i / 3); 3])
        .collect();
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    for i in (1..order.len()).rev() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        order.swap(i, (x % (i as u64 + 1)) as usize);
    }
    let begin = |email: String, i: usize| api::BeginContactRecoveryRequest {
        email,
        client: Some(ClientContext {
            ip_address: format!("198.51.{}.{}", (i / 250) % 250, i % 250 + 1),
            user_agent: "bench".into(),
        }),
    };
    for i in 0..100 {
        // Warm-up on addresses of no kind measured.
        c.begin_contact_recovery(begin(format!("warm{i}@example.com"), i))
            .await
            .unwrap();
    }
    let mut calls: [Vec<f64>; 3] = Default::default();
    let mut after: [Vec<f64>; 3] = Default::default();
    for (n, (kind, i)) in order.into_iter().enumerate() {
        let email = match kind {
            0 => format!("ghost{i}@example.com"),
            1 => format!("alone{i}@example.com"),
            _ => format!("helped{i}@example.com"),
        };
        let t = Instant::now();
        c.begin_contact_recovery(begin(email, n)).await.unwrap();
        calls[kind].push(t.elapsed().as_secs_f64() * 1e3);
        let t = Instant::now();
        c.get_recovery_status(api::GetRecoveryStatusRequest {
            account_id: "alone-0".into(),
        })
        .await
        .unwrap();
        after[kind].push(t.elapsed().as_secs_f64() * 1e3);
    }
    let n = calls[0].len();
    for (a, b, what) in [
        (1, 0, "enrolled, no contacts vs unknown"),
        (2, 0, "with contacts vs unknown       "),
        (2, 1, "with contacts vs no contacts   "),
    ] {
        println!(
            "{label:<9} BeginContactRecovery, {n} calls each, {what}: {}",
            welch(&calls[a], &calls[b])
        );
        println!(
            "{label:<9}   the call right after:                                    {}",
            welch(&after[a], &after[b])
        );
    }
    drop(server);
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let only_contacts = std::env::args().any(|a| a == "contacts");
    if !only_contacts {
        run("sqlite", None).await;
    }
    run_contacts("sqlite", None).await;
    if std::env::var("RECOVERY_TEST_DATABASE_URL").is_ok() {
        let db = PgDatabase::create().await;
        if !only_contacts {
            run("postgres", Some(db.url.clone())).await;
        }
        let db2 = PgDatabase::create().await;
        run_contacts("postgres", Some(db2.url.clone())).await;
    } else {
        println!("postgres: skipped (set RECOVERY_TEST_DATABASE_URL)");
    }
}
