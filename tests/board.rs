//! The red-light board in a real headless Chromium (Debian's `chromium`; scripts/test.sh
//! installs it when missing) against a daemon fed with the sample events: the rendered DOM
//! shows the counts the API gives, every red and yellow sample case where it belongs, no
//! script and no unescaped event text; laid out 1280 and 1920 px wide, every case id whole
//! and nothing past the right edge; and a screenshot is taken for people to look at
//! (target/redlight-board.png). Each listed case opens its own page, which says what the
//! API says of it (target/redlight-case.png). Also: the quick start's samples that feed it
//! still come out once the shipped calendar data has ended.

mod view_support;

use serde_json::Value;
use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use view_support::*;

/// Runs headless Chromium with a fresh profile; returns its standard output.
fn chromium(args: &[&str], profile: &Path) -> String {
    let bin = ["chromium", "chromium-browser"]
        .into_iter()
        .find(|b| {
            Command::new(b)
                .arg("--version")
                .output()
                .is_ok_and(|o| o.status.success())
        })
        .expect("headless Chromium is needed: apt-get install -y chromium (scripts/test.sh does)");
    let out = Command::new("timeout")
        .arg("120")
        .arg(bin)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--hide-scrollbars",
            "--lang=zh-CN",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(args)
        .output()
        .expect("running chromium");
    assert!(
        out.status.success(),
        "chromium {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The page at `url` printed by Chromium (to PDF, as Ctrl+P would) and its first sheet
/// rendered in grey at 100 dpi (`pdftoppm`, Debian's poppler-utils; scripts/test.sh installs
/// it): the sheet's mean brightness (255 is blank paper) and the share of its pixels dark
/// enough to be read as print (below 128).
fn printed(profile: &Path, url: &str, name: &str) -> (f64, f64) {
    let dir = profile.with_file_name(format!("printed-{name}"));
    std::fs::create_dir_all(&dir).expect("print dir");
    let pdf = dir.join("page.pdf");
    chromium(
        &[
            &format!("--print-to-pdf={}", pdf.display()),
            "--no-pdf-header-footer",
            url,
        ],
        profile,
    );
    let prefix = dir.join("sheet");
    let out = Command::new("pdftoppm")
        .args(["-gray", "-r", "100", "-f", "1", "-l", "1"])
        .arg(&pdf)
        .arg(&prefix)
        .output()
        .expect("pdftoppm is needed: apt-get install -y poppler-utils (scripts/test.sh does)");
    assert!(
        out.status.success(),
        "pdftoppm: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let pgm = std::fs::read(dir.join("sheet-1.pgm")).expect("the sheet rendered");
    // A binary PGM: "P5", width, height, the maximum (255), each after whitespace, then
    // a byte per pixel.
    let mut fields = 0;
    let mut at = 0;
    while fields < 4 {
        while pgm[at].is_ascii_whitespace() {
            at += 1;
        }
        while !pgm[at].is_ascii_whitespace() {
            at += 1;
        }
        fields += 1;
    }
    let pixels = &pgm[at + 1..];
    let n = pixels.len() as f64;
    let mean = pixels.iter().map(|&p| f64::from(p)).sum::<f64>() / n;
    let dark = pixels.iter().filter(|&&p| p < 128).count() as f64 / n;
    (mean, dark)
}

fn unescape(s: &str) -> String {
    s.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&#39;", "'")
        .replace("&amp;", "&")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_board_shows_every_colour_with_the_expected_counts() {
    let stamp = "B1";
    let mut d = Daemon::start("board", 2, "").await;
    let mut lines = fixed_samples();
    lines.extend(d.relative_samples(stamp));
    // Event text that looks like markup must show as text.
    lines.push(format!(
        r#"{{"specversion":"1.0","id":"esc-1","source":"/t","type":"approval.accepted","time":"2026-01-05T09:00:00+08:00","subject":"ESC-{stamp}","data":{{"department":"市住建局","item":"<script>alert(1)</script>","handler":"<i>赵</i>","kind":"immediate"}}}}"#
    ));
    let n = lines.len() as u64;
    produce(&broker(), &d.topic, &lines).await;
    d.wait_consumed(n);

    // What the API says, to compare with what the browser shows.
    let cases = d.json("/api/v1/cases?open=true&limit=1000");
    let mut want: BTreeMap<String, (u64, u64, u64)> = BTreeMap::new();
    let mut totals = (0u64, 0u64, 0u64);
    for c in cases["cases"].as_array().expect("cases") {
        let dept = c["department"]
            .as_str()
            .unwrap_or("（未注明部门）")
            .to_string();
        let e = want.entry(dept).or_default();
        match c["light"].as_str() {
            Some("red") => {
                e.0 += 1;
                totals.0 += 1;
            }
            Some("yellow") => {
                e.1 += 1;
                totals.1 += 1;
            }
            Some("green") => {
                e.2 += 1;
                totals.2 += 1;
            }
            other => panic!("light {other:?}"),
        }
    }
    assert!(
        totals.0 > 0 && totals.1 > 0 && totals.2 > 0,
        "every colour: {totals:?}"
    );
    // Let the board's counts (cached for a second in the test config) catch up.
    std::thread::sleep(std::time::Duration::from_millis(1200));

    // A browser is told to load nothing but the page and its inline style (the
    // screenshot below is taken under this policy: the board's colours show).
    let page = d.get("/");
    assert_eq!(
        page.header("content-security-policy"),
        Some(redlight::api::BOARD_CSP)
    );
    assert_eq!(page.header("x-content-type-options"), Some("nosniff"));

    let profile = d.dir.join("chromium-profile");
    let url = format!("http://127.0.0.1:{}/", d.port);
    let dom = chromium(&["--dump-dom", &url], &profile);

    assert!(dom.contains("lang=\"zh-CN\""), "{dom}");
    assert!(dom.contains("红灯案件") && dom.contains("黄灯案件") && dom.contains("各部门"));
    assert!(
        dom.contains("http-equiv=\"refresh\""),
        "the board refreshes itself"
    );
    assert!(
        !dom.contains("<script"),
        "no script, and event text is escaped"
    );
    assert!(!dom.contains("<i>赵</i>"));
    assert!(dom.contains("&lt;i&gt;赵&lt;/i&gt;"), "escaped text shows");

    // The totals and every department's red, yellow and green counts.
    let total = |light: &str| -> u64 {
        let i = dom
            .find(&format!("id=\"total-{light}\""))
            .unwrap_or_else(|| panic!("total-{light}"));
        text_after(&dom[i..], "class=\"n\"")
            .and_then(|t| t.parse().ok())
            .unwrap_or_else(|| panic!("total-{light} count"))
    };
    assert_eq!((total("red"), total("yellow"), total("green")), totals);
    let rows: BTreeMap<String, (u64, u64, u64)> = department_rows(&dom)
        .into_iter()
        .map(|(k, v)| (unescape(&k), v))
        .collect();
    assert_eq!(rows, want, "department rows");

    // The relative samples: every red and yellow one listed under its colour, no green one.
    let reds = listed(&dom, "red");
    let yellows = listed(&dom, "yellow");
    for (pattern, light, _) in RELATIVE_LIGHTS {
        let id = pattern.replace("{}", stamp);
        match *light {
            "red" => assert!(reds.contains(&id), "{id} in the red list: {reds:?}"),
            "yellow" => assert!(
                yellows.contains(&id),
                "{id} in the yellow list: {yellows:?}"
            ),
            _ => assert!(
                !reds.contains(&id) && !yellows.contains(&id),
                "{id} is green"
            ),
        }
    }
    // Red: most overdue first, with how far overdue; yellow: with the time left.
    assert!(dom.contains("超期 "), "overdue times shown");
    assert!(dom.contains("剩余 "), "time left shown");
    let hz = format!("HZ-H-{stamp}-2");
    let i = dom
        .find(&format!("data-case=\"{hz}\""))
        .expect("HZ-H yellow listed");
    let item = &dom[i..i + dom[i..].find("</li>").expect("li end")];
    assert!(
        item.contains("剩余 1小时") || item.contains("剩余 2小时"),
        "{item}"
    );
    assert!(item.contains("重大事故隐患立即组织查处"), "{item}");

    // The screenshot, for people (and the reviewer) to look at.
    let shot = root().join("target/redlight-board.png");
    let _ = std::fs::remove_file(&shot);
    chromium(
        &[
            &format!("--screenshot={}", shot.display()),
            "--window-size=1600,1000",
            &url,
        ],
        &profile,
    );
    let png = std::fs::read(&shot).expect("screenshot written");
    assert_eq!(&png[1..4], b"PNG");
    let width = u32::from_be_bytes([png[16], png[17], png[18], png[19]]);
    let height = u32::from_be_bytes([png[20], png[21], png[22], png[23]]);
    assert_eq!((width, height), (1600, 1000));
    assert!(png.len() > 50_000, "a board, not a blank page");

    // Laid out on a phone (a chat message's link opens there), a narrow screen (1280 px, a
    // projector) and a wide one, every listed case's id shows whole and nothing runs off
    // the page's right edge.
    for width in [390, 1280, 1920] {
        assert_eq!(
            layout_problems(&d, &profile, width),
            "[]",
            "at {width} px wide"
        );
    }
    // On paper (a report, the assessment meeting, a case's file) the pages print black on
    // white: the dark theme printed as a sheet of ink (or, without backgrounds, as
    // near-white text on white paper).
    let base = format!("http://127.0.0.1:{}", d.port);
    for (path, name) in [
        ("/", "board"),
        ("/scorecard?period=2026", "scorecard"),
        ("/case/XZ-2026-0001", "case"),
    ] {
        let (mean, dark) = printed(&profile, &format!("{base}{path}"), name);
        assert!(
            mean > 200.0 && dark > 0.003,
            "{path} printed: mean brightness {mean:.0} of 255, {:.2}% of the sheet dark",
            dark * 100.0
        );
    }

    // The scorecard's page (the footer's 本季度考核) likewise, on a phone and a wall screen.
    let card = d.get("/scorecard?period=2026").body;
    assert!(
        card.contains("<tr data-department="),
        "departments scored: {card}"
    );
    for width in [390, 1600] {
        assert_eq!(
            page_layout_problems(&d, &profile, width, "/scorecard?period=2026"),
            "[]",
            "the scorecard at {width} px wide"
        );
    }

    // The same page is served to a wall screen without a token on loopback only.
    let r = d.get("/");
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), Some("text/html; charset=utf-8"));
    let _: Value = d.json("/readyz");
}

/// An instant of the API's JSON as the case's page writes it: `2026-10-30 24:00` for the
/// midnight that ends 10-30, `2026-09-28 10:00` (seconds only when not zero).
fn page_time(v: &Value) -> String {
    let Some(s) = v.as_str() else {
        return String::new();
    };
    let t = chrono::DateTime::parse_from_rfc3339(s).unwrap_or_else(|e| panic!("{s}: {e}"));
    let day_start = t.date_naive().and_hms_opt(0, 0, 0).expect("midnight");
    if t.naive_local() == day_start {
        let before = t.date_naive().pred_opt().expect("a day before");
        format!("{} 24:00", before.format("%Y-%m-%d"))
    } else if t.format("%S").to_string() == "00" {
        t.format("%Y-%m-%d %H:%M").to_string()
    } else {
        t.format("%Y-%m-%d %H:%M:%S").to_string()
    }
}

/// Every red and yellow case on the board links its own page (案件详情), and the page, in
/// Chromium, says what `/api/v1/cases/{id}` says: the case's light and state, each clock's
/// deadline and yellow instant in order, every alert the case raised, the department (with
/// a link to its board) and the JSON, a violation's detail in Chinese; event text stays
/// text, an id with `/` and markup in it opens too, a case opens by its number through the
/// pages' form (`case?id=…`, followed in the browser), and an unknown id gets a page that
/// says so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_listed_case_opens_on_its_own_page() {
    let stamp = "B3";
    let retention = [("REDLIGHT_ENGINE__RETENTION_DAYS", "36500")];
    let mut d = Daemon::start_with("case-page", 2, "", "", &retention).await;
    let mut lines = fixed_samples();
    lines.extend(d.relative_samples(stamp));
    // An immediate case (即办件) never decided: red since the end of its day.
    let odd = format!("XZ/{stamp}/<b>斜杠</b>?#");
    lines.push(
        serde_json::json!({
            "specversion": "1.0", "id": "odd-1", "source": "/t", "type": "approval.accepted",
            "time": "2026-01-05T09:00:00+08:00", "subject": odd,
            "data": {"department": "市住建局", "item": "<script>alert(1)</script>", "kind": "immediate"},
        })
        .to_string(),
    );
    let n = lines.len() as u64;
    produce(&broker(), &d.topic, &lines).await;
    d.wait_consumed(n);
    std::thread::sleep(std::time::Duration::from_millis(1200));

    let profile = d.dir.join("chromium-profile");
    let base = format!("http://127.0.0.1:{}", d.port);
    let board = chromium(&["--dump-dom", &format!("{base}/")], &profile);
    // Every listed case links its page.
    let api_lists: Vec<String> = ["red", "yellow"]
        .iter()
        .flat_map(|light| {
            d.json(&format!("/api/v1/cases?light={light}&open=true&limit=1000"))["cases"]
                .as_array()
                .expect("cases")
                .iter()
                .map(|c| c["id"].as_str().expect("id").to_string())
                .collect::<Vec<_>>()
        })
        .collect();
    assert!(api_lists.contains(&odd), "{odd} is red: {api_lists:?}");
    for id in &api_lists {
        let href = format!("href=\"case/{}\"", q(id));
        assert!(board.contains(&href), "the board links {id} as {href}");
    }

    let ids = [
        odd.clone(),
        format!("XZ-{stamp}-03"),
        format!("HZ-H-{stamp}-2"),
        "XZ-2026-0001".to_string(),
        "XZ-2026-0003".to_string(),
        "XZ-2026-0004".to_string(),
    ];
    for id in &ids {
        let api = d.json(&format!("/api/v1/cases/{}", q(id)));
        let url = format!("{base}/case/{}", q(id));
        let page = chromium(&["--dump-dom", &url], &profile);
        assert!(
            !page.contains("<script"),
            "{id}: no script, event text escaped"
        );
        assert_eq!(
            text_after(&page, "id=\"case-id\"").map(unescape).as_deref(),
            Some(id.as_str()),
            "{id}: the page's case"
        );
        let light = api["light"].as_str().expect("light");
        assert!(
            page.contains(&format!("id=\"case-light\" data-light=\"{light}\"")),
            "{id}: its light {light}"
        );
        assert_eq!(
            text_after(&page, "id=\"case-status\""),
            Some(case_state(&api)),
            "{id}"
        );
        // The clocks, in the API's order: rule, deadline, yellow instant, and what the
        // page says of the time.
        let clocks = api["clocks"].as_array().expect("clocks");
        let rows: Vec<&str> = page.split("<tr data-rule=\"").skip(1).collect();
        assert_eq!(rows.len(), clocks.len(), "{id}: a row per clock");
        for (row, c) in rows.iter().zip(clocks) {
            let row = &row[..row.find("</tr>").expect("row end")];
            assert!(
                row.starts_with(c["rule"].as_str().expect("rule")),
                "{id}: {row}"
            );
            assert_eq!(
                text_after(row, "class=\"when deadline\"").map(str::to_string),
                Some(page_time(&c["deadline"])),
                "{id}: the deadline of {row}"
            );
            assert_eq!(
                text_after(row, "data-label=\"黄灯\""),
                Some(page_time(&c["yellow_at"]).as_str()),
                "{id}: the yellow instant of {row}"
            );
            let situation = text_after(row, "class=\"situation\"").expect("situation");
            let word = match (c["state"].as_str(), c["light"].as_str()) {
                (Some("stopped"), _) if c["late"] == true => "超期办结",
                (Some("stopped"), _) => "按时办结",
                (Some("paused"), _) => "暂停计时",
                (_, Some("red")) => "超期 ",
                _ => "剩余 ",
            };
            assert!(
                situation.starts_with(word),
                "{id}: {situation:?}, want {word:?}"
            );
        }
        // What broke, in Chinese as the chat messages say it, in the violations' table
        // (and in the alerts' below).
        let violations = page
            .split("id=\"violations\"")
            .nth(1)
            .and_then(|s| s.split("</section>").next())
            .unwrap_or_default();
        for v in api["violations"].as_array().expect("violations") {
            let detail = redlight::formats::text::detail_text(v["detail"].as_str().unwrap_or(""));
            assert!(
                violations.contains(&format!(r#"<td data-label="说明">{detail}</td>"#)),
                "{id}: the violation {detail:?} in {page}"
            );
        }
        // Every alert, in order.
        let alerts: Vec<&str> = api["alerts"]
            .as_array()
            .expect("alerts")
            .iter()
            .map(|a| a["alert"]["id"].as_str().expect("alert id"))
            .collect();
        let shown: Vec<&str> = page
            .split("data-alert=\"")
            .skip(1)
            .filter_map(|s| s.split('"').next())
            .collect();
        assert_eq!(shown, alerts, "{id}: its alerts");
        if light == "red" {
            assert!(!alerts.is_empty(), "{id}: a red case has alerts");
        }
        // The department's board and the JSON, linked relative to the page.
        if let Some(dept) = api["department"].as_str() {
            let href = format!("href=\"../?department={}\"", q(dept).replace("%20", "+"));
            assert!(page.contains(&href), "{id}: {href}");
            let own = d.get(&format!("/?department={}", q(dept))).body;
            if api["open"] == true && light != "green" {
                assert!(
                    listed(&own, light).iter().any(|l| unescape(l) == *id),
                    "{id} on its department's board"
                );
            }
        }
        assert!(
            page.contains(&format!("href=\"../api/v1/cases/{}\"", q(id))),
            "{id}: the JSON link"
        );
    }
    // A case opened by its number, as a supervisor on the phone types it: the board's and
    // the case pages' form goes to `case?id=…`, which sends the browser to the case's page
    // (spaces a copy brings along trimmed).
    assert!(
        board.contains(r#"<form class="find" action="case" method="get""#),
        "the board's form"
    );
    let found = chromium(
        &["--dump-dom", &format!("{base}/case?id=%20XZ-2026-0001%20")],
        &profile,
    );
    assert_eq!(
        text_after(&found, "id=\"case-id\""),
        Some("XZ-2026-0001"),
        "{found}"
    );
    assert!(found.contains(r#"<form class="find" action="../case" method="get""#));
    let r = d.get(&format!("/case?id={}", q(&odd)));
    assert_eq!(r.status, 303);
    assert_eq!(
        r.header("location"),
        Some(format!("case/{}", q(&odd)).as_str())
    );
    let r = d.get("/case?id=+");
    assert_eq!((r.status, r.header("location")), (303, Some("./")));
    // An address cut short after `case/` goes to the board, or with `?id=` to the case.
    let r = d.get("/case/");
    assert_eq!((r.status, r.header("location")), (303, Some("../")));
    let r = d.get(&format!("/case/?id={}", q(&odd)));
    assert_eq!(
        (r.status, r.header("location")),
        (303, Some(q(&odd).as_str()))
    );
    let odd_page = d.get(&format!("/case/{}", q(&odd))).body;
    assert!(
        odd_page.contains("&lt;script&gt;alert(1)&lt;/script&gt;"),
        "escaped: {odd_page}"
    );
    assert!(odd_page.contains("&lt;b&gt;斜杠&lt;/b&gt;"));
    // The data by the catalogue's Chinese names with each field beside; coded values and
    // yes-or-no likewise; the stage reached by its name.
    let sample = d.get("/case/XZ-2026-0001").body;
    for row in [
        r#"<tr data-key="promised_workdays"><td>承诺时限（工作日） <span class="muted">promised_workdays</span></td><td>15</td></tr>"#,
        r#"<tr data-key="kind"><td>办件类型 <span class="muted">kind</span></td><td>承诺件 <span class="muted">promised</span></td></tr>"#,
        r#"<tr data-key="procedure"><td>特别程序 <span class="muted">procedure</span></td><td>专家评审 <span class="muted">expert_review</span></td></tr>"#,
        r#"审批四个环节顺序：已到审核 <span class="muted">approval.reviewed</span>"#,
    ] {
        assert!(sample.contains(row), "{row} in {sample}");
    }
    let hazard = d.get(&format!("/case/HZ-H-{stamp}-2")).body;
    let row = r#"<tr data-key="major"><td>重大隐患 <span class="muted">major</span></td><td>是 <span class="muted">true</span></td></tr>"#;
    assert!(hazard.contains(row), "{row} in {hazard}");
    // The withdrawn sample is quiet, its state says so.
    let unknown = d.get("/case/NO-SUCH-CASE");
    assert_eq!(unknown.status, 404);
    assert_eq!(
        unknown.header("content-type"),
        Some("text/html; charset=utf-8")
    );
    assert!(unknown.body.contains("未找到案件"), "{}", unknown.body);
    assert_eq!(
        d.get("/case/XZ-2026-0001")
            .header("content-security-policy"),
        Some(redlight::api::BOARD_CSP)
    );

    // Laid out for a phone (a chat message's link opens there: each row a card, nothing
    // past the screen's edge) and for a wall screen (the tables within their sections).
    for id in [&ids[0], &ids[1], &ids[3], &ids[4]] {
        for width in [390, 1600] {
            assert_eq!(
                page_layout_problems(&d, &profile, width, &format!("/case/{}", q(id))),
                "[]",
                "{id} at {width} px wide"
            );
        }
    }

    // A screenshot of a case with three clocks, an extension and four alerts, for people
    // to look at, on a wall screen and on a phone.
    for (file, size) in [
        ("redlight-case.png", "1600,1000"),
        ("redlight-case-phone.png", "390,1600"),
    ] {
        let shot = root().join("target").join(file);
        let _ = std::fs::remove_file(&shot);
        chromium(
            &[
                &format!("--screenshot={}", shot.display()),
                &format!("--window-size={size}"),
                &format!("{base}/case/XZ-2026-0001"),
            ],
            &profile,
        );
        let png = std::fs::read(&shot).expect("screenshot written");
        assert_eq!(&png[1..4], b"PNG");
        assert!(png.len() > 50_000, "{file}: a page, not a blank one");
    }
}

/// Runs `checks` (script statements pushing what they find wrong onto `found`) on the page
/// at `path` in Chromium `width` px wide, after layout; returns what they found, as a JSON
/// list. A copy of the page with the script (the pages have none), which writes its
/// findings into the DOM. Every page is also checked for being wider than the window.
fn measured_problems(d: &Daemon, profile: &Path, width: u32, path: &str, checks: &str) -> String {
    let page = d.get(path);
    let measure = format!(
        r#"<script>addEventListener('load', () => {{
  const found = [];
  const lines = (node) => {{
    const r = document.createRange();
    r.selectNodeContents(node);
    return new Set([...r.getClientRects()].map(r => Math.round(r.top))).size;
  }};
  {checks}
  const w = document.documentElement.scrollWidth;
  if (w > innerWidth) found.push('page ' + w + ' px wide in ' + innerWidth);
  const out = document.createElement('pre');
  out.id = 'layout';
  out.textContent = JSON.stringify(found);
  document.body.appendChild(out);
}});</script></body>"#
    );
    let measured = page.body.replace("</body>", &measure);
    assert_ne!(measured, page.body, "the page ends its body");
    let copy = d.dir.join("page-measured.html");
    std::fs::write(&copy, measured).expect("page copy written");
    let dom = chromium(
        &[
            "--dump-dom",
            &format!("--window-size={width},1000"),
            &format!("file://{}", copy.display()),
        ],
        profile,
    );
    text_after(&dom, "id=\"layout\"")
        .map(unescape)
        .unwrap_or_else(|| panic!("the measuring script ran on {path} at {width} px: {dom}"))
}

/// What is wrong with the board's layout in Chromium `width` px wide: case ids cut short,
/// a table header broken over lines, a department's name over more than two lines, a
/// list's title broken, the page wider than the window; on a phone's width (760 px and
/// less), lists side by side or out of the phone's order (red, yellow, departments).
fn layout_problems(d: &Daemon, profile: &Path, width: u32) -> String {
    let checks = r#"
  for (const e of document.querySelectorAll('.case-id')) {
    if (e.scrollWidth > e.clientWidth) found.push('case id cut: ' + e.textContent);
  }
  for (const e of document.querySelectorAll('th')) {
    if (lines(e) > 1) found.push('header broken over ' + lines(e) + ' lines: ' + e.textContent);
  }
  // A department's name as long as a city bureau's, beside four-digit counts: at most two
  // lines (it took three at 1,280 px when the counts had the same room as on a 1080p screen).
  for (const e of document.querySelectorAll('td.dept')) {
    if (lines(e) > 2) found.push('department over ' + lines(e) + ' lines: ' + e.textContent);
  }
  // The lists' titles whole (their notes go under them when the room is short).
  for (const e of document.querySelectorAll('h2')) {
    if (lines(e.firstChild) > 1) found.push('title broken: ' + e.firstChild.textContent);
  }
  // The header's totals' names each on one line (红灯 stood as 红 over 灯 on a phone).
  for (const e of document.querySelectorAll('.total .label')) {
    if (lines(e) > 1) found.push('total over ' + lines(e) + ' lines: ' + e.textContent);
  }
  if (innerWidth <= 760) {
    const main = document.querySelector('main').getBoundingClientRect();
    const top = (sel) => document.querySelector(sel).getBoundingClientRect();
    for (const e of document.querySelectorAll('main > section')) {
      const r = e.getBoundingClientRect();
      if (r.width < 0.9 * main.width) found.push(e.className + ' ' + Math.round(r.width) + ' px wide in ' + Math.round(main.width));
    }
    const order = ['section.cases-red', 'section.cases-yellow', 'section.departments'];
    for (let i = 1; i < order.length; i++) {
      if (top(order[i]).top <= top(order[i - 1]).top) found.push(order[i] + ' not under ' + order[i - 1]);
    }
  }"#;
    measured_problems(d, profile, width, "/", checks)
}

/// What is wrong with a page of tables (a case's, the scorecard's) in Chromium `width` px
/// wide: a table wider than its section (cut at the section's edge), a cell cut, the page
/// wider than the window; on a phone's width, a row's field without its column's name, or
/// a table header shown over the cards.
fn page_layout_problems(d: &Daemon, profile: &Path, width: u32, path: &str) -> String {
    let checks = r#"
  for (const t of document.querySelectorAll('table')) {
    const s = t.closest('section').getBoundingClientRect();
    const r = t.getBoundingClientRect();
    if (r.right > s.right + 1) found.push(t.closest('section').id + ': table ' + Math.round(r.right - s.right) + ' px past its section');
  }
  for (const c of document.querySelectorAll('td')) {
    if (c.scrollWidth > c.clientWidth + 1) found.push('cell cut: ' + c.textContent);
  }
  if (innerWidth <= 760) {
    for (const c of document.querySelectorAll('td[data-label]')) {
      if (c.textContent === '') continue;
      const label = getComputedStyle(c, '::before').content;
      if (!label.includes(c.dataset.label)) found.push('no label ' + c.dataset.label + ' before ' + c.textContent);
    }
    for (const h of document.querySelectorAll('table:not(.kv) thead')) {
      if (h.getBoundingClientRect().height > 0) found.push(h.closest('section').id + ': column headers shown');
    }
  }"#;
    measured_problems(d, profile, width, path, checks)
}

/// The board's header with the calendar's warning at its end (the shipped data alone, which
/// ends with 2026: from 60 days before its end the header says how many days are left, after
/// it that deadlines past it cannot be computed) still fits a 1280 px screen, the red and
/// yellow cases' ids show whole, and a city bureau's long name beside four-digit counts
/// takes at most two lines.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_board_fits_a_narrow_screen_with_the_calendars_warning() {
    // The fixed samples are dated in 2026: the shipped files up to it.
    let cal = shipped_calendars("board-calendars", 2020..=2026);
    let cal_path = cal.display().to_string();
    let mut d = Daemon::start_with(
        "board-narrow",
        1,
        "",
        "",
        &[("REDLIGHT_ENGINE__CALENDARS", cal_path.as_str())],
    )
    .await;
    let mut lines = fixed_samples();
    // Red cases with ids as long as registration numbers get, and longer: shown whole
    // (wrapped inside the column), never cut.
    let long_ids = [
        "XZSP-140900-2026-06-01-000123456",
        "忻州市行政审批服务管理局〔2026〕第000123号",
        "X".repeat(90).as_str(),
    ]
    .map(String::from);
    for (i, id) in long_ids.iter().enumerate() {
        lines.push(format!(
            r#"{{"specversion":"1.0","id":"long-{i}","source":"/t","type":"approval.accepted","time":"2026-06-01T09:00:00+08:00","subject":"{id}","data":{{"department":"市住建局","item":"建筑工程施工许可","handler":"张三","kind":"promised","promised_workdays":3}}}}"#
        ));
    }
    // A city bureau with 1,200 open cases: a long name beside four-digit counts (major
    // hazards reported an hour ago: 24 hours to investigate, green).
    let bureau = "石嘴山市住房和城乡建设局";
    let an_hour_ago = (chrono::Utc::now() - chrono::Duration::hours(1))
        .with_timezone(&chrono::FixedOffset::east_opt(8 * 3600).expect("+08:00"))
        .to_rfc3339();
    for i in 0..1200 {
        lines.push(format!(
            r#"{{"specversion":"1.0","id":"hz-{i}","source":"/t","type":"safety.hazard_reported","time":"{an_hour_ago}","subject":"HZ-{i:05}","data":{{"department":"{bureau}","location":"大武口区","major":true,"reporter":"李四"}}}}"#
        ));
    }
    produce(&broker(), &d.topic, &lines).await;
    d.wait_consumed(lines.len() as u64);
    std::thread::sleep(std::time::Duration::from_millis(1200));

    let page = d.get("/");
    assert!(
        page.body.contains(&format!(
            r#"<tr data-department="{bureau}"><td class="dept">"#
        )) && page.body.contains(">1200<"),
        "{bureau} listed with its 1200 open cases: {}",
        page.body
    );
    for id in &long_ids {
        assert!(
            page.body.contains(&format!(">{id}<")),
            "{id} listed: {}",
            page.body
        );
    }
    assert!(
        page.body.contains("节假日数据"),
        "the header warns of the calendar's end: {}",
        page.body
    );
    assert!(
        page.body.contains("class=\"case-id\""),
        "cases listed: {}",
        page.body
    );
    let profile = d.dir.join("chromium-profile");
    // A phone (a chat message's link opens there), a projector, a 1080p wall screen.
    for width in [390, 1280, 1920] {
        assert_eq!(
            layout_problems(&d, &profile, width),
            "[]",
            "at {width} px wide"
        );
    }
    let _ = std::fs::remove_dir_all(&cal);
}

/// The quick start on a day after the shipped calendar data ends (January 11 of the year
/// after its last file): it must not die on the two samples timed in workdays, which no
/// calendar places then; it leaves them out and says why, and the other samples still go
/// (the daemon stays ready and its /readyz warns). With a calendar that covers the day
/// (the tests' placeholders) every sample is placed, the workday ones by that calendar.
#[test]
fn the_quick_start_samples_still_come_after_the_calendar_data_ends() {
    let shipped_last = std::fs::read_dir(root().join("config/calendars"))
        .expect("config/calendars")
        .filter_map(|e| e.ok()?.path().file_stem()?.to_str()?.parse::<i32>().ok())
        .max()
        .expect("a calendar file");
    let day = format!("{}-01-11", shipped_last + 1);
    let now =
        chrono::DateTime::parse_from_rfc3339(&format!("{day}T10:00:00+08:00")).expect("an instant");
    let template = std::fs::read_to_string(root().join("config/samples/relative.jsonl"))
        .expect("config/samples/relative.jsonl");
    let lines = template.lines().filter(|l| !l.trim().is_empty()).count();
    let in_workdays = template
        .lines()
        .filter(|l| l.contains("@{workdays-"))
        .count();
    assert!(
        in_workdays > 0,
        "the template has samples timed in workdays"
    );

    let events = |config: &Path| quickstart_events(config, "T", Some(now.timestamp()));

    // The shipped calendar ends before the day.
    let out = events(&root().join("config/redlight.toml"));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "quickstart.sh events failed: {stderr}"
    );
    assert_eq!(stdout.lines().count(), lines - in_workdays, "{stdout}");
    assert!(!stdout.contains("@{"), "every token expanded: {stdout}");
    assert!(
        !stdout.contains(r#""subject":"XZ-T-02""#),
        "the workday-timed case is left out: {stdout}"
    );
    assert!(
        stderr.contains(&format!(
            "{in_workdays} sample event(s) timed in workdays left out"
        )) && stderr.contains("config/calendars/README.md"),
        "says what was left out and what to add: {stderr}"
    );

    // The tests' calendar covers the day: all of them, XZ-T-02 accepted 19 of its
    // workdays before the day, at 10:00.
    let dir = std::env::temp_dir().join(unique("quickstart-after-data"));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let config = write_config(&dir, "127.0.0.1:9", "t", "127.0.0.1:0", "", "");
    let out = events(&config);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "quickstart.sh events failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(stdout.lines().count(), lines, "{stdout}");
    let accepted: Value = stdout
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).expect("a JSON sample"))
        .find(|e| e["subject"] == "XZ-T-02" && e["type"] == "approval.accepted")
        .expect("XZ-T-02 accepted");
    let accepted_day = accepted["time"]
        .as_str()
        .and_then(|t| t.strip_suffix("T10:00:00+08:00"))
        .expect("accepted at 10:00 Beijing time")
        .to_string();
    let add = Command::new(env!("CARGO_BIN_EXE_redlight"))
        .args(["calendar", "--config"])
        .arg(&config)
        .args(["add", &accepted_day, "19"])
        .output()
        .expect("redlight calendar add");
    assert_eq!(String::from_utf8_lossy(&add.stdout).trim(), day);
    let _ = std::fs::remove_dir_all(&dir);
}
