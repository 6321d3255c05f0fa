//! Members by name (`alice@vo1`) instead of by VO ID: `POST /v1/names/resolve`
//! and `POST /v1/names/of`, both within the caller's own VO.
//!
//! A member's name is what their certificate's subject says they are, not
//! something they choose (so nobody can take another's name): the last
//! `CN` of the end-entity certificate's subject, with the online CA's
//! `local:` prefix dropped. `CN=local:alice` is `alice`; other login
//! methods keep their prefix (`CN=radius:bob@example.org` is
//! `radius:bob@example.org`), so names of different methods cannot collide
//! by accident; a certificate of the user's own CA gives its CN (`Alice
//! Smith`). Two members may still carry one name (two CAs, or one person
//! twice): resolving it then answers every VO ID and the client refuses to
//! guess. A name is as trustworthy as the CAs the services trust to issue
//! subjects (docs/security.md).
//!
//! A member may also choose a display name (`POST /v1/names/set`,
//! [`check_display_name`]): the only human name of a member of a
//! pseudonymous VO, whose certificate says `CN=pseudonym:<p>` (name
//! `pseudonym:<p>`). A display name resolves like a certified name, but
//! it is a claim (first come, first served; the manager refuses one that
//! another member of the VO already carries), never carries `:` or `@`,
//! and the certified name keeps resolving too (docs/identity.md).

use serde::{Deserialize, Serialize};

/// Most names (or principals) in one request.
pub const MAX_NAMES: usize = 1000;
/// Longest name.
pub const MAX_NAME: usize = 256;

/// `POST /v1/names/resolve`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResolveRequest {
    pub names: Vec<String>,
}

/// One name and the members (active ones) carrying it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Resolved {
    pub name: String,
    /// Empty: nobody of that name; more than one: ambiguous.
    pub vo_ids: Vec<String>,
}

/// The answer to [`ResolveRequest`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResolveAnswer {
    pub vo: String,
    pub resolved: Vec<Resolved>,
}

/// `POST /v1/names/of`: names of VO IDs of the caller's VO.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NamesOfRequest {
    pub vo_ids: Vec<String>,
}

/// One VO ID and its name; `unique` false when another member carries the
/// same name (show the VO ID too).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NameOf {
    pub vo_id: String,
    pub name: String,
    pub unique: bool,
}

/// The answer to [`NamesOfRequest`]: unknown VO IDs are left out.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NamesOfAnswer {
    pub vo: String,
    pub names: Vec<NameOf>,
}

/// Longest display name, in bytes.
pub const MAX_DISPLAY_NAME: usize = 64;

/// `POST /v1/names/set`: the caller's display name in their VO, a name
/// the member chooses (a pseudonymous member's only human name); `None`
/// clears it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SetNameRequest {
    pub name: Option<String>,
}

/// The answer to [`SetNameRequest`]: the display name now recorded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SetNameAnswer {
    pub vo: String,
    pub vo_id: String,
    pub name: Option<String>,
}

/// A display name as it is stored: trimmed, 1 to [`MAX_DISPLAY_NAME`]
/// bytes, no control characters, and neither `:` (the mark of names
/// derived from certificates, `radius:...`, `pseudonym:...`, and of
/// principals, `user:...`) nor `@` (`NAME@VO`), so that a chosen name
/// can never pass for a certified one.
pub fn check_display_name(raw: &str) -> Result<&str, String> {
    let name = raw.trim();
    if name.is_empty() || name.len() > MAX_DISPLAY_NAME {
        return Err(format!(
            "a display name has 1 to {MAX_DISPLAY_NAME} bytes ({} given)",
            name.len()
        ));
    }
    if name.chars().any(char::is_control) {
        return Err("a display name has no control characters".into());
    }
    if name.contains(':') || name.contains('@') {
        return Err(format!(
            "a display name has neither ':' nor '@' (they mark names from certificates and NAME@VO): {name:?}"
        ));
    }
    Ok(name)
}

/// The name a certificate subject (`O=..., CN=...`, as x509-parser prints
/// it) gives its holder: its last `CN`, `local:` dropped. `None` without a
/// usable CN.
pub fn name_of_subject(subject: &str) -> Option<String> {
    let start = subject.rfind("CN=")?;
    // The CN of "..., CN=x" or a subject that is only "CN=x".
    if start > 0 && !subject[..start].ends_with(", ") && !subject[..start].ends_with(',') {
        return name_of_subject(&subject[..start]);
    }
    let value = &subject[start + 3..];
    // A later attribute after the CN (", OU=..."): cut there.
    let end = value
        .match_indices(", ")
        .find(|(i, _)| {
            let rest = &value[i + 2..];
            rest.split_once('=').is_some_and(|(k, _)| {
                !k.is_empty()
                    && k.len() <= 32
                    && k.chars().all(|c| c.is_ascii_alphanumeric() || c == '.')
            })
        })
        .map_or(value.len(), |(i, _)| i);
    let value = value[..end].trim();
    let name = value.strip_prefix("local:").unwrap_or(value);
    (!name.is_empty() && name.len() <= MAX_NAME && !name.chars().any(char::is_control))
        .then(|| name.to_owned())
}

/// Splits `NAME@VO` at its last `@` (names may hold `@`: `radius:a@realm@vo1`).
/// Without `@`, the VO is `None` (the caller's).
pub fn split_name(s: &str) -> (&str, Option<&str>) {
    match s.rsplit_once('@') {
        Some((n, vo)) if !n.is_empty() && crate::is_identifier(vo) => (n, Some(vo)),
        _ => (s, None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_come_from_the_last_cn_without_the_local_prefix() {
        assert_eq!(
            name_of_subject("O=ibp-grid, CN=local:alice").as_deref(),
            Some("alice")
        );
        assert_eq!(
            name_of_subject("CN=radius:bob@example.org").as_deref(),
            Some("radius:bob@example.org")
        );
        assert_eq!(
            name_of_subject("C=CZ, O=CESNET, CN=Alice Smith, OU=people").as_deref(),
            Some("Alice Smith")
        );
        assert_eq!(
            name_of_subject("O=x, CN=first, CN=local:second").as_deref(),
            Some("second")
        );
        // A "CN=" inside another value is not a CN.
        assert_eq!(
            name_of_subject("O=ACN=fake, CN=local:real").as_deref(),
            Some("real")
        );
        assert_eq!(name_of_subject("O=ACN=fake"), None);
        assert_eq!(name_of_subject("O=no cn"), None);
        assert_eq!(name_of_subject("CN=local:"), None);
    }

    #[test]
    fn display_names_are_trimmed_and_never_look_certified() {
        assert_eq!(check_display_name("  Alice L. "), Ok("Alice L."));
        assert_eq!(check_display_name("Zoë"), Ok("Zoë"));
        assert!(check_display_name("").is_err());
        assert!(check_display_name("   ").is_err());
        assert!(check_display_name(&"x".repeat(MAX_DISPLAY_NAME + 1)).is_err());
        assert!(check_display_name(&"x".repeat(MAX_DISPLAY_NAME)).is_ok());
        assert!(check_display_name("pseudonym:abc").is_err());
        assert!(check_display_name("radius:bob").is_err());
        assert!(check_display_name("alice@vo1").is_err());
        assert!(check_display_name("a\nb").is_err());
    }

    #[test]
    fn name_at_vo_splits_at_the_last_at() {
        assert_eq!(split_name("alice@vo1"), ("alice", Some("vo1")));
        assert_eq!(split_name("alice"), ("alice", None));
        assert_eq!(
            split_name("radius:bob@example.org@vo1"),
            ("radius:bob@example.org", Some("vo1"))
        );
        assert_eq!(split_name("@vo1"), ("@vo1", None));
    }
}
