//! Key-wrapping public keys (`x25519 <base64>`) and data keys wrapped for
//! a recipient (`user:ID@VO` or `escrow:VO`).

use serde::{Deserialize, Serialize};

/// A data key wrapped for one recipient (`user:ID@VO` or `escrow:VO`); in
/// `put` requests.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WrappedKey {
    pub recipient: String,
    pub wrapped: String,
}

/// `PUT /v1/keys/me`, `PUT /v1/vos/{vo}/escrow`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyRequest {
    pub public_key: String,
}

/// `POST /v1/keys/lookup`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LookupRequest {
    /// `user:ID@VO` or `escrow:VO`.
    pub recipient: String,
}

/// `POST /v1/keys/add`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyAddRequest {
    pub path: String,
    /// `None`: the current version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<u64>,
    pub recipient: String,
    pub wrapped: String,
}

/// `POST /v1/keys/remove`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyRemoveRequest {
    pub path: String,
    pub recipient: String,
}

/// The answer of `PUT /v1/keys/me`: the caller's own key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegisteredKey {
    /// `user:ID@VO`.
    pub principal: String,
    pub public_key: String,
}

/// A registered key-wrapping public key (`x25519 <base64>`): the answer of
/// `keys/lookup` and of setting a VO's escrow key (a client also reads a
/// [`RegisteredKey`] as one).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PublicKey {
    /// `user:ID@VO` or `escrow:VO`.
    #[serde(alias = "principal")]
    pub recipient: String,
    pub public_key: String,
}

/// What `keys/add` stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyAdded {
    pub path: String,
    pub version: u64,
    pub recipient: String,
}

/// What `keys/remove` removed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeysRemoved {
    pub path: String,
    pub recipient: String,
    /// How many wrapped keys (one per version) went.
    pub removed: u64,
}

/// A data key wrapped for the VO's escrow key (VO admins only).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EscrowedKey {
    pub path: String,
    pub id: String,
    pub version: u64,
    pub recipient: String,
    pub wrapped_key: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_registered_key_reads_as_a_public_key() {
        let k = RegisteredKey {
            principal: "user:u1@vo1".into(),
            public_key: "x25519 AA".into(),
        };
        let k: PublicKey = serde_json::from_str(&serde_json::to_string(&k).unwrap()).unwrap();
        assert_eq!(k.recipient, "user:u1@vo1");
        let k: PublicKey =
            serde_json::from_str(r#"{"principal":"user:u1@vo1","public_key":"x25519 AA"}"#)
                .unwrap();
        assert_eq!(k.recipient, "user:u1@vo1");
    }
}
