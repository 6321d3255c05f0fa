//! Reading the XML form: a pull parser over quick-xml's namespace-aware
//! reader, one function per element kind, with every limit checked before
//! anything is allocated for it.

use quick_xml::events::Event;
use quick_xml::name::{Namespace, ResolveResult};
use quick_xml::NsReader;
use uuid::Uuid;

use super::{parse_group, XmlError, FORMAT_VERSION, MAX_DOCUMENT, MAX_ELEMENT_DEPTH, NAMESPACE};
use crate::model::{
    capability_address, Checksum, Cipher, Encryption, Exnode, Function, IvDerivation, Mapping,
    Metadata, Security, Share, Value, MAX_FUNCTION_DEPTH, MAX_MAPPINGS,
};

/// Parses an exNode document: ours or one written by LoRS 0.82. Does not
/// call [`Exnode::validate`] (see [`super::parse_and_validate`]).
///
/// Refuses documents over [`MAX_DOCUMENT`] bytes, that are not UTF-8 or
/// contain NUL, with a DTD (so no entity but the five predefined ones and
/// character references), nested deeper than [`MAX_ELEMENT_DEPTH`], with
/// functions nested deeper than [`MAX_FUNCTION_DEPTH`], with more than
/// [`MAX_MAPPINGS`] mappings, and with any element, attribute or value the
/// format does not define (unknown *metadata names* are kept, see
/// docs/exnode.md).
pub fn from_xml(doc: &[u8]) -> Result<Exnode, XmlError> {
    if doc.len() > MAX_DOCUMENT {
        return Err(XmlError::TooLarge(doc.len()));
    }
    if let Err(e) = std::str::from_utf8(doc) {
        return Err(XmlError::NotUtf8 {
            offset: e.valid_up_to(),
        });
    }
    if let Some(offset) = doc.iter().position(|&b| b == 0) {
        return Err(XmlError::Invalid {
            at: "document".into(),
            offset: offset as u64,
            reason: "NUL is not an XML character".into(),
        });
    }
    let mut r = Reader::new(doc);
    let root = loop {
        match r.next()? {
            Ev::Start(e) => break e,
            Ev::Text(t) if is_blank(&t) => {}
            Ev::Text(_) => return Err(r.invalid("document", "text before the root element")),
            // quick-xml refuses an end tag without a start tag.
            Ev::End => return Err(r.invalid("document", "end tag before the root element")),
            Ev::Eof => {
                return Err(XmlError::NotExnode {
                    found: "missing (empty document)".into(),
                })
            }
        }
    };
    // LoRS declares the namespace with a prefix and leaves the root itself
    // unprefixed, so the root is `exnode` in the exnode namespace or in none.
    if root.local != "exnode" || !matches!(root.ns, Ns::Exnode | Ns::None) {
        return Err(XmlError::NotExnode {
            found: root.describe(),
        });
    }
    let exnode = read_exnode(&mut r)?;
    loop {
        match r.next()? {
            Ev::Eof => return Ok(exnode),
            Ev::Text(t) if is_blank(&t) => {}
            Ev::Text(_) | Ev::Start(_) | Ev::End => {
                return Err(r.invalid("document", "content after the root element"))
            }
        }
    }
}

/// Namespace of an element.
#[derive(Debug, PartialEq, Eq)]
enum Ns {
    Exnode,
    None,
    Other(String),
}

/// A start tag, reduced to what the format uses.
#[derive(Debug)]
struct Elem {
    ns: Ns,
    local: String,
    /// The tag as written (for messages).
    qname: String,
    /// The unprefixed `name` and `type` attributes.
    name: Option<String>,
    ty: Option<String>,
    offset: u64,
}

impl Elem {
    /// Whether this is `exnode:{local}` (by namespace URI).
    fn is(&self, local: &str) -> bool {
        self.ns == Ns::Exnode && self.local == local
    }

    fn describe(&self) -> String {
        match &self.ns {
            Ns::Exnode => format!("<{}> (namespace {NAMESPACE})", self.qname),
            Ns::None => format!("<{}> (no namespace)", self.qname),
            Ns::Other(ns) => format!("<{}> (namespace {ns})", self.qname),
        }
    }
}

enum Ev {
    Start(Elem),
    End,
    /// Unescaped character data or CDATA.
    Text(String),
    Eof,
}

struct Reader<'a> {
    xml: NsReader<&'a [u8]>,
    depth: usize,
    /// Where the last event started.
    offset: u64,
}

impl<'a> Reader<'a> {
    fn new(doc: &'a [u8]) -> Self {
        let mut xml = NsReader::from_reader(doc);
        let config = xml.config_mut();
        config.expand_empty_elements = true;
        config.check_end_names = true;
        config.allow_unmatched_ends = false;
        config.trim_text(false);
        Reader {
            xml,
            depth: 0,
            offset: 0,
        }
    }

    fn next(&mut self) -> Result<Ev, XmlError> {
        loop {
            self.offset = self.xml.buffer_position();
            let (ns, event) = match self.xml.read_resolved_event() {
                Ok((ns, event)) => (resolve(ns), event),
                Err(e) => {
                    return Err(XmlError::Syntax {
                        offset: self.xml.error_position(),
                        message: e.to_string(),
                    })
                }
            };
            let offset = self.offset;
            match event {
                Event::Start(start) => {
                    self.depth += 1;
                    if self.depth > MAX_ELEMENT_DEPTH {
                        return Err(XmlError::TooDeep { offset });
                    }
                    let qname = String::from_utf8_lossy(start.name().as_ref()).into_owned();
                    let local = String::from_utf8_lossy(start.local_name().as_ref()).into_owned();
                    let ns = match ns {
                        Ok(ns) => ns,
                        Err(prefix) => {
                            return Err(self.invalid(
                                &format!("<{qname}>"),
                                &format!("namespace prefix {prefix:?} is not declared"),
                            ))
                        }
                    };
                    let mut name = None;
                    let mut ty = None;
                    for attr in start.attributes() {
                        let attr = attr.map_err(|e| XmlError::Syntax {
                            offset,
                            message: e.to_string(),
                        })?;
                        let slot = match attr.key.as_ref() {
                            b"name" => &mut name,
                            b"type" => &mut ty,
                            _ => continue,
                        };
                        let value = attr.unescape_value().map_err(|e| {
                            self.invalid(&format!("<{qname}>"), &format!("attribute value: {e}"))
                        })?;
                        *slot = Some(value.into_owned());
                    }
                    return Ok(Ev::Start(Elem {
                        ns,
                        local,
                        qname,
                        name,
                        ty,
                        offset,
                    }));
                }
                Event::End(_) => {
                    self.depth = self.depth.saturating_sub(1);
                    return Ok(Ev::End);
                }
                Event::Text(text) => {
                    let text = text
                        .unescape()
                        .map_err(|e| self.invalid("character data", &e.to_string()))?;
                    return Ok(Ev::Text(text.into_owned()));
                }
                Event::CData(data) => {
                    let text = std::str::from_utf8(&data)
                        .map_err(|_| XmlError::NotUtf8 {
                            offset: offset as usize,
                        })?
                        .to_owned();
                    return Ok(Ev::Text(text));
                }
                Event::DocType(_) => return Err(XmlError::Doctype { offset }),
                Event::Decl(decl) => {
                    if let Some(Ok(enc)) = decl.encoding() {
                        let enc = String::from_utf8_lossy(&enc).to_ascii_lowercase();
                        if enc != "utf-8" && enc != "utf8" && enc != "us-ascii" {
                            return Err(self.invalid(
                                "XML declaration",
                                &format!("encoding {enc:?}: only UTF-8 is read"),
                            ));
                        }
                    }
                }
                Event::Comment(_) | Event::PI(_) | Event::Empty(_) => {}
                Event::Eof => return Ok(Ev::Eof),
            }
        }
    }

    fn invalid(&self, at: &str, reason: &str) -> XmlError {
        XmlError::Invalid {
            at: at.to_owned(),
            offset: self.offset,
            reason: reason.to_owned(),
        }
    }

    /// The character data of a leaf element whose start tag was just read,
    /// up to its end tag.
    fn leaf_text(&mut self, at: &str) -> Result<String, XmlError> {
        let mut text = String::new();
        loop {
            match self.next()? {
                Ev::Text(t) => text.push_str(&t),
                Ev::End => return Ok(text),
                Ev::Start(e) => {
                    return Err(self.invalid(
                        at,
                        &format!("unexpected element {} inside it", e.describe()),
                    ))
                }
                Ev::Eof => return Err(XmlError::Truncated { at: at.to_owned() }),
            }
        }
    }

    /// Reads the rest of a `metadata` or `argument` element.
    fn typed(&mut self, e: &Elem, at: &str) -> Result<Typed, XmlError> {
        let Some(name) = e.name.clone() else {
            return Err(self.invalid(&format!("{at}, <{}>", e.qname), "no name attribute"));
        };
        let at = format!("{at}, {} {name:?}", e.local);
        let ty = match e.ty.as_deref() {
            Some("string") => Type::String,
            Some("integer") => Type::Integer,
            Some("double") => Type::Double,
            Some(other) => {
                return Err(self.invalid(
                    &at,
                    &format!("type {other:?}; expected string, integer or double"),
                ))
            }
            None => return Err(self.invalid(&at, "no type attribute")),
        };
        let offset = e.offset;
        let text = self.leaf_text(&at)?;
        Ok(Typed {
            name,
            ty,
            text,
            at,
            offset,
        })
    }
}

/// Our namespace classes, or the undeclared prefix.
fn resolve(ns: ResolveResult<'_>) -> Result<Ns, String> {
    match ns {
        ResolveResult::Bound(Namespace(uri)) if uri == NAMESPACE.as_bytes() => Ok(Ns::Exnode),
        ResolveResult::Bound(Namespace(uri)) => Ok(Ns::Other(String::from_utf8_lossy(uri).into())),
        ResolveResult::Unbound => Ok(Ns::None),
        ResolveResult::Unknown(prefix) => Err(String::from_utf8_lossy(&prefix).into()),
    }
}

fn is_blank(s: &str) -> bool {
    s.bytes().all(|b| b.is_ascii_whitespace())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Type {
    String,
    Integer,
    Double,
}

/// A `metadata` or `argument` element as read: name, declared type, text.
struct Typed {
    name: String,
    ty: Type,
    text: String,
    /// Where it is, for messages: `mapping 3, metadata "alloc_length"`.
    at: String,
    offset: u64,
}

impl Typed {
    fn error(&self, reason: impl Into<String>) -> XmlError {
        XmlError::Invalid {
            at: self.at.clone(),
            offset: self.offset,
            reason: reason.into(),
        }
    }

    fn expect(&self, ty: Type) -> Result<(), XmlError> {
        if self.ty == ty {
            return Ok(());
        }
        let name = match ty {
            Type::String => "string",
            Type::Integer => "integer",
            Type::Double => "double",
        };
        Err(self.error(format!("must be of type {name}")))
    }

    fn string(self) -> Result<String, XmlError> {
        self.expect(Type::String)?;
        Ok(self.text)
    }

    /// A size, offset or count: a non-negative integer.
    fn unsigned(&self) -> Result<u64, XmlError> {
        self.expect(Type::Integer)?;
        let t = self.text.trim_ascii();
        if t.starts_with('-') {
            return Err(self.error(format!("{t:?} is negative; a size or offset is expected")));
        }
        t.parse()
            .map_err(|e| self.error(format!("{t:?} is not an integer in 0..2^64: {e}")))
    }

    fn signed(&self) -> Result<i64, XmlError> {
        self.expect(Type::Integer)?;
        let t = self.text.trim_ascii();
        t.parse()
            .map_err(|e| self.error(format!("{t:?} is not a 64-bit integer: {e}")))
    }

    /// Metadata the format does not model, kept as it was.
    fn into_metadata(self) -> Result<Metadata, XmlError> {
        let value = match self.ty {
            Type::String => Value::String(self.text),
            Type::Integer => Value::Integer(self.signed()?),
            Type::Double => Value::Double(self.text),
        };
        Ok(Metadata {
            name: self.name,
            value,
        })
    }
}

/// Notes a name the codec owns as seen; a second one is an error.
fn once(seen: &mut Vec<&'static str>, name: &'static str, t: &Typed) -> Result<(), XmlError> {
    if seen.contains(&name) {
        return Err(t.error("given twice"));
    }
    seen.push(name);
    Ok(())
}

fn read_exnode(r: &mut Reader<'_>) -> Result<Exnode, XmlError> {
    const AT: &str = "top level";
    let mut x = Exnode::default();
    let mut seen: Vec<&'static str> = Vec::new();
    let mut size = None;
    let (mut cipher, mut key_id, mut iv) = (None, None, None);
    loop {
        let e = match r.next()? {
            Ev::Start(e) => e,
            Ev::Text(t) if is_blank(&t) => continue,
            Ev::Text(_) => return Err(r.invalid("<exnode>", "unexpected text")),
            Ev::End => break,
            Ev::Eof => {
                return Err(XmlError::Truncated {
                    at: "<exnode>".into(),
                })
            }
        };
        if e.is("mapping") {
            if x.mappings.len() == MAX_MAPPINGS {
                return Err(XmlError::TooManyMappings);
            }
            let index = x.mappings.len();
            x.mappings.push(read_mapping(r, index)?);
            continue;
        }
        if !e.is("metadata") {
            return Err(r.invalid(AT, &format!("unexpected element {}", e.describe())));
        }
        let t = r.typed(&e, AT)?;
        match t.name.as_str() {
            "Version" => {
                once(&mut seen, "Version", &t)?;
                let (at, offset) = (t.at.clone(), t.offset);
                let v = t.string()?;
                if v != FORMAT_VERSION {
                    return Err(XmlError::Invalid {
                        at,
                        offset,
                        reason: format!("exNode version {v:?}; only {FORMAT_VERSION} is read"),
                    });
                }
            }
            "filename" => {
                once(&mut seen, "filename", &t)?;
                x.filename = Some(t.string()?);
            }
            "file_uuid" => {
                once(&mut seen, "file_uuid", &t)?;
                let err = t.error("not a UUID");
                x.file = Some(Uuid::parse_str(t.string()?.trim_ascii()).map_err(|_| err)?);
            }
            "file_version" => {
                once(&mut seen, "file_version", &t)?;
                x.version = t.unsigned()?;
            }
            "size" => {
                once(&mut seen, "size", &t)?;
                size = Some(t.unsigned()?);
            }
            "block_size" => {
                once(&mut seen, "block_size", &t)?;
                x.block_size = Some(t.unsigned()?);
            }
            "encryption" => {
                once(&mut seen, "encryption", &t)?;
                let err = t.error("unknown cipher (known: aes-128-ctr)");
                cipher = Some(Cipher::from_name(&t.string()?).ok_or(err)?);
            }
            "encryption_key_id" => {
                once(&mut seen, "encryption_key_id", &t)?;
                key_id = Some(t.string()?);
            }
            "encryption_iv" => {
                once(&mut seen, "encryption_iv", &t)?;
                let err = t.error("unknown IV derivation (known: uuid-block)");
                iv = Some(IvDerivation::from_name(&t.string()?).ok_or(err)?);
            }
            "ec_group" => {
                let at = t.at.clone();
                let offset = t.offset;
                let group = parse_group(&t.string()?).map_err(|reason| XmlError::Invalid {
                    at,
                    offset,
                    reason,
                })?;
                x.ec_groups.push(group);
            }
            _ => x.metadata.push(t.into_metadata()?),
        }
    }
    x.encryption = match (cipher, key_id, iv) {
        (None, None, None) => None,
        (Some(cipher), Some(key_id), Some(iv)) => Some(Encryption { cipher, key_id, iv }),
        _ => {
            return Err(r.invalid(
                AT,
                "encryption, encryption_key_id and encryption_iv must be given together",
            ))
        }
    };
    // LoRS exNodes have no size: the file ends where the last mapping does.
    x.size = size.unwrap_or_else(|| {
        x.mappings
            .iter()
            .map(Mapping::logical_end)
            .max()
            .unwrap_or(0)
    });
    Ok(x)
}

fn read_mapping(r: &mut Reader<'_>, index: usize) -> Result<Mapping, XmlError> {
    let at = format!("mapping {index}");
    let mut m = Mapping::default();
    let mut seen: Vec<&'static str> = Vec::new();
    let mut depot = None;
    loop {
        let e = match r.next()? {
            Ev::Start(e) => e,
            Ev::Text(t) if is_blank(&t) => continue,
            Ev::Text(_) => return Err(r.invalid(&at, "unexpected text")),
            Ev::End => break,
            Ev::Eof => return Err(XmlError::Truncated { at }),
        };
        if e.is("function") {
            m.functions.push(read_function(r, &e, &at, 1)?);
            continue;
        }
        let cap = if e.is("read") {
            &mut m.read
        } else if e.is("write") {
            &mut m.write
        } else if e.is("manage") {
            &mut m.manage
        } else if e.is("metadata") {
            let t = r.typed(&e, &at)?;
            match t.name.as_str() {
                "alloc_length" => {
                    once(&mut seen, "alloc_length", &t)?;
                    m.alloc_length = t.unsigned()?;
                }
                "alloc_offset" => {
                    once(&mut seen, "alloc_offset", &t)?;
                    m.alloc_offset = t.unsigned()?;
                }
                "e2e_blocksize" => {
                    once(&mut seen, "e2e_blocksize", &t)?;
                    m.e2e_blocksize = t.unsigned()?;
                }
                "exnode_offset" => {
                    once(&mut seen, "exnode_offset", &t)?;
                    m.logical_offset = t.unsigned()?;
                }
                "logical_length" => {
                    once(&mut seen, "logical_length", &t)?;
                    m.logical_length = t.unsigned()?;
                }
                "depot" => {
                    once(&mut seen, "depot", &t)?;
                    depot = Some(t.string()?);
                }
                "security" => {
                    once(&mut seen, "security", &t)?;
                    let err = t.error("unknown security level (legacy, crypto or full)");
                    m.security = Some(Security::from_name(&t.string()?).ok_or(err)?);
                }
                "expires" => {
                    once(&mut seen, "expires", &t)?;
                    m.expires = Some(t.signed()?);
                }
                "checksum" => {
                    once(&mut seen, "checksum", &t)?;
                    let err =
                        t.error("not blake3-placed:, blake3: or sha256: followed by 64 hex digits");
                    m.checksum = Some(parse_checksum(&t.string()?).ok_or(err)?);
                }
                "share" => {
                    once(&mut seen, "share", &t)?;
                    let err = t.error("not <group>:<index>");
                    m.share = Some(parse_share(&t.string()?).ok_or(err)?);
                }
                _ => m.metadata.push(t.into_metadata()?),
            }
            continue;
        } else {
            return Err(r.invalid(&at, &format!("unexpected element {}", e.describe())));
        };
        let what = format!("{at}, <{}>", e.qname);
        if cap.is_some() {
            return Err(r.invalid(&what, "given twice"));
        }
        *cap = Some(r.leaf_text(&what)?.trim_ascii().to_owned());
    }
    for name in [
        "alloc_length",
        "alloc_offset",
        "e2e_blocksize",
        "exnode_offset",
        "logical_length",
    ] {
        if !seen.contains(&name) {
            return Err(r.invalid(&at, &format!("no {name} metadata")));
        }
    }
    m.depot = match (depot, &m.read) {
        (Some(d), _) => d,
        (None, Some(read)) => match capability_address(read) {
            Some(addr) => addr.to_owned(),
            None => {
                return Err(r.invalid(
                    &at,
                    "no depot metadata, and the read capability is not ibp://host:port/...",
                ))
            }
        },
        (None, None) => String::new(),
    };
    Ok(m)
}

/// Reads a `function` element whose start tag `e` was just read; `depth` is
/// 1 for a mapping's outermost functions.
fn read_function(
    r: &mut Reader<'_>,
    e: &Elem,
    parent: &str,
    depth: usize,
) -> Result<Function, XmlError> {
    let Some(name) = e.name.clone() else {
        return Err(r.invalid(&format!("{parent}, <{}>", e.qname), "no name attribute"));
    };
    let at = if depth == 1 {
        format!("{parent}, function {name}")
    } else {
        format!("{parent}/{name}")
    };
    if depth > MAX_FUNCTION_DEPTH {
        return Err(r.invalid(
            &at,
            &format!("functions nested deeper than {MAX_FUNCTION_DEPTH}"),
        ));
    }
    let mut f = Function {
        name,
        arguments: Vec::new(),
        inner: Vec::new(),
    };
    loop {
        let e = match r.next()? {
            Ev::Start(e) => e,
            Ev::Text(t) if is_blank(&t) => continue,
            Ev::Text(_) => return Err(r.invalid(&at, "unexpected text")),
            Ev::End => return Ok(f),
            Ev::Eof => return Err(XmlError::Truncated { at }),
        };
        if e.is("argument") {
            f.arguments.push(r.typed(&e, &at)?.into_metadata()?);
        } else if e.is("function") {
            f.inner.push(read_function(r, &e, &at, depth + 1)?);
        } else {
            return Err(r.invalid(&at, &format!("unexpected element {}", e.describe())));
        }
    }
}

fn parse_checksum(s: &str) -> Option<Checksum> {
    let (alg, hex) = s.trim_ascii().split_once(':')?;
    let bytes = parse_hex32(hex)?;
    match alg {
        "blake3" => Some(Checksum::Blake3(bytes)),
        "sha256" => Some(Checksum::Sha256(bytes)),
        "blake3-placed" => Some(Checksum::Blake3Placed(bytes)),
        _ => None,
    }
}

fn parse_hex32(hex: &str) -> Option<[u8; 32]> {
    let hex = hex.as_bytes();
    if hex.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, pair) in hex.chunks_exact(2).enumerate() {
        let digit = |c: u8| (c as char).to_digit(16);
        out[i] = (digit(pair[0])? * 16 + digit(pair[1])?) as u8;
    }
    Some(out)
}

fn parse_share(s: &str) -> Option<Share> {
    let (group, index) = s.trim_ascii().split_once(':')?;
    Some(Share {
        group: group.parse().ok()?,
        index: index.parse().ok()?,
    })
}
