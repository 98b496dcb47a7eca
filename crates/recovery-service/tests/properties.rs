//! Property tests: hostile input to the parsers that face callers is harmless. Each property
//! runs a few hundred to a few thousand cases, so the file stays fast in a debug build; `PROPTEST_CASES=100000 cargo test -p recovery-service
//! --test properties` runs them harder. The `cargo fuzz` targets under `fuzz/` cover the same
//! parsers with coverage guidance.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests fail loudly

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use proptest::prelude::*;
use proptest::sample::select;
use prost::Message as _;
use recovery_proto::v1;
use recovery_service::crypto::{
    KeyRing,
    opaque::{self, OpaqueKeys},
};
use recovery_service::domain::code::{EmailCode, RecoveryCode};
use recovery_service::domain::email::{Email, MAX_EMAIL_BYTES};
use recovery_service::domain::{Error, decode_page_token, encode_page_token};

/// Crockford's base32 alphabet, as API.md gives it.
const ALPHABET: &[u8; 32] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";
const RANDOM_CHARS: usize = 27;

fn config(cases: u32) -> ProptestConfig {
    ProptestConfig {
        cases,
        // The shrinker's default budget is generous; a failure here is readable without it.
        max_shrink_iters: 4096,
        // Failures are kept as explicit regression tests below, not as files beside this one.
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

// ---------------------------------------------------------------------------------------------
// Recovery codes
// ---------------------------------------------------------------------------------------------

/// Luhn mod 32 written from API.md, independently of the service's own implementation.
fn luhn_mod_32(random: &[u8]) -> u8 {
    let value = |c: u8| ALPHABET.iter().position(|&a| a == c).unwrap();
    let mut factor = 2;
    let mut sum = 0;
    for &c in random.iter().rev() {
        let addend = factor * value(c);
        factor = if factor == 2 { 1 } else { 2 };
        sum += addend / 32 + addend % 32;
    }
    ALPHABET[(32 - sum % 32) % 32]
}

/// A valid code in canonical form: 27 random alphabet characters and the check character.
fn valid_code() -> impl Strategy<Value = String> {
    prop::collection::vec(select(ALPHABET.to_vec()), RANDOM_CHARS).prop_map(|mut chars| {
        let check = luhn_mod_32(&chars);
        chars.push(check);
        String::from_utf8(chars).unwrap()
    })
}

/// Strings made mostly of what codes are made of, so that many of them come close to valid.
fn code_like() -> impl Strategy<Value = String> {
    let chars: Vec<char> = "0123456789ABCDEFGHJKMNPQRSTVWXYZabcxyzILOilouU-- \t\n\r\0éÄ\u{130}\u{131}\u{17f}\u{212a}\u{ff21}\u{2028}\u{a0}".chars().collect();
    prop::collection::vec(select(chars), 0..48).prop_map(|v| v.into_iter().collect())
}

/// How a person might type `canonical`: any case, `1` as `I`/`i`/`L`/`l`, `0` as `O`/`o`,
/// separators anywhere (none, one or two of `-`/` `), the prefix in any case or not at all,
/// surrounding whitespace.
fn typed_variant(
    canonical: &str,
    spelling: &[u8],
    separators: &[u8],
    prefix: u8,
    padding: (u8, u8),
) -> String {
    let pad = |n: u8| [" ", "", "  ", "\t", "\n", " \r\n"][usize::from(n % 6)];
    let mut out = String::from(pad(padding.0));
    out.push_str(["", "RC1-", "rc1-", "Rc1 ", "rC1", "RC1 - "][usize::from(prefix % 6)]);
    for (i, c) in canonical.chars().enumerate() {
        let choice = spelling[i];
        let typed = match c {
            '1' => ['1', 'I', 'i', 'L', 'l'][usize::from(choice % 5)],
            '0' => ['0', 'O', 'o'][usize::from(choice % 3)],
            c if choice.is_multiple_of(2) => c.to_ascii_lowercase(),
            c => c,
        };
        out.push(typed);
        out.push_str(["", "", "", "-", " ", "--", " - ", "  "][usize::from(separators[i] % 8)]);
    }
    out.push_str(pad(padding.1));
    out
}

fn is_malformed(result: Result<RecoveryCode, Error>) -> bool {
    matches!(result, Err(Error::RecoveryCodeMalformed(_)))
}

proptest! {
    #![proptest_config(config(2000))]

    /// Any string at all: an answer, never a panic; whatever is accepted is 28 alphabet
    /// characters whose last one is the check character of the others.
    #[test]
    fn code_parser_survives_any_string(input in prop_oneof![any::<String>(), code_like()]) {
        if let Ok(code) = RecoveryCode::parse(&input) {
            let canonical = code.canonical();
            prop_assert_eq!(canonical.len(), RANDOM_CHARS + 1);
            prop_assert!(canonical.iter().all(|c| ALPHABET.contains(c)));
            prop_assert_eq!(luhn_mod_32(&canonical[..RANDOM_CHARS]), canonical[RANDOM_CHARS]);
        } else {
            prop_assert!(is_malformed(RecoveryCode::parse(&input)));
        }
    }

    /// The check character is the documented Luhn mod 32 one, and it is the only one of the
    /// 32 candidates that the parser accepts.
    #[test]
    fn exactly_one_check_character_is_accepted(
        random in prop::collection::vec(select(ALPHABET.to_vec()), RANDOM_CHARS),
    ) {
        let accepted: Vec<u8> = ALPHABET
            .iter()
            .copied()
            .filter(|&check| {
                let mut text = random.clone();
                text.push(check);
                RecoveryCode::parse(std::str::from_utf8(&text).unwrap()).is_ok()
            })
            .collect();
        prop_assert_eq!(accepted, vec![luhn_mod_32(&random)]);
    }

    /// A code's display form (`RC1-XXXX-…`) parses back to the same canonical bytes.
    #[test]
    fn display_form_parses_back(canonical in valid_code()) {
        let code = RecoveryCode::parse(&canonical).unwrap();
        prop_assert_eq!(code.canonical(), canonical.as_bytes());
        let shown = code.display();
        prop_assert_eq!(shown.len(), 3 + 7 * 5);
        prop_assert!(shown.starts_with("RC1-"));
        let again = RecoveryCode::parse(&shown).unwrap();
        prop_assert_eq!(again.canonical(), canonical.as_bytes());
        // Without the prefix too.
        let bare = RecoveryCode::parse(&shown[4..]).unwrap();
        prop_assert_eq!(bare.canonical(), canonical.as_bytes());
    }

    /// Every single-character typo (one random or check character changed to any other
    /// alphabet character) is refused before any hashing, typed bare or in display form.
    #[test]
    fn every_single_character_typo_is_rejected(
        canonical in valid_code(),
        position in 0..RANDOM_CHARS + 1,
        replacement in select(ALPHABET.to_vec()),
    ) {
        let mut typo = canonical.clone().into_bytes();
        prop_assume!(typo[position] != replacement);
        typo[position] = replacement;
        let typo = String::from_utf8(typo).unwrap();
        prop_assert!(is_malformed(RecoveryCode::parse(&typo)), "typo at {} accepted", position);
        let shown = RecoveryCode::parse(&canonical).unwrap().display();
        let mut shown_typo = shown.as_bytes().to_vec();
        // Display position of canonical `position`: after "RC1-" and one dash per group of 4.
        shown_typo[4 + position + position / 4] = replacement;
        let shown_typo = String::from_utf8(shown_typo).unwrap();
        prop_assert!(is_malformed(RecoveryCode::parse(&shown_typo)));
    }

    /// Case, separators (extra, missing, spaces), `I`/`L` for `1`, `O` for `0`, the prefix or
    /// its absence, and surrounding whitespace all normalise to the same code.
    #[test]
    fn typing_variants_normalise_to_the_same_code(
        canonical in valid_code(),
        spelling in prop::collection::vec(any::<u8>(), RANDOM_CHARS + 1),
        separators in prop::collection::vec(any::<u8>(), RANDOM_CHARS + 1),
        prefix in any::<u8>(),
        padding in (any::<u8>(), any::<u8>()),
    ) {
        let typed = typed_variant(&canonical, &spelling, &separators, prefix, padding);
        match RecoveryCode::parse(&typed) {
            Ok(code) => prop_assert_eq!(code.canonical(), canonical.as_bytes()),
            Err(err) => prop_assert!(false, "{:?} refused: {}", typed, err),
        }
    }
}

/// Codes from the CSPRNG have the documented shape and parse back, with and without `RC1-`.
#[test]
fn generated_codes_parse_back() {
    for _ in 0..500 {
        let code = RecoveryCode::generate().unwrap();
        let shown = code.display();
        let bare: String = shown[4..].chars().filter(|&c| c != '-').collect();
        for form in [shown.as_str(), &shown[4..], &bare, &shown.to_lowercase()] {
            assert_eq!(
                RecoveryCode::parse(form).unwrap().canonical(),
                code.canonical()
            );
        }
        assert_eq!(
            luhn_mod_32(&code.canonical()[..RANDOM_CHARS]),
            code.canonical()[RANDOM_CHARS]
        );
    }
}

/// Found by `typing_variants_normalise_to_the_same_code`: the prefix typed without its own
/// separator in front of a grouped code, and a bare code whose random part starts with `RC1`
/// typed with a separator after those three characters.
#[test]
fn prefix_edge_cases_normalise() {
    let canonical = {
        let mut chars = b"RC1ABCDEFGHJKMNPQRSTVWXYZ23".to_vec();
        chars.push(luhn_mod_32(&chars));
        String::from_utf8(chars).unwrap()
    };
    let grouped = |text: &str| -> String {
        let groups: Vec<String> = text
            .as_bytes()
            .chunks(4)
            .map(|g| String::from_utf8(g.to_vec()).unwrap())
            .collect();
        groups.join("-")
    };
    for typed in [
        // With the prefix.
        format!("RC1-{}", grouped(&canonical)),
        format!("rc1 {canonical}"),
        format!("RC1{canonical}"),
        // The prefix without its dash, the groups with theirs.
        format!("RC1{}", grouped(&canonical)),
        // Bare, grouped as displayed.
        grouped(&canonical),
        // Bare, with a separator after the code's own leading `RC1`.
        format!("RC1 {}", &canonical[3..]),
        format!("RC1-{}", grouped(&canonical[3..])),
    ] {
        let parsed = RecoveryCode::parse(&typed);
        match parsed {
            Ok(code) => assert_eq!(code.canonical(), canonical.as_bytes(), "{typed:?}"),
            Err(err) => panic!("{typed:?} refused: {err}"),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Email addresses
// ---------------------------------------------------------------------------------------------

/// Characters that make canonicalisation interesting: case folding that changes length
/// (`ß`, `İ`, `ﬃ`, `ΐ`), folding to ASCII (Kelvin sign), characters NFC decomposes (`क़`),
/// combining marks, Cherokee (folds to upper case), full-width forms, IDNA dots, and the
/// hostile ones: controls, line breaks, spaces, quotes, brackets, list separators.
const SPICY: &str = "aAzZ09.-_+!#$%&'*/=?^`{|}~éÉßẞİıﬃΐ\u{345}\u{301}\u{307}\u{212a}\u{2126}\u{13a0}\u{ab70}\u{ff21}\u{ff41}\u{ff0e}\u{3002}\u{958}\u{fb2c}\u{1d15e}\u{200b}\u{200d}\u{feff}\u{2028}\u{85}\u{a0}\r\n\t\0\u{7f}\u{1b} <>,;\"()[]\\:@";

fn spicy_text(max: usize) -> impl Strategy<Value = String> {
    let chars: Vec<char> = SPICY.chars().collect();
    prop::collection::vec(select(chars), 0..max).prop_map(|v| v.into_iter().collect())
}

fn label() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => "[a-zA-Z0-9]([a-zA-Z0-9-]{0,10}[a-zA-Z0-9])?",
        1 => spicy_text(12),
        1 => "[a-z\u{e0}-\u{ff}\u{430}-\u{44f}]{1,30}",
        // Letters that NFC turns into two code points (U+0958..U+095F: 3 bytes become 6).
        1 => "[a\u{958}-\u{95f}]{1,22}",
    ]
}

/// Strings shaped like addresses, with hostile and Unicode pieces mixed in.
fn email_like() -> impl Strategy<Value = String> {
    (
        prop_oneof![3 => "[a-zA-Z0-9.+_-]{1,20}", 2 => spicy_text(40), 1 => "[\u{130}\u{df}\u{fb03}]{1,40}"],
        prop::collection::vec(label(), 1..6),
        prop_oneof!["[a-zA-Z]{2,6}", label()],
        spicy_text(3),
        spicy_text(3),
    )
        .prop_map(|(local, labels, tld, before, after)| {
            format!("{before}{local}@{}.{tld}{after}", labels.join("."))
        })
}

/// Addresses whose domain grows under NFC (U+0958..U+095F: 3 bytes become 6) while each label
/// stays within IDNA's limits.
fn nfc_growing_email() -> impl Strategy<Value = String> {
    (
        "[a-z]{1,10}",
        prop::collection::vec("[a\u{958}-\u{95f}]{8,22}", 1..6),
    )
        .prop_map(|(local, labels)| format!("{local}@{}.com", labels.join(".")))
}

/// A valid plain ASCII address.
fn ascii_email() -> impl Strategy<Value = String> {
    (
        "[a-zA-Z0-9+_-]{1,10}(\\.[a-zA-Z0-9+_-]{1,10}){0,2}",
        prop::collection::vec("[a-zA-Z0-9]([a-zA-Z0-9-]{0,8}[a-zA-Z0-9])?", 1..4),
        "[a-zA-Z]{2,6}",
    )
        .prop_map(|(local, labels, tld)| format!("{local}@{}.{tld}", labels.join(".")))
}

fn no_hostile_characters(text: &str) -> bool {
    !text
        .chars()
        .any(|c| c.is_control() || c.is_whitespace() || "<>,;\"()[]\\:".contains(c))
}

proptest! {
    #![proptest_config(config(2000))]

    /// Any string: an answer, never a panic. Whatever is accepted, as given and as looked up,
    /// holds no control character (CR, LF, NUL, …), no whitespace and nothing that could start a
    /// second address or header; is at most 254 bytes; has exactly one `@`; and its lookup form
    /// is a fixed point of the canonicaliser.
    #[test]
    fn email_parser_accepts_only_safe_canonical_addresses(
        input in prop_oneof![any::<String>(), email_like(), nfc_growing_email()],
    ) {
        let Ok(email) = Email::parse(&input) else {
            prop_assert!(matches!(Email::parse(&input), Err(Error::InvalidEmail(_))));
            return Ok(());
        };
        for form in [email.address(), email.lookup()] {
            prop_assert!(no_hostile_characters(form), "{:?} accepted as {:?}", input, form);
            prop_assert!(!form.contains(['\r', '\n', '\0']));
            prop_assert!(form.len() <= MAX_EMAIL_BYTES, "{:?} accepted as {} bytes: {:?}", input, form.len(), form);
            prop_assert_eq!(form.matches('@').count(), 1);
        }
        let (_, domain) = email.lookup().split_once('@').unwrap();
        prop_assert!(domain.is_ascii() && domain == domain.to_ascii_lowercase(), "{:?}", domain);
        // Idempotent: the lookup form, when it parses, looks up as itself.
        if let Ok(again) = Email::parse(email.lookup()) {
            prop_assert_eq!(again.lookup(), email.lookup());
        }
        // The stored address parses again, to the same lookup (no drift between writes).
        let stored = Email::parse(email.address());
        prop_assert!(stored.is_ok(), "{:?}: stored address {:?} no longer parses", input, email.address());
        let stored = stored.unwrap();
        prop_assert_eq!(stored.lookup(), email.lookup());
    }

    /// Any ASCII address, however its letters are cased, has one lookup form: the lower-case one.
    #[test]
    fn case_variants_of_an_ascii_address_look_up_alike(
        address in ascii_email(),
        flips in prop::collection::vec(any::<bool>(), 64),
    ) {
        let lower = address.to_ascii_lowercase();
        let base = Email::parse(&lower);
        prop_assume!(base.is_ok()); // e.g. an all-digit TLD is refused
        let base = base.unwrap();
        prop_assert_eq!(base.lookup(), lower.as_str());
        let variant: String = lower
            .chars()
            .zip(flips.iter().cycle())
            .map(|(c, &up)| if up { c.to_ascii_uppercase() } else { c })
            .collect();
        let parsed = Email::parse(&variant).unwrap();
        prop_assert_eq!(parsed.lookup(), base.lookup());
        prop_assert_eq!(parsed.address(), variant.as_str());
    }

    /// A control character or line break anywhere inside an address is refused (no header
    /// injection through `\r\nBcc:`), and so is anything over 254 bytes.
    #[test]
    fn control_characters_inside_and_overlong_addresses_are_refused(
        address in ascii_email(),
        position in any::<prop::sample::Index>(),
        control in select(vec!['\r', '\n', '\0', '\t', '\u{b}', '\u{c}', '\u{7f}', '\u{85}', '\u{1b}', '\u{2028}']),
        filler in 1..300usize,
    ) {
        let cut = 1 + position.index(address.len() - 1);
        let injected = format!("{}{control}{}", &address[..cut], &address[cut..]);
        prop_assert!(Email::parse(&injected).is_err(), "{:?} accepted", injected);
        let injected = format!("{address}{control}Bcc: eve@evil.example");
        prop_assert!(Email::parse(&injected).is_err(), "{:?} accepted", injected);
        let long = format!("{}{address}", "a".repeat(filler));
        if long.trim().len() > MAX_EMAIL_BYTES {
            prop_assert!(Email::parse(&long).is_err());
        }
    }
}

/// Found by `email_parser_accepts_only_safe_canonical_addresses`: NFC can lengthen text
/// (U+0958 DEVANAGARI LETTER QA is 3 bytes, its NFC form U+0915 U+093C is 6), so the 254-byte
/// limit must hold for the address as stored, not only for the input.
#[test]
fn addresses_that_grow_under_nfc_stay_within_254_bytes() {
    // 188 bytes typed; 368 bytes after NFC (the lookup form, punycode, is 152).
    let input = format!("a@{0}.{0}.{0}.com", "\u{958}".repeat(20));
    assert!(input.len() <= MAX_EMAIL_BYTES);
    if let Ok(email) = Email::parse(&input) {
        assert!(
            email.address().len() <= MAX_EMAIL_BYTES,
            "accepted with a {}-byte address",
            email.address().len()
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Page tokens
// ---------------------------------------------------------------------------------------------

/// Candidates for tokens: anything, base64 of anything, and base64 of near-valid plain text
/// (signs, leading zeros, overflow, other versions).
fn token_like() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<String>(),
        "[A-Za-z0-9_=+/-]{0,24}",
        prop::collection::vec(any::<u8>(), 0..24).prop_map(|b| URL_SAFE_NO_PAD.encode(b)),
        "(a1|a2|A1|a1 |)(:| :|::)?[+-]?0{0,3}[0-9]{0,20}( |\n)?"
            .prop_map(|t| URL_SAFE_NO_PAD.encode(t)),
    ]
}

proptest! {
    #![proptest_config(config(2000))]

    /// Every position the service issues a token for comes back as itself.
    #[test]
    fn page_tokens_round_trip(seq in 1..=i64::MAX) {
        let token = encode_page_token(seq);
        prop_assert!(!token.is_empty());
        prop_assert!(token.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'));
        prop_assert_eq!(decode_page_token(&token).unwrap(), Some(seq));
    }

    /// Any string: an answer, never a panic; the empty string is the first page; anything else
    /// that is accepted is exactly what `encode_page_token` makes for that position (no second
    /// spelling of a token, no position 0 or below).
    #[test]
    fn only_issued_page_tokens_are_accepted(token in token_like()) {
        match decode_page_token(&token) {
            Ok(None) => prop_assert!(token.is_empty()),
            Ok(Some(seq)) => {
                prop_assert!(seq > 0);
                prop_assert_eq!(encode_page_token(seq), token);
            }
            Err(err) => prop_assert!(matches!(err, Error::InvalidPage(_))),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Email codes
// ---------------------------------------------------------------------------------------------

proptest! {
    #![proptest_config(config(2000))]

    /// Any string: an answer, never a panic; what is accepted is exactly six ASCII digits, the
    /// digits that were typed.
    #[test]
    fn email_code_parser_yields_six_ascii_digits(
        input in prop_oneof![
            any::<String>(),
            "[ \t\n]{0,2}[0-9\u{660}-\u{669}\u{ff10}-\u{ff19}a ]{3}[- _.]?[0-9\u{ff10}-\u{ff19} ]{3}[ \t\n]{0,2}",
        ],
    ) {
        if let Ok(code) = EmailCode::parse(&input) {
            prop_assert_eq!(code.digits().len(), 6);
            prop_assert!(code.digits().bytes().all(|b| b.is_ascii_digit()));
            let typed: String = input.chars().filter(char::is_ascii_digit).collect();
            prop_assert_eq!(code.digits(), typed.as_str());
        }
    }

    /// Six digits are accepted as sent, `123 456`, `123-456` and with surrounding spaces.
    #[test]
    fn typed_email_codes_are_accepted(digits in "[0-9]{6}", sep in select(vec!["", " ", "-"])) {
        let typed = format!(" {}{sep}{} ", &digits[..3], &digits[3..]);
        let parsed = EmailCode::parse(&typed).unwrap();
        prop_assert_eq!(parsed.digits(), digits.as_str());
    }
}

#[test]
fn issued_email_codes_parse_back() {
    for _ in 0..200 {
        let code = EmailCode::generate().unwrap();
        assert_eq!(
            EmailCode::parse(code.digits()).unwrap().digits(),
            code.digits()
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Request messages
// ---------------------------------------------------------------------------------------------

proptest! {
    #![proptest_config(config(1000))]

    /// Arbitrary bytes decode as every request message, or are refused, without a panic; a
    /// decoded message re-encodes and decodes to itself.
    #[test]
    fn request_messages_decode_any_bytes(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
        macro_rules! check {
            ($($ty:ty),*) => {$(
                if let Ok(message) = <$ty>::decode(bytes.as_slice()) {
                    let again = <$ty>::decode(message.encode_to_vec().as_slice()).unwrap();
                    prop_assert_eq!(again, message);
                }
            )*};
        }
        check!(
            v1::CreateRecoveryCodeRequest,
            v1::BeginRecoveryRequest,
            v1::VerifyEmailRequest,
            v1::RecoverAccountRequest,
            v1::GetRecoveryStatusRequest,
            v1::RevokeRecoveryCodeRequest,
            v1::UpdateRecoveryEmailRequest,
            v1::ListAuditEventsRequest,
            v1::PutFamilyMemberRequest,
            v1::RemoveFamilyMemberRequest,
            v1::GetFamilyRecoveryStatusRequest,
            v1::BeginAssistedRecoveryRequest,
            v1::VerifyAssistedRecoveryRequest,
            v1::CompleteAssistedRecoveryRequest,
            v1::CancelAssistedRecoveryRequest,
            v1::StartZeroKnowledgeEnrollmentRequest,
            v1::FinishZeroKnowledgeEnrollmentRequest,
            v1::StartZeroKnowledgeRecoveryRequest,
            v1::FinishZeroKnowledgeRecoveryRequest
        );
    }
}

/// The server's OPAQUE keys for the properties below (derived once: a scalar multiplication).
fn opaque_keys() -> &'static OpaqueKeys {
    static KEYS: std::sync::OnceLock<OpaqueKeys> = std::sync::OnceLock::new();
    KEYS.get_or_init(|| {
        OpaqueKeys::derive(
            &KeyRing::parse("a:00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff")
                .unwrap(),
        )
        .unwrap()
    })
}

/// Bytes of every length around a message's, with all-zero, all-one and random contents.
fn protocol_bytes(len: usize) -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        prop::collection::vec(any::<u8>(), 0..=len + 2),
        prop::collection::vec(any::<u8>(), len..=len),
        (0..=len + 2).prop_map(|n| vec![0u8; n]),
        (0..=len + 2).prop_map(|n| vec![0xffu8; n]),
    ]
}

proptest! {
    #![proptest_config(config(300))]

    /// Any bytes as any OPAQUE message: answered or refused as malformed, never a panic; the
    /// wrong length is always malformed; an accepted message gets the RFC's answer length.
    #[test]
    fn opaque_messages_of_any_bytes_are_answered_or_malformed(
        request in protocol_bytes(opaque::REGISTRATION_REQUEST_LEN),
        record in protocol_bytes(opaque::REGISTRATION_RECORD_LEN),
        ke1 in protocol_bytes(opaque::KE1_LEN),
        ke3 in protocol_bytes(opaque::KE3_LEN),
    ) {
        let keys = opaque_keys();
        match keys.registration_response(&request, b"zk_1") {
            Ok(response) => {
                prop_assert_eq!(request.len(), opaque::REGISTRATION_REQUEST_LEN);
                prop_assert_eq!(response.len(), opaque::REGISTRATION_RESPONSE_LEN);
            }
            Err(err) => prop_assert_eq!(err, opaque::Error::Malformed),
        }
        if record.len() != opaque::REGISTRATION_RECORD_LEN {
            prop_assert!(opaque::parse_record(&record).is_err());
        }
        match opaque::parse_credential_request(&ke1) {
            Ok(parsed) => {
                prop_assert_eq!(ke1.len(), opaque::KE1_LEN);
                // Against any stored record (a real one or garbage): a KE2 of the RFC's length.
                let (ke2, state) = keys.login_start("a", &record, parsed, b"zk_1").unwrap();
                prop_assert_eq!(ke2.len(), opaque::KE2_LEN);
                let finished = opaque::login_finish(&state, &ke3);
                if ke3.len() == opaque::KE3_LEN {
                    prop_assert_eq!(finished, Err(opaque::Error::NotVerified));
                } else {
                    prop_assert_eq!(finished, Err(opaque::Error::Malformed));
                }
            }
            Err(err) => prop_assert_eq!(err, opaque::Error::Malformed),
        }
    }
}
