//! Documents the reader must refuse, each with an error that says what and
//! where, and never a panic.

use exnode::xml::{MAX_ELEMENT_DEPTH, NAMESPACE};
use exnode::{from_xml, XmlError, MAX_DOCUMENT, MAX_FUNCTION_DEPTH};

const HEAD: &str = r#"<?xml version="1.0"?>
<exnode xmlns:exnode="http://loci.cs.utk.edu/exnode">
"#;

/// A minimal mapping with `extra` inside it.
fn mapping(extra: &str) -> String {
    format!(
        r#"  <exnode:mapping>
    <exnode:metadata name="alloc_length" type="integer">10</exnode:metadata>
    <exnode:metadata name="alloc_offset" type="integer">0</exnode:metadata>
    <exnode:metadata name="e2e_blocksize" type="integer">0</exnode:metadata>
    <exnode:metadata name="exnode_offset" type="integer">0</exnode:metadata>
    <exnode:metadata name="logical_length" type="integer">10</exnode:metadata>
    {extra}
    <exnode:read>ibp://h:6714/0#k/0/READ</exnode:read>
  </exnode:mapping>
"#
    )
}

fn doc(body: &str) -> String {
    format!("{HEAD}{body}</exnode>\n")
}

/// The `Invalid` error's location and reason, or a panic.
fn invalid(doc: &str) -> (String, String) {
    match from_xml(doc.as_bytes()) {
        Err(XmlError::Invalid { at, reason, .. }) => (at, reason),
        other => panic!("expected Invalid, got {other:?}\n{doc}"),
    }
}

#[test]
fn the_minimal_documents_parse() {
    let x = from_xml(doc(&mapping("")).as_bytes()).unwrap();
    assert_eq!(x.size, 10);
    assert_eq!(x.mappings[0].depot, "h:6714");
    let x = from_xml(doc("").as_bytes()).unwrap();
    assert_eq!(x.size, 0);
    // Any prefix, and a default namespace, work: elements are matched by URI.
    let other = format!(
        r#"<x:exnode xmlns:x="{NAMESPACE}"><x:metadata name="size" type="integer">5</x:metadata></x:exnode>"#
    );
    assert_eq!(from_xml(other.as_bytes()).unwrap().size, 5);
    let default = format!(
        r#"<exnode xmlns="{NAMESPACE}"><metadata name="size" type="integer">6</metadata><!-- c --><?pi x?></exnode>"#
    );
    assert_eq!(from_xml(default.as_bytes()).unwrap().size, 6);
    // A UTF-8 byte order mark, CDATA, character references.
    let cdata = format!(
        "\u{feff}{HEAD}<exnode:metadata name=\"filename\" type=\"string\"><![CDATA[a<&]]>&#x263A;&#65;</exnode:metadata></exnode>"
    );
    assert_eq!(
        from_xml(cdata.as_bytes()).unwrap().filename.as_deref(),
        Some("a<&☺A")
    );
}

#[test]
fn billion_laughs_is_refused() {
    let bomb = r#"<?xml version="1.0"?>
<!DOCTYPE lolz [
 <!ENTITY lol "lol">
 <!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
 <!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">
 <!ENTITY lol9 "&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;">
]>
<exnode xmlns:exnode="http://loci.cs.utk.edu/exnode">
  <exnode:metadata name="filename" type="string">&lol9;</exnode:metadata>
</exnode>"#;
    assert!(matches!(
        from_xml(bomb.as_bytes()),
        Err(XmlError::Doctype { offset: 22 })
    ));
}

#[test]
fn external_entity_is_refused() {
    let xxe = r#"<?xml version="1.0"?>
<!DOCTYPE exnode [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>
<exnode xmlns:exnode="http://loci.cs.utk.edu/exnode">
  <exnode:metadata name="filename" type="string">&xxe;</exnode:metadata>
</exnode>"#;
    assert!(matches!(
        from_xml(xxe.as_bytes()),
        Err(XmlError::Doctype { .. })
    ));
    // Without a DTD an undeclared entity is refused too, not left as text.
    let (at, reason) = invalid(&doc(
        r#"<exnode:metadata name="filename" type="string">&xxe;</exnode:metadata>"#,
    ));
    assert_eq!(at, "character data");
    assert!(reason.contains("xxe"), "{reason}");
    let (at, _) = invalid(&doc(
        r#"<exnode:metadata name="a&xxe;" type="string">x</exnode:metadata>"#,
    ));
    assert!(at.contains("exnode:metadata"), "{at}");
}

#[test]
fn oversized_document_is_refused() {
    let mut big = doc("").into_bytes();
    big.resize(MAX_DOCUMENT + 1, b' ');
    assert_eq!(from_xml(&big), Err(XmlError::TooLarge(MAX_DOCUMENT + 1)));
}

#[test]
fn deep_nesting_is_refused() {
    // Nested functions: MAX_FUNCTION_DEPTH is fine, one more is not.
    let nest = |n: usize| {
        let open = "<exnode:function name=\"f\">".repeat(n);
        let close = "</exnode:function>".repeat(n);
        doc(&mapping(&format!("{open}{close}")))
    };
    let x = from_xml(nest(MAX_FUNCTION_DEPTH).as_bytes()).unwrap();
    let mut depth = 0;
    let mut f = x.mappings[0].functions.first();
    while let Some(g) = f {
        depth += 1;
        f = g.inner.first();
    }
    assert_eq!(depth, MAX_FUNCTION_DEPTH);
    let (at, reason) = invalid(&nest(MAX_FUNCTION_DEPTH + 1));
    assert_eq!(at, "mapping 0, function f/f/f/f/f/f/f/f/f");
    assert!(reason.contains("nested deeper"), "{reason}");

    // Any element nesting beyond the bound, wherever it is.
    let deep = format!(
        "{HEAD}{}{}</exnode>",
        "<a>".repeat(100_000),
        "</a>".repeat(100_000)
    );
    assert!(from_xml(deep.as_bytes()).is_err());
    let deep = format!("<exnode>{}", "<exnode>".repeat(MAX_ELEMENT_DEPTH));
    assert!(matches!(
        from_xml(deep.as_bytes()),
        Err(XmlError::Invalid { .. } | XmlError::TooDeep { .. })
    ));
}

#[test]
fn truncated_documents_are_refused() {
    let full = doc(&mapping(
        r#"<exnode:function name="checksum"><exnode:argument name="blocksize" type="integer">5</exnode:argument></exnode:function>"#,
    ));
    assert!(from_xml(full.as_bytes()).is_ok());
    // Every proper prefix fails, none panics.
    for cut in 0..full.trim_end().len() {
        let part = &full.as_bytes()[..cut];
        assert!(from_xml(part).is_err(), "prefix of {cut} bytes parsed");
    }
    let part = &full[..full.find("<exnode:read>").unwrap()];
    assert_eq!(
        from_xml(part.as_bytes()),
        Err(XmlError::Truncated {
            at: "mapping 0".into()
        })
    );
}

#[test]
fn wrong_root_and_wrong_namespace_are_refused() {
    assert!(matches!(
        from_xml(b"<exnodes/>"),
        Err(XmlError::NotExnode { found }) if found.contains("exnodes")
    ));
    assert!(matches!(
        from_xml(br#"<x:exnode xmlns:x="http://example.com/other"/>"#),
        Err(XmlError::NotExnode { found }) if found.contains("http://example.com/other")
    ));
    assert!(matches!(from_xml(b""), Err(XmlError::NotExnode { .. })));
    assert!(matches!(
        from_xml(b"  <!-- nothing -->  "),
        Err(XmlError::NotExnode { .. })
    ));
    // The LoRS layout with the prefix bound to another URI: the children are
    // not exNode elements.
    let wrong = doc(&mapping("")).replace(NAMESPACE, "http://loci.cs.utk.edu/exnode2");
    let (at, reason) = invalid(&wrong);
    assert_eq!(at, "top level");
    assert!(reason.contains("exnode2"), "{reason}");
    // An undeclared prefix.
    let undeclared = "<exnode><y:metadata name=\"a\" type=\"string\">b</y:metadata></exnode>";
    let (_, reason) = invalid(undeclared);
    assert!(reason.contains("not declared"), "{reason}");
    // Content after the root.
    let (at, _) = invalid(&format!("{}<exnode/>", doc("")));
    assert_eq!(at, "document");
}

#[test]
fn non_utf8_and_nul_are_refused() {
    let mut bytes = doc(r#"<exnode:metadata name="filename" type="string">caf"#).into_bytes();
    let at = bytes.len();
    bytes.extend_from_slice(b"\xe9</exnode:metadata></exnode>");
    assert_eq!(from_xml(&bytes), Err(XmlError::NotUtf8 { offset: at }));
    let latin1 = "<?xml version=\"1.0\" encoding=\"ISO-8859-1\"?><exnode/>";
    let (at, reason) = invalid(latin1);
    assert_eq!(at, "XML declaration");
    assert!(reason.contains("iso-8859-1"), "{reason}");
    let (_, reason) = invalid(&doc("\0"));
    assert!(reason.contains("NUL"), "{reason}");
    let (at, _) = invalid(&doc(
        r#"<exnode:metadata name="filename" type="string">&#0;</exnode:metadata>"#,
    ));
    assert_eq!(at, "character data");
}

#[test]
fn bad_integers_are_refused() {
    let field = |name: &str, value: &str| {
        invalid(&doc(&mapping(&format!(
            r#"<exnode:metadata name="{name}" type="integer">{value}</exnode:metadata>"#
        ))))
    };
    let (at, reason) = field("size_hint", "99999999999999999999");
    assert_eq!(at, "mapping 0, metadata \"size_hint\"");
    assert!(reason.contains("64-bit"), "{reason}");
    // A known size field, given twice.
    let (at, reason) = field("alloc_length", "5");
    assert_eq!(at, "mapping 0, metadata \"alloc_length\"");
    assert_eq!(reason, "given twice");

    let top = |name: &str, ty: &str, value: &str| {
        invalid(&doc(&format!(
            r#"<exnode:metadata name="{name}" type="{ty}">{value}</exnode:metadata>"#
        )))
    };
    let (at, reason) = top("size", "integer", "-1");
    assert_eq!(at, "top level, metadata \"size\"");
    assert!(reason.contains("negative"), "{reason}");
    let (_, reason) = top("size", "integer", "18446744073709551616");
    assert!(reason.contains("0..2^64"), "{reason}");
    assert_eq!(
        from_xml(doc(r#"<exnode:metadata name="size" type="integer">18446744073709551615</exnode:metadata>"#).as_bytes())
            .unwrap()
            .size,
        u64::MAX
    );
    let (_, reason) = top("size", "integer", "1e6");
    assert!(reason.contains("not an integer"), "{reason}");
    let (_, reason) = top("size", "string", "5");
    assert!(reason.contains("must be of type integer"), "{reason}");
    let (_, reason) = top("x", "float", "5");
    assert!(reason.contains("float"), "{reason}");
    let (_, reason) = top("file_uuid", "string", "not-a-uuid");
    assert!(reason.contains("UUID"), "{reason}");
    let (_, reason) = top("Version", "string", "2.0");
    assert!(reason.contains("2.0"), "{reason}");
    let (_, reason) = top("encryption", "string", "rot13");
    assert!(reason.contains("cipher"), "{reason}");
    let (_, reason) = top("encryption", "string", "aes-128-ctr");
    assert!(reason.contains("together"), "{reason}");
    let (_, reason) = top("ec_group", "string", "id=1 k=2");
    assert!(reason.contains("missing"), "{reason}");

    // In a mapping: the other fields of ours.
    let (at, reason) = invalid(&doc(&mapping(
        r#"<exnode:metadata name="expires" type="integer">9223372036854775808</exnode:metadata>"#,
    )));
    assert_eq!(at, "mapping 0, metadata \"expires\"");
    assert!(reason.contains("64-bit"), "{reason}");
    for (name, value) in [
        ("checksum", "md5:00"),
        ("checksum", "blake3:xyz"),
        ("share", "1"),
        ("share", "1:70000"),
        ("security", "none"),
    ] {
        let (at, _) = invalid(&doc(&mapping(&format!(
            r#"<exnode:metadata name="{name}" type="string">{value}</exnode:metadata>"#
        ))));
        assert_eq!(at, format!("mapping 0, metadata \"{name}\""));
    }
}

#[test]
fn structural_errors_say_where() {
    // Second mapping lacks logical_length.
    let second = mapping("").replace(
        r#"<exnode:metadata name="logical_length" type="integer">10</exnode:metadata>"#,
        "",
    );
    let (at, reason) = invalid(&doc(&format!("{}{second}", mapping(""))));
    assert_eq!(at, "mapping 1");
    assert!(reason.contains("logical_length"), "{reason}");
    // Unknown element in a mapping.
    let (at, reason) = invalid(&doc(&mapping("<exnode:bogus/>")));
    assert_eq!(at, "mapping 0");
    assert!(reason.contains("exnode:bogus"), "{reason}");
    // Metadata without a type, without a name; argument with nested element.
    let (at, reason) = invalid(&doc(r#"<exnode:metadata name="a">b</exnode:metadata>"#));
    assert_eq!(
        (at.as_str(), reason.as_str()),
        ("top level, metadata \"a\"", "no type attribute")
    );
    let (_, reason) = invalid(&doc(
        r#"<exnode:metadata type="string">b</exnode:metadata>"#,
    ));
    assert_eq!(reason, "no name attribute");
    let (at, _) = invalid(&doc(&mapping(
        r#"<exnode:function name="c"><exnode:argument name="k" type="string"><exnode:x/></exnode:argument></exnode:function>"#,
    )));
    assert_eq!(at, "mapping 0, function c, argument \"k\"");
    // Two read capabilities.
    let (at, reason) = invalid(&doc(&mapping(
        "<exnode:read>ibp://h:1/0#k/0/READ</exnode:read>",
    )));
    assert_eq!(
        (at.as_str(), reason.as_str()),
        ("mapping 0, <exnode:read>", "given twice")
    );
    // A read capability without an address and no depot metadata.
    let (at, reason) = invalid(&doc(
        &mapping("").replace("ibp://h:6714/0#k/0/READ", "nonsense")
    ));
    assert_eq!(at, "mapping 0");
    assert!(reason.contains("no depot"), "{reason}");
    // Text where elements belong.
    let (at, _) = invalid(&doc("hello"));
    assert_eq!(at, "<exnode>");
    // Mismatched end tag.
    assert!(matches!(
        from_xml(format!("{HEAD}<exnode:mapping></exnode:map></exnode>").as_bytes()),
        Err(XmlError::Syntax { .. })
    ));
}

#[test]
fn garbage_never_panics() {
    // A cheap stand-in for the fuzz target: mutate a real document.
    let seed = doc(&mapping(
        r#"<exnode:function name="aes_encrypt"><exnode:argument name="KEY" type="string">&amp;&lt;</exnode:argument></exnode:function>"#,
    ));
    let bytes = seed.as_bytes();
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    for _ in 0..20_000 {
        let mut d = bytes.to_vec();
        for _ in 0..4 {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let i = (state as usize) % d.len();
            match state >> 60 {
                0..=5 => d[i] = (state >> 32) as u8,
                6..=9 => {
                    d.remove(i);
                }
                _ => d.insert(i, b"<>&;\"'/:=-"[(state >> 40) as usize % 10]),
            }
        }
        if let Ok(x) = from_xml(&d) {
            let again = exnode::to_xml(&x);
            assert_eq!(from_xml(again.as_bytes()).as_ref(), Ok(&x), "{again}");
        }
    }
}
