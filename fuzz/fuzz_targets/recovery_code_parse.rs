//! `RecoveryCode::parse` on any input: no panic; what it accepts is a canonical code.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    recovery_service_fuzz::check_recovery_code(&recovery_service_fuzz::text(data));
});
