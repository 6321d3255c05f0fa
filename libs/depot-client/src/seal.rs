//! The crypto level of the secure port: after AUTH over TLS, plain-TCP data
//! connections join the session; every request line on them (the part that
//! carries capabilities, grants and tickets) is sealed with AES-128-CTR and
//! HMAC-SHA256 under keys exported from the TLS session, bulk data travels
//! in clear. The exact encoding is in docs/protocol.md ("Crypto level").
//!
//! Protocol only, no I/O: the client seals ([`SessionKeys::seal`]), the
//! depot's data port opens ([`SessionKeys::open`]); both export the keys
//! from their side of the TLS session ([`EXPORTER_LABEL`]).

use aes::cipher::{KeyIvInit, StreamCipher};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use ring::hmac;

/// TLS exporter label (RFC 8446 section 7.5); the context is the 16-byte
/// session id.
pub const EXPORTER_LABEL: &[u8] = b"EXPORTER-ibp-crypto-v1";
/// Prefix of every MAC input (domain separation).
const MAC_DOMAIN: &[u8] = b"ibp-crypto-v1";
/// Bytes of the sealed nonce: data connection number (u32 BE) then the
/// message counter (u64 BE).
pub const NONCE_LEN: usize = 12;
const TAG_LEN: usize = 32;
/// Bytes exported from the TLS session: the AES key, then the HMAC key.
pub const KEY_MATERIAL_LEN: usize = 48;

type Aes128Ctr = ctr::Ctr32BE<aes::Aes128>;

/// The keys of one crypto session.
pub struct SessionKeys {
    enc: [u8; 16],
    mac: hmac::Key,
}

impl std::fmt::Debug for SessionKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SessionKeys(..)")
    }
}

/// Why a sealed request was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpenError {
    Encoding,
    Mac,
}

impl SessionKeys {
    /// From the [`KEY_MATERIAL_LEN`] bytes exported from the TLS session.
    pub fn from_material(m: &[u8; KEY_MATERIAL_LEN]) -> SessionKeys {
        let mut enc = [0u8; 16];
        enc.copy_from_slice(&m[..16]);
        SessionKeys {
            enc,
            mac: hmac::Key::new(hmac::HMAC_SHA256, &m[16..]),
        }
    }

    fn mac_input(cmd: &str, nonce: &[u8], ct: &[u8]) -> Vec<u8> {
        let mut v = Vec::with_capacity(MAC_DOMAIN.len() + 8 + cmd.len() + nonce.len() + ct.len());
        v.extend_from_slice(MAC_DOMAIN);
        v.push(0);
        v.extend_from_slice(b"3");
        v.push(0);
        v.extend_from_slice(cmd.as_bytes());
        v.push(0);
        v.extend_from_slice(nonce);
        v.extend_from_slice(ct);
        v
    }

    fn keystream(&self, nonce: &[u8; NONCE_LEN], buf: &mut [u8]) {
        let mut iv = [0u8; 16];
        iv[..NONCE_LEN].copy_from_slice(nonce);
        let mut c = Aes128Ctr::new(&self.enc.into(), &iv.into());
        c.apply_keystream(buf);
    }

    /// Seals `plaintext` (a whole v2 request line) for command `cmd` as
    /// message `counter` of data connection `conn`: base64url (no padding)
    /// of nonce ‖ ciphertext ‖ HMAC tag.
    pub fn seal(&self, cmd: &str, conn: u32, counter: u64, plaintext: &[u8]) -> String {
        let mut nonce = [0u8; NONCE_LEN];
        nonce[..4].copy_from_slice(&conn.to_be_bytes());
        nonce[4..].copy_from_slice(&counter.to_be_bytes());
        let mut ct = plaintext.to_vec();
        self.keystream(&nonce, &mut ct);
        let tag = hmac::sign(&self.mac, &Self::mac_input(cmd, &nonce, &ct));
        let mut out = Vec::with_capacity(NONCE_LEN + ct.len() + TAG_LEN);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&ct);
        out.extend_from_slice(tag.as_ref());
        b64_encode(&out)
    }

    /// Checks the MAC and decrypts; returns (connection, counter, plaintext).
    /// The caller checks the connection number and that the counter grows.
    pub fn open(&self, cmd: &str, sealed: &str) -> Result<(u32, u64, Vec<u8>), OpenError> {
        let raw = b64_decode(sealed).ok_or(OpenError::Encoding)?;
        if raw.len() < NONCE_LEN + TAG_LEN {
            return Err(OpenError::Encoding);
        }
        let (nonce, rest) = raw.split_at(NONCE_LEN);
        let (ct, tag) = rest.split_at(rest.len() - TAG_LEN);
        hmac::verify(&self.mac, &Self::mac_input(cmd, nonce, ct), tag)
            .map_err(|_| OpenError::Mac)?;
        let mut n = [0u8; NONCE_LEN];
        n.copy_from_slice(nonce);
        let mut pt = ct.to_vec();
        self.keystream(&n, &mut pt);
        let conn = u32::from_be_bytes([n[0], n[1], n[2], n[3]]);
        let mut c = [0u8; 8];
        c.copy_from_slice(&n[4..]);
        Ok((conn, u64::from_be_bytes(c), pt))
    }
}

/// base64url without padding (RFC 4648 section 5).
pub fn b64_encode(data: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(data)
}

/// Decodes base64url without padding; `None` for anything else (padding,
/// other alphabets, non-canonical trailing bits).
pub fn b64_decode(text: &str) -> Option<Vec<u8>> {
    URL_SAFE_NO_PAD.decode(text).ok()
}

/// Lower-case hex.
pub fn hex(bytes: &[u8]) -> String {
    hex::encode(bytes)
}

/// Parses exactly `N` bytes of hex.
pub fn unhex<const N: usize>(text: &str) -> Option<[u8; N]> {
    let mut out = [0u8; N];
    hex::decode_to_slice(text, &mut out).ok()?;
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64url_round_trip() {
        for n in 0..40 {
            let data: Vec<u8> = (0..n).map(|i| (i * 37 + 5) as u8).collect();
            let t = b64_encode(&data);
            assert!(!t.contains('='));
            assert_eq!(b64_decode(&t).unwrap(), data, "{n}");
        }
        assert_eq!(b64_encode(b"foobar"), "Zm9vYmFy");
        assert_eq!(b64_encode(b"fo"), "Zm8");
        assert!(b64_decode("Zm9=").is_none());
        assert!(b64_decode("Z").is_none());
        assert!(b64_decode("Zm9w+").is_none());
        // "Zm8" and "Zm9" differ in unused bits: only the canonical form decodes.
        assert!(b64_decode("Zm9").is_none());
    }

    #[test]
    fn hex_round_trip() {
        let id = [0u8, 1, 0xab, 0xff];
        assert_eq!(hex(&id), "0001abff");
        assert_eq!(unhex::<4>("0001abff"), Some(id));
        assert_eq!(unhex::<4>("0001ABFF"), Some(id));
        assert_eq!(unhex::<4>("0001abf"), None);
        assert_eq!(unhex::<4>("0001abff00"), None);
        assert_eq!(unhex::<4>("0001abfg"), None);
    }

    #[test]
    fn seal_open_and_tamper() {
        let k = SessionKeys::from_material(&[7u8; KEY_MATERIAL_LEN]);
        let line = b"2 2 0#IBP-abc 5 10 6f0e1d2c-3b4a-4958-8776-a5b4c3d2e1f0 30 \n";
        let s = k.seal("2", 1, 9, line);
        assert_eq!(k.open("2", &s).unwrap(), (1, 9, line.to_vec()));
        // Another command, another ciphertext byte, another nonce: refused.
        assert_eq!(k.open("8", &s), Err(OpenError::Mac));
        let mut raw = b64_decode(&s).unwrap();
        raw[NONCE_LEN + 3] ^= 1;
        assert_eq!(k.open("2", &b64_encode(&raw)), Err(OpenError::Mac));
        let mut raw = b64_decode(&s).unwrap();
        raw[11] ^= 1;
        assert_eq!(k.open("2", &b64_encode(&raw)), Err(OpenError::Mac));
        // Distinct nonces give distinct ciphertexts of the same line.
        assert_ne!(k.seal("2", 1, 10, line), s);
        let other = SessionKeys::from_material(&[8u8; KEY_MATERIAL_LEN]);
        assert_eq!(other.open("2", &s), Err(OpenError::Mac));
    }
}
