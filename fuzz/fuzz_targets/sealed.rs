//! The crypto level's data-connection lines (JOIN, sealed requests) on
//! arbitrary bytes: see [`ibp_fuzz_checks::sealed`].

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| ibp_fuzz_checks::sealed(data));
