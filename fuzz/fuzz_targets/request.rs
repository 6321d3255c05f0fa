//! `parse_request` (legacy port, v0/v1) on arbitrary bytes: see
//! [`ibp_fuzz_checks::request`].

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| ibp_fuzz_checks::request(data));
