//! The exNode model: plain data, validation and the views a client or the
//! metadata manager needs (replica extents, stored bytes, capabilities to
//! release). No I/O.

use std::collections::{HashMap, HashSet};
use std::fmt;

use thiserror::Error;
use uuid::Uuid;

/// Most mappings one exNode may hold (a 1 TiB file in 1 MiB blocks with
/// three replicas is ~3.1 M; larger files use larger blocks).
pub const MAX_MAPPINGS: usize = 4_000_000;
/// Deepest nesting of LoRS end-to-end functions.
pub const MAX_FUNCTION_DEPTH: usize = 8;
/// Most shares in one erasure-coding group (K + M).
pub const MAX_EC_SHARES: usize = 255;

/// A file's exNode.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Exnode {
    /// The file's UUID, to which the depots bind its allocations. `None`
    /// for exNodes written by LoRS 0.82 (they have none).
    pub file: Option<Uuid>,
    /// The file version this exNode describes (1, 2, ...); 0 when unknown
    /// (LoRS exNodes).
    pub version: u64,
    /// Logical size of the file in bytes.
    pub size: u64,
    /// Original file name, informative only (LoRS `filename`).
    pub filename: Option<String>,
    /// Logical block size the file was split into; `None` when unknown.
    pub block_size: Option<u64>,
    /// Whole-file encryption applied on the client; `None`: stored in clear
    /// (or encrypted by LoRS per-mapping functions, see [`Mapping::functions`]).
    pub encryption: Option<Encryption>,
    /// Erasure-coding groups that [`Mapping::share`] refers to.
    pub ec_groups: Vec<EcGroup>,
    pub mappings: Vec<Mapping>,
    /// Top-level metadata not modelled above, kept in order so that it
    /// survives a round trip (LoRS `lorsversion`, ...). The format marker
    /// `Version` and the names of the fields above are the XML codec's own
    /// ([`crate::xml::TOP_LEVEL_NAMES`]) and never appear here.
    pub metadata: Vec<Metadata>,
}

/// Client-side encryption of the whole file. The data key itself is never in
/// the exNode: `key_id` names the wrapped keys the metadata manager keeps.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Encryption {
    pub cipher: Cipher,
    /// Identifies the data key of this file version among the wrapped keys
    /// (never the key or anything derived from it that would reveal it).
    pub key_id: String,
    pub iv: IvDerivation,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cipher {
    /// AES-128 in counter mode (`aes-128-ctr`).
    Aes128Ctr,
}

impl Cipher {
    pub fn name(self) -> &'static str {
        match self {
            Cipher::Aes128Ctr => "aes-128-ctr",
        }
    }
    pub fn from_name(name: &str) -> Option<Cipher> {
        match name {
            "aes-128-ctr" => Some(Cipher::Aes128Ctr),
            _ => None,
        }
    }
}

/// How each block's IV (initial counter block) is derived.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IvDerivation {
    /// `uuid-block`: the initial counter block of logical block `i` is the
    /// first 8 bytes of the file UUID, then `i` as a big-endian u32, then
    /// a big-endian u32 counter starting at 0 that only the low 32 bits
    /// carry (AES-128-CTR with a 32-bit big-endian counter, `Ctr32BE`).
    /// Counter blocks never repeat across blocks of a version (each block at
    /// most 64 GiB, at most 2^32 blocks), and the data key is fresh per file
    /// version, so no keystream is ever reused.
    UuidBlock,
}

impl IvDerivation {
    pub fn name(self) -> &'static str {
        match self {
            IvDerivation::UuidBlock => "uuid-block",
        }
    }
    pub fn from_name(name: &str) -> Option<IvDerivation> {
        match name {
            "uuid-block" => Some(IvDerivation::UuidBlock),
            _ => None,
        }
    }
}

/// An erasure-coding group: the logical range `[offset, offset + length)`
/// split into `k` data shares of `shard_size` bytes (the last padded with
/// zeros) plus `m` parity shares (Reed-Solomon); any `k` of the `k + m`
/// shares rebuild the range.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EcGroup {
    pub id: u32,
    pub k: u16,
    pub m: u16,
    pub logical_offset: u64,
    pub logical_length: u64,
    pub shard_size: u64,
}

/// One share of an erasure-coding group held by a mapping.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Share {
    /// [`EcGroup::id`].
    pub group: u32,
    /// 0..k are data shares, k..k+m parity.
    pub index: u16,
}

/// Security level a mapping's depot is reached at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Security {
    Legacy,
    Crypto,
    Full,
}

impl Security {
    pub fn name(self) -> &'static str {
        match self {
            Security::Legacy => "legacy",
            Security::Crypto => "crypto",
            Security::Full => "full",
        }
    }
    pub fn from_name(name: &str) -> Option<Security> {
        match name {
            "legacy" => Some(Security::Legacy),
            "crypto" => Some(Security::Crypto),
            "full" => Some(Security::Full),
            _ => None,
        }
    }
}

/// A checksum of the bytes a depot stores for one mapping (after
/// encryption, so it can be checked before decrypting).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Checksum {
    /// BLAKE3 of the stored bytes alone (exNodes written before
    /// `blake3-placed`): says nothing of where in the file they belong.
    Blake3([u8; 32]),
    /// SHA-256 of the stored bytes alone.
    Sha256([u8; 32]),
    /// BLAKE3 of the mapping's place in the file (logical offset and
    /// length, erasure-coding share) and its stored bytes, so a mapping
    /// moved to another range or share in the exNode no longer matches
    /// ([`Mapping::place`]; the exact input is in docs/exnode.md).
    Blake3Placed([u8; 32]),
}

impl Checksum {
    pub fn algorithm(&self) -> &'static str {
        match self {
            Checksum::Blake3(_) => "blake3",
            Checksum::Sha256(_) => "sha256",
            Checksum::Blake3Placed(_) => "blake3-placed",
        }
    }
    pub fn bytes(&self) -> &[u8; 32] {
        match self {
            Checksum::Blake3(b) | Checksum::Sha256(b) | Checksum::Blake3Placed(b) => b,
        }
    }
    /// Whether the checksum covers the mapping's place in the file too.
    pub fn is_placed(&self) -> bool {
        match self {
            Checksum::Blake3Placed(_) => true,
            Checksum::Blake3(_) | Checksum::Sha256(_) => false,
        }
    }
}

/// Where a mapping's stored bytes belong in the file: what a
/// [`Checksum::Blake3Placed`] covers besides the bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Place {
    pub logical_offset: u64,
    pub logical_length: u64,
    pub share: Option<Share>,
}

impl Place {
    /// Domain separation prefix of the placed checksum's input.
    pub const DOMAIN: &'static [u8] = b"lors exnode mapping checksum v1\0";

    /// The bytes hashed before the stored bytes: [`Place::DOMAIN`], the
    /// logical offset and length (u64 big-endian), 1 and the share's group
    /// (u32) and index (u16) big-endian for a share or 0 for a plain
    /// range, then the stored length (u64 big-endian).
    pub fn prefix(&self, stored_len: u64) -> Vec<u8> {
        let mut p = Vec::with_capacity(Self::DOMAIN.len() + 31);
        p.extend_from_slice(Self::DOMAIN);
        p.extend_from_slice(&self.logical_offset.to_be_bytes());
        p.extend_from_slice(&self.logical_length.to_be_bytes());
        match self.share {
            Some(s) => {
                p.push(1);
                p.extend_from_slice(&s.group.to_be_bytes());
                p.extend_from_slice(&s.index.to_be_bytes());
            }
            None => p.push(0),
        }
        p.extend_from_slice(&stored_len.to_be_bytes());
        p
    }
}

/// A LoRS end-to-end function (`checksum`, `des_encrypt`, `aes_encrypt`,
/// `xor_encrypt`, `zlib_compress`, ...) with its arguments; `inner` holds
/// the functions nested inside it (applied before it on upload).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Function {
    pub name: String,
    pub arguments: Vec<Metadata>,
    pub inner: Vec<Function>,
}

impl Function {
    /// The argument called `name`, if any.
    pub fn argument(&self, name: &str) -> Option<&Metadata> {
        self.arguments.iter().find(|a| a.name == name)
    }
}

/// A typed name/value pair (`<exnode:metadata name=".." type="..">`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Metadata {
    pub name: String,
    pub value: Value,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    String(String),
    Integer(i64),
    /// Kept as written (`0.828000`), so that round trips are exact.
    Double(String),
}

/// Which byte range of the file an allocation holds, and how to reach it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Mapping {
    /// Where the range starts in the file (LoRS `exnode_offset`). For an
    /// erasure-coding share: the group's offset.
    pub logical_offset: u64,
    /// Length of the range (LoRS `logical_length`). For a share: the
    /// group's length.
    pub logical_length: u64,
    /// Where the range's stored bytes start in the allocation.
    pub alloc_offset: u64,
    /// How many bytes the depot stores for this mapping (with LoRS
    /// function headers, or the share size).
    pub alloc_length: u64,
    /// LoRS `e2e_blocksize` (0: none).
    pub e2e_blocksize: u64,
    /// Capabilities (`ibp://host:port/...`); a mapping may lack write or
    /// manage (shared read-only exNodes).
    pub read: Option<String>,
    pub write: Option<String>,
    pub manage: Option<String>,
    /// Address the client contacts for this allocation (`host:port`); for
    /// secure depots their TLS port. Derived from the read capability when
    /// the document does not say.
    pub depot: String,
    pub security: Option<Security>,
    /// When the allocation expires (Unix seconds), if known.
    pub expires: Option<i64>,
    pub checksum: Option<Checksum>,
    pub share: Option<Share>,
    /// LoRS end-to-end functions, outermost first.
    pub functions: Vec<Function>,
    /// Mapping metadata not modelled above, kept for round trips (never
    /// the codec's own names, [`crate::xml::MAPPING_NAMES`]).
    pub metadata: Vec<Metadata>,
}

impl Mapping {
    pub fn logical_end(&self) -> u64 {
        self.logical_offset.saturating_add(self.logical_length)
    }

    /// Where the mapping's bytes belong (what a placed checksum binds).
    pub fn place(&self) -> Place {
        Place {
            logical_offset: self.logical_offset,
            logical_length: self.logical_length,
            share: self.share,
        }
    }
}

/// A logical byte range and the mappings that hold it (replicas, or the
/// shares of one erasure-coding group).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Extent<'a> {
    pub offset: u64,
    pub length: u64,
    /// The group, when the range is erasure coded.
    pub group: Option<&'a EcGroup>,
    pub mappings: Vec<&'a Mapping>,
}

/// Why an exNode is not acceptable.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum InvalidExnode {
    #[error("mapping {index} ends at byte {end}, beyond the file size {size}")]
    BeyondSize { index: usize, end: u64, size: u64 },
    #[error("mapping {index} has length 0")]
    Empty { index: usize },
    #[error(
        "mappings {a} and {b} overlap inconsistently: [{a_start}, {a_end}) and [{b_start}, {b_end}) \
         (replicas must cover identical ranges)"
    )]
    Overlap {
        a: usize,
        b: usize,
        a_start: u64,
        a_end: u64,
        b_start: u64,
        b_end: u64,
    },
    #[error("bytes [{start}, {end}) of the file are held by no mapping")]
    Gap { start: u64, end: u64 },
    #[error("mapping {index} refers to erasure-coding group {group}, which the exNode lacks")]
    UnknownGroup { index: usize, group: u32 },
    #[error("mapping {index} holds share {share} of group {group}, which has only {total}")]
    BadShare {
        index: usize,
        group: u32,
        share: u16,
        total: u16,
    },
    #[error("erasure-coding group {group}: {reason}")]
    BadGroup { group: u32, reason: String },
    #[error("mapping {index} has no read capability")]
    NoReadCapability { index: usize },
    #[error("{count} mappings; at most {MAX_MAPPINGS} are accepted")]
    TooManyMappings { count: usize },
    #[error("the exNode is encrypted but has no file UUID to derive IVs from")]
    EncryptedWithoutUuid,
}

impl Exnode {
    /// Checks that the mappings describe the file consistently: within its
    /// size, not empty, ranges that intersect are identical (replicas or the
    /// shares of one group), share references valid, every mapping readable
    /// and every byte of `[0, size)` held by some mapping.
    pub fn validate(&self) -> Result<(), InvalidExnode> {
        if self.mappings.len() > MAX_MAPPINGS {
            return Err(InvalidExnode::TooManyMappings {
                count: self.mappings.len(),
            });
        }
        if self.encryption.is_some() && self.file.is_none() {
            return Err(InvalidExnode::EncryptedWithoutUuid);
        }
        let mut groups: HashMap<u32, &EcGroup> = HashMap::with_capacity(self.ec_groups.len());
        for g in &self.ec_groups {
            let total = usize::from(g.k) + usize::from(g.m);
            let bad = |reason: &str| InvalidExnode::BadGroup {
                group: g.id,
                reason: reason.into(),
            };
            if g.k == 0 {
                return Err(bad("k must be at least 1"));
            }
            if total > MAX_EC_SHARES {
                return Err(bad("more than 255 shares"));
            }
            if g.shard_size.saturating_mul(u64::from(g.k)) < g.logical_length {
                return Err(bad("k shares of shard_size bytes cannot hold the range"));
            }
            match g.logical_offset.checked_add(g.logical_length) {
                Some(end) if end <= self.size => {}
                _ => return Err(bad("range beyond the file size")),
            }
            if groups.insert(g.id, g).is_some() {
                return Err(bad("id used twice"));
            }
        }
        // Distinct share indices held, per group.
        let mut held: HashMap<u32, HashSet<u16>> = HashMap::new();
        for (index, m) in self.mappings.iter().enumerate() {
            if m.logical_length == 0 {
                return Err(InvalidExnode::Empty { index });
            }
            let end = m.logical_offset.checked_add(m.logical_length);
            if end.is_none_or(|end| end > self.size) {
                let end = end.unwrap_or(u64::MAX);
                return Err(InvalidExnode::BeyondSize {
                    index,
                    end,
                    size: self.size,
                });
            }
            if m.read.is_none() {
                return Err(InvalidExnode::NoReadCapability { index });
            }
            if let Some(s) = m.share {
                let Some(g) = groups.get(&s.group).copied() else {
                    return Err(InvalidExnode::UnknownGroup {
                        index,
                        group: s.group,
                    });
                };
                let total = g.k + g.m;
                if s.index >= total {
                    return Err(InvalidExnode::BadShare {
                        index,
                        group: g.id,
                        share: s.index,
                        total,
                    });
                }
                if (m.logical_offset, m.logical_length) != (g.logical_offset, g.logical_length) {
                    return Err(InvalidExnode::BadGroup {
                        group: g.id,
                        reason: format!("mapping {index} does not cover the group's range"),
                    });
                }
                held.entry(g.id).or_default().insert(s.index);
            }
        }
        for g in &self.ec_groups {
            let n = held.get(&g.id).map_or(0, HashSet::len);
            if n < usize::from(g.k) {
                return Err(InvalidExnode::BadGroup {
                    group: g.id,
                    reason: format!(
                        "{n} distinct shares are held; {} are needed to rebuild it",
                        g.k
                    ),
                });
            }
        }
        // Sorted by range, intersecting ranges must be equal.
        let mut order: Vec<usize> = (0..self.mappings.len()).collect();
        order.sort_by_key(|&i| {
            let m = &self.mappings[i];
            (m.logical_offset, m.logical_length)
        });
        let mut covered = 0u64;
        let mut prev: Option<usize> = None;
        // First mapping of the current run of identical ranges (extent).
        let mut first = 0usize;
        for &i in &order {
            let m = &self.mappings[i];
            if m.logical_offset > covered {
                return Err(InvalidExnode::Gap {
                    start: covered,
                    end: m.logical_offset,
                });
            }
            if let Some(p) = prev {
                let pm = &self.mappings[p];
                let same =
                    (pm.logical_offset, pm.logical_length) == (m.logical_offset, m.logical_length);
                if !same && m.logical_offset < pm.logical_end() {
                    return Err(InvalidExnode::Overlap {
                        a: p.min(i),
                        b: p.max(i),
                        a_start: pm.logical_offset,
                        a_end: pm.logical_end(),
                        b_start: m.logical_offset,
                        b_end: m.logical_end(),
                    });
                }
                if !same {
                    first = i;
                }
            } else {
                first = i;
            }
            // An extent is held by replicas or by the shares of one group,
            // never a mix: a reader could not tell what each mapping holds.
            let (fg, mg) = (
                self.mappings[first].share.map(|s| s.group),
                m.share.map(|s| s.group),
            );
            if fg != mg {
                return Err(InvalidExnode::BadGroup {
                    group: fg.or(mg).unwrap_or_default(),
                    reason: format!(
                        "mappings {} and {} hold the same range, but not both as shares of one group",
                        first.min(i),
                        first.max(i)
                    ),
                });
            }
            covered = covered.max(m.logical_end());
            prev = Some(i);
        }
        if covered < self.size {
            return Err(InvalidExnode::Gap {
                start: covered,
                end: self.size,
            });
        }
        Ok(())
    }

    /// The file's logical ranges in order, each with the mappings holding it.
    /// Meaningful for a validated exNode.
    pub fn extents(&self) -> Vec<Extent<'_>> {
        let groups: HashMap<u32, &EcGroup> = self.ec_groups.iter().map(|g| (g.id, g)).collect();
        let group_of = |m: &Mapping| m.share.and_then(|s| groups.get(&s.group).copied());
        let mut order: Vec<&Mapping> = self.mappings.iter().collect();
        order.sort_by_key(|m| (m.logical_offset, m.logical_length));
        let mut out: Vec<Extent<'_>> = Vec::new();
        for m in order {
            match out.last_mut() {
                Some(e) if e.offset == m.logical_offset && e.length == m.logical_length => {
                    e.group = e.group.or_else(|| group_of(m));
                    e.mappings.push(m)
                }
                _ => out.push(Extent {
                    offset: m.logical_offset,
                    length: m.logical_length,
                    group: group_of(m),
                    mappings: vec![m],
                }),
            }
        }
        out
    }

    /// Bytes held on depots over all mappings (replicas and shares included).
    pub fn stored_bytes(&self) -> u64 {
        self.mappings
            .iter()
            .fold(0u64, |acc, m| acc.saturating_add(m.alloc_length))
    }

    /// The manage capabilities of every mapping (what must be released on
    /// the depots when the version is deleted), without duplicates.
    pub fn manage_capabilities(&self) -> Vec<&str> {
        let mut seen = std::collections::HashSet::new();
        self.mappings
            .iter()
            .filter_map(|m| m.manage.as_deref())
            .filter(|c| seen.insert(*c))
            .collect()
    }

    /// Whether a LoRS end-to-end function of some mapping carries its key in
    /// the clear (a `KEY` argument, as LoRS 0.82 writes for `des_encrypt`,
    /// `aes_encrypt` and `xor_encrypt`): whoever reads such an exNode can
    /// decrypt the data, so it must be kept as secret as the data. Our own
    /// encryption ([`Exnode::encryption`]) never puts a key in the exNode.
    pub fn has_cleartext_keys(&self) -> bool {
        fn any_key(functions: &[Function]) -> bool {
            functions
                .iter()
                .any(|f| f.argument("KEY").is_some() || any_key(&f.inner))
        }
        self.mappings.iter().any(|m| any_key(&m.functions))
    }

    /// Top-level metadata called `name`, if kept in [`Exnode::metadata`].
    pub fn metadata(&self, name: &str) -> Option<&Value> {
        self.metadata
            .iter()
            .find(|m| m.name == name)
            .map(|m| &m.value)
    }
}

/// The `host:port` of an `ibp://host:port/...` capability.
pub fn capability_address(cap: &str) -> Option<&str> {
    let rest = cap.strip_prefix("ibp://")?;
    let end = rest.find('/')?;
    let addr = &rest[..end];
    let (host, port) = addr.rsplit_once(':')?;
    if host.is_empty() || port.parse::<u16>().is_err() {
        return None;
    }
    Some(addr)
}

impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::String(s) | Value::Double(s) => f.write_str(s),
            Value::Integer(i) => write!(f, "{i}"),
        }
    }
}
