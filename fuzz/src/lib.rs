//! The properties every fuzz target checks, shared so that `request_decode` holds the fields
//! of decoded requests to the same rules as the single-parser targets. Each check panics (a
//! libFuzzer crash) when the service's parser breaks a rule; a parser that panics by itself is
//! a crash too.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use recovery_service::domain::code::{EmailCode, RecoveryCode};
use recovery_service::domain::email::{Email, MAX_EMAIL_BYTES};
use recovery_service::domain::{self, Error};

/// Crockford's base32 alphabet.
const ALPHABET: &[u8; 32] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";

/// Bytes as text: valid UTF-8 as is, anything else with replacement characters.
pub fn text(data: &[u8]) -> std::borrow::Cow<'_, str> {
    String::from_utf8_lossy(data)
}

/// A recovery code is accepted only from code characters, separators and surrounding
/// whitespace, as 28 alphabet characters that parse again to themselves in every form.
pub fn check_recovery_code(input: &str) {
    match RecoveryCode::parse(input) {
        Ok(code) => {
            let canonical = code.canonical().to_vec();
            assert_eq!(canonical.len(), 28, "{input:?}");
            assert!(canonical.iter().all(|c| ALPHABET.contains(c)), "{input:?}");
            assert!(
                input
                    .trim()
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == ' '),
                "{input:?} accepted with a character codes never contain"
            );
            let canonical_text = String::from_utf8(canonical.clone()).unwrap_or_default();
            for form in [canonical_text.as_str(), code.display().as_str()] {
                let again = RecoveryCode::parse(form);
                assert!(
                    again
                        .as_ref()
                        .is_ok_and(|c| c.canonical() == canonical.as_slice()),
                    "{input:?}: {form:?} does not parse back"
                );
            }
        }
        Err(err) => assert!(
            matches!(err, Error::RecoveryCodeMalformed(_)),
            "{input:?}: {err:?}"
        ),
    }
}

/// An accepted address holds no control character, whitespace or anything that could start a
/// second address or header, is at most 254 bytes as stored and as looked up, and its forms
/// parse again to the same lookup.
pub fn check_email(input: &str) {
    let email = match Email::parse(input) {
        Ok(email) => email,
        Err(err) => {
            assert!(matches!(err, Error::InvalidEmail(_)), "{input:?}: {err:?}");
            return;
        }
    };
    for form in [email.address(), email.lookup()] {
        assert!(
            !form
                .chars()
                .any(|c| c.is_control() || c.is_whitespace() || "<>,;\"()[]\\:".contains(c)),
            "{input:?} accepted as {form:?}"
        );
        assert_eq!(
            form.matches('@').count(),
            1,
            "{input:?} accepted as {form:?}"
        );
        assert!(
            form.len() <= MAX_EMAIL_BYTES,
            "{input:?} accepted as {} bytes: {form:?}",
            form.len()
        );
    }
    let domain = email.lookup().rsplit('@').next().unwrap_or_default();
    assert!(
        domain.is_ascii() && domain == domain.to_ascii_lowercase(),
        "{input:?}: lookup domain {domain:?}"
    );
    if let Ok(again) = Email::parse(email.lookup()) {
        assert_eq!(
            again.lookup(),
            email.lookup(),
            "{input:?}: lookup not idempotent"
        );
    }
    let stored = Email::parse(email.address());
    assert!(
        stored
            .as_ref()
            .is_ok_and(|again| again.lookup() == email.lookup()),
        "{input:?}: stored address {:?} parses as {stored:?}",
        email.address()
    );
}

/// The empty token is the first page; anything else accepted is exactly what
/// `encode_page_token` makes for a positive position.
pub fn check_page_token(token: &str) {
    match domain::decode_page_token(token) {
        Ok(None) => assert!(token.is_empty(), "{token:?} read as the first page"),
        Ok(Some(seq)) => {
            assert!(seq > 0, "{token:?} read as position {seq}");
            assert_eq!(
                domain::encode_page_token(seq),
                token,
                "{token:?} accepted as position {seq} but not issued so"
            );
        }
        Err(err) => assert!(matches!(err, Error::InvalidPage(_)), "{token:?}: {err:?}"),
    }
}

/// Page tokens from raw bytes: the bytes as a token, the bytes base64-encoded as a token (to
/// get past the base64 layer), and the first eight bytes as a position that must round-trip.
pub fn check_page_token_bytes(data: &[u8]) {
    check_page_token(&text(data));
    check_page_token(&URL_SAFE_NO_PAD.encode(data));
    if let Some(first) = data.first_chunk::<8>() {
        let seq = i64::from_le_bytes(*first);
        if seq > 0 {
            let token = domain::encode_page_token(seq);
            assert_eq!(domain::decode_page_token(&token).ok(), Some(Some(seq)));
        }
    }
}

/// An accepted email code is exactly the six ASCII digits that were typed.
pub fn check_email_code(input: &str) {
    match EmailCode::parse(input) {
        Ok(code) => {
            let digits = code.digits();
            assert!(
                digits.len() == 6 && digits.bytes().all(|b| b.is_ascii_digit()),
                "{input:?} accepted as {digits:?}"
            );
            let typed: String = input.chars().filter(char::is_ascii_digit).collect();
            assert_eq!(digits, typed, "{input:?}");
        }
        Err(err) => assert!(
            matches!(err, Error::EmailCodeMalformed),
            "{input:?}: {err:?}"
        ),
    }
}

/// An accepted account id is 1 to 128 bytes without control characters.
pub fn check_account_id(input: &str) {
    if let Ok(id) = domain::validate_account_id(input) {
        assert!(
            !id.is_empty() && id.len() <= 128 && !id.chars().any(char::is_control),
            "{input:?}"
        );
    }
}

/// The client context: an IP address or none; a user agent without control characters, at most
/// 512 bytes, never empty when present.
pub fn check_client(ip_address: &str, user_agent: &str) {
    if let Ok(client) = domain::client(ip_address, user_agent) {
        assert_eq!(
            client.ip.is_none(),
            ip_address.trim().is_empty(),
            "{ip_address:?}"
        );
        if let Some(agent) = client.user_agent {
            assert!(
                !agent.is_empty() && agent.len() <= 512 && !agent.chars().any(char::is_control),
                "{user_agent:?} kept as {agent:?}"
            );
        }
    }
}

/// A free-text field cut to `max` bytes stays valid text and a prefix of the original.
pub fn check_truncate(input: &str, max: usize) {
    let cut = domain::truncate(input, max);
    assert!(
        cut.len() <= max && input.starts_with(cut.as_str()),
        "{input:?}"
    );
}

/// The server's OPAQUE keys (derived once per process).
fn opaque_keys() -> &'static recovery_service::crypto::opaque::OpaqueKeys {
    static KEYS: std::sync::OnceLock<recovery_service::crypto::opaque::OpaqueKeys> =
        std::sync::OnceLock::new();
    KEYS.get_or_init(|| {
        let ring = recovery_service::crypto::KeyRing::parse(
            "a:00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff",
        )
        .expect("a key ring");
        recovery_service::crypto::opaque::OpaqueKeys::derive(&ring).expect("OPAQUE keys")
    })
}

/// `data` as every OPAQUE message, each taken from its own slice of it: the request and KE1
/// are answered with the RFC's lengths or refused as malformed; a KE3 never verifies.
pub fn check_opaque_messages(data: &[u8]) {
    use recovery_service::crypto::opaque::{self, Error as E};
    let keys = opaque_keys();
    let take = |from: usize, len: usize| -> &[u8] {
        let start = from.min(data.len());
        &data[start..(start + len).min(data.len())]
    };
    // The whole input as each message, then each message cut from the input at its length.
    for (request, record, ke1, ke3) in [
        (data, data, data, data),
        (
            take(0, opaque::REGISTRATION_REQUEST_LEN),
            take(0, opaque::REGISTRATION_RECORD_LEN),
            take(0, opaque::KE1_LEN),
            take(opaque::KE1_LEN, opaque::KE3_LEN),
        ),
    ] {
        match keys.registration_response(request, b"zk_fuzz") {
            Ok(response) => {
                assert_eq!(request.len(), opaque::REGISTRATION_REQUEST_LEN);
                assert_eq!(response.len(), opaque::REGISTRATION_RESPONSE_LEN);
            }
            Err(err) => assert_eq!(err, E::Malformed),
        }
        if opaque::parse_record(record).is_ok() {
            assert_eq!(record.len(), opaque::REGISTRATION_RECORD_LEN);
        }
        match opaque::parse_credential_request(ke1) {
            Ok(parsed) => {
                assert_eq!(ke1.len(), opaque::KE1_LEN);
                let (ke2, state) = keys
                    .login_start("a", record, parsed, b"zk_fuzz")
                    .expect("a parsed KE1 is answered");
                assert_eq!(ke2.len(), opaque::KE2_LEN);
                let finished = opaque::login_finish(&state, ke3);
                assert!(
                    matches!(finished, Err(E::NotVerified | E::Malformed)),
                    "{finished:?}"
                );
            }
            Err(err) => assert_eq!(err, E::Malformed),
        }
    }
}
