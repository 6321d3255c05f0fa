//! rustls configurations (ring provider, TLS 1.3 only) for services that
//! accept proxy chains and for clients that present them.

use std::sync::Arc;

use rustls::client::danger::HandshakeSignatureValid;
use rustls::client::ResolvesClientCert;
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::sign::CertifiedKey;
use rustls::{DigitallySignedStruct, DistinguishedName, SignatureScheme};
use rustls_pki_types::{
    CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, SubjectPublicKeyInfoDer, UnixTime,
};

use crate::verify::{verify_certificates, verify_chain, Identity};
use crate::{AuthError, ProxyCredential, TrustStore};

/// The crypto provider every config uses.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn tls_err(e: AuthError) -> rustls::Error {
    rustls::Error::InvalidCertificate(rustls::CertificateError::Other(rustls::OtherError(
        Arc::new(e),
    )))
}

/// Whether a service demands a client certificate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientAuth {
    Required,
    Optional,
}

/// Accepts client chains that start with RFC 3820 proxies: the proxies are
/// checked by [`verify_certificates`], the rest by webpki. VO attributes are
/// checked after the handshake by [`peer_identity`].
#[derive(Debug)]
pub struct ProxyClientVerifier {
    trust: Arc<TrustStore>,
    hints: Vec<DistinguishedName>,
    algs: WebPkiSupportedAlgorithms,
    mandatory: bool,
}

impl ProxyClientVerifier {
    pub fn new(trust: Arc<TrustStore>, auth: ClientAuth) -> ProxyClientVerifier {
        let hints = trust
            .ca_certificates()
            .iter()
            .filter_map(|c| {
                x509_parser::parse_x509_certificate(c.as_ref())
                    .ok()
                    .map(|(_, c)| DistinguishedName::from(c.subject().as_raw().to_vec()))
            })
            .collect();
        ProxyClientVerifier {
            trust,
            hints,
            algs: rustls::crypto::ring::default_provider().signature_verification_algorithms,
            mandatory: auth == ClientAuth::Required,
        }
    }
}

/// The leaf's SubjectPublicKeyInfo, read without webpki (which refuses to
/// parse a proxy: its critical ProxyCertInfo is unknown to it).
fn leaf_spki(cert: &CertificateDer<'_>) -> Result<SubjectPublicKeyInfoDer<'static>, rustls::Error> {
    let (_, c) = x509_parser::parse_x509_certificate(cert.as_ref())
        .map_err(|_| rustls::Error::InvalidCertificate(rustls::CertificateError::BadEncoding))?;
    Ok(SubjectPublicKeyInfoDer::from(c.public_key().raw.to_vec()))
}

impl ClientCertVerifier for ProxyClientVerifier {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &self.hints
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        let mut chain = Vec::with_capacity(intermediates.len() + 1);
        chain.push(end_entity.clone());
        chain.extend(intermediates.iter().cloned());
        verify_certificates(&chain, &self.trust, now.as_secs() as i64).map_err(tls_err)?;
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Err(rustls::Error::PeerIncompatible(
            rustls::PeerIncompatible::Tls12NotOffered,
        ))
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature_with_raw_key(
            message,
            &leaf_spki(cert)?,
            dss,
            &self.algs,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algs.supported_schemes()
    }

    fn client_auth_mandatory(&self) -> bool {
        self.mandatory
    }
}

/// The TLS configuration of an HTTPS service (the L-Bone, the metadata
/// manager, the online CA): [`server_config`] with client certificates
/// optional, so that a client without one gets a clear 401 from the
/// service instead of a TLS alert, and ALPN `http/1.1`.
pub fn https_server_config(
    trust: &TrustStore,
    chain: Vec<CertificateDer<'static>>,
    key_pkcs8: Vec<u8>,
) -> Result<rustls::ServerConfig, rustls::Error> {
    let mut cfg = server_config(
        Arc::new(trust.clone()),
        chain,
        key_pkcs8,
        ClientAuth::Optional,
    )?;
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(cfg)
}

/// A service's TLS 1.3 configuration: its own certificate chain and key
/// (PKCS#8), and client proxy chains verified against `trust`.
pub fn server_config(
    trust: Arc<TrustStore>,
    chain: Vec<CertificateDer<'static>>,
    key_pkcs8: Vec<u8>,
    auth: ClientAuth,
) -> Result<rustls::ServerConfig, rustls::Error> {
    let verifier = ProxyClientVerifier::new(trust, auth);
    rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_client_cert_verifier(Arc::new(verifier))
        .with_single_cert(
            chain,
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key_pkcs8)),
        )
}

/// Presents a proxy chain without rustls's key/certificate consistency
/// check (which parses the leaf with webpki and so fails on proxies).
#[derive(Debug)]
struct ProxyResolver(Arc<CertifiedKey>);

impl ResolvesClientCert for ProxyResolver {
    fn resolve(&self, _hints: &[&[u8]], _schemes: &[SignatureScheme]) -> Option<Arc<CertifiedKey>> {
        Some(self.0.clone())
    }

    fn has_certs(&self) -> bool {
        true
    }
}

/// The start of a client's TLS 1.3 configuration: servers verified
/// against the CAs of `trust` by host name, and against its revocation
/// lists (`ca/*.crl`) with the rules of [`crate::verify`]: every
/// certificate of the chain is checked, unknown status is allowed, an
/// outdated list still revokes what it lists.
pub fn verifying_servers(
    trust: &TrustStore,
) -> Result<
    rustls::ConfigBuilder<rustls::ClientConfig, rustls::client::WantsClientCert>,
    rustls::Error,
> {
    let mut roots = rustls::RootCertStore::empty();
    for c in trust.ca_certificates() {
        roots.add(c.clone())?;
    }
    let p = provider();
    let builder = rustls::ClientConfig::builder_with_provider(p.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])?;
    if trust.crl_ders().is_empty() {
        return Ok(builder.with_root_certificates(roots));
    }
    let verifier = rustls::client::WebPkiServerVerifier::builder_with_provider(Arc::new(roots), p)
        .with_crls(trust.crl_ders().iter().cloned())
        .allow_unknown_revocation_status()
        .build()
        .map_err(|e| rustls::Error::General(format!("revocation lists: {e}")))?;
    Ok(builder.with_webpki_verifier(verifier))
}

/// A client's TLS 1.3 configuration: servers verified as
/// [`verifying_servers`] does, and the proxy credential presented if given.
pub fn client_config(
    trust: &TrustStore,
    credential: Option<&ProxyCredential>,
) -> Result<rustls::ClientConfig, rustls::Error> {
    let p = provider();
    let builder = verifying_servers(trust)?;
    Ok(match credential {
        None => builder.with_no_client_auth(),
        Some(cred) => {
            let key =
                p.key_provider
                    .load_private_key(PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(
                        cred.key_pkcs8.clone(),
                    )))?;
            let certified = CertifiedKey::new(cred.chain_der(), key);
            builder.with_client_cert_resolver(Arc::new(ProxyResolver(Arc::new(certified))))
        }
    })
}

/// The verified identity (with VO attributes) of a TLS peer, or `None` when
/// it presented no certificate.
pub fn peer_identity(
    peer_certificates: Option<&[CertificateDer<'_>]>,
    trust: &TrustStore,
    now: i64,
) -> Result<Option<Identity>, AuthError> {
    match peer_certificates {
        None | Some([]) => Ok(None),
        Some(chain) => verify_chain(chain, trust, now).map(Some),
    }
}

/// A client configuration that accepts any server certificate (the
/// handshake signatures are still checked). Only for the first fetch of
/// an online CA's `/v1/trust`, whose answer counts only through a CA
/// certificate fingerprint pinned out of band (`lors trust fetch`,
/// `online-ca host-cert trust`); never for anything else.
pub fn unverified_server_config() -> Result<rustls::ClientConfig, rustls::Error> {
    let p = provider();
    Ok(rustls::ClientConfig::builder_with_provider(p.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnyServer(p)))
        .with_no_client_auth())
}

/// See [`unverified_server_config`].
#[derive(Debug)]
struct AnyServer(Arc<CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for AnyServer {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &rustls_pki_types::ServerName<'_>,
        _ocsp_response: &[u8],
        _now: rustls_pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
