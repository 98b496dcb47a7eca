//! Forgetting an account through the real binary, on SQLite and PostgreSQL: one ForgetAccount
//! removes the enrolment, every flow, the family membership and the account's mail, frees the
//! address, tells the family's organizers only that a member left, and leaves a trail that
//! still verifies with every personal detail gone, closed by `ACCOUNT_FORGOTTEN`; a second
//! forget changes nothing; the database files, after a clean stop (SQLite) or as a dump
//! (PostgreSQL), hold none of the person's IP address, user agent, family address or reason
//! text; and forgets racing each other, a recovery, an assisted completion, new flows and an
//! enrolment leave one consistent outcome.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests fail loudly

use std::{process::Command, time::Duration};

use recovery_e2e::{Options, PgDatabase, Running, enroll, reason};
use recovery_proto::v1::{
    self as api, AuditEventKind, ClientContext, FamilyRole,
    recovery_service_client::RecoveryServiceClient,
};
use tonic::{Code, transport::Channel};

type Client = RecoveryServiceClient<Channel>;

/// What the person leaves behind, each unique to this test, searched for afterwards.
const IP: &str = "198.51.100.77";
const AGENT: &str = "ForgetMeBrowser/7.3";
const FAMILY_ADDRESS: &str = "kid-family@forget-fam.example";
const REVOKE_REASON: &str = "lost-phone-at-the-zoo";
const FORGET_REASON: &str = "data-subject-request-4711";

async fn begin(c: &mut Client, email: &str, ip: &str) -> String {
    c.begin_recovery(api::BeginRecoveryRequest {
        email: email.into(),
        client: Some(ClientContext {
            ip_address: ip.into(),
            user_agent: AGENT.into(),
        }),
    })
    .await
    .unwrap()
    .into_inner()
    .flow_id
}

async fn forget(
    c: &mut Client,
    account: &str,
    why: &str,
) -> Result<prost_types::Timestamp, tonic::Status> {
    c.forget_account(api::ForgetAccountRequest {
        account_id: account.into(),
        reason: why.into(),
    })
    .await
    .map(|r| r.into_inner().forgotten_at.expect("forgotten_at"))
}

async fn trail(c: &mut Client, account: &str) -> api::ListAuditEventsResponse {
    c.list_audit_events(api::ListAuditEventsRequest {
        account_id: account.into(),
        page_size: 500,
        page_token: String::new(),
    })
    .await
    .unwrap()
    .into_inner()
}

/// The person: `kid`, enrolled at kid@forget.example (its code revoked with a reason, then
/// enrolled again), in family `forget-fam` with organizer `org`, a recovery flow and an
/// assisted flow in progress. Answers the recovery flow and the assisted flow.
async fn a_person_with_a_history(env: &mut Running) -> (String, String) {
    let c = &mut env.client;
    enroll(c, "kid", "kid@forget.example").await;
    c.revoke_recovery_code(api::RevokeRecoveryCodeRequest {
        account_id: "kid".into(),
        reason: REVOKE_REASON.into(),
    })
    .await
    .unwrap();
    enroll(c, "kid", "kid@forget.example").await;
    for (account, role, email) in [
        ("org", FamilyRole::Organizer, "org@forget-fam.example"),
        ("kid", FamilyRole::Member, FAMILY_ADDRESS),
    ] {
        c.put_family_member(api::PutFamilyMemberRequest {
            family_id: "forget-fam".into(),
            account_id: account.into(),
            role: role.into(),
            email: email.into(),
        })
        .await
        .unwrap();
    }
    let flow = begin(c, "kid@forget.example", IP).await;
    let assisted = c
        .begin_assisted_recovery(api::BeginAssistedRecoveryRequest {
            family_id: "forget-fam".into(),
            organizer_account_id: "org".into(),
            member_account_id: "kid".into(),
            client: Some(ClientContext {
                ip_address: "203.0.113.9".into(),
                user_agent: "organizer-browser/1.0".into(),
            }),
        })
        .await
        .unwrap()
        .into_inner()
        .assisted_flow_id;
    env.mail
        .wait_for("kid@forget.example", "verification code")
        .await
        .unwrap();
    (flow, assisted)
}

/// Everything the contract says of a forget, through the API; answers nothing.
async fn forgetting_erases_the_person_and_keeps_a_trail_that_verifies(env: &mut Running) {
    let (flow, assisted) = a_person_with_a_history(env).await;
    let c = &mut env.client;
    let before = trail(c, "kid").await;
    assert!(
        before
            .events
            .iter()
            .any(|e| e.client.as_ref().is_some_and(|c| c.ip_address == IP)),
        "the trail shows the client before the forget"
    );
    assert!(before.events.iter().all(|e| !e.forgotten));

    let at = forget(c, "kid", FORGET_REASON).await.unwrap();

    // The enrolment, the flows and the membership are gone.
    let status = c
        .get_recovery_status(api::GetRecoveryStatusRequest {
            account_id: "kid".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(!status.enrolled);
    assert!(status.email_hint.is_empty());
    let err = c
        .verify_email(api::VerifyEmailRequest {
            flow_id: flow.clone(),
            email_code: "123456".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(
        (err.code(), reason(&err).as_str()),
        (Code::NotFound, "FLOW_NOT_FOUND")
    );
    let err = c
        .verify_assisted_recovery(api::VerifyAssistedRecoveryRequest {
            assisted_flow_id: assisted.clone(),
            email_code: "123456".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(
        (err.code(), reason(&err).as_str()),
        (Code::NotFound, "FLOW_NOT_FOUND")
    );
    let family = c
        .get_family_recovery_status(api::GetFamilyRecoveryStatusRequest {
            family_id: "forget-fam".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        family
            .members
            .iter()
            .map(|m| m.account_id.as_str())
            .collect::<Vec<_>>(),
        ["org"]
    );

    // The organizer hears that a member left, and nothing that says who.
    let left = env
        .mail
        .wait_for("org@forget-fam.example", "A member left")
        .await
        .unwrap();
    for personal in ["kid", IP, AGENT, FAMILY_ADDRESS, FORGET_REASON] {
        assert!(
            !left.raw.contains(personal),
            "the organizer's mail names {personal}"
        );
    }

    // The trail keeps its events, verifies, is closed by ACCOUNT_FORGOTTEN, and shows nothing
    // personal.
    let after = trail(c, "kid").await;
    assert!(after.chain_valid, "{:?}", after.first_broken_event_id);
    assert_eq!(after.events.len(), before.events.len() + 1);
    let newest = &after.events[0];
    assert_eq!(newest.kind(), AuditEventKind::AccountForgotten);
    assert_eq!(newest.occurred_at, Some(at));
    assert_eq!(
        newest.details.get("family_left").map(String::as_str),
        Some("forget-fam")
    );
    for e in &after.events {
        assert!(e.forgotten, "{:?} is not marked forgotten", e.kind());
        let client = e.client.clone().unwrap_or_default();
        assert!(
            client.ip_address.is_empty() && client.user_agent.is_empty(),
            "{e:?}"
        );
        for value in e.details.values() {
            for personal in [
                IP,
                AGENT,
                FAMILY_ADDRESS,
                REVOKE_REASON,
                FORGET_REASON,
                "k***@",
            ] {
                assert!(
                    !value.contains(personal),
                    "{:?} still says {value}",
                    e.kind()
                );
            }
        }
    }

    // Idempotent: a second forget answers the first's time and changes nothing.
    assert_eq!(forget(c, "kid", "again").await.unwrap(), at);
    assert_eq!(trail(c, "kid").await.events.len(), after.events.len());
    // An unknown account: OK, and nothing is written for it.
    forget(c, "never-known", "").await.unwrap();
    assert!(trail(c, "never-known").await.events.is_empty());

    // The address is free at once for another account.
    enroll(c, "someone-else", "kid@forget.example").await;

    // Bad input gets a precise answer.
    let err = forget(c, "", "").await.unwrap_err();
    assert_eq!(
        (err.code(), reason(&err).as_str()),
        (Code::InvalidArgument, "INVALID_ACCOUNT_ID")
    );
}

/// Whether `haystack` holds any of the person's details; answers the ones it holds.
fn personal_details_in(haystack: &[u8]) -> Vec<&'static str> {
    [IP, AGENT, FAMILY_ADDRESS, REVOKE_REASON, FORGET_REASON]
        .into_iter()
        .filter(|needle| {
            haystack
                .windows(needle.len())
                .any(|w| w == needle.as_bytes())
        })
        .collect()
}

#[tokio::test]
async fn forgetting_erases_the_person_on_sqlite_down_to_the_file() {
    let mut env = Running::start(Options::default()).await;
    forgetting_erases_the_person_and_keeps_a_trail_that_verifies(&mut env).await;
    let dir = env.server.dir.path().to_owned();
    env.server
        .signal(nix::sys::signal::Signal::SIGTERM)
        .unwrap();
    assert!(
        env.server
            .wait_exit(Duration::from_secs(20))
            .await
            .unwrap()
            .success()
    );
    let mut found = Vec::new();
    for entry in std::fs::read_dir(&dir).unwrap().filter_map(Result::ok) {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with("recovery.db") {
            let bytes = std::fs::read(entry.path()).unwrap();
            found.extend(
                personal_details_in(&bytes)
                    .into_iter()
                    .map(|d| (name.clone(), d)),
            );
        }
    }
    assert!(found.is_empty(), "the database files still hold {found:?}");
}

#[tokio::test]
#[ignore = "needs PostgreSQL (RECOVERY_TEST_DATABASE_URL) and pg_dump: run with -- --include-ignored"]
async fn forgetting_erases_the_person_on_postgres_down_to_a_dump() {
    let db = PgDatabase::create().await;
    let mut env =
        Running::start(Options::default().env("RECOVERY_DATABASE_URL", db.url.clone())).await;
    forgetting_erases_the_person_and_keeps_a_trail_that_verifies(&mut env).await;
    let dump = Command::new("pg_dump")
        .args(["--data-only", &db.url])
        .output()
        .expect("pg_dump runs");
    assert!(
        dump.status.success(),
        "{}",
        String::from_utf8_lossy(&dump.stderr)
    );
    assert!(dump.stdout.len() > 1000, "the dump holds the trail");
    let found = personal_details_in(&dump.stdout);
    assert!(found.is_empty(), "the dump still holds {found:?}");
    drop(env);
    drop(db);
}

/// Rounds of 32 concurrent forgets racing a RecoverAccount and an organizer's
/// CompleteAssistedRecovery (both on verified flows), BeginRecovery calls for the address, and a
/// CreateRecoveryCode at another address: every forget answers OK with the time of a forget
/// that closed the trail (one, or a second one after the racing re-enrolment); a completion
/// that answered OK committed before the first (its event is older), at most one of the two
/// did; nothing but a new enrolment's CODE_CREATED comes after it, and the account is enrolled
/// exactly when one follows the newest forget. Answers (recoveries, assisted
/// completions, enrolments after the forget) over the rounds.
async fn forgets_race_everything_to_one_outcome(env: &mut Running) -> (u32, u32, u32) {
    let (mut recovered, mut assisted_won, mut enrolled_after) = (0, 0, 0);
    for round in 0..6 {
        let account = format!("racer-{round}");
        let organizer = format!("org-{round}");
        let family = format!("race-fam-{round}");
        let email = format!("racer-{round}@race.example");
        let family_email = format!("racer-{round}@{family}.example");
        let code = enroll(&mut env.client, &account, &email).await;
        for (who, role, address) in [
            (
                &organizer,
                FamilyRole::Organizer,
                format!("{organizer}@{family}.example"),
            ),
            (&account, FamilyRole::Member, family_email.clone()),
        ] {
            env.client
                .put_family_member(api::PutFamilyMemberRequest {
                    family_id: family.clone(),
                    account_id: who.clone(),
                    role: role.into(),
                    email: address,
                })
                .await
                .unwrap();
        }
        let flow = begin(&mut env.client, &email, &format!("192.0.2.{round}")).await;
        let mail = env
            .mail
            .wait_for(&email, "verification code")
            .await
            .unwrap();
        env.client
            .verify_email(api::VerifyEmailRequest {
                flow_id: flow.clone(),
                email_code: mail.code().unwrap(),
            })
            .await
            .unwrap();
        let assisted = env
            .client
            .begin_assisted_recovery(api::BeginAssistedRecoveryRequest {
                family_id: family.clone(),
                organizer_account_id: organizer.clone(),
                member_account_id: account.clone(),
                client: None,
            })
            .await
            .unwrap()
            .into_inner()
            .assisted_flow_id;
        let assisted_code = env
            .mail
            .wait_for(&family_email, "A family organizer is recovering")
            .await
            .unwrap()
            .code()
            .unwrap();
        env.client
            .verify_assisted_recovery(api::VerifyAssistedRecoveryRequest {
                assisted_flow_id: assisted.clone(),
                email_code: assisted_code,
            })
            .await
            .unwrap();

        #[derive(Debug)]
        enum Call {
            Recover,
            Assisted,
            Enrol,
            Begin,
            Forget(prost_types::Timestamp),
        }
        let mut tasks = tokio::task::JoinSet::new();
        {
            let mut c = env.client.clone();
            let (flow, code) = (flow.clone(), code.clone());
            tasks.spawn(async move {
                c.recover_account(api::RecoverAccountRequest {
                    flow_id: flow,
                    recovery_code: code,
                })
                .await
                .map(|_| Call::Recover)
            });
        }
        {
            let mut c = env.client.clone();
            let (assisted, organizer) = (assisted.clone(), organizer.clone());
            tasks.spawn(async move {
                c.complete_assisted_recovery(api::CompleteAssistedRecoveryRequest {
                    assisted_flow_id: assisted,
                    organizer_account_id: organizer,
                })
                .await
                .map(|_| Call::Assisted)
            });
        }
        {
            let mut c = env.client.clone();
            let account = account.clone();
            tasks.spawn(async move {
                c.create_recovery_code(api::CreateRecoveryCodeRequest {
                    account_id: account,
                    email: format!("again-{round}@race.example"),
                })
                .await
                .map(|_| Call::Enrol)
            });
        }
        for _ in 0..4 {
            let mut c = env.client.clone();
            let email = email.clone();
            tasks.spawn(async move {
                c.begin_recovery(api::BeginRecoveryRequest {
                    email,
                    client: None,
                })
                .await
                .map(|_| Call::Begin)
            });
        }
        for _ in 0..32 {
            let mut c = env.client.clone();
            let account = account.clone();
            tasks.spawn(async move { forget(&mut c, &account, "race").await.map(Call::Forget) });
        }
        let mut times = std::collections::BTreeSet::new();
        let (mut recovery_ok, mut assisted_ok) = (false, false);
        while let Some(done) = tasks.join_next().await {
            match done.unwrap() {
                Ok(Call::Recover) => recovery_ok = true,
                Ok(Call::Assisted) => assisted_ok = true,
                Ok(Call::Enrol | Call::Begin) => {}
                Ok(Call::Forget(at)) => {
                    times.insert((at.seconds, at.nanos));
                }
                // A completion that lost answers why; nothing fails inside.
                Err(status) => assert!(
                    !matches!(
                        status.code(),
                        Code::Internal | Code::Unknown | Code::Unavailable
                    ),
                    "{status:?}"
                ),
            }
        }
        assert!(!(recovery_ok && assisted_ok), "one completion at most");
        let t = trail(&mut env.client, &account).await;
        assert!(t.chain_valid);
        let kinds: Vec<AuditEventKind> = t.events.iter().map(|e| e.kind()).collect();
        // Each forget that did something closed the trail once; the others answered one of
        // those times. Between and after them only a new enrolment (the racing create, which
        // a later forget may have forgotten in turn).
        let forgets: Vec<usize> = kinds
            .iter()
            .enumerate()
            .filter(|(_, k)| **k == AuditEventKind::AccountForgotten)
            .map(|(i, _)| i)
            .collect();
        let closed: std::collections::BTreeSet<(i64, i32)> = forgets
            .iter()
            .map(|i| {
                let at = t.events[*i].occurred_at.unwrap();
                (at.seconds, at.nanos)
            })
            .collect();
        assert!(!forgets.is_empty(), "{kinds:?}");
        assert_eq!(
            times, closed,
            "each forget answers the time of a forget that closed the trail"
        );
        assert!(
            forgets.len() <= 2,
            "a forget after the re-enrolment at most: {kinds:?}"
        );
        let (after, before) = kinds.split_at(*forgets.last().unwrap());
        assert!(
            after.iter().all(|k| matches!(
                k,
                AuditEventKind::CodeCreated | AuditEventKind::AccountForgotten
            )),
            "only a new enrolment follows the forget: {kinds:?}"
        );
        assert_eq!(
            before.contains(&AuditEventKind::RecoveryCompleted),
            recovery_ok,
            "{kinds:?}"
        );
        assert_eq!(
            before.contains(&AuditEventKind::AssistedRecoveryCompleted),
            assisted_ok,
            "{kinds:?}"
        );
        // Enrolled exactly when a new enrolment follows the newest forget.
        let after = &kinds[..forgets[0]];
        let status = env
            .client
            .get_recovery_status(api::GetRecoveryStatusRequest {
                account_id: account.clone(),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(
            status.enrolled,
            !after.is_empty(),
            "round {round}: {kinds:?}"
        );
        recovered += u32::from(recovery_ok);
        assisted_won += u32::from(assisted_ok);
        enrolled_after += u32::from(!after.is_empty());
    }
    (recovered, assisted_won, enrolled_after)
}

#[tokio::test]
async fn forgets_race_to_one_outcome_on_sqlite() {
    let mut env = Running::start(Options::default()).await;
    let (recovered, assisted, enrolled) = forgets_race_everything_to_one_outcome(&mut env).await;
    eprintln!(
        "sqlite, 6 rounds: recovery before the forget {recovered}, assisted completion before it {assisted}, enrolled after it {enrolled}"
    );
}

#[tokio::test]
#[ignore = "needs PostgreSQL: set RECOVERY_TEST_DATABASE_URL, run with -- --include-ignored"]
async fn forgets_race_to_one_outcome_on_postgres() {
    let db = PgDatabase::create().await;
    let mut env =
        Running::start(Options::default().env("RECOVERY_DATABASE_URL", db.url.clone())).await;
    let (recovered, assisted, enrolled) = forgets_race_everything_to_one_outcome(&mut env).await;
    eprintln!(
        "postgres, 6 rounds: recovery before the forget {recovered}, assisted completion before it {assisted}, enrolled after it {enrolled}"
    );
    drop(env);
    drop(db);
}
