//! Capabilities: `ibp://host:port/RID#key/typekey/READ|WRITE|MANAGE`.

use std::fmt;
use std::str::FromStr;

use crate::ProtoError;

/// Longest key we accept (IBP 1.4 keys are 94 characters: `IBP-` + 90).
pub const MAX_KEY_LEN: usize = 256;
/// Longest host name we accept in a capability.
pub const MAX_HOST_LEN: usize = 255;

/// A resource identifier: one data area of a depot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Rid(pub u32);

impl fmt::Display for Rid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// Which right a capability conveys.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CapKind {
    Read,
    Write,
    Manage,
}

impl CapKind {
    pub fn as_str(self) -> &'static str {
        match self {
            CapKind::Read => "READ",
            CapKind::Write => "WRITE",
            CapKind::Manage => "MANAGE",
        }
    }
}

/// The secret part of a capability as sent in requests: `<rid>#<key> <typekey>`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct CapRef {
    pub rid: Rid,
    /// The allocation key, e.g. `IBP-` followed by 90 alphanumerics.
    pub key: String,
    /// Distinguishes the READ, WRITE and MANAGE capabilities of one allocation.
    pub typekey: u32,
}

impl CapRef {
    /// The `<rid>#<key>` token.
    pub fn rid_key(&self) -> String {
        format!("{}#{}", self.rid, self.key)
    }

    /// Parses the `<rid>#<key>` token; the typekey comes from its own token.
    pub fn parse_rid_key(token: &str, typekey: u32) -> Result<CapRef, ProtoError> {
        let (rid, key) = token
            .split_once('#')
            .ok_or(ProtoError::BadCapability("missing '#' between RID and key"))?;
        let rid = rid
            .parse::<u32>()
            .map_err(|_| ProtoError::BadCapability("RID is not a number"))?;
        check_key(key)?;
        Ok(CapRef {
            rid: Rid(rid),
            key: key.to_owned(),
            typekey,
        })
    }
}

fn check_key(key: &str) -> Result<(), ProtoError> {
    if key.is_empty() || key.len() > MAX_KEY_LEN {
        return Err(ProtoError::BadCapability("key length out of range"));
    }
    if !key
        .bytes()
        .all(|b| b.is_ascii_graphic() && b != b'/' && b != b'#')
    {
        return Err(ProtoError::BadCapability("key has a forbidden character"));
    }
    Ok(())
}

/// A full capability URI.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Capability {
    pub host: String,
    pub port: u16,
    pub cap: CapRef,
    pub kind: CapKind,
}

impl Capability {
    /// `host:port` of the depot holding the allocation.
    pub fn address(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }
}

impl fmt::Display for Capability {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "ibp://{}:{}/{}#{}/{}/{}",
            self.host,
            self.port,
            self.cap.rid,
            self.cap.key,
            self.cap.typekey,
            self.kind.as_str()
        )
    }
}

impl FromStr for Capability {
    type Err = ProtoError;

    fn from_str(s: &str) -> Result<Capability, ProtoError> {
        let rest = s
            .strip_prefix("ibp://")
            .ok_or(ProtoError::BadCapability("missing ibp:// scheme"))?;
        let (authority, path) = rest
            .split_once('/')
            .ok_or(ProtoError::BadCapability("missing path"))?;
        let (host, port) = authority
            .rsplit_once(':')
            .ok_or(ProtoError::BadCapability("missing port"))?;
        if host.is_empty()
            || host.len() > MAX_HOST_LEN
            || !host
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-._[]:".contains(&b))
        {
            return Err(ProtoError::BadCapability("bad host"));
        }
        let port = port
            .parse::<u16>()
            .map_err(|_| ProtoError::BadCapability("bad port"))?;
        let mut parts = path.split('/');
        let (Some(rid_key), Some(typekey), Some(kind), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(ProtoError::BadCapability(
                "path is not RID#key/typekey/KIND",
            ));
        };
        let typekey = typekey
            .parse::<u32>()
            .map_err(|_| ProtoError::BadCapability("typekey is not a number"))?;
        let kind = match kind {
            "READ" => CapKind::Read,
            "WRITE" => CapKind::Write,
            "MANAGE" => CapKind::Manage,
            _ => return Err(ProtoError::BadCapability("unknown capability kind")),
        };
        Ok(Capability {
            host: host.to_owned(),
            port,
            cap: CapRef::parse_rid_key(rid_key, typekey)?,
            kind,
        })
    }
}
