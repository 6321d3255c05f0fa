//! The exNode: the "inode" of logistical networking. It records where every
//! byte of a file lives (mappings of logical byte ranges to allocations on
//! IBP depots), what was done to the bytes on the way (encryption, erasure
//! coding, LoRS end-to-end functions) and how to check them (per-block
//! checksums of what the depot stores).
//!
//! [`model`] is the data; [`signature`] the metadata manager's signature
//! carried in an exNode; [`xml`] reads and writes the namespaced XML form,
//! which is the LoRS 0.82 exNode form extended with metadata of our own, so
//! that LoRS exNodes import and unencrypted exNodes we write stay readable by
//! the LoRS tools. The crate does no I/O. See docs/exnode.md.

// No I/O and no unsafe code: both are promises of this crate.
#![forbid(unsafe_code)]

pub mod model;
pub mod signature;
pub mod xml;

pub use model::*;
pub use signature::{Signature, SignatureError, Verified};
pub use xml::{from_xml, parse_and_validate, to_xml, ReadError, XmlError, MAX_DOCUMENT};
