//! `lbone admin`: the VO admins' client of the registration API, over
//! mutual TLS with the admin's proxy credential.

use anyhow::{bail, Context};
use ibp_auth::{ProxyCredential, TrustStore};
use ibp_https::{BaseUrl, Client, Method, Response};
use serde::Serialize;
use serde_json::Value;

/// Longest server message shown.
const MAX_MESSAGE: usize = 500;

/// Percent-encodes one path segment (everything but RFC 3986 unreserved).
pub fn path_segment(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// A connection to one L-Bone as one admin.
pub struct AdminClient {
    client: Client,
}

impl AdminClient {
    pub fn new(
        url: &str,
        trust: &TrustStore,
        credential: &ProxyCredential,
    ) -> anyhow::Result<AdminClient> {
        let url = BaseUrl::parse(url)?;
        let tls = ibp_auth::tls::client_config(trust, Some(credential))
            .context("TLS configuration with the proxy credential")?;
        Ok(AdminClient {
            client: Client::new(url, tls, true)
                .with_user_agent(concat!("lbone-admin/", env!("CARGO_PKG_VERSION")))
                .with_service_name("L-Bone"),
        })
    }

    fn depots_path(vo: &str) -> String {
        format!("/v1/vos/{}/depots", path_segment(vo))
    }

    fn depot_path(vo: &str, name: &str) -> String {
        format!("/v1/vos/{}/depots/{}", path_segment(vo), path_segment(name))
    }

    /// `POST /v1/vos/{vo}/depots` (`depot`: a `lbone_api::NewDepot` or
    /// its JSON).
    pub async fn register<B: Serialize>(&self, vo: &str, depot: &B) -> anyhow::Result<Value> {
        let r = self.client.post_json(&Self::depots_path(vo), depot).await?;
        answer(r)
    }

    /// `GET /v1/vos/{vo}/depots`.
    pub async fn list(&self, vo: &str) -> anyhow::Result<Value> {
        answer(self.client.get(&Self::depots_path(vo)).await?)
    }

    /// `GET /v1/vos/{vo}/depots/{name}`.
    pub async fn show(&self, vo: &str, name: &str) -> anyhow::Result<Value> {
        answer(self.client.get(&Self::depot_path(vo, name)).await?)
    }

    /// `PATCH /v1/vos/{vo}/depots/{name}` (`changes`: a
    /// `lbone_api::DepotChanges` or its JSON).
    pub async fn update<B: Serialize>(
        &self,
        vo: &str,
        name: &str,
        changes: &B,
    ) -> anyhow::Result<Value> {
        let r = self
            .client
            .send_json(Method::PATCH, &Self::depot_path(vo, name), changes)
            .await?;
        answer(r)
    }

    fn removed_path(vo: &str, vo_id: &str) -> String {
        format!(
            "/v1/vos/{}/removed/{}",
            path_segment(vo),
            path_segment(vo_id)
        )
    }

    /// `PUT /v1/vos/{vo}/removed/{vo_id}`: no more grants for the member.
    pub async fn member_remove(&self, vo: &str, vo_id: &str) -> anyhow::Result<Value> {
        let r = self
            .client
            .send_json(
                Method::PUT,
                &Self::removed_path(vo, vo_id),
                &serde_json::Map::new(),
            )
            .await?;
        answer(r)
    }

    /// `DELETE /v1/vos/{vo}/removed/{vo_id}`.
    pub async fn member_restore(&self, vo: &str, vo_id: &str) -> anyhow::Result<Value> {
        answer(self.client.delete(&Self::removed_path(vo, vo_id)).await?)
    }

    /// `GET /v1/vos/{vo}/removed`.
    pub async fn removed(&self, vo: &str) -> anyhow::Result<Value> {
        answer(
            self.client
                .get(&format!("/v1/vos/{}/removed", path_segment(vo)))
                .await?,
        )
    }

    /// `DELETE /v1/vos/{vo}/depots/{name}`.
    pub async fn remove(&self, vo: &str, name: &str) -> anyhow::Result<Value> {
        answer(self.client.delete(&Self::depot_path(vo, name)).await?)
    }
}

fn answer(r: Response) -> anyhow::Result<Value> {
    if r.is_success() {
        return r
            .json()
            .map_err(|e| anyhow::anyhow!("the L-Bone answered with invalid JSON: {e}"));
    }
    let why = r.error_message(MAX_MESSAGE);
    match r.status {
        401 | 403 => bail!("refused by the L-Bone (HTTP {}): {why}", r.status),
        404 => bail!("not found (HTTP 404): {why}"),
        409 => bail!("conflict (HTTP 409): {why}"),
        400 => bail!("bad request (HTTP 400): {why}"),
        s => bail!("the L-Bone failed (HTTP {s}): {why}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segments() {
        assert_eq!(path_segment("vo1"), "vo1");
        assert_eq!(path_segment("a b/c%"), "a%20b%2Fc%25");
        assert_eq!(path_segment("é"), "%C3%A9");
    }
}
