use thiserror::Error;

/// Every way a credential or token can be refused. Messages name the reason
/// without echoing secrets.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum AuthError {
    #[error("malformed {what}: {why}")]
    Malformed { what: &'static str, why: String },
    #[error("{what} expired at {at} (now {now})")]
    Expired {
        what: &'static str,
        at: i64,
        now: i64,
    },
    #[error(
        "{what} is not valid before {at} (now {now}); check for clock skew between the machines"
    )]
    NotYetValid {
        what: &'static str,
        at: i64,
        now: i64,
    },
    #[error("{what}: signature does not verify")]
    BadSignature { what: &'static str },
    #[error("proxy certificate rejected: {0}")]
    Proxy(String),
    #[error("certificate chain rejected: {0}")]
    Chain(String),
    #[error("no VO attributes in the credential")]
    NoAttributes,
    #[error("VO attributes for {vo:?} are signed by an authority not trusted for that VO")]
    UntrustedAttributeAuthority { vo: String },
    #[error("VO attributes are bound to another certificate")]
    WrongHolder,
    #[error("the credential carries a VOMS attribute certificate, but this service accepts none (no `vomsdir` configured)")]
    VomsNotAccepted,
    #[error("VOMS attribute certificate for VO {vo:?} from {host}: server not trusted: {why}")]
    UntrustedVomsServer {
        vo: String,
        host: String,
        why: String,
    },
    #[error("VOMS attributes refused: {0}")]
    Voms(String),
    #[error("the VO attributes for {vo:?} in this credential were refused: {why}")]
    VoRefused { vo: String, why: Box<AuthError> },
    #[error("the credential carries no VO attributes for {vo:?} (it carries {carried})")]
    VoNotCarried { vo: String, carried: String },
    #[error("token signed by an unknown key")]
    UnknownSigner,
    #[error("token is for {what} {found:?}, not {expected:?}")]
    WrongTarget {
        what: &'static str,
        found: String,
        expected: String,
    },
    #[error("token is bound to another key than the connection's")]
    WrongTokenHolder,
    #[error("{0}")]
    Io(String),
}

impl AuthError {
    pub(crate) fn malformed(what: &'static str, why: impl std::fmt::Display) -> AuthError {
        AuthError::Malformed {
            what,
            why: why.to_string(),
        }
    }
}
