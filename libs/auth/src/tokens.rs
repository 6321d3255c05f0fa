//! Signed, short-lived tokens: depot grants (signed by the L-Bone) and file
//! tickets (signed by the metadata manager).
//!
//! Canonical encoding of the signed body: a type label, then every field as
//! a 4-byte big-endian length and its bytes (integers as 8-byte big-endian).
//! The text form is `base64url(body) "." base64url(key id ‖ Ed25519 signature)`
//! where the key id is the first 8 bytes of SHA-256 of the signer's public key.

use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine;
use ring::signature::{Ed25519KeyPair, UnparsedPublicKey, ED25519};

use crate::trust::TokenSigner;
use crate::{AuthError, TrustStore};

const GRANT_LABEL: &[u8] = b"ibp-depot-grant-v1";
const TICKET_LABEL: &[u8] = b"ibp-file-ticket-v1";
/// Longest token text accepted.
pub const MAX_TOKEN: usize = 4096;

/// Permission from the L-Bone to use one depot, bound to one proxy key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DepotGrant {
    /// `host:port` of the depot.
    pub depot: String,
    pub vo: String,
    pub vo_id: String,
    /// SHA-256 of the holder's proxy SubjectPublicKeyInfo.
    pub holder: [u8; 32],
    pub issued: i64,
    pub not_after: i64,
}

/// Permission from the metadata manager to read one file's blocks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileTicket {
    /// The file's UUID (canonical hyphenated text).
    pub file: String,
    pub vo: String,
    pub vo_id: String,
    pub holder: [u8; 32],
    pub issued: i64,
    pub not_after: i64,
}

struct Body(Vec<u8>);

impl Body {
    fn new(label: &[u8]) -> Body {
        let mut b = Body(Vec::with_capacity(256));
        b.field(label);
        b
    }
    fn field(&mut self, f: &[u8]) {
        self.0.extend_from_slice(&(f.len() as u32).to_be_bytes());
        self.0.extend_from_slice(f);
    }
    fn int(&mut self, v: i64) {
        self.field(&v.to_be_bytes());
    }
}

struct Fields<'a>(&'a [u8]);

impl<'a> Fields<'a> {
    fn next(&mut self) -> Result<&'a [u8], AuthError> {
        let bad = || AuthError::malformed("token", "truncated field");
        let (len, rest) = self.0.split_first_chunk::<4>().ok_or_else(bad)?;
        let len = u32::from_be_bytes(*len) as usize;
        if rest.len() < len {
            return Err(bad());
        }
        let (f, rest) = rest.split_at(len);
        self.0 = rest;
        Ok(f)
    }
    fn text(&mut self) -> Result<String, AuthError> {
        String::from_utf8(self.next()?.to_vec())
            .map_err(|_| AuthError::malformed("token", "field is not UTF-8"))
    }
    fn int(&mut self) -> Result<i64, AuthError> {
        let b = <[u8; 8]>::try_from(self.next()?)
            .map_err(|_| AuthError::malformed("token", "bad integer"))?;
        Ok(i64::from_be_bytes(b))
    }
    fn hash(&mut self) -> Result<[u8; 32], AuthError> {
        <[u8; 32]>::try_from(self.next()?)
            .map_err(|_| AuthError::malformed("token", "bad key hash"))
    }
    fn end(&self) -> Result<(), AuthError> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(AuthError::malformed("token", "trailing bytes"))
        }
    }
}

fn key_id(public: &[u8]) -> [u8; 8] {
    let d = ring::digest::digest(&ring::digest::SHA256, public);
    let mut id = [0u8; 8];
    id.copy_from_slice(&d.as_ref()[..8]);
    id
}

fn sign(body: &[u8], key: &Ed25519KeyPair) -> String {
    use ring::signature::KeyPair;
    let mut sig = key_id(key.public_key().as_ref()).to_vec();
    sig.extend_from_slice(key.sign(body).as_ref());
    format!("{}.{}", B64.encode(body), B64.encode(sig))
}

/// Checks the signature of a token text against the keys trusted for `signer`;
/// returns the signed body.
fn open(token: &str, trust: &TrustStore, signer: TokenSigner) -> Result<Vec<u8>, AuthError> {
    if token.len() > MAX_TOKEN {
        return Err(AuthError::malformed("token", "too long"));
    }
    let (body, sig) = token
        .trim()
        .split_once('.')
        .ok_or_else(|| AuthError::malformed("token", "no '.'"))?;
    let body = B64
        .decode(body)
        .map_err(|e| AuthError::malformed("token", e))?;
    let sig = B64
        .decode(sig)
        .map_err(|e| AuthError::malformed("token", e))?;
    if sig.len() != 8 + 64 {
        return Err(AuthError::malformed("token", "bad signature length"));
    }
    let (id, sig) = sig.split_at(8);
    let key = trust
        .token_keys(signer)
        .iter()
        .find(|k| key_id(k.as_slice()) == id)
        .ok_or(AuthError::UnknownSigner)?;
    UnparsedPublicKey::new(&ED25519, key)
        .verify(&body, sig)
        .map_err(|_| AuthError::BadSignature { what: "token" })?;
    Ok(body)
}

fn check_window(
    what: &'static str,
    issued: i64,
    not_after: i64,
    trust: &TrustStore,
    now: i64,
) -> Result<(), AuthError> {
    if now > not_after + trust.max_skew {
        return Err(AuthError::Expired {
            what,
            at: not_after,
            now,
        });
    }
    if now + trust.max_skew < issued {
        return Err(AuthError::NotYetValid {
            what,
            at: issued,
            now,
        });
    }
    Ok(())
}

/// The fields every token shares; `target` is the depot or the file.
struct Claims {
    target: String,
    vo: String,
    vo_id: String,
    holder: [u8; 32],
    issued: i64,
    not_after: i64,
}

/// What distinguishes the two kinds of token.
struct Kind {
    label: &'static [u8],
    signer: TokenSigner,
    /// For messages: `depot grant` / `file ticket`.
    name: &'static str,
    /// For messages: `depot` / `file`.
    target: &'static str,
}

const GRANT: Kind = Kind {
    label: GRANT_LABEL,
    signer: TokenSigner::LBone,
    name: "depot grant",
    target: "depot",
};
const TICKET: Kind = Kind {
    label: TICKET_LABEL,
    signer: TokenSigner::MetadataManager,
    name: "file ticket",
    target: "file",
};

impl Claims {
    fn sign(&self, kind: &Kind, key: &Ed25519KeyPair) -> String {
        let mut b = Body::new(kind.label);
        b.field(self.target.as_bytes());
        b.field(self.vo.as_bytes());
        b.field(self.vo_id.as_bytes());
        b.field(&self.holder);
        b.int(self.issued);
        b.int(self.not_after);
        sign(&b.0, key)
    }

    /// Verifies signature, lifetime, target and holder.
    fn verify(
        kind: &Kind,
        token: &str,
        trust: &TrustStore,
        target: &str,
        holder: &[u8; 32],
        now: i64,
    ) -> Result<Claims, AuthError> {
        let body = open(token, trust, kind.signer)?;
        let mut f = Fields(&body);
        if f.next()? != kind.label {
            return Err(AuthError::malformed(
                "token",
                format!("not a {}", kind.name),
            ));
        }
        let c = Claims {
            target: f.text()?,
            vo: f.text()?,
            vo_id: f.text()?,
            holder: f.hash()?,
            issued: f.int()?,
            not_after: f.int()?,
        };
        f.end()?;
        check_window(kind.name, c.issued, c.not_after, trust, now)?;
        if !c.target.eq_ignore_ascii_case(target) {
            return Err(AuthError::WrongTarget {
                what: kind.target,
                found: c.target,
                expected: target.to_owned(),
            });
        }
        if !bool::from(subtle_eq(&c.holder, holder)) {
            return Err(AuthError::WrongTokenHolder);
        }
        Ok(c)
    }
}

impl DepotGrant {
    fn claims(&self) -> Claims {
        Claims {
            target: self.depot.clone(),
            vo: self.vo.clone(),
            vo_id: self.vo_id.clone(),
            holder: self.holder,
            issued: self.issued,
            not_after: self.not_after,
        }
    }

    /// Signs with the L-Bone's Ed25519 key.
    pub fn sign(&self, key: &Ed25519KeyPair) -> String {
        self.claims().sign(&GRANT, key)
    }

    /// Verifies signature, lifetime, depot (`host:port`) and holder.
    pub fn verify(
        token: &str,
        trust: &TrustStore,
        depot: &str,
        holder: &[u8; 32],
        now: i64,
    ) -> Result<DepotGrant, AuthError> {
        let c = Claims::verify(&GRANT, token, trust, depot, holder, now)?;
        Ok(DepotGrant {
            depot: c.target,
            vo: c.vo,
            vo_id: c.vo_id,
            holder: c.holder,
            issued: c.issued,
            not_after: c.not_after,
        })
    }
}

impl FileTicket {
    fn claims(&self) -> Claims {
        Claims {
            target: self.file.clone(),
            vo: self.vo.clone(),
            vo_id: self.vo_id.clone(),
            holder: self.holder,
            issued: self.issued,
            not_after: self.not_after,
        }
    }

    /// Signs with the metadata manager's Ed25519 key.
    pub fn sign(&self, key: &Ed25519KeyPair) -> String {
        self.claims().sign(&TICKET, key)
    }

    /// Verifies signature, lifetime, file UUID and holder.
    pub fn verify(
        token: &str,
        trust: &TrustStore,
        file: &str,
        holder: &[u8; 32],
        now: i64,
    ) -> Result<FileTicket, AuthError> {
        let c = Claims::verify(&TICKET, token, trust, file, holder, now)?;
        Ok(FileTicket {
            file: c.target,
            vo: c.vo,
            vo_id: c.vo_id,
            holder: c.holder,
            issued: c.issued,
            not_after: c.not_after,
        })
    }
}

fn subtle_eq(a: &[u8; 32], b: &[u8; 32]) -> subtle::Choice {
    use subtle::ConstantTimeEq;
    a.ct_eq(b)
}
