//! What family mail says (organizer-assisted recovery). The member's messages name the
//! organizer's role, never an organizer's address; organizers see masked addresses only.

use super::{Block, capitalise, printable};
use crate::{
    domain::notice::{
        AssistedRecoveryCancelled, AssistedRecoveryCode, AssistedRecoveryCompleted,
        AssistedRecoveryStarted, FamilyMemberRecovered,
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
