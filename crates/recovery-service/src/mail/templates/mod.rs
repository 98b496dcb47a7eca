//! What each message says: a subject and a few blocks (paragraphs, the code, the facts of a
//! request), written once and rendered twice: as plain text, the readable original wrapped at
//! 72 columns, and as HTML with inline styles and no external assets, so that common mail
//! clients show it as intended. Values from requests (IP address, user agent) are reduced to
//! printable ASCII in both parts and HTML-escaped in the HTML part; headers never carry request
//! text. Every notice of a change the owner may not have made says what to do if it was not
//! them.

mod contacts;
mod family;

use crate::{
    domain::{
        email::mask,
        notice::{Context, Notice},
    },
    time::human,
};

/// Product name and support contact, from configuration.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Branding {
    /// `Acme` makes "your Acme account"; `None` makes "your account".
    pub product_name: Option<String>,
    /// An `https://` or `mailto:` URL for "contact support".
    pub support_url: Option<String>,
}

impl Branding {
    fn account(&self) -> String {
        match &self.product_name {
            Some(name) => format!("your {name} account"),
            None => "your account".to_owned(),
        }
    }

    fn support(&self) -> String {
        match self.support_url.as_deref() {
            Some(url) => match url.strip_prefix("mailto:") {
                Some(address) => format!("contact support at {address}"),
                None => format!("contact support at {url}"),
            },
            None => "contact your support team".to_owned(),
        }
    }
}

/// A rendered message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rendered {
    pub subject: String,
    pub text: String,
    pub html: String,
}

enum Block {
    Para(String),
    /// The verification code: its own line in text, large in HTML.
    Code(String),
    /// Labelled facts about the request.
    Facts(Vec<(&'static str, String)>),
}

/// Renders `notice`, sent to `recipient`.
pub fn render(notice: &Notice, recipient: &str, branding: &Branding) -> Rendered {
    let account = branding.account();
    let family = match &branding.product_name {
        Some(name) => format!("your {name} family"),
        None => "your family".to_owned(),
    };
    let hint = mask(recipient);
    let support = branding.support();
    let when = human(notice.context().occurred_at_ms);
    let facts = facts(notice.context());
    let mut footer =
        format!("You receive this because {hint} is the recovery email address of {account}.");
    let (subject, blocks) = match notice {
        Notice::VerificationCode(v) => {
            let until = human(v.context.occurred_at_ms + v.expires_in_minutes * 60_000);
            (
                format!("Your verification code to recover {account}"),
                vec![
                    Block::Para(format!(
                        "Someone asked to recover {account} ({hint}) with its recovery code. To go on, enter this verification code:"
                    )),
                    Block::Code(v.code.to_string()),
                    Block::Para(format!(
                        "It is valid for {} minutes, until {until}. Enter it only on the page where you started the recovery: nobody from us will ever ask you for it.",
                        v.expires_in_minutes
                    )),
                    facts,
                    Block::Para(format!(
                        "If this wasn't you, ignore this message: without this code and the account's recovery code nobody can recover it. If such messages keep coming, {support}."
                    )),
                ],
            )
        }
        Notice::RecoveryStarted(_) => (
            format!("Recovery of {account} was started"),
            vec![
                Block::Para(format!(
                    "Someone started recovering {account} ({hint}) on {when}."
                )),
                facts,
                Block::Para(format!(
                    "If this wasn't you, keep your recovery code safe: the request expires by itself. If such messages keep coming, {support}."
                )),
            ],
        ),
        Notice::CodeCreated(_) => (
            format!("A recovery code was created for {account}"),
            vec![
                Block::Para(format!(
                    "A recovery code was created for {account} ({hint}) on {when}. Keep it somewhere safe outside the account, for example printed on paper: with it and this mailbox you can get back in if you lose your password or your devices."
                )),
                facts,
                Block::Para(format!(
                    "If you didn't create it, someone may be signed in to {account}. Sign in, change your password, delete the recovery code in your account settings, and {support}."
                )),
            ],
        ),
        Notice::CodeReplaced(_) => (
            format!("Your recovery code for {account} was replaced"),
            vec![
                Block::Para(format!(
                    "A new recovery code replaced the previous one of {account} ({hint}) on {when}. The previous code no longer works; keep the new one somewhere safe."
                )),
                facts,
                Block::Para(format!(
                    "If you didn't replace it, someone may be signed in to {account}. Sign in, change your password, create a recovery code of your own, and {support}."
                )),
            ],
        ),
        Notice::CodeRevoked(_) => (
            format!("Your recovery code for {account} was deleted"),
            vec![
                Block::Para(format!(
                    "The recovery code of {account} ({hint}) was deleted on {when} and no longer works. Without one you cannot recover the account if you lose your password or devices: create a new one in your account settings."
                )),
                facts,
                Block::Para(format!(
                    "If you didn't delete it, someone may be signed in to {account}. Sign in, change your password, create a new recovery code, and {support}."
                )),
            ],
        ),
        Notice::EmailChanged(e) => (
            format!("The recovery email address of {account} changed"),
            vec![
                Block::Para(format!(
                    "On {when} the recovery email address of {account} was changed to {}. Verification codes for account recovery go there from now on.",
                    printable(&e.new_email_hint)
                )),
                facts,
                Block::Para(format!(
                    "If you didn't make this change, someone may be signed in to {account}. Sign in, change your password, set your recovery email address back, and {support}."
                )),
            ],
        ),
        Notice::RecoveryCompleted(_) => (
            format!("{} was recovered", capitalise(&account)),
            vec![
                Block::Para(format!(
                    "{} ({hint}) was recovered with its recovery code on {when}.",
                    capitalise(&account)
                )),
                Block::Para(
                    "What happens next: a new password and a new secret key are set for the account, and every session and device that was signed in is signed out and has to sign in again.".to_owned(),
                ),
                facts,
                Block::Para(format!(
                    "If this wasn't you, someone has the account's recovery code and access to this mailbox: {support} right away, and secure this mailbox by changing its password."
                )),
            ],
        ),
        Notice::RecoveryLocked(l) => {
            let until = l
                .locked_until_ms
                .map_or_else(|| format!("for {} hours", l.locked_for_hours), |u| format!("until {}", human(u)));
            (
                format!("Account recovery was locked for {account}"),
                vec![
                    Block::Para(format!(
                        "Too many wrong recovery codes were entered for {account} ({hint}), so recovery is locked {until}."
                    )),
                    facts,
                    Block::Para(
                        "If it was you, wait until then and enter the recovery code exactly as you saved it.".to_owned(),
                    ),
                    Block::Para(format!(
                        "If it wasn't you, someone may be trying to get into {account}; they would also need this mailbox. Change this mailbox's password if you think someone else can read it, and {support}."
                    )),
                ],
            )
        }
        Notice::AssistedRecoveryCode(n) => family::code(n, family_parts(&account, &family, &hint, &support, facts, &mut footer)),
        Notice::AssistedRecoveryStarted(n) => family::started(n, family_parts(&account, &family, &hint, &support, facts, &mut footer)),
        Notice::AssistedRecoveryCompleted(n) => family::completed(n, family_parts(&account, &family, &hint, &support, facts, &mut footer)),
        Notice::FamilyMemberRecovered(n) => family::member_recovered(n, family_parts(&account, &family, &hint, &support, facts, &mut footer)),
        Notice::AssistedRecoveryCancelled(n) => family::cancelled(n, family_parts(&account, &family, &hint, &support, facts, &mut footer)),
        Notice::FamilyMembershipChanged(n) => {
            if n.to_previous_address {
                footer = format!("You receive this because {hint} was the family's address for {account}.");
            }
            family::membership_changed(n, owner_parts(&account, &family, &hint, &support, facts))
        }
        Notice::RecoveryByOrganizerStarted(n) => family::organizer_started(n, owner_parts(&account, &family, &hint, &support, facts)),
        Notice::RecoveryByOrganizerCompleted(n) => family::organizer_completed(n, owner_parts(&account, &family, &hint, &support, facts)),
        Notice::FamilyMemberLeft(c) => family::member_left(c, family_parts(&account, &family, &hint, &support, facts, &mut footer)),
        Notice::RecoveryContact(n) => {
            let (subject, blocks, reason) = contacts::render(
                n,
                contacts::Parts {
                    account: &account,
                    hint: &hint,
                    support: &support,
                    facts,
                },
            );
            footer = reason;
            (subject, blocks)
        }
    };
    Rendered {
        text: text(&blocks, &footer),
        html: html(&subject, &blocks, &footer),
        subject,
    }
}

/// The parts of a family message; family mail goes to the family address, and says so.
fn family_parts<'a>(
    account: &'a str,
    family: &'a str,
    hint: &'a str,
    support: &'a str,
    facts: Block,
    footer: &mut String,
) -> family::Parts<'a> {
    *footer = format!("You receive this because {hint} is your family's address for {account}.");
    family::Parts {
        account,
        family,
        hint,
        support,
        facts,
    }
}

/// The parts of a message to the account's recovery address about its family.
fn owner_parts<'a>(
    account: &'a str,
    family: &'a str,
    hint: &'a str,
    support: &'a str,
    facts: Block,
) -> family::Parts<'a> {
    family::Parts {
        account,
        family,
        hint,
        support,
        facts,
    }
}

fn facts(context: &Context) -> Block {
    let mut facts = vec![("Time", human(context.occurred_at_ms))];
    if let Some(ip) = &context.ip_address {
        facts.push(("IP address", printable(ip)));
    }
    if let Some(agent) = &context.user_agent {
        facts.push(("Browser", browser(agent)));
    }
    Block::Facts(facts)
}

/// The browser a user agent names, in the short parsed form (see [`notify::browser`]).
fn browser(agent: &str) -> String {
    crate::domain::notify::browser(agent)
}

fn capitalise(text: &str) -> String {
    let mut chars = text.chars();
    chars.next().map_or_else(String::new, |first| {
        first.to_uppercase().chain(chars).collect()
    })
}

/// The plain-text part: paragraphs wrapped at 72 columns, the code alone on its line.
fn text(blocks: &[Block], footer: &str) -> String {
    let mut out = Vec::new();
    for block in blocks {
        match block {
            Block::Para(p) => out.push(wrap(p, 72)),
            Block::Code(code) => out.push(code.clone()),
            Block::Facts(facts) => out.push(
                facts
                    .iter()
                    .map(|(label, value)| format!("{label}: {value}"))
                    .collect::<Vec<_>>()
                    .join("\n"),
            ),
        }
    }
    out.push(format!("--\n{}", wrap(footer, 72)));
    out.join("\n\n") + "\n"
}

/// Greedy word wrap; a word longer than the width (a URL) keeps its own line whole.
fn wrap(paragraph: &str, width: usize) -> String {
    let mut lines: Vec<String> = Vec::new();
    let mut line = String::new();
    for word in paragraph.split_whitespace() {
        if !line.is_empty() && line.chars().count() + 1 + word.chars().count() > width {
            lines.push(std::mem::take(&mut line));
        }
        if !line.is_empty() {
            line.push(' ');
        }
        line.push_str(word);
    }
    if !line.is_empty() {
        lines.push(line);
    }
    lines.join("\n")
}

const FONT: &str = "font-family:-apple-system,'Segoe UI',Roboto,Helvetica,Arial,sans-serif;";

/// The HTML part: one `<p>` per paragraph, inline styles, no images or external assets.
fn html(subject: &str, blocks: &[Block], footer: &str) -> String {
    let mut body = String::new();
    for block in blocks {
        match block {
            Block::Para(p) => body.push_str(&format!(
                "<p style=\"margin:0 0 16px;\">{}</p>\n",
                escape(p)
            )),
            Block::Code(code) => body.push_str(&format!(
                "<p style=\"margin:8px 0 24px;font-family:Menlo,Consolas,'Courier New',monospace;font-size:32px;font-weight:700;letter-spacing:6px;color:#111827;\">{}</p>\n",
                escape(code)
            )),
            Block::Facts(facts) => {
                body.push_str("<table role=\"presentation\" cellpadding=\"0\" cellspacing=\"0\" style=\"margin:0 0 16px;font-size:14px;color:#4b5563;\">\n");
                for (label, value) in facts {
                    body.push_str(&format!(
                        "<tr><td style=\"padding:2px 16px 2px 0;\">{}</td><td style=\"padding:2px 0;\">{}</td></tr>\n",
                        escape(label),
                        escape(value)
                    ));
                }
                body.push_str("</table>\n");
            }
        }
    }
    format!(
        "<!doctype html>\n<html lang=\"en\">\n<head><meta charset=\"utf-8\"><meta name=\"viewport\" content=\"width=device-width\"><title>{title}</title></head>\n\
<body style=\"margin:0;padding:0;background:#f3f4f6;\">\n\
<table role=\"presentation\" width=\"100%\" cellpadding=\"0\" cellspacing=\"0\" style=\"background:#f3f4f6;\"><tr><td align=\"center\" style=\"padding:24px 12px;\">\n\
<table role=\"presentation\" width=\"100%\" cellpadding=\"0\" cellspacing=\"0\" style=\"max-width:560px;background:#ffffff;border-radius:8px;{FONT}font-size:16px;line-height:1.5;color:#111827;\"><tr><td style=\"padding:32px;\">\n\
{body}</td></tr></table>\n\
<p style=\"max-width:560px;margin:16px auto 0;{FONT}font-size:12px;line-height:1.5;color:#6b7280;\">{footer}</p>\n\
</td></tr></table>\n</body>\n</html>\n",
        title = escape(subject),
        footer = escape(footer),
    )
}

/// Printable ASCII only, at most 120 characters: request text never shapes the message.
fn printable(text: &str) -> String {
    crate::domain::notify::printable(text)
}

fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '&' => out.push_str("&amp;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use zeroize::Zeroizing;

    use super::*;
    use crate::domain::notice::{
        AssistedRecoveryCancelled, AssistedRecoveryCode, AssistedRecoveryCompleted,
        AssistedRecoveryStarted, ContactTopic, EmailChanged, FamilyMemberRecovered,
        FamilyMembershipChanged, MembershipChange, MessageKind, RecoveryByOrganizerCompleted,
        RecoveryByOrganizerStarted, RecoveryContactNotice, RecoveryLocked, VerificationCode,
    };

    /// 30 Nov 2026, 21:02 UTC.
    const T: i64 = 1_796_072_520_000;

    fn context() -> Context {
        Context {
            occurred_at_ms: T,
            ip_address: Some("203.0.113.7".into()),
            user_agent: Some(
                "Mozilla/5.0 (X11; Linux x86_64; rv:133.0) Gecko/20100101 Firefox/133.0".into(),
            ),
        }
    }

    fn contact_notice(topic: ContactTopic, to_contact: bool) -> RecoveryContactNotice {
        RecoveryContactNotice {
            topic,
            to_contact,
            owner_account_id: "acct-ann".into(),
            owner_hint: "a***@example.com".into(),
            contact_account_id: "acct-bob".into(),
            contact_hint: "b***@example.net".into(),
            threshold: 2,
            vouches: 2,
            at_ms: Some(T + 48 * 3_600_000),
            context: context(),
        }
    }

    /// Every topic, to the owner and to a contact: the owner always hears what to do if it
    /// was not them; a contact asked to act is told never to vouch for a code not heard from
    /// the person directly, and who asks from where.
    #[test]
    fn contact_mail_tells_the_owner_what_to_do_and_the_contact_never_to_vouch_blindly() {
        use ContactTopic as T;
        for topic in [
            T::Invited,
            T::InvitedByOwner,
            T::Accepted,
            T::Removed,
            T::ThresholdSet,
            T::RecoveryStarted,
            T::VouchRequested,
            T::Vouched,
            T::Pending,
            T::Cancelled,
            T::Stopped,
            T::Completed,
        ] {
            let owner = render(
                &Notice::RecoveryContact(contact_notice(topic, false)),
                "ann@example.com",
                &acme(),
            );
            let lower = owner.text.to_lowercase().replace('\n', " ");
            if !matches!(topic, T::Invited | T::VouchRequested) {
                assert!(
                    lower.contains("if this wasn't you") || lower.contains("if you didn't"),
                    "{topic:?} to the owner: {}",
                    owner.text
                );
                assert!(
                    lower.contains("https://help.acme.example/recovery"),
                    "{topic:?}"
                );
            }
            let contact = render(
                &Notice::RecoveryContact(contact_notice(topic, true)),
                "bob@example.net",
                &acme(),
            );
            let text = contact.text.replace('\n', " ");
            assert!(
                text.contains("where the account acct-ann (a***@example.com) reaches you"),
                "{topic:?}: {text}"
            );
            if matches!(topic, T::Invited | T::VouchRequested) {
                assert!(text.contains("Never vouch"), "{topic:?}: {text}");
            }
            if topic == T::VouchRequested {
                assert!(text.contains("IP address: 203.0.113.7"), "{text}");
                assert!(text.contains("Browser: Firefox 133 on Linux"), "{text}");
            }
        }
    }

    fn every_notice() -> Vec<Notice> {
        let notices = vec![
            Notice::VerificationCode(VerificationCode {
                code: Zeroizing::new("012345".into()),
                expires_in_minutes: 15,
                context: context(),
            }),
            Notice::RecoveryStarted(context()),
            Notice::CodeCreated(context()),
            Notice::CodeReplaced(context()),
            Notice::CodeRevoked(context()),
            Notice::EmailChanged(EmailChanged {
                new_email_hint: "n***@new.example".into(),
                context: context(),
            }),
            Notice::RecoveryCompleted(context()),
            Notice::RecoveryLocked(RecoveryLocked {
                locked_for_hours: 24,
                locked_until_ms: Some(T + 24 * 3_600_000),
                context: context(),
            }),
            Notice::AssistedRecoveryCode(AssistedRecoveryCode {
                code: Zeroizing::new("654321".into()),
                expires_in_hours: 24,
                context: context(),
            }),
            Notice::AssistedRecoveryStarted(AssistedRecoveryStarted {
                member_hint: "k***@example.com".into(),
                organizer_hint: "o***@example.com".into(),
                by_you: false,
                context: context(),
            }),
            Notice::AssistedRecoveryCompleted(AssistedRecoveryCompleted {
                code_revoked: true,
                context: context(),
            }),
            Notice::FamilyMemberRecovered(FamilyMemberRecovered {
                member_hint: "k***@example.com".into(),
                organizer_hint: None,
                by_you: false,
                context: context(),
            }),
            Notice::AssistedRecoveryCancelled(AssistedRecoveryCancelled {
                member_hint: "k***@example.com".into(),
                by_member: true,
                cancelled_by_hint: "k***@example.com".into(),
                to_member: false,
                by_you: false,
                context: context(),
            }),
            Notice::FamilyMembershipChanged(FamilyMembershipChanged {
                change: MembershipChange::Joined,
                family_id: "fam-1".into(),
                family_email_hint: "d***@example.net".into(),
                to_previous_address: false,
                context: context(),
            }),
            Notice::RecoveryByOrganizerStarted(RecoveryByOrganizerStarted {
                family_id: "fam-1".into(),
                organizer_hint: "o***@example.com".into(),
                family_email_hint: "d***@example.net".into(),
                expires_in_hours: 24,
                context: context(),
            }),
            Notice::RecoveryByOrganizerCompleted(RecoveryByOrganizerCompleted {
                family_id: "fam-1".into(),
                organizer_hint: "o***@example.com".into(),
                code_revoked: true,
                context: context(),
            }),
            Notice::FamilyMemberLeft(context()),
            Notice::RecoveryContact(contact_notice(ContactTopic::RecoveryStarted, false)),
        ];
        let kinds: Vec<MessageKind> = notices.iter().map(Notice::kind).collect();
        assert_eq!(kinds, MessageKind::ALL, "one sample per kind");
        notices
    }

    fn acme() -> Branding {
        Branding {
            product_name: Some("Acme".into()),
            support_url: Some("https://help.acme.example/recovery".into()),
        }
    }

    #[test]
    fn the_verification_message_shows_the_code_alone_with_who_asked_and_until_when() {
        let r = render(&every_notice()[0], "ann@example.com", &acme());
        assert!(r.text.lines().any(|l| l == "012345"), "{}", r.text);
        assert!(
            r.text
                .contains("valid for 15 minutes, until 30 Nov 2026, 21:17 UTC")
        );
        assert!(r.text.contains("Time: 30 Nov 2026, 21:02 UTC"));
        assert!(r.text.contains("IP address: 203.0.113.7"));
        assert!(
            r.text.contains("Browser: Firefox 133 on Linux"),
            "{}",
            r.text
        );
        assert!(r.text.contains("your Acme account (a***@example.com)"));
        assert!(!r.subject.contains("012345"), "no code in the subject");
        assert_eq!(
            r.subject,
            "Your verification code to recover your Acme account"
        );
        // Large and easy to copy: the digits together in one element, in a big font.
        assert!(r.html.contains(
            "font-size:32px;font-weight:700;letter-spacing:6px;color:#111827;\">012345</p>"
        ));
    }

    #[test]
    fn the_browser_is_named_in_a_short_parsed_form_never_as_sent() {
        for (agent, shown) in [
            (
                "Mozilla/5.0 (X11; Linux x86_64; rv:133.0) Gecko/20100101 Firefox/133.0",
                "Firefox 133 on Linux",
            ),
            (
                "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36",
                "Chrome 131 on Windows 10",
            ),
            ("Firefox", "an unknown browser"),
            ("", "an unknown browser"),
            (
                "Mozilla/5.0 <script>alert(1)</script> Visit http://evil.example to unlock your account now",
                "an unknown browser",
            ),
        ] {
            assert_eq!(browser(agent), shown, "{agent}");
        }
        let r = render(
            &Notice::RecoveryStarted(Context {
                occurred_at_ms: T,
                ip_address: None,
                user_agent: Some(format!(
                    "Mozilla/5.0 (X11; Linux x86_64; rv:133.0) Gecko/20100101 Firefox/133.0 {}",
                    "call +1-555-0100 to unlock ".repeat(5)
                )),
            }),
            "ann@example.com",
            &acme(),
        );
        assert!(
            r.text.contains("Browser: Firefox 133 on Linux"),
            "{}",
            r.text
        );
        assert!(
            !r.text.contains("555") && !r.html.contains("555"),
            "{}",
            r.text
        );
    }

    #[test]
    fn request_text_is_neutralised() {
        let notice = Notice::RecoveryStarted(Context {
            occurred_at_ms: 0,
            ip_address: Some("198.51.100.1".into()),
            user_agent: Some("<script>alert(1)</script>\r\nBcc: eve@evil.example é".into()),
        });
        let r = render(&notice, "ann@example.com", &Branding::default());
        // The user agent is never shown as sent: only what the parser recognised.
        assert!(!r.html.contains("script") && !r.text.contains("script"));
        assert!(r.text.contains("Browser: an unknown browser"), "{}", r.text);
        assert!(!r.text.contains('\r') && !r.text.contains('é'));
        assert!(r.text.is_ascii());
        // Other request text (a family id) is reduced to printable ASCII and escaped.
        let notice = Notice::FamilyMembershipChanged(FamilyMembershipChanged {
            change: MembershipChange::Joined,
            family_id: "<b>fam</b>\r\nBcc: eve@evil.example é".into(),
            family_email_hint: "d***@example.net".into(),
            to_previous_address: false,
            context: context(),
        });
        let r = render(&notice, "ann@example.com", &Branding::default());
        assert!(!r.html.contains("<b>fam"));
        assert!(r.html.contains("&lt;b&gt;fam"));
        assert!(!r.text.contains('\r') && !r.text.contains('é'));
        assert!(r.text.is_ascii());
        assert!(!r.subject.contains("<b>") && !r.subject.contains("evil"));
    }

    #[test]
    fn paragraphs_are_paragraphs_in_html_and_wrapped_in_text() {
        let long = "word ".repeat(40).trim().to_owned();
        let blocks = [
            Block::Para(long.clone()),
            Block::Code("012345".into()),
            Block::Facts(vec![("Time", "now".into())]),
            Block::Para("Short.".into()),
        ];
        let html = html("Subject", &blocks, "Footer.");
        // One <p> per paragraph, holding the whole paragraph, never one per wrapped line.
        assert_eq!(html.matches("<p style=\"margin:0 0 16px;\">").count(), 2);
        assert!(html.contains(&format!(">{long}</p>")));
        let text = text(&blocks, "Footer.");
        assert!(text.starts_with("word word"));
        assert!(
            text.lines().take_while(|l| l.starts_with("word")).count() >= 3,
            "{text}"
        );
        assert!(
            text.contains("\n\n012345\n\nTime: now\n\nShort.\n\n--\nFooter.\n"),
            "{text}"
        );

        for notice in every_notice() {
            let r = render(&notice, "ann@example.com", &acme());
            assert!(
                r.text
                    .lines()
                    .all(|l| l.chars().count() <= 72 || !l.contains(' ')),
                "{}",
                r.text
            );
            assert!(!r.html.contains("<br>"));
            // Inline styles only, no external assets.
            assert!(
                !r.html.contains("<img") && !r.html.contains("<link") && !r.html.contains("<style")
            );
            assert!(!r.html.contains("src="));
        }
    }

    #[test]
    fn every_notice_of_a_change_says_what_to_do_if_it_was_not_them() {
        for notice in every_notice() {
            let r = render(&notice, "ann@example.com", &acme());
            let lower = r.text.to_lowercase().replace('\n', " ");
            assert!(
                lower.contains("if this wasn't you")
                    || lower.contains("if you didn't")
                    || lower.contains("if it wasn't you"),
                "{:?}: {}",
                notice.kind(),
                r.text
            );
            if !matches!(notice.kind(), MessageKind::RecoveryStarted) {
                assert!(
                    lower.contains("https://help.acme.example/recovery"),
                    "{:?} gives the support contact",
                    notice.kind()
                );
            }
            assert!(
                lower.contains("your acme account"),
                "{:?} names the product",
                notice.kind()
            );
            assert!(
                r.subject.to_lowercase().contains("acme"),
                "{:?}: {}",
                notice.kind(),
                r.subject
            );
        }
    }

    #[test]
    fn the_recovered_notice_says_what_happens_next() {
        let notice = every_notice().remove(6);
        let r = render(&notice, "ann@example.com", &Branding::default());
        assert_eq!(r.subject, "Your account was recovered");
        let text = r.text.replace('\n', " ");
        assert!(text.contains("What happens next: a new password and a new secret key are set"));
        assert!(text.contains("is signed out and has to sign in again"));
        assert!(
            !text.contains("were signed out"),
            "not told as already done"
        );
    }

    #[test]
    fn without_branding_the_defaults_read_well() {
        let r = render(&every_notice()[2], "ann@example.com", &Branding::default());
        assert_eq!(r.subject, "A recovery code was created for your account");
        assert!(
            r.text
                .replace('\n', " ")
                .contains("and contact your support team.")
        );
        let mailto = Branding {
            product_name: None,
            support_url: Some("mailto:help@example.com".into()),
        };
        let r = render(&every_notice()[2], "ann@example.com", &mailto);
        assert!(
            r.text
                .replace('\n', " ")
                .contains("contact support at help@example.com.")
        );
    }

    #[test]
    fn the_lock_notice_says_until_when() {
        let r = render(&every_notice()[7], "ann@example.com", &Branding::default());
        assert!(
            r.text
                .replace('\n', " ")
                .contains("recovery is locked until 1 Dec 2026, 21:02 UTC")
        );
    }

    #[test]
    fn family_mail_gives_the_member_the_code_and_never_an_organizers_address() {
        let notices = every_notice();
        let r = render(&notices[8], "kid@example.com", &acme());
        assert_eq!(
            r.subject,
            "A family organizer is recovering your Acme account"
        );
        assert!(r.text.lines().any(|l| l == "654321"), "{}", r.text);
        assert!(
            r.text
                .contains("valid for 24 hours, until 1 Dec 2026, 21:02 UTC")
        );
        assert!(r.text.replace('\n', " ").contains(
            "An organizer of your family started recovering your Acme account (k***@example.com)"
        ));
        assert!(
            !r.text.contains("o***@"),
            "no organizer address: {}",
            r.text
        );
        assert!(
            r.text
                .replace('\n', " ")
                .contains("your family's address for your Acme account")
        );
        assert!(!r.subject.contains("654321"));

        // Organizers learn who began it, masked.
        let r = render(&notices[9], "org@example.com", &acme());
        assert_eq!(
            r.subject,
            "Recovery of a member of your Acme family was started"
        );
        assert!(r.text.replace('\n', " ").contains(
            "The family organizer o***@example.com started recovering the account of the family member k***@example.com"
        ));
        let mine = Notice::AssistedRecoveryStarted(AssistedRecoveryStarted {
            member_hint: "k***@example.com".into(),
            organizer_hint: "o***@example.com".into(),
            by_you: true,
            context: context(),
        });
        assert!(
            render(&mine, "org@example.com", &acme())
                .text
                .starts_with("You started recovering")
        );

        let r = render(&notices[10], "kid@example.com", &acme());
        assert!(
            r.text
                .replace('\n', " ")
                .contains("Your recovery code no longer works")
        );
        let r = render(&notices[11], "org@example.com", &acme());
        assert!(
            r.text
                .replace('\n', " ")
                .contains("recovered their account on their own, with their recovery code")
        );
        let r = render(&notices[12], "org@example.com", &acme());
        assert!(
            r.text
                .replace('\n', " ")
                .contains("was cancelled by the member on")
        );

        // The member's cancellation notice never names the organizer.
        let to_member = Notice::AssistedRecoveryCancelled(AssistedRecoveryCancelled {
            member_hint: "k***@example.com".into(),
            by_member: false,
            cancelled_by_hint: String::new(),
            to_member: true,
            by_you: false,
            context: context(),
        });
        let r = render(&to_member, "kid@example.com", &acme());
        assert!(
            r.text
                .replace('\n', " ")
                .contains("was cancelled by a family organizer on")
        );
        assert!(!r.text.contains("o***@"));
    }
}
