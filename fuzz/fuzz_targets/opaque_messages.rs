//! Any bytes as each OPAQUE message the service parses (RFC 9807: registration request 32
//! bytes, record 192, KE1 96, KE3 64): refused as malformed or answered with the RFC's lengths,
//! never a panic; a KE3 of any bytes never verifies against a real login state.
#![no_main]

use libfuzzer_sys::fuzz_target;
use recovery_service_fuzz as check;

fuzz_target!(|data: &[u8]| {
    check::check_opaque_messages(data);
});
