//! The example exNode in docs/exnode.md parses, validates and is written back
//! byte for byte, so the spec cannot drift from the code.

const DOC: &str = include_str!("../../../docs/exnode.md");

#[test]
fn example_in_the_spec_is_exact() {
    let start = DOC.find("```xml\n").expect("an xml example") + "```xml\n".len();
    let len = DOC[start..].find("```").expect("end of the example");
    let example = &DOC[start..start + len];
    let x = exnode::parse_and_validate(example.as_bytes()).expect("example is valid");
    assert_eq!(exnode::to_xml(&x), example);
    let e = x.extents();
    assert_eq!(e.len(), 2);
    assert_eq!((e[0].mappings.len(), e[0].group.is_none()), (2, true));
    assert_eq!(e[1].mappings.len(), 3);
    assert_eq!(e[1].group.map(|g| (g.k, g.m)), Some((2, 1)));
    assert!(!x.has_cleartext_keys());
}
