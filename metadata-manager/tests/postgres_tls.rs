//! The services reach PostgreSQL over TLS when the database URL asks for
//! it (`sslmode=verify-full&sslrootcert=...`, the libpq parameters): the
//! server's certificate is checked against the given CA and the host
//! name, the session is encrypted (PostgreSQL's `pg_stat_ssl` says so),
//! and a server whose certificate another CA issued is refused before
//! anything is sent. Without TLS the database link would carry the
//! capabilities of every exNode in clear.

use ibp_auth::pki::Authority;
use ibp_testkit::pg::PgCluster;
use ibp_testkit::pki::pem_of;
use metadata_manager::store::{Limits, Store};
use sqlx::Row;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_database_link_is_tls_when_the_url_asks_and_the_server_is_checked() {
    let ca = Authority::new_ca("Test Grid", "Database CA", 30).expect("CA");
    let server = ca.issue_server(&["localhost"], 30).expect("server cert");
    let pg = PgCluster::start_with_tls(
        &pem_of("CERTIFICATE", &server.cert_der),
        &pem_of("PRIVATE KEY", &server.key_pkcs8),
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path().join("db-ca.pem");
    std::fs::write(&root, pem_of("CERTIFICATE", &ca.cert_der)).expect("write CA");
    let url = format!(
        "postgres://postgres@localhost:{}/postgres?sslmode=verify-full&sslrootcert={}",
        pg.port,
        root.display()
    );

    // The store opens (migrates) over TLS, and the session is encrypted.
    Store::open(&url, 2, Limits::default())
        .await
        .expect("the store over TLS");
    let (pool, _) = ibp_service::db::connect(&url, 1).await.expect("connect");
    let row = sqlx::query("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
        .fetch_one(&pool)
        .await
        .expect("pg_stat_ssl");
    let ssl: bool = row.try_get("ssl").expect("ssl column");
    assert!(ssl, "the session is not encrypted");
    pool.close().await;

    // A server certificate from another CA: refused.
    let other = Authority::new_ca("Test Grid", "Another CA", 30).expect("CA");
    let wrong_root = dir.path().join("other-ca.pem");
    std::fs::write(&wrong_root, pem_of("CERTIFICATE", &other.cert_der)).expect("write");
    let wrong = format!(
        "postgres://postgres@localhost:{}/postgres?sslmode=verify-full&sslrootcert={}",
        pg.port,
        wrong_root.display()
    );
    let e = ibp_service::db::connect(&wrong, 1)
        .await
        .expect_err("a server certificate of another CA is refused");
    let msg = format!("{:#}", anyhow::Error::from(e));
    assert!(
        msg.to_lowercase().contains("certificate") || msg.to_lowercase().contains("tls"),
        "{msg}"
    );

    // The wrong host name (the certificate is for localhost): refused.
    let by_address = format!(
        "postgres://postgres@127.0.0.1:{}/postgres?sslmode=verify-full&sslrootcert={}",
        pg.port,
        root.display()
    );
    assert!(
        ibp_service::db::connect(&by_address, 1).await.is_err(),
        "a certificate for another name is refused"
    );
}
