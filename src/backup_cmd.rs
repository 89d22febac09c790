//! `redlight backup` and `redlight restore`.
//!
//! `backup` asks the running daemon (`POST /api/v1/backup` on `http.listen`) to write a
//! consistent copy of its store under `store.backup_dir` while it goes on; with no daemon
//! answering it opens the store itself and writes the same copy. `restore` puts a backup in
//! place of the data directory's store files, with the daemon stopped: it copies the backup
//! in beside them, opens the copy as a store (its format, both files, the journal), and only
//! then moves the files it replaces aside into `replaced-<UTC time>/` in the data directory
//! and the copy into their place. Nothing is deleted.

use crate::config::Config;
use crate::store::backup::{self, BackupReport};
use crate::store::{BASE_FILE_NAME, FILE_NAME, Store};
use anyhow::{Context, bail};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// How long `backup` waits for the daemon's answer: a large store's copy takes a while.
const DAEMON_BACKUP_WAIT: Duration = Duration::from_secs(3600);

/// `redlight backup`: prints the backup's manifest (JSON) on `out`.
pub async fn backup(config: &Config, out: &mut (dyn Write + Send)) -> anyhow::Result<()> {
    let answer = crate::delivery::call_daemon_waiting(
        config,
        http::Method::POST,
        "/api/v1/backup",
        None,
        DAEMON_BACKUP_WAIT,
    )
    .await?;
    let report: BackupReport = match answer {
        Some(answer) => serde_json::from_value(answer.clone())
            .with_context(|| format!("the daemon's answer is not a backup's report: {answer}"))?,
        None => {
            let store = crate::delivery::open_store_without_daemon(config)?;
            let (dir, keep) = (config.backup_dir(), config.store.backups_keep);
            tokio::task::spawn_blocking(move || store.backup(&dir, keep))
                .await
                .context("the backup's thread")??
        }
    };
    writeln!(out, "{}", serde_json::to_string_pretty(&report)?)?;
    Ok(())
}

/// `redlight restore BACKUP`: see the module's documentation. Returns the directory the
/// replaced files were moved to, if there were any.
pub fn restore(
    config: &Config,
    from: &Path,
    out: &mut dyn Write,
) -> anyhow::Result<Option<PathBuf>> {
    if !backup::is_store_dir(from) {
        bail!(
            "{}: not a backup: it has no {FILE_NAME} and {BASE_FILE_NAME} (a backup is a \
             directory `{}…` under store.backup_dir, {})",
            from.display(),
            backup::PREFIX,
            config.backup_dir().display()
        );
    }
    let manifest: Option<BackupReport> = std::fs::read(from.join(backup::MANIFEST))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok());
    let data = config.data_dir();
    std::fs::create_dir_all(&data)
        .with_context(|| format!("{}: cannot create the data directory", data.display()))?;
    // Said as absolute paths, wherever the command was run from.
    let data = std::fs::canonicalize(&data).unwrap_or(data);
    let from = &std::fs::canonicalize(from).unwrap_or_else(|_| from.to_path_buf());
    // The daemon must be stopped: a process holding the store's files is found by their
    // locks, and held off by a read-only open of each kept until the files are swapped.
    let mut held = Vec::new();
    for name in [FILE_NAME, BASE_FILE_NAME] {
        let file = data.join(name);
        if !file.exists() {
            continue;
        }
        match redb::Builder::new().open_read_only(&file) {
            Ok(db) => held.push(db),
            Err(redb::DatabaseError::DatabaseAlreadyOpen) => bail!(
                "{}: a redlight process has this store open; stop the daemon before restoring",
                file.display()
            ),
            // A file redb cannot read (the reason to restore, often) is replaced all the same.
            Err(e) => tracing::warn!(file = %file.display(), error = %e,
                "the store file being replaced could not be opened read-only; it is moved \
                 aside as it is"),
        }
    }
    let stamp = chrono::Utc::now().format("%Y%m%dT%H%M%SZ").to_string();
    let staging = data.join(format!(".restoring-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&staging);
    std::fs::create_dir(&staging)
        .with_context(|| format!("{}: cannot create it", staging.display()))?;
    let staged = (|| -> anyhow::Result<()> {
        for name in [FILE_NAME, BASE_FILE_NAME] {
            let (src, dst) = (from.join(name), staging.join(name));
            std::fs::copy(&src, &dst)
                .with_context(|| format!("copying {} to {}", src.display(), dst.display()))?;
            crate::store::sync_path(&dst).with_context(|| format!("{}: syncing", dst.display()))?;
        }
        // Opened as the daemon opens it: a backup this redlight cannot read is refused here,
        // with the store's own error, before anything is moved.
        drop(Store::open_with_cache(&staging, config.store.cache_mib)?);
        Ok(())
    })();
    if let Err(e) = staged {
        let _ = std::fs::remove_dir_all(&staging);
        return Err(e.context(format!("{}: not restored; nothing changed", from.display())));
    }
    let mut aside = None;
    for name in [FILE_NAME, BASE_FILE_NAME] {
        let live = data.join(name);
        if live.exists() {
            let dir = data.join(format!("replaced-{stamp}"));
            std::fs::create_dir_all(&dir)
                .with_context(|| format!("{}: cannot create it", dir.display()))?;
            std::fs::rename(&live, dir.join(name)).with_context(|| {
                format!("moving {} aside into {}", live.display(), dir.display())
            })?;
            aside = Some(dir);
        }
    }
    for name in [FILE_NAME, BASE_FILE_NAME] {
        std::fs::rename(staging.join(name), data.join(name))
            .with_context(|| format!("moving the restored {name} into {}", data.display()))?;
    }
    drop(held);
    let _ = std::fs::remove_dir_all(&staging);
    crate::store::sync_path(&data)
        .with_context(|| format!("{}: syncing the directory", data.display()))?;
    writeln!(out, "restored {} into {}", from.display(), data.display())?;
    if let Some(m) = &manifest {
        writeln!(
            out,
            "  backup taken {} by redlight {}",
            m.created, m.version
        )?;
        for o in &m.offsets {
            writeln!(
                out,
                "  {} partition {}: the daemon reads on from offset {}",
                o.topic, o.partition, o.next_offset
            )?;
        }
    }
    if let Some(dir) = &aside {
        writeln!(out, "  the files it replaced: {}", dir.display())?;
    }
    writeln!(
        out,
        "  start the daemon: the events since the backup are applied again from Kafka (while \
         the topic still keeps them), their alerts raised again under the same ids"
    )?;
    Ok(aside)
}
