//! The grid's users: members of vo1 at the online CA, each with a proxy
//! from a real `lors login`, and the environment `lors` runs with as one.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use anyhow::{bail, Context};

use super::daemons::on_host;
use super::files::private_dir;
use super::netns::{Host, Role};
use super::pki::users_line;
use super::process::{clean_command, run_cli};
use super::{Grid, GridOptions, Layout, ADMIN_GROUP, VO};

/// A user of vo1 with a proxy from a real `lors login`.
#[derive(Debug, Clone)]
pub struct GridUser {
    pub name: String,
    /// The VO ID the online CA gave the user.
    pub vo_id: String,
    /// In group `admins`: a VO admin.
    pub admin: bool,
    /// The local password at the online CA.
    pub password: String,
    /// The proxy file (`X509_USER_PROXY`).
    pub proxy: PathBuf,
    /// The user's directory under the grid directory.
    pub dir: PathBuf,
}

/// The users of `opts` with their directories and passwords (not yet
/// members, not logged in), and the online CA's users file for them.
pub(super) fn make_users(
    opts: &GridOptions,
    l: &Layout,
) -> anyhow::Result<(Vec<GridUser>, String)> {
    let mut users = Vec::new();
    let mut users_file = String::new();
    for name in &opts.users {
        let udir = l.dir.join("users").join(name);
        private_dir(&udir)?;
        let password = format!("{name}-grid-password");
        users_file.push_str(&users_line(name, &password)?);
        users.push(GridUser {
            name: name.clone(),
            vo_id: String::new(),
            admin: opts.admins.contains(name),
            password,
            proxy: udir.join("x509up"),
            dir: udir,
        });
    }
    Ok((users, users_file))
}

/// Makes every user a member of vo1 (admins also in `admins`) with
/// `online-ca admin member add`, recording the VO ID the CA gave it (the
/// CA's database; safe while the CA runs).
pub(super) fn add_members(
    online_ca: &Path,
    ca_config: &Path,
    users: &mut [GridUser],
) -> anyhow::Result<()> {
    for u in users {
        let mut c = clean_command(online_ca);
        c.arg("admin")
            .arg("--config")
            .arg(ca_config)
            .args(["member", "add", "--vo", VO, "--identity"])
            .arg(format!("local:{}", u.name));
        if u.admin {
            c.args(["--group", ADMIN_GROUP]);
        }
        let out = run_cli(&format!("online-ca admin member add {}", u.name), c, None)?;
        u.vo_id = out
            .lines()
            .last()
            .and_then(|l| l.split_whitespace().last())
            .context("no VO ID in the output of member add")?
            .to_owned();
    }
    Ok(())
}

/// What a login needs (shareable between threads).
pub(super) struct LoginEnv {
    pub(super) lors: PathBuf,
    pub(super) ca_url: String,
    pub(super) trust_dir: PathBuf,
    pub(super) dir: PathBuf,
    /// The client host, on a grid on hosts.
    pub(super) client: Option<Arc<Host>>,
}

impl LoginEnv {
    /// `lors login --method local --password-stdin` for `u`.
    pub(super) fn login(&self, u: &GridUser) -> anyhow::Result<()> {
        let mut c = clean_command(&self.lors);
        c.env("RUST_LOG", "warn")
            .env("X509_USER_PROXY", &u.proxy)
            .env("HOME", &self.dir)
            .env("LORS_CONFIG", self.dir.join("lors.toml"))
            .env("LORS_TRUST_DIR", &self.trust_dir)
            .current_dir(&u.dir)
            .args([
                "login",
                "--ca",
                &self.ca_url,
                "--vo",
                VO,
                "--method",
                "local",
            ])
            .args(["--user", &u.name, "--password-stdin", "--valid", "12:00"])
            .arg("--trust")
            .arg(&self.trust_dir);
        run_cli(
            &format!("lors login {}", u.name),
            on_host(&self.client, c),
            Some(&format!("{}\n", u.password)),
        )?;
        if !u.proxy.is_file() {
            bail!(
                "lors login {} succeeded but wrote no {}",
                u.name,
                u.proxy.display()
            );
        }
        Ok(())
    }
}

impl Grid {
    /// A user of the grid; panics for an unknown name.
    pub fn user(&self, name: &str) -> &GridUser {
        self.users
            .iter()
            .find(|u| u.name == name)
            .unwrap_or_else(|| panic!("no user {name:?} in the grid"))
    }

    /// The proxy credential file of a user (vo1), made at start.
    pub fn proxy(&self, user: &str) -> PathBuf {
        self.user(user).proxy.clone()
    }

    /// The environment for running `lors` (or `lbone admin`) as `user`:
    /// `LORS_LBONE_URL`, `LBONE_URL`, `LORS_METADATA_URL`, `LORS_CA_URL`,
    /// `LORS_TRUST_DIR`, `LORS_VO`, `X509_USER_PROXY`, `LORS_KEY_FILE` (a path under the
    /// user's directory, not created), `LORS_CONFIG` (an empty file),
    /// `HOME` (the grid directory) and `XDG_CONFIG_HOME` (under it).
    pub fn env(&self, user: &str) -> Vec<(String, String)> {
        let u = self.user(user);
        let s = |p: &Path| p.display().to_string();
        vec![
            ("LORS_LBONE_URL".into(), self.lbone_url.clone()),
            ("LBONE_URL".into(), self.lbone_url.clone()),
            ("LORS_METADATA_URL".into(), self.mdm_urls.join(",")),
            ("LORS_CA_URL".into(), self.ca_url.clone()),
            ("LORS_TRUST_DIR".into(), s(&self.trust_dir)),
            ("LORS_VO".into(), VO.into()),
            ("X509_USER_PROXY".into(), s(&u.proxy)),
            ("LORS_KEY_FILE".into(), s(&u.dir.join("lors.key"))),
            ("LORS_CONFIG".into(), s(&self.dir.join("lors.toml"))),
            ("HOME".into(), s(&self.dir)),
            ("XDG_CONFIG_HOME".into(), s(&self.dir.join(".config"))),
        ]
    }

    /// A `lors` command running as `user`: [`Grid::env`] set, other
    /// `LORS_*`/`X509_*` variables of the caller's environment removed,
    /// working directory the user's directory, umask 077; on a grid on
    /// hosts, on the client host ([`Grid::on_client`]).
    pub fn lors(&self, user: &str) -> Command {
        let mut cmd = clean_command(&self.bins.lors);
        cmd.env("RUST_LOG", "warn")
            .envs(self.env(user))
            .current_dir(&self.user(user).dir);
        self.on_client(cmd)
    }

    /// `cmd` as it is, or on a grid on hosts run on the client host (`ip
    /// netns exec`), where the services' names resolve. Environment
    /// variables set on the returned command still reach the program.
    pub fn on_client(&self, cmd: Command) -> Command {
        on_host(&self.client_host(), cmd)
    }

    fn client_host(&self) -> Option<Arc<Host>> {
        self.net
            .as_ref()
            .and_then(|n| n.host(Role::Client).ok().cloned())
    }

    /// Logs `user` in again (`lors login --method local`), replacing the proxy.
    pub fn login(&self, user: &str) -> anyhow::Result<()> {
        LoginEnv {
            lors: self.bins.lors.clone(),
            ca_url: self.ca_url.clone(),
            trust_dir: self.trust_dir.clone(),
            dir: self.dir.clone(),
            client: self.client_host(),
        }
        .login(self.user(user))
    }
}
