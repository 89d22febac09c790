//! `redlight backup` and `redlight restore` as an operator runs them, with no daemon running
//! (the daemon's side, backups taken while it reads a stream and one restored, is
//! `a_backup_taken_while_running_restores_and_loses_nothing` in tests/e2e.rs): a backup
//! restored brings the store back to its state, the files it replaces are kept aside, and
//! whatever is not a readable backup is refused with nothing moved.

mod view_support;

use redlight::store::{Store, WriteBatch};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// A test daemon's configuration (the shipped rules and calendars), its data in
/// `dir/data`, its HTTP port one nothing listens on (so the commands find no daemon) and a
/// broker never asked.
fn config_in(dir: &Path) -> PathBuf {
    let listen = format!("127.0.0.1:{}", view_support::free_port());
    view_support::write_config(dir, "127.0.0.1:9", "unused", &listen, "", "")
}

fn redlight(args: &[&str], config: &Path, extra: Option<&Path>) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_redlight"));
    cmd.args(args).arg("--config").arg(config);
    if let Some(e) = extra {
        cmd.arg(e);
    }
    cmd.output().expect("running redlight")
}

/// Commits batch `n` of partition 0: case `C<n>` and the offset after it.
fn commit(data: &Path, n: u64) {
    let store = Store::open(data).expect("open the store");
    let mut b = WriteBatch::default();
    let case = format!(
        r#"{{"id":"C{n}","data":[["department","市住建局"]],"seen":[{n}],"types":1,"first_event":{n},"last_event":{n},"withdrawn":false,"clocks":[],"stages":[],"violations":[],"duties":[]}}"#
    );
    let case: redlight::engine::Case = serde_json::from_str(&case).expect("a case");
    b.cases.put("events", 0, &case).expect("encode");
    b.offsets.push(("events".into(), 0, n + 1));
    store.commit(&b).expect("commit");
}

/// What the store in `data` holds: its offset and its cases' ids.
fn state(data: &Path) -> (Option<u64>, Vec<String>) {
    let store = Store::open(data).expect("open the store");
    let mut ids: Vec<String> = store
        .all_cases()
        .expect("cases")
        .into_iter()
        .map(|(_, _, c)| c.id.to_string())
        .collect();
    ids.sort();
    (store.offset("events", 0).expect("offset"), ids)
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[test]
fn a_backup_restored_brings_the_store_back_and_keeps_what_it_replaced() {
    let dir = std::env::temp_dir().join(format!("redlight-backup-cli-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    let config = config_in(&dir);
    let data = dir.join("data");
    for n in 0..3 {
        commit(&data, n);
    }
    let before = state(&data);

    // With no daemon answering, `backup` copies the store itself.
    let out = redlight(&["backup"], &config, None);
    assert!(out.status.success(), "{}", text(&out));
    let report: Value = serde_json::from_slice(&out.stdout).expect("the report, JSON");
    let backup = PathBuf::from(report["directory"].as_str().expect("directory"));
    assert!(backup.starts_with(data.join("backups")), "{report}");
    assert_eq!(report["offsets"][0]["next_offset"], 3, "{report}");

    // The store moves on; the backup does not.
    commit(&data, 3);
    assert_ne!(state(&data), before);

    // Not a backup: refused, nothing moved.
    let out = redlight(&["restore"], &config, Some(&dir));
    assert!(!out.status.success());
    assert!(text(&out).contains("not a backup"), "{}", text(&out));

    // A backup whose file redb cannot read: refused before anything moves.
    let broken = dir.join("broken");
    std::fs::create_dir_all(&broken).expect("mkdir");
    for f in ["redlight.redb", "cases.redb"] {
        std::fs::copy(backup.join(f), broken.join(f)).expect("copy");
    }
    std::fs::write(broken.join("redlight.redb"), vec![0x5a; 64 * 1024]).expect("damage");
    let out = redlight(&["restore"], &config, Some(&broken));
    assert!(!out.status.success());
    let said = text(&out);
    assert!(
        said.contains("redlight.redb") && said.contains("nothing changed"),
        "{said}"
    );
    assert_eq!(state(&data).0, Some(4), "the store is as it was");
    let leftovers: Vec<String> = std::fs::read_dir(&data)
        .expect("data dir")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(".restoring") || n.starts_with("replaced-"))
        .collect();
    assert!(leftovers.is_empty(), "left behind: {leftovers:?}");

    // The backup restored: the store as it was when the backup was taken, the replaced
    // files aside, whole.
    let out = redlight(&["restore"], &config, Some(&backup));
    assert!(out.status.success(), "{}", text(&out));
    let said = text(&out);
    assert!(said.contains("reads on from offset 3"), "{said}");
    assert_eq!(state(&data), before);
    let aside: Vec<PathBuf> = std::fs::read_dir(&data)
        .expect("data dir")
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("replaced-"))
        })
        .collect();
    assert_eq!(aside.len(), 1, "{aside:?}");
    assert!(said.contains(&aside[0].display().to_string()), "{said}");
    assert_eq!(
        state(&aside[0]).0,
        Some(4),
        "the replaced store, kept whole"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
