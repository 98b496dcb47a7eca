//! The recovery code format: `RC1-` then 27 random Crockford base32 characters (135 bits from
//! the OS CSPRNG) and one Luhn mod 32 check character, in seven groups of four:
//! `RC1-XXXX-XXXX-XXXX-XXXX-XXXX-XXXX-XXXC`.
//!
//! Parsing is forgiving as docs/design.md says (any case, with or without the prefix, separators and
//! surrounding spaces; `I`/`L` read as `1`, `O` as `0`), and the check character catches every
//! single-character typo before any hashing.

use zeroize::Zeroizing;

use super::{Error, secrets::random_bytes};
use crate::crypto::{KeyRing, Purpose, SecretKey, hmac_sha256, subkey};

/// Crockford's base32 alphabet.
const ALPHABET: &[u8; 32] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";
/// Random characters per code (27 × 5 = 135 bits).
pub const RANDOM_CHARS: usize = 27;
const TOTAL_CHARS: usize = RANDOM_CHARS + 1;
const PREFIX: &str = "RC1";

/// A recovery code in canonical form (28 characters, no prefix or separators). Zeroized on
/// drop; never printed.
pub struct RecoveryCode(Zeroizing<String>);

impl std::fmt::Debug for RecoveryCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RecoveryCode([redacted])")
    }
}

impl RecoveryCode {
    /// A fresh code from the operating system's CSPRNG.
    pub fn generate() -> Result<Self, Error> {
        let mut chars = Zeroizing::new(String::with_capacity(TOTAL_CHARS));
        let mut bytes = Zeroizing::new([0u8; RANDOM_CHARS]);
        crate::crypto::getrandom_fill(&mut *bytes).map_err(|err| {
            tracing::error!(error = %err, "random source failed");
            Error::Internal
        })?;
        // 256 is a multiple of 32: the low five bits of a uniform byte are uniform.
        for b in bytes.iter() {
            chars.push(char::from(ALPHABET[usize::from(b & 31)]));
        }
        let check = check_char(chars.as_bytes());
        chars.push(char::from(check));
        Ok(Self(chars))
    }

    /// Parses user input. Errors say what is wrong without echoing the input.
    pub fn parse(input: &str) -> Result<Self, Error> {
        let text = Zeroizing::new(input.trim().to_ascii_uppercase());
        let mut chars = Zeroizing::new(String::with_capacity(TOTAL_CHARS + PREFIX.len()));
        for c in text.chars() {
            let mapped = match c {
                '-' | ' ' => continue,
                'I' | 'L' => '1',
                'O' => '0',
                c if c.is_ascii() && ALPHABET.contains(&(c as u8)) => c,
                _ => {
                    return Err(Error::RecoveryCodeMalformed(
                        "it has a character recovery codes never contain",
                    ));
                }
            };
            chars.push(mapped);
        }
        // The prefix is recognised by length, whatever separates it: `RC1-…`, `RC1 …`, `RC1…`
        // (a code may itself begin with `RC1`).
        if chars.len() == TOTAL_CHARS + PREFIX.len() && chars.starts_with(PREFIX) {
            chars.drain(..PREFIX.len());
        }
        if chars.len() != TOTAL_CHARS {
            return Err(Error::RecoveryCodeMalformed(
                "it has the wrong number of characters",
            ));
        }
        let (random, check) = chars.as_bytes().split_at(RANDOM_CHARS);
        if check_char(random) != check[0] {
            return Err(Error::RecoveryCodeMalformed(
                "its check character does not match",
            ));
        }
        Ok(Self(chars))
    }

    /// The canonical characters that get hashed.
    pub fn canonical(&self) -> &[u8] {
        self.0.as_bytes()
    }

    /// The form shown to the person, once: `RC1-XXXX-…`.
    pub fn display(&self) -> Zeroizing<String> {
        let mut out = Zeroizing::new(String::with_capacity(PREFIX.len() + TOTAL_CHARS + 8));
        out.push_str(PREFIX);
        for group in self.0.as_bytes().chunks(4) {
            out.push('-');
            out.extend(group.iter().map(|&b| char::from(b)));
        }
        out
    }
}

fn value(c: u8) -> usize {
    ALPHABET.iter().position(|&a| a == c).unwrap_or(0)
}

/// Luhn mod 32 over `chars` (already in the alphabet): the character that makes the whole
/// sequence check out.
fn check_char(chars: &[u8]) -> u8 {
    const N: usize = 32;
    let mut factor = 2;
    let mut sum = 0;
    for &c in chars.iter().rev() {
        let addend = factor * value(c);
        factor = if factor == 2 { 1 } else { 2 };
        sum += addend / N + addend % N;
    }
    ALPHABET[(N - sum % N) % N]
}

/// A 6-digit email code: what proves that a person reads the mailbox. Zeroized on drop; never
/// printed.
pub struct EmailCode(Zeroizing<String>);

impl std::fmt::Debug for EmailCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("EmailCode([redacted])")
    }
}

impl EmailCode {
    /// A uniformly random code from the operating system's CSPRNG.
    pub fn generate() -> Result<Self, Error> {
        // Rejection sampling over u32: values at or above the largest multiple of 10^6 are
        // redrawn.
        const LIMIT: u32 = u32::MAX - (u32::MAX % 1_000_000);
        loop {
            let n = u32::from_le_bytes(random_bytes()?);
            if n < LIMIT {
                return Ok(Self(Zeroizing::new(format!("{:06}", n % 1_000_000))));
            }
        }
    }

    /// The 6 digits as a person types them: surrounding spaces trimmed, and one space or dash
    /// between the two halves accepted (`584 895`, `584-895`). Errors never echo the input.
    pub fn parse(input: &str) -> Result<Self, Error> {
        let bytes = input.trim().as_bytes();
        let code: Zeroizing<Vec<u8>> = Zeroizing::new(match bytes {
            [a, b, c, b' ' | b'-', d, e, f] => vec![*a, *b, *c, *d, *e, *f],
            [_, _, _, _, _, _] => bytes.to_vec(),
            _ => return Err(Error::EmailCodeMalformed),
        });
        if !code.iter().all(u8::is_ascii_digit) {
            return Err(Error::EmailCodeMalformed);
        }
        // Six ASCII digits: valid UTF-8.
        let digits = std::str::from_utf8(&code).map_err(|_| Error::EmailCodeMalformed)?;
        Ok(Self(Zeroizing::new(digits.to_owned())))
    }

    /// The six digits: for the mail that carries them.
    pub fn digits(&self) -> &str {
        &self.0
    }

    /// HMAC-SHA-256 of the code, bound to its flow, under `key`'s MAC subkey (hex): what the
    /// flow keeps instead of the code.
    pub fn mac(&self, key: &SecretKey, flow_id: &str) -> String {
        hex::encode(self.mac_bytes(key, flow_id))
    }

    fn mac_bytes(&self, key: &SecretKey, flow_id: &str) -> [u8; 32] {
        let subkey = subkey(key, Purpose::EmailCodeMac);
        hmac_sha256(&*subkey, &[flow_id.as_bytes(), b"\0", self.0.as_bytes()])
    }

    /// Whether the code is the one a flow keeps the MAC of (`stored_hex`, made under
    /// `key_id`), compared in constant time.
    pub fn matches(&self, keys: &KeyRing, key_id: &str, flow_id: &str, stored_hex: &str) -> bool {
        use subtle::ConstantTimeEq as _;
        let (Some(key), Ok(stored)) = (keys.get(key_id), hex::decode(stored_hex)) else {
            return false;
        };
        let computed = self.mac_bytes(key, flow_id);
        computed.len() == stored.len() && bool::from(computed.ct_eq(&stored))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_codes_have_the_documented_shape_and_parse_back() {
        let code = RecoveryCode::generate().unwrap();
        let shown = code.display();
        assert_eq!(shown.len(), 3 + 7 * 5);
        assert!(shown.starts_with("RC1-"));
        let groups: Vec<&str> = shown.split('-').skip(1).collect();
        assert_eq!(groups.len(), 7);
        assert!(groups.iter().all(|g| g.len() == 4));
        let parsed = RecoveryCode::parse(&shown).unwrap();
        assert_eq!(parsed.canonical(), code.canonical());
    }

    #[test]
    fn codes_are_random() {
        let a = RecoveryCode::generate().unwrap();
        let b = RecoveryCode::generate().unwrap();
        assert_ne!(a.canonical(), b.canonical());
    }

    #[test]
    fn parsing_forgives_case_separators_prefix_and_lookalikes() {
        let code = RecoveryCode::generate().unwrap();
        let shown = code.display().to_string();
        let bare: String = shown[4..].replace('-', "");
        let variants = [
            shown.to_lowercase(),
            format!("  {shown}  "),
            shown[4..].to_owned(),
            bare.clone(),
            format!("rc1{bare}"),
            shown.replace('-', " "),
            bare.replace('1', "l").replace('0', "O"),
            bare.replace('1', "I").replace('0', "o"),
        ];
        for variant in variants {
            let parsed = RecoveryCode::parse(&variant).unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(parsed.canonical(), code.canonical());
        }
    }

    #[test]
    fn every_single_character_typo_is_caught() {
        for _ in 0..20 {
            let code = RecoveryCode::generate().unwrap();
            let canonical = code.canonical().to_vec();
            for position in 0..canonical.len() {
                for &replacement in ALPHABET {
                    if replacement == canonical[position] {
                        continue;
                    }
                    let mut typo = canonical.clone();
                    typo[position] = replacement;
                    let typo = String::from_utf8(typo).unwrap();
                    assert!(
                        matches!(
                            RecoveryCode::parse(&typo),
                            Err(Error::RecoveryCodeMalformed(_))
                        ),
                        "a typo at {position} slipped through"
                    );
                }
            }
        }
    }

    #[test]
    fn wrong_shapes_are_malformed() {
        let code = RecoveryCode::generate().unwrap();
        let shown = code.display().to_string();
        for bad in [
            String::new(),
            "RC1-".to_owned(),
            shown[..shown.len() - 1].to_owned(),
            format!("{shown}A"),
            format!("{}U", &shown[..shown.len() - 1]),
            format!("{}!", &shown[..shown.len() - 1]),
            "RC1-ÄÄÄÄ".to_owned(),
        ] {
            assert!(
                matches!(
                    RecoveryCode::parse(&bad),
                    Err(Error::RecoveryCodeMalformed(_))
                ),
                "{bad:?}"
            );
        }
    }

    /// Check characters computed independently (Python, from the published Luhn mod N
    /// algorithm over this alphabet), not from this implementation.
    #[test]
    fn luhn_mod_32_known_answers() {
        for (random, check) in [
            ("000000000000000000000000000", b'0'),
            ("0123456789ABCDEFGHJKMNPQRST", b'5'),
            ("ZZZZZZZZZZZZZZZZZZZZZZZZZZZ", b'V'),
            ("7QJ2M8XK4TPR9D3WV6HBN1CYG5F", b'W'),
            ("VWXYZVWXYZVWXYZVWXYZVWXYZVW", b'H'),
        ] {
            assert_eq!(check_char(random.as_bytes()), check, "{random}");
            let code = format!("RC1-{random}{}", char::from(check));
            assert!(RecoveryCode::parse(&code).is_ok(), "{code}");
        }
    }

    #[test]
    fn debug_never_shows_the_code() {
        let code = RecoveryCode::generate().unwrap();
        let shown = format!("{code:?}");
        assert!(!shown.contains(std::str::from_utf8(&code.canonical()[..8]).unwrap()));
    }
    #[test]
    fn email_codes_are_six_digits_and_vary() {
        let codes: std::collections::BTreeSet<String> = (0..200)
            .map(|_| EmailCode::generate().unwrap().digits().to_owned())
            .collect();
        assert!(
            codes
                .iter()
                .all(|c| c.len() == 6 && c.bytes().all(|b| b.is_ascii_digit()))
        );
        assert!(
            codes.len() > 190,
            "200 draws from a million should rarely collide"
        );
    }

    #[test]
    fn an_email_code_is_never_printed() {
        let code = EmailCode::parse("012345").unwrap();
        assert_eq!(format!("{code:?}"), "EmailCode([redacted])");
    }

    #[test]
    fn email_code_format_is_checked_before_anything_else() {
        for good in [" 012345 ", "012 345", "012-345", "\t012345\n", " 012 345 "] {
            assert_eq!(
                EmailCode::parse(good).unwrap().digits(),
                "012345",
                "{good:?}"
            );
        }
        for bad in [
            "",
            "12345",
            "1234567",
            "12a456",
            "１２３４５６",
            "12 345",
            "0123 45",
            "012  345",
            "012_345",
            "012--345",
            "01-2345",
            "0-1-2-3-4-5",
        ] {
            assert!(
                matches!(EmailCode::parse(bad), Err(Error::EmailCodeMalformed)),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn macs_verify_under_any_listed_key_and_bind_the_flow() {
        let code = |digits: &str| EmailCode::parse(digits).unwrap();
        let ring = |text: &str| KeyRing::parse(text).unwrap();
        const A: &str = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";
        const B: &str = "ffeeddccbbaa99887766554433221100ffeeddccbbaa99887766554433221100";
        let old = ring(&format!("old:{A}"));
        let mac = code("123456").mac(old.current(), "flow-1");
        assert!(code("123456").matches(&old, "old", "flow-1", &mac));
        assert!(!code("123457").matches(&old, "old", "flow-1", &mac));
        assert!(!code("123456").matches(&old, "old", "flow-2", &mac));
        let rotated = ring(&format!("new:{B},old:{A}"));
        assert!(code("123456").matches(&rotated, "old", "flow-1", &mac));
        assert!(!code("123456").matches(&rotated, "gone", "flow-1", &mac));
    }
}
