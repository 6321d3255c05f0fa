//! The grid and its L-Bone: registering the depots (as a VO admin would,
//! with `lbone admin register`) and waiting on what the L-Bone reports.

use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};
use serde_json::Value;

use super::daemons::port_of;
use super::process::{clean_command, run_cli};
use super::{Grid, VO};

impl Grid {
    /// The first admin registers every depot, in parallel.
    pub(super) fn register_depots(&self) -> anyhow::Result<()> {
        let admin = self.users.iter().find(|u| u.admin).context("no admin")?;
        self.register_depots_for(VO, &admin.proxy)
    }

    /// Registers every depot with the L-Bone for `vo` (a depot serving
    /// it, [`super::GridOptions::vo2`]), as the VO admin whose proxy is
    /// `proxy`.
    pub fn register_depots_for(&self, vo: &str, proxy: &std::path::Path) -> anyhow::Result<()> {
        std::thread::scope(|s| {
            let hs: Vec<_> = (0..self.depots.len())
                .map(|i| s.spawn(move || self.register_depot(vo, proxy, i)))
                .collect();
            hs.into_iter()
                .map(|h| {
                    h.join()
                        .unwrap_or_else(|_| Err(anyhow!("register panicked")))
                })
                .collect::<anyhow::Result<Vec<()>>>()
        })?;
        Ok(())
    }

    fn register_depot(&self, vo: &str, proxy: &std::path::Path, i: usize) -> anyhow::Result<()> {
        let d = &self.depots[i];
        let mut c = clean_command(&self.bins.lbone);
        c.arg("admin")
            .args(["--lbone", &self.lbone_url])
            .arg("--proxy")
            .arg(proxy)
            .arg("--trust")
            .arg(&self.trust_dir)
            .args([
                "register",
                "--vo",
                vo,
                "--name",
                &d.name,
                "--host",
                d.host.as_ref().map_or("127.0.0.1", |h| h.name.as_str()),
            ])
            .args(["--port", &d.port().to_string()]);
        if let Some(t) = &d.tls_addr {
            c.args(["--tls-port", &port_of(t).to_string()]);
        }
        c.arg(format!(
            "--location={:.2},{:.2}",
            50.0 + i as f64 * 0.1,
            14.0 + i as f64 * 0.1
        ))
        .args(["--place", &format!("site-{i}")])
        .args(["--max-size", &self.opts.hard_size(i).to_string()])
        .args(["--max-duration", "30d"]);
        run_cli(
            &format!("lbone admin register {} ({vo})", d.name),
            self.on_client(c),
            None,
        )
        .map(|_| ())
    }

    /// The L-Bone's `GET /status.json` (needs no client certificate).
    pub fn lbone_status(&self) -> anyhow::Result<Value> {
        let (url, tls) = (self.lbone_direct_url.clone(), self.tls.clone());
        // A thread of its own, so this works inside an async test too.
        std::thread::spawn(move || -> anyhow::Result<Value> {
            let client = ibp_https::Client::new(ibp_https::BaseUrl::parse(&url)?, tls, false);
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            let r = rt.block_on(client.get("/status.json"))?;
            if !r.is_success() {
                bail!(
                    "GET {url}/status.json: {} {}",
                    r.status,
                    r.error_message(300)
                );
            }
            Ok(r.json()?)
        })
        .join()
        .map_err(|_| anyhow!("the status request panicked"))?
    }

    /// The `state` the L-Bone reports for depot `i` in vo1 (`unknown`,
    /// `up`, `late`, `down`), if it lists it.
    pub fn lbone_state(status: &Value, depot_port: u16) -> Option<String> {
        status["vos"]
            .as_array()?
            .iter()
            .filter(|v| v["vo"] == VO)
            .flat_map(|v| v["depots"].as_array().into_iter().flatten())
            .find(|d| d["port"].as_u64() == Some(u64::from(depot_port)))
            .and_then(|d| d["status"]["state"].as_str())
            .map(str::to_owned)
    }

    /// The `state` the L-Bone reports for the depot named `name` in vo1.
    pub fn lbone_state_named(status: &Value, name: &str) -> Option<String> {
        status["vos"]
            .as_array()?
            .iter()
            .filter(|v| v["vo"] == VO)
            .flat_map(|v| v["depots"].as_array().into_iter().flatten())
            .find(|d| d["name"].as_str() == Some(name))
            .and_then(|d| d["status"]["state"].as_str())
            .map(str::to_owned)
    }

    /// Waits until the L-Bone reports depot `i` in `state` (`up`, `down`,
    /// ...).
    pub fn wait_lbone_state(&self, i: usize, state: &str, timeout: Duration) -> anyhow::Result<()> {
        let name = self.depots[i].name.clone();
        self.wait_lbone(timeout, &format!("{name} {state}"), |s| {
            Grid::lbone_state_named(s, &name).as_deref() == Some(state)
        })
    }

    fn wait_lbone(
        &self,
        timeout: Duration,
        what: &str,
        mut ok: impl FnMut(&Value) -> bool,
    ) -> anyhow::Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            let last = match self.lbone_status() {
                Ok(s) if ok(&s) => return Ok(()),
                Ok(s) => summarize(&s),
                Err(e) => format!("{e:#}"),
            };
            if Instant::now() >= deadline {
                bail!("the L-Bone did not report {what} within {timeout:?}; last: {last}");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits until the L-Bone reports every running depot `up` in vo1.
    pub fn wait_lbone_sees_all(&self, timeout: Duration) -> anyhow::Result<()> {
        let names: Vec<String> = self
            .depots
            .iter()
            .filter(|d| d.proc.is_some())
            .map(|d| d.name.clone())
            .collect();
        self.wait_lbone(timeout, "every running depot up", |s| {
            names
                .iter()
                .all(|n| Grid::lbone_state_named(s, n).as_deref() == Some("up"))
        })
    }

    /// Waits until the L-Bone reports depot `i` `down` (no longer offered).
    pub fn wait_lbone_sees_down(&self, i: usize, timeout: Duration) -> anyhow::Result<()> {
        self.wait_lbone_state(i, "down", timeout)
    }
}

fn summarize(status: &Value) -> String {
    let mut out = Vec::new();
    for v in status["vos"].as_array().into_iter().flatten() {
        for d in v["depots"].as_array().into_iter().flatten() {
            out.push(format!(
                "{}/{} port {} {} ({})",
                v["vo"].as_str().unwrap_or("?"),
                d["name"].as_str().unwrap_or("?"),
                d["port"],
                d["status"]["state"].as_str().unwrap_or("?"),
                d["status"]["last_error"].as_str().unwrap_or("-"),
            ));
        }
    }
    if out.is_empty() {
        "no depots listed".into()
    } else {
        out.join("; ")
    }
}
