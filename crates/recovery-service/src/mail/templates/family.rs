//! What family mail says (organizer-assisted recovery). The member's messages at the family
//! address name the organizer's role, never an organizer's address; organizers see masked
//! addresses only. The account's own recovery address hears of every family path into the
//! account (joined, moved, family address changed, recovery begun and completed), with the
//! organizer's masked address and what to do if it was not them.

use super::{Block, capitalise, printable};
use crate::{
    domain::notice::{
        AssistedRecoveryCancelled, AssistedRecoveryCode, AssistedRecoveryCompleted,
        AssistedRecoveryStarted, Context, FamilyMemberRecovered, FamilyMembershipChanged,
        MembershipChange, RecoveryByOrganizerCompleted, RecoveryByOrganizerStarted,
    },
    time::human,
};

/// What a family message is written from: the account phrase, the recipient's masked address,
/// the support sentence and the facts of the request.
pub(super) struct Parts<'a> {
    pub account: &'a str,
    /// `your Acme family`, or `your family` without a product name.
    pub family: &'a str,
    pub hint: &'a str,
    pub support: &'a str,
    pub facts: Block,
}

pub(super) fn code(n: &AssistedRecoveryCode, p: Parts<'_>) -> (String, Vec<Block>) {
    let Parts {
        family: _,
        account,
        hint,
        support,
        facts,
    } = p;
    let when = human(n.context.occurred_at_ms);
    let until = human(n.context.occurred_at_ms + n.expires_in_hours * 3_600_000);
    (
        format!("A family organizer is recovering {account}"),
        vec![
            Block::Para(format!(
                "An organizer of your family started recovering {account} ({hint}) on {when}, so that you can sign in again. If you asked for this, enter this code where you are asked for it to let the recovery go on:"
            )),
            Block::Code(n.code.to_string()),
            Block::Para(format!(
                "It is valid for {} hours, until {until}. Enter it yourself: nobody from us, and no organizer, will ever ask you for it.",
                n.expires_in_hours
            )),
            facts,
            Block::Para(format!(
                "If you didn't ask for this, ignore this message or cancel the recovery: without this code it cannot go on. If you have your own recovery code you can use it instead. If such messages keep coming, {support}."
            )),
        ],
    )
}

pub(super) fn started(n: &AssistedRecoveryStarted, p: Parts<'_>) -> (String, Vec<Block>) {
    let Parts {
        family,
        account: _,
        hint: _,
        support,
        facts,
    } = p;
    let when = human(n.context.occurred_at_ms);
    let member = printable(&n.member_hint);
    let who = if n.by_you {
        "You".to_owned()
    } else {
        format!("The family organizer {}", printable(&n.organizer_hint))
    };
    (
            format!("Recovery of a member of {family} was started"),
            vec![
                Block::Para(format!(
                    "{who} started recovering the account of the family member {member} on {when}."
                )),
                Block::Para(
                    "The member was emailed a code. Once they enter it, any organizer of the family can complete the recovery; if nobody does, it expires after 24 hours.".to_owned(),
                ),
                facts,
                Block::Para(format!(
                    "If you didn't expect this, cancel the recovery and {support}."
                )),
            ],
        )
}

pub(super) fn completed(n: &AssistedRecoveryCompleted, p: Parts<'_>) -> (String, Vec<Block>) {
    let Parts {
        family: _,
        account,
        hint,
        support,
        facts,
    } = p;
    let when = human(n.context.occurred_at_ms);
    let mut blocks = vec![Block::Para(format!(
        "An organizer of your family completed the recovery of {account} ({hint}) on {when}."
    ))];
    if n.code_revoked {
        blocks.push(Block::Para(
            "Your recovery code no longer works: create a new one once you are signed in."
                .to_owned(),
        ));
    }
    blocks.push(Block::Para(
            "What happens next: a new password and a new secret key are set for the account, and every session and device that was signed in is signed out and has to sign in again.".to_owned(),
        ));
    blocks.push(facts);
    blocks.push(Block::Para(format!(
        "If you didn't ask for this, {support} right away."
    )));
    (
        format!(
            "{} was recovered by a family organizer",
            capitalise(account)
        ),
        blocks,
    )
}

pub(super) fn member_recovered(n: &FamilyMemberRecovered, p: Parts<'_>) -> (String, Vec<Block>) {
    let Parts {
        family,
        account: _,
        hint: _,
        support,
        facts,
    } = p;
    let when = human(n.context.occurred_at_ms);
    let member = printable(&n.member_hint);
    let first = match (&n.organizer_hint, n.by_you) {
        (Some(_), true) => {
            format!("You completed the recovery of the family member {member} on {when}.")
        }
        (Some(organizer), false) => format!(
            "The family organizer {} completed the recovery of the family member {member} on {when}.",
            printable(organizer)
        ),
        (None, _) => format!(
            "The family member {member} recovered their account on their own, with their recovery code, on {when}. The assisted recovery that was pending for them is over: there is nothing more to do."
        ),
    };
    (
        format!("A member of {family} was recovered"),
        vec![
            Block::Para(first),
            facts,
            Block::Para(format!("If you didn't expect this, {support}.")),
        ],
    )
}

/// A member was forgotten: the organizer hears that one left and when, nothing that could say
/// who (every detail of the member is being erased).
pub(super) fn member_left(c: &Context, p: Parts<'_>) -> (String, Vec<Block>) {
    let Parts {
        family,
        account,
        hint: _,
        support,
        facts: _,
    } = p;
    let when = human(c.occurred_at_ms);
    (
        format!("A member left {family}"),
        vec![
            Block::Para(format!(
                "On {when}, a member of {family} left it: their account was closed, and nothing of theirs is kept for account recovery any more. An assisted recovery that was pending for them, or begun by them, is over."
            )),
            Block::Para(format!(
                "This changes nothing for {account}, and there is nothing you need to do. If you didn't expect this, {support}."
            )),
        ],
    )
}

pub(super) fn cancelled(n: &AssistedRecoveryCancelled, p: Parts<'_>) -> (String, Vec<Block>) {
    let Parts {
        family,
        account,
        hint,
        support,
        facts,
    } = p;
    let when = human(n.context.occurred_at_ms);
    if n.to_member {
        let by = if n.by_member {
            "by you"
        } else {
            "by a family organizer"
        };
        (
            format!("Recovery of {account} was cancelled"),
            vec![
                Block::Para(format!(
                    "The recovery of {account} ({hint}) that an organizer of your family started was cancelled {by} on {when}. The code sent for it no longer works."
                )),
                facts,
                Block::Para(format!("If you didn't expect this, {support}.")),
            ],
        )
    } else {
        let member = printable(&n.member_hint);
        let by = match (n.by_you, n.by_member) {
            (true, _) => "you".to_owned(),
            (false, true) => "the member".to_owned(),
            (false, false) => {
                format!("the family organizer {}", printable(&n.cancelled_by_hint))
            }
        };
        (
            format!("Recovery of a member of {family} was cancelled"),
            vec![
                Block::Para(format!(
                    "The recovery of the family member {member} was cancelled by {by} on {when}."
                )),
                facts,
                Block::Para(format!("If you didn't expect this, {support}.")),
            ],
        )
    }
}

pub(super) fn membership_changed(
    n: &FamilyMembershipChanged,
    p: Parts<'_>,
) -> (String, Vec<Block>) {
    let Parts {
        family: _,
        account,
        hint,
        support,
        facts,
    } = p;
    let when = human(n.context.occurred_at_ms);
    let family = printable(&n.family_id);
    let address = printable(&n.family_email_hint);
    let (subject, first) = match n.change {
        MembershipChange::Joined => (
            format!("{} was added to a family", capitalise(account)),
            format!("On {when} {account} ({hint}) was added to the family {family}."),
        ),
        MembershipChange::Moved => (
            format!("{} was moved to another family", capitalise(account)),
            format!("On {when} {account} ({hint}) was moved to the family {family}."),
        ),
        MembershipChange::AddressChanged => (
            format!("The family address of {account} changed"),
            format!("On {when} the family address of {account} in the family {family} changed."),
        ),
    };
    let mut blocks = vec![Block::Para(first)];
    if n.to_previous_address {
        blocks.push(Block::Para(format!(
            "Mail about recovering the account with the help of a family organizer no longer comes here: it goes to {address}."
        )));
    } else {
        blocks.push(Block::Para(format!(
            "The family's organizers can now start recovering {account}; the code that lets such a recovery go on is sent to {address}, and whoever reads that mailbox can let it go on."
        )));
    }
    blocks.push(facts);
    blocks.push(Block::Para(format!(
        "If this wasn't you, or you don't know this family or address, {support} right away: someone may be preparing to take over {account}. Until then, cancel any family recovery you did not ask for."
    )));
    (subject, blocks)
}

pub(super) fn organizer_started(
    n: &RecoveryByOrganizerStarted,
    p: Parts<'_>,
) -> (String, Vec<Block>) {
    let Parts {
        family: _,
        account,
        hint,
        support,
        facts,
    } = p;
    let when = human(n.context.occurred_at_ms);
    let until = human(n.context.occurred_at_ms + n.expires_in_hours * 3_600_000);
    (
        format!(
            "{} is being recovered by a family organizer",
            capitalise(account)
        ),
        vec![
            Block::Para(format!(
                "On {when} the family organizer {} of the family {} started recovering {account} ({hint}). A code to let it go on was sent to the family address {}; once it is entered, any organizer of the family can complete the recovery until {until}, and the account's password, keys and recovery code are then replaced.",
                printable(&n.organizer_hint),
                printable(&n.family_id),
                printable(&n.family_email_hint),
            )),
            facts,
            Block::Para(format!(
                "If you didn't ask for this, cancel the recovery: sign in and cancel it in your account settings (or recover with your own recovery code, which ends it), and {support} right away."
            )),
        ],
    )
}

pub(super) fn organizer_completed(
    n: &RecoveryByOrganizerCompleted,
    p: Parts<'_>,
) -> (String, Vec<Block>) {
    let Parts {
        family: _,
        account,
        hint,
        support,
        facts,
    } = p;
    let when = human(n.context.occurred_at_ms);
    let mut blocks = vec![Block::Para(format!(
        "On {when} the family organizer {} of the family {} completed the recovery of {account} ({hint}).",
        printable(&n.organizer_hint),
        printable(&n.family_id),
    ))];
    if n.code_revoked {
        blocks.push(Block::Para(
            "Your recovery code no longer works: create a new one once you are signed in."
                .to_owned(),
        ));
    }
    blocks.push(Block::Para(
        "What happens next: a new password and a new secret key are set for the account, and every session and device that was signed in is signed out and has to sign in again.".to_owned(),
    ));
    blocks.push(facts);
    blocks.push(Block::Para(format!(
        "If you didn't ask for this, {support} right away: someone else may now hold {account}."
    )));
    (
        format!(
            "{} was recovered by a family organizer",
            capitalise(account)
        ),
        blocks,
    )
}
