//! Members by name: `alice@vo1` given where a principal is expected
//! (`share`, `unshare`, `acl set`), and principals shown by name in
//! listings. Names are resolved by the metadata manager within the
//! caller's VO (see `metadata_api::names`); an ambiguous name is refused,
//! never guessed.

use std::collections::HashMap;

use metadata_api::names::split_name;

use crate::credentials::Error;
use crate::metadata::MetadataClient;

/// Whether `s` is already a principal (`user:`, `group:`, `vo:`, `escrow:`).
pub fn is_principal(s: &str) -> bool {
    ["user:", "group:", "vo:", "escrow:"]
        .iter()
        .any(|p| s.starts_with(p))
}

/// The principal `arg` names: a principal as it is, else `NAME[@VO]`
/// resolved by the metadata manager (`VO`, when given, must be the
/// caller's).
pub async fn principal(mdm: &MetadataClient, arg: &str) -> Result<String, Error> {
    let mut out = principals(mdm, &[arg.to_owned()]).await?;
    out.pop()
        .ok_or_else(|| Error::Local("the name lookup answered nothing".into()))
}

/// [`principal`] for several at once (one request for all the names).
pub async fn principals(mdm: &MetadataClient, args: &[String]) -> Result<Vec<String>, Error> {
    let names: Vec<(usize, &str, Option<&str>)> = args
        .iter()
        .enumerate()
        .filter(|(_, a)| !is_principal(a))
        .map(|(i, a)| {
            let (n, vo) = split_name(a);
            (i, n, vo)
        })
        .collect();
    let mut out: Vec<String> = args.to_vec();
    if names.is_empty() {
        return Ok(out);
    }
    let answer = mdm
        .names_resolve(names.iter().map(|(_, n, _)| (*n).to_owned()).collect())
        .await?;
    if answer.resolved.len() != names.len() {
        return Err(Error::Unavailable(format!(
            "the metadata manager answered {} names for {} asked",
            answer.resolved.len(),
            names.len()
        )));
    }
    for ((i, name, vo), r) in names.iter().zip(&answer.resolved) {
        if let Some(vo) = vo {
            if *vo != answer.vo {
                return Err(Error::Usage(format!(
                    "{name}@{vo}: names are looked up in your own VO ({}) only; give \
                     user:VO_ID@{vo} for a member of {vo}",
                    answer.vo
                )));
            }
        }
        out[*i] = match r.vo_ids.as_slice() {
            [] => {
                return Err(Error::NotFound(format!(
                    "no member of VO {} is called {name:?} (a name is what `lors whoami` \
                     shows; members are known once they have used the metadata manager)",
                    answer.vo
                )))
            }
            [id] => format!("user:{id}@{}", answer.vo),
            ids => {
                return Err(Error::Conflict(format!(
                    "{name}@{} is the name of {} members: {}; give one of them",
                    answer.vo,
                    ids.len(),
                    ids.iter()
                        .map(|id| format!("user:{id}@{}", answer.vo))
                        .collect::<Vec<_>>()
                        .join(", ")
                )))
            }
        };
    }
    Ok(out)
}

/// Names of the principals of the caller's VO, for display.
#[derive(Debug, Clone, Default)]
pub struct NameBook {
    vo: String,
    /// VO ID -> name, for names only one member carries.
    names: HashMap<String, String>,
}

impl NameBook {
    /// Looks up the names of every `user:ID@VO` principal of `principals`
    /// in one request. A failure of the lookup gives an empty book (names
    /// are a convenience: the listing still shows VO IDs).
    pub async fn fetch<'a>(
        mdm: &MetadataClient,
        principals: impl IntoIterator<Item = &'a str>,
    ) -> NameBook {
        let mut ids: Vec<String> = principals
            .into_iter()
            .filter_map(|p| p.strip_prefix("user:"))
            .filter_map(|p| p.rsplit_once('@').map(|(id, _)| id.to_owned()))
            .collect();
        ids.sort();
        ids.dedup();
        if ids.is_empty() {
            return NameBook::default();
        }
        let mut book = NameBook::default();
        for chunk in ids.chunks(metadata_api::names::MAX_NAMES) {
            match mdm.names_of(chunk.to_vec()).await {
                Ok(a) => {
                    book.vo = a.vo;
                    book.names.extend(
                        a.names
                            .into_iter()
                            .filter(|n| n.unique)
                            .map(|n| (n.vo_id, n.name)),
                    );
                }
                Err(e) => {
                    tracing::debug!(error = %e, "names not looked up");
                    return NameBook::default();
                }
            }
        }
        book
    }

    /// `alice@vo1` for a principal whose name is known and unique, else
    /// `None`.
    pub fn name(&self, principal: &str) -> Option<String> {
        let (id, vo) = principal.strip_prefix("user:")?.rsplit_once('@')?;
        if vo != self.vo {
            return None;
        }
        self.names.get(id).map(|n| format!("{n}@{vo}"))
    }

    /// The name when known, else the principal itself.
    pub fn show(&self, principal: &str) -> String {
        self.name(principal).unwrap_or_else(|| principal.to_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn principals_are_recognized_and_names_shown_only_when_known() {
        assert!(is_principal("user:u1@vo1"));
        assert!(is_principal("group:g@vo1"));
        assert!(is_principal("vo:vo1"));
        assert!(!is_principal("alice@vo1"));
        assert!(!is_principal("alice"));
        let book = NameBook {
            vo: "vo1".into(),
            names: HashMap::from([("u1".to_owned(), "alice".to_owned())]),
        };
        assert_eq!(book.show("user:u1@vo1"), "alice@vo1");
        assert_eq!(book.show("user:u2@vo1"), "user:u2@vo1");
        assert_eq!(book.show("user:u1@vo2"), "user:u1@vo2");
        assert_eq!(book.show("vo:vo1"), "vo:vo1");
        assert_eq!(NameBook::default().show("user:u1@vo1"), "user:u1@vo1");
    }
}
