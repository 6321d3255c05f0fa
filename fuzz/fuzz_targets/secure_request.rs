//! `parse_secure_request` (secure port, v2/v3) on arbitrary bytes: see
//! [`ibp_fuzz_checks::secure_request`].

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| ibp_fuzz_checks::secure_request(data));
