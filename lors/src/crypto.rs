//! Client-side cryptography of LoRS uploads and downloads: block encryption
//! (AES-128-CTR), checksums of the stored bytes (BLAKE3, SHA-256), and the
//! wrapping of data keys for recipients' X25519 keys. No I/O except the
//! key-file helpers ([`write_private_key`], [`read_private_key`]).
//!
//! The exact constructions are in `docs/lors.md`, "Client-side encryption".

use std::fmt;
use std::path::Path;

use aes::cipher::{KeyIvInit, StreamCipher, StreamCipherSeek};
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use ring::rand::{SecureRandom, SystemRandom};
use ring::{aead, digest, hkdf};
use subtle::ConstantTimeEq;
use uuid::Uuid;
use zeroize::{Zeroize, Zeroizing};

/// AES-128 in counter mode, the counter being the IV's last 32 bits
/// (big-endian).
type Aes128Ctr = ctr::Ctr32BE<aes::Aes128>;

/// The largest block [`apply_keystream`] accepts: 2^32 AES blocks of 16
/// bytes, the whole range of the 32-bit counter.
pub const MAX_BLOCK_LEN: u64 = 1 << 36;

/// HKDF `info` prefix of the key wrap (followed by the context bytes).
const WRAP_INFO: &[u8] = b"ibp-lors key wrap v1";
/// First word of a wrapped key's text.
const WRAP_PREFIX: &str = "x25519-v1";
/// First word of a public key's text.
const PUBLIC_PREFIX: &str = "x25519";
/// PEM label of a private key file.
const PEM_LABEL: &str = "LORS X25519 PRIVATE KEY";
/// Longest wrapped-key text [`unwrap`] reads.
const MAX_WRAPPED_LEN: usize = 4096;

#[derive(Debug, thiserror::Error)]
pub enum CryptoError {
    #[error("block index {0} is out of range (at most 2^32 - 1)")]
    BlockIndex(u64),
    #[error("block of {0} bytes is too large (at most 64 GiB)")]
    BlockTooLarge(usize),
    #[error("malformed {what}: {why}")]
    Malformed { what: &'static str, why: String },
    #[error("unknown wrapped key format {0:?} (expected x25519-v1)")]
    UnknownFormat(String),
    #[error(
        "cannot unwrap the data key: not this recipient's, another file or key id, or altered"
    )]
    Unwrap,
    #[error("the recipient's public key is a low-order point (all-zero shared secret)")]
    WeakPublicKey,
    #[error("the system random number generator failed")]
    Random,
    #[error("{0}")]
    Io(String),
}

impl CryptoError {
    fn malformed(what: &'static str, why: impl fmt::Display) -> Self {
        CryptoError::Malformed {
            what,
            why: why.to_string(),
        }
    }
}

fn random_bytes<const N: usize>() -> Result<Zeroizing<[u8; N]>, CryptoError> {
    let mut out = Zeroizing::new([0u8; N]);
    SystemRandom::new()
        .fill(&mut out[..])
        .map_err(|_| CryptoError::Random)?;
    Ok(out)
}

// ---------------------------------------------------------------- data keys

/// A file's 16-byte AES-128 data key. Zeroized on drop; its `Debug` output
/// does not show the bytes.
#[derive(Clone)]
pub struct DataKey([u8; 16]);

impl DataKey {
    /// A fresh random key (`ring`'s system random generator).
    pub fn generate() -> Result<Self, CryptoError> {
        Ok(DataKey(*random_bytes::<16>()?))
    }
    pub fn from_bytes(bytes: [u8; 16]) -> Self {
        DataKey(bytes)
    }
    pub fn as_bytes(&self) -> &[u8; 16] {
        &self.0
    }
}

impl Drop for DataKey {
    fn drop(&mut self) {
        self.0.zeroize();
    }
}

impl fmt::Debug for DataKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("DataKey(..)")
    }
}

/// Constant-time comparison.
impl PartialEq for DataKey {
    fn eq(&self, other: &Self) -> bool {
        self.0.ct_eq(&other.0).into()
    }
}
impl Eq for DataKey {}

// --------------------------------------------------------- block encryption

/// The IV of block `block_index` of `file`: the UUID's first 8 bytes, the
/// block index (32 bits, big-endian), and a 32-bit big-endian counter
/// starting at 0.
pub fn block_iv(file: &Uuid, block_index: u64) -> Result<[u8; 16], CryptoError> {
    let index = u32::try_from(block_index).map_err(|_| CryptoError::BlockIndex(block_index))?;
    let mut iv = [0u8; 16];
    iv[..8].copy_from_slice(&file.as_bytes()[..8]);
    iv[8..12].copy_from_slice(&index.to_be_bytes());
    Ok(iv)
}

/// Encrypts (or decrypts: the same operation) `data`, block `block_index`
/// of `file`, in place with AES-128-CTR under `key`.
pub fn apply_keystream(
    key: &DataKey,
    file: &Uuid,
    block_index: u64,
    data: &mut [u8],
) -> Result<(), CryptoError> {
    if data.len() as u64 > MAX_BLOCK_LEN {
        return Err(CryptoError::BlockTooLarge(data.len()));
    }
    let iv = block_iv(file, block_index)?;
    ctr_xor(key.as_bytes(), &iv, data).map_err(|_| CryptoError::BlockTooLarge(data.len()))
}

/// [`apply_keystream`] for bytes `offset..offset + data.len()` of the
/// block only (a piece of the block, e.g. one erasure-coding share, on
/// its own): the same bytes as applying it to the whole block.
pub fn apply_keystream_at(
    key: &DataKey,
    file: &Uuid,
    block_index: u64,
    offset: u64,
    data: &mut [u8],
) -> Result<(), CryptoError> {
    let end = offset.saturating_add(data.len() as u64);
    if end > MAX_BLOCK_LEN {
        return Err(CryptoError::BlockTooLarge(end as usize));
    }
    let iv = block_iv(file, block_index)?;
    let mut cipher = Aes128Ctr::new(key.as_bytes().into(), (&iv).into());
    cipher
        .try_seek(offset)
        .and_then(|()| cipher.try_apply_keystream(data))
        .map_err(|_| CryptoError::BlockTooLarge(end as usize))
}

fn ctr_xor(key: &[u8; 16], iv: &[u8; 16], data: &mut [u8]) -> Result<(), ()> {
    let mut cipher = Aes128Ctr::new(key.into(), iv.into());
    cipher.try_apply_keystream(data).map_err(|_| ())
}

// ---------------------------------------------------------------- checksums

/// BLAKE3 of the bytes a depot stores (after encryption), bound to where
/// they belong in the file (`blake3-placed`): what uploads and repairs
/// record.
pub fn checksum_at(place: &exnode::Place, stored: &[u8]) -> exnode::Checksum {
    exnode::Checksum::Blake3Placed(placed(place, stored))
}

/// BLAKE3 of the stored bytes alone (`blake3`, as exNodes written before
/// `blake3-placed` have it): not bound to a place in the file, so new
/// mappings use [`checksum_at`].
pub fn checksum(stored: &[u8]) -> exnode::Checksum {
    exnode::Checksum::Blake3(*blake3::hash(stored).as_bytes())
}

fn placed(place: &exnode::Place, stored: &[u8]) -> [u8; 32] {
    let mut h = blake3::Hasher::new();
    h.update(&place.prefix(stored.len() as u64));
    h.update(stored);
    *h.finalize().as_bytes()
}

/// Whether `stored` are the bytes mapping `m` describes: they match its
/// checksum and, for a `blake3-placed` one, the mapping's place in the file
/// (offset, length, share) too. Compared in constant time. A mapping
/// without a checksum (LoRS exNodes) passes.
pub fn verify_mapping(m: &exnode::Mapping, stored: &[u8]) -> bool {
    match &m.checksum {
        None => true,
        Some(c @ exnode::Checksum::Blake3Placed(_)) => {
            placed(&m.place(), stored).ct_eq(c.bytes()).into()
        }
        Some(c) => verify(stored, c),
    }
}

/// Whether `stored` has checksum `expected`, compared in constant time.
/// For a `blake3-placed` checksum, whose input includes the mapping's
/// place, use [`verify_mapping`]: here it never matches.
pub fn verify(stored: &[u8], expected: &exnode::Checksum) -> bool {
    let computed: [u8; 32] = match expected {
        exnode::Checksum::Blake3(_) => *blake3::hash(stored).as_bytes(),
        exnode::Checksum::Sha256(_) => {
            let d = digest::digest(&digest::SHA256, stored);
            let mut out = [0u8; 32];
            out.copy_from_slice(d.as_ref());
            out
        }
        exnode::Checksum::Blake3Placed(_) => return false,
    };
    computed.ct_eq(expected.bytes()).into()
}

// ------------------------------------------------------------- X25519 keys

/// A recipient's long-term X25519 public key; text form
/// `x25519 <base64 of 32 bytes>`.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct PublicKey(x25519_dalek::PublicKey);

impl PublicKey {
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        PublicKey(x25519_dalek::PublicKey::from(bytes))
    }
    pub fn as_bytes(&self) -> &[u8; 32] {
        self.0.as_bytes()
    }
    /// `x25519 <base64>` (standard alphabet, padded), the form the metadata
    /// manager stores.
    pub fn to_text(&self) -> String {
        format!("{PUBLIC_PREFIX} {}", B64.encode(self.as_bytes()))
    }
    /// Parses [`PublicKey::to_text`]'s form (surrounding ASCII whitespace
    /// ignored).
    pub fn parse(text: &str) -> Result<Self, CryptoError> {
        let what = "X25519 public key";
        let text = text.trim_ascii();
        let b64 = text
            .strip_prefix(PUBLIC_PREFIX)
            .and_then(|rest| rest.strip_prefix(' '))
            .ok_or_else(|| CryptoError::malformed(what, "not \"x25519 <base64>\""))?;
        let bytes = decode_exact::<32>(what, b64)?;
        Ok(PublicKey::from_bytes(bytes))
    }
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKey({})", self.to_text())
    }
}

/// A recipient's long-term X25519 key pair. The secret is zeroized on drop
/// and never shown by `Debug`.
pub struct KeyPair {
    secret: x25519_dalek::StaticSecret,
    public: PublicKey,
}

impl KeyPair {
    pub fn generate() -> Result<Self, CryptoError> {
        Ok(Self::from_secret_bytes(*random_bytes::<32>()?))
    }
    pub fn from_secret_bytes(bytes: [u8; 32]) -> Self {
        let secret = x25519_dalek::StaticSecret::from(bytes);
        let public = PublicKey(x25519_dalek::PublicKey::from(&secret));
        KeyPair { secret, public }
    }
    pub fn public(&self) -> &PublicKey {
        &self.public
    }
    /// A PEM block `LORS X25519 PRIVATE KEY` holding the 32 secret bytes.
    pub fn to_pem(&self) -> Zeroizing<String> {
        let block = pem::Pem::new(PEM_LABEL, self.secret.to_bytes().to_vec());
        let text = Zeroizing::new(pem::encode(&block));
        // `Pem` does not zeroize its contents.
        block.into_contents().zeroize();
        text
    }
    /// Reads [`KeyPair::to_pem`]'s form.
    pub fn from_pem(text: &str) -> Result<Self, CryptoError> {
        let what = "X25519 private key";
        let block = pem::parse(text).map_err(|e| CryptoError::malformed(what, e))?;
        if block.tag() != PEM_LABEL {
            return Err(CryptoError::malformed(
                what,
                format!("PEM label {:?}, expected {PEM_LABEL:?}", block.tag()),
            ));
        }
        let bytes: Zeroizing<[u8; 32]> = Zeroizing::new(
            block
                .contents()
                .try_into()
                .map_err(|_| CryptoError::malformed(what, "not 32 bytes"))?,
        );
        Ok(Self::from_secret_bytes(*bytes))
    }
}

impl fmt::Debug for KeyPair {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyPair")
            .field("public", &self.public)
            .finish_non_exhaustive()
    }
}

/// Writes `key` as PEM to `path`, mode 0600.
pub fn write_private_key(path: &Path, key: &KeyPair) -> Result<(), CryptoError> {
    ibp_auth::keys::write_secret(path, key.to_pem().as_bytes())
        .map_err(|e| CryptoError::Io(e.to_string()))
}

/// Reads a private key written by [`write_private_key`]; refuses a file
/// that its group or others may read or write.
pub fn read_private_key(path: &Path) -> Result<KeyPair, CryptoError> {
    use std::os::unix::fs::PermissionsExt;
    let io = |e: std::io::Error| CryptoError::Io(format!("read {}: {e}", path.display()));
    let mode = std::fs::metadata(path).map_err(io)?.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(CryptoError::Io(format!(
            "private key {} has mode {mode:03o}; it must be readable by its owner only (chmod 600)",
            path.display()
        )));
    }
    let text = Zeroizing::new(std::fs::read_to_string(path).map_err(io)?);
    KeyPair::from_pem(&text)
}

// -------------------------------------------------------------- key wrapping

/// What a wrapped key is bound to: unwrapping under another file or key
/// id fails. Not to a version: a data key belongs to the upload that made
/// it, named by its (random) key id, and the versions that maintenance
/// makes (refresh, trim, augment, repair) keep the same key and key id, so
/// the metadata manager carries the wrapped keys over to them.
#[derive(Debug, Clone, Copy)]
pub struct WrapContext<'a> {
    pub file: Uuid,
    pub key_id: &'a str,
}

impl WrapContext<'_> {
    /// File UUID bytes || key id (UTF-8).
    fn bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(16 + self.key_id.len());
        out.extend_from_slice(self.file.as_bytes());
        out.extend_from_slice(self.key_id.as_bytes());
        out
    }
}

/// The single-use AES-256-GCM key of one wrap: HKDF-SHA256 of the shared
/// secret, salt `e_pub || recipient_pub`, info `WRAP_INFO || context`.
fn wrap_key(
    shared: &x25519_dalek::SharedSecret,
    ephemeral: &PublicKey,
    recipient: &PublicKey,
    context: &[u8],
) -> Result<aead::LessSafeKey, CryptoError> {
    if !shared.was_contributory() {
        return Err(CryptoError::WeakPublicKey);
    }
    let mut salt = [0u8; 64];
    salt[..32].copy_from_slice(ephemeral.as_bytes());
    salt[32..].copy_from_slice(recipient.as_bytes());
    let info = [WRAP_INFO, context];
    let prk = hkdf::Salt::new(hkdf::HKDF_SHA256, &salt).extract(shared.as_bytes());
    let okm = prk
        .expand(&info, &aead::AES_256_GCM)
        .map_err(|_| CryptoError::Unwrap)?;
    Ok(aead::LessSafeKey::new(aead::UnboundKey::from(okm)))
}

/// Wraps `key` for `recipient`, bound to `context`:
/// `x25519-v1 <base64 ephemeral public key> <base64 ciphertext+tag>`.
/// Fails only on a low-order recipient key or a failing random generator.
pub fn wrap(
    key: &DataKey,
    recipient: &PublicKey,
    context: &WrapContext<'_>,
) -> Result<String, CryptoError> {
    let ephemeral = x25519_dalek::StaticSecret::from(*random_bytes::<32>()?);
    let e_pub = PublicKey(x25519_dalek::PublicKey::from(&ephemeral));
    let shared = ephemeral.diffie_hellman(&recipient.0);
    let ctx = context.bytes();
    let sealing = wrap_key(&shared, &e_pub, recipient, &ctx)?;
    let mut in_out = Zeroizing::new(key.as_bytes().to_vec());
    sealing
        .seal_in_place_append_tag(
            aead::Nonce::assume_unique_for_key([0u8; 12]),
            aead::Aad::from(&ctx[..]),
            &mut *in_out,
        )
        .map_err(|_| CryptoError::Unwrap)?;
    Ok(format!(
        "{WRAP_PREFIX} {} {}",
        B64.encode(e_pub.as_bytes()),
        B64.encode(&*in_out)
    ))
}

/// Unwraps a data key wrapped by [`wrap`] for `recipient` under `context`.
pub fn unwrap(
    text: &str,
    recipient: &KeyPair,
    context: &WrapContext<'_>,
) -> Result<DataKey, CryptoError> {
    let what = "wrapped key";
    if text.len() > MAX_WRAPPED_LEN {
        return Err(CryptoError::malformed(what, "too long"));
    }
    let mut words = text.split(' ');
    let prefix = words.next().unwrap_or_default();
    if prefix != WRAP_PREFIX {
        return Err(CryptoError::UnknownFormat(
            prefix.chars().take(32).collect(),
        ));
    }
    let (Some(e_b64), Some(ct_b64), None) = (words.next(), words.next(), words.next()) else {
        return Err(CryptoError::malformed(what, "not three words"));
    };
    let e_pub = PublicKey::from_bytes(decode_exact::<32>(what, e_b64)?);
    let mut in_out = Zeroizing::new(decode_exact::<32>(what, ct_b64)?);
    let shared = recipient.secret.diffie_hellman(&e_pub.0);
    let ctx = context.bytes();
    let opening = wrap_key(&shared, &e_pub, &recipient.public, &ctx).map_err(|e| match e {
        CryptoError::WeakPublicKey => CryptoError::Unwrap,
        other => other,
    })?;
    let plain = opening
        .open_in_place(
            aead::Nonce::assume_unique_for_key([0u8; 12]),
            aead::Aad::from(&ctx[..]),
            &mut in_out[..],
        )
        .map_err(|_| CryptoError::Unwrap)?;
    let bytes: [u8; 16] = (&*plain).try_into().map_err(|_| CryptoError::Unwrap)?;
    Ok(DataKey(bytes))
}

/// Decodes standard base64 of exactly `N` bytes.
fn decode_exact<const N: usize>(what: &'static str, b64: &str) -> Result<[u8; N], CryptoError> {
    // Base64 of N bytes is at most 4 * ceil(N / 3) characters: check
    // before decoding.
    if b64.len() > N.div_ceil(3) * 4 {
        return Err(CryptoError::malformed(what, "wrong length"));
    }
    let bytes = Zeroizing::new(
        B64.decode(b64)
            .map_err(|e| CryptoError::malformed(what, format!("bad base64: {e}")))?,
    );
    (&bytes[..])
        .try_into()
        .map_err(|_| CryptoError::malformed(what, format!("{} bytes, expected {N}", bytes.len())))
}
