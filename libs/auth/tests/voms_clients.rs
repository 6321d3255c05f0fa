//! Proxies made by the real `voms-proxy-fake` (Debian's `voms-clients`)
//! through `verify_chain`: accepted and mapped when the vomsdir names the
//! VOMS server, refused for every reason a grid host refuses them.

mod voms_tools;

use std::path::{Path, PathBuf};

use ibp_auth::voms::VomsDir;
use ibp_auth::{verify_chain, AuthError, Identity, ProxyCredential, TrustStore};
use voms_tools::{certdir, fake_proxy, issue, new_ca, write_lsc, CertFiles};

const HOST: &str = "voms.example.org";

struct Pki {
    _tmp: tempfile::TempDir,
    dir: PathBuf,
    ca: CertFiles,
    user: CertFiles,
    voms: CertFiles,
    certdir: PathBuf,
}

fn pki() -> Pki {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().to_path_buf();
    let ca = new_ca(&dir, "ca", "/O=Test Grid/CN=Test CA");
    let user = issue(
        &dir,
        "user",
        "/O=Test Grid/OU=People/CN=Dave",
        &ca,
        "clientAuth",
    );
    let voms = issue(
        &dir,
        "voms",
        &format!("/O=Test Grid/CN={HOST}"),
        &ca,
        "serverAuth,clientAuth",
    );
    let certdir = certdir(&dir, &[&ca.cert]);
    Pki {
        _tmp: tmp,
        dir,
        ca,
        user,
        voms,
        certdir,
    }
}

impl Pki {
    fn proxy(
        &self,
        name: &str,
        voms: &CertFiles,
        vo: &str,
        fqans: &[&str],
        extra: &[&str],
    ) -> ProxyCredential {
        let out = self.dir.join(format!("{name}.proxy"));
        fake_proxy(
            &self.certdir,
            &self.user,
            voms,
            vo,
            HOST,
            fqans,
            extra,
            &out,
        );
        ProxyCredential::load(&out).expect("load the voms-proxy-fake proxy")
    }

    /// A trust store with the test CA and a vomsdir holding what `lsc`
    /// writes into it.
    fn trust(&self, lsc: impl FnOnce(&Path)) -> TrustStore {
        let mut t = TrustStore::new();
        t.add_ca(pem_der(&self.ca.cert)).unwrap();
        let vomsdir = self.dir.join(format!("vomsdir-{}", rand_name()));
        std::fs::create_dir_all(&vomsdir).unwrap();
        lsc(&vomsdir);
        t.set_vomsdir(VomsDir::load(&vomsdir).unwrap());
        t
    }

    fn good_trust(&self) -> TrustStore {
        self.trust(|d| write_lsc(d, "vo1", HOST, &self.voms.cert))
    }
}

fn rand_name() -> String {
    use std::sync::atomic::{AtomicUsize, Ordering};
    static N: AtomicUsize = AtomicUsize::new(0);
    N.fetch_add(1, Ordering::Relaxed).to_string()
}

fn pem_der(path: &Path) -> Vec<u8> {
    ibp_auth::trust::pem_certificates(&std::fs::read(path).unwrap())
        .unwrap()
        .remove(0)
}

fn verify(p: &ProxyCredential, t: &TrustStore) -> Result<Identity, AuthError> {
    verify_chain(&p.chain_der(), t, ibp_auth::unix_now())
}

fn untrusted_why(r: Result<Identity, AuthError>) -> String {
    match r {
        Err(AuthError::UntrustedVomsServer { why, .. }) => why,
        other => panic!("expected an untrusted VOMS server, got {other:?}"),
    }
}

#[test]
fn a_voms_proxy_fake_proxy_is_accepted_and_mapped() {
    let p = pki();
    let proxy = p.proxy(
        "good",
        &p.voms,
        "vo1",
        &[
            "/vo1/Role=NULL/Capability=NULL",
            "/vo1/admins/Role=NULL/Capability=NULL",
            "/vo1/prod/Role=manager/Capability=NULL",
        ],
        &[],
    );
    // An RFC 3820 proxy: a proxy certificate above the user's.
    assert_eq!(proxy.chain.len(), 2, "proxy, then the user certificate");
    let id = verify(&proxy, &p.good_trust()).unwrap();
    assert_eq!(id.vo, "vo1");
    assert!(id.vo_id.starts_with("voms:"), "{}", id.vo_id);
    let names: Vec<&str> = id.groups.iter().map(|g| g.name.as_str()).collect();
    assert_eq!(names, ["admins", "prod", "prod/Role=manager"]);
    assert_eq!(id.scope, ibp_auth::Scope::Full);
    assert!(id.subject.contains("CN=Dave"), "{}", id.subject);
    // -vomslife 2: the AC ends within two hours (and so does the identity).
    assert!(id.not_after <= ibp_auth::unix_now() + 2 * 3600 + 5);
    // A second proxy of the same certificate: the same VO ID.
    let again = p.proxy("again", &p.voms, "vo1", &["/vo1"], &[]);
    assert_eq!(verify(&again, &p.good_trust()).unwrap().vo_id, id.vo_id);
}

#[test]
fn refused_without_a_vomsdir_or_lsc() {
    let p = pki();
    let proxy = p.proxy("p", &p.voms, "vo1", &["/vo1"], &[]);
    let mut plain = TrustStore::new();
    plain.add_ca(pem_der(&p.ca.cert)).unwrap();
    assert_eq!(
        verify(&proxy, &plain).unwrap_err(),
        AuthError::VomsNotAccepted
    );
    // A vomsdir for another VO only.
    let t = p.trust(|d| write_lsc(d, "vo2", HOST, &p.voms.cert));
    assert!(untrusted_why(verify(&proxy, &t)).contains("no vo1/voms.example.org.lsc"));
}

#[test]
fn refused_when_the_lsc_names_another_server() {
    let p = pki();
    let proxy = p.proxy("p", &p.voms, "vo1", &["/vo1"], &[]);
    let other = issue(
        &p.dir,
        "other",
        "/O=Test Grid/CN=voms.other.org",
        &p.ca,
        "serverAuth",
    );
    let t = p.trust(|d| write_lsc(d, "vo1", HOST, &other.cert));
    assert!(untrusted_why(verify(&proxy, &t)).contains("not listed in vo1/voms.example.org.lsc"));
}

#[test]
fn refused_when_the_server_chains_to_an_untrusted_ca() {
    let p = pki();
    // Same DNs as the trusted ones, another key: the .lsc alone cannot tell.
    let rogue_ca = new_ca(&p.dir, "rogue-ca", "/O=Test Grid/CN=Test CA");
    let rogue = issue(
        &p.dir,
        "rogue",
        &format!("/O=Test Grid/CN={HOST}"),
        &rogue_ca,
        "serverAuth",
    );
    let proxy = p.proxy("p", &rogue, "vo1", &["/vo1"], &[]);
    let why = untrusted_why(verify(&proxy, &p.good_trust()));
    assert!(why.contains("does not chain to a trusted CA"), "{why}");
}

#[test]
fn refused_when_the_ac_expired() {
    let p = pki();
    // Valid from two hours ago, for one hour.
    let proxy = p.proxy(
        "p",
        &p.voms,
        "vo1",
        &["/vo1"],
        &["-vomslife", "1", "-pastac", "2:00"],
    );
    match verify(&proxy, &p.good_trust()) {
        Err(AuthError::Expired { what, .. }) => assert_eq!(what, "VOMS attribute certificate"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn refused_with_an_fqan_of_another_vo() {
    let p = pki();
    let proxy = p.proxy("p", &p.voms, "vo1", &["/vo1", "/vo2/admins"], &[]);
    match verify(&proxy, &p.good_trust()) {
        Err(AuthError::Voms(m)) => assert!(m.contains("is for VO \"vo2\""), "{m}"),
        other => panic!("{other:?}"),
    }
}

/// The VOMS extension value of a proxy's leaf.
fn voms_extension(p: &ProxyCredential) -> Vec<u8> {
    let (_, leaf) = x509_parser::parse_x509_certificate(&p.chain[0]).unwrap();
    let oid = ibp_auth::oids::oid_bytes(ibp_auth::voms::VOMS_EXTENSION);
    leaf.extensions()
        .iter()
        .find(|e| e.oid.as_bytes() == oid.as_slice())
        .expect("a VOMS extension")
        .value
        .to_vec()
}

/// A proxy of `user` carrying `ext` as its VOMS extension.
fn proxy_with(user: &CertFiles, ext: &[u8]) -> ProxyCredential {
    let cert = pem_der(&user.cert);
    let key = pem::parse(std::fs::read(&user.key).unwrap()).unwrap();
    assert_eq!(key.tag(), "PRIVATE KEY", "openssl writes PKCS#8");
    ProxyCredential::create_with_extensions(
        &[cert],
        key.contents(),
        &ibp_auth::proxy::ProxyOptions {
            lifetime: 3600,
            attributes: None,
            path_len: None,
        },
        &[(ibp_auth::voms::VOMS_EXTENSION, ext)],
    )
    .unwrap()
}

#[test]
fn refused_for_another_holder_or_a_bad_signature() {
    let p = pki();
    let dave = p.proxy("p", &p.voms, "vo1", &["/vo1"], &[]);
    let ext = voms_extension(&dave);
    // The same AC, re-carried by a proxy of Dave's own certificate: fine.
    verify(&proxy_with(&p.user, &ext), &p.good_trust()).expect("Dave's AC in Dave's proxy");
    // Carried by a proxy of Erin's certificate: another holder.
    let erin = issue(
        &p.dir,
        "erin",
        "/O=Test Grid/OU=People/CN=Erin",
        &p.ca,
        "clientAuth",
    );
    assert_eq!(
        verify(&proxy_with(&erin, &ext), &p.good_trust()).unwrap_err(),
        AuthError::WrongHolder
    );
    // One bit of the AC's signature flipped (its last bytes).
    let mut bad = ext.clone();
    let n = bad.len();
    bad[n - 3] ^= 0x10;
    assert_eq!(
        verify(&proxy_with(&p.user, &bad), &p.good_trust()).unwrap_err(),
        AuthError::BadSignature {
            what: "VOMS attribute certificate"
        }
    );
}
