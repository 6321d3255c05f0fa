//! `from_xml` on arbitrary bytes: see [`ibp_fuzz_checks::exnode`].

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| ibp_fuzz_checks::exnode(data));
