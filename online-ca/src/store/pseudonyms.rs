//! Pseudonyms of members of pseudonymous VOs (docs/identity.md,
//! "Pseudonymous members"): table `pseudonyms` (migration 4 in
//! [`super::MIGRATIONS`]). One pseudonym per (VO, VO ID), drawn at random
//! when the member first logs in and kept for good, so that every login
//! of the same member (by any of their identities) gets the same one, and
//! two VOs hold unrelated values for the same person. The mapping exists
//! only here: the pseudonym carries no information about the login.

use serde::Serialize;
use sqlx::Row;

use super::Store;

/// The prefix of a pseudonymous certificate's CN: `CN=pseudonym:<p>`.
pub const CN_PREFIX: &str = "pseudonym:";
/// Random bytes of a pseudonym (80 bits: 16 base32 characters).
const PSEUDONYM_BYTES: usize = 10;

/// What `pseudonym lookup` finds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PseudonymRow {
    pub pseudonym: String,
    pub vo: String,
    pub vo_id: String,
    pub created_at: i64,
    /// Every identity of the VO ID (logins and linked certificates).
    pub identities: Vec<String>,
}

/// A fresh pseudonym: 16 characters of lowercase RFC 4648 base32 from
/// the system's random generator.
pub fn new_pseudonym() -> anyhow::Result<String> {
    use ring::rand::SecureRandom;
    let mut bytes = [0u8; PSEUDONYM_BYTES];
    ring::rand::SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| anyhow::anyhow!("the system's random generator failed"))?;
    Ok(base32(&bytes))
}

fn base32(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 32] = b"abcdefghijklmnopqrstuvwxyz234567";
    let mut out = String::with_capacity(bytes.len() * 8 / 5 + 1);
    let (mut acc, mut bits) = (0u32, 0u32);
    for b in bytes {
        acc = (acc << 8) | u32::from(*b);
        bits += 8;
        while bits >= 5 {
            bits -= 5;
            out.push(char::from(ALPHABET[((acc >> bits) & 31) as usize]));
        }
    }
    if bits > 0 {
        out.push(char::from(ALPHABET[((acc << (5 - bits)) & 31) as usize]));
    }
    out
}

/// The pseudonym part of `s`: `pseudonym:<p>` or `<p>` alone, if it has
/// the form of one (so that a lookup of a login name fails early).
pub fn parse_pseudonym(s: &str) -> Option<&str> {
    let p = s.strip_prefix(CN_PREFIX).unwrap_or(s);
    (p.len() == PSEUDONYM_BYTES * 8 / 5
        && p.bytes()
            .all(|b| b.is_ascii_lowercase() || (b'2'..=b'7').contains(&b)))
    .then_some(p)
}

impl Store {
    /// The pseudonym of VO ID `vo_id` in `vo`, drawn and stored on first
    /// use.
    pub async fn pseudonym(&self, vo: &str, vo_id: &str) -> anyhow::Result<String> {
        if let Some(p) = self.pseudonym_of(vo, vo_id).await? {
            return Ok(p);
        }
        // Two first logins at once: one insert wins, both read it back.
        // A collision of 80 random bits with another pseudonym (the
        // column is unique) is retried with a new draw.
        for _ in 0..3 {
            let r = sqlx::query(
                "INSERT INTO pseudonyms (vo, vo_id, pseudonym, created_at)
                 VALUES ($1, $2, $3, $4) ON CONFLICT (vo, vo_id) DO NOTHING",
            )
            .bind(vo)
            .bind(vo_id)
            .bind(new_pseudonym()?)
            .bind(super::now())
            .execute(&self.pool)
            .await;
            match r {
                Ok(_) => {}
                Err(e) if ibp_service::db::is_unique_violation(&e) => continue,
                Err(e) => return Err(e.into()),
            }
            if let Some(p) = self.pseudonym_of(vo, vo_id).await? {
                return Ok(p);
            }
        }
        anyhow::bail!("could not store a pseudonym for VO ID {vo_id} of VO {vo}")
    }

    /// The pseudonym of `vo_id` in `vo`, if one was issued.
    pub async fn pseudonym_of(&self, vo: &str, vo_id: &str) -> anyhow::Result<Option<String>> {
        let row = sqlx::query("SELECT pseudonym FROM pseudonyms WHERE vo = $1 AND vo_id = $2")
            .bind(vo)
            .bind(vo_id)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.map(|r| r.try_get("pseudonym")).transpose()?)
    }

    /// Who a pseudonym is: its VO, VO ID and the identities of that VO ID.
    pub async fn pseudonym_lookup(&self, pseudonym: &str) -> anyhow::Result<Option<PseudonymRow>> {
        let row = sqlx::query(
            "SELECT vo, vo_id, pseudonym, created_at FROM pseudonyms WHERE pseudonym = $1",
        )
        .bind(pseudonym)
        .fetch_optional(&self.pool)
        .await?;
        let Some(row) = row else {
            return Ok(None);
        };
        let vo: String = row.try_get("vo")?;
        let vo_id: String = row.try_get("vo_id")?;
        let identities = sqlx::query(
            "SELECT identity FROM members WHERE vo = $1 AND vo_id = $2 ORDER BY identity",
        )
        .bind(&vo)
        .bind(&vo_id)
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(|r| r.try_get("identity"))
        .collect::<Result<Vec<String>, _>>()?;
        Ok(Some(PseudonymRow {
            pseudonym: row.try_get("pseudonym")?,
            created_at: row.try_get("created_at")?,
            vo,
            vo_id,
            identities,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pseudonyms_are_16_base32_characters_and_parse_back() {
        assert_eq!(base32(&[0; 10]), "aaaaaaaaaaaaaaaa");
        assert_eq!(base32(&[0xff; 10]), "7777777777777777");
        // RFC 4648 test vector "fooba" -> MZXW6YTB.
        assert_eq!(base32(b"fooba"), "mzxw6ytb");
        let a = new_pseudonym().unwrap();
        let b = new_pseudonym().unwrap();
        assert_ne!(a, b);
        assert_eq!(parse_pseudonym(&a), Some(a.as_str()));
        assert_eq!(parse_pseudonym(&format!("pseudonym:{b}")), Some(b.as_str()));
        assert_eq!(parse_pseudonym("local:alice"), None);
        assert_eq!(parse_pseudonym("alice"), None);
        assert_eq!(parse_pseudonym("ABCDEFGHIJKLMNOP"), None);
    }
}
