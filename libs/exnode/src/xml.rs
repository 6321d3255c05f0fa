//! The XML form of an exNode (see docs/exnode.md): reading (our exNodes and
//! LoRS 0.82 ones) and writing.
//!
//! The form is the LoRS 0.82 exNode ("Version 3.0"): a root `exnode`
//! declaring the `http://loci.cs.utk.edu/exnode` namespace, typed
//! `exnode:metadata` entries, and `exnode:mapping` elements holding mapping
//! metadata, nested `exnode:function`s and the `exnode:read`, `exnode:write`
//! and `exnode:manage` capabilities. What LoRS lacks (file UUID, version,
//! size, encryption, erasure coding, depot address, security level, expiry,
//! checksums, shares) is carried in metadata entries of our own names, which
//! the LoRS tools ignore.
//!
//! [`from_xml`] only parses; [`parse_and_validate`] also runs
//! [`Exnode::validate`].

mod read;
mod write;

use thiserror::Error;

use crate::model::{EcGroup, Exnode, InvalidExnode};

pub use read::from_xml;
pub use write::to_xml;
pub(crate) use write::{mapping_parts, metadata_xml};

/// The exNode namespace URI (elements are matched by it, not by prefix).
pub const NAMESPACE: &str = "http://loci.cs.utk.edu/exnode";
/// Largest document accepted, in bytes.
pub const MAX_DOCUMENT: usize = 64 * 1024 * 1024;
/// Deepest element nesting accepted. A valid exNode needs at most
/// 3 + [`crate::MAX_FUNCTION_DEPTH`] (root, mapping, functions, argument).
pub const MAX_ELEMENT_DEPTH: usize = 16;
/// The only exNode format version there is (LoRS writes it as the string
/// metadata `Version`).
pub const FORMAT_VERSION: &str = "3.0";

/// Top-level metadata names the codec owns: they are read into fields of
/// [`Exnode`] and never appear in [`Exnode::metadata`]; entries of these names
/// in [`Exnode::metadata`] are not written (the modelled field wins).
pub const TOP_LEVEL_NAMES: [&str; 10] = [
    "Version",
    "filename",
    "file_uuid",
    "file_version",
    "size",
    "block_size",
    "encryption",
    "encryption_key_id",
    "encryption_iv",
    "ec_group",
];

/// Mapping metadata names the codec owns (LoRS's five, in the order LoRS
/// writes them, then ours); as [`TOP_LEVEL_NAMES`] for
/// [`crate::Mapping::metadata`].
pub const MAPPING_NAMES: [&str; 10] = [
    "alloc_length",
    "alloc_offset",
    "e2e_blocksize",
    "exnode_offset",
    "logical_length",
    "depot",
    "security",
    "expires",
    "checksum",
    "share",
];

/// Why a document could not be read. Offsets are byte offsets into the
/// document.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum XmlError {
    #[error("exNode document of {0} bytes; at most {MAX_DOCUMENT} are accepted")]
    TooLarge(usize),
    #[error("not an exNode: {0}")]
    Malformed(String),
    #[error("the exNode document is not UTF-8 (byte {offset})")]
    NotUtf8 { offset: usize },
    #[error("XML syntax error at byte {offset}: {message}")]
    Syntax { offset: u64, message: String },
    #[error(
        "document type declaration at byte {offset}: DTDs and entity declarations are refused"
    )]
    Doctype { offset: u64 },
    #[error("elements nested deeper than {MAX_ELEMENT_DEPTH} at byte {offset}")]
    TooDeep { offset: u64 },
    #[error("the root element is {found}, not exnode (namespace {NAMESPACE})")]
    NotExnode { found: String },
    #[error("more than {} mappings", crate::MAX_MAPPINGS)]
    TooManyMappings,
    #[error("the document ends inside {at}")]
    Truncated { at: String },
    #[error("{at} (byte {offset}): {reason}")]
    Invalid {
        /// Which part of the exNode: `top level`, `mapping 3`,
        /// `mapping 3, function checksum/des_encrypt`, followed by the
        /// element or metadata name.
        at: String,
        offset: u64,
        reason: String,
    },
}

/// Why a document is not an acceptable exNode: unreadable, or readable but
/// inconsistent.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ReadError {
    #[error(transparent)]
    Xml(#[from] XmlError),
    #[error("invalid exNode: {0}")]
    Invalid(#[from] InvalidExnode),
}

/// [`from_xml`] followed by [`Exnode::validate`].
pub fn parse_and_validate(doc: &[u8]) -> Result<Exnode, ReadError> {
    let exnode = from_xml(doc)?;
    exnode.validate()?;
    Ok(exnode)
}

/// The `ec_group` metadata value: `id=3 k=2 m=1 offset=0 length=N shard=S`.
fn format_group(g: &EcGroup) -> String {
    format!(
        "id={} k={} m={} offset={} length={} shard={}",
        g.id, g.k, g.m, g.logical_offset, g.logical_length, g.shard_size
    )
}

/// Parses [`format_group`]'s form; the six keys in any order, each once,
/// separated by whitespace.
fn parse_group(s: &str) -> Result<EcGroup, String> {
    let mut id = None;
    let mut k = None;
    let mut m = None;
    let mut offset = None;
    let mut length = None;
    let mut shard = None;
    for word in s.split_ascii_whitespace() {
        let (key, value) = word
            .split_once('=')
            .ok_or_else(|| format!("{word:?} is not key=value"))?;
        fn set<T: std::str::FromStr>(
            slot: &mut Option<T>,
            key: &str,
            value: &str,
        ) -> Result<(), String> {
            if slot.is_some() {
                return Err(format!("{key} given twice"));
            }
            let v = value
                .parse()
                .map_err(|_| format!("{key}={value:?} is not a number in range"))?;
            *slot = Some(v);
            Ok(())
        }
        match key {
            "id" => set(&mut id, key, value)?,
            "k" => set(&mut k, key, value)?,
            "m" => set(&mut m, key, value)?,
            "offset" => set(&mut offset, key, value)?,
            "length" => set(&mut length, key, value)?,
            "shard" => set(&mut shard, key, value)?,
            _ => return Err(format!("unknown key {key:?}")),
        }
    }
    let missing = |key: &str| format!("{key}= missing");
    Ok(EcGroup {
        id: id.ok_or_else(|| missing("id"))?,
        k: k.ok_or_else(|| missing("k"))?,
        m: m.ok_or_else(|| missing("m"))?,
        logical_offset: offset.ok_or_else(|| missing("offset"))?,
        logical_length: length.ok_or_else(|| missing("length"))?,
        shard_size: shard.ok_or_else(|| missing("shard"))?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn group_text_round_trips() {
        let g = EcGroup {
            id: 7,
            k: 4,
            m: 2,
            logical_offset: 1 << 40,
            logical_length: 12345,
            shard_size: 3087,
        };
        assert_eq!(parse_group(&format_group(&g)), Ok(g));
        assert_eq!(
            parse_group("shard=3087 length=12345 offset=1099511627776 m=2 k=4 id=7"),
            Ok(g)
        );
        assert!(parse_group("id=1 k=2 m=1 offset=0 length=5").is_err());
        assert!(parse_group("id=1 id=1 k=2 m=1 offset=0 length=5 shard=3").is_err());
        assert!(parse_group("id=1 k=-2 m=1 offset=0 length=5 shard=3").is_err());
        assert!(parse_group("id=1 k=70000 m=1 offset=0 length=5 shard=3").is_err());
        assert!(parse_group("id=1 k=2 m=1 offset=0 length=5 shard=3 x=1").is_err());
    }
}
