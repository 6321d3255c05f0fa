//! The XML form of an exNode (see docs/exnode.md): reading (our exNodes and
//! LoRS 0.82 ones) and writing.
//!
//! STUB: being written; signatures are final.

use thiserror::Error;

use crate::model::Exnode;

/// Largest document accepted, in bytes.
pub const MAX_DOCUMENT: usize = 64 * 1024 * 1024;

/// Why a document could not be read.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum XmlError {
    #[error("exNode document of {0} bytes; at most {MAX_DOCUMENT} are accepted")]
    TooLarge(usize),
    #[error("not an exNode: {0}")]
    Malformed(String),
}

/// Parses an exNode document.
pub fn from_xml(doc: &[u8]) -> Result<Exnode, XmlError> {
    if doc.len() > MAX_DOCUMENT {
        return Err(XmlError::TooLarge(doc.len()));
    }
    Err(XmlError::Malformed("not implemented yet".into()))
}

/// Writes an exNode document.
pub fn to_xml(_exnode: &Exnode) -> String {
    String::new()
}
