//! What recovery-contact mail says. The owner's recovery address hears of every contact change
//! and every step of a recovery by contacts, with what to do if it was not them. A contact's
//! mail names the account that asks (its id and masked recovery address), says from where,
//! and tells the contact never to confirm a code they did not hear from that person directly.

use super::{Block, capitalise};
use crate::{
    domain::notice::{ContactTopic, RecoveryContactNotice},
    time::human,
};

/// What a contact message is written from.
pub(super) struct Parts<'a> {
    /// `your account` (the owner's), with the product name when configured.
    pub account: &'a str,
    /// The recipient's masked address.
    pub hint: &'a str,
    pub support: &'a str,
    pub facts: Block,
}

/// The subject and blocks of `n`, and the footer's reason for receiving it.
pub(super) fn render(n: &RecoveryContactNotice, p: Parts<'_>) -> (String, Vec<Block>, String) {
    let Parts {
        account,
        hint,
        support,
        facts,
    } = p;
    let when = human(n.context.occurred_at_ms);
    let at = n.at_ms.map(human).unwrap_or_default();
    let owner = if n.owner_hint.is_empty() {
        format!("the account {}", n.owner_account_id)
    } else {
        format!("the account {} ({})", n.owner_account_id, n.owner_hint)
    };
    let contact = if n.contact_hint.is_empty() {
        format!("the account {}", n.contact_account_id)
    } else {
        format!("the account {} ({})", n.contact_account_id, n.contact_hint)
    };
    let not_you = format!(
        "If you didn't make this change, someone may be signed in to {account}: sign in, change your password, check your recovery contacts, and {support}."
    );
    let footer = if n.to_contact {
        format!(
            "You receive this because {hint} is where {owner} reaches you as a recovery contact."
        )
    } else {
        format!("You receive this because {hint} is the recovery email address of {account}.")
    };
    let never = "Never vouch because of a message, a call from a number you don't know, or a code someone forwards to you: only for a code the person read out to you directly, in person or on a call you recognise as theirs.".to_owned();
    let (subject, blocks) = match (n.topic, n.to_contact) {
        (ContactTopic::Invited, _) => (
            "You were asked to be a recovery contact".to_owned(),
            vec![
                Block::Para(format!(
                    "On {when}, {owner} asked you to be one of its recovery contacts: if its owner is ever locked out, you may be asked to confirm that it is really them, with a code they read out to you. Accept the invitation in your account settings before {at}."
                )),
                Block::Para(never.clone()),
                Block::Para(format!(
                    "If you don't know who this is, ignore this message: the invitation expires by itself. If such messages keep coming, {support}."
                )),
            ],
        ),
        (ContactTopic::InvitedByOwner, _) => (
            format!("You invited a recovery contact for {account}"),
            vec![
                Block::Para(format!(
                    "On {when} you invited {contact} to be a recovery contact of {account}. The invitation is open until {at}; once they accept, they can help recover the account only after a waiting time, so that nobody signed in to it can add a helper and use it at once."
                )),
                facts,
                Block::Para(not_you.clone()),
            ],
        ),
        (ContactTopic::Accepted, _) => (
            format!("A recovery contact accepted for {account}"),
            vec![
                Block::Para(format!(
                    "On {when} {contact} accepted to be a recovery contact of {account}. They can help recover it from {at}."
                )),
                facts,
                Block::Para(not_you.clone()),
            ],
        ),
        (ContactTopic::Removed, false) => (
            format!("A recovery contact was removed from {account}"),
            vec![
                Block::Para(format!(
                    "On {when} {contact} was removed as a recovery contact of {account}. Any confirmation they gave to a recovery in progress was withdrawn."
                )),
                facts,
                Block::Para(not_you.clone()),
            ],
        ),
        (ContactTopic::Removed, true) => (
            "You are no longer a recovery contact".to_owned(),
            vec![Block::Para(format!(
                "On {when} you stopped being a recovery contact of {owner}. Any confirmation you gave to a recovery in progress was withdrawn."
            ))],
        ),
        (ContactTopic::ThresholdSet, _) => (
            format!(
                "Recovery contacts of {account}: {} must now confirm",
                n.threshold
            ),
            vec![
                Block::Para(format!(
                    "On {when} the number of recovery contacts who must confirm a recovery of {account} was set to {}.",
                    n.threshold
                )),
                facts,
                Block::Para(not_you.clone()),
            ],
        ),
        (ContactTopic::RecoveryStarted, _) => (
            format!("Someone asked your recovery contacts to recover {account}"),
            vec![
                Block::Para(format!(
                    "On {when} someone asked to recover {account} ({hint}) with the help of its recovery contacts. They will be asked to confirm with a code only the person asking has; {} of them must confirm, and then the recovery still waits before it completes.",
                    n.threshold
                )),
                facts,
                Block::Para(format!(
                    "If this wasn't you, cancel it in your account settings (any of your contacts can too) and tell your contacts not to confirm. If such messages keep coming, {support}."
                )),
            ],
        ),
        (ContactTopic::VouchRequested, _) => (
            "Someone asks you to confirm an account recovery".to_owned(),
            vec![
                Block::Para(format!(
                    "On {when} someone asked to recover {owner}, for which you are a recovery contact. If its owner asked you, in person or on a call you recognise, to confirm, enter the 6-digit code they read out to you in your account settings; the recovery then still waits before it completes, and its owner can stop it."
                )),
                Block::Para("The request came from:".to_owned()),
                facts,
                Block::Para(never.clone()),
                Block::Para(format!(
                    "If you didn't hear from them directly, do nothing, or cancel the recovery in your account settings. If someone pressures you to confirm, {support}."
                )),
            ],
        ),
        (ContactTopic::Vouched, _) => (
            format!("A recovery contact confirmed a recovery of {account}"),
            vec![
                Block::Para(format!(
                    "On {when} one of the recovery contacts of {account} ({hint}) confirmed that the person recovering it is you: {} of {} confirmations.",
                    n.vouches, n.threshold
                )),
                Block::Para(format!(
                    "If this wasn't you, cancel the recovery now in your account settings, tell your contacts, and {support}."
                )),
            ],
        ),
        (ContactTopic::Pending, to_contact) => (
            if to_contact {
                "An account recovery by recovery contacts will complete".to_owned()
            } else {
                format!("{} will be recovered by its contacts", capitalise(account))
            },
            vec![
                Block::Para(format!(
                    "On {when}, {} of {} recovery contacts confirmed the recovery of {}. Unless it is cancelled, it completes on {at}: then a new password and secret key can be set, and every session and device is signed out.",
                    n.vouches,
                    n.threshold,
                    if to_contact {
                        owner.clone()
                    } else {
                        format!("{account} ({hint})")
                    }
                )),
                Block::Para(if to_contact {
                    "If you have any doubt that this is its owner, cancel it in your account settings.".to_owned()
                } else {
                    format!(
                        "If this wasn't you, cancel it now in your account settings, and {support}."
                    )
                }),
            ],
        ),
        (ContactTopic::Cancelled, to_contact) => {
            let whose = if to_contact {
                owner.clone()
            } else {
                format!("{account} ({hint})")
            };
            let by = if n.contact_account_id.is_empty() {
                String::new()
            } else {
                format!(" by the account {}", n.contact_account_id)
            };
            (
                "An account recovery by recovery contacts was cancelled".to_owned(),
                vec![
                    Block::Para(format!(
                        "On {when} the recovery of {whose} by its recovery contacts was cancelled{by}. Nothing changed in the account."
                    )),
                    Block::Para(if to_contact {
                        "Nothing more is asked of you.".to_owned()
                    } else {
                        format!(
                            "If this wasn't you and you still need to recover the account, start again; if you didn't start it at all, {support}."
                        )
                    }),
                ],
            )
        }
        (ContactTopic::Stopped, to_contact) => {
            let whose = if to_contact {
                owner.clone()
            } else {
                format!("{account} ({hint})")
            };
            (
                "An account recovery by recovery contacts is waiting again".to_owned(),
                vec![
                    Block::Para(format!(
                        "On {when} the recovery of {whose} no longer had enough confirmations (a contact was removed, or more confirmations are now needed), so it will not complete unless more contacts confirm."
                    )),
                    Block::Para(not_you.clone()),
                ],
            )
        }
        (ContactTopic::Completed, to_contact) => (
            if to_contact {
                "An account you vouched for was recovered".to_owned()
            } else {
                format!(
                    "{} was recovered by its recovery contacts",
                    capitalise(account)
                )
            },
            vec![
                Block::Para(format!(
                    "On {when} {} was recovered with the confirmation of its recovery contacts. Its recovery code no longer works; every session and device is signed out.",
                    if to_contact {
                        owner.clone()
                    } else {
                        format!("{account} ({hint})")
                    }
                )),
                Block::Para(if to_contact {
                    format!(
                        "If you think this was not its owner, tell them through another channel and {support}."
                    )
                } else {
                    format!("If this wasn't you, {support} right away.")
                }),
            ],
        ),
    };
    (subject, blocks, footer)
}
