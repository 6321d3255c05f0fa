//! Asking the L-Bone for depots (`lors depots`, and the upload path).
//!
//! `POST /v1/query` over mutual TLS with the user's proxy credential
//! (request and answer types are the `lbone_api` crate's, which the L-Bone
//! compiles against too):
//! `{vo?, count?, size, duration, reliability, location? | place?}` →
//! `{vo, vo_id, requested, returned, matching, issued, depots: [...], note?}`.
//! Each offered depot carries a `DepotGrant` signed by the L-Bone and bound
//! to the proxy's key, for the address in `address` (`host:tls_port` if the
//! depot has a TLS port, else `host:port`). A grant is renewed by asking
//! again; a user who left the VO gets nothing. See docs/lbone.md.

use ibp_auth::{ProxyCredential, TrustStore};

use crate::credentials::Error;
use crate::https::{BaseUrl, Client, Response};

/// Longest server error message shown.
const MAX_MESSAGE: usize = 300;

use lbone_api::{CopyGrantRequest, QueryRequest};
pub use lbone_api::{CopyGrants, Location, Offer, OfferedDepot, Reliability};

/// Where the user is, for nearest-first ordering.
#[derive(Debug, Clone, PartialEq)]
pub enum Near {
    Location(Location),
    /// A place name registered at the L-Bone (e.g. `Brno, CZ`).
    Place(String),
}

impl Near {
    /// `LAT,LON` in decimal degrees, else a place name.
    pub fn parse(s: &str) -> Result<Near, String> {
        let s = s.trim();
        if s.is_empty() {
            return Err("empty location".into());
        }
        if let Some((a, b)) = s.split_once(',') {
            if let (Ok(lat), Ok(lon)) = (a.trim().parse::<f64>(), b.trim().parse::<f64>()) {
                return Location::new(lat, lon).map(Near::Location);
            }
        }
        Ok(Near::Place(s.to_owned()))
    }
}

/// What the user needs.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DepotQuery {
    /// Checked against the VO of the proxy's attributes (which is what counts).
    pub vo: Option<String>,
    /// How many depots (default: all that suit).
    pub count: Option<u32>,
    /// Bytes of one allocation.
    pub size: u64,
    /// Seconds the allocation must live.
    pub duration: u64,
    pub reliability: Reliability,
    pub near: Option<Near>,
}

/// Sends one request to the L-Bone at `urls` (one, or several instances
/// comma-separated): to each in turn until one answers. Every L-Bone
/// request `lors` makes may be sent twice (queries read; PUT and DELETE of
/// a removal are idempotent), so any failure to get an answer moves on to
/// the next instance; an answer, even a refusal, is final.
async fn to_lbone<F, Fut>(
    urls: &str,
    trust: &TrustStore,
    credential: &ProxyCredential,
    send: F,
) -> Result<Response, Error>
where
    F: Fn(Client) -> Fut,
    Fut: std::future::Future<Output = Result<Response, ibp_https::HttpError>>,
{
    let urls: Vec<&str> = crate::metadata::split_urls(urls).collect();
    let mut last = None;
    for (i, u) in urls.iter().enumerate() {
        match send(lbone_client(u, trust, credential)?).await {
            Ok(r) => return Ok(r),
            Err(e) if !crate::metadata::try_another(&e, true) => return Err(e.into()),
            Err(e) => {
                if let Some(next) = urls.get(i + 1) {
                    tracing::warn!("L-Bone {u} failed ({e}); trying {next}");
                }
                last = Some(e);
            }
        }
    }
    Err(match last {
        Some(e) if urls.len() > 1 => Error::Unavailable(format!(
            "no L-Bone answered ({} tried); the last: {e}",
            urls.len()
        )),
        Some(e) => e.into(),
        None => Error::Usage(format!("no L-Bone URL in {urls:?}")),
    })
}

/// A client of the L-Bone at `url` presenting `credential`.
fn lbone_client(
    url: &str,
    trust: &TrustStore,
    credential: &ProxyCredential,
) -> Result<Client, Error> {
    let base = BaseUrl::parse(url)?;
    let tls = ibp_auth::tls::client_config(trust, Some(credential))
        .map_err(|e| Error::Usage(format!("cannot set up TLS: {e}")))?;
    Ok(Client::new(base, tls, true)
        .with_user_agent(concat!("lors/", env!("CARGO_PKG_VERSION")))
        .with_service_name("L-Bone"))
}

/// Removes (`removed`) a VO member at the L-Bone, so that they get no more
/// depot grants, or lets them in again (VO admins only):
/// `PUT`/`DELETE /v1/vos/{vo}/removed/{vo_id}`. Restoring someone the
/// L-Bone had not removed is not an error (`None`). The L-Bone's answer
/// otherwise.
pub async fn set_member_removed(
    url: &str,
    trust: &TrustStore,
    credential: &ProxyCredential,
    vo: &str,
    vo_id: &str,
    removed: bool,
) -> Result<Option<serde_json::Value>, Error> {
    for (what, v) in [("VO", vo), ("VO ID", vo_id)] {
        if v.is_empty()
            || !v
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
        {
            return Err(Error::Usage(format!(
                "bad {what} {v:?}: letters, digits, '.', '_', '-'"
            )));
        }
    }
    let path = format!("/v1/vos/{vo}/removed/{vo_id}");
    let path = path.as_str();
    let resp = to_lbone(url, trust, credential, |client| async move {
        if removed {
            client
                .send_json(ibp_https::Method::PUT, path, &serde_json::Map::new())
                .await
        } else {
            client.delete(path).await
        }
    })
    .await?;
    // Only the L-Bone's own "not removed" answer; any other 404 (a wrong
    // URL, an unknown route) is an error like the rest.
    if !removed && resp.status == 404 && resp.error_message(MAX_MESSAGE).contains("has not removed")
    {
        return Ok(None);
    }
    check(resp).map(Some)
}

fn check<T: serde::de::DeserializeOwned>(resp: Response) -> Result<T, Error> {
    if resp.is_success() {
        return resp
            .json()
            .map_err(|e| Error::Unavailable(format!("invalid answer from the L-Bone: {e}")));
    }
    let detail = resp.error_message(MAX_MESSAGE);
    Err(match resp.status {
        400 => Error::BadRequest(format!(
            "the L-Bone refused the request as malformed (HTTP 400): {detail}"
        )),
        401 | 403 => Error::Refused(format!(
            "the L-Bone refused (HTTP {}): {detail}",
            resp.status
        )),
        s => Error::Unavailable(format!("the L-Bone answered HTTP {s}: {detail}")),
    })
}

/// Asks the L-Bone at `url` (server checked against `trust`'s CAs) for
/// depots, presenting `credential`; the whole answer.
pub async fn query_offer(
    url: &str,
    trust: &TrustStore,
    credential: &ProxyCredential,
    q: &DepotQuery,
) -> Result<Offer, Error> {
    let (location, place) = match &q.near {
        Some(Near::Location(l)) => (Some(*l), None),
        Some(Near::Place(p)) => (None, Some(p.clone())),
        None => (None, None),
    };
    let body = QueryRequest {
        vo: q.vo.clone(),
        count: q.count,
        size: q.size,
        duration: q.duration,
        reliability: q.reliability,
        location,
        place,
    };
    let body = &body;
    check(
        to_lbone(url, trust, credential, |client| async move {
            client.post_json("/v1/query", body).await
        })
        .await?,
    )
}

/// Asks the L-Bone for depots: those offered, best first (nearest, then
/// most free space), each with its grant. Fewer than `q.count` means that
/// no more suit the request.
pub async fn query(
    url: &str,
    trust: &TrustStore,
    credential: &ProxyCredential,
    q: &DepotQuery,
) -> Result<Vec<OfferedDepot>, Error> {
    query_offer(url, trust, credential, q)
        .await
        .map(|o| o.depots)
}

/// Asks the L-Bone for grants for a secure COPY from depot `source` to
/// each of `targets` (secure addresses, `host:tls_port`, of depots of the
/// VO): `POST /v1/copy-grants`. The grants are held by the source depot's
/// key, which the L-Bone learns itself; never beyond the caller's own.
pub async fn copy_grants(
    url: &str,
    trust: &TrustStore,
    credential: &ProxyCredential,
    vo: Option<&str>,
    source: &str,
    targets: &[String],
) -> Result<CopyGrants, Error> {
    let body = CopyGrantRequest {
        vo: vo.map(str::to_owned),
        source: source.to_owned(),
        targets: targets.to_vec(),
    };
    let body = &body;
    check(
        to_lbone(url, trust, credential, |client| async move {
            client.post_json("/v1/copy-grants", body).await
        })
        .await?,
    )
}

/// The pools' source of COPY grants: the session's L-Bone, asked with the
/// session's proxy in its VO.
pub struct LboneCopyGrants {
    pub url: String,
    pub trust: TrustStore,
    pub credential: ProxyCredential,
    pub vo: Option<String>,
}

impl crate::transfer::CopyGrantSource for LboneCopyGrants {
    fn copy_grants<'a>(
        &'a self,
        source: &'a str,
        targets: &'a [String],
    ) -> std::pin::Pin<
        Box<
            dyn std::future::Future<Output = Result<crate::transfer::CopyGrantList, String>>
                + Send
                + 'a,
        >,
    > {
        Box::pin(async move {
            let g = copy_grants(
                &self.url,
                &self.trust,
                &self.credential,
                self.vo.as_deref(),
                source,
                targets,
            )
            .await
            .map_err(|e| e.to_string())?;
            Ok(g.grants
                .into_iter()
                .map(|c| (c.target, c.grant, c.grant_not_after))
                .collect())
        })
    }
}

/// Sizes and durations (in whole seconds) in the stack's one grammar
/// (docs/units.md): `5M` is 5 MiB as in LoRS, `1d12h` is 129,600 s.
pub use ibp_service::units::{parse_seconds as parse_duration, parse_size};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn near_sizes_durations() {
        assert_eq!(
            Near::parse("49.19,16.61"),
            Ok(Near::Location(Location {
                lat: 49.19,
                lon: 16.61
            }))
        );
        assert_eq!(Near::parse("Brno, CZ"), Ok(Near::Place("Brno, CZ".into())));
        assert!(Near::parse("95,0").is_err());
        assert!(Near::parse("").is_err());
        assert_eq!(parse_size("10GiB"), Ok(10 << 30));
        assert_eq!(parse_size("5MB"), Ok(5_000_000));
        assert!(parse_size("x").is_err());
        assert_eq!(parse_duration("3600"), Ok(3600));
        assert_eq!(parse_duration("1d12h"), Ok(129_600));
        assert!(parse_duration("1x").is_err());
        assert!(parse_duration("h").is_err());
        assert!(parse_duration("").is_err());
    }
}
