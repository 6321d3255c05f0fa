//! Signed exNodes: the metadata manager's Ed25519 signature over one
//! version of a file's exNode, bound to the file UUID, the version number
//! and the time of signing, carried inside the exNode document itself so
//! that a saved `.xnd` file carries its proof (docs/identity.md, "Signed
//! exNodes"; docs/protocol.md).
//!
//! The signature is one top-level metadata entry of the exNode,
//! `<exnode:metadata name="exnode_signature" type="string">`, whose text is
//!
//! ```text
//! v1 key=<16 hex> file=<uuid> version=<n> time=<unix seconds> parts=<base64url> sig=<base64url>
//! ```
//!
//! (the LoRS tools ignore metadata they do not know). What is signed is
//! never the document's bytes but the exNode's canonical form: what the
//! crate's own writer ([`crate::to_xml`]) writes for the parsed model
//! without the signature entry, which any reader reproduces exactly from
//! the document. It is hashed in parts, so that a verifier can name *what*
//! was altered, not only that something was: the file's description
//! (everything but the mappings: the document the writer writes for the
//! model without its mappings), then for each mapping in order its range
//! (offsets, lengths, end-to-end block size, share), its capabilities and
//! the rest (depot, level, expiry, checksum, metadata, functions), each
//! part as the lines the writer writes for it. Each part's digest is
//! BLAKE3 over a kind byte (0 description, 1 range, 2 capabilities, 3
//! rest) and the part; `content` is BLAKE3 over every part's digest in
//! that order; `parts` (the manifest, signed and carried in the entry) is
//! the first 4 bytes of each part's digest. The Ed25519 message is
//!
//! ```text
//! "ibp-grid exnode signature v1\0"  key id (8)  file UUID (16)
//! version (u64 BE)  time (i64 BE)  content (32)  length of parts (u64 BE)  parts
//! ```
//!
//! Security rests on the full digests (`content`); the manifest only names
//! the parts that differ.
//!
//! The key id is the first 8 bytes of SHA-256 of the signer's Ed25519
//! public key, as for file tickets (`ibp_auth::tokens`). No I/O, no clock:
//! the time of signing is an argument.

use std::fmt;

use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine;
use ring::digest::{digest, SHA256};
use ring::signature::{Ed25519KeyPair, KeyPair, UnparsedPublicKey, ED25519};
use thiserror::Error;
use uuid::Uuid;

use crate::model::{Exnode, Metadata, Value};

/// The name of the top-level metadata entry holding the signature.
pub const SIGNATURE_NAME: &str = "exnode_signature";
/// Domain separation of the signed message.
const DOMAIN: &[u8] = b"ibp-grid exnode signature v1\0";
/// The format tag at the start of the entry's text.
const FORMAT: &str = "v1";
/// Bytes of each part digest in the manifest.
const PART: usize = 4;
/// Part digests per mapping: range, capabilities, the rest.
const PER_MAPPING: usize = 3 * PART;

/// A signature as carried in an exNode (see the module docs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Signature {
    /// First 8 bytes of SHA-256 of the signer's public key.
    pub key_id: [u8; 8],
    /// The file the signer vouches for.
    pub file: Uuid,
    /// The version the signer vouches for.
    pub version: u64,
    /// When it was signed (Unix seconds).
    pub signed_at: i64,
    /// The manifest of part digests.
    pub parts: Vec<u8>,
    /// The Ed25519 signature.
    pub value: [u8; 64],
}

/// What a valid signature says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Verified {
    pub key_id: [u8; 8],
    pub file: Uuid,
    pub version: u64,
    pub signed_at: i64,
}

impl Verified {
    /// The key id as 16 hex digits.
    pub fn key_hex(&self) -> String {
        hex(&self.key_id)
    }
}

/// A part of an exNode that the manifest names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Part {
    /// Everything but the mappings: file UUID, version, size, block size,
    /// encryption, erasure-coding groups, file name, other metadata.
    Description,
    /// A mapping's range: logical offset and length, allocation offset and
    /// length, end-to-end block size, erasure-coding share.
    Range(usize),
    /// A mapping's read, write and manage capabilities.
    Capabilities(usize),
    /// A mapping's depot, security level, expiry, checksum, functions and
    /// metadata.
    Placement(usize),
}

impl fmt::Display for Part {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Part::Description => f.write_str(
                "the file's description (UUID, version, size, block size, encryption, groups, metadata)",
            ),
            Part::Range(i) => write!(
                f,
                "mapping {i}: its range (offset, length, allocation offset and length, share)"
            ),
            Part::Capabilities(i) => write!(f, "mapping {i}: its capabilities (read, write, manage)"),
            Part::Placement(i) => write!(
                f,
                "mapping {i}: its depot, security level, expiry, checksum or functions"
            ),
        }
    }
}

/// Why a signature is refused (or cannot be made).
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum SignatureError {
    #[error("the exNode signature is unreadable: {0}")]
    Malformed(String),
    #[error("the exNode carries {0} signatures; one is allowed")]
    Several(usize),
    #[error("the exNode is signed by key {key_id}, which is not a trusted metadata-manager key")]
    UntrustedKey { key_id: String },
    #[error(
        "file UUID changed: the exNode is for file {found} but its signature is for file {signed}"
    )]
    FileChanged { signed: Uuid, found: String },
    #[error(
        "version changed: the exNode is version {found} but its signature is for version {signed}"
    )]
    VersionChanged { signed: u64, found: u64 },
    #[error(
        "mappings added or removed: the exNode has {found} mappings, its signature covers {signed}"
    )]
    MappingCount { signed: usize, found: usize },
    #[error("altered after signing: {}", list(.0))]
    Altered(Vec<Part>),
    #[error("the exNode signature does not verify (forged, or its signature block was altered)")]
    BadSignature,
    #[error("cannot sign an exNode without a file UUID")]
    NoFile,
}

fn list(parts: &[Part]) -> String {
    const SHOWN: usize = 5;
    let mut s: Vec<String> = parts.iter().take(SHOWN).map(Part::to_string).collect();
    if parts.len() > SHOWN {
        s.push(format!("and {} more parts", parts.len() - SHOWN));
    }
    s.join("; ")
}

/// The key id of an Ed25519 public key (as for file tickets).
pub fn key_id(public: &[u8]) -> [u8; 8] {
    let d = digest(&SHA256, public);
    let mut id = [0u8; 8];
    id.copy_from_slice(&d.as_ref()[..8]);
    id
}

fn hex(b: &[u8]) -> String {
    use std::fmt::Write as _;
    let mut s = String::with_capacity(b.len() * 2);
    for x in b {
        let _ = write!(s, "{x:02x}");
    }
    s
}

fn unhex<const N: usize>(s: &str) -> Option<[u8; N]> {
    if s.len() != 2 * N || !s.is_ascii() {
        return None;
    }
    let mut out = [0u8; N];
    for (i, o) in out.iter_mut().enumerate() {
        *o = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(out)
}

impl Signature {
    /// The entry's text (see the module docs).
    pub fn to_text(&self) -> String {
        format!(
            "{FORMAT} key={} file={} version={} time={} parts={} sig={}",
            hex(&self.key_id),
            self.file.hyphenated(),
            self.version,
            self.signed_at,
            B64.encode(&self.parts),
            B64.encode(self.value)
        )
    }

    /// Parses [`Signature::to_text`]'s form: the format tag, then the six
    /// keys in any order, each once.
    pub fn parse(text: &str) -> Result<Signature, SignatureError> {
        let bad = |m: String| SignatureError::Malformed(m);
        let mut words = text.split_ascii_whitespace();
        match words.next() {
            Some(FORMAT) => {}
            Some(other) => return Err(bad(format!("format {other:?}; only {FORMAT} is read"))),
            None => return Err(bad("empty".into())),
        }
        let (mut key, mut file, mut version, mut time, mut parts, mut sig) =
            (None, None, None, None, None, None);
        for word in words {
            let (k, v) = word
                .split_once('=')
                .ok_or_else(|| bad(format!("{word:?} is not key=value")))?;
            let slot = match k {
                "key" => &mut key,
                "file" => &mut file,
                "version" => &mut version,
                "time" => &mut time,
                "parts" => &mut parts,
                "sig" => &mut sig,
                _ => return Err(bad(format!("unknown key {k:?}"))),
            };
            if slot.replace(v).is_some() {
                return Err(bad(format!("{k} given twice")));
            }
        }
        fn need<'a>(v: Option<&'a str>, k: &str) -> Result<&'a str, SignatureError> {
            v.ok_or_else(|| SignatureError::Malformed(format!("{k}= missing")))
        }
        let key_id =
            unhex::<8>(need(key, "key")?).ok_or_else(|| bad("key is not 16 hex digits".into()))?;
        let file =
            Uuid::parse_str(need(file, "file")?).map_err(|_| bad("file is not a UUID".into()))?;
        let version = need(version, "version")?
            .parse()
            .map_err(|_| bad("version is not a number".into()))?;
        let signed_at = need(time, "time")?
            .parse()
            .map_err(|_| bad("time is not a number".into()))?;
        let parts = B64
            .decode(need(parts, "parts")?)
            .map_err(|e| bad(format!("parts: {e}")))?;
        if parts.len() < PART || (parts.len() - PART) % PER_MAPPING != 0 {
            return Err(bad(format!("parts of {} bytes", parts.len())));
        }
        let value: [u8; 64] = B64
            .decode(need(sig, "sig")?)
            .map_err(|e| bad(format!("sig: {e}")))?
            .try_into()
            .map_err(|_| bad("sig is not 64 bytes".into()))?;
        Ok(Signature {
            key_id,
            file,
            version,
            signed_at,
            parts,
            value,
        })
    }

    /// How many mappings the manifest covers.
    pub fn mappings(&self) -> usize {
        self.parts.len().saturating_sub(PART) / PER_MAPPING
    }
}

/// Removes every signature entry from `x`'s top-level metadata and returns
/// the signature, if there was one. More than one, or one that does not
/// parse, is an error (the entries are removed all the same).
pub fn split(x: &mut Exnode) -> Result<Option<Signature>, SignatureError> {
    let mut found: Vec<Metadata> = Vec::new();
    x.metadata.retain(|m| {
        if m.name == SIGNATURE_NAME {
            found.push(m.clone());
            false
        } else {
            true
        }
    });
    match found.len() {
        0 => Ok(None),
        1 => match &found[0].value {
            Value::String(s) => Signature::parse(s).map(Some),
            _ => Err(SignatureError::Malformed("not of type string".into())),
        },
        n => Err(SignatureError::Several(n)),
    }
}

/// What is signed of an unsigned exNode: the digest of its parts, and
/// the manifest (see the module docs).
struct Digests {
    content: [u8; 32],
    manifest: Vec<u8>,
}

fn digests(x: &Exnode) -> Digests {
    let mut content = blake3::Hasher::new();
    let mut manifest = Vec::with_capacity(PART + PER_MAPPING * x.mappings.len());
    let mut part = |kind: u8, text: &str| {
        let mut h = blake3::Hasher::new();
        h.update(&[kind]);
        h.update(text.as_bytes());
        let d = h.finalize();
        content.update(d.as_bytes());
        manifest.extend_from_slice(&d.as_bytes()[..PART]);
    };
    part(0, &crate::to_xml(&description(x)));
    let mut buf = String::with_capacity(1024);
    for m in &x.mappings {
        crate::xml::mapping_parts(&mut buf, m, &mut part);
    }
    Digests {
        content: *content.finalize().as_bytes(),
        manifest,
    }
}

/// A copy of everything but the mappings (cheap for large exNodes).
fn description(x: &Exnode) -> Exnode {
    Exnode {
        file: x.file,
        version: x.version,
        size: x.size,
        filename: x.filename.clone(),
        block_size: x.block_size,
        encryption: x.encryption.clone(),
        ec_groups: x.ec_groups.clone(),
        mappings: Vec::new(),
        metadata: x.metadata.clone(),
    }
}

/// The signed message (see the module docs).
fn message(
    key_id: &[u8; 8],
    file: &Uuid,
    version: u64,
    signed_at: i64,
    content: &[u8; 32],
    parts: &[u8],
) -> Vec<u8> {
    let mut m = Vec::with_capacity(DOMAIN.len() + 80 + parts.len());
    m.extend_from_slice(DOMAIN);
    m.extend_from_slice(key_id);
    m.extend_from_slice(file.as_bytes());
    m.extend_from_slice(&version.to_be_bytes());
    m.extend_from_slice(&signed_at.to_be_bytes());
    m.extend_from_slice(content);
    m.extend_from_slice(&(parts.len() as u64).to_be_bytes());
    m.extend_from_slice(parts);
    m
}

/// Signs `x` for its file and version at time `now` and returns the signed
/// document: the canonical form ([`crate::to_xml`]) with the signature
/// entry added (any
/// signature entry `x` already held is dropped first). Equal to
/// [`crate::to_xml`] of `x` with the entry appended to its metadata.
pub fn sign(mut x: Exnode, key: &Ed25519KeyPair, now: i64) -> Result<String, SignatureError> {
    x.metadata.retain(|m| m.name != SIGNATURE_NAME);
    let file = x.file.ok_or(SignatureError::NoFile)?;
    let canonical = crate::to_xml(&x);
    let Digests {
        content,
        manifest: parts,
    } = digests(&x);
    let key_id = key_id(key.public_key().as_ref());
    let msg = message(&key_id, &file, x.version, now, &content, &parts);
    let mut value = [0u8; 64];
    value.copy_from_slice(key.sign(&msg).as_ref());
    let sig = Signature {
        key_id,
        file,
        version: x.version,
        signed_at: now,
        parts,
        value,
    };
    // The writer puts top-level metadata after the codec's own entries and
    // before the first mapping: the entry goes last among them.
    let line = crate::xml::metadata_xml(&Metadata {
        name: SIGNATURE_NAME.into(),
        value: Value::String(sig.to_text()),
    });
    let at = canonical
        .find("  <exnode:mapping>\n")
        .or_else(|| canonical.rfind("</exnode>\n"))
        .unwrap_or(canonical.len());
    let mut doc = String::with_capacity(canonical.len() + line.len());
    doc.push_str(&canonical[..at]);
    doc.push_str(&line);
    doc.push_str(&canonical[at..]);
    Ok(doc)
}

/// Verifies `sig` (taken from `x` by [`split`]) against the trusted
/// metadata-manager keys: the signer must be one of `trusted`, the file
/// UUID, version and every part must be as signed, and the Ed25519
/// signature must hold. The first failure is named.
pub fn verify(
    x: &Exnode,
    sig: &Signature,
    trusted: &[[u8; 32]],
) -> Result<Verified, SignatureError> {
    let key = trusted
        .iter()
        .find(|k| key_id(k.as_slice()) == sig.key_id)
        .ok_or_else(|| SignatureError::UntrustedKey {
            key_id: hex(&sig.key_id),
        })?;
    if x.file != Some(sig.file) {
        return Err(SignatureError::FileChanged {
            signed: sig.file,
            found: x.file.map_or("(none)".into(), |u| u.to_string()),
        });
    }
    if x.version != sig.version {
        return Err(SignatureError::VersionChanged {
            signed: sig.version,
            found: x.version,
        });
    }
    if x.mappings.len() != sig.mappings() {
        return Err(SignatureError::MappingCount {
            signed: sig.mappings(),
            found: x.mappings.len(),
        });
    }
    let Digests {
        content,
        manifest: parts,
    } = digests(x);
    let mut altered = Vec::new();
    for (i, (a, b)) in parts.chunks(PART).zip(sig.parts.chunks(PART)).enumerate() {
        if a != b {
            altered.push(match i {
                0 => Part::Description,
                i => {
                    let m = (i - 1) / 3;
                    match (i - 1) % 3 {
                        0 => Part::Range(m),
                        1 => Part::Capabilities(m),
                        _ => Part::Placement(m),
                    }
                }
            });
        }
    }
    if !altered.is_empty() {
        return Err(SignatureError::Altered(altered));
    }
    let msg = message(
        &sig.key_id,
        &sig.file,
        sig.version,
        sig.signed_at,
        &content,
        &sig.parts,
    );
    UnparsedPublicKey::new(&ED25519, key)
        .verify(&msg, &sig.value)
        .map_err(|_| SignatureError::BadSignature)?;
    Ok(Verified {
        key_id: sig.key_id,
        file: sig.file,
        version: sig.version,
        signed_at: sig.signed_at,
    })
}

#[cfg(test)]
mod tests;
