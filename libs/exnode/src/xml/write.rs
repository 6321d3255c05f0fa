//! Writing the XML form, in the LoRS layout (two-space indentation, mapping
//! metadata in LoRS's order), so that the LoRS tools read an unencrypted
//! exNode we write.

use std::fmt::Write as _;

use super::{format_group, FORMAT_VERSION, MAPPING_NAMES, NAMESPACE, TOP_LEVEL_NAMES};
use crate::model::{Exnode, Function, Mapping, Metadata, Value};

/// Writes an exNode document that [`super::from_xml`] reads back into an
/// equal model (see docs/exnode.md for the two exceptions: metadata entries
/// with the codec's own names, which are not written, and NUL characters,
/// which XML cannot carry and are written as U+FFFD).
pub fn to_xml(exnode: &Exnode) -> String {
    let mut out = String::with_capacity(1024 + exnode.mappings.len() * 1024);
    out.push_str("<?xml version=\"1.0\"?>\n");
    out.push_str("<exnode xmlns:exnode=\"");
    out.push_str(NAMESPACE);
    out.push_str("\">\n");

    let w = &mut out;
    string(w, 1, "Version", FORMAT_VERSION);
    if let Some(name) = &exnode.filename {
        string(w, 1, "filename", name);
    }
    if let Some(uuid) = exnode.file {
        string(w, 1, "file_uuid", &uuid.hyphenated().to_string());
    }
    if exnode.version != 0 {
        integer(w, 1, "file_version", exnode.version);
    }
    integer(w, 1, "size", exnode.size);
    if let Some(bs) = exnode.block_size {
        integer(w, 1, "block_size", bs);
    }
    if let Some(enc) = &exnode.encryption {
        string(w, 1, "encryption", enc.cipher.name());
        string(w, 1, "encryption_key_id", &enc.key_id);
        string(w, 1, "encryption_iv", enc.iv.name());
    }
    for g in &exnode.ec_groups {
        string(w, 1, "ec_group", &format_group(g));
    }
    for md in &exnode.metadata {
        if !TOP_LEVEL_NAMES.contains(&md.name.as_str()) {
            metadata(w, 1, "metadata", md);
        }
    }
    for m in &exnode.mappings {
        mapping(w, m);
    }
    out.push_str("</exnode>\n");
    out
}

/// The three parts of a mapping that a signature's manifest digests
/// (`crate::signature`), each as [`to_xml`] writes its lines: the range
/// (offsets, lengths, end-to-end block size, share), the capabilities,
/// and the rest (depot, level, expiry, checksum, metadata, functions).
/// `w` is cleared first; `f` is called once per part, in that order.
pub(crate) fn mapping_parts(w: &mut String, m: &Mapping, mut f: impl FnMut(u8, &str)) {
    w.clear();
    range(w, m);
    share(w, m);
    f(1, w);
    w.clear();
    capabilities(w, m);
    f(2, w);
    w.clear();
    placement(w, m);
    others(w, m);
    f(3, w);
}

/// One top-level metadata line as [`to_xml`] writes it.
pub(crate) fn metadata_xml(md: &Metadata) -> String {
    let mut w = String::with_capacity(128);
    metadata(&mut w, 1, "metadata", md);
    w
}

fn mapping(w: &mut String, m: &Mapping) {
    w.push_str("  <exnode:mapping>\n");
    range(w, m);
    placement(w, m);
    share(w, m);
    others(w, m);
    capabilities(w, m);
    w.push_str("  </exnode:mapping>\n");
}

/// LoRS's five, in LoRS's order.
fn range(w: &mut String, m: &Mapping) {
    integer(w, 2, "alloc_length", m.alloc_length);
    integer(w, 2, "alloc_offset", m.alloc_offset);
    integer(w, 2, "e2e_blocksize", m.e2e_blocksize);
    integer(w, 2, "exnode_offset", m.logical_offset);
    integer(w, 2, "logical_length", m.logical_length);
}

fn placement(w: &mut String, m: &Mapping) {
    string(w, 2, "depot", &m.depot);
    if let Some(s) = m.security {
        string(w, 2, "security", s.name());
    }
    if let Some(e) = m.expires {
        integer(w, 2, "expires", e);
    }
    if let Some(c) = &m.checksum {
        let mut text = String::with_capacity(72);
        text.push_str(c.algorithm());
        text.push(':');
        for b in c.bytes() {
            let _ = write!(text, "{b:02x}");
        }
        string(w, 2, "checksum", &text);
    }
}

fn share(w: &mut String, m: &Mapping) {
    if let Some(s) = m.share {
        string(w, 2, "share", &format!("{}:{}", s.group, s.index));
    }
}

/// Mapping metadata of no modelled name, then the functions.
fn others(w: &mut String, m: &Mapping) {
    for md in &m.metadata {
        if !MAPPING_NAMES.contains(&md.name.as_str()) {
            metadata(w, 2, "metadata", md);
        }
    }
    for f in &m.functions {
        function(w, 2, f);
    }
}

fn capabilities(w: &mut String, m: &Mapping) {
    for (element, cap) in [
        ("read", &m.read),
        ("write", &m.write),
        ("manage", &m.manage),
    ] {
        if let Some(cap) = cap {
            indent(w, 2);
            let _ = write!(w, "<exnode:{element}>");
            escape_text(w, cap);
            let _ = writeln!(w, "</exnode:{element}>");
        }
    }
}

fn function(w: &mut String, level: usize, f: &Function) {
    indent(w, level);
    w.push_str("<exnode:function name=\"");
    escape_attr(w, &f.name);
    if f.arguments.is_empty() && f.inner.is_empty() {
        w.push_str("\"/>\n");
        return;
    }
    w.push_str("\">\n");
    for a in &f.arguments {
        metadata(w, level + 1, "argument", a);
    }
    for inner in &f.inner {
        function(w, level + 1, inner);
    }
    indent(w, level);
    w.push_str("</exnode:function>\n");
}

fn string(w: &mut String, level: usize, name: &str, value: &str) {
    element(w, level, "metadata", name, "string", value);
}

fn integer(w: &mut String, level: usize, name: &str, value: impl std::fmt::Display) {
    element(w, level, "metadata", name, "integer", &value.to_string());
}

fn metadata(w: &mut String, level: usize, element_name: &str, md: &Metadata) {
    let (ty, text) = match &md.value {
        Value::String(s) => ("string", s.clone()),
        Value::Integer(i) => ("integer", i.to_string()),
        Value::Double(d) => ("double", d.clone()),
    };
    element(w, level, element_name, &md.name, ty, &text);
}

/// `<exnode:{element} name=".." type="..">text</exnode:{element}>`, or the
/// empty-element form when `text` is empty (as libxml2 writes it).
fn element(w: &mut String, level: usize, element: &str, name: &str, ty: &str, text: &str) {
    indent(w, level);
    let _ = write!(w, "<exnode:{element} name=\"");
    escape_attr(w, name);
    let _ = write!(w, "\" type=\"{ty}\"");
    if text.is_empty() {
        w.push_str("/>\n");
        return;
    }
    w.push('>');
    escape_text(w, text);
    let _ = writeln!(w, "</exnode:{element}>");
}

fn indent(w: &mut String, level: usize) {
    for _ in 0..level {
        w.push_str("  ");
    }
}

/// Character data: `<`, `>` and `&` as entities (as libxml2 does), control
/// characters other than tab and newline as character references (a raw CR
/// would be normalised away by XML parsers), NUL (not an XML character) as
/// U+FFFD.
fn escape_text(w: &mut String, s: &str) {
    escape(w, s, false);
}

/// Attribute values: as [`escape_text`] plus `"`, and tab and newline as
/// character references (XML parsers normalise them to spaces).
fn escape_attr(w: &mut String, s: &str) {
    escape(w, s, true);
}

fn escape(w: &mut String, s: &str, attr: bool) {
    for c in s.chars() {
        match c {
            '<' => w.push_str("&lt;"),
            '>' => w.push_str("&gt;"),
            '&' => w.push_str("&amp;"),
            '"' if attr => w.push_str("&quot;"),
            '\t' | '\n' if !attr => w.push(c),
            '\0' => w.push('\u{FFFD}'),
            c if u32::from(c) < 0x20 => {
                let _ = write!(w, "&#x{:X};", u32::from(c));
            }
            c => w.push(c),
        }
    }
}
