//! `from_xml` on arbitrary bytes must never panic, and an exNode it accepts
//! must write (`to_xml`) to a document that reads back to an equal model and
//! writes the same bytes again.

#![no_main]

use exnode::{from_xml, to_xml};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(x) = from_xml(data) else {
        return;
    };
    // validate() may accept or refuse; it must not panic either.
    let _ = x.validate();
    let _ = x.extents();
    let doc = to_xml(&x);
    let again = from_xml(doc.as_bytes())
        .unwrap_or_else(|e| panic!("{doc:?} (from {x:?}) does not parse: {e}"));
    assert_eq!(again, x, "{doc:?}");
    assert_eq!(to_xml(&again), doc);
});
