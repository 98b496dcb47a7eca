//! Email addresses: strict validation of exactly one plain address, and the canonical lookup
//! form (trimmed, Unicode NFC, the whole address case-folded, the domain IDNA-encoded). Lookup
//! and uniqueness use that form; mail always goes to the address as stored at enrollment.
//! See docs/design.md, "Email addresses".

use unicode_normalization::UnicodeNormalization as _;

use super::Error;

/// Longest address accepted, in bytes (RFC 5321's path limit less the angle brackets).
pub const MAX_EMAIL_BYTES: usize = 254;
const MAX_LOCAL_BYTES: usize = 64;

/// A validated address: as given (trimmed, NFC) and its lookup form.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Email {
    address: String,
    lookup: String,
}

impl Email {
    /// Validates `input` as exactly one plain address. Lists, display names, quotes, comments,
    /// whitespace or control characters inside, and anything over 254 bytes are refused.
    pub fn parse(input: &str) -> Result<Self, Error> {
        let invalid = |why: &str| Error::InvalidEmail(format!("invalid email address: {why}"));
        let trimmed = input.trim();
        if trimmed.is_empty() {
            return Err(invalid("it is empty"));
        }
        if trimmed.len() > MAX_EMAIL_BYTES {
            return Err(invalid("it is longer than 254 bytes"));
        }
        // The most specific advice first: a display name or a list usually also has spaces.
        if trimmed.contains(['<', '>']) {
            return Err(invalid(
                "give one plain address without a display name, e.g. ann@example.com",
            ));
        }
        if trimmed.contains([',', ';']) {
            return Err(invalid("give exactly one address, not a list"));
        }
        if trimmed
            .chars()
            .any(|c| c.is_control() || is_invisible_format(c))
        {
            return Err(invalid("it contains control characters"));
        }
        if trimmed.chars().any(char::is_whitespace) {
            return Err(invalid("it contains spaces"));
        }
        if trimmed.contains(['(', ')', '"', '[', ']', '\\', ':']) {
            return Err(invalid(
                "give one plain address, without quotes, comments or brackets",
            ));
        }
        let address: String = trimmed.nfc().collect();
        // NFC can grow text (composition exclusions decompose): check the stored form too.
        if address.len() > MAX_EMAIL_BYTES {
            return Err(invalid("it is longer than 254 bytes"));
        }
        let mut parts = address.split('@');
        let (Some(local), Some(domain), None) = (parts.next(), parts.next(), parts.next()) else {
            return Err(invalid("it must contain exactly one @"));
        };
        check_local(local).map_err(&invalid)?;
        let ascii_domain = idna::domain_to_ascii_strict(domain)
            .or_else(|_| idna::domain_to_ascii(domain))
            .map_err(|_| invalid("the domain is not a valid domain name"))?;
        check_domain(&ascii_domain).map_err(&invalid)?;
        let lookup = format!("{}@{ascii_domain}", fold(local));
        if lookup.len() > MAX_EMAIL_BYTES {
            return Err(invalid("it is longer than 254 bytes"));
        }
        Ok(Self { address, lookup })
    }

    /// The address as given (trimmed, NFC): where mail goes.
    pub fn address(&self) -> &str {
        &self.address
    }

    /// The canonical form that lookups and uniqueness match on.
    pub fn lookup(&self) -> &str {
        &self.lookup
    }
}

/// The lookup form of a stored address (it parsed when it was stored; empty if not).
pub fn lookup_of(address: &str) -> String {
    Email::parse(address)
        .map(|e| e.lookup().to_owned())
        .unwrap_or_default()
}

/// Two stored addresses deliver to the same place: the same string but for ASCII case. Where
/// mail goes is decided exactly: the lookup form folds `ß` to `ss` to find one account, but a
/// mail server may deliver the two to different mailboxes.
pub fn same_address(a: &str, b: &str) -> bool {
    a.trim().eq_ignore_ascii_case(b.trim())
}

/// Unicode default case folding, then NFC again (folding can decompose): `ANN` and `ann`, `ß`
/// and `ss` are one mailbox for lookup. The storage migration that moved existing rows to this
/// form applies the same two steps.
pub fn fold(text: &str) -> String {
    caseless::default_case_fold_str(text).nfc().collect()
}

fn check_local(local: &str) -> Result<(), &'static str> {
    if local.is_empty() {
        return Err("the part before @ is empty");
    }
    if local.len() > MAX_LOCAL_BYTES {
        return Err("the part before @ is longer than 64 bytes");
    }
    if local.starts_with('.') || local.ends_with('.') || local.contains("..") {
        return Err("the part before @ has a misplaced dot");
    }
    // RFC 5322 atext, plus any non-ASCII character (RFC 6531).
    let atext =
        |c: char| !c.is_ascii() || c.is_ascii_alphanumeric() || "!#$%&'*+-/=?^_`{|}~.".contains(c);
    if !local.chars().all(atext) {
        return Err("the part before @ has a character addresses cannot have");
    }
    Ok(())
}

fn check_domain(domain: &str) -> Result<(), &'static str> {
    if domain.is_empty() {
        return Err("the domain is empty");
    }
    let labels: Vec<&str> = domain.split('.').collect();
    if labels.len() < 2 {
        return Err("the domain needs a dot, e.g. example.com");
    }
    for label in &labels {
        let valid = !label.is_empty()
            && label.len() <= 63
            && !label.starts_with('-')
            && !label.ends_with('-')
            && label
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-');
        if !valid {
            return Err("the domain is not a valid domain name");
        }
    }
    if labels
        .last()
        .is_some_and(|tld| tld.bytes().all(|b| b.is_ascii_digit()))
    {
        return Err("the domain must be a name, not an IP address");
    }
    Ok(())
}

/// `text` with every address-like word masked (`a***@example.com`): for text that comes from
/// elsewhere (an SMTP server's reply) before it is logged or stored.
pub fn redact_addresses(text: &str) -> String {
    text.split_inclusive(char::is_whitespace)
        .map(|word| {
            let trimmed = word.trim_end();
            let core = trimmed.trim_matches(|c: char| "<>()[]\"',;:".contains(c));
            if core.contains('@') && !core.starts_with('@') && !core.ends_with('@') {
                word.replacen(core, &mask(core), 1)
            } else {
                word.to_owned()
            }
        })
        .collect()
}

/// Invisible formatting characters (bidirectional overrides and isolates, zero-width
/// characters, the byte-order mark): they make an address look like another one.
fn is_invisible_format(c: char) -> bool {
    matches!(
        c,
        '\u{200B}'..='\u{200F}'
            | '\u{202A}'..='\u{202E}'
            | '\u{2060}'..='\u{2064}'
            | '\u{2066}'..='\u{2069}'
            | '\u{FEFF}'
    )
}

/// A masked form safe to show and log: `a***@example.com`.
pub fn mask(address: &str) -> String {
    match address.rsplit_once('@') {
        Some((local, domain)) => {
            let first: String = local.chars().take(1).collect();
            format!("{first}***@{domain}")
        }
        None => "***".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lookup(input: &str) -> String {
        Email::parse(input)
            .map(|e| e.lookup().to_owned())
            .unwrap_or_else(|e| format!("ERR {e}"))
    }

    #[test]
    fn canonical_forms() {
        let table = [
            // (input, lookup form)
            ("ann@example.com", "ann@example.com"),
            // The whole address is case-folded: one mailbox however it is typed.
            ("  Ann@EXAMPLE.com \n", "ann@example.com"),
            ("Ann@Example.COM", "ann@example.com"),
            (" ANN@Example.COM ", "ann@example.com"),
            ("ÉLISE@example.com", "\u{e9}lise@example.com"),
            // Full case folding: ß is ss.
            ("Straße@example.com", "strasse@example.com"),
            // The Turkish dotted capital İ folds to i + combining dot, never to ASCII i.
            ("İpek@example.com", "i\u{307}pek@example.com"),
            // IDNA: Unicode domains become punycode; full-width letters map to ASCII.
            ("ann@bücher.example", "ann@xn--bcher-kva.example"),
            ("ann@ＥＸＡＭＰＬＥ.com", "ann@example.com"),
            // Turkish dotted capital I in the domain maps to "i̇" per UTS 46, never to ASCII "i".
            ("ann@İstanbul.example", "ann@xn--istanbul-o0e.example"),
            // Turkish dotless ı stays distinct from i.
            ("ann@ıstanbul.example", "ann@xn--stanbul-qfb.example"),
            // NFC: a decomposed é in the local part composes.
            ("jose\u{301}@example.com", "jos\u{e9}@example.com"),
            ("jos\u{e9}@example.com", "jos\u{e9}@example.com"),
            // Full-width letters in the local part fold in case only, never to ASCII.
            ("ａnn@example.com", "ａnn@example.com"),
            ("Ａnn@example.com", "ａnn@example.com"),
        ];
        for (input, want) in table {
            assert_eq!(lookup(input), want, "{input:?}");
        }
    }

    #[test]
    fn turkish_i_never_folds_to_ascii_i() {
        for dotted in ["ann@İstanbul.example", "ann@ıstanbul.example"] {
            assert_ne!(lookup(dotted), "ann@istanbul.example", "{dotted}");
        }
        for dotted in ["İann@example.com", "ıann@example.com"] {
            assert_ne!(lookup(dotted), "iann@example.com", "{dotted}");
        }
        // Surrounding whitespace, a trailing newline included, is trimmed.
        assert_eq!(lookup("ann@example.com\n"), "ann@example.com");
    }

    #[test]
    fn the_most_useful_advice_wins() {
        let message = |input: &str| Email::parse(input).unwrap_err().to_string();
        assert!(message("Ann <ann@x.com>").contains("without a display name"));
        assert!(message("<ann@x.com>").contains("without a display name"));
        assert!(message("ann@x.com, bob@x.com").contains("not a list"));
        assert!(message("ann @x.com").contains("spaces"));
        assert!(message("ann@x.com\r\nBcc: eve@x.com").contains("control characters"));
        assert!(message("\"ann\"@x.com").contains("quotes"));
    }

    #[test]
    fn mail_goes_to_the_address_as_given() {
        let email = Email::parse("  Ann@EXAMPLE.com ").unwrap();
        assert_eq!(email.address(), "Ann@EXAMPLE.com");
    }

    #[test]
    fn anything_but_one_plain_address_is_refused() {
        for bad in [
            "",
            "   ",
            "ann",
            "ann@",
            "@example.com",
            "ann@@example.com",
            "ann@example.com,eve@evil.example",
            "ann@example.com;eve@evil.example",
            "[\"ann@example.com\",\"eve@evil.example\"]",
            "Ann <ann@example.com>",
            "\"ann\"@example.com",
            "ann(comment)@example.com",
            "ann@example.com\r\nBcc: eve@evil.example",
            "ann @example.com",
            "ann@exa mple.com",
            "ann\u{0}@example.com",
            "ann\u{202e}@example.com",
            "an\u{200b}n@example.com",
            "ann@exa\u{2066}mple.com",
            ".ann@example.com",
            "ann.@example.com",
            "an..n@example.com",
            "ann@localhost",
            "ann@-example.com",
            "ann@example..com",
            "ann@[127.0.0.1]",
            "ann@127.0.0.1",
            "＠example.com",
            "ａｎｎ＠ｅｘａｍｐｌｅ．ｃｏｍ",
        ] {
            let result = Email::parse(bad);
            assert!(
                matches!(result, Err(Error::InvalidEmail(_))),
                "{bad:?} was accepted as {result:?}"
            );
        }
        let long_local = format!("{}@example.com", "a".repeat(65));
        assert!(Email::parse(&long_local).is_err());
        let long = format!(
            "{}@{}.com",
            "a".repeat(60),
            "b".repeat(63).repeat(3).chars().collect::<String>()
        );
        assert!(Email::parse(&long).is_err());
        let exactly_254 = format!(
            "{}@{}.{}.{}.com",
            "a".repeat(64),
            "b".repeat(60),
            "c".repeat(60),
            "d".repeat(63)
        );
        assert_eq!(exactly_254.len(), 254);
        assert!(Email::parse(&exactly_254).is_ok());
        assert!(Email::parse(&format!("a{exactly_254}")).is_err());
    }

    #[test]
    fn addresses_in_foreign_text_are_masked() {
        assert_eq!(
            redact_addresses("550 5.1.1 <ann@example.com>: Recipient address rejected"),
            "550 5.1.1 <a***@example.com>: Recipient address rejected"
        );
        assert_eq!(
            redact_addresses("to bob.smith@corp.example, ok"),
            "to b***@corp.example, ok"
        );
        assert_eq!(redact_addresses("421 try later"), "421 try later");
    }

    #[test]
    fn masking_keeps_the_first_character_and_the_domain() {
        assert_eq!(mask("ann@example.com"), "a***@example.com");
        assert_eq!(mask("élise@example.com"), "é***@example.com");
        assert_eq!(mask("bogus"), "***");
    }
}
