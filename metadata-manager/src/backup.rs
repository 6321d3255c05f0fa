//! `metadata-manager backup`: a consistent copy of a SQLite database,
//! taken while the server runs (SQLite's `VACUUM INTO`, one read
//! transaction), written owner-only (it holds every file's capabilities).
//! PostgreSQL databases are backed up with `pg_dump` (docs/metadata-manager.md,
//! "Backup and restore").

use std::path::Path;

use anyhow::{bail, Context};
use ibp_service::db::{self, Backend};

/// Copies the database at `url` into `out`, which must not exist.
pub async fn backup(url: &str, out: &Path) -> anyhow::Result<u64> {
    let backend = Backend::of_url(url).map_err(|e| anyhow::anyhow!("{e}"))?;
    if backend != Backend::Sqlite {
        bail!(
            "{} is not SQLite: back PostgreSQL up with pg_dump (docs/metadata-manager.md, \"Backup and restore\")",
            db::redact(url)
        );
    }
    let Some(path) = db::sqlite_path(url) else {
        bail!("{url} is not a SQLite file");
    };
    if !path.is_file() {
        bail!("no database at {}", path.display());
    }
    // The copy is created empty and owner-only first (never readable by
    // others, even for a moment); VACUUM INTO accepts an empty file.
    {
        use std::os::unix::fs::OpenOptionsExt;
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(out)
            .with_context(|| format!("create {} (it must not exist)", out.display()))?;
    }
    let result = async {
        let (pool, _) = db::connect(url, 1)
            .await
            .with_context(|| format!("open {}", db::redact(url)))?;
        let out_text = out
            .to_str()
            .with_context(|| format!("{} is not UTF-8", out.display()))?;
        sqlx::query("VACUUM INTO $1")
            .bind(out_text)
            .execute(&pool)
            .await
            .context("VACUUM INTO")?;
        pool.close().await;
        anyhow::Ok(())
    }
    .await;
    if let Err(e) = result {
        let _ = std::fs::remove_file(out);
        return Err(e);
    }
    let len = std::fs::metadata(out)?.len();
    Ok(len)
}
