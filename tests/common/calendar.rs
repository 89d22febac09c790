//! The calendar the daemon tests run with: the shipped data (`config/calendars/`) plus,
//! for every year after the last shipped one up to next year, a placeholder file with
//! weekends only.
//!
//! Why: these tests feed events timed relative to the wall clock, so a 20-workday clock
//! opened in December needs the next year's calendar, and `/readyz` needs today covered.
//! The State Council publishes the next year's notice in November or December; until it is
//! added to `config/calendars/` the tests would fail for reasons that have nothing to do
//! with the code under test. The placeholders are written only into the test's own
//! directory, never into `config/`, and say in their `notice` that they are not law.
#![allow(dead_code)]

use chrono::Datelike;
use std::path::{Path, PathBuf};

/// Copies `config/calendars/*.toml` into `dir/calendars` and adds the placeholders;
/// returns the folder to put in `engine.calendars`.
pub fn calendars_for_now(dir: &Path) -> PathBuf {
    let shipped = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/calendars");
    let out = dir.join("calendars");
    std::fs::create_dir_all(&out).expect("creating the test calendar folder");
    let mut last = 0;
    for e in std::fs::read_dir(&shipped).expect("reading config/calendars") {
        let path = e.expect("a directory entry").path();
        if path.extension().and_then(|x| x.to_str()) != Some("toml") {
            continue;
        }
        let name = path.file_name().expect("a file name");
        std::fs::copy(&path, out.join(name)).expect("copying a calendar file");
        if let Some(year) = path
            .file_stem()
            .and_then(|s| s.to_str())
            .and_then(|s| s.parse::<i32>().ok())
        {
            last = last.max(year);
        }
    }
    let until = chrono::Utc::now().year() + 1;
    for year in (last + 1)..=until {
        let text = format!(
            "# Written by the tests (tests/common/calendar.rs): weekends only, no holidays.\n\
             # NOT the State Council notice; never copy this into config/calendars/.\n\
             year = {year}\n\
             notice = \"测试占位（仅周末休息），不是国务院通知 / test placeholder, weekends only\"\n"
        );
        std::fs::write(out.join(format!("{year}.toml")), text).expect("writing a placeholder");
    }
    out
}
