//! `redlight calendar import`: each year's notice, as published (tests/fixtures/notices/, one
//! in the punctuation and line breaks of a web copy), gives the calendar the shipped file
//! gives, day by day; a date that does not fall on the day of the week the notice names, a
//! span that does not have the days the notice counts, and a text without the notice's
//! title are refused with exit 2, naming what is wrong.

use chrono::{Datelike, NaiveDate};
use redlight::calendar::Calendar;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn import(file: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_redlight"))
        .args(["calendar", "import"])
        .arg(file)
        .output()
        .expect("run redlight calendar import")
}

fn import_text(name: &str, text: &str) -> Output {
    let dir = std::env::temp_dir().join(format!("redlight-import-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let file = dir.join(name);
    std::fs::write(&file, text).expect("notice written");
    import(&file)
}

fn notice(year: i32) -> String {
    std::fs::read_to_string(root().join(format!("tests/fixtures/notices/{year}.txt")))
        .expect("the notice's text")
}

/// The shipped calendar, with `year`'s file replaced by `text` when given.
fn calendar(replace: Option<(i32, &str)>) -> Calendar {
    let sources: Vec<(PathBuf, String)> = (2020..=2026)
        .map(|y| {
            let path = root().join(format!("config/calendars/{y}.toml"));
            let text = match replace {
                Some((r, text)) if r == y => text.to_string(),
                _ => std::fs::read_to_string(&path).expect("a shipped file"),
            };
            (path, text)
        })
        .collect();
    Calendar::from_sources(&sources, chrono_tz::Asia::Shanghai).expect("the calendar loads")
}

#[test]
fn each_years_notice_gives_the_shipped_calendar() {
    let shipped = calendar(None);
    // Where a notice alone is not the whole story, written down in the shipped files:
    // 2020's Spring Festival was extended by a second notice (01-31 off, 02-01 no longer a
    // make-up workday, 02-02 a holiday, not a weekend), and 2022's last day is the 2023
    // notice's (元旦 from 2022-12-31).
    let known: &[(i32, &[(u32, u32)])] = &[(2020, &[(1, 31), (2, 1), (2, 2)]), (2022, &[(12, 31)])];
    for year in 2020..=2026 {
        let out = import(&root().join(format!("tests/fixtures/notices/{year}.txt")));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{year}: {stderr}");
        let toml = String::from_utf8(out.stdout).expect("UTF-8");
        assert!(
            toml.contains(&format!("year = {year}\n"))
                && toml.contains("部分节假日安排的通知（国办发明电〔"),
            "{year}: {toml}"
        );
        let imported = calendar(Some((year, &toml)));
        let exceptions: Vec<NaiveDate> = known
            .iter()
            .filter(|(y, _)| *y == year)
            .flat_map(|(_, days)| days.iter())
            .map(|&(m, d)| NaiveDate::from_ymd_opt(year, m, d).expect("a date"))
            .collect();
        let first = NaiveDate::from_ymd_opt(year, 1, 1).expect("Jan 1");
        for day in first.iter_days().take_while(|d| d.year() == year) {
            let (want, got) = (
                shipped.day_kind(day).expect("shipped day"),
                imported.day_kind(day).expect("imported day"),
            );
            if exceptions.contains(&day) {
                assert_ne!(want, got, "{day}: the known difference is gone");
            } else {
                assert_eq!(want, got, "{day} from the {year} notice:\n{toml}");
            }
        }
    }
}

#[test]
fn days_of_another_year_are_named_for_that_years_file() {
    let out = import(&root().join("tests/fixtures/notices/2023.txt"));
    assert!(out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("2022-12-31 (元旦, off) is in 2022: put it in 2022.toml"),
        "{stderr}"
    );
    let toml = String::from_utf8_lossy(&out.stdout);
    assert!(!toml.contains("2022-12-31"), "{toml}");
}

#[test]
fn a_date_off_its_day_of_the_week_is_refused() {
    // A make-up day misread: 10月11日 is a Sunday, the notice says 周六.
    let text = notice(2026).replace("10月10日（周六）上班", "10月11日（周六）上班");
    let out = import_text("misread.txt", &text);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(
            "misread.txt: 国庆节: 10月11日（周六）: 2026-10-11 is a 周日 (Sun), not 周六"
        ),
        "{stderr}"
    );
    assert!(out.stdout.is_empty(), "no file printed");

    // The notice of another year under this year's title: every annotated date is off.
    let text = notice(2026).replace("关于2026年", "关于2027年");
    let out = import_text("wrong-year.txt", &text);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("is the notice for 2027?"), "{stderr}");
    assert!(stderr.lines().count() > 10, "each date named: {stderr}");
}

#[test]
fn a_span_that_does_not_have_its_days_is_refused() {
    let text = notice(2026).replace("放假调休，共7天", "放假调休，共6天");
    let out = import_text("count.txt", &text);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("国庆节: 2026-10-01 to 2026-10-07 is 7 days, the notice says 共6天"),
        "{stderr}"
    );
}

#[test]
fn a_text_without_the_notices_title_is_refused() {
    let out = import_text("other.txt", "一、元旦：1月1日放假。");
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("other.txt: the notice's title (国务院办公厅关于YYYY年部分节假日安排的通知) is not in the text"),
        "{stderr}"
    );
    let out = import(Path::new("/no/such/notice.txt"));
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("/no/such/notice.txt"),
        "the file named"
    );
}
