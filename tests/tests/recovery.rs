//! The recovery flows through the real binary and the generated client: the happy path twice
//! with the same code, the reuse policies, every error reason the flows return, and 32
//! concurrent RecoverAccount calls on one verified flow.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests fail loudly

use std::time::Duration;

use recovery_e2e::{Options, PgDatabase, Running, enroll, reason, wrong_recovery_code as wrong};
use recovery_proto::v1::{
    self as api, ClientContext, recovery_service_client::RecoveryServiceClient,
};
use tonic::{Code, Status, transport::Channel};
use tonic_types::StatusExt as _;

type Client = RecoveryServiceClient<Channel>;

type Env = Running;

fn metadata(status: &Status, key: &str) -> Option<String> {
    status.get_details_error_info()?.metadata.get(key).cloned()
}

async fn begin(c: &mut Client, email: &str) -> Result<String, Status> {
    c.begin_recovery(api::BeginRecoveryRequest {
        email: email.into(),
        client: Some(ClientContext {
            ip_address: "203.0.113.7".into(),
            user_agent: "e2e/1.0".into(),
        }),
    })
    .await
    .map(|r| r.into_inner().flow_id)
}

async fn verify(c: &mut Client, flow: &str, code: &str) -> Result<(), Status> {
    c.verify_email(api::VerifyEmailRequest {
        flow_id: flow.into(),
        email_code: code.into(),
    })
    .await
    .map(drop)
}

async fn recover(
    c: &mut Client,
    flow: &str,
    code: &str,
) -> Result<api::RecoverAccountResponse, Status> {
    c.recover_account(api::RecoverAccountRequest {
        flow_id: flow.into(),
        recovery_code: code.into(),
    })
    .await
    .map(|r| r.into_inner())
}

/// Begins a flow and verifies it with the code from the mailbox.
async fn verified_flow(env: &mut Env, email: &str) -> String {
    let flow = begin(&mut env.client, email).await.unwrap();
    let mail = env.mail.wait_for(email, "verification code").await.unwrap();
    verify(
        &mut env.client,
        &flow,
        &mail.code().expect("a 6-digit line"),
    )
    .await
    .unwrap();
    flow
}

#[tokio::test]
async fn a_person_recovers_twice_with_the_same_code() {
    let mut env = Running::start(Options::default()).await;
    let code = enroll(&mut env.client, "acct-1", "Ann@Example.com").await;
    assert!(code.starts_with("RC1-"), "{code}");
    env.mail
        .wait_for("Ann@Example.com", "recovery code was created")
        .await
        .unwrap();

    for round in 1..=2u32 {
        // Typed with another case in the domain and spaces: mail goes to the stored address.
        let flow = begin(&mut env.client, "  Ann@EXAMPLE.COM ").await.unwrap();
        let mail = env
            .mail
            .wait_for("Ann@Example.com", "verification code")
            .await
            .unwrap();
        assert!(mail.raw.contains("valid for 15 minutes"), "{}", mail.raw);
        verify(&mut env.client, &flow, &mail.code().unwrap())
            .await
            .unwrap();
        let answer = recover(&mut env.client, &flow, &code).await.unwrap();
        assert_eq!(answer.account_id, "acct-1");
        assert!(answer.revoke_all_sessions);
        assert!(answer.new_recovery_code.is_empty(), "reusable by default");
        env.mail
            .wait_for("Ann@Example.com", "was recovered")
            .await
            .unwrap();

        let status = env
            .client
            .get_recovery_status(api::GetRecoveryStatusRequest {
                account_id: "acct-1".into(),
            })
            .await
            .unwrap()
            .into_inner();
        assert!(status.enrolled);
        assert_eq!(status.use_count, round);
        assert!(status.last_used_at.is_some());
        assert_eq!(status.email_hint, "A***@Example.com");
        assert!(status.locked_until.is_none());
    }
    let audit = env
        .client
        .list_audit_events(api::ListAuditEventsRequest {
            account_id: "acct-1".into(),
            page_size: 3,
            page_token: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(audit.events.len(), 3);
    assert_eq!(
        audit.events[0].kind(),
        api::AuditEventKind::RecoveryCompleted
    );
    assert!(!audit.next_page_token.is_empty());
}

#[tokio::test]
async fn rotate_on_use_hands_out_a_new_code_once() {
    let mut env =
        Running::start(Options::default().env("RECOVERY_REUSE_POLICY", "rotate_on_use")).await;
    let old = enroll(&mut env.client, "acct", "bob@example.com").await;
    let flow = verified_flow(&mut env, "bob@example.com").await;
    let new = recover(&mut env.client, &flow, &old)
        .await
        .unwrap()
        .new_recovery_code;
    assert!(new.starts_with("RC1-") && new != old);
    let flow = verified_flow(&mut env, "bob@example.com").await;
    let err = recover(&mut env.client, &flow, &old).await.unwrap_err();
    assert_eq!(reason(&err), "RECOVERY_CODE_MISMATCH");
    assert!(recover(&mut env.client, &flow, &new).await.is_ok());
}

#[tokio::test]
async fn each_flow_error_has_its_reason() {
    let mut env = Running::start(
        Options::default()
            .env("RECOVERY_LOCKOUT_THRESHOLD", "6")
            .env("RECOVERY_STARTS_PER_EMAIL_PER_HOUR", "3"),
    )
    .await;
    let c = &mut env.client.clone();
    let code = enroll(c, "acct", "eve@example.com").await;

    // Input shape: checked before anything is counted.
    for bad in [
        "a@example.com, b@example.com",
        "Eve <eve@example.com>",
        "eve@example.com\r\nBcc: x@y.z",
    ] {
        let err = begin(c, bad).await.unwrap_err();
        assert_eq!(
            (err.code(), reason(&err)),
            (Code::InvalidArgument, "INVALID_EMAIL".into()),
            "{bad:?}"
        );
    }
    let err = c
        .get_recovery_status(api::GetRecoveryStatusRequest {
            account_id: "x".repeat(129),
        })
        .await
        .unwrap_err();
    assert_eq!(reason(&err), "INVALID_ACCOUNT_ID");
    let err = recover(c, "fl_whatever", "RC1-not-a-code")
        .await
        .unwrap_err();
    assert_eq!(
        (err.code(), reason(&err)),
        (Code::InvalidArgument, "RECOVERY_CODE_MALFORMED".into())
    );
    let err = verify(c, "fl_whatever", "12345").await.unwrap_err();
    assert_eq!(
        (err.code(), reason(&err)),
        (Code::InvalidArgument, "EMAIL_CODE_MALFORMED".into())
    );
    let err = verify(c, "fl_whatever", "123456").await.unwrap_err();
    assert_eq!(
        (err.code(), reason(&err)),
        (Code::NotFound, "FLOW_NOT_FOUND".into())
    );

    // Order: recovery before verification.
    let flow = begin(c, "eve@example.com").await.unwrap();
    let mail = env
        .mail
        .wait_for("eve@example.com", "verification code")
        .await
        .unwrap();
    let err = recover(c, &flow, &code).await.unwrap_err();
    assert_eq!(
        (err.code(), reason(&err)),
        (Code::FailedPrecondition, "EMAIL_NOT_VERIFIED".into())
    );

    // Five wrong email codes, then even the right one is refused.
    let right = mail.code().unwrap();
    let wrong_email = if right == "000000" {
        "000001"
    } else {
        "000000"
    };
    for left in (0..5).rev() {
        let err = verify(c, &flow, wrong_email).await.unwrap_err();
        assert_eq!(
            (err.code(), reason(&err)),
            (Code::PermissionDenied, "EMAIL_CODE_MISMATCH".into())
        );
        assert_eq!(metadata(&err, "attempts_left"), Some(left.to_string()));
    }
    let err = verify(c, &flow, &right).await.unwrap_err();
    assert_eq!(
        (err.code(), reason(&err)),
        (Code::ResourceExhausted, "TOO_MANY_ATTEMPTS".into())
    );

    // Five wrong recovery codes on a verified flow, then TOO_MANY_ATTEMPTS; a sixth failure
    // (on a second flow) locks recovery.
    let flow = verified_flow(&mut env, "eve@example.com").await;
    let c = &mut env.client.clone();
    for left in (0..5).rev() {
        let err = recover(c, &flow, &wrong(&code)).await.unwrap_err();
        assert_eq!(
            (err.code(), reason(&err)),
            (Code::PermissionDenied, "RECOVERY_CODE_MISMATCH".into())
        );
        assert_eq!(metadata(&err, "attempts_left"), Some(left.to_string()));
    }
    let err = recover(c, &flow, &code).await.unwrap_err();
    assert_eq!(
        (err.code(), reason(&err)),
        (Code::ResourceExhausted, "TOO_MANY_ATTEMPTS".into())
    );
    let flow = verified_flow(&mut env, "eve@example.com").await;
    let c = &mut env.client.clone();
    let err = recover(c, &flow, &wrong(&code)).await.unwrap_err();
    assert_eq!(reason(&err), "RECOVERY_CODE_MISMATCH");
    env.mail
        .wait_for("eve@example.com", "recovery was locked")
        .await
        .unwrap();
    let err = recover(c, &flow, &code).await.unwrap_err();
    assert_eq!(
        (err.code(), reason(&err)),
        (Code::FailedPrecondition, "RECOVERY_LOCKED".into())
    );
    assert!(metadata(&err, "locked_until").is_some_and(|t| t.ends_with('Z')));

    // Three starts for this address this hour: the fourth is refused.
    let err = begin(c, "eve@example.com").await.unwrap_err();
    assert_eq!(
        (err.code(), reason(&err)),
        (Code::ResourceExhausted, "RATE_LIMITED".into())
    );
    let retry = err
        .get_details_retry_info()
        .and_then(|r| r.retry_delay)
        .expect("RetryInfo");
    assert!(retry > Duration::ZERO && retry <= Duration::from_secs(3600));

    // Revoke: flows end, management calls say NOT_ENROLLED.
    c.revoke_recovery_code(api::RevokeRecoveryCodeRequest {
        account_id: "acct".into(),
        reason: "test".into(),
    })
    .await
    .unwrap();
    let err = recover(c, &flow, &code).await.unwrap_err();
    assert_eq!(
        (err.code(), reason(&err)),
        (Code::FailedPrecondition, "FLOW_COMPLETED".into())
    );
    let err = c
        .revoke_recovery_code(api::RevokeRecoveryCodeRequest {
            account_id: "acct".into(),
            reason: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(
        (err.code(), reason(&err)),
        (Code::NotFound, "NOT_ENROLLED".into())
    );
    let err = c
        .update_recovery_email(api::UpdateRecoveryEmailRequest {
            account_id: "acct".into(),
            email: "x@example.com".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(reason(&err), "NOT_ENROLLED");
}

#[tokio::test]
async fn flows_expire_and_complete_once() {
    let mut env = Running::start(
        Options::default()
            .env("RECOVERY_FLOW_TTL", "3s")
            .env("RECOVERY_EMAIL_CODE_TTL", "3s"),
    )
    .await;
    let code = enroll(&mut env.client, "acct", "fay@example.com").await;
    let flow = verified_flow(&mut env, "fay@example.com").await;
    recover(&mut env.client, &flow, &code).await.unwrap();
    let err = recover(&mut env.client, &flow, &code).await.unwrap_err();
    assert_eq!(
        (err.code(), reason(&err)),
        (Code::FailedPrecondition, "FLOW_COMPLETED".into())
    );

    let flow = verified_flow(&mut env, "fay@example.com").await;
    tokio::time::sleep(Duration::from_millis(3100)).await;
    let err = recover(&mut env.client, &flow, &code).await.unwrap_err();
    assert_eq!(
        (err.code(), reason(&err)),
        (Code::FailedPrecondition, "FLOW_EXPIRED".into())
    );
}

#[tokio::test]
async fn an_unknown_email_gets_the_same_answer_and_no_mail() {
    let mut env = Running::start(Options::default()).await;
    let flow = begin(&mut env.client, "nobody@example.com").await.unwrap();
    assert!(flow.starts_with("fl_"));
    // A known address started right after is delivered: the mail directory works, so an
    // empty result for the unknown one means nothing was written for it.
    enroll(&mut env.client, "acct-known", "known@example.com").await;
    begin(&mut env.client, "known@example.com").await.unwrap();
    env.mail
        .wait_for("known@example.com", "verification code")
        .await
        .unwrap();
    let all: Vec<String> = std::fs::read_dir(env.server.dir.path().join("mail"))
        .unwrap()
        .map(|e| std::fs::read_to_string(e.unwrap().path()).unwrap())
        .collect();
    assert_eq!(
        all.len(),
        2,
        "the known address's two messages, nothing else"
    );
    assert!(
        all.iter().all(|m| !m.contains("nobody@example.com")),
        "no mail for an unknown address"
    );
    let err = verify(&mut env.client, &flow, "123456").await.unwrap_err();
    assert_eq!(reason(&err), "EMAIL_CODE_MISMATCH");
    drop(env.server);
}

#[tokio::test]
async fn a_full_hashing_pool_answers_overloaded() {
    let env = Running::start(
        Options::default()
            .env("RECOVERY_HASH_THREADS", "1")
            .env("RECOVERY_HASH_ADMISSION_WAIT", "1ms"),
    )
    .await;
    let mut calls = tokio::task::JoinSet::new();
    for i in 0..16 {
        let mut c = env.client.clone();
        calls.spawn(async move {
            c.create_recovery_code(api::CreateRecoveryCodeRequest {
                account_id: format!("acct-{i}"),
                email: format!("user{i}@example.com"),
            })
            .await
        });
    }
    let (mut ok, mut overloaded) = (0, 0);
    while let Some(result) = calls.join_next().await {
        match result.unwrap() {
            Ok(_) => ok += 1,
            Err(status) => {
                assert_eq!(
                    (status.code(), reason(&status)),
                    (Code::ResourceExhausted, "OVERLOADED".into())
                );
                assert!(status.get_details_retry_info().is_some());
                overloaded += 1;
            }
        }
    }
    assert!(
        ok >= 1 && overloaded >= 1,
        "ok {ok}, overloaded {overloaded}"
    );
}

async fn one_winner(env: &mut Env) {
    let code = enroll(&mut env.client, "acct-race", "race@example.com").await;
    let flow = verified_flow(env, "race@example.com").await;
    let mut calls = tokio::task::JoinSet::new();
    for _ in 0..32 {
        let mut c = env.client.clone();
        let (flow, code) = (flow.clone(), code.clone());
        calls.spawn(async move { recover(&mut c, &flow, &code).await });
    }
    let mut winners = 0;
    while let Some(result) = calls.join_next().await {
        match result.unwrap() {
            Ok(answer) => {
                assert_eq!(answer.account_id, "acct-race");
                winners += 1;
            }
            Err(status) => {
                let r = reason(&status);
                assert!(
                    ["FLOW_COMPLETED", "TOO_MANY_ATTEMPTS", "OVERLOADED"].contains(&r.as_str()),
                    "unexpected {status:?}"
                );
            }
        }
    }
    assert_eq!(winners, 1, "a flow succeeds exactly once");
    let status = env
        .client
        .get_recovery_status(api::GetRecoveryStatusRequest {
            account_id: "acct-race".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(status.use_count, 1);
}

#[tokio::test]
async fn thirty_two_concurrent_recoveries_of_one_flow_have_one_winner_on_sqlite() {
    let mut env =
        Running::start(Options::default().env("RECOVERY_HASH_ADMISSION_WAIT", "10s")).await;
    one_winner(&mut env).await;
}

#[tokio::test]
#[ignore = "needs PostgreSQL: set RECOVERY_TEST_DATABASE_URL, run with -- --include-ignored"]
async fn thirty_two_concurrent_recoveries_of_one_flow_have_one_winner_on_postgres() {
    let db = PgDatabase::create().await;
    let mut env = Running::start(
        Options::default()
            .env("RECOVERY_DATABASE_URL", db.url.clone())
            .env("RECOVERY_HASH_ADMISSION_WAIT", "10s"),
    )
    .await;
    one_winner(&mut env).await;
    drop(env);
    drop(db);
}

/// `rotate_on_use`: 32 concurrent RecoverAccount over 4 verified flows of one account with
/// the same code complete exactly one recovery, and the code handed out then works.
async fn rotation_has_one_winner(env: &mut Env) {
    let code = enroll(&mut env.client, "acct-rot", "rot@example.com").await;
    let mut flows = Vec::new();
    for _ in 0..4 {
        flows.push(verified_flow(env, "rot@example.com").await);
    }
    let mut calls = tokio::task::JoinSet::new();
    for i in 0..32 {
        let mut c = env.client.clone();
        let (flow, code) = (flows[i % flows.len()].clone(), code.clone());
        calls.spawn(async move { recover(&mut c, &flow, &code).await });
    }
    let mut new_codes = Vec::new();
    while let Some(result) = calls.join_next().await {
        match result.unwrap() {
            Ok(answer) => new_codes.push(answer.new_recovery_code),
            Err(status) => assert!(
                matches!(
                    reason(&status).as_str(),
                    // Submissions in flight count against the lockout until they prove
                    // right, so a burst of 32 may briefly find the account locked.
                    "FLOW_COMPLETED"
                        | "RECOVERY_CODE_MISMATCH"
                        | "TOO_MANY_ATTEMPTS"
                        | "RECOVERY_LOCKED"
                ),
                "{status:?}"
            ),
        }
    }
    assert_eq!(new_codes.len(), 1, "one code completes one recovery");
    let fresh = new_codes.pop().unwrap();
    assert!(fresh.starts_with("RC1-"));
    // The replacement works; the old code does not.
    let flow = verified_flow(env, "rot@example.com").await;
    let old = recover(&mut env.client, &flow, &code).await.unwrap_err();
    assert_eq!(reason(&old), "RECOVERY_CODE_MISMATCH");
    recover(&mut env.client, &flow, &fresh).await.unwrap();
}

#[tokio::test]
async fn rotate_on_use_completes_one_of_many_racing_flows_on_sqlite() {
    let mut env = Running::start(
        Options::default()
            .env("RECOVERY_REUSE_POLICY", "rotate_on_use")
            .env("RECOVERY_HASH_ADMISSION_WAIT", "10s"),
    )
    .await;
    rotation_has_one_winner(&mut env).await;
}

#[tokio::test]
#[ignore = "needs PostgreSQL: set RECOVERY_TEST_DATABASE_URL, run with -- --include-ignored"]
async fn rotate_on_use_completes_one_of_many_racing_flows_on_postgres() {
    let db = PgDatabase::create().await;
    let mut env = Running::start(
        Options::default()
            .env("RECOVERY_DATABASE_URL", db.url.clone())
            .env("RECOVERY_REUSE_POLICY", "rotate_on_use")
            .env("RECOVERY_HASH_ADMISSION_WAIT", "10s"),
    )
    .await;
    rotation_has_one_winner(&mut env).await;
    drop(env);
    drop(db);
}

/// A flow for an unknown email never verifies, even with the code it was made with: it
/// answers exactly as a wrong code on a known flow, field for field.
#[tokio::test]
async fn a_flow_for_an_unknown_email_never_verifies() {
    let mut env = Running::start(Options::default()).await;
    enroll(&mut env.client, "acct-k", "known@example.com").await;
    let known = begin(&mut env.client, "known@example.com").await.unwrap();
    let unknown = begin(&mut env.client, "nobody@example.com").await.unwrap();
    // Every possible code on the unknown flow would be the same answer; try many.
    let mut answers = Vec::new();
    for (flow, code) in [(&known, "000000"), (&unknown, "000000")] {
        let status = verify(&mut env.client, flow, code).await.unwrap_err();
        let info = status.get_details_error_info().unwrap();
        answers.push((
            status.code(),
            status.message().to_owned(),
            info.reason,
            info.metadata,
        ));
    }
    assert_eq!(
        answers[0], answers[1],
        "known and unknown flows answer alike"
    );
    for _ in 0..4 {
        let status = verify(&mut env.client, &unknown, "123456")
            .await
            .unwrap_err();
        assert!(matches!(
            reason(&status).as_str(),
            "EMAIL_CODE_MISMATCH" | "TOO_MANY_ATTEMPTS"
        ));
    }
    // Never verified, so RecoverAccount never gets past EMAIL_NOT_VERIFIED (and never INTERNAL).
    let some_code = wrong(&enroll(&mut env.client, "acct-z", "z@example.com").await);
    let status = recover(&mut env.client, &unknown, &some_code)
        .await
        .unwrap_err();
    assert_eq!(reason(&status), "EMAIL_NOT_VERIFIED");
}

/// Before the mailbox is proven nothing tells an enrolled address from an unknown one: a flow
/// whose submissions are used up answers TOO_MANY_ATTEMPTS even after the owner's new code
/// cancelled it (it answered FLOW_COMPLETED, which an unknown address's flow never does).
#[tokio::test]
async fn a_used_up_flow_answers_alike_whether_or_not_the_owner_changed_the_code() {
    let mut env = Running::start(Options::default()).await;
    enroll(&mut env.client, "acct-u", "used@example.com").await;
    let known = begin(&mut env.client, "used@example.com").await.unwrap();
    let unknown = begin(&mut env.client, "unknown-used@example.com")
        .await
        .unwrap();
    for flow in [&known, &unknown] {
        for _ in 0..5 {
            verify(&mut env.client, flow, "000000").await.unwrap_err();
        }
    }
    // The owner replaces their code: the known flow is cancelled.
    enroll(&mut env.client, "acct-u", "used@example.com").await;
    let mut answers = Vec::new();
    for flow in [&known, &unknown] {
        let status = verify(&mut env.client, flow, "123456").await.unwrap_err();
        answers.push((status.code(), status.message().to_owned(), reason(&status)));
    }
    assert_eq!(answers[0], answers[1]);
    assert_eq!(answers[0].2, "TOO_MANY_ATTEMPTS");
}

/// The audit trail is hash-chained: an edited row is reported with its event id.
#[tokio::test]
async fn an_edited_audit_row_breaks_the_chain_at_that_row() {
    use sea_orm::{ConnectionTrait as _, Database, Statement};
    let mut env = Running::start(Options::default()).await;
    enroll(&mut env.client, "acct-audit", "audit@example.com").await;
    verified_flow(&mut env, "audit@example.com").await;
    let list = |mut c: Client| async move {
        c.list_audit_events(api::ListAuditEventsRequest {
            account_id: "acct-audit".into(),
            page_size: 0,
            page_token: String::new(),
        })
        .await
        .unwrap()
        .into_inner()
    };
    let before = list(env.client.clone()).await;
    assert!(before.chain_valid, "an untouched trail verifies");
    assert!(before.first_broken_event_id.is_empty());
    assert_eq!(before.events.len(), 3, "created, started, verified");
    // Someone with database access rewrites history: the middle event's details.
    let target = before.events[1].event_id.clone();
    let db_url = format!(
        "sqlite://{}?mode=rw",
        env.server.dir.path().join("recovery.db").display()
    );
    let db = Database::connect(&db_url).await.unwrap();
    db.execute_raw(Statement::from_string(
        db.get_database_backend(),
        format!("UPDATE audit_events SET details = '{{\"flow_id\":\"fl_forged\"}}' WHERE event_id = '{target}'"),
    ))
    .await
    .unwrap();
    db.close().await.unwrap();
    let after = list(env.client.clone()).await;
    assert!(!after.chain_valid);
    assert_eq!(after.first_broken_event_id, target);
    // Clearing every link does not pass the rows off as written before the chain existed.
    let db = Database::connect(&db_url).await.unwrap();
    db.execute_raw(Statement::from_string(
        db.get_database_backend(),
        "UPDATE audit_events SET chain_key_id = NULL, chain_hash = NULL WHERE account_id = 'acct-audit'",
    ))
    .await
    .unwrap();
    db.close().await.unwrap();
    let cleared = list(env.client.clone()).await;
    assert!(!cleared.chain_valid);
    assert_eq!(
        cleared.first_broken_event_id,
        before.events.last().unwrap().event_id,
        "the oldest event, written after the chain began"
    );
}

/// 40 concurrent wrong codes across 8 verified flows of one account: exactly 10 are counted
/// (RECOVERY_CODE_MISMATCH), every other one is RECOVERY_LOCKED, and then even the right code
/// is refused.
async fn lockout_counts_exactly_the_threshold(env: &mut Env) {
    let code = enroll(&mut env.client, "acct-lock", "lock@example.com").await;
    let mut flows = Vec::new();
    for _ in 0..8 {
        flows.push(verified_flow(env, "lock@example.com").await);
    }
    let bad = wrong(&code);
    let mut calls = tokio::task::JoinSet::new();
    for i in 0..40 {
        let mut c = env.client.clone();
        let (flow, bad) = (flows[i % flows.len()].clone(), bad.clone());
        calls.spawn(async move { recover(&mut c, &flow, &bad).await });
    }
    let (mut mismatches, mut locked) = (0, 0);
    while let Some(result) = calls.join_next().await {
        let status = result.unwrap().unwrap_err();
        match reason(&status).as_str() {
            "RECOVERY_CODE_MISMATCH" => mismatches += 1,
            "RECOVERY_LOCKED" => {
                assert!(metadata(&status, "locked_until").is_some());
                locked += 1;
            }
            other => panic!("unexpected {other}: {status:?}"),
        }
    }
    assert_eq!(
        mismatches, 10,
        "exactly the threshold is counted before the lock"
    );
    assert_eq!(locked, 30);
    // The right code on a locked account is refused too.
    let flow = verified_flow(env, "lock@example.com").await;
    let status = recover(&mut env.client, &flow, &code).await.unwrap_err();
    assert_eq!(reason(&status), "RECOVERY_LOCKED");
    let lock_notices = env
        .mail
        .wait_for("lock@example.com", "recovery was locked")
        .await;
    assert!(lock_notices.is_ok(), "the owner is told once");
}

#[tokio::test]
async fn concurrent_wrong_codes_lock_after_exactly_ten_on_sqlite() {
    let mut env = Running::start(
        Options::default()
            .env("RECOVERY_STARTS_PER_EMAIL_PER_HOUR", "50")
            .env("RECOVERY_HASH_ADMISSION_WAIT", "10s"),
    )
    .await;
    lockout_counts_exactly_the_threshold(&mut env).await;
}

#[tokio::test]
#[ignore = "needs PostgreSQL: set RECOVERY_TEST_DATABASE_URL, run with -- --include-ignored"]
async fn concurrent_wrong_codes_lock_after_exactly_ten_on_postgres() {
    let db = PgDatabase::create().await;
    let mut env = Running::start(
        Options::default()
            .env("RECOVERY_DATABASE_URL", db.url.clone())
            .env("RECOVERY_STARTS_PER_EMAIL_PER_HOUR", "50")
            .env("RECOVERY_HASH_ADMISSION_WAIT", "10s"),
    )
    .await;
    lockout_counts_exactly_the_threshold(&mut env).await;
    drop(env);
    drop(db);
}
