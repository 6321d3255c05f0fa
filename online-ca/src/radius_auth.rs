//! RADIUS PAP authentication (RFC 2865), the way eduroam identity providers
//! answer: an Access-Request with User-Name and User-Password, answered by
//! Access-Accept or Access-Reject.
//!
//! The `radius` crate builds the request (and hides the password, RFC 2865
//! §5.2); the exchange is ours, because its client does not check the
//! Response Authenticator: with a wrong shared secret every answer would
//! look like a reject. Here an answer whose authenticator does not verify is
//! a configuration error, never a wrong password. Requests carry a
//! Message-Authenticator (RFC 3579 §3.2), and one in an answer is checked.

use std::net::SocketAddr;
use std::time::Duration;

use radius::core::code::Code;
use radius::core::packet::Packet;
use radius::core::{rfc2865, rfc2869};
use tokio::net::UdpSocket;

use crate::config::RadiusConfig;
use crate::md5::hmac_md5;

const HEADER: usize = 20;
const MESSAGE_AUTHENTICATOR: u8 = 80;
const ACCESS_ACCEPT: u8 = 2;
const ACCESS_REJECT: u8 = 3;
const ACCESS_CHALLENGE: u8 = 11;

/// Why a RADIUS check gave no yes-or-no answer. None of these means a wrong
/// password.
#[derive(Debug, thiserror::Error)]
pub enum RadiusError {
    #[error("RADIUS server {0} did not answer (down, or it dropped the request because the shared secret is wrong)")]
    NoAnswer(String),
    #[error("the answer of RADIUS server {0} fails the Response Authenticator check: the shared secret is wrong")]
    BadAuthenticator(String),
    #[error("the answer of RADIUS server {0} has a wrong or missing Message-Authenticator")]
    BadMessageAuthenticator(String),
    #[error("RADIUS server {server}: unexpected answer code {code}")]
    UnexpectedCode { server: String, code: u8 },
    #[error("RADIUS: {0}")]
    Other(String),
}

#[derive(Debug)]
pub struct RadiusAuth {
    cfg: RadiusConfig,
}

/// Offset of the value of the first attribute of type `typ` in a packet.
fn find_attribute(packet: &[u8], typ: u8) -> Option<(usize, usize)> {
    let len = packet_len(packet)?;
    let mut i = HEADER;
    while i + 2 <= len {
        let (t, l) = (packet[i], packet[i + 1] as usize);
        if l < 2 || i + l > len {
            return None;
        }
        if t == typ {
            return Some((i + 2, l - 2));
        }
        i += l;
    }
    None
}

/// The Length field, if the packet is at least that long.
fn packet_len(packet: &[u8]) -> Option<usize> {
    if packet.len() < HEADER {
        return None;
    }
    let len = u16::from_be_bytes([packet[2], packet[3]]) as usize;
    (HEADER..=packet.len()).contains(&len).then_some(len)
}

/// Checks the Message-Authenticator of an answer, if it has one: HMAC-MD5
/// over the answer with the Request Authenticator in the header and the
/// attribute's value zeroed. `Some(ok)`, or `None` when absent.
fn check_message_authenticator(answer: &[u8], request: &[u8], secret: &[u8]) -> Option<bool> {
    let (off, len) = find_attribute(answer, MESSAGE_AUTHENTICATOR)?;
    if len != 16 {
        return Some(false);
    }
    let plen = packet_len(answer)?;
    let mut copy = answer[..plen].to_vec();
    copy[4..HEADER].copy_from_slice(&request[4..HEADER]);
    let got: [u8; 16] = answer[off..off + 16].try_into().ok()?;
    copy[off..off + 16].fill(0);
    let want = hmac_md5(secret, &copy);
    Some(subtle::ConstantTimeEq::ct_eq(&got[..], &want[..]).into())
}

impl RadiusAuth {
    pub fn new(cfg: RadiusConfig) -> RadiusAuth {
        RadiusAuth { cfg }
    }

    /// Encodes an Access-Request with a Message-Authenticator.
    fn request(&self, user: &str, password: &[u8]) -> Result<Vec<u8>, RadiusError> {
        let secret = self.cfg.secret.as_bytes();
        let mut p = Packet::new(Code::AccessRequest, secret);
        rfc2865::add_user_name(&mut p, user);
        rfc2865::add_user_password(&mut p, password)
            .map_err(|e| RadiusError::Other(format!("password: {e}")))?;
        rfc2865::add_nas_identifier(&mut p, &self.cfg.nas_identifier);
        rfc2869::add_message_authenticator(&mut p, &[0u8; 16]);
        let mut bytes = p
            .encode()
            .map_err(|e| RadiusError::Other(format!("encode: {e}")))?;
        let (off, _) = find_attribute(&bytes, MESSAGE_AUTHENTICATOR)
            .ok_or_else(|| RadiusError::Other("no Message-Authenticator slot".into()))?;
        let mac = hmac_md5(secret, &bytes);
        bytes[off..off + 16].copy_from_slice(&mac);
        Ok(bytes)
    }

    /// `Ok(true)` on Access-Accept, `Ok(false)` on Access-Reject (or a
    /// challenge, which PAP cannot answer).
    pub async fn authenticate(&self, user: &str, password: &[u8]) -> Result<bool, RadiusError> {
        let server = &self.cfg.server;
        let addr: SocketAddr = tokio::net::lookup_host(server)
            .await
            .map_err(|e| RadiusError::Other(format!("resolve {server}: {e}")))?
            .next()
            .ok_or_else(|| RadiusError::Other(format!("resolve {server}: no address")))?;
        let local: SocketAddr = if addr.is_ipv4() {
            (std::net::Ipv4Addr::UNSPECIFIED, 0).into()
        } else {
            (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
        };
        let sock = UdpSocket::bind(local)
            .await
            .map_err(|e| RadiusError::Other(format!("bind: {e}")))?;
        sock.connect(addr)
            .await
            .map_err(|e| RadiusError::Other(format!("connect {addr}: {e}")))?;
        let req = self.request(user, password)?;
        let secret = self.cfg.secret.as_bytes();
        let timeout = self
            .cfg
            .timeout
            .as_duration()
            .max(Duration::from_millis(100));
        let mut buf = vec![0u8; 4096];
        for attempt in 0..=self.cfg.retries {
            if attempt > 0 {
                tracing::warn!(server, attempt, "RADIUS request unanswered, resending");
            }
            sock.send(&req)
                .await
                .map_err(|e| RadiusError::Other(format!("send to {addr}: {e}")))?;
            let deadline = tokio::time::Instant::now() + timeout;
            loop {
                let n = match tokio::time::timeout_at(deadline, sock.recv(&mut buf)).await {
                    Err(_) => break,
                    // ICMP port unreachable shows up as a receive error.
                    Ok(Err(e)) => {
                        tracing::warn!(server, error = %e, "RADIUS receive failed");
                        tokio::time::sleep_until(deadline).await;
                        break;
                    }
                    Ok(Ok(n)) => n,
                };
                let ans = &buf[..n];
                let Some(len) = packet_len(ans) else {
                    tracing::warn!(server, "malformed RADIUS answer ignored");
                    continue;
                };
                let ans = &ans[..len];
                if ans[1] != req[1] {
                    tracing::warn!(server, "RADIUS answer to another request ignored");
                    continue;
                }
                if !Packet::is_authentic_response(ans, &req, secret) {
                    return Err(RadiusError::BadAuthenticator(server.clone()));
                }
                match check_message_authenticator(ans, &req, secret) {
                    Some(true) => {}
                    Some(false) => {
                        return Err(RadiusError::BadMessageAuthenticator(server.clone()))
                    }
                    None if self.cfg.require_message_authenticator => {
                        return Err(RadiusError::BadMessageAuthenticator(server.clone()))
                    }
                    None => {}
                }
                return match ans[0] {
                    ACCESS_ACCEPT => Ok(true),
                    ACCESS_REJECT => Ok(false),
                    ACCESS_CHALLENGE => {
                        tracing::warn!(
                            server,
                            "RADIUS challenge: not supported with PAP, treated as a reject"
                        );
                        Ok(false)
                    }
                    _ => Err(RadiusError::UnexpectedCode {
                        server: server.clone(),
                        code: ans[0],
                    }),
                };
            }
        }
        Err(RadiusError::NoAnswer(server.clone()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Secs;

    fn cfg(server: String, secret: &str) -> RadiusConfig {
        RadiusConfig {
            server,
            secret: secret.into(),
            timeout: Secs(1),
            retries: 0,
            nas_identifier: "t".into(),
            require_message_authenticator: false,
        }
    }

    /// A fake server that answers every request with `code`, signed with
    /// `secret`, optionally with a Message-Authenticator.
    async fn fake(code: u8, secret: &'static str, with_ma: bool) -> String {
        let s = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let addr = s.local_addr().unwrap().to_string();
        tokio::spawn(async move {
            let mut buf = [0u8; 4096];
            while let Ok((n, peer)) = s.recv_from(&mut buf).await {
                let req = &buf[..n];
                // Check the request's Message-Authenticator like a server would.
                let (off, _) = find_attribute(req, MESSAGE_AUTHENTICATOR).unwrap();
                let mut z = req.to_vec();
                z[off..off + 16].fill(0);
                assert_eq!(hmac_md5(b"right", &z), req[off..off + 16]);
                let mut ans = vec![code, req[1], 0, 0];
                ans.extend_from_slice(&req[4..20]);
                if with_ma {
                    ans.extend_from_slice(&[80, 18]);
                    ans.extend_from_slice(&[0; 16]);
                }
                let len = ans.len() as u16;
                ans[2..4].copy_from_slice(&len.to_be_bytes());
                if with_ma {
                    let mac = hmac_md5(secret.as_bytes(), &ans);
                    ans[22..38].copy_from_slice(&mac);
                }
                let auth = crate::md5::md5(&[&ans, secret.as_bytes()]);
                ans[4..20].copy_from_slice(&auth);
                s.send_to(&ans, peer).await.unwrap();
            }
        });
        addr
    }

    #[tokio::test]
    async fn accept_reject_and_wrong_secret() {
        let a = fake(ACCESS_ACCEPT, "right", true).await;
        assert!(RadiusAuth::new(cfg(a, "right"))
            .authenticate("u", b"p")
            .await
            .unwrap());
        let r = fake(ACCESS_REJECT, "right", false).await;
        assert!(!RadiusAuth::new(cfg(r.clone(), "right"))
            .authenticate("u", b"p")
            .await
            .unwrap());
        let mut strict = cfg(r, "right");
        strict.require_message_authenticator = true;
        assert!(matches!(
            RadiusAuth::new(strict).authenticate("u", b"p").await,
            Err(RadiusError::BadMessageAuthenticator(_))
        ));
        // The server signs with another secret than ours.
        let w = fake(ACCESS_REJECT, "other", false).await;
        assert!(matches!(
            RadiusAuth::new(cfg(w, "right"))
                .authenticate("u", b"p")
                .await,
            Err(RadiusError::BadAuthenticator(_))
        ));
        let w = fake(ACCESS_ACCEPT, "other", true).await;
        assert!(RadiusAuth::new(cfg(w, "right"))
            .authenticate("u", b"p")
            .await
            .is_err());
    }

    #[tokio::test]
    async fn silence_is_no_answer() {
        let s = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let a = s.local_addr().unwrap().to_string();
        assert!(matches!(
            RadiusAuth::new(cfg(a, "right"))
                .authenticate("u", b"p")
                .await,
            Err(RadiusError::NoAnswer(_))
        ));
        drop(s);
    }
}
