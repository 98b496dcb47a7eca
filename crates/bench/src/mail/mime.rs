//! Just enough MIME to find the verification code in a message: headers (unfolded), multipart
//! bodies, quoted-printable and base64, and the code line of the text/plain part.

use base64::Engine as _;

/// A parsed message or body part.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Part {
    headers: Vec<(String, String)>,
    body: String,
}

impl Part {
    /// Splits `raw` at the first empty line; folded header lines are joined.
    pub fn parse(raw: &str) -> Self {
        let raw = raw.strip_prefix('\u{feff}').unwrap_or(raw);
        let mut headers: Vec<(String, String)> = Vec::new();
        let mut rest = raw;
        loop {
            let (line, after) = match rest.find('\n') {
                Some(i) => (&rest[..i], &rest[i + 1..]),
                None => (rest, ""),
            };
            let line = line.strip_suffix('\r').unwrap_or(line);
            if line.is_empty() {
                rest = after;
                break;
            }
            if line.starts_with([' ', '\t']) {
                if let Some((_, value)) = headers.last_mut() {
                    value.push(' ');
                    value.push_str(line.trim());
                }
            } else if let Some((name, value)) = line.split_once(':') {
                headers.push((name.trim().to_owned(), value.trim().to_owned()));
            }
            if after.is_empty() {
                rest = after;
                break;
            }
            rest = after;
        }
        Self {
            headers,
            body: rest.to_owned(),
        }
    }

    /// The first header called `name` (any case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The media type, lower-cased (`text/plain` when absent, as RFC 2045 says).
    fn media_type(&self) -> String {
        self.header("Content-Type")
            .and_then(|v| v.split(';').next())
            .map_or_else(
                || "text/plain".to_owned(),
                |t| t.trim().to_ascii_lowercase(),
            )
    }

    /// A parameter of the Content-Type header, e.g. `boundary`.
    fn content_type_param(&self, param: &str) -> Option<String> {
        let value = self.header("Content-Type")?;
        value.split(';').skip(1).find_map(|p| {
            let (name, v) = p.split_once('=')?;
            name.trim()
                .eq_ignore_ascii_case(param)
                .then(|| v.trim().trim_matches('"').to_owned())
        })
    }

    /// The decoded text of the first text/plain part (searched depth first).
    pub fn text_plain(&self) -> Option<String> {
        let media = self.media_type();
        if media.starts_with("multipart/") {
            let boundary = self.content_type_param("boundary")?;
            return split_multipart(&self.body, &boundary)
                .into_iter()
                .find_map(|part| Part::parse(part).text_plain());
        }
        (media == "text/plain").then(|| self.decoded_body())
    }

    fn decoded_body(&self) -> String {
        let encoding = self
            .header("Content-Transfer-Encoding")
            .unwrap_or("7bit")
            .trim()
            .to_ascii_lowercase();
        match encoding.as_str() {
            "quoted-printable" => decode_quoted_printable(&self.body),
            "base64" => {
                let compact: String = self.body.chars().filter(|c| !c.is_whitespace()).collect();
                base64::engine::general_purpose::STANDARD
                    .decode(compact)
                    .map(|b| String::from_utf8_lossy(&b).into_owned())
                    .unwrap_or_default()
            }
            _ => self.body.clone(),
        }
    }

    /// The address of the `To` header, lower-cased (`Ann <ann@x>` and `ann@x` alike).
    pub fn recipient(&self) -> Option<String> {
        self.header("To").and_then(address_of)
    }
}

/// The bare address of a header value or SMTP path: inside `<…>` when present.
pub fn address_of(value: &str) -> Option<String> {
    let inner = match (value.find('<'), value.rfind('>')) {
        (Some(start), Some(end)) if start < end => &value[start + 1..end],
        _ => value,
    };
    let inner = inner.trim();
    (!inner.is_empty()).then(|| inner.to_ascii_lowercase())
}

/// The bodies between `--boundary` delimiter lines, up to `--boundary--`.
fn split_multipart<'a>(body: &'a str, boundary: &str) -> Vec<&'a str> {
    let delimiter = format!("--{boundary}");
    let mut parts = Vec::new();
    let mut start: Option<usize> = None;
    let mut offset = 0;
    for line in body.split_inclusive('\n') {
        let trimmed = line.trim_end();
        if trimmed == delimiter || trimmed == format!("{delimiter}--") {
            if let Some(s) = start {
                parts.push(&body[s..offset]);
            }
            if trimmed.ends_with("--") && trimmed != delimiter {
                return parts;
            }
            start = Some(offset + line.len());
        }
        offset += line.len();
    }
    parts
}

/// Decodes quoted-printable text: `=XX` bytes and `=` soft line breaks.
pub fn decode_quoted_printable(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'=' {
            let rest = &bytes[i + 1..];
            if rest.starts_with(b"\r\n") {
                i += 3;
                continue;
            }
            if rest.starts_with(b"\n") {
                i += 2;
                continue;
            }
            if let (Some(h), Some(l)) = (
                rest.first().and_then(|b| hex_value(*b)),
                rest.get(1).and_then(|b| hex_value(*b)),
            ) {
                out.push(h * 16 + l);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn hex_value(b: u8) -> Option<u8> {
    char::from(b)
        .to_digit(16)
        .and_then(|d| u8::try_from(d).ok())
}

/// The verification code in a plain-text body: the first line that is exactly 6 digits,
/// optionally split in halves by one space or dash (`584 895`), returned without separator.
pub fn find_code(text: &str) -> Option<String> {
    text.lines().find_map(|line| {
        let b = line.trim().as_bytes();
        let digits: Vec<u8> = match b {
            [a, b2, c, b' ' | b'-', d, e, f] => {
                vec![*a, *b2, *c, *d, *e, *f]
            }
            [_, _, _, _, _, _] => b.to_vec(),
            _ => return None,
        };
        digits
            .iter()
            .all(u8::is_ascii_digit)
            .then(|| String::from_utf8_lossy(&digits).into_owned())
    })
}

/// The recipient (from `To`) and the verification code of a raw message, when it has both.
pub fn recipient_and_code(raw: &str) -> Option<(String, String)> {
    let message = Part::parse(raw);
    let code = find_code(&message.text_plain()?)?;
    Some((message.recipient()?, code))
}

#[cfg(test)]
mod tests {
    use super::*;

    const MULTIPART: &str = "From: Account Recovery <no-reply@localhost>\r\n\
To: Ann <Ann@Example.com>\r\n\
Subject: Your account recovery verification code\r\n\
MIME-Version: 1.0\r\n\
Content-Type: multipart/alternative;\r\n boundary=\"XyZ\"\r\n\
\r\n\
--XyZ\r\n\
Content-Type: text/plain; charset=utf-8\r\n\
Content-Transfer-Encoding: quoted-printable\r\n\
\r\n\
Someone asked to recover your account with its recovery code. Your verif=\r\n\
ication code is:\r\n\
\r\n\
584 895\r\n\
\r\n\
Caf=C3=A9 time: 2026-11-30\r\n\
--XyZ\r\n\
Content-Type: text/html; charset=utf-8\r\n\
\r\n\
<p>111111</p>\r\n\
--XyZ--\r\n";

    #[test]
    fn the_code_comes_from_the_text_part_of_a_multipart_message() {
        let message = Part::parse(MULTIPART);
        assert_eq!(message.recipient().as_deref(), Some("ann@example.com"));
        let text = message.text_plain().unwrap();
        assert!(text.contains("Your verification code is:"), "{text}");
        assert!(text.contains("Café"), "{text}");
        assert_eq!(
            recipient_and_code(MULTIPART),
            Some(("ann@example.com".to_owned(), "584895".to_owned()))
        );
    }

    #[test]
    fn a_plain_message_and_base64_bodies() {
        let plain = "To: bob@example.com\nSubject: x\n\nYour code:\n\n012345\n";
        assert_eq!(
            recipient_and_code(plain),
            Some(("bob@example.com".to_owned(), "012345".to_owned()))
        );
        let b64 = "To: <c@example.com>\nContent-Type: text/plain\nContent-Transfer-Encoding: base64\n\nY29kZToKMDEyLTM0NQo=\n";
        assert_eq!(
            recipient_and_code(b64),
            Some(("c@example.com".to_owned(), "012345".to_owned()))
        );
        // No code line (a "recovery started" notice): nothing.
        assert_eq!(
            recipient_and_code("To: a@b.c\n\nRecovery started at 10.0.0.1\n"),
            None
        );
    }

    #[test]
    fn code_lines_are_exactly_six_digits_with_one_optional_separator() {
        for (text, want) in [
            ("123456", Some("123456")),
            ("  123456  ", Some("123456")),
            ("123 456", Some("123456")),
            ("123-456", Some("123456")),
            ("12345", None),
            ("1234567", None),
            ("123  456", None),
            ("12 3456", None),
            ("abc123", None),
            ("123_456", None),
            ("intro\n2026-11\n654321\n", Some("654321")),
        ] {
            assert_eq!(find_code(text).as_deref(), want, "{text:?}");
        }
    }

    #[test]
    fn quoted_printable_decodes_bytes_and_soft_breaks() {
        assert_eq!(decode_quoted_printable("a=3Db=\r\nc=\nd"), "a=bcd");
        assert_eq!(decode_quoted_printable("caf=C3=A9"), "café");
        // A stray `=` stays as it is.
        assert_eq!(decode_quoted_printable("x=zz"), "x=zz");
    }

    #[test]
    fn truncated_messages_yield_nothing_rather_than_a_wrong_code() {
        let cut = &MULTIPART[..MULTIPART.find("584").unwrap() + 2];
        assert_eq!(recipient_and_code(cut), None);
    }
}
