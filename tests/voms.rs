//! Standard VOMS proxies at every service of a real grid: a proxy made by
//! the real `voms-proxy-fake` (Debian's `voms-clients`) for a user
//! certificate of a test CA, carrying an AC signed by a VOMS host
//! certificate of that CA, is accepted by the metadata manager (whoami,
//! mkdir, put), the L-Bone (depot query, grants) and the depots (AUTH,
//! ALLOCATE, STORE, LOAD) of a grid whose services have a `vomsdir`
//! listing that VOMS server (docs/identity.md, "VOMS credentials"); a
//! proxy from a VOMS server the vomsdir does not list is refused by each
//! of them, saying why.

mod common;
#[path = "../libs/auth/tests/voms_tools/mod.rs"]
mod voms_tools;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::{bytes, s, text, write};
use ibp_auth::tokens::DepotGrant;
use ibp_auth::{ProxyCredential, TrustStore};
use ibp_depot_client::SecureClient;
use ibp_grid::grid::{Grid, GridOptions};
use voms_tools::{certdir, fake_proxy, issue, new_ca, write_lsc, CertFiles};

const HOST: &str = "voms.example.org";

/// A grid whose services take VOMS ACs from `HOST` for vo1, and the test
/// PKI: its CA, a user certificate (Dave) and the VOMS host certificate.
struct VomsGrid {
    g: Grid,
    _tmp: tempfile::TempDir,
    dir: PathBuf,
    ca: CertFiles,
    user: CertFiles,
    voms: CertFiles,
    certdir: PathBuf,
}

fn voms_grid() -> VomsGrid {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().to_path_buf();
    let ca = new_ca(&dir, "ca", "/O=VOMS Test/CN=VOMS Test CA");
    let user = issue(
        &dir,
        "dave",
        "/O=VOMS Test/OU=People/CN=Dave",
        &ca,
        "clientAuth",
    );
    let voms = issue(
        &dir,
        "voms",
        &format!("/O=VOMS Test/CN={HOST}"),
        &ca,
        "serverAuth,clientAuth",
    );
    let vomsdir = dir.join("vomsdir");
    write_lsc(&vomsdir, "vo1", HOST, &voms.cert);
    let certdir = certdir(&dir, &[&ca.cert]);
    let g = common::start(GridOptions {
        depots: 2,
        users: vec!["alice".into()],
        vomsdir: Some(vomsdir),
        extra_cas: vec![ca.cert.clone()],
        ..Default::default()
    });
    VomsGrid {
        g,
        _tmp: tmp,
        dir,
        ca,
        user,
        voms,
        certdir,
    }
}

impl VomsGrid {
    /// A `voms-proxy-fake` proxy of Dave's certificate, AC from `voms`.
    fn proxy(&self, name: &str, voms: &CertFiles, fqans: &[&str]) -> PathBuf {
        let out = self.dir.join(format!("{name}.proxy"));
        fake_proxy(
            &self.certdir,
            &self.user,
            voms,
            "vo1",
            HOST,
            fqans,
            &[],
            &out,
        )
    }

    /// `lors` as alice's environment, but with the proxy `proxy` and a key
    /// file of its own.
    fn lors_cmd(&self, proxy: &Path, args: &[&str]) -> Command {
        let mut c = self.g.lors("alice");
        c.env("X509_USER_PROXY", proxy)
            .env("LORS_KEY_FILE", self.dir.join("dave.key.lors"))
            .args(args);
        c
    }

    fn lors(&self, proxy: &Path, args: &[&str]) -> Output {
        common::run_limited(
            self.lors_cmd(proxy, args),
            std::time::Duration::from_secs(120),
        )
    }

    #[track_caller]
    fn ok(&self, proxy: &Path, args: &[&str]) -> String {
        common::ok(self.lors(proxy, args))
    }

    /// Straight to depot 0's TLS port with `proxy`: AUTH with a grant for
    /// the proxy's key and `vo_id` signed by the grid's L-Bone key (what
    /// the L-Bone would sign), then QUOTA, an authenticated operation.
    fn depot_auth(&self, proxy: &Path, vo_id: &str) -> Result<(), String> {
        let cred = ProxyCredential::load(proxy).map_err(|e| e.to_string())?;
        let trust = TrustStore::load(&self.g.trust_dir).map_err(|e| e.to_string())?;
        let key = ibp_auth::keys::load_signing_key(&self.g.dir.join("lbone/lbone.key"))
            .map_err(|e| e.to_string())?;
        let addr = self.g.depots[0].tls_addr.clone().expect("a TLS depot");
        let now = ibp_auth::unix_now();
        let grant = DepotGrant {
            depot: addr.clone(),
            vo: "vo1".into(),
            vo_id: vo_id.into(),
            holder: cred.key_hash().map_err(|e| e.to_string())?,
            issued: now,
            not_after: now + 600,
        }
        .sign(&key);
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| e.to_string())?;
        rt.block_on(async {
            let mut c = SecureClient::connect(&addr, "127.0.0.1", &trust, &cred)
                .await
                .map_err(|e| format!("connect: {e}"))?;
            c.auth(&grant).await.map_err(|e| format!("AUTH: {e}"))?;
            c.quota().await.map_err(|e| format!("QUOTA: {e}"))?;
            Ok(())
        })
    }
}

#[test]
fn a_voms_proxy_is_served_by_every_service() {
    let v = voms_grid();
    let proxy = v.proxy(
        "dave",
        &v.voms,
        &[
            "/vo1/Role=NULL/Capability=NULL",
            "/vo1/prod/Role=NULL/Capability=NULL",
        ],
    );

    // The proxy `voms-proxy-fake -rfc` made is an RFC 3820 proxy (critical
    // ProxyCertInfo, signed by Dave's certificate).
    let info = Command::new("openssl")
        .args(["x509", "-noout", "-text", "-in"])
        .arg(&proxy)
        .output()
        .unwrap();
    let info = String::from_utf8_lossy(&info.stdout);
    assert!(
        info.contains("Proxy Certificate Information: critical"),
        "{info}"
    );
    assert!(
        info.contains("1.3.6.1.4.1.8005.100.100.5"),
        "no VOMS extension: {info}"
    );

    // Metadata manager: who Dave is, from the AC.
    let who: serde_json::Value =
        serde_json::from_str(&v.ok(&proxy, &["whoami", "--json"])).unwrap();
    assert_eq!(who["vo"], "vo1", "{who}");
    let vo_id = who["vo_id"].as_str().unwrap().to_owned();
    assert!(vo_id.starts_with("voms:") && vo_id.len() == 37, "{who}");
    assert_eq!(who["admin"], false, "{who}");
    assert!(
        who["subject"].as_str().unwrap().contains("CN=Dave"),
        "{who}"
    );
    let groups: Vec<(&str, &str)> = who["groups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| (g["id"].as_str().unwrap(), g["name"].as_str().unwrap()))
        .collect();
    assert_eq!(groups, [("fqan:prod", "prod")], "{who}");
    // `lors proxy-info` reads the same from the AC (not verifying it: the
    // client has no vomsdir).
    let o = v.lors(&proxy, &["proxy-info", "--json"]);
    let info: serde_json::Value = serde_json::from_str(&common::stdout(&o))
        .unwrap_or_else(|e| panic!("proxy-info --json ({e}): {}", text(&o)));
    assert_eq!(info["vo"], "vo1", "{info}");
    assert_eq!(info["vo_id"], vo_id.as_str(), "{info}");
    assert_eq!(
        common::code(&o),
        1,
        "unverifiable without a vomsdir: {}",
        text(&o)
    );
    assert!(text(&o).contains("no `vomsdir` configured"), "{}", text(&o));
    // With the grid's vomsdir in X509_VOMS_DIR it verifies.
    let mut c = v.lors_cmd(&proxy, &["proxy-info"]);
    c.env("X509_VOMS_DIR", v.dir.join("vomsdir"));
    let o = common::run_limited(c, std::time::Duration::from_secs(60));
    assert_eq!(common::code(&o), 0, "{}", text(&o));

    // L-Bone: the depot query answers with the grid's depots.
    let depots = v.ok(&proxy, &["depots", "--json"]);
    for d in &v.g.depots {
        let addr = d.tls_addr.as_deref().expect("a TLS depot");
        assert!(depots.contains(addr), "depot {addr} missing from {depots}");
    }

    // Depots (grants from the L-Bone, AUTH with the VOMS proxy, ALLOCATE,
    // STORE) and the metadata manager (mkdir, put), then LOAD back.
    v.ok(&proxy, &["keys", "init"]);
    v.ok(&proxy, &["mkdir", "/vo1/dave"]);
    let data = bytes(300_000, 21);
    let src = write(&v.dir, "f", &data);
    v.ok(&proxy, &["upload", s(&src), "/vo1/dave/f", "--copies", "2"]);
    let st: serde_json::Value =
        serde_json::from_str(&v.ok(&proxy, &["stat", "--mappings", "--json", "/vo1/dave/f"]))
            .unwrap();
    let on: Vec<String> = common::mappings(&st)
        .iter()
        .map(|m| m["depot"].as_str().unwrap_or("").to_owned())
        .collect();
    assert_eq!(on.len(), 2, "{st}");
    assert_ne!(on[0], on[1], "two copies on two depots: {st}");
    let out = v.dir.join("f.back");
    v.ok(&proxy, &["download", "/vo1/dave/f", s(&out)]);
    assert!(
        std::fs::read(&out).unwrap() == data,
        "the bytes read back differ"
    );
    // Straight at a depot: AUTH and QUOTA.
    v.depot_auth(&proxy, &vo_id)
        .expect("AUTH with the VOMS proxy");
    // Every depot holds data from Dave's upload.
    for (i, _) in v.g.depots.iter().enumerate() {
        assert!(
            common::depot_data_bytes(&v.g, i) > 0,
            "depot {i} holds nothing"
        );
    }

    // A second proxy of the same certificate is the same member: same VO
    // ID, and the key `keys init` registered above.
    let who: serde_json::Value =
        serde_json::from_str(&v.ok(&proxy, &["whoami", "--json"])).unwrap();
    assert!(who["public_key"].is_string(), "{who}");
    let again = v.proxy("dave2", &v.voms, &["/vo1"]);
    let who2: serde_json::Value =
        serde_json::from_str(&v.ok(&again, &["whoami", "--json"])).unwrap();
    assert_eq!(who2["vo_id"], vo_id.as_str());
    assert_eq!(who2["public_key"], who["public_key"]);
    // It reads the file too.
    let out2 = v.dir.join("f.again");
    v.ok(&again, &["download", "/vo1/dave/f", s(&out2)]);
    assert!(
        std::fs::read(&out2).unwrap() == data,
        "the bytes read back differ"
    );
}

#[test]
fn a_voms_server_not_in_the_vomsdir_is_refused_everywhere() {
    let v = voms_grid();
    // A host certificate of the same trusted CA, named as the trusted
    // server's host in its ACs, but not the certificate the .lsc lists.
    let rogue = issue(
        &v.dir,
        "rogue",
        "/O=VOMS Test/CN=voms.rogue.org",
        &v.ca,
        "serverAuth",
    );
    let proxy = v.proxy("rogue", &rogue, &["/vo1/admins"]);
    let good = v.proxy("good", &v.voms, &["/vo1"]);
    v.ok(&good, &["keys", "init"]);

    // lors proxy-info against the vomsdir: refused the same way.
    let mut c = v.lors_cmd(&proxy, &["proxy-info"]);
    c.env("X509_VOMS_DIR", v.dir.join("vomsdir"));
    let o = common::run_limited(c, std::time::Duration::from_secs(60));
    assert_eq!(common::code(&o), 1, "{}", text(&o));
    assert!(
        text(&o).contains("not listed in vo1/voms.example.org.lsc"),
        "{}",
        text(&o)
    );
    // Metadata manager.
    let o = v.lors(&proxy, &["whoami"]);
    assert!(!o.status.success(), "{}", text(&o));
    assert!(
        text(&o).contains("not listed in vo1/voms.example.org.lsc"),
        "{}",
        text(&o)
    );
    // L-Bone.
    let o = v.lors(&proxy, &["depots"]);
    assert!(!o.status.success(), "{}", text(&o));
    assert!(
        text(&o).contains("not listed in vo1/voms.example.org.lsc"),
        "{}",
        text(&o)
    );
    // A depot: AUTH with a validly signed grant for the proxy's key and
    // Dave's VO ID is refused, naming the reason; the trusted proxy passes.
    let who: serde_json::Value = serde_json::from_str(&v.ok(&good, &["whoami", "--json"])).unwrap();
    let vo_id = who["vo_id"].as_str().unwrap();
    v.depot_auth(&good, vo_id)
        .expect("AUTH with the trusted VOMS proxy");
    let err = v.depot_auth(&proxy, vo_id).unwrap_err();
    assert!(
        err.contains("AUTH") && err.contains("not listed in vo1/voms.example.org.lsc"),
        "{err}"
    );
    // And so an upload fails, at its first service.
    let src = write(&v.dir, "g", &bytes(1000, 3));
    let o = v.lors(&proxy, &["upload", s(&src), "/vo1/g"]);
    assert!(!o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("not listed"), "{}", text(&o));
}

/// The online CA with `voms_uri`: a `lors login` proxy carries a standard
/// VOMS AC too, which the real `voms-proxy-info --all` reads (VO, FQANs,
/// issuer, URI), which our own VOMS verifier accepts with the same groups,
/// and which changes nothing for the services (the attribute extension
/// still decides: same VO ID as the login's).
///
/// That grid's services have no vomsdir: a `voms-proxy-fake` proxy (of a
/// user of a CA they trust) is refused, saying so.
#[test]
fn voms_proxy_info_reads_a_lors_login_proxy() {
    let tmp = tempfile::tempdir().unwrap();
    let ca = new_ca(tmp.path(), "ca", "/O=VOMS Test/CN=VOMS Test CA");
    let g = common::start(GridOptions {
        depots: 0,
        users: vec!["alice".into()],
        ca_voms_uri: Some("ca.grid.test:15000".into()),
        extra_cas: vec![ca.cert.clone()],
        ..Default::default()
    });
    let aa = g.trust_dir.join("vomsdir/vo1/aa.pem");
    let vomsdir = tmp.path().join("vomsdir");
    write_lsc(&vomsdir, "vo1", "ca.grid.test", &aa);
    let certs = certdir(tmp.path(), &[&g.trust_dir.join("ca/ca.pem")]);
    let proxy = g.proxy("alice");

    let o = Command::new("voms-proxy-info")
        .args(["-all", "-file"])
        .arg(&proxy)
        .env("X509_CERT_DIR", &certs)
        .env("X509_VOMS_DIR", &vomsdir)
        .output()
        .expect("voms-proxy-info (scripts/test installs voms-clients)");
    let out = text(&o);
    assert!(o.status.success(), "{out}");
    for want in [
        "=== VO vo1 extension information ===",
        "VO        : vo1",
        "attribute : /vo1/admins",
        "uri       : ca.grid.test:15000",
        "issuer    : /O=Test Grid/CN=vo1 attribute authority",
    ] {
        assert!(out.contains(want), "no {want:?} in:\n{out}");
    }

    // Our verifier reads the same AC: VO vo1, group admins.
    let cred = ProxyCredential::load(&proxy).unwrap();
    let mut trust = TrustStore::load(&g.trust_dir).unwrap();
    trust.load_vomsdir(&vomsdir).unwrap();
    let a =
        ibp_auth::voms::verify_in_chain(&cred.chain_der(), &trust, ibp_auth::unix_now()).unwrap();
    assert_eq!(a.vo, "vo1");
    assert_eq!(a.fqans, ["/vo1", "/vo1/admins"]);
    let names: Vec<&str> = a.groups.iter().map(|g| g.name.as_str()).collect();
    assert_eq!(names, ["admins"]);

    // The services still go by the attribute extension.
    let who: serde_json::Value = serde_json::from_str(&common::ok(common::lors(
        &g,
        "alice",
        &["whoami", "--json"],
    )))
    .unwrap();
    assert_eq!(who["vo_id"], g.user("alice").vo_id.as_str(), "{who}");
    assert_eq!(who["admin"], true, "{who}");

    // No vomsdir at the metadata manager: a VOMS-only proxy is refused.
    let user = issue(
        tmp.path(),
        "dave",
        "/O=VOMS Test/CN=Dave",
        &ca,
        "clientAuth",
    );
    let voms = issue(
        tmp.path(),
        "voms",
        &format!("/O=VOMS Test/CN={HOST}"),
        &ca,
        "serverAuth",
    );
    let certs = certdir(tmp.path(), &[&ca.cert]);
    let dave = tmp.path().join("dave.proxy");
    fake_proxy(&certs, &user, &voms, "vo1", HOST, &["/vo1"], &[], &dave);
    let mut c = common::lors_cmd(&g, "alice", &["whoami"]);
    c.env("X509_USER_PROXY", &dave);
    let o = common::run_limited(c, std::time::Duration::from_secs(60));
    assert!(!o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("no `vomsdir` configured"), "{}", text(&o));
}
