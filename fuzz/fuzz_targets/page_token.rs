//! `decode_page_token` on any input, raw and base64-encoded: no panic; only issued tokens are
//! accepted; issued tokens round-trip.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    recovery_service_fuzz::check_page_token_bytes(data);
});
