//! The configuration files of the grid's daemons, as an operator would
//! write them: every daemon listens on `127.0.0.1:0`; the port it got is
//! written back once it listens, so a restart binds the same one.

use std::path::{Path, PathBuf};

use super::files::{toml_path, write_file, write_secret};
use super::netns::{self, Role};
use super::pki::Issuer;
use super::{GridOptions, Layout, ADMIN_GROUP, ORG, VO};

/// The online CA's `config.toml` (local users from `users`; vo1
/// pseudonymous if asked).
pub(super) fn write_ca(l: &Layout, opts: &GridOptions) -> anyhow::Result<PathBuf> {
    let config = l.ca.join("config.toml");
    let voms = opts
        .ca_voms_uri
        .as_ref()
        .map_or(String::new(), |u| format!("voms_uri = {u:?}\n"));
    write_file(
        &config,
        &format!(
            "listen = \"{}\"\nmetrics_listen = \"127.0.0.1:0\"\ndir = {}\norg = {ORG:?}\n{voms}\n[local]\nusers_file = \"users\"\n\n[vos.{VO}]\npseudonymous = {}\n",
            l.listen(netns::CA_PORT),
            toml_path(&l.ca),
            opts.pseudonymous
        ),
    )?;
    Ok(config)
}

/// The online CA's users file (`name:<argon2id PHC>` lines).
pub(super) fn write_users_file(l: &Layout, users_file: &str) -> anyhow::Result<()> {
    write_secret(&l.ca.join("users"), users_file)
}

/// The L-Bone's `lbone.toml`, with its server certificate.
pub(super) fn write_lbone(
    l: &Layout,
    issuer: &Issuer,
    opts: &GridOptions,
) -> anyhow::Result<PathBuf> {
    let (cert, key) = issuer.server_cert("lbone", &l.lbone, &l.cert_names(Role::Lbone))?;
    let config = l.lbone.join("lbone.toml");
    write_file(
        &config,
        &(format!(
            "listen = \"{}\"\nmetrics_listen = \"127.0.0.1:0\"\nserver_cert = {}\nserver_key = {}\ntrust_dir = {}\nsigning_key = \"lbone.key\"\npoll_interval = \"{}ms\"\npoll_timeout = \"2s\"\nmissed_polls_down = 2\ngrant_lifetime = \"10m\"\nadmin_group = \"{ADMIN_GROUP}\"\n",
            l.listen(netns::LBONE_PORT),
            toml_path(&cert),
            toml_path(&key),
            toml_path(&l.trust),
            opts.lbone_poll_interval.as_millis().max(100),
        ) + &vomsdir_line(opts)),
    )?;
    Ok(config)
}

/// Metadata-manager replica `i`'s `metadata.toml` in `dir` (the first
/// replica's or another's), with its server certificate and the grid's
/// database.
pub(super) fn write_mdm(
    i: usize,
    dir: &Path,
    l: &Layout,
    issuer: &Issuer,
    opts: &GridOptions,
) -> anyhow::Result<PathBuf> {
    let (cert, key) = issuer.server_cert("metadata-manager", dir, &l.cert_names(Role::Mdm(i)))?;
    let config = dir.join("metadata.toml");
    let mut text = format!(
        "listen = \"{}\"\nmetrics_listen = \"127.0.0.1:0\"\nserver_cert = {}\nserver_key = {}\ntrust_dir = {}\nsigning_key = \"metadata.key\"\nticket_lifetime = \"10m\"\nadmin_group = \"{ADMIN_GROUP}\"\n",
        l.listen(netns::MDM_PORT),
        toml_path(&cert),
        toml_path(&key),
        toml_path(&l.trust),
    ) + &vomsdir_line(opts);
    if let Some(db) = &opts.mdm_database {
        text.push_str(&format!("database = {db:?}\n"));
    }
    write_file(&config, &text)?;
    Ok(config)
}

/// `vomsdir = ...` when the grid has one ([`GridOptions::vomsdir`]).
fn vomsdir_line(opts: &GridOptions) -> String {
    opts.vomsdir
        .as_ref()
        .map_or(String::new(), |d| format!("vomsdir = {}\n", toml_path(d)))
}

/// Depot `i`'s `depot.toml` in `ddir` (with its server certificate unless
/// `legacy_only`), one resource in `data_dir`.
pub(super) fn write_depot(
    i: usize,
    name: &str,
    ddir: &Path,
    data_dir: &Path,
    l: &Layout,
    issuer: &Issuer,
    opts: &GridOptions,
) -> anyhow::Result<PathBuf> {
    // Every client of a local grid comes from 127.0.0.1, so the
    // legacy port's per-address share is its whole budget: half of
    // each resource, for LoRS tools and `--security legacy` runs.
    // On hosts: its name, the documented ports (exposed by its relay).
    let host = l.host(Role::Depot(i));
    let hostname = host
        .as_ref()
        .map_or("127.0.0.1".to_owned(), |h| h.name.clone());
    let mut text = format!(
        "listen = \"{}\"\nhostname = \"{hostname}\"\nsync = \"batch\"\n\
         legacy_max_size = \"50%\"\nlegacy_per_address_bytes = \"50%\"\n",
        l.listen(netns::DEPOT_PORT)
    );
    if opts.legacy_off.contains(&i) {
        text.push_str("legacy = false\n");
    }
    if !opts.legacy_only {
        let (cert, key) = issuer.server_cert(name, ddir, &l.cert_names(Role::Depot(i)))?;
        text.push_str(&format!(
            "tls_listen = \"{}\"\ntls_cert = {}\ntls_key = {}\ntrust_dir = {}\n",
            l.listen(netns::DEPOT_TLS_PORT),
            toml_path(&cert),
            toml_path(&key),
            toml_path(&l.trust)
        ));
        text.push_str(&vomsdir_line(opts));
        if opts.data_port {
            text.push_str("data_listen = \"127.0.0.1:0\"\n");
        }
    }
    text.push_str(&format!(
        "\n[[resource]]\nrid = 0\ndata = {}\nhard_size = {}\nmax_duration = \"30d\"\n",
        toml_path(data_dir),
        opts.hard_size(i)
    ));
    if !opts.legacy_only {
        text.push_str(&format!(
            "\n[[vo]]\nname = \"{VO}\"\nmax_size = {}\nmax_duration = \"30d\"\n",
            opts.hard_size(i)
        ));
        if opts.vo2 {
            text.push_str(&format!(
                "\n[[vo]]\nname = \"{}\"\nmax_size = {}\nmax_duration = \"30d\"\n",
                super::VO2,
                opts.hard_size(i)
            ));
        }
    }
    let config = ddir.join("depot.toml");
    write_file(&config, &text)?;
    Ok(config)
}
