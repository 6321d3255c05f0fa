//! `parse_request` on arbitrary bytes must never panic, and a request it
//! accepts must re-encode to a line that parses back to the same request.

#![no_main]

use ibp_proto::{parse_request, ProtoError, MAX_LINE};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(req) = parse_request(data) else {
        return;
    };
    let line = req.encode();
    assert!(line.ends_with('\n'), "{line:?}");
    if line.len() > MAX_LINE {
        // encode() normalises numbers and whitespace, which never lengthens a
        // line, but it adds the canonical trailing space some commands carry;
        // a maximal input without it can come out one byte too long.
        assert!(line.len() <= data.len() + 2, "{line:?}");
        let err = parse_request(line.as_bytes()).expect_err("over-long line");
        assert_eq!(err.kind, ProtoError::LineTooLong);
        return;
    }
    let again = parse_request(line.as_bytes())
        .unwrap_or_else(|e| panic!("{line:?} (from {req:?}) does not parse: {e}"));
    assert_eq!(again, req, "{line:?}");
    // Canonical form is a fixed point.
    assert_eq!(again.encode(), line);
});
