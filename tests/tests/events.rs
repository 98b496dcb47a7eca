//! Platform events through the real binary and a real `nats-server -js` (its own port and
//! store): every type published once with the CloudEvents envelope of the contract and no
//! secret in it; NATS down during recoveries, then the service killed, then both back: every
//! event arrives, each id once; three replicas on PostgreSQL publishing at once: no duplicate,
//! each account's events in the order of its changes.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests fail loudly

use std::{
    collections::{BTreeMap, BTreeSet},
    time::{Duration, Instant},
};

use async_nats::jetstream;
use recovery_e2e::{
    Mailbox, Options, PgDatabase, Server, enroll, nats::NatsServer, wrong_recovery_code,
};
use recovery_proto::v1::{self as api, FamilyRole, recovery_service_client::RecoveryServiceClient};
use sea_orm::{ConnectionTrait as _, Database, Statement};
use serde_json::Value;
use tonic::transport::Channel;

const KEY: &str = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";
const STREAM: &str = "IDENTITY_RECOVERY";

type Client = RecoveryServiceClient<Channel>;

/// One message of the stream.
#[derive(Debug, Clone)]
struct Published {
    subject: String,
    msg_id: String,
    event: Value,
    raw: String,
}

/// Every message of the stream, in stream order.
async fn stream_messages(nats: &NatsServer) -> Vec<Published> {
    let client = async_nats::connect(nats.url()).await.unwrap();
    let js = jetstream::new(client);
    let mut stream = js.get_stream(STREAM).await.unwrap();
    let last = stream.info().await.unwrap().state.last_sequence;
    let mut out = Vec::new();
    for seq in 1..=last {
        let Ok(message) = stream.get_raw_message(seq).await else {
            continue;
        };
        let raw = String::from_utf8(message.payload.to_vec()).unwrap();
        out.push(Published {
            subject: message.subject.to_string(),
            msg_id: message
                .headers
                .get("Nats-Msg-Id")
                .map(|v| v.to_string())
                .unwrap_or_default(),
            event: serde_json::from_str(&raw).unwrap(),
            raw,
        });
    }
    out
}

/// Waits until the stream holds `count` messages (or fails after `within`).
async fn wait_for_messages(nats: &NatsServer, count: usize, within: Duration) -> Vec<Published> {
    let deadline = Instant::now() + within;
    loop {
        let have = stream_messages_if_any(nats).await;
        if have.len() >= count {
            return have;
        }
        assert!(
            Instant::now() < deadline,
            "{} of {count} events arrived: {:?}",
            have.len(),
            have.iter().map(|p| &p.subject).collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn stream_messages_if_any(nats: &NatsServer) -> Vec<Published> {
    let Ok(client) = async_nats::connect(nats.url()).await else {
        return Vec::new();
    };
    if jetstream::new(client).get_stream(STREAM).await.is_err() {
        return Vec::new();
    }
    stream_messages(nats).await
}

/// The CloudEvents 1.0 JSON format's rules (spec.md, json-format.md) as a JSON schema, with
/// the contract's fixed values on top.
fn cloudevents_schema() -> Value {
    serde_json::json!({
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "type": "object",
        "required": ["specversion", "id", "source", "type"],
        "properties": {
            "specversion": {"const": "1.0"},
            "id": {"type": "string", "minLength": 1},
            "source": {"type": "string", "format": "uri-reference", "const": "recovery-service"},
            "type": {"type": "string", "pattern": "^identity\\.recovery\\.v1\\.[a-z_]+\\.[a-z_]+$"},
            "subject": {"type": "string", "minLength": 1},
            "time": {"type": "string", "format": "date-time"},
            "datacontenttype": {"const": "application/json"},
            "dataschema": {"type": "string", "format": "uri"},
            "data": {"type": "object"},
            "data_base64": false
        }
    })
}

async fn start(nats_url: &str, extra: Options) -> (Server, Client, Mailbox) {
    let server = Server::start_with(
        extra
            .env("RECOVERY_SECRET_KEY", KEY)
            .env("RECOVERY_EVENTS_URL", nats_url),
    )
    .unwrap();
    server.wait_serving("").await.unwrap();
    let client = RecoveryServiceClient::new(server.channel().await.unwrap());
    let mail = Mailbox::new(server.dir.path().join("mail"));
    (server, client, mail)
}

async fn verified_flow(c: &mut Client, mail: &Mailbox, email: &str) -> (String, String) {
    let flow = c
        .begin_recovery(api::BeginRecoveryRequest {
            email: email.into(),
            client: None,
        })
        .await
        .unwrap()
        .into_inner()
        .flow_id;
    let code = mail
        .wait_for(email, "verification code")
        .await
        .unwrap()
        .code()
        .unwrap();
    c.verify_email(api::VerifyEmailRequest {
        flow_id: flow.clone(),
        email_code: code.clone(),
    })
    .await
    .unwrap();
    (flow, code)
}

#[tokio::test]
#[ignore = "needs nats-server (apt install nats-server): run with -- --include-ignored"]
async fn every_event_type_is_published_once_with_the_contract_envelope_and_no_secret() {
    let nats = NatsServer::start().unwrap();
    let (server, mut c, mail) = start(
        &nats.url(),
        Options::default()
            .env("RECOVERY_CONTACT_ACTIVATION", "1s")
            .env("RECOVERY_CONTACT_WAIT", "0s"),
    )
    .await;
    let mut secrets: Vec<String> = vec![KEY.to_owned()];

    // recovery_code.created, recovery_code.replaced, recovery_email.updated
    let first = enroll(&mut c, "acct-1", "ann@example.com").await;
    let code = enroll(&mut c, "acct-1", "ann@example.com").await;
    secrets.extend([first.clone(), code.clone()]);
    c.update_recovery_email(api::UpdateRecoveryEmailRequest {
        account_id: "acct-1".into(),
        email: "ann.new@example.com".into(),
    })
    .await
    .unwrap();
    // account.recovered (own code)
    let (flow, email_code) = verified_flow(&mut c, &mail, "ann.new@example.com").await;
    secrets.push(email_code);
    c.recover_account(api::RecoverAccountRequest {
        flow_id: flow,
        recovery_code: code.clone(),
    })
    .await
    .unwrap();
    // recovery.locked: 10 wrong codes over two flows
    let wrong = wrong_recovery_code(&code);
    for _ in 0..2 {
        let (flow, email_code) = verified_flow(&mut c, &mail, "ann.new@example.com").await;
        secrets.push(email_code);
        for _ in 0..5 {
            let _ = c
                .recover_account(api::RecoverAccountRequest {
                    flow_id: flow.clone(),
                    recovery_code: wrong.clone(),
                })
                .await
                .unwrap_err();
        }
    }
    // recovery_code.revoked
    c.revoke_recovery_code(api::RevokeRecoveryCodeRequest {
        account_id: "acct-1".into(),
        reason: "lost it".into(),
    })
    .await
    .unwrap();
    // assisted_recovery.started, .cancelled, then account.recovered by an organizer
    for (account, role) in [("org", FamilyRole::Organizer), ("kid", FamilyRole::Member)] {
        c.put_family_member(api::PutFamilyMemberRequest {
            family_id: "fam".into(),
            account_id: account.into(),
            role: role.into(),
            email: format!("{account}@fam.example"),
        })
        .await
        .unwrap();
    }
    let begin = |c: &mut Client| {
        let mut c = c.clone();
        async move {
            c.begin_assisted_recovery(api::BeginAssistedRecoveryRequest {
                family_id: "fam".into(),
                organizer_account_id: "org".into(),
                member_account_id: "kid".into(),
                client: None,
            })
            .await
            .unwrap()
            .into_inner()
            .assisted_flow_id
        }
    };
    let cancelled = begin(&mut c).await;
    c.cancel_assisted_recovery(api::CancelAssistedRecoveryRequest {
        assisted_flow_id: cancelled,
        account_id: "kid".into(),
    })
    .await
    .unwrap();
    mail.wait_for("kid@fam.example", "A family organizer is recovering")
        .await
        .unwrap();
    let assisted = begin(&mut c).await;
    let kid_code = mail
        .wait_for("kid@fam.example", "A family organizer is recovering")
        .await
        .unwrap()
        .code()
        .unwrap();
    secrets.push(kid_code.clone());
    c.verify_assisted_recovery(api::VerifyAssistedRecoveryRequest {
        assisted_flow_id: assisted.clone(),
        email_code: kid_code,
    })
    .await
    .unwrap();
    c.complete_assisted_recovery(api::CompleteAssistedRecoveryRequest {
        assisted_flow_id: assisted,
        organizer_account_id: "org".into(),
    })
    .await
    .unwrap();

    // Recovery contacts: invited, activated, removed; a contact recovery started, pending,
    // cancelled; another started, pending, completed (the code revoked, the account recovered).
    enroll(&mut c, "own", "own@example.com").await;
    for contact in ["pal", "pal2", "tmp"] {
        c.invite_recovery_contact(api::InviteRecoveryContactRequest {
            account_id: "own".into(),
            contact_account_id: contact.into(),
            contact_email: format!("{contact}@example.net"),
        })
        .await
        .unwrap();
        if contact != "tmp" {
            c.accept_recovery_contact(api::AcceptRecoveryContactRequest {
                account_id: "own".into(),
                contact_account_id: contact.into(),
            })
            .await
            .unwrap();
        }
    }
    c.remove_recovery_contact(api::RemoveRecoveryContactRequest {
        account_id: "own".into(),
        contact_account_id: "tmp".into(),
    })
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_millis(1100)).await;
    for (contact, complete) in [("pal", false), ("pal2", true)] {
        let flow = c
            .begin_contact_recovery(api::BeginContactRecoveryRequest {
                email: "own@example.com".into(),
                client: None,
            })
            .await
            .unwrap()
            .into_inner();
        secrets.push(flow.confirmation_code.clone());
        c.vouch_for_recovery(api::VouchForRecoveryRequest {
            contact_flow_id: flow.contact_flow_id.clone(),
            contact_account_id: contact.into(),
            confirmation_code: flow.confirmation_code.clone(),
        })
        .await
        .unwrap();
        if complete {
            c.complete_contact_recovery(api::CompleteContactRecoveryRequest {
                contact_flow_id: flow.contact_flow_id,
            })
            .await
            .unwrap();
        } else {
            c.cancel_contact_recovery(api::CancelContactRecoveryRequest {
                contact_flow_id: flow.contact_flow_id,
                account_id: "own".into(),
            })
            .await
            .unwrap();
        }
    }

    // account.forgotten
    c.forget_account(api::ForgetAccountRequest {
        account_id: "acct-1".into(),
        reason: "closed".into(),
    })
    .await
    .unwrap();

    let expected = [
        ("acct-1", "recovery_code.created"),
        ("acct-1", "recovery_code.replaced"),
        ("acct-1", "recovery_email.updated"),
        ("acct-1", "account.recovered"),
        ("acct-1", "recovery.locked"),
        ("acct-1", "recovery_code.revoked"),
        ("kid", "assisted_recovery.started"),
        ("kid", "assisted_recovery.cancelled"),
        ("kid", "assisted_recovery.started"),
        ("kid", "account.recovered"),
        ("own", "recovery_code.created"),
        ("own", "recovery_contact.invited"),
        ("own", "recovery_contact.activated"),
        ("own", "recovery_contact.invited"),
        ("own", "recovery_contact.activated"),
        ("own", "recovery_contact.invited"),
        ("own", "recovery_contact.removed"),
        ("own", "contact_recovery.started"),
        ("own", "contact_recovery.pending"),
        ("own", "contact_recovery.cancelled"),
        ("own", "contact_recovery.started"),
        ("own", "contact_recovery.pending"),
        ("own", "recovery_code.revoked"),
        ("own", "account.recovered"),
        ("acct-1", "account.forgotten"),
    ];
    let published = wait_for_messages(&nats, expected.len(), Duration::from_secs(30)).await;
    let got: Vec<(String, String)> = published
        .iter()
        .map(|p| {
            (
                p.event["subject"].as_str().unwrap().to_owned(),
                p.event["type"]
                    .as_str()
                    .unwrap()
                    .trim_start_matches("identity.recovery.v1.")
                    .to_owned(),
            )
        })
        .collect();
    let want: Vec<(String, String)> = expected
        .iter()
        .map(|(a, t)| ((*a).to_owned(), (*t).to_owned()))
        .collect();
    // In the order of the changes per account (the contract's promise; accounts interleave).
    assert_eq!(got.len(), want.len(), "each change once: {got:?}");
    for account in ["acct-1", "kid", "own"] {
        let of = |v: &[(String, String)]| {
            v.iter()
                .filter(|(a, _)| a == account)
                .cloned()
                .collect::<Vec<_>>()
        };
        assert_eq!(of(&got), of(&want), "{account}'s events once, in order");
    }

    let schema = cloudevents_schema();
    let validator = jsonschema::options()
        .should_validate_formats(true)
        .build(&schema)
        .unwrap();
    let full_addresses = [
        "ann@example.com",
        "ann.new@example.com",
        "kid@fam.example",
        "org@fam.example",
        "own@example.com",
        "pal@example.net",
    ];
    for p in &published {
        let errors: Vec<String> = validator
            .iter_errors(&p.event)
            .map(|e| e.to_string())
            .collect();
        assert!(errors.is_empty(), "{}: {errors:?}", p.raw);
        assert_eq!(
            p.msg_id,
            p.event["id"].as_str().unwrap(),
            "Nats-Msg-Id is the event id"
        );
        assert_eq!(
            p.subject,
            p.event["type"].as_str().unwrap(),
            "published on its type's subject"
        );
        assert!(p.event["time"].as_str().unwrap().ends_with('Z'));
        for secret in secrets.iter().map(String::as_str).chain(full_addresses) {
            assert!(!p.raw.contains(secret), "{secret:?} in {}", p.raw);
        }
        // The canonical form of a code too (no dashes, no prefix).
        for code in [&first, &code] {
            let canonical = code.trim_start_matches("RC1-").replace('-', "");
            assert!(!p.raw.contains(&canonical));
        }
    }
    let recovered: Vec<&Value> = published
        .iter()
        .filter(|p| p.event["type"] == "identity.recovery.v1.account.recovered")
        .map(|p| &p.event["data"])
        .collect();
    assert_eq!(recovered[0]["method"], "recovery_code");
    let forgotten = published
        .iter()
        .find(|p| p.event["type"] == "identity.recovery.v1.account.forgotten")
        .unwrap();
    assert_eq!(
        forgotten.event["data"],
        serde_json::json!({"account_id": "acct-1"})
    );
    assert_eq!(recovered[0]["revoke_all_sessions"], true);
    assert_eq!(recovered[0]["account_id"], "acct-1");
    assert!(recovered[0]["flow_id"].as_str().unwrap().starts_with("fl_"));
    assert_eq!(recovered[1]["method"], "family_organizer");
    assert!(recovered[1]["flow_id"].as_str().unwrap().starts_with("af_"));
    assert_eq!(recovered[2]["method"], "recovery_contacts");
    assert_eq!(recovered[2]["account_id"], "own");
    assert!(recovered[2]["flow_id"].as_str().unwrap().starts_with("cf_"));
    assert_eq!(recovered[2]["vouched_by"], serde_json::json!(["pal2"]));
    let pending = published
        .iter()
        .find(|p| p.event["type"] == "identity.recovery.v1.contact_recovery.pending")
        .unwrap();
    assert_eq!(pending.event["data"]["threshold"], 1);
    assert_eq!(pending.event["data"]["vouches"], 1);
    assert!(
        pending.event["data"]["completes_at"]
            .as_str()
            .unwrap()
            .ends_with('Z')
    );
    // The stream as the contract says: subjects, file storage, a 2-minute duplicate window.
    let js = jetstream::new(async_nats::connect(nats.url()).await.unwrap());
    let info = js
        .get_stream(STREAM)
        .await
        .unwrap()
        .info()
        .await
        .unwrap()
        .config
        .clone();
    assert_eq!(info.subjects, ["identity.recovery.v1.>"]);
    assert_eq!(info.storage, jetstream::stream::StorageType::File);
    assert_eq!(info.duplicate_window, Duration::from_secs(120));
    drop(server);
}

/// The events the database holds, in outbox order, and how many are still unpublished.
async fn outbox(url: &str) -> (Vec<(String, String)>, i64) {
    let db = Database::connect(url).await.unwrap();
    let rows = db
        .query_all_raw(Statement::from_string(
            db.get_database_backend(),
            "SELECT event_id, account_id, status FROM event_outbox ORDER BY seq",
        ))
        .await
        .unwrap();
    let mut events = Vec::new();
    let mut unpublished = 0;
    for row in rows {
        let id: String = row.try_get("", "event_id").unwrap();
        let account: String = row.try_get("", "account_id").unwrap();
        let status: String = row.try_get("", "status").unwrap();
        unpublished += i64::from(status != "sent");
        events.push((id, account));
    }
    db.close().await.unwrap();
    (events, unpublished)
}

#[tokio::test]
#[ignore = "needs nats-server (apt install nats-server): run with -- --include-ignored"]
async fn nats_down_then_the_service_killed_then_both_back_every_event_arrives_once() {
    let mut nats = NatsServer::start().unwrap();
    let data = tempfile::tempdir().unwrap();
    let db_url = format!(
        "sqlite://{}?mode=rwc",
        data.path().join("recovery.db").display()
    );
    let options = || {
        Options::default()
            .env("RECOVERY_DATABASE_URL", db_url.clone())
            .env(
                "RECOVERY_MAIL_DIR",
                data.path().join("mail").display().to_string(),
            )
    };
    let (mut server, mut c, _) = start(&nats.url(), options()).await;
    let mail = Mailbox::new(data.path().join("mail"));
    let mut codes = BTreeMap::new();
    for i in 0..5 {
        let account = format!("acct-{i}");
        let code = enroll(&mut c, &account, &format!("{account}@example.com")).await;
        codes.insert(account, code);
    }
    wait_for_messages(&nats, 5, Duration::from_secs(30)).await;

    // NATS goes away; recoveries go on, and health stays SERVING.
    nats.stop();
    for (account, code) in &codes {
        let (flow, _) = verified_flow(&mut c, &mail, &format!("{account}@example.com")).await;
        c.recover_account(api::RecoverAccountRequest {
            flow_id: flow,
            recovery_code: code.clone(),
        })
        .await
        .unwrap();
    }
    server.wait_serving("").await.unwrap();
    let (_, unpublished) = outbox(&db_url).await;
    assert_eq!(unpublished, 5, "the recoveries' events wait in the outbox");

    // The service dies hard, then NATS and the service come back.
    server.signal(nix::sys::signal::Signal::SIGKILL).unwrap();
    server.wait_exit(Duration::from_secs(10)).await.unwrap();
    nats.restart().unwrap();
    let (_server, _c, _) = start(&nats.url(), options()).await;

    // Every event arrives (a claim cut short by the kill runs out after its 30 s lease).
    let (events, _) = outbox(&db_url).await;
    assert_eq!(events.len(), 10);
    let published = wait_for_messages(&nats, events.len(), Duration::from_secs(60)).await;
    let ids: Vec<&str> = published.iter().map(|p| p.msg_id.as_str()).collect();
    let distinct: BTreeSet<&str> = ids.iter().copied().collect();
    assert_eq!(
        ids.len(),
        distinct.len(),
        "each id once in the stream: {ids:?}"
    );
    let want: BTreeSet<&str> = events.iter().map(|(id, _)| id.as_str()).collect();
    assert_eq!(distinct, want, "every event of the outbox, no other");
    let deadline = Instant::now() + Duration::from_secs(10);
    while outbox(&db_url).await.1 > 0 {
        assert!(Instant::now() < deadline, "every event is marked published");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
#[ignore = "needs PostgreSQL (RECOVERY_TEST_DATABASE_URL) and nats-server: run with -- --include-ignored"]
async fn three_replicas_on_postgres_publish_without_duplicates_in_per_account_order() {
    let nats = NatsServer::start().unwrap();
    let db = PgDatabase::create().await;
    let mut replicas = Vec::new();
    for _ in 0..3 {
        replicas.push(
            start(
                &nats.url(),
                Options::default()
                    .env("RECOVERY_DATABASE_URL", db.url.clone())
                    // 48 creations hash at once on two cores: they queue rather than refuse.
                    .env("RECOVERY_HASH_ADMISSION_WAIT", "60s"),
            )
            .await,
        );
    }
    // 24 accounts, each with four changes in a row, spread over the replicas and run at once.
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..24 {
        let mut clients: Vec<Client> = replicas.iter().map(|(_, c, _)| c.clone()).collect();
        tasks.spawn(async move {
            let account = format!("acct-{i}");
            let pick = |n: usize| n % 3;
            enroll(
                &mut clients[pick(i)],
                &account,
                &format!("{account}@example.com"),
            )
            .await;
            enroll(
                &mut clients[pick(i + 1)],
                &account,
                &format!("{account}@example.com"),
            )
            .await;
            clients[pick(i + 2)]
                .update_recovery_email(api::UpdateRecoveryEmailRequest {
                    account_id: account.clone(),
                    email: format!("{account}.new@example.com"),
                })
                .await
                .unwrap();
            clients[pick(i)]
                .revoke_recovery_code(api::RevokeRecoveryCodeRequest {
                    account_id: account,
                    reason: String::new(),
                })
                .await
                .unwrap();
        });
    }
    while let Some(r) = tasks.join_next().await {
        r.unwrap();
    }
    let (events, _) = outbox(&db.url).await;
    assert_eq!(events.len(), 96);
    let published = wait_for_messages(&nats, events.len(), Duration::from_secs(60)).await;
    let ids: Vec<&str> = published.iter().map(|p| p.msg_id.as_str()).collect();
    let distinct: BTreeSet<&str> = ids.iter().copied().collect();
    assert_eq!(ids.len(), 96, "no duplicate in the stream");
    assert_eq!(distinct.len(), 96);
    // Per account, the stream's order is the order of the changes (the outbox's).
    let mut in_outbox: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for (id, account) in &events {
        in_outbox
            .entry(account.as_str())
            .or_default()
            .push(id.as_str());
    }
    let mut in_stream: BTreeMap<String, Vec<&str>> = BTreeMap::new();
    for p in &published {
        in_stream
            .entry(p.event["subject"].as_str().unwrap().to_owned())
            .or_default()
            .push(p.msg_id.as_str());
    }
    for (account, ids) in &in_outbox {
        assert_eq!(&in_stream[*account], ids, "{account}: order kept");
        let types: Vec<&str> = published
            .iter()
            .filter(|p| p.event["subject"] == *account)
            .map(|p| p.event["type"].as_str().unwrap())
            .collect();
        assert_eq!(
            types,
            [
                "identity.recovery.v1.recovery_code.created",
                "identity.recovery.v1.recovery_code.replaced",
                "identity.recovery.v1.recovery_email.updated",
                "identity.recovery.v1.recovery_code.revoked",
            ]
        );
    }
    drop(replicas);
    drop(db);
}

#[tokio::test]
#[ignore = "needs nats-server (apt install nats-server): run with -- --include-ignored"]
async fn a_nats_user_and_password_in_the_url_work_and_never_reach_the_log() {
    let nats = NatsServer::start_with(&["--user", "recovery", "--pass", "s3cret-pass"]).unwrap();
    let url = format!("nats://recovery:s3cret-pass@127.0.0.1:{}", nats.port);
    let (server, mut c, _) = start(&url, Options::default()).await;
    enroll(&mut c, "acct-auth", "auth@example.com").await;
    let client =
        async_nats::ConnectOptions::with_user_and_password("recovery".into(), "s3cret-pass".into())
            .connect(nats.url())
            .await
            .unwrap();
    let js = jetstream::new(client);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(mut stream) = js.get_stream(STREAM).await
            && stream.info().await.unwrap().state.messages == 1
        {
            break;
        }
        assert!(Instant::now() < deadline, "the event did not arrive");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let log = server.log().join("\n");
    assert!(log.contains("platform events on"), "{log}");
    assert!(!log.contains("s3cret-pass"), "the password is in the log");
}

#[tokio::test]
#[ignore = "needs nats-server (apt install nats-server): run with -- --include-ignored"]
async fn tls_to_nats_is_verified_against_the_configured_ca() {
    use recovery_e2e::pki::Pki;
    let pki = Pki::new();
    let (cert, key) = pki.issue(vec![rcgen::SanType::IpAddress(
        "127.0.0.1".parse().unwrap(),
    )]);
    let cert = pki.write("nats.crt", &cert);
    let key = pki.write("nats.key", &key);
    let ca = pki.write("ca.crt", &pki.ca_pem);
    let nats = NatsServer::start_with(&["--tls", "--tlscert", &cert, "--tlskey", &key]).unwrap();
    let url = format!("tls://127.0.0.1:{}", nats.port);
    let (_server, mut c, _) = start(
        &url,
        Options::default().env("RECOVERY_EVENTS_TLS_CA", ca.clone()),
    )
    .await;
    enroll(&mut c, "acct-tls", "tls@example.com").await;
    let client = async_nats::ConnectOptions::new()
        .add_root_certificates(ca.into())
        .require_tls(true)
        .connect(url.as_str())
        .await
        .unwrap();
    let js = jetstream::new(client);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(mut stream) = js.get_stream(STREAM).await
            && stream.info().await.unwrap().state.messages == 1
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the event did not arrive over TLS"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
#[ignore = "needs nats-server (apt install nats-server): run with -- --include-ignored"]
async fn an_existing_stream_is_used_as_it_is() {
    let nats = NatsServer::start().unwrap();
    let js = jetstream::new(async_nats::connect(nats.url()).await.unwrap());
    // The platform's own stream: memory storage, a longer window, more subjects.
    js.create_stream(jetstream::stream::Config {
        name: STREAM.into(),
        subjects: vec!["identity.recovery.v1.>".into(), "identity.other.>".into()],
        storage: jetstream::stream::StorageType::Memory,
        duplicate_window: Duration::from_secs(600),
        ..Default::default()
    })
    .await
    .unwrap();
    let (_server, mut c, _) = start(&nats.url(), Options::default()).await;
    enroll(&mut c, "acct-existing", "existing@example.com").await;
    wait_for_messages(&nats, 1, Duration::from_secs(30)).await;
    let config = js
        .get_stream(STREAM)
        .await
        .unwrap()
        .info()
        .await
        .unwrap()
        .config
        .clone();
    assert_eq!(config.storage, jetstream::stream::StorageType::Memory);
    assert_eq!(config.duplicate_window, Duration::from_secs(600));
    assert_eq!(config.subjects.len(), 2);
}

#[tokio::test]
#[ignore = "needs nats-server (apt install nats-server): run with -- --include-ignored"]
async fn a_service_started_while_nats_is_down_publishes_once_it_is_up() {
    let mut nats = NatsServer::start().unwrap();
    nats.stop();
    let (server, mut c, _) = start(&nats.url(), Options::default()).await;
    enroll(&mut c, "acct-early", "early@example.com").await;
    server.wait_serving("").await.unwrap();
    nats.restart().unwrap();
    let published = wait_for_messages(&nats, 1, Duration::from_secs(30)).await;
    assert_eq!(published[0].event["subject"], "acct-early");
}

#[tokio::test]
#[ignore = "needs nats-server (apt install nats-server): run with -- --include-ignored"]
async fn zero_knowledge_enrolments_and_recoveries_say_their_mode_and_method() {
    let nats = NatsServer::start().unwrap();
    let (_server, mut c, mail) = start(&nats.url(), Options::default()).await;
    let code = b"ZK1-EVENTS-CODE";
    let keyset = b"events-keyset-plaintext";
    let enrolled = recovery_e2e::device::enrol(&mut c, "acct-zk", "zed@example.com", code, keyset)
        .await
        .unwrap();
    let (flow, _) = verified_flow(&mut c, &mail, "zed@example.com").await;
    recovery_e2e::device::recover(&mut c, &flow, code)
        .await
        .unwrap();
    let messages = wait_for_messages(&nats, 2, Duration::from_secs(30)).await;
    let of = |t: &str| {
        messages
            .iter()
            .find(|m| m.subject == format!("identity.recovery.v1.{t}"))
            .unwrap_or_else(|| panic!("no {t} in {messages:?}"))
    };
    let created = of("recovery_code.created");
    assert_eq!(created.event["data"]["mode"], "zero_knowledge");
    assert_eq!(created.event["data"]["code_id"], enrolled.code_id.as_str());
    let recovered = of("account.recovered");
    assert_eq!(recovered.event["data"]["method"], "zero_knowledge");
    assert_eq!(recovered.event["data"]["flow_id"], flow.as_str());
    assert_eq!(recovered.event["subject"], "acct-zk");
    // Nothing of the code, the keyset or the sealed keyset in any event.
    for m in &messages {
        for secret in [
            String::from_utf8_lossy(code).into_owned(),
            String::from_utf8_lossy(keyset).into_owned(),
            enrolled
                .sealed_keyset
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect(),
        ] {
            assert!(!m.raw.contains(&secret), "{}", m.raw);
        }
    }
}
