//! Subjects and bodies (plain text plus an HTML alternative) for each outbox message kind.
//! Values from requests (IP address, user agent) are reduced to printable ASCII for the text
//! part and HTML-escaped for the HTML part; headers never carry request text.

use serde_json::Value;

use crate::time::rfc3339;

/// A rendered message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rendered {
    pub subject: String,
    pub text: String,
    pub html: String,
}

/// Renders message `kind` from its template data. `None` for a kind this build does not know.
pub fn render(kind: &str, data: &Value) -> Option<Rendered> {
    let when = data["occurred_at_ms"]
        .as_i64()
        .map(rfc3339)
        .unwrap_or_default();
    let context = context_lines(data, &when);
    let (subject, lines): (&str, Vec<String>) = match kind {
        "verification_code" => {
            let code = data["code"].as_str()?;
            let minutes = data["expires_in_minutes"].as_i64().unwrap_or(15);
            (
                "Your account recovery verification code",
                [
                    vec![
                        "Someone asked to recover your account with its recovery code.".to_owned(),
                        "Your verification code is:".to_owned(),
                        String::new(),
                        code.to_owned(),
                        String::new(),
                        format!("It is valid for {minutes} minutes and can be used once."),
                        "If this was not you, ignore this message: without this code".to_owned(),
                        "nobody can recover your account.".to_owned(),
                        String::new(),
                    ],
                    context,
                ]
                .concat(),
            )
        }
        "recovery_started" => (
            "Account recovery was started",
            [
                vec![
                    "Someone started recovering your account with your email address.".to_owned(),
                    "If this was not you, keep your recovery code safe; the request expires"
                        .to_owned(),
                    "by itself.".to_owned(),
                    String::new(),
                ],
                context,
            ]
            .concat(),
        ),
        "code_created" => (
            "A recovery code was created for your account",
            vec![
                "A recovery code was created for your account. Keep it somewhere safe,".to_owned(),
                "outside the account: with it and this mailbox you can get back in.".to_owned(),
                String::new(),
                format!("Time: {when}"),
            ],
        ),
        "code_replaced" => (
            "Your recovery code was replaced",
            vec![
                "A new recovery code replaced the previous one, which no longer works.".to_owned(),
                "If this was not you, sign in and review your account security now.".to_owned(),
                String::new(),
                format!("Time: {when}"),
            ],
        ),
        "code_revoked" => (
            "Your recovery code was deleted",
            vec![
                "Your account's recovery code was deleted and no longer works.".to_owned(),
                "Create a new one from your account settings to keep a way back in.".to_owned(),
                String::new(),
                format!("Time: {when}"),
            ],
        ),
        "email_changed" => {
            let hint = printable(data["new_email_hint"].as_str().unwrap_or_default());
            (
                "Your account recovery email address changed",
                vec![
                    format!("Recovery messages for your account now go to {hint}."),
                    "If this was not you, sign in and review your account security now.".to_owned(),
                    String::new(),
                    format!("Time: {when}"),
                ],
            )
        }
        "recovery_completed" => (
            "Your account was recovered",
            [
                vec![
                    "Your account was recovered with its recovery code. Its password and"
                        .to_owned(),
                    "secret key were replaced, and all your devices were signed out.".to_owned(),
                    "If this was not you, contact support immediately.".to_owned(),
                    String::new(),
                ],
                context,
            ]
            .concat(),
        ),
        "recovery_locked" => {
            let hours = data["locked_for_hours"].as_i64().unwrap_or(24);
            (
                "Account recovery was locked",
                [
                    vec![
                        "Too many wrong recovery codes were entered for your account, so"
                            .to_owned(),
                        format!("recovery is locked for {hours} hours."),
                        "If this was not you, someone may be trying to get into your account."
                            .to_owned(),
                        String::new(),
                    ],
                    context,
                ]
                .concat(),
            )
        }
        _ => return None,
    };
    let text = lines.join("\n") + "\n";
    let html = format!(
        "<!doctype html>\n<html><body style=\"font-family: sans-serif\">\n{}\n</body></html>\n",
        lines
            .iter()
            .map(|line| if line.is_empty() {
                "<br>".to_owned()
            } else {
                format!("<p>{}</p>", escape(line))
            })
            .collect::<Vec<_>>()
            .join("\n")
    );
    Some(Rendered {
        subject: subject.to_owned(),
        text,
        html,
    })
}

fn context_lines(data: &Value, when: &str) -> Vec<String> {
    let mut lines = vec![format!("Time: {when}")];
    if let Some(ip) = data["ip_address"].as_str() {
        lines.push(format!("IP address: {}", printable(ip)));
    }
    if let Some(agent) = data["user_agent"].as_str() {
        lines.push(format!("Browser: {}", printable(agent)));
    }
    lines
}

/// Printable ASCII only, at most 120 characters: request text never shapes the message.
fn printable(text: &str) -> String {
    text.chars()
        .map(|c| {
            if c.is_ascii_graphic() || c == ' ' {
                c
            } else {
                '?'
            }
        })
        .take(120)
        .collect()
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
    use serde_json::json;

    use super::*;

    #[test]
    fn the_verification_message_shows_the_code_on_its_own_line_and_its_lifetime() {
        let data = json!({ "code": "012345", "expires_in_minutes": 15, "occurred_at_ms": 0,
                           "ip_address": "203.0.113.7", "user_agent": "Firefox" });
        let r = render("verification_code", &data).unwrap();
        assert!(r.text.lines().any(|l| l == "012345"));
        assert!(r.text.contains("valid for 15 minutes"));
        assert!(r.text.contains("203.0.113.7") && r.text.contains("Firefox"));
        assert!(r.html.contains("012345"));
        assert!(!r.subject.contains("012345"), "no code in the subject");
    }

    #[test]
    fn request_text_is_neutralised() {
        let data = json!({ "occurred_at_ms": 0, "ip_address": "198.51.100.1",
                           "user_agent": "<script>alert(1)</script>\r\nBcc: eve@evil.example é" });
        let r = render("recovery_started", &data).unwrap();
        assert!(!r.html.contains("<script>"));
        assert!(r.html.contains("&lt;script&gt;"));
        assert!(!r.text.contains('\r') && !r.text.contains('é'));
        assert!(r.text.is_ascii());
    }

    #[test]
    fn every_kind_renders_and_the_completion_says_devices_were_signed_out() {
        for kind in [
            "verification_code",
            "recovery_started",
            "code_created",
            "code_replaced",
            "code_revoked",
            "email_changed",
            "recovery_completed",
            "recovery_locked",
        ] {
            let data = json!({ "code": "123456", "occurred_at_ms": 0 });
            assert!(render(kind, &data).is_some(), "{kind}");
        }
        let r = render("recovery_completed", &json!({ "occurred_at_ms": 0 })).unwrap();
        assert!(r.text.contains("all your devices were signed out"));
        assert!(render("unknown_kind", &json!({})).is_none());
    }
}
