//! The end-to-end functions of the original LoRS 0.82 tools, so that
//! `lors download --xnd` can read the data of a LoRS exNode.
//!
//! A LoRS mapping may carry a chain of *functions* (`checksum`,
//! `des_encrypt`, `aes_encrypt`, `xor_encrypt`, `zlib_compress`): on upload
//! `lors_upload` applied them to the mapping's logical bytes, innermost
//! first, and stored the result; the exNode records each function with its
//! arguments, outermost first (`Mapping::functions`, each function's `inner`
//! applied before it). [`decode`] undoes them, [`encode`] applies them (used
//! by the tests to build round trips, usable by uploads).
//!
//! # Where the formats come from
//!
//! Read (never copied) from the LoRS sources in the public repository
//! `LogisticalComputingAndInternetworking/LoRS`: `libe2e/e2e.c` and
//! `libe2e/libend2end.h` (the byte formats), `cmdtools/lors_libe2e.c` (keys
//! and the `blocksize`/`KEY` arguments), and the conditioning and
//! unconditioning loops of `liblors` (`_lorsDoCondition`,
//! `_lorsUnconditionData`: each function's input block size is the previous
//! function's output block size, the first one's is `e2e_blocksize`; on
//! download every function is undone with the `blocksize` argument recorded
//! for it). The size arithmetic below reproduces every number of the five
//! real exNodes in `libs/exnode/tests/fixtures/lors-exnodes/` (see
//! `lors/tests/lors_e2e.rs`).
//!
//! Every function cuts its input into blocks of its *input block size* `B`
//! (the last block shorter) and records its *output block size* as its
//! `blocksize` argument:
//!
//! - `checksum`: each block is preceded by a 33-byte header: the MD5 of the
//!   block as 32 lowercase hex digits and `:`. Output block size `B + 33`.
//! - `des_encrypt`: each block is padded to a multiple of 8 bytes (the pad
//!   bytes are ignored on reading), encrypted with DES-CBC, IV zero, restarted
//!   for every block, and preceded by the 2-byte header `<pad>:` (`pad` one
//!   decimal digit 0–7). The DES key is `DES_string_to_key(KEY)` (the
//!   libdes/OpenSSL function; `KEY` is 7 printable characters). Output block
//!   size `B + 2 + pad(B)`.
//! - `aes_encrypt`: `B` is first rounded up to a multiple of 16; each block
//!   becomes a 16-byte IV followed by AES-128-CBC with ciphertext stealing
//!   (the output is exactly 16 bytes longer than the block; a block of at
//!   most 16 bytes is stored as the first bytes of the IV and one cipher
//!   block). `KEY` is the AES key as 32 hex digits. Output block size
//!   `roundup16(B) + 16`.
//! - `xor_encrypt`: same length; because of a bug kept "for compatibility"
//!   by LoRS, within each block the bytes at even offsets are XORed with the
//!   *last* character of `KEY` and the bytes at odd offsets with the
//!   terminating NUL, i.e. left alone. Output block size `B`.
//! - `zlib_compress`: the whole input at once (block size ignored): 12
//!   decimal digits (zero-padded) of the input length, `:`, then a zlib
//!   stream (`compress()`). Output block size: the output length.
//!
//! # What is inferred
//!
//! - AES: LoRS links Brian Gladman's AES code (not in the public copy);
//!   that it is standard AES-128 (FIPS-197) with the 16-byte key is assumed
//!   (`BLOCK_SIZE` 16 is confirmed by the fixtures' block sizes).
//! - DES: LoRS links libdes; `des_string_to_key` and `des_cbc_encrypt` are
//!   taken to be the standard ones (the same as OpenSSL's `DES_*`).
//! - No known-answer test from data written by LoRS itself exists (the
//!   fixtures' depots are gone); the tests check the sizes against the
//!   fixtures and the ciphers against independent implementations.

use std::io::{Read, Write};

use aes::cipher::{generic_array::GenericArray, BlockDecrypt, BlockEncrypt, KeyInit};
use exnode::{Function, Metadata, Value};

/// Why a LoRS function chain cannot be applied or undone.
#[derive(Debug, thiserror::Error)]
pub enum E2eError {
    /// A function we do not know (its name), or a chain shape LoRS never
    /// writes.
    #[error("unsupported LoRS end-to-end function: {0}")]
    Unsupported(String),
    /// The stored bytes do not decode: checksum mismatch, bad header,
    /// wrong length.
    #[error("corrupt LoRS data: {0}")]
    Corrupt(String),
    /// A missing or malformed function argument (`KEY`, `blocksize`), or
    /// impossible sizes.
    #[error("bad LoRS function argument: {0}")]
    BadArgument(String),
}

/// Bytes of a `checksum` block header (32 hex digits and `:`).
pub const CHECKSUM_HEADER: u64 = 33;
/// Bytes of a `des_encrypt` block header (pad digit and `:`).
pub const DES_HEADER: u64 = 2;
/// Bytes `aes_encrypt` adds to each block (the IV).
pub const AES_OVERHEAD: u64 = 16;
/// Bytes of the `zlib_compress` header (12 digits and `:`).
pub const ZLIB_HEADER: u64 = 13;

/// The names LoRS writes.
pub const CHECKSUM: &str = "checksum";
pub const DES_ENCRYPT: &str = "des_encrypt";
pub const AES_ENCRYPT: &str = "aes_encrypt";
pub const XOR_ENCRYPT: &str = "xor_encrypt";
pub const ZLIB_COMPRESS: &str = "zlib_compress";

/// One function to apply with [`encode`]; a spec list is outermost first,
/// like `Mapping::functions` (the last entry is applied first).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FunctionSpec {
    /// Per-block MD5 header.
    Checksum,
    /// DES-CBC per block; `key` is the LoRS key string (LoRS makes 7
    /// printable characters, see [`random_lors_key`]), stored in the clear
    /// as `KEY`.
    DesEncrypt { key: String },
    /// AES-128-CBC with ciphertext stealing per block; `key` is stored in
    /// the clear as 32 hex digits. `iv`: `None` gives each block a fresh
    /// random IV (as LoRS does); `Some` uses this IV for every block, for
    /// known-answer tests only.
    AesEncrypt { key: [u8; 16], iv: Option<[u8; 16]> },
    /// LoRS's XOR "encryption" (it only touches every other byte, with the
    /// key's last character); `key` is stored as `KEY`.
    XorEncrypt { key: String },
    /// zlib over the whole input.
    ZlibCompress,
}

/// Sizes of one function of a chain, as [`layout`] computes them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StageSize {
    /// The function's name.
    pub name: String,
    /// Length of its input (the logical length for the innermost one).
    pub input_length: Option<u64>,
    /// Length of its output (the stored length for the outermost one).
    /// `None` when it depends on the data (`zlib_compress`, and everything
    /// outside it).
    pub output_length: Option<u64>,
    /// The `blocksize` argument LoRS records for it. `None` when it depends
    /// on the data.
    pub blocksize: Option<u64>,
}

/// A parsed function of the chain.
#[derive(Debug, Clone)]
enum Kind {
    Checksum,
    Des([u8; 8]),
    Aes([u8; 16]),
    Xor(u8),
    Zlib,
}

impl Kind {
    fn name(&self) -> &'static str {
        match self {
            Kind::Checksum => CHECKSUM,
            Kind::Des(_) => DES_ENCRYPT,
            Kind::Aes(_) => AES_ENCRYPT,
            Kind::Xor(_) => XOR_ENCRYPT,
            Kind::Zlib => ZLIB_COMPRESS,
        }
    }
}

#[derive(Debug, Clone)]
struct Stage {
    kind: Kind,
    /// The recorded `blocksize` argument.
    blocksize: Option<u64>,
}

/// Flattens the function tree into a chain, outermost first, checking
/// names and arguments.
fn chain(functions: &[Function]) -> Result<Vec<Stage>, E2eError> {
    let mut stages = Vec::new();
    let mut level = functions;
    loop {
        match level {
            [] => break,
            [f] => {
                stages.push(parse_function(f)?);
                level = &f.inner;
            }
            _ => {
                return Err(E2eError::Unsupported(format!(
                    "{} functions side by side (LoRS nests one function in another)",
                    level.len()
                )))
            }
        }
    }
    // A compression inside a compression cannot be bounded on reading,
    // and LoRS never writes it.
    let zlibs = stages
        .iter()
        .filter(|s| matches!(s.kind, Kind::Zlib))
        .count();
    if zlibs > 1 {
        return Err(E2eError::Unsupported(
            "zlib_compress nested in zlib_compress".into(),
        ));
    }
    Ok(stages)
}

fn parse_function(f: &Function) -> Result<Stage, E2eError> {
    let kind = match f.name.as_str() {
        CHECKSUM => Kind::Checksum,
        DES_ENCRYPT => Kind::Des(des_string_to_key(string_key(f)?.as_bytes())),
        AES_ENCRYPT => Kind::Aes(parse_hex_key(string_key(f)?)?),
        XOR_ENCRYPT => {
            let key = string_key(f)?;
            // LoRS XORs with the key's last character (its C string's).
            Kind::Xor(*key.as_bytes().last().unwrap_or(&0))
        }
        ZLIB_COMPRESS => Kind::Zlib,
        other => return Err(E2eError::Unsupported(other.to_string())),
    };
    let blocksize = match f.argument("blocksize") {
        None => None,
        Some(Metadata {
            value: Value::Integer(n),
            ..
        }) if *n > 0 => Some(*n as u64),
        Some(m) => {
            return Err(E2eError::BadArgument(format!(
                "{}: blocksize {:?} is not a positive integer",
                f.name, m.value
            )))
        }
    };
    Ok(Stage { kind, blocksize })
}

fn string_key(f: &Function) -> Result<&str, E2eError> {
    match f.argument("KEY") {
        Some(Metadata {
            value: Value::String(s),
            ..
        }) if !s.is_empty() => Ok(s),
        Some(_) => Err(E2eError::BadArgument(format!(
            "{}: KEY is not a non-empty string",
            f.name
        ))),
        None => Err(E2eError::BadArgument(format!(
            "{}: no KEY argument",
            f.name
        ))),
    }
}

fn parse_hex_key(s: &str) -> Result<[u8; 16], E2eError> {
    let bad = || {
        E2eError::BadArgument(format!(
            "aes_encrypt: KEY must be 32 hex digits (AES-128), got {} characters",
            s.chars().count()
        ))
    };
    let bytes = s.as_bytes();
    if bytes.len() != 32 {
        return Err(bad());
    }
    let mut key = [0u8; 16];
    for (k, pair) in key.iter_mut().zip(bytes.chunks_exact(2)) {
        let hi = (pair[0] as char).to_digit(16).ok_or_else(bad)?;
        let lo = (pair[1] as char).to_digit(16).ok_or_else(bad)?;
        *k = (hi * 16 + lo) as u8;
    }
    Ok(key)
}

/// Whether every function of the mapping (recursively) is one we can undo,
/// with usable arguments.
pub fn supported(functions: &[Function]) -> Result<(), E2eError> {
    chain(functions).map(|_| ())
}

fn overflow() -> E2eError {
    E2eError::BadArgument("sizes overflow".into())
}

/// `(output length, output block size)` of a fixed-size function over
/// `len` bytes in blocks of `bs`; `None` for `zlib_compress`.
fn fixed_sizes(kind: &Kind, len: u64, bs: u64) -> Result<Option<(u64, u64)>, E2eError> {
    if len == 0 || bs == 0 {
        return Err(E2eError::BadArgument(format!(
            "{}: length {len} and block size {bs} must be positive",
            kind.name()
        )));
    }
    let full = (len - 1) / bs; // blocks before the last one
    let last = len - full * bs; // 1..=bs
    let sizes = match kind {
        Kind::Checksum => {
            let out = len
                .checked_add(
                    (full + 1)
                        .checked_mul(CHECKSUM_HEADER)
                        .ok_or_else(overflow)?,
                )
                .ok_or_else(overflow)?;
            (out, bs.checked_add(CHECKSUM_HEADER).ok_or_else(overflow)?)
        }
        Kind::Des(_) => {
            let out_bs = bs.checked_add(DES_HEADER + pad8(bs)).ok_or_else(overflow)?;
            let out = full
                .checked_mul(out_bs)
                .and_then(|v| v.checked_add(last + DES_HEADER + pad8(last)))
                .ok_or_else(overflow)?;
            (out, out_bs)
        }
        Kind::Aes(_) => {
            let a = round16(bs).ok_or_else(overflow)?;
            let full = (len - 1) / a;
            let last = len - full * a;
            let out_bs = a.checked_add(AES_OVERHEAD).ok_or_else(overflow)?;
            let out = full
                .checked_mul(out_bs)
                .and_then(|v| v.checked_add(last + AES_OVERHEAD))
                .ok_or_else(overflow)?;
            (out, out_bs)
        }
        Kind::Xor(_) => (len, bs),
        Kind::Zlib => return Ok(None),
    };
    Ok(Some(sizes))
}

fn pad8(n: u64) -> u64 {
    (8 - n % 8) % 8
}

fn round16(n: u64) -> Option<u64> {
    n.checked_add((16 - n % 16) % 16)
}

fn layout_of(
    stages: &[Stage],
    e2e_blocksize: u64,
    logical_length: u64,
) -> Result<Vec<StageSize>, E2eError> {
    let mut sizes = Vec::with_capacity(stages.len());
    let mut len = Some(logical_length);
    let mut bs = Some(e2e_blocksize);
    for stage in stages.iter().rev() {
        let input_length = len;
        let (out, out_bs) = match (len, bs) {
            (Some(l), Some(b)) => match fixed_sizes(&stage.kind, l, b)? {
                Some((o, ob)) => (Some(o), Some(ob)),
                None => (None, None),
            },
            _ => (None, None),
        };
        sizes.push(StageSize {
            name: stage.kind.name().to_string(),
            input_length,
            output_length: out,
            blocksize: out_bs,
        });
        len = out;
        bs = out_bs;
    }
    sizes.reverse();
    Ok(sizes)
}

/// The sizes LoRS produces for a chain of functions (outermost first, like
/// `functions`) over `logical_length` bytes with the mapping's
/// `e2e_blocksize` as the innermost function's block size. Ignores the
/// recorded `blocksize` arguments: compare them with the result.
pub fn layout(
    functions: &[Function],
    e2e_blocksize: u64,
    logical_length: u64,
) -> Result<Vec<StageSize>, E2eError> {
    layout_of(&chain(functions)?, e2e_blocksize, logical_length)
}

/// The number of bytes LoRS stores (`alloc_length`) for `logical_length`
/// bytes under these functions, or `None` when it depends on the data
/// (compression).
pub fn stored_length(
    functions: &[Function],
    e2e_blocksize: u64,
    logical_length: u64,
) -> Result<Option<u64>, E2eError> {
    let sizes = layout(functions, e2e_blocksize, logical_length)?;
    Ok(match sizes.first() {
        None => Some(logical_length),
        Some(outer) => outer.output_length,
    })
}

/// Logical bytes of a mapping from the bytes the depot stores for it
/// (`alloc_length` bytes from `alloc_offset`).
pub fn decode(
    functions: &[Function],
    e2e_blocksize: u64,
    logical_length: u64,
    stored: &[u8],
) -> Result<Vec<u8>, E2eError> {
    let stages = chain(functions)?;
    if stages.is_empty() {
        if stored.len() as u64 != logical_length {
            return Err(E2eError::Corrupt(format!(
                "{} bytes stored for a mapping of {logical_length} bytes without functions",
                stored.len()
            )));
        }
        return Ok(stored.to_vec());
    }
    // Without compression the whole layout is known: check the recorded
    // block sizes and the stored length before decoding. (With compression
    // LoRS records `e2e_blocksize` = logical length, not the block size the
    // functions used, so only the recorded block sizes can be trusted.)
    let has_zlib = stages.iter().any(|s| matches!(s.kind, Kind::Zlib));
    let sizes = if e2e_blocksize > 0 && logical_length > 0 {
        Some(layout_of(&stages, e2e_blocksize, logical_length)?)
    } else {
        None
    };
    if let (false, Some(sizes)) = (has_zlib, &sizes) {
        for (stage, size) in stages.iter().zip(sizes) {
            if let (Some(rec), Some(exp)) = (stage.blocksize, size.blocksize) {
                if rec != exp {
                    return Err(E2eError::BadArgument(format!(
                        "{}: blocksize {rec} recorded, {exp} expected for e2e_blocksize {e2e_blocksize}",
                        size.name
                    )));
                }
            }
        }
        if let Some(expected) = sizes.first().and_then(|s| s.output_length) {
            if stored.len() as u64 != expected {
                return Err(E2eError::Corrupt(format!(
                    "{} bytes stored, {expected} expected for {logical_length} logical bytes",
                    stored.len()
                )));
            }
        }
    }

    let mut data: Vec<u8> = stored.to_vec();
    for (i, stage) in stages.iter().enumerate() {
        let bs = match stage
            .blocksize
            .or_else(|| sizes.as_ref().and_then(|s| s[i].blocksize))
        {
            Some(b) => b,
            None if matches!(stage.kind, Kind::Zlib) => 0,
            None => {
                return Err(E2eError::BadArgument(format!(
                    "{}: no blocksize argument",
                    stage.kind.name()
                )))
            }
        };
        data = match &stage.kind {
            Kind::Checksum => checksum_decode(&data, bs)?,
            Kind::Des(key) => des_decode(&data, bs, key)?,
            Kind::Aes(key) => aes_decode(&data, bs, key)?,
            Kind::Xor(k) => xor_apply(data, bs, *k)?,
            Kind::Zlib => {
                // The input length the header must announce: exactly the
                // logical length when nothing is inside; otherwise bounded.
                let limit = if i + 1 == stages.len() {
                    Limit::Exact(logical_length)
                } else {
                    Limit::AtMost(logical_length.saturating_mul(64).saturating_add(1 << 20))
                };
                zlib_decode(&data, limit)?
            }
        };
    }
    if data.len() as u64 != logical_length {
        return Err(E2eError::Corrupt(format!(
            "decoded {} bytes, the mapping has {logical_length}",
            data.len()
        )));
    }
    Ok(data)
}

/// Stored bytes from logical bytes (the inverse of [`decode`]), with the
/// function tree to record in the mapping (outermost first). The innermost
/// function's block size is `e2e_blocksize`. With [`FunctionSpec::ZlibCompress`]
/// LoRS records the mapping's `e2e_blocksize` as its logical length (the
/// caller's business); [`decode`] then relies on the `blocksize` arguments.
pub fn encode(
    spec: &[FunctionSpec],
    e2e_blocksize: u64,
    logical: &[u8],
) -> Result<(Vec<u8>, Vec<Function>), E2eError> {
    if spec.is_empty() {
        return Ok((logical.to_vec(), Vec::new()));
    }
    if logical.is_empty() || e2e_blocksize == 0 {
        return Err(E2eError::BadArgument(
            "functions need a non-empty mapping and a positive e2e_blocksize".into(),
        ));
    }
    if spec
        .iter()
        .filter(|s| matches!(s, FunctionSpec::ZlibCompress))
        .count()
        > 1
    {
        return Err(E2eError::Unsupported(
            "zlib_compress nested in zlib_compress".into(),
        ));
    }
    let mut data = logical.to_vec();
    let mut bs = e2e_blocksize;
    let mut tree: Vec<Function> = Vec::new();
    for s in spec.iter().rev() {
        let len = data.len() as u64;
        let (name, key_arg, out) = match s {
            FunctionSpec::Checksum => (CHECKSUM, None, checksum_encode(&data, bs)?),
            FunctionSpec::DesEncrypt { key } => {
                if key.is_empty() {
                    return Err(E2eError::BadArgument("des_encrypt: empty key".into()));
                }
                let k = des_string_to_key(key.as_bytes());
                (DES_ENCRYPT, Some(key.clone()), des_encode(&data, bs, &k)?)
            }
            FunctionSpec::AesEncrypt { key, iv } => {
                let hex: String = key.iter().map(|b| format!("{b:02x}")).collect();
                (AES_ENCRYPT, Some(hex), aes_encode(&data, bs, key, *iv)?)
            }
            FunctionSpec::XorEncrypt { key } => {
                let Some(&k) = key.as_bytes().last() else {
                    return Err(E2eError::BadArgument("xor_encrypt: empty key".into()));
                };
                (XOR_ENCRYPT, Some(key.clone()), xor_apply(data, bs, k)?)
            }
            FunctionSpec::ZlibCompress => (ZLIB_COMPRESS, None, zlib_encode(&data)?),
        };
        // The block size LoRS records: the function's output block size.
        let kind = match s {
            FunctionSpec::Checksum => Kind::Checksum,
            FunctionSpec::DesEncrypt { .. } => Kind::Des([0; 8]),
            FunctionSpec::AesEncrypt { .. } => Kind::Aes([0; 16]),
            FunctionSpec::XorEncrypt { .. } => Kind::Xor(0),
            FunctionSpec::ZlibCompress => Kind::Zlib,
        };
        let out_bs = match fixed_sizes(&kind, len, bs)? {
            Some((expected, b)) => {
                debug_assert_eq!(expected, out.len() as u64);
                b
            }
            None => out.len() as u64,
        };
        let mut arguments = Vec::new();
        if let Some(k) = key_arg {
            arguments.push(Metadata {
                name: "KEY".into(),
                value: Value::String(k),
            });
        }
        arguments.push(Metadata {
            name: "blocksize".into(),
            value: Value::Integer(i64::try_from(out_bs).map_err(|_| overflow())?),
        });
        tree = vec![Function {
            name: name.into(),
            arguments,
            inner: tree,
        }];
        data = out;
        bs = out_bs;
    }
    Ok((data, tree))
}

/// A key like the ones LoRS makes for `des_encrypt` and `xor_encrypt`: 7
/// characters from `!` to `~`, without `<` and `>`.
pub fn random_lors_key() -> String {
    use rand::Rng;
    let mut rng = rand::thread_rng();
    let mut key = String::with_capacity(7);
    while key.len() < 7 {
        let c = rng.gen_range(33u8..=126);
        if c != b'<' && c != b'>' {
            key.push(c as char);
        }
    }
    key
}

// ---------------------------------------------------------------- blocks

/// Splits `data` in blocks of `bs` bytes (the last one shorter).
fn blocks<'a>(data: &'a [u8], bs: u64, what: &str) -> Result<std::slice::Chunks<'a, u8>, E2eError> {
    if bs == 0 {
        return Err(E2eError::BadArgument(format!("{what}: block size 0")));
    }
    if data.is_empty() {
        return Err(E2eError::Corrupt(format!("{what}: no data")));
    }
    let bs = usize::try_from(bs).unwrap_or(usize::MAX);
    Ok(data.chunks(bs))
}

// -------------------------------------------------------------- checksum

fn md5_hex(block: &[u8]) -> [u8; 32] {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let digest = <md5::Md5 as md5::Digest>::digest(block);
    let mut out = [0u8; 32];
    for (i, b) in digest.iter().enumerate() {
        out[2 * i] = HEX[(b >> 4) as usize];
        out[2 * i + 1] = HEX[(b & 15) as usize];
    }
    out
}

fn checksum_encode(data: &[u8], bs: u64) -> Result<Vec<u8>, E2eError> {
    let mut out = Vec::with_capacity(data.len() + data.len() / 64 + 64);
    for block in blocks(data, bs, CHECKSUM)? {
        out.extend_from_slice(&md5_hex(block));
        out.push(b':');
        out.extend_from_slice(block);
    }
    Ok(out)
}

fn checksum_decode(data: &[u8], bs: u64) -> Result<Vec<u8>, E2eError> {
    if bs <= CHECKSUM_HEADER {
        return Err(E2eError::BadArgument(format!(
            "checksum: blocksize {bs} leaves no room for data"
        )));
    }
    let mut out = Vec::with_capacity(data.len());
    for (n, block) in blocks(data, bs, CHECKSUM)?.enumerate() {
        if block.len() < CHECKSUM_HEADER as usize {
            return Err(E2eError::Corrupt(format!(
                "checksum: block {n} is {} bytes, shorter than its header",
                block.len()
            )));
        }
        let (header, body) = block.split_at(CHECKSUM_HEADER as usize);
        if header[..32] != md5_hex(body) || header[32] != b':' {
            return Err(E2eError::Corrupt(format!(
                "checksum mismatch at block {n} ({} bytes)",
                body.len()
            )));
        }
        out.extend_from_slice(body);
    }
    Ok(out)
}

// ------------------------------------------------------------------- DES

fn set_odd_parity(key: &mut [u8; 8]) {
    for b in key.iter_mut() {
        let high = *b & 0xfe;
        *b = if high.count_ones() % 2 == 0 {
            high | 1
        } else {
            high
        };
    }
}

/// libdes/OpenSSL `DES_string_to_key` (the MIT-compatible one): fold the
/// string into a key, then a DES CBC checksum of the string under that key.
pub fn des_string_to_key(s: &[u8]) -> [u8; 8] {
    let mut key = [0u8; 8];
    for (i, &c) in s.iter().enumerate() {
        if i % 16 < 8 {
            key[i % 8] ^= c << 1;
        } else {
            key[7 - i % 8] ^= c.reverse_bits();
        }
    }
    set_odd_parity(&mut key);
    let cipher = des::Des::new(GenericArray::from_slice(&key));
    let mut chain = key;
    for chunk in s.chunks(8) {
        let mut block = [0u8; 8];
        block[..chunk.len()].copy_from_slice(chunk);
        for (b, c) in block.iter_mut().zip(chain) {
            *b ^= c;
        }
        let mut ga = GenericArray::from(block);
        cipher.encrypt_block(&mut ga);
        chain.copy_from_slice(&ga);
    }
    set_odd_parity(&mut chain);
    chain
}

fn des_encode(data: &[u8], bs: u64, key: &[u8; 8]) -> Result<Vec<u8>, E2eError> {
    let cipher = des::Des::new(GenericArray::from_slice(key));
    let mut out = Vec::with_capacity(data.len() + data.len() / 64 + 64);
    for block in blocks(data, bs, DES_ENCRYPT)? {
        let pad = pad8(block.len() as u64) as usize;
        out.push(b'0' + pad as u8);
        out.push(b':');
        let start = out.len();
        out.extend_from_slice(block);
        out.resize(start + block.len() + pad, b'0');
        let mut prev = [0u8; 8];
        for chunk in out[start..].chunks_exact_mut(8) {
            for (b, p) in chunk.iter_mut().zip(prev) {
                *b ^= p;
            }
            let ga = GenericArray::from_mut_slice(chunk);
            cipher.encrypt_block(ga);
            prev.copy_from_slice(chunk);
        }
    }
    Ok(out)
}

fn des_decode(data: &[u8], bs: u64, key: &[u8; 8]) -> Result<Vec<u8>, E2eError> {
    if bs <= DES_HEADER {
        return Err(E2eError::BadArgument(format!(
            "des_encrypt: blocksize {bs} leaves no room for data"
        )));
    }
    let cipher = des::Des::new(GenericArray::from_slice(key));
    let mut out = Vec::with_capacity(data.len());
    for (n, block) in blocks(data, bs, DES_ENCRYPT)?.enumerate() {
        let bad = |why: &str| E2eError::Corrupt(format!("des_encrypt: block {n}: {why}"));
        if block.len() < DES_HEADER as usize {
            return Err(bad("shorter than its header"));
        }
        let (header, body) = block.split_at(DES_HEADER as usize);
        let pad = match (header[0], header[1]) {
            (d @ b'0'..=b'7', b':') => (d - b'0') as usize,
            _ => return Err(bad("bad header")),
        };
        if body.len() % 8 != 0 || body.len() < pad {
            return Err(bad("ciphertext is not whole DES blocks"));
        }
        let start = out.len();
        let mut prev = [0u8; 8];
        for chunk in body.chunks_exact(8) {
            let mut ga = GenericArray::clone_from_slice(chunk);
            cipher.decrypt_block(&mut ga);
            for (b, p) in ga.iter_mut().zip(prev) {
                *b ^= p;
            }
            out.extend_from_slice(&ga);
            prev.copy_from_slice(chunk);
        }
        out.truncate(start + body.len() - pad);
    }
    Ok(out)
}

// ------------------------------------------------------------------- AES

fn xor16(a: &mut [u8], b: &[u8]) {
    for (x, y) in a.iter_mut().zip(b) {
        *x ^= y;
    }
}

/// One LoRS AES block: IV, then CBC with ciphertext stealing.
fn aes_encrypt_block(cipher: &aes::Aes128, iv: &[u8; 16], p: &[u8], out: &mut Vec<u8>) {
    if p.len() <= 16 {
        // The IV's first bytes stand in for it; the block, zero padded,
        // chained with the whole IV.
        let mut x = [0u8; 16];
        x[..p.len()].copy_from_slice(p);
        xor16(&mut x, iv);
        let mut ga = GenericArray::from(x);
        cipher.encrypt_block(&mut ga);
        out.extend_from_slice(&iv[..p.len()]);
        out.extend_from_slice(&ga);
        return;
    }
    out.extend_from_slice(iv);
    let full = p.len() / 16;
    let rem = p.len() % 16;
    let mut prev = *iv;
    for i in 0..full {
        let mut x = [0u8; 16];
        x.copy_from_slice(&p[16 * i..16 * i + 16]);
        xor16(&mut x, &prev);
        let mut ga = GenericArray::from(x);
        cipher.encrypt_block(&mut ga);
        prev.copy_from_slice(&ga);
        if i + 1 == full && rem > 0 {
            // Ciphertext stealing: the last partial block, zero padded,
            // chained with this ciphertext, goes first; then the first
            // `rem` bytes of this ciphertext.
            let mut last = [0u8; 16];
            last[..rem].copy_from_slice(&p[16 * full..]);
            xor16(&mut last, &prev);
            let mut gl = GenericArray::from(last);
            cipher.encrypt_block(&mut gl);
            out.extend_from_slice(&gl);
            out.extend_from_slice(&prev[..rem]);
        } else {
            out.extend_from_slice(&prev);
        }
    }
}

fn aes_decrypt_block(cipher: &aes::Aes128, c: &[u8], out: &mut Vec<u8>) -> Result<(), ()> {
    let n = c.len();
    if n <= 16 {
        return Err(());
    }
    if n <= 32 {
        let m = n - 16;
        let mut x = GenericArray::clone_from_slice(&c[m..]);
        cipher.decrypt_block(&mut x);
        out.extend(c[..m].iter().zip(x.iter()).map(|(a, b)| a ^ b));
        return Ok(());
    }
    let mut prev = [0u8; 16];
    prev.copy_from_slice(&c[..16]);
    let body = &c[16..];
    let full = body.len() / 16;
    let rem = body.len() % 16;
    for i in 0..full {
        let ci = &body[16 * i..16 * i + 16];
        let mut x = GenericArray::clone_from_slice(ci);
        cipher.decrypt_block(&mut x);
        if i + 1 == full && rem > 0 {
            // `ci` is the stolen last block; the tail holds the start of
            // the previous ciphertext, the rest of which is in `x`.
            let tail = &body[16 * full..];
            let mut cprev = [0u8; 16];
            cprev[..rem].copy_from_slice(tail);
            cprev[rem..].copy_from_slice(&x[rem..]);
            let last: Vec<u8> = x[..rem].iter().zip(tail).map(|(a, b)| a ^ b).collect();
            let mut y = GenericArray::from(cprev);
            cipher.decrypt_block(&mut y);
            xor16(&mut y, &prev);
            out.extend_from_slice(&y);
            out.extend_from_slice(&last);
        } else {
            xor16(&mut x, &prev);
            out.extend_from_slice(&x);
            prev.copy_from_slice(ci);
        }
    }
    Ok(())
}

fn aes_encode(
    data: &[u8],
    bs: u64,
    key: &[u8; 16],
    iv: Option<[u8; 16]>,
) -> Result<Vec<u8>, E2eError> {
    let cipher = aes::Aes128::new(GenericArray::from_slice(key));
    let a = round16(bs).ok_or_else(overflow)?;
    let mut out = Vec::with_capacity(data.len() + data.len() / 64 + 64);
    for block in blocks(data, a, AES_ENCRYPT)? {
        let iv = iv.unwrap_or_else(rand::random);
        aes_encrypt_block(&cipher, &iv, block, &mut out);
    }
    Ok(out)
}

fn aes_decode(data: &[u8], bs: u64, key: &[u8; 16]) -> Result<Vec<u8>, E2eError> {
    let a = round16(bs).ok_or_else(overflow)?;
    if a <= AES_OVERHEAD {
        return Err(E2eError::BadArgument(format!(
            "aes_encrypt: blocksize {bs} leaves no room for data"
        )));
    }
    let cipher = aes::Aes128::new(GenericArray::from_slice(key));
    let mut out = Vec::with_capacity(data.len());
    for (n, block) in blocks(data, a, AES_ENCRYPT)?.enumerate() {
        aes_decrypt_block(&cipher, block, &mut out).map_err(|()| {
            E2eError::Corrupt(format!(
                "aes_encrypt: block {n} is {} bytes, not longer than its IV",
                block.len()
            ))
        })?;
    }
    Ok(out)
}

// ------------------------------------------------------------------- XOR

fn xor_apply(mut data: Vec<u8>, bs: u64, key_last: u8) -> Result<Vec<u8>, E2eError> {
    let bs = usize::try_from(bs).unwrap_or(usize::MAX);
    if bs == 0 {
        return Err(E2eError::BadArgument("xor_encrypt: block size 0".into()));
    }
    if data.is_empty() {
        return Err(E2eError::Corrupt("xor_encrypt: no data".into()));
    }
    for block in data.chunks_mut(bs) {
        for b in block.iter_mut().step_by(2) {
            *b ^= key_last;
        }
    }
    Ok(data)
}

// ------------------------------------------------------------------ zlib

enum Limit {
    Exact(u64),
    AtMost(u64),
}

fn zlib_encode(data: &[u8]) -> Result<Vec<u8>, E2eError> {
    let len = data.len();
    if len as u64 >= 1_000_000_000_000 {
        return Err(E2eError::BadArgument(
            "zlib_compress: input too long for its 12-digit header".into(),
        ));
    }
    let mut out = format!("{len:012}:").into_bytes();
    let mut enc = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
    enc.write_all(data)
        .and_then(|()| enc.finish())
        .map(|z| {
            out.extend_from_slice(&z);
            out
        })
        .map_err(|e| E2eError::BadArgument(format!("zlib_compress: {e}")))
}

fn zlib_decode(data: &[u8], limit: Limit) -> Result<Vec<u8>, E2eError> {
    let bad = |why: String| E2eError::Corrupt(format!("zlib_compress: {why}"));
    if data.len() < ZLIB_HEADER as usize {
        return Err(bad("shorter than its header".into()));
    }
    let (header, body) = data.split_at(ZLIB_HEADER as usize);
    if header[12] != b':' || !header[..12].iter().all(u8::is_ascii_digit) {
        return Err(bad("bad header".into()));
    }
    let len = header[..12]
        .iter()
        .fold(0u64, |n, d| n * 10 + u64::from(d - b'0'));
    match limit {
        Limit::Exact(n) if len != n => {
            return Err(bad(format!("header announces {len} bytes, {n} expected")))
        }
        Limit::AtMost(n) if len > n => {
            return Err(bad(format!("header announces {len} bytes, more than {n}")))
        }
        _ => {}
    }
    let mut out = Vec::new();
    let mut inflater = flate2::read::ZlibDecoder::new(body);
    (&mut inflater)
        .take(len.saturating_add(1))
        .read_to_end(&mut out)
        .map_err(|e| bad(e.to_string()))?;
    if inflater.total_in() != body.len() as u64 && out.len() as u64 == len {
        return Err(bad(format!(
            "{} bytes after the zlib stream",
            body.len() as u64 - inflater.total_in().min(body.len() as u64)
        )));
    }
    if out.len() as u64 != len {
        return Err(bad(format!(
            "inflates to {}{} bytes, header announces {len}",
            out.len(),
            if out.len() as u64 > len { "+" } else { "" }
        )));
    }
    Ok(out)
}
