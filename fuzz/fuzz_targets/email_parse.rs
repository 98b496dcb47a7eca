//! `Email::parse` (the canonicaliser) on any input: no panic; what it accepts is one safe,
//! bounded address whose lookup form is stable.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    recovery_service_fuzz::check_email(&recovery_service_fuzz::text(data));
});
