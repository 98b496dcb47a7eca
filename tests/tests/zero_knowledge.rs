//! Zero-knowledge recovery through the real binary, with an opaque-ke device on the other end:
//! a person enrols a code the service never sees and gets their keyset back; the enrollment id
//! is single-use and bound to its account; guesses are counted and locked out as RecoverAccount's
//! are; the two kinds refuse each other's RPCs only after the mailbox is proven; bad protocol
//! bytes count nothing; `rotate_on_use` retires the enrolment; an enrolment survives a key
//! rotation until its key leaves the ring; three replicas on PostgreSQL finish logins started
//! elsewhere and complete a login once; the database holds nothing that tests a guess.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests fail loudly

use std::time::Duration;

use recovery_e2e::{
    Mailbox, Options, PgDatabase, Running, Server, device, enroll, reason, smtp::SmtpSink,
};
use recovery_proto::v1::{
    self as api, ClientContext, RecoveryMode, recovery_service_client::RecoveryServiceClient,
};
use tonic::{Code, Status, transport::Channel};
use tonic_types::StatusExt as _;

type Client = RecoveryServiceClient<Channel>;

const CODE: &[u8] = b"RC1-ZK7Q-M4XP-2HDA-V9KE-T6NB-W3RC-8";
const KEYSET: &[u8] = b"vault-key: the person's keyset, opened only with the code";

fn attempts_left(status: &Status) -> Option<String> {
    status
        .get_details_error_info()?
        .metadata
        .get("attempts_left")
        .cloned()
}

async fn begin(c: &mut Client, email: &str) -> String {
    c.begin_recovery(api::BeginRecoveryRequest {
        email: email.into(),
        client: Some(ClientContext {
            ip_address: "203.0.113.9".into(),
            user_agent: "zk-e2e/1.0".into(),
        }),
    })
    .await
    .unwrap()
    .into_inner()
    .flow_id
}

/// A flow for `email`, verified with the code from the mailbox.
async fn verified(c: &mut Client, mail: &Mailbox, email: &str) -> String {
    let flow = begin(c, email).await;
    let code = mail
        .wait_for(email, "verification code")
        .await
        .unwrap()
        .code()
        .unwrap();
    c.verify_email(api::VerifyEmailRequest {
        flow_id: flow.clone(),
        email_code: code,
    })
    .await
    .unwrap();
    flow
}

async fn status(c: &mut Client, account: &str) -> api::GetRecoveryStatusResponse {
    c.get_recovery_status(api::GetRecoveryStatusRequest {
        account_id: account.into(),
    })
    .await
    .unwrap()
    .into_inner()
}

#[tokio::test]
async fn a_device_enrols_a_code_the_service_never_sees_and_gets_its_keyset_back() {
    let mut env = Running::start(Options::default()).await;
    let enrolled = device::enrol(&mut env.client, "zk-1", "Zoe@Example.com", CODE, KEYSET)
        .await
        .unwrap();
    assert!(enrolled.code_id.starts_with("zk_"), "{}", enrolled.code_id);
    env.mail
        .wait_for("Zoe@Example.com", "recovery code was created")
        .await
        .unwrap();
    let st = status(&mut env.client, "zk-1").await;
    assert!(st.enrolled);
    assert_eq!(st.mode(), RecoveryMode::ZeroKnowledge);
    assert_eq!(st.code_id, enrolled.code_id);
    assert_eq!(st.email_hint, "Z***@Example.com");

    // Recovered twice with the same code (reusable), the keyset back each time.
    for n in 1..=2 {
        // Typed in another case: the mail goes to the address as stored.
        let flow = begin(&mut env.client, " zoe@EXAMPLE.com ").await;
        let code = env
            .mail
            .wait_for("Zoe@Example.com", "verification code")
            .await
            .unwrap()
            .code()
            .unwrap();
        env.client
            .verify_email(api::VerifyEmailRequest {
                flow_id: flow.clone(),
                email_code: code,
            })
            .await
            .unwrap();
        let keyset = device::recover(&mut env.client, &flow, CODE).await.unwrap();
        assert_eq!(keyset, KEYSET);
        env.mail
            .wait_for("Zoe@Example.com", "was recovered")
            .await
            .unwrap();
        let st = status(&mut env.client, "zk-1").await;
        assert_eq!(st.use_count, n);
        // The flow is over.
        let again = device::start_login(&mut env.client, &flow, CODE)
            .await
            .unwrap_err();
        assert_eq!(reason(&again), "FLOW_COMPLETED");
    }

    // The audit trail tells the story, and verifies.
    let audit = env
        .client
        .list_audit_events(api::ListAuditEventsRequest {
            account_id: "zk-1".into(),
            page_size: 50,
            page_token: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(audit.chain_valid);
    let kinds: Vec<_> = audit.events.iter().map(|e| e.kind()).collect();
    assert!(kinds.contains(&api::AuditEventKind::CodeCreated));
    assert!(kinds.contains(&api::AuditEventKind::ZeroKnowledgeRecoveryStarted));
    let completed = audit
        .events
        .iter()
        .find(|e| e.kind() == api::AuditEventKind::RecoveryCompleted)
        .unwrap();
    assert_eq!(completed.details["method"], "zero_knowledge");
    let created = audit
        .events
        .iter()
        .find(|e| e.kind() == api::AuditEventKind::CodeCreated)
        .unwrap();
    assert_eq!(created.details["mode"], "zero_knowledge");
}

#[tokio::test]
async fn an_enrollment_id_finishes_once_for_its_own_account_within_fifteen_minutes() {
    let mut env = Running::start(Options::default()).await;
    let c = &mut env.client;
    let start = device::start_enrolment(c, "zk-2", CODE).await.unwrap();
    assert!(start.enrollment_id.len() < 400);
    let (record, export_key) = device::finish_registration(&start, CODE);
    let sealed = device::seal(&export_key, KEYSET);
    let finish = |enrollment_id: &str, account: &str, record: Vec<u8>, keyset: Vec<u8>| {
        api::FinishZeroKnowledgeEnrollmentRequest {
            enrollment_id: enrollment_id.into(),
            account_id: account.into(),
            email: "zk2@example.com".into(),
            registration_record: record,
            sealed_keyset: keyset,
        }
    };
    // Another account cannot use it; a tampered or unknown id is not found.
    let foreign = c
        .finish_zero_knowledge_enrollment(finish(
            &start.enrollment_id,
            "zk-other",
            record.clone(),
            sealed.clone(),
        ))
        .await
        .unwrap_err();
    assert_eq!(foreign.code(), Code::NotFound);
    assert_eq!(reason(&foreign), "ENROLLMENT_NOT_FOUND");
    let mut tampered = start.enrollment_id.clone();
    let last = tampered.pop().unwrap();
    tampered.push(if last == 'A' { 'B' } else { 'A' });
    for bad in [tampered.as_str(), "ze1.nonsense", "", "rc_x"] {
        let err = c
            .finish_zero_knowledge_enrollment(finish(bad, "zk-2", record.clone(), sealed.clone()))
            .await
            .unwrap_err();
        assert_eq!(reason(&err), "ENROLLMENT_NOT_FOUND", "{bad}");
    }
    // Bad bytes: malformed, and nothing is stored.
    for (bad_record, bad_keyset) in [
        (vec![0u8; 192], sealed.clone()),
        (record[..191].to_vec(), sealed.clone()),
        (record.clone(), vec![]),
        (record.clone(), vec![7u8; 4097]),
    ] {
        let err = c
            .finish_zero_knowledge_enrollment(finish(
                &start.enrollment_id,
                "zk-2",
                bad_record,
                bad_keyset,
            ))
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument);
        assert_eq!(reason(&err), "OPAQUE_MESSAGE_MALFORMED");
    }
    assert!(!status(c, "zk-2").await.enrolled);

    // The right finish succeeds once; a replay changes nothing.
    let done = c
        .finish_zero_knowledge_enrollment(finish(
            &start.enrollment_id,
            "zk-2",
            record.clone(),
            sealed.clone(),
        ))
        .await
        .unwrap()
        .into_inner();
    let replay = c
        .finish_zero_knowledge_enrollment(finish(&start.enrollment_id, "zk-2", record, sealed))
        .await
        .unwrap_err();
    assert_eq!(reason(&replay), "ENROLLMENT_NOT_FOUND");
    let st = status(c, "zk-2").await;
    assert_eq!(st.code_id, done.code_id);
    assert_eq!(
        st.created_at, done.created_at,
        "the replay replaced nothing"
    );

    // A malformed registration request is refused at the start, which writes nothing.
    for bad in [vec![], vec![0u8; 32], vec![1u8; 31], vec![0xffu8; 32]] {
        let err = c
            .start_zero_knowledge_enrollment(api::StartZeroKnowledgeEnrollmentRequest {
                account_id: "zk-2".into(),
                registration_request: bad,
            })
            .await
            .unwrap_err();
        assert_eq!(reason(&err), "OPAQUE_MESSAGE_MALFORMED");
    }
}

#[tokio::test]
async fn an_enrolment_of_either_kind_replaces_the_other_and_the_rpcs_of_the_other_kind_refuse() {
    let mut env = Running::start(Options::default()).await;
    // A server-held code first: replaced by a zero-knowledge enrolment (the "replaced" notice).
    enroll(&mut env.client, "zk-3", "kim@example.com").await;
    device::enrol(&mut env.client, "zk-3", "kim@example.com", CODE, KEYSET)
        .await
        .unwrap();
    env.mail
        .wait_for("kim@example.com", "was replaced")
        .await
        .unwrap();
    // RecoverAccount on a zero-knowledge enrolment: only once the mailbox is proven.
    let flow = begin(&mut env.client, "kim@example.com").await;
    env.mail
        .wait_for("kim@example.com", "verification code")
        .await
        .unwrap();
    let code = enroll(&mut env.client, "zk-probe", "probe@example.com").await;
    let early = env
        .client
        .recover_account(api::RecoverAccountRequest {
            flow_id: flow.clone(),
            recovery_code: code.clone(),
        })
        .await
        .unwrap_err();
    assert_eq!(reason(&early), "EMAIL_NOT_VERIFIED");
    let early = device::start_login(&mut env.client, &flow, CODE)
        .await
        .unwrap_err();
    assert_eq!(reason(&early), "EMAIL_NOT_VERIFIED");
    let flow = verified(&mut env.client, &env.mail, "kim@example.com").await;
    let refused = env
        .client
        .recover_account(api::RecoverAccountRequest {
            flow_id: flow.clone(),
            recovery_code: code,
        })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::FailedPrecondition);
    assert_eq!(reason(&refused), "ZERO_KNOWLEDGE_ENROLLMENT");
    // Whatever is typed: a zero-knowledge code is no RC1 code.
    for typed in ["ZK1-HV4C-F87S", "not a code", ""] {
        let refused = env
            .client
            .recover_account(api::RecoverAccountRequest {
                flow_id: flow.clone(),
                recovery_code: typed.into(),
            })
            .await
            .unwrap_err();
        assert_eq!(reason(&refused), "ZERO_KNOWLEDGE_ENROLLMENT", "{typed:?}");
    }
    // Refused without counting: the zero-knowledge recovery still has its 5 submissions.
    assert_eq!(
        device::recover(&mut env.client, &flow, CODE).await.unwrap(),
        KEYSET
    );

    // And back: a server-held code replaces the zero-knowledge enrolment.
    let code = enroll(&mut env.client, "zk-3", "kim@example.com").await;
    assert_eq!(
        status(&mut env.client, "zk-3").await.mode(),
        RecoveryMode::ServerHeld
    );
    let flow = verified(&mut env.client, &env.mail, "kim@example.com").await;
    let refused = device::start_login(&mut env.client, &flow, CODE)
        .await
        .unwrap_err();
    assert_eq!(reason(&refused), "NOT_ZERO_KNOWLEDGE");
    for sent in [vec![], vec![0u8; 96]] {
        let refused = env
            .client
            .start_zero_knowledge_recovery(api::StartZeroKnowledgeRecoveryRequest {
                flow_id: flow.clone(),
                credential_request: sent,
            })
            .await
            .unwrap_err();
        assert_eq!(reason(&refused), "NOT_ZERO_KNOWLEDGE");
    }
    let finish = device::finish_login(&mut env.client, &flow, vec![0u8; 64])
        .await
        .unwrap_err();
    assert_eq!(reason(&finish), "NOT_ZERO_KNOWLEDGE");
    env.client
        .recover_account(api::RecoverAccountRequest {
            flow_id: flow,
            recovery_code: code,
        })
        .await
        .unwrap();
    // Unknown accounts say nothing new: not enrolled has no mode.
    assert_eq!(
        status(&mut env.client, "nobody").await.mode(),
        RecoveryMode::Unspecified
    );
}

#[tokio::test]
async fn guesses_are_counted_before_any_work_and_lock_the_account() {
    let mut env = Running::start(
        Options::default()
            .env("RECOVERY_LOCKOUT_THRESHOLD", "7")
            .env("RECOVERY_STARTS_PER_EMAIL_PER_HOUR", "50"),
    )
    .await;
    device::enrol(&mut env.client, "zk-4", "lee@example.com", CODE, KEYSET)
        .await
        .unwrap();
    let flow = verified(&mut env.client, &env.mail, "lee@example.com").await;

    // Bad bytes count nothing.
    for bad in [
        vec![],
        vec![0u8; 95],
        vec![0u8; 96],
        vec![0xffu8; 96],
        vec![0u8; 97],
    ] {
        let err = env
            .client
            .start_zero_knowledge_recovery(api::StartZeroKnowledgeRecoveryRequest {
                flow_id: flow.clone(),
                credential_request: bad,
            })
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument);
        assert_eq!(reason(&err), "OPAQUE_MESSAGE_MALFORMED");
    }
    for bad in [vec![], vec![0u8; 63], vec![0u8; 65]] {
        let err = device::finish_login(&mut env.client, &flow, bad)
            .await
            .unwrap_err();
        assert_eq!(reason(&err), "OPAQUE_MESSAGE_MALFORMED");
    }
    // A finish before any start.
    let err = device::finish_login(&mut env.client, &flow, vec![0u8; 64])
        .await
        .unwrap_err();
    assert_eq!(reason(&err), "ZERO_KNOWLEDGE_NOT_STARTED");

    // A wrong code: the device cannot open KE2 and sends nothing more; the start counted.
    let login = device::start_login(&mut env.client, &flow, b"a wrong code")
        .await
        .unwrap();
    assert!(
        login.finish(b"a wrong code").is_none(),
        "a wrong code does not open KE2"
    );
    // A KE3 that does not verify: RECOVERY_CODE_MISMATCH with what is left.
    device::start_login(&mut env.client, &flow, CODE)
        .await
        .unwrap();
    let mismatch = device::finish_login(&mut env.client, &flow, vec![9u8; 64])
        .await
        .unwrap_err();
    assert_eq!(mismatch.code(), Code::PermissionDenied);
    assert_eq!(reason(&mismatch), "RECOVERY_CODE_MISMATCH");
    assert_eq!(attempts_left(&mismatch).as_deref(), Some("3"));
    // That login is over: the same finish again is not started.
    let again = device::finish_login(&mut env.client, &flow, vec![9u8; 64])
        .await
        .unwrap_err();
    assert_eq!(reason(&again), "ZERO_KNOWLEDGE_NOT_STARTED");
    // Three more starts use the flow's 5; the sixth is refused even with the right code.
    for _ in 0..3 {
        device::start_login(&mut env.client, &flow, b"guess")
            .await
            .unwrap();
    }
    let spent = device::recover(&mut env.client, &flow, CODE)
        .await
        .unwrap_err();
    assert_eq!(reason(&spent), "TOO_MANY_ATTEMPTS");

    // A second flow: two more guesses reach the lockout threshold of 7.
    let flow = verified(&mut env.client, &env.mail, "lee@example.com").await;
    device::start_login(&mut env.client, &flow, b"guess")
        .await
        .unwrap();
    device::start_login(&mut env.client, &flow, b"guess")
        .await
        .unwrap();
    env.mail
        .wait_for("lee@example.com", "Account recovery was locked")
        .await
        .unwrap();
    let locked = device::start_login(&mut env.client, &flow, CODE)
        .await
        .unwrap_err();
    assert_eq!(reason(&locked), "RECOVERY_LOCKED");
    assert!(
        locked
            .get_details_error_info()
            .unwrap()
            .metadata
            .contains_key("locked_until")
    );
    assert!(status(&mut env.client, "zk-4").await.locked_until.is_some());
}

#[tokio::test]
async fn a_right_finish_gives_its_guess_back() {
    let mut env = Running::start(Options::default().env("RECOVERY_LOCKOUT_THRESHOLD", "3")).await;
    device::enrol(&mut env.client, "zk-5", "max@example.com", CODE, KEYSET)
        .await
        .unwrap();
    // Two right recoveries and one wrong guess: the right ones gave theirs back, so the
    // account is one failure from nothing, not three.
    for _ in 0..2 {
        let flow = verified(&mut env.client, &env.mail, "max@example.com").await;
        device::recover(&mut env.client, &flow, CODE).await.unwrap();
    }
    let flow = verified(&mut env.client, &env.mail, "max@example.com").await;
    device::start_login(&mut env.client, &flow, b"guess")
        .await
        .unwrap();
    device::start_login(&mut env.client, &flow, b"guess")
        .await
        .unwrap();
    assert!(
        status(&mut env.client, "zk-5").await.locked_until.is_none(),
        "2 failures of a threshold of 3"
    );
    assert_eq!(
        device::recover(&mut env.client, &flow, CODE).await.unwrap(),
        KEYSET
    );
}

#[tokio::test]
async fn rotate_on_use_retires_the_enrolment_and_asks_for_a_new_one() {
    let mut env =
        Running::start(Options::default().env("RECOVERY_REUSE_POLICY", "rotate_on_use")).await;
    device::enrol(&mut env.client, "zk-6", "ray@example.com", CODE, KEYSET)
        .await
        .unwrap();
    let flow = verified(&mut env.client, &env.mail, "ray@example.com").await;
    let login = device::start_login(&mut env.client, &flow, CODE)
        .await
        .unwrap();
    let (ke3, export_key) = login.finish(CODE).unwrap();
    let answer = device::finish_login(&mut env.client, &flow, ke3.clone())
        .await
        .unwrap();
    assert!(answer.reenrollment_required);
    assert!(answer.revoke_all_sessions);
    assert_eq!(answer.account_id, "zk-6");
    assert_eq!(
        device::open(&export_key, &answer.sealed_keyset).unwrap(),
        KEYSET
    );
    let st = status(&mut env.client, "zk-6").await;
    assert!(!st.enrolled);
    assert_eq!(st.mode(), RecoveryMode::Unspecified);
    // The flow succeeded once: any finish afterwards, the same KE3 included, is over.
    for finish in [ke3.clone(), vec![7u8; 64]] {
        let refused = device::finish_login(&mut env.client, &flow, finish)
            .await
            .unwrap_err();
        assert_eq!(reason(&refused), "FLOW_COMPLETED");
    }
    // The device enrols a new code.
    device::enrol(&mut env.client, "zk-6", "ray@example.com", b"new", KEYSET)
        .await
        .unwrap();
}

const KEY_A: &str = "a:1111111111111111111111111111111111111111111111111111111111111111";
const KEY_B: &str = "b:2222222222222222222222222222222222222222222222222222222222222222";

/// A server on a database and mail directory that outlive it.
async fn on_dir(dir: &std::path::Path, keys: &str) -> (Server, Client, Mailbox) {
    let server = Server::start_with(
        Options::default()
            .env(
                "RECOVERY_DATABASE_URL",
                format!("sqlite://{}?mode=rwc", dir.join("r.db").display()),
            )
            .env("RECOVERY_MAIL_DIR", dir.join("mail").display().to_string())
            .env("RECOVERY_SECRET_KEY", keys),
    )
    .unwrap();
    server.wait_serving("").await.unwrap();
    let client = RecoveryServiceClient::new(server.channel().await.unwrap());
    let mail = Mailbox::new(dir.join("mail"));
    // What earlier servers wrote is not this one's.
    mail.fresh();
    (server, client, mail)
}

#[tokio::test]
async fn an_enrolment_works_through_a_key_rotation_until_its_key_leaves_the_ring() {
    let dir = tempfile::tempdir().unwrap();
    {
        let (_server, mut c, _) = on_dir(dir.path(), KEY_A).await;
        device::enrol(&mut c, "zk-7", "ivy@example.com", CODE, KEYSET)
            .await
            .unwrap();
    }
    {
        // Rotated: B is current, A still verifies.
        let (_server, mut c, mail) = on_dir(dir.path(), &format!("{KEY_B},{KEY_A}")).await;
        let flow = verified(&mut c, &mail, "ivy@example.com").await;
        assert_eq!(device::recover(&mut c, &flow, CODE).await.unwrap(), KEYSET);
    }
    {
        // A dropped: the enrolment answers as a wrong code would (KE2 comes back, the device
        // cannot open it).
        let (_server, mut c, mail) = on_dir(dir.path(), KEY_B).await;
        let flow = verified(&mut c, &mail, "ivy@example.com").await;
        let login = device::start_login(&mut c, &flow, CODE).await.unwrap();
        assert_eq!(login.credential_response.len(), 320);
        assert!(login.finish(CODE).is_none(), "the code no longer opens KE2");
    }
}

/// The database files hold no code, no keyset plaintext and no export key.
fn assert_absent(haystack: &[u8], what: &str, needle: &[u8]) {
    assert!(
        !haystack.windows(needle.len()).any(|w| w == needle),
        "the {what} is in the database"
    );
}

#[tokio::test]
async fn the_sqlite_files_hold_nothing_that_tests_a_guess() {
    let dir = tempfile::tempdir().unwrap();
    let enrolled = {
        let (mut server, mut c, mail) = on_dir(dir.path(), KEY_A).await;
        let enrolled = device::enrol(&mut c, "zk-8", "ada@example.com", CODE, KEYSET)
            .await
            .unwrap();
        let flow = verified(&mut c, &mail, "ada@example.com").await;
        device::recover(&mut c, &flow, CODE).await.unwrap();
        server.signal(nix::sys::signal::Signal::SIGTERM).unwrap();
        server.wait_exit(Duration::from_secs(30)).await.unwrap();
        for line in server.log() {
            for (what, secret) in [
                ("code", CODE.to_vec()),
                ("keyset", KEYSET.to_vec()),
                (
                    "export key (hex)",
                    hex::encode(&enrolled.export_key).into_bytes(),
                ),
            ] {
                assert_absent(line.as_bytes(), what, &secret);
            }
        }
        enrolled
    };
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir.path()).unwrap() {
        let path = entry.unwrap().path();
        if path.is_file() {
            files.extend(std::fs::read(&path).unwrap());
        }
    }
    assert!(!files.is_empty());
    let canonical: Vec<u8> = CODE
        .iter()
        .copied()
        .filter(|b| *b != b'-')
        .skip(3)
        .collect();
    assert_absent(&files, "code", CODE);
    assert_absent(&files, "code (canonical)", &canonical);
    assert_absent(&files, "keyset plaintext", KEYSET);
    assert_absent(&files, "export key", &enrolled.export_key);
    assert_absent(
        &files,
        "export key (hex)",
        hex::encode(&enrolled.export_key).as_bytes(),
    );
}

// ---- three replicas on one PostgreSQL database ----

async fn pg_replicas(db: &PgDatabase, sink: &SmtpSink) -> (Vec<Server>, Vec<Client>) {
    let mut servers = Vec::new();
    let mut clients = Vec::new();
    for _ in 0..3 {
        let server = Server::start_with(
            Options::default()
                .env("RECOVERY_SECRET_KEY", recovery_e2e::TEST_KEY)
                .env("RECOVERY_DATABASE_URL", db.url.clone())
                .env("RECOVERY_SMTP_URL", sink.url()),
        )
        .unwrap();
        server.wait_serving("").await.unwrap();
        clients.push(RecoveryServiceClient::new(server.channel().await.unwrap()));
        servers.push(server);
    }
    (servers, clients)
}

/// Begins on one replica and verifies on another with the newest code mailed to `email`.
async fn pg_verified(clients: &mut [Client], sink: &SmtpSink, email: &str) -> String {
    let before = sink.received().len();
    let flow = begin(&mut clients[0], email).await;
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let code = loop {
        let received = sink.received();
        if let Some(code) = received[before.min(received.len())..]
            .iter()
            .filter(|m| m.to.iter().any(|t| t.contains(email)))
            .find_map(|m| m.code())
        {
            break code;
        }
        assert!(std::time::Instant::now() < deadline, "no code mailed");
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    clients[1]
        .verify_email(api::VerifyEmailRequest {
            flow_id: flow.clone(),
            email_code: code,
        })
        .await
        .unwrap();
    flow
}

#[tokio::test]
#[ignore = "needs PostgreSQL: set RECOVERY_TEST_DATABASE_URL, run with -- --include-ignored"]
async fn three_replicas_on_postgres_finish_logins_started_elsewhere_and_complete_once() {
    let db = PgDatabase::create().await;
    let sink = SmtpSink::start().await.unwrap();
    let (_servers, mut clients) = pg_replicas(&db, &sink).await;

    // Enrolment started on one replica, finished on another.
    let start = device::start_enrolment(&mut clients[0], "zk-pg", CODE)
        .await
        .unwrap();
    let (record, export_key) = device::finish_registration(&start, CODE);
    clients[1]
        .finish_zero_knowledge_enrollment(api::FinishZeroKnowledgeEnrollmentRequest {
            enrollment_id: start.enrollment_id.clone(),
            account_id: "zk-pg".into(),
            email: "pg@example.com".into(),
            registration_record: record,
            sealed_keyset: device::seal(&export_key, KEYSET),
        })
        .await
        .unwrap();

    // Start on replica 2, finish on replica 0.
    let flow = pg_verified(&mut clients, &sink, "pg@example.com").await;
    let login = device::start_login(&mut clients[2], &flow, CODE)
        .await
        .unwrap();
    let (ke3, export) = login.finish(CODE).unwrap();
    let answer = device::finish_login(&mut clients[0], &flow, ke3)
        .await
        .unwrap();
    assert_eq!(
        device::open(&export, &answer.sealed_keyset).unwrap(),
        KEYSET
    );

    // 32 concurrent finishes of one started login over three replicas: exactly one success.
    let flow = pg_verified(&mut clients, &sink, "pg@example.com").await;
    let login = device::start_login(&mut clients[0], &flow, CODE)
        .await
        .unwrap();
    let (ke3, _) = login.finish(CODE).unwrap();
    let mut tasks = tokio::task::JoinSet::new();
    for n in 0..32 {
        let mut c = clients[n % 3].clone();
        let (flow, ke3) = (flow.clone(), ke3.clone());
        tasks.spawn(async move { device::finish_login(&mut c, &flow, ke3).await });
    }
    let mut ok = 0;
    while let Some(result) = tasks.join_next().await {
        match result.unwrap() {
            Ok(answer) => {
                ok += 1;
                assert_eq!(answer.account_id, "zk-pg");
            }
            Err(status) => assert_eq!(reason(&status), "FLOW_COMPLETED", "{status:?}"),
        }
    }
    assert_eq!(ok, 1);
    let st = status(&mut clients[2], "zk-pg").await;
    assert_eq!(st.use_count, 2);

    // A replayed enrolment finish on a third replica changes nothing.
    let other_record = device::finish_registration(
        &device::start_enrolment(&mut clients[2], "zk-pg", CODE)
            .await
            .unwrap(),
        CODE,
    )
    .0;
    let replay = clients[2]
        .finish_zero_knowledge_enrollment(api::FinishZeroKnowledgeEnrollmentRequest {
            enrollment_id: start.enrollment_id,
            account_id: "zk-pg".into(),
            email: "pg@example.com".into(),
            registration_record: other_record,
            sealed_keyset: vec![1],
        })
        .await
        .unwrap_err();
    assert_eq!(reason(&replay), "ENROLLMENT_NOT_FOUND");

    // The dump holds no code, no keyset plaintext, no export key.
    let dump = std::process::Command::new("pg_dump")
        .arg(&db.url)
        .output()
        .expect("pg_dump runs");
    assert!(
        dump.status.success(),
        "{}",
        String::from_utf8_lossy(&dump.stderr)
    );
    assert_absent(&dump.stdout, "code", CODE);
    assert_absent(&dump.stdout, "keyset plaintext", KEYSET);
    assert_absent(
        &dump.stdout,
        "export key (hex)",
        hex::encode(&export).as_bytes(),
    );
    assert_absent(&dump.stdout, "export key", &export);
}

#[tokio::test]
async fn an_organizer_completing_assisted_recovery_revokes_a_zero_knowledge_enrolment() {
    let mut env = Running::start(Options::default()).await;
    let c = &mut env.client;
    for (account, role, email) in [
        ("org", api::FamilyRole::Organizer, "org@example.com"),
        ("kid", api::FamilyRole::Member, "kid.family@example.com"),
    ] {
        c.put_family_member(api::PutFamilyMemberRequest {
            family_id: "fam-zk".into(),
            account_id: account.into(),
            role: role.into(),
            email: email.into(),
        })
        .await
        .unwrap();
    }
    device::enrol(c, "kid", "kid@example.com", CODE, KEYSET)
        .await
        .unwrap();
    let family = c
        .get_family_recovery_status(api::GetFamilyRecoveryStatusRequest {
            family_id: "fam-zk".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(
        family
            .members
            .iter()
            .any(|m| m.account_id == "kid" && m.recovery_code_enrolled),
        "a zero-knowledge enrolment counts as enrolled"
    );
    let flow = c
        .begin_assisted_recovery(api::BeginAssistedRecoveryRequest {
            family_id: "fam-zk".into(),
            organizer_account_id: "org".into(),
            member_account_id: "kid".into(),
            client: None,
        })
        .await
        .unwrap()
        .into_inner()
        .assisted_flow_id;
    let code = env
        .mail
        .wait_for("kid.family@example.com", "")
        .await
        .unwrap()
        .code()
        .unwrap();
    c.verify_assisted_recovery(api::VerifyAssistedRecoveryRequest {
        assisted_flow_id: flow.clone(),
        email_code: code,
    })
    .await
    .unwrap();
    let done = c
        .complete_assisted_recovery(api::CompleteAssistedRecoveryRequest {
            assisted_flow_id: flow,
            organizer_account_id: "org".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(done.recovery_code_revoked);
    let st = status(c, "kid").await;
    assert!(!st.enrolled);
    assert_eq!(st.mode(), RecoveryMode::Unspecified);
}

#[tokio::test]
async fn a_zero_knowledge_enrolment_follows_the_address_rules_of_create_recovery_code() {
    let mut env = Running::start(Options::default()).await;
    let c = &mut env.client;
    enroll(c, "owner", "taken@example.com").await;
    let refused = device::enrol(c, "intruder", "TAKEN@example.com", CODE, KEYSET)
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::AlreadyExists);
    assert_eq!(reason(&refused), "EMAIL_IN_USE");
    assert!(!status(c, "intruder").await.enrolled);
    // Revoke and email change work on either kind.
    device::enrol(c, "zk-9", "nine@example.com", CODE, KEYSET)
        .await
        .unwrap();
    c.update_recovery_email(api::UpdateRecoveryEmailRequest {
        account_id: "zk-9".into(),
        email: "nine@new.example".into(),
    })
    .await
    .unwrap();
    let flow = verified(c, &env.mail, "nine@new.example").await;
    assert_eq!(device::recover(c, &flow, CODE).await.unwrap(), KEYSET);
    c.revoke_recovery_code(api::RevokeRecoveryCodeRequest {
        account_id: "zk-9".into(),
        reason: "lost device".into(),
    })
    .await
    .unwrap();
    assert!(!status(c, "zk-9").await.enrolled);
}

#[tokio::test]
async fn a_right_finish_of_a_replaced_start_is_no_failure_and_the_newer_one_completes() {
    let mut env = Running::start(Options::default().env("RECOVERY_LOCKOUT_THRESHOLD", "2")).await;
    device::enrol(&mut env.client, "zk-10", "ten@example.com", CODE, KEYSET)
        .await
        .unwrap();
    let flow = verified(&mut env.client, &env.mail, "ten@example.com").await;
    // The device started twice (a retried call), then finishes the first one.
    let first = device::start_login(&mut env.client, &flow, CODE)
        .await
        .unwrap();
    let second = device::start_login(&mut env.client, &flow, CODE)
        .await
        .unwrap();
    let (stale, _) = first.finish(CODE).unwrap();
    for _ in 0..2 {
        let err = device::finish_login(&mut env.client, &flow, stale.clone())
            .await
            .unwrap_err();
        assert_eq!(reason(&err), "ZERO_KNOWLEDGE_NOT_STARTED");
    }
    // The second start reached the threshold of 2 and holds the lock until it proves right.
    let (ke3, export) = second.finish(CODE).unwrap();
    let answer = device::finish_login(&mut env.client, &flow, ke3)
        .await
        .unwrap();
    assert_eq!(
        device::open(&export, &answer.sealed_keyset).unwrap(),
        KEYSET
    );
    assert!(
        status(&mut env.client, "zk-10")
            .await
            .locked_until
            .is_none()
    );
    // Both guesses were given back: two wrong ones on a new flow are needed to lock.
    let flow = verified(&mut env.client, &env.mail, "ten@example.com").await;
    device::start_login(&mut env.client, &flow, b"wrong")
        .await
        .unwrap();
    assert!(
        status(&mut env.client, "zk-10")
            .await
            .locked_until
            .is_none()
    );
    device::start_login(&mut env.client, &flow, b"wrong")
        .await
        .unwrap();
    assert!(
        status(&mut env.client, "zk-10")
            .await
            .locked_until
            .is_some()
    );
}

/// Every start that is counted is recorded, whenever the device hangs up (before, while or
/// after it is counted): the audited starts of a flow carry each of its 5 submissions once,
/// with no gap a silent guess would leave.
#[tokio::test]
async fn every_counted_start_is_audited_whenever_the_device_hangs_up() {
    let mut env = Running::start(
        Options::default()
            .env("RECOVERY_LOCKOUT_THRESHOLD", "1000")
            .env("RECOVERY_STARTS_PER_EMAIL_PER_HOUR", "50"),
    )
    .await;
    device::enrol(&mut env.client, "zk-hang", "hal@example.com", CODE, KEYSET)
        .await
        .unwrap();
    let mut flows = Vec::new();
    for f in 0..4u64 {
        let flow = verified(&mut env.client, &env.mail, "hal@example.com").await;
        for i in 0..4u64 {
            // A different moment each time, from at once to 4.5 ms in.
            let mut c = env.client.clone();
            let prepared = device::prepare_login(b"a guess");
            let _ = tokio::time::timeout(
                Duration::from_micros((f * 4 + i) * 300),
                device::start_prepared_login(&mut c, &flow, prepared),
            )
            .await;
        }
        // Starts the device sees through, until the flow's 5 are used.
        loop {
            match device::start_login(&mut env.client, &flow, b"a guess").await {
                Ok(_) => {}
                Err(err) => {
                    assert_eq!(reason(&err), "TOO_MANY_ATTEMPTS");
                    break;
                }
            }
        }
        flows.push(flow);
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let events = env
            .client
            .list_audit_events(api::ListAuditEventsRequest {
                account_id: "zk-hang".into(),
                page_size: 200,
                page_token: String::new(),
            })
            .await
            .unwrap()
            .into_inner()
            .events;
        let mut complete = true;
        for flow in &flows {
            let mut left: Vec<String> = events
                .iter()
                .filter(|e| {
                    e.kind == api::AuditEventKind::ZeroKnowledgeRecoveryStarted as i32
                        && e.details.get("flow_id") == Some(flow)
                })
                .filter_map(|e| e.details.get("attempts_left").cloned())
                .collect();
            left.sort();
            if left != ["0", "1", "2", "3", "4"] {
                complete = false;
                assert!(
                    std::time::Instant::now() < deadline,
                    "flow {flow}: starts audited with attempts_left {left:?}"
                );
            }
        }
        if complete {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// ForgetAccount removes a zero-knowledge enrolment (its OPAQUE record and sealed keyset go
/// with the row): the verified flow answers FLOW_NOT_FOUND to the device, the status is
/// empty, and the address takes a new enrolment at once.
#[tokio::test]
async fn forgetting_removes_a_zero_knowledge_enrolment_and_its_flows() {
    let mut env = Running::start(Options::default()).await;
    device::enrol(&mut env.client, "zk-f", "zed@example.com", CODE, KEYSET)
        .await
        .unwrap();
    let flow = verified(&mut env.client, &env.mail, "zed@example.com").await;
    env.client
        .forget_account(api::ForgetAccountRequest {
            account_id: "zk-f".into(),
            reason: String::new(),
        })
        .await
        .unwrap();
    let err = device::recover(&mut env.client, &flow, CODE)
        .await
        .unwrap_err();
    assert_eq!(reason(&err), "FLOW_NOT_FOUND");
    let st = status(&mut env.client, "zk-f").await;
    assert!(!st.enrolled);
    assert_eq!(st.mode(), RecoveryMode::Unspecified);
    device::enrol(&mut env.client, "zk-g", "zed@example.com", CODE, KEYSET)
        .await
        .unwrap();
}
