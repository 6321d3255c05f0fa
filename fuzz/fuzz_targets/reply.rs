//! `Reply::parse` on arbitrary bytes, for every `Expect`, must never panic,
//! and a reply it accepts must re-encode to a line that parses back the same.

#![no_main]

use ibp_proto::{Expect, ProtoError, Reply, MAX_LINE};
use libfuzzer_sys::fuzz_target;

const EXPECTS: [Expect; 6] = [
    Expect::Ok,
    Expect::Count,
    Expect::Payload,
    Expect::Allocated,
    Expect::Probe,
    Expect::Resources,
];

fuzz_target!(|data: &[u8]| {
    for expect in EXPECTS {
        let Ok(reply) = Reply::parse(data, expect) else {
            continue;
        };
        let line = reply.encode();
        assert!(line.ends_with('\n'), "{line:?}");
        if line.len() > MAX_LINE {
            // Only the canonical trailing space can lengthen a line.
            assert!(line.len() <= data.len() + 1, "{line:?}");
            assert_eq!(
                Reply::parse(line.as_bytes(), expect),
                Err(ProtoError::LineTooLong)
            );
            continue;
        }
        let again = Reply::parse(line.as_bytes(), expect)
            .unwrap_or_else(|e| panic!("{line:?} (from {reply:?}) does not parse: {e}"));
        assert_eq!(again, reply, "{line:?}");
        assert_eq!(again.encode(), line);
    }
});
