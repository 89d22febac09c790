//! The JSON API against the real daemon binary and the real broker: `REDLIGHT_TEST_KAFKA`
//! if set, else the local broker of `scripts/kafka.sh`. Every test starts its own daemon
//! with its own topic, consumer group, data directory and port.

mod view_support;

use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use view_support::*;

fn ids(v: &Value) -> Vec<String> {
    v["cases"]
        .as_array()
        .expect("cases array")
        .iter()
        .map(|c| c["id"].as_str().expect("id").to_string())
        .collect()
}

/// Every page of `/api/v1/cases?<query>`, following `next`.
fn all_pages(d: &Daemon, query: &str, limit: usize) -> Vec<Value> {
    let mut out = Vec::new();
    let mut cursor: Option<String> = None;
    for _ in 0..1000 {
        let path = match &cursor {
            Some(c) => format!("/api/v1/cases?{query}&limit={limit}&cursor={c}"),
            None => format!("/api/v1/cases?{query}&limit={limit}"),
        };
        let page = d.json(&path);
        let cases = page["cases"].as_array().expect("cases").clone();
        assert!(cases.len() <= limit, "a page holds at most `limit` cases");
        out.extend(cases);
        match page["next"].as_str() {
            Some(n) => cursor = Some(n.to_string()),
            None => return out,
        }
    }
    panic!("paging did not end");
}

/// The rows of a spreadsheet answer (`text/csv`, UTF-8 after a byte order mark), the
/// column names first.
fn sheet(r: &Resp) -> Vec<Vec<String>> {
    assert_eq!(
        r.header("content-type"),
        Some("text/csv; charset=utf-8"),
        "{}",
        r.body
    );
    let text = r.body.strip_prefix('\u{feff}').unwrap_or_else(|| {
        panic!(
            "no byte order mark, which Excel needs for Chinese: {:?}",
            r.body
        )
    });
    csv::ReaderBuilder::new()
        .has_headers(false)
        .from_reader(text.as_bytes())
        .records()
        .map(|row| row.expect("a CSV row").iter().map(str::to_string).collect())
        .collect()
}

/// An RFC 3339 instant as the spreadsheets write it.
fn sheet_time(rfc3339: &Value) -> String {
    rfc3339.as_str().map_or(String::new(), |t| {
        chrono::DateTime::parse_from_rfc3339(t)
            .expect("an RFC 3339 instant")
            .format("%Y-%m-%d %H:%M:%S")
            .to_string()
    })
}

/// `/api/v1/cases.csv`: every case the filters keep, as `/api/v1/cases` lists them, in a
/// spreadsheet with Chinese column names; the board links its lists' exports, and each
/// holds as many cases as the board counts. A text from an event that a spreadsheet would
/// run as a formula stays text.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cases_export_as_a_spreadsheet_as_the_api_lists_them() {
    let stamp = "T9";
    let mut d = fed_daemon("api-csv", stamp).await;
    // A case whose handler and item a producer wrote as spreadsheet formulas.
    let formula = [
        r#"{"specversion":"1.0","id":"F-1","source":"/t","type":"approval.accepted","time":"2026-07-07T10:00:00+08:00","subject":"=1+1","data":{"department":"市住建局","item":"@SUM(A1)","handler":"=HYPERLINK(\"http://x\",\"点我\")","kind":"promised","promised_workdays":5}}"#.to_string(),
    ];
    produce(&broker(), &d.topic, &formula).await;
    d.wait_consumed(1);

    for query in [
        "light=red&open=true",
        "light=yellow&open=true",
        "open=true",
        "",
    ] {
        let path = format!("/api/v1/cases.csv?{query}");
        let r = d.get(&path);
        assert_eq!(r.status, 200, "{path}: {}", r.body);
        let disposition = r.header("content-disposition").expect("a file name");
        assert!(
            disposition.starts_with("attachment; filename=\"redlight-cases")
                && disposition.ends_with(".csv\""),
            "{disposition}"
        );
        let rows = sheet(&r);
        assert_eq!(
            rows[0],
            [
                "案件编号",
                "灯色",
                "状态",
                "部门",
                "事项",
                "经办人",
                "最紧迫规则",
                "情况",
                "最近期限",
                "各规则灯色",
                "首次事件",
                "最近事件"
            ],
            "{path}"
        );
        let listed = all_pages(&d, query, 1000);
        assert_eq!(
            rows.len() - 1,
            listed.len(),
            "{path}: one row per listed case"
        );
        for (row, c) in rows[1..].iter().zip(&listed) {
            let text = |k: &str| c[k].as_str().unwrap_or("").to_string();
            let id = text("id");
            let inert = |t: String| {
                if t.starts_with(['=', '@', '+', '-']) {
                    format!("'{t}")
                } else {
                    t
                }
            };
            assert_eq!(
                row[0],
                inert(id.clone()),
                "{path}: the same order as the API"
            );
            let light = match c["light"].as_str() {
                Some("red") => "红灯",
                Some("yellow") => "黄灯",
                _ => "绿灯",
            };
            assert_eq!(row[1], light, "{id}");
            assert_eq!(row[2], case_state(c), "{id}");
            assert_eq!(row[3], text("department"), "{id}");
            assert_eq!(row[4], inert(text("item")), "{id}");
            assert_eq!(row[5], inert(text("handler")), "{id}");
            assert_eq!(row[8], sheet_time(&c["next_deadline"]), "{id}");
            for r in c["rules"].as_array().expect("rules") {
                let rule = r["rule"].as_str().expect("rule id");
                assert!(
                    row[9].contains(&format!("（{rule}）：")),
                    "{id}: {rule} in {}",
                    row[9]
                );
            }
            // The most urgent rule is one of the case's; every red or yellow case has one.
            if c["open"] == true && c["light"] != "green" {
                assert!(!row[6].is_empty(), "{id}: no most urgent rule");
            }
            if !row[6].is_empty() {
                assert!(
                    row[9].contains(&format!("{}（", row[6])),
                    "{id}: {} among {}",
                    row[6],
                    row[9]
                );
            }
            assert_eq!(row[10], sheet_time(&c["first_event"]), "{id}");
            assert_eq!(row[11], sheet_time(&c["last_event"]), "{id}");
        }
        if query.starts_with("light=red") {
            assert!(
                rows.iter().any(|r| r[0] == format!("XZ-{stamp}-03")),
                "{path}"
            );
            assert!(rows[1..].iter().all(|r| r[1] == "红灯" && r[2] == "在办"));
        }
    }
    // The formulas stay text.
    let rows = sheet(&d.get("/api/v1/cases.csv?department=%E5%B8%82%E4%BD%8F%E5%BB%BA%E5%B1%80"));
    let f = rows
        .iter()
        .find(|r| r[0] == "'=1+1")
        .expect("the formula case, as text");
    assert_eq!(f[4], "'@SUM(A1)");
    assert_eq!(f[5], "'=HYPERLINK(\"http://x\",\"点我\")");

    // The board's lists link their exports, which hold as many cases as the board counts.
    let board = d.get("/").body;
    // Each listed case's rule and time say what the board says of it (the time's first
    // word: the minutes may have moved on between the two requests).
    let rows = sheet(&d.get("/api/v1/cases.csv?open=true"));
    for item in board.split(r#"<li class=""#).skip(1) {
        let field = |after: &str| {
            item.split(after)
                .nth(1)
                .and_then(|t| t.split('<').next())
                .unwrap_or_else(|| panic!("{after} in {item}"))
                .to_string()
        };
        let id = text_after(item, r#"class="case-id""#)
            .unwrap_or_else(|| panic!("a case id in {item}"))
            .to_string();
        let time = field(r#"<span class="time">"#);
        let l2 = item
            .split(r#"<div class="l2">"#)
            .nth(1)
            .expect("the entry's second line");
        let l2 = l2.split("</span> · ").last().unwrap_or(l2);
        let rule_title = l2.split(" · ").next().expect("the rule's title");
        let row = rows
            .iter()
            .find(|r| r[0] == id || r[0] == format!("'{id}"))
            .unwrap_or_else(|| panic!("{id} in the export"));
        assert_eq!(row[6], rule_title, "{id}");
        let word = time.split([' ', '：']).next().expect("a word");
        assert!(
            row[7].contains(word),
            "{id}: the board says {time:?}, the export {:?}",
            row[7]
        );
        if let Some(wd) = item.split(r#"<span class="wd">"#).nth(1) {
            let wd = wd.split('<').next().expect("workdays");
            assert!(row[7].ends_with(wd), "{id}: {wd} in {:?}", row[7]);
        }
    }
    for (light, title) in [("red", "红灯案件"), ("yellow", "黄灯案件")] {
        let section = board
            .split(&format!(r#"<section class="cases-{light}">"#))
            .nth(1)
            .unwrap_or_else(|| panic!("the {title} list"));
        let total: usize = section
            .split("共 ")
            .nth(1)
            .and_then(|t| t.split(' ').next())
            .and_then(|n| n.parse().ok())
            .expect("the list's count");
        let href = section
            .split(r#"<a class="export" href=""#)
            .nth(1)
            .and_then(|t| t.split('"').next())
            .expect("the list's export link")
            .replace("&amp;", "&");
        assert_eq!(href, format!("api/v1/cases.csv?light={light}&open=true"));
        let rows = sheet(&d.get(&format!("/{href}")));
        assert_eq!(
            rows.len() - 1,
            total,
            "{title}: the export holds what the board counts"
        );
    }

    // The footer links this quarter's scorecard, whose page links it as a spreadsheet.
    let href = board
        .split("<footer>")
        .nth(1)
        .and_then(|f| f.split(r#"<a class="scorecard" href=""#).nth(1))
        .and_then(|t| t.split('"').next())
        .expect("the footer's scorecard link");
    assert_eq!(href, "scorecard");
    let page = d.get(&format!("/{href}"));
    assert_eq!(page.status, 200, "{}", page.body);
    let href = page
        .body
        .split(r#"id="export" href=""#)
        .nth(1)
        .and_then(|t| t.split('"').next())
        .expect("the scorecard's export link");
    assert!(href.starts_with("api/v1/scorecard.csv?period="), "{href}");
    let rows = sheet(&d.get(&format!("/{href}")));
    assert_eq!(rows[0][..2], ["部门", "考核期"]);

    // What /api/v1/cases refuses, the export refuses; paging is not its business.
    for (path, word) in [
        ("/api/v1/cases.csv?light=purple", "light"),
        ("/api/v1/cases.csv?rule=xk.nonsense", "rule"),
        ("/api/v1/cases.csv?open=maybe", "open"),
        ("/api/v1/cases.csv?limit=5", "`limit` is not taken here"),
        (
            "/api/v1/cases.csv?lihgt=red",
            "unknown query parameter `lihgt`",
        ),
    ] {
        let r = d.get(path);
        assert_eq!(r.status, 400, "{path}: {}", r.body);
        assert!(r.body.contains(word), "{path}: {}", r.body);
    }
}

/// The number in the first element after `marker` of the board's HTML.
fn number_after(html: &str, marker: &str) -> u64 {
    text_after(html, marker)
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("a number after {marker:?}"))
}

/// The board's counts of one department's row: red, yellow, green, open.
fn department_row(html: &str, dept: &str) -> [u64; 4] {
    let (red, yellow, green) = department_rows(html)[dept];
    let row = html
        .split(&format!(r#"<tr data-department="{dept}">"#))
        .nth(1)
        .unwrap_or_else(|| panic!("{dept}'s row"));
    [red, yellow, green, number_after(row, r#"class="n all""#)]
}

/// `/?department=…`: a department's own board, for the screen in its hall. The whole
/// board's department names link it; it counts and lists that department's open cases
/// only, as the whole board counts them, names the department in its title, and its
/// exports keep to the department.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_department_has_its_own_board() {
    let d = fed_daemon("api-dept-board", "T8").await;
    let dept = "杭州市应急管理局";
    let whole = d.get("/").body;
    let row = department_row(&whole, dept);
    assert!(row[0] >= 2, "the samples give {dept} red cases: {row:?}");
    let href = whole
        .split(&format!(
            r#"<tr data-department="{dept}"><td class="dept"><a href=""#
        ))
        .nth(1)
        .and_then(|t| t.split('"').next())
        .expect("the department's link");
    assert_eq!(
        href,
        "?department=%E6%9D%AD%E5%B7%9E%E5%B8%82%E5%BA%94%E6%80%A5%E7%AE%A1%E7%90%86%E5%B1%80"
    );

    let own = d.get(&format!("/{href}"));
    assert_eq!(own.status, 200);
    let own = own.body;
    assert!(own.contains(&format!("· {dept}</h1>")), "{own}");
    let total = |light: &str| {
        let header = own
            .split(&format!(r#"id="total-{light}""#))
            .nth(1)
            .expect("the header's total");
        number_after(header, r#"<span class="n""#)
    };
    let totals = [
        total("red"),
        total("yellow"),
        total("green"),
        number_after(&own, r#"id="total-open""#),
    ];
    assert_eq!(
        totals, row,
        "the department's board counts what its row counts"
    );
    assert_eq!(department_row(&own, dept), row);
    assert_eq!(
        own.matches("<tr data-department=").count(),
        1,
        "only its own row"
    );
    assert!(
        own.contains(r#"<a class="export" href="./""#),
        "a link back to the whole board"
    );

    // Its lists hold its own cases only, as many as it counts.
    let by_id: BTreeMap<String, String> = all_pages(&d, "open=true", 1000)
        .iter()
        .map(|c| {
            (
                c["id"].as_str().expect("id").to_string(),
                c["department"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect();
    let listed = [listed(&own, "red"), listed(&own, "yellow")].concat();
    assert_eq!(listed.len() as u64, row[0] + row[1], "{listed:?}");
    for id in &listed {
        assert_eq!(
            by_id.get(id).map(String::as_str),
            Some(dept),
            "{id} on {dept}'s board"
        );
    }
    // Its red list's export keeps to it.
    let export = own
        .split(r#"<section class="cases-red">"#)
        .nth(1)
        .and_then(|t| t.split(r#"<a class="export" href=""#).nth(1))
        .and_then(|t| t.split('"').next())
        .expect("the red list's export")
        .replace("&amp;", "&");
    let rows = sheet(&d.get(&format!("/{export}")));
    assert_eq!(rows.len() as u64 - 1, row[0], "{export}");
    assert!(
        rows[1..].iter().all(|r| r[1] == "红灯" && r[3] == dept),
        "{rows:?}"
    );

    // A name no case has (mistyped): its board, empty, says so, with the names it may
    // have meant.
    let none = d.get("/?department=%E6%97%A0%E6%AD%A4%E5%B1%80").body;
    assert!(none.contains("· 无此局</h1>"), "{none}");
    assert_eq!(number_after(&none, r#"id="total-open""#), 0);
    assert_eq!(
        text_after(&none, r#"id="unknown-department""#),
        Some("没有部门名为“无此局”的案件；请从全部部门的看板点选部门")
    );
    let short = d.get(&format!("/?department={}", q("住建局"))).body;
    let note = short
        .split(r#"id="unknown-department">"#)
        .nth(1)
        .and_then(|t| t.split("</td>").next())
        .expect("the note");
    assert!(
        note.contains(&format!(
            r#"<a href="?department={}">市住建局</a>"#,
            q("市住建局")
        )),
        "{note}"
    );
    // A department that is known, with nothing open, is not told it is mistyped.
    let closed = d.get(&format!("/?department={}", q("市交通局"))).body;
    assert!(!closed.contains("unknown-department"), "{closed}");
    assert!(closed.contains("暂无在办案件"), "{closed}");
    assert!(!closed.contains("ignored-params"), "{closed}");
    // A parameter the board does not take (a mistyped bookmark) shows the whole board, as
    // a page for people does not refuse, but the board says it ignored it.
    let mistyped = d
        .get(&format!("/?departmnt={}&x=1&x=2", q("市住建局")))
        .body;
    assert_eq!(
        number_after(&mistyped, r#"id="total-open""#),
        number_after(&d.get("/").body, r#"id="total-open""#)
    );
    assert_eq!(
        text_after(&mistyped, r#"id="ignored-params""#),
        Some("已忽略本页不认识的参数 “departmnt”、“x”；本页的参数：“department”")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cases_are_listed_filtered_and_paged() {
    let stamp = "T1";
    let d = fed_daemon("api-cases", stamp).await;

    let all = d.json("/api/v1/cases?limit=1000");
    assert!(all["next"].is_null());
    let by_id: BTreeMap<String, Value> = all["cases"]
        .as_array()
        .expect("cases")
        .iter()
        .map(|c| (c["id"].as_str().expect("id").to_string(), c.clone()))
        .collect();
    for (pattern, light, dept) in RELATIVE_LIGHTS {
        let id = pattern.replace("{}", stamp);
        let c = by_id.get(&id).unwrap_or_else(|| panic!("{id} listed"));
        assert_eq!(c["light"], *light, "{id}: {c}");
        assert_eq!(c["department"], *dept, "{id}");
        assert_eq!(c["open"], true, "{id}");
    }
    // A withdrawn sample is stored but not open.
    assert!(
        by_id
            .values()
            .any(|c| c["withdrawn"] == true && c["open"] == false)
    );

    // light=…: exactly the cases of that colour.
    for light in ["red", "yellow", "green"] {
        let got: BTreeSet<String> =
            ids(&d.json(&format!("/api/v1/cases?light={light}&limit=1000")))
                .into_iter()
                .collect();
        let want: BTreeSet<String> = by_id
            .iter()
            .filter(|(_, c)| c["light"] == light)
            .map(|(k, _)| k.clone())
            .collect();
        assert_eq!(got, want, "light={light}");
    }
    let red = d.json("/api/v1/cases?light=red&limit=1000");
    assert!(ids(&red).contains(&format!("XZ-{stamp}-03")));

    // department=… (the byte pre-filter must not lose or add cases).
    let dept = d.json(&format!(
        "/api/v1/cases?department={}&limit=1000",
        q("杭州市应急管理局")
    ));
    let got: BTreeSet<String> = ids(&dept).into_iter().collect();
    let want: BTreeSet<String> = by_id
        .iter()
        .filter(|(_, c)| c["department"] == "杭州市应急管理局")
        .map(|(k, _)| k.clone())
        .collect();
    assert_eq!(got, want);
    assert!(got.len() >= 5);

    // rule=… with light: the rule's own light in the case.
    let r = d.json("/api/v1/cases?rule=hz.hazard_investigation&light=yellow&limit=1000");
    assert!(ids(&r).contains(&format!("HZ-H-{stamp}-2")));
    assert!(!ids(&r).contains(&format!("HZ-H-{stamp}-1")));
    let r = d.json("/api/v1/cases?rule=xz.immediate&open=true&limit=1000");
    assert!(ids(&r).contains(&format!("XZ-{stamp}-03")));
    for c in r["cases"].as_array().expect("cases") {
        assert!(
            c["rules"]
                .as_array()
                .expect("rules")
                .iter()
                .any(|x| x["rule"] == "xz.immediate"),
            "{c}"
        );
    }

    // Paging: pages of 3 give every case once, in the same order as one big page.
    let paged: Vec<String> = all_pages(&d, "open=true", 3)
        .iter()
        .map(|c| c["id"].as_str().expect("id").to_string())
        .collect();
    let whole = ids(&d.json("/api/v1/cases?open=true&limit=1000"));
    assert_eq!(paged, whole);
    assert!(whole.len() > 6);

    // Bad parameters are refused with the parameter named.
    for (path, word) in [
        ("/api/v1/cases?light=purple", "light"),
        ("/api/v1/cases?rule=xk.nonsense", "rule"),
        ("/api/v1/cases?limit=0", "limit"),
        ("/api/v1/cases?limit=abc", "limit"),
        ("/api/v1/cases?cursor=zzzz", "cursor"),
        ("/api/v1/cases?open=maybe", "open"),
        // A parameter the endpoint does not take is refused, never ignored: an unfiltered
        // list must not be taken for a filtered one.
        ("/api/v1/cases?offset=5", "unknown query parameter `offset`"),
        ("/api/v1/cases?lihgt=red", "`lihgt`"),
        (
            "/api/v1/cases?light=red&light=yellow",
            "`light` is given twice",
        ),
        (
            "/api/v1/deliveries/dead?after=abc",
            "query parameter `after`",
        ),
        ("/api/v1/deliveries/waiting?reciever=x", "`reciever`"),
        (
            "/api/v1/input/dead-letters?limit=x",
            "query parameter `limit`",
        ),
        // A page size out of range is refused as the cases endpoint refuses it, not clamped.
        (
            "/api/v1/deliveries/dead?limit=0",
            "expected a number from 1 to 10000",
        ),
        (
            "/api/v1/input/dead-letters?limit=5000",
            "`limit` is \"5000\"",
        ),
        ("/api/v1/scorecard?period=2026&department=x", "`department`"),
        // Endpoints that take no parameters refuse them too.
        (
            "/api/v1/cases/XZ-2026-0001?x=1",
            "unknown query parameter `x`",
        ),
        ("/api/v1/deliveries?x=1", "unknown query parameter `x`"),
        // An id that is not UTF-8 once decoded: refused in JSON, as everything else.
        ("/api/v1/cases/%FF", "UTF-8"),
    ] {
        let r = d.get(path);
        assert_eq!(r.status, 400, "{path}: {}", r.body);
        let v: serde_json::Value = serde_json::from_str(&r.body).expect("a JSON error");
        let e = v["error"].as_str().expect("error");
        assert!(e.contains(word), "{path}: {e}");
    }
    // A path nothing answers, or a method a path does not take: the API's JSON errors too.
    let r = d.get("/api/v1/case/XZ-1");
    assert_eq!(r.status, 404, "{}", r.body);
    assert!(
        r.body.contains("no such path `/api/v1/case/XZ-1`"),
        "{}",
        r.body
    );
    let r = post(d.port, "/api/v1/cases", "", &[]).expect("POST");
    assert_eq!(r.status, 405, "{}", r.body);
    assert!(r.body.contains("`POST` is not allowed"), "{}", r.body);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_case_shows_its_clocks_deadlines_time_counted_and_alerts() {
    let stamp = "T2";
    let d = fed_daemon("api-case", stamp).await;

    let id = format!("XZ-{stamp}-02");
    let c = d.json(&format!("/api/v1/cases/{id}"));
    assert_eq!(c["id"], id.as_str());
    assert_eq!(c["light"], "yellow");
    assert_eq!(c["department"], "市住建局");
    assert_eq!(c["events"]["count"], 2, "{c}");
    let types = c["events"]["types"].as_array().expect("types");
    assert!(types.iter().any(|t| t == "approval.accepted"));
    let clocks = c["clocks"].as_array().expect("clocks");
    let decision = clocks
        .iter()
        .find(|k| k["rule"] == "xk.decision")
        .expect("xk.decision clock");
    assert_eq!(decision["state"], "running");
    assert_eq!(decision["light"], "yellow");
    assert_eq!(decision["limit"]["amount"], 20.0);
    assert_eq!(decision["limit"]["unit"], "workdays");
    assert!(
        decision["deadline"]
            .as_str()
            .is_some_and(|s| s.ends_with("T00:00:00+08:00"))
    );
    let counted = decision["counted"]["value"].as_f64().expect("counted");
    assert!((18.0..20.0).contains(&counted), "counted {counted}");
    assert!(
        decision["remaining_seconds"]
            .as_i64()
            .is_some_and(|s| s > 0)
    );
    assert_eq!(decision["title"], "行政许可决定期限");
    let alerts = c["alerts"].as_array().expect("alerts");
    assert!(
        alerts.iter().any(|a| a["alert"]["rule"] == "xk.decision"
            && a["alert"]["level"] == "yellow"
            && a["alert"]["status"] == "firing"),
        "{c}"
    );
    assert!(alerts.iter().all(|a| a["alert"]["case"] == id.as_str()));

    // A stopped clock keeps its deadline and the time it counted.
    let c = d.json("/api/v1/cases/XZ-2026-0001");
    let notify = c["clocks"]
        .as_array()
        .expect("clocks")
        .iter()
        .find(|k| k["rule"] == "xk.notify_incomplete")
        .expect("xk.notify_incomplete");
    assert_eq!(notify["state"], "stopped");
    assert!(
        notify["counted"]["value"].as_f64().is_some_and(|v| v > 0.0),
        "{notify}"
    );
    assert!(notify["stopped"].is_string());

    // Violations are listed with their rule and what broke.
    let c = d.json("/api/v1/cases/XZ-2026-0003");
    let v = c["violations"].as_array().expect("violations");
    assert!(!v.is_empty(), "{c}");
    assert_eq!(v[0]["rule"], "xz.stages");
    assert!(v[0]["detail"].as_str().is_some_and(|s| s.contains("stage")));
    assert_eq!(c["light"], "red");

    // Periodic duties show the period watched and the ones missed.
    let c = d.json(&format!("/api/v1/cases/{}", q("dept:杭州市建委")));
    let duty = &c["duties"][0];
    assert_eq!(duty["rule"], "hz.safety_meeting");
    assert!(
        duty["missing"].as_array().is_some_and(|m| !m.is_empty()),
        "{c}"
    );

    let r = d.get("/api/v1/cases/NO-SUCH-CASE");
    assert_eq!(r.status, 404);
    assert!(r.body.contains("error"));
}

/// With more red cases than `board.list_max`, the board says how many it leaves out and
/// links the export that holds them all (on a department's board, the department's).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_board_links_the_whole_list_it_cuts_short() {
    let stamp = "T9";
    let env = [
        ("REDLIGHT_ENGINE__RETENTION_DAYS", "36500"),
        ("REDLIGHT_BOARD__LIST_MAX", "1"),
    ];
    let mut d = Daemon::start_with("api-more", 2, "", "", &env).await;
    let mut lines = fixed_samples();
    lines.extend(d.relative_samples(stamp));
    let n = lines.len() as u64;
    produce(&broker(), &d.topic, &lines).await;
    d.wait_consumed(n);
    std::thread::sleep(std::time::Duration::from_millis(1200));

    for (board, query) in [
        (d.get("/").body, String::new()),
        (
            d.get(&format!("/?department={}", q("杭州市应急管理局")))
                .body,
            format!("&department={}", q("杭州市应急管理局")),
        ),
    ] {
        let total = board.find("id=\"total-red\"").expect("the red total");
        let red = number_after(&board[total..], "class=\"n\"");
        assert!(red > 1, "more reds than listed: {red}");
        assert_eq!(listed(&board, "red").len(), 1, "list_max");
        let section = board
            .split("class=\"cases-red\"")
            .nth(1)
            .and_then(|s| s.split("</section>").next())
            .expect("the red section");
        let more = section
            .split("<div class=\"more\">")
            .nth(1)
            .unwrap_or_else(|| panic!("a note of the cases left out: {section}"));
        assert!(
            more.starts_with(&format!("另有 {} 件未列出", red - 1)),
            "{more}"
        );
        let href = more
            .split("href=\"")
            .nth(1)
            .and_then(|h| h.split('"').next())
            .expect("a link")
            .replace("&amp;", "&");
        assert_eq!(href, format!("api/v1/cases.csv?light=red&open=true{query}"));
        let rows = sheet(&d.get(&format!("/{href}")));
        assert_eq!(
            rows.len() as u64 - 1,
            red,
            "the export holds every red case"
        );
    }
}

/// A case closed long ago is forgotten `engine.retention_days` (30) after its last event;
/// its alerts are kept, and both the API and the case's page say so and list them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forgotten_case_keeps_its_alerts_in_the_api_and_on_its_page() {
    let mut d = Daemon::start("api-forgotten", 1, "").await;
    let id = "OLD-2025-0001";
    let event = |n: u32, kind: &str, time: &str, data: &str| {
        format!(
            r#"{{"specversion":"1.0","id":"old-{n}","source":"/t","type":"{kind}","time":"{time}","subject":"{id}","data":{data}}}"#
        )
    };
    // An immediate case (即办件) decided the next day: red at the end of its day, then
    // resolved late; reviewed and its certificate issued in time, so that every clock
    // stops. Everything in March 2025.
    let lines = vec![
        event(
            1,
            "approval.accepted",
            "2025-03-03T09:00:00+08:00",
            r#"{"department":"市住建局","item":"建筑工程施工许可","handler":"周九","kind":"immediate"}"#,
        ),
        event(2, "approval.reviewed", "2025-03-03T10:00:00+08:00", "{}"),
        event(
            3,
            "approval.decided",
            "2025-03-04T10:00:00+08:00",
            r#"{"outcome":"approved"}"#,
        ),
        event(
            4,
            "approval.certificate_issued",
            "2025-03-04T10:30:00+08:00",
            "{}",
        ),
        event(5, "approval.completed", "2025-03-04T11:00:00+08:00", "{}"),
    ];
    produce(&broker(), &d.topic, &lines).await;
    d.wait_consumed(5);
    let mut c = Value::Null;
    for _ in 0..100 {
        c = d.json(&format!("/api/v1/cases/{id}"));
        if c["forgotten"] == true {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert_eq!(c["forgotten"], true, "{c}");
    let alerts: Vec<&str> = c["alerts"]
        .as_array()
        .expect("alerts")
        .iter()
        .map(|a| a["alert"]["id"].as_str().expect("id"))
        .collect();
    assert!(alerts.len() >= 2, "the red and its resolution: {c}");

    let page = d.get(&format!("/case/{id}"));
    assert_eq!(page.status, 200);
    assert!(page.body.contains("id=\"forgotten\""), "{}", page.body);
    let shown: Vec<&str> = page
        .body
        .split("data-alert=\"")
        .skip(1)
        .filter_map(|s| s.split('"').next())
        .collect();
    assert_eq!(shown, alerts, "the kept alerts, in order");
    // The red resolved late: the page says so in words.
    assert!(page.body.contains("超期办结"), "{}", page.body);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alerts_are_filtered_by_case_rule_level_status_and_department() {
    let stamp = "T3";
    let d = fed_daemon("api-alerts", stamp).await;

    let all = d.json("/api/v1/alerts?limit=10000");
    let all_items = all["alerts"].as_array().expect("alerts").clone();
    assert!(all_items.len() > 10);
    let seqs: Vec<u64> = all_items
        .iter()
        .map(|a| a["seq"].as_u64().expect("seq"))
        .collect();
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "in order");

    let count = |f: &dyn Fn(&Value) -> bool| all_items.iter().filter(|a| f(&a["alert"])).count();
    let red = d.json("/api/v1/alerts?level=red&limit=10000");
    assert_eq!(
        red["alerts"].as_array().expect("alerts").len(),
        count(&|a| a["level"] == "red")
    );
    let resolved = d.json("/api/v1/alerts?status=resolved&limit=10000");
    assert_eq!(
        resolved["alerts"].as_array().expect("alerts").len(),
        count(&|a| a["status"] == "resolved")
    );
    let rule = d.json("/api/v1/alerts?rule=xk.decision&level=red&status=firing&limit=10000");
    for a in rule["alerts"].as_array().expect("alerts") {
        assert_eq!(a["alert"]["rule"], "xk.decision");
        assert_eq!(a["alert"]["level"], "red");
    }
    let dept = d.json(&format!(
        "/api/v1/alerts?department={}&limit=10000",
        q("杭州市应急管理局")
    ));
    assert_eq!(
        dept["alerts"].as_array().expect("alerts").len(),
        count(&|a| a["department"] == "杭州市应急管理局")
    );
    let case = format!("HZ-A-{stamp}-1");
    let by_case = d.json(&format!("/api/v1/alerts?case={case}"));
    let items = by_case["alerts"].as_array().expect("alerts");
    assert_eq!(items.len(), count(&|a| a["case"] == case.as_str()));
    assert!(items.iter().any(|a| a["alert"]["level"] == "red"));

    // Paging with `after` and `next`.
    let first = d.json("/api/v1/alerts?limit=5");
    let next = first["next"].as_u64().expect("next");
    assert_eq!(next, seqs[4]);
    let second = d.json(&format!("/api/v1/alerts?limit=5&after={next}"));
    assert_eq!(second["alerts"][0]["seq"].as_u64(), Some(seqs[5]));

    for (path, word) in [
        ("/api/v1/alerts?level=orange", "level"),
        ("/api/v1/alerts?status=open", "status"),
        ("/api/v1/alerts?after=x", "after"),
        ("/api/v1/alerts?reason=late", "reason"),
        ("/api/v1/alerts?since=2026-11-01", "since"),
    ] {
        let r = d.get(path);
        assert_eq!(r.status, 400, "{path}");
        assert!(r.body.contains(word), "{path}: {}", r.body);
    }
}

/// A hazard report and its investigation `hours` later (24-hour limit: late beyond it).
fn hazard(case: &str, dept: &str, at: &str, hours: i64) -> Vec<String> {
    let t = chrono::DateTime::parse_from_rfc3339(at).expect("time");
    let stop = t + chrono::Duration::hours(hours);
    vec![
        format!(
            r#"{{"specversion":"1.0","id":"{case}-r","source":"/t","type":"safety.hazard_reported","time":"{}","subject":"{case}","data":{{"department":"{dept}","major":true,"location":"x"}}}}"#,
            t.to_rfc3339()
        ),
        format!(
            r#"{{"specversion":"1.0","id":"{case}-i","source":"/t","type":"safety.hazard_investigation_started","time":"{}","subject":"{case}","data":{{}}}}"#,
            stop.to_rfc3339()
        ),
    ]
}

fn concealed(case: &str, dept: &str, at: &str) -> String {
    format!(
        r#"{{"specversion":"1.0","id":"{case}-d","source":"/t","type":"safety.accident_discovered","time":"{at}","subject":"{case}","data":{{"department":"{dept}","by":"媒体"}}}}"#
    )
}

/// A department's line of a scorecard.
fn department_line(card: &Value, dept: &str) -> Value {
    card["departments"]
        .as_array()
        .expect("departments")
        .iter()
        .find(|l| l["department"] == dept)
        .unwrap_or_else(|| panic!("{dept} in {card}"))
        .clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_scorecard_grades_departments_and_flags_two_unqualified_years() {
    let d = Daemon::start("api-score", 2, "").await;
    let mut lines = Vec::new();
    // 2025: 乙局 late once (不合格).
    lines.extend(hazard("Y25-1", "乙局", "2025-05-06T09:00:00+08:00", 30));
    // 2026Q3: 甲局 five on time (优秀); 乙局 one on time, two late, a violation (不合格);
    // 丙局 nine on time and one late (90%: 合格).
    for i in 0..5 {
        lines.extend(hazard(
            &format!("J-{i}"),
            "甲局",
            "2026-07-06T09:00:00+08:00",
            2,
        ));
    }
    lines.extend(hazard("Y-1", "乙局", "2026-08-03T09:00:00+08:00", 3));
    lines.extend(hazard("Y-2", "乙局", "2026-08-03T09:00:00+08:00", 26));
    lines.extend(hazard("Y-3", "乙局", "2026-08-10T09:00:00+08:00", 48));
    lines.push(concealed("Y-4", "乙局", "2026-09-01T10:00:00+08:00"));
    for i in 0..9 {
        lines.extend(hazard(
            &format!("B-{i}"),
            "丙局",
            "2026-09-07T09:00:00+08:00",
            5,
        ));
    }
    lines.extend(hazard("B-9", "丙局", "2026-09-07T09:00:00+08:00", 25));
    // A withdrawn approval is not a closed case.
    lines.push(r#"{"specversion":"1.0","id":"W-a","source":"/t","type":"approval.accepted","time":"2026-07-07T10:00:00+08:00","subject":"W-1","data":{"department":"甲局","item":"x","kind":"promised","promised_workdays":5}}"#.to_string());
    lines.push(r#"{"specversion":"1.0","id":"W-w","source":"/t","type":"approval.withdrawn","time":"2026-07-08T10:00:00+08:00","subject":"W-1","data":{}}"#.to_string());
    let n = lines.len() as u64;
    produce(&broker(), &d.topic, &lines).await;
    let mut d = d;
    d.wait_consumed(n);

    let card = d.json("/api/v1/scorecard?period=2026Q3");
    assert_eq!(card["period"], "2026Q3");
    assert_eq!(card["from"], "2026-07-01T00:00:00+08:00");
    assert_eq!(card["to"], "2026-10-01T00:00:00+08:00");
    let line = |dept: &str| department_line(&card, dept);
    let j = line("甲局");
    assert_eq!(
        (
            j["closed"].as_u64(),
            j["on_time"].as_u64(),
            j["late"].as_u64()
        ),
        (Some(5), Some(5), Some(0))
    );
    assert_eq!(j["violations"], 0);
    assert_eq!(j["on_time_rate"], 1.0);
    assert_eq!(j["grade"], "优秀");
    let y = line("乙局");
    assert_eq!(
        (
            y["closed"].as_u64(),
            y["on_time"].as_u64(),
            y["late"].as_u64()
        ),
        (Some(3), Some(1), Some(2))
    );
    assert_eq!(y["violations"], 1);
    assert_eq!(y["grade"], "不合格");
    assert_eq!(y["year_grades"]["2025"], "不合格");
    assert_eq!(y["year_grades"]["2026"], "不合格");
    assert_eq!(y["unqualified_two_years"], true);
    let b = line("丙局");
    assert_eq!(
        (b["closed"].as_u64(), b["late"].as_u64()),
        (Some(10), Some(1))
    );
    assert_eq!(b["on_time_rate"], 0.9);
    assert_eq!(b["grade"], "合格");
    assert!(b["year_grades"]["2025"].is_null());
    assert_eq!(b["unqualified_two_years"], false);

    // The year, and a quarter with nothing in it.
    let year = d.json("/api/v1/scorecard?period=2025");
    let y25 = year["departments"]
        .as_array()
        .expect("departments")
        .iter()
        .find(|l| l["department"] == "乙局")
        .expect("乙局 2025")
        .clone();
    assert_eq!(y25["late"], 1);
    let q1 = d.json("/api/v1/scorecard?period=2026Q1");
    assert!(
        q1["departments"]
            .as_array()
            .expect("departments")
            .iter()
            .all(|l| l["closed"] == 0)
    );
    let r = d.get("/api/v1/scorecard?period=2026Q5");
    assert_eq!(r.status, 400);
    assert!(r.body.contains("period"));

    // The same card as a spreadsheet: a department a row, the figures the JSON has.
    let r = d.get("/api/v1/scorecard.csv?period=2026Q3");
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(
        r.header("content-disposition"),
        Some("attachment; filename=\"redlight-scorecard-2026Q3.csv\"")
    );
    let rows = sheet(&r);
    assert_eq!(
        rows[0],
        [
            "部门",
            "考核期",
            "办结",
            "按时办结",
            "逾期办结",
            "违规",
            "按时办结率",
            "等次",
            "2026年等次",
            "2025年等次",
            "连续两年不合格"
        ]
    );
    let want: Vec<Vec<String>> = card["departments"]
        .as_array()
        .expect("departments")
        .iter()
        .map(|l| {
            let grade = |g: &serde_json::Value| g.as_str().unwrap_or("").to_string();
            vec![
                l["department"].as_str().expect("department").to_string(),
                "2026Q3".to_string(),
                l["closed"].to_string(),
                l["on_time"].to_string(),
                l["late"].to_string(),
                l["violations"].to_string(),
                l["on_time_rate"]
                    .as_f64()
                    .map_or(String::new(), |x| format!("{:.2}%", x * 100.0)),
                grade(&l["grade"]),
                grade(&l["year_grades"]["2026"]),
                grade(&l["year_grades"]["2025"]),
                if l["unqualified_two_years"] == true {
                    "是"
                } else {
                    "否"
                }
                .to_string(),
            ]
        })
        .collect();
    assert_eq!(rows[1..], want[..]);
    let yi = rows.iter().find(|r| r[0] == "乙局").expect("乙局's row");
    assert_eq!(
        yi[2..],
        [
            "3",
            "1",
            "2",
            "1",
            "33.33%",
            "不合格",
            "不合格",
            "不合格",
            "是"
        ]
    );
    let r = d.get("/api/v1/scorecard.csv?period=2026Q5");
    assert_eq!(r.status, 400);
    assert!(r.body.contains("period"), "{}", r.body);

    // The same card as a page (考核), the departments that need attention first: 乙局
    // (不合格, two years running), 丙局 (合格), 甲局 (优秀); each row the JSON's figures.
    let page = d.get("/scorecard?period=2026Q3");
    assert_eq!(page.status, 200, "{}", page.body);
    assert!(!page.body.contains("ignored-params"), "{}", page.body);
    let mistyped = d.get("/scorecard?period=2026Q3&departement=x").body;
    assert_eq!(
        text_after(&mistyped, r#"id="ignored-params""#),
        Some("已忽略本页不认识的参数 “departement”；本页的参数：“period”")
    );
    assert_eq!(
        page.header("content-type"),
        Some("text/html; charset=utf-8")
    );
    assert_eq!(
        text_after(&page.body, r#"id="period""#),
        Some("2026年第三季度")
    );
    let rows: Vec<(&str, &str)> = page
        .body
        .split(r#"<tr data-department=""#)
        .skip(1)
        .map(|r| {
            let (dept, rest) = r.split_once('"').expect("the department");
            (dept, &rest[..rest.find("</tr>").expect("row end")])
        })
        .collect();
    let order: Vec<&str> = rows.iter().map(|(dept, _)| *dept).collect();
    assert_eq!(order, ["乙局", "丙局", "甲局"]);
    for (dept, row) in &rows {
        let l = department_line(&card, dept);
        let cell = |label: &str| text_after(row, &format!(r#"data-label="{label}""#));
        for (label, key) in [
            ("办结", "closed"),
            ("按时办结", "on_time"),
            ("逾期办结", "late"),
            ("违规", "violations"),
        ] {
            assert_eq!(
                cell(label),
                Some(l[key].to_string().as_str()),
                "{dept}: {label}"
            );
        }
        let rate = l["on_time_rate"]
            .as_f64()
            .map_or("—".to_string(), |x| format!("{:.2}%", x * 100.0));
        assert_eq!(cell("按时办结率"), Some(rate.as_str()), "{dept}");
        assert_eq!(cell("等次"), l["grade"].as_str(), "{dept}");
        assert_eq!(
            cell("2025年等次"),
            Some(l["year_grades"]["2025"].as_str().unwrap_or("—")),
            "{dept}"
        );
        assert_eq!(
            row.contains("连续两年不合格"),
            l["unqualified_two_years"] == true,
            "{dept}: {row}"
        );
        assert!(
            row.contains(&format!(r#"href="./?department={}""#, q(dept))),
            "{dept} links its board: {row}"
        );
    }
    let two = page
        .body
        .split(r#"id="two-years""#)
        .nth(1)
        .expect("the two years' section");
    assert!(
        two.contains("乙局：2025年、2026年两年等次均为不合格"),
        "{two}"
    );
    for (href, why) in [
        ("scorecard?period=2026Q2", "the quarter before"),
        ("scorecard?period=2026Q4", "the quarter after"),
        ("scorecard?period=2026", "the year"),
        ("api/v1/scorecard.csv?period=2026Q3", "the spreadsheet"),
    ] {
        assert!(
            page.body.contains(&format!(r#"href="{href}""#)),
            "{why}: {}",
            page.body
        );
    }
    let year = d.get("/scorecard?period=2025").body;
    assert_eq!(text_after(&year, r#"id="period""#), Some("2025年"));
    assert!(year.contains(r#"<tr data-department="乙局">"#), "{year}");
    let r = d.get("/scorecard?period=2026Q5");
    assert_eq!(r.status, 400);
    assert!(
        text_after(&r.body, r#"id="bad-period""#).is_some_and(|t| t.contains("2026Q5")),
        "{}",
        r.body
    );

    // The ledger outlives the daemon: after a restart the same card.
    d.restart("redlight-2.log");
    assert_eq!(
        d.json("/api/v1/scorecard?period=2026Q3")["departments"],
        card["departments"]
    );
}

/// A quarterly report made by its due time but delivered after the red fired: the red is
/// `retracted`, and the missed period it put on the scorecard's ledger is taken back, so
/// the department is not marked down for it. One partition, so one engine's clock: M-T's
/// Q2 report (due 07-16T00:00), made on 07-15 at 20:00, is produced after an event of
/// another case at 07-16 09:00, which fires the red first. M-L's report, made on 07-16 at
/// 08:00, is late: its missed period stays counted, also when the red and the report are
/// written in the same batch (the case's own state no longer lists the period then).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_report_made_in_time_and_delivered_late_is_not_counted_missing() {
    let d = Daemon::start("api-unmissed", 1, "").await;
    let event = |id: &str, ty: &str, at: &str, case: &str, data: &str| {
        format!(
            r#"{{"specversion":"1.0","id":"{id}","source":"/t","type":"{ty}","time":"{at}","subject":"{case}","data":{data}}}"#
        )
    };
    let mut lines = Vec::new();
    for (case, dept) in [("M-T", "甲局"), ("M-L", "乙局")] {
        lines.push(event(
            &format!("{case}-d"),
            "market.registration_decided",
            "2026-05-11T10:00:00+08:00",
            case,
            &format!(r#"{{"outcome":"approved","department":"{dept}"}}"#),
        ));
    }
    // Each department closes a case on time in Q3, so that both have a scorecard line.
    lines.extend(hazard("H-J", "甲局", "2026-07-20T09:00:00+08:00", 2));
    lines.extend(hazard("H-Y", "乙局", "2026-07-20T09:00:00+08:00", 2));
    lines.insert(
        2,
        event(
            "o-a",
            "market.registration_accepted",
            "2026-07-16T09:00:00+08:00",
            "M-O",
            "{}",
        ),
    );
    lines.insert(
        3,
        event(
            "M-T-r",
            "market.report_submitted",
            "2026-07-15T20:00:00+08:00",
            "M-T",
            r#"{"period":"2026Q2"}"#,
        ),
    );
    lines.insert(
        4,
        event(
            "M-L-r",
            "market.report_submitted",
            "2026-07-16T08:00:00+08:00",
            "M-L",
            r#"{"period":"2026Q2"}"#,
        ),
    );
    let n = lines.len() as u64;
    produce(&broker(), &d.topic, &lines).await;
    let mut d = d;
    d.wait_consumed(n);

    let reasons = |case: &str| -> Vec<String> {
        d.json(&format!(
            "/api/v1/alerts?case={case}&rule=nx.quarterly_report&status=resolved&limit=100"
        ))["alerts"]
            .as_array()
            .expect("alerts")
            .iter()
            .map(|a| &a["alert"])
            .filter(|a| a["deadline"] == "2026-07-16T00:00:00+08:00")
            .map(|a| a["reason"].as_str().unwrap_or_default().to_string())
            .collect()
    };
    assert_eq!(reasons("M-T"), ["retracted"]);
    assert_eq!(reasons("M-L"), ["completed_late"]);
    let card = d.json("/api/v1/scorecard?period=2026Q3");
    let line = |dept: &str| department_line(&card, dept);
    assert_eq!(line("甲局")["violations"], 0, "{card}");
    assert_eq!(line("甲局")["grade"], "优秀", "{card}");
    assert_eq!(line("乙局")["violations"], 1, "{card}");
}

const TOKEN: &str = "tok-3f9a7c21e5b84d06a1c2";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_configured_token_guards_the_api_and_the_board_and_is_never_shown() {
    let mut d = Daemon::start("api-token", 1, &format!("token = \"{TOKEN}\"")).await;
    let line = fixed_samples().remove(0);
    produce(&broker(), &d.topic, &[line]).await;
    d.wait_consumed(1);

    let bearer = format!("Bearer {TOKEN}");
    for path in [
        "/",
        "/api/v1/cases",
        "/api/v1/alerts",
        "/api/v1/scorecard",
        "/api/v1/cases/x",
        "/api/v1/deliveries",
        // Dead letters' payloads are the producers' data.
        "/api/v1/input/dead-letters",
    ] {
        let r = get(d.port, path, &[]).expect("GET");
        assert_eq!(r.status, 401, "{path} without a token");
        assert!(
            r.header("www-authenticate")
                .is_some_and(|h| h.starts_with("Bearer"))
        );
        let r = get(d.port, path, &[("Authorization", "Bearer wrong-token")]).expect("GET");
        assert_eq!(r.status, 401, "{path} with a wrong token");
        let r = get(d.port, path, &[("Authorization", &bearer)]).expect("GET");
        assert!(
            r.status == 200 || r.status == 404,
            "{path} with the token: {}",
            r.status
        );
        assert!(!r.body.contains(TOKEN), "{path} shows the token");
    }
    // Dropping input dead letters by hand takes the token too, and their numbers: never
    // all at once by an empty or mistyped body.
    for drop_path in [
        "/api/v1/input/dead-letters/drop",
        "/api/v1/deliveries/dead/drop",
    ] {
        let r = post(d.port, drop_path, r#"{"seqs": [0]}"#, &[]).expect("POST");
        assert_eq!(r.status, 401, "{drop_path} without a token");
        for body in [r#"{"seqs": []}"#, "", r#"{"seq": [0]}"#, "{}"] {
            let r = post(d.port, drop_path, body, &[("Authorization", &bearer)]).expect("POST");
            assert_eq!(r.status, 400, "{drop_path} with {body:?}: {}", r.body);
            assert!(r.body.contains("seqs"), "{body:?}: {}", r.body);
        }
    }
    let drop_path = "/api/v1/input/dead-letters/drop";
    let r = post(
        d.port,
        drop_path,
        r#"{"seqs": [41, 42]}"#,
        &[("Authorization", &bearer)],
    )
    .expect("POST");
    assert_eq!(r.status, 200, "{}", r.body);
    let answer: Value = serde_json::from_str(&r.body).expect("JSON");
    assert_eq!(answer["dropped"], serde_json::json!([]), "{answer}");
    assert_eq!(answer["not_found"], serde_json::json!([41, 42]), "{answer}");
    // A backup writes the store's data to disk: the token too, and then it is written.
    let r = post(d.port, "/api/v1/backup", "", &[]).expect("POST");
    assert_eq!(r.status, 401, "/api/v1/backup without a token");
    let r = post(d.port, "/api/v1/backup", "", &[("Authorization", &bearer)]).expect("POST");
    assert_eq!(r.status, 200, "{}", r.body);
    let report: Value = serde_json::from_str(&r.body).expect("JSON");
    let dir = std::path::PathBuf::from(report["directory"].as_str().expect("directory"));
    assert!(
        dir.join("redlight.redb").is_file() && dir.join("backup.json").is_file(),
        "{report}"
    );
    assert!(
        !r.body.contains(TOKEN),
        "the backup's report shows the token"
    );
    // A command that talks to the daemon reads the token as the daemon does: with the
    // daemon's configuration it gets in; without the token it is told what it lacks.
    let cli = |config: &std::path::Path| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_redlight"))
            .args(["deliveries", "--config"])
            .arg(config)
            .arg("status")
            .env_remove("REDLIGHT_HTTP__TOKEN")
            .output()
            .expect("redlight deliveries status");
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let config = d.dir.join("redlight.toml");
    let (code, err) = cli(&config);
    assert_eq!(code, Some(0), "{err}");
    let without = d.dir.join("without-token.toml");
    let text = std::fs::read_to_string(&config).expect("config");
    std::fs::write(&without, text.replace(&format!("token = \"{TOKEN}\""), "")).expect("write");
    let (code, err) = cli(&without);
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains("401 Unauthorized: it wants its bearer token, and this command has none")
            && err.contains("REDLIGHT_HTTP__TOKEN"),
        "{err}"
    );
    // Prometheus and the probes need no token.
    for path in ["/metrics", "/healthz", "/readyz"] {
        let r = get(d.port, path, &[]).expect("GET");
        assert_eq!(r.status, 200, "{path}");
        assert!(!r.body.contains(TOKEN), "{path} shows the token");
    }
    let metrics = d.get("/metrics").body;
    assert!(
        metrics.contains(r#"redlight_http_requests_total{code="401",route="/api/v1/cases"}"#),
        "{metrics}"
    );

    // A wall screen logs in once with ?token=, then its cookie (not the token) carries on.
    let r = get(d.port, &format!("/?token={TOKEN}"), &[]).expect("GET");
    assert_eq!(r.status, 303);
    assert_eq!(r.header("location"), Some("./"));
    let cookie = r.header("set-cookie").expect("cookie").to_string();
    assert!(!cookie.contains(TOKEN), "the cookie is not the token");
    let pair = cookie.split(';').next().expect("pair").to_string();
    let r = get(d.port, "/", &[("Cookie", &pair)]).expect("GET");
    assert_eq!(r.status, 200);
    assert!(r.body.contains("红灯"));
    let r = get(d.port, "/?token=wrong", &[]).expect("GET");
    assert_eq!(r.status, 401);
    // A department's screen keeps its department through the login, the token dropped.
    let dept = "department=%E5%B8%82%E4%BD%8F%E5%BB%BA%E5%B1%80";
    let r = get(d.port, &format!("/?token={TOKEN}&{dept}"), &[]).expect("GET");
    assert_eq!(r.status, 303);
    assert_eq!(r.header("location"), Some(format!("./?{dept}").as_str()));
    let r = get(d.port, &format!("/?{dept}"), &[("Cookie", &pair)]).expect("GET");
    assert_eq!(r.status, 200);
    assert!(r.body.contains("· 市住建局</h1>"), "{}", r.body);
    // A case's page opened from a chat message: without the login a page says in words how
    // to log in; `?token=` on the page itself logs in and comes back to it; the cookie
    // opens it.
    let case = "/case/XZ%2F9";
    let r = get(d.port, case, &[]).expect("GET");
    assert_eq!(r.status, 401);
    assert_eq!(r.header("content-type"), Some("text/html; charset=utf-8"));
    assert!(
        r.body.contains("需要登录") && r.body.contains("?token="),
        "{}",
        r.body
    );
    assert!(!r.body.contains(TOKEN));
    let r = get(d.port, &format!("{case}?token={TOKEN}"), &[]).expect("GET");
    assert_eq!(r.status, 303);
    assert_eq!(r.header("location"), Some("XZ%2F9"));
    let r = get(d.port, case, &[("Cookie", &pair)]).expect("GET");
    assert_eq!(r.status, 404, "no such case, but logged in: {}", r.body);
    assert!(r.body.contains("未找到案件"), "{}", r.body);
    // The scorecard's page likewise, keeping its period.
    let r = get(d.port, "/scorecard?period=2026", &[]).expect("GET");
    assert_eq!(r.status, 401);
    assert!(r.body.contains("需要登录"), "{}", r.body);
    let r = get(
        d.port,
        &format!("/scorecard?token={TOKEN}&period=2026"),
        &[],
    )
    .expect("GET");
    assert_eq!(r.status, 303);
    assert_eq!(r.header("location"), Some("scorecard?period=2026"));
    let r = get(d.port, "/scorecard?period=2026", &[("Cookie", &pair)]).expect("GET");
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(r.body.contains("考核"), "{}", r.body);
    // The API answers a browser without the token in JSON, as before.
    let r = get(d.port, "/api/v1/cases", &[]).expect("GET");
    assert!(r.body.starts_with('{'), "{}", r.body);

    d.stop();
    let log = d.log_text();
    assert!(!log.contains(TOKEN), "the log shows the token");
    // Twenty refusals within about a minute: a line or two say them (the metric counts
    // each).
    let said = log
        .lines()
        .filter(|l| l.contains("without a valid bearer token refused"))
        .count();
    assert!(
        (1..=2).contains(&said),
        "{said} lines for 20 refusals (once a minute):\n{log}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listening_beyond_loopback_needs_a_token() {
    let brokers = broker();
    let topic = unique("api-bind");
    let dir = std::env::temp_dir().join(&topic);
    std::fs::create_dir_all(&dir).expect("dir");
    let port = free_port();
    let config = write_config(&dir, &brokers, &topic, &format!("0.0.0.0:{port}"), "", "");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_redlight"))
        .args(["run", "--config"])
        .arg(&config)
        .output()
        .expect("redlight run");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("http.token") && err.contains("0.0.0.0"),
        "{err}"
    );

    // With the token from the environment it starts, and guards the API.
    create_topic(&brokers, &topic, 1).await;
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_redlight"))
        .args(["run", "--config"])
        .arg(&config)
        .env("REDLIGHT_HTTP__TOKEN", TOKEN)
        .stderr(std::fs::File::create(dir.join("log")).expect("log"))
        .spawn()
        .expect("start");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let mut ok = false;
    while std::time::Instant::now() < deadline {
        if let Some(r) = get(port, "/healthz", &[]) {
            assert_eq!(r.status, 200);
            let api = get(port, "/api/v1/cases", &[]).expect("GET");
            assert_eq!(api.status, 401);
            let api = get(
                port,
                "/api/v1/cases",
                &[("Authorization", &format!("Bearer {TOKEN}"))],
            )
            .expect("GET");
            assert_eq!(api.status, 200);
            ok = true;
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let _ = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let _ = child.wait();
    let log = std::fs::read_to_string(dir.join("log")).unwrap_or_default();
    assert!(ok, "did not start with REDLIGHT_HTTP__TOKEN: {log}");
    assert!(!log.contains(TOKEN));
    let _ = std::fs::remove_dir_all(&dir);
}

/// Figures, not a check: `cargo test --release --test api -- --ignored --nocapture many_cases`
/// (`REDLIGHT_VIEW_CASES`, default 1,000,000). Builds that many approval cases with the real
/// engine (a third of them closed, the rest running: red, yellow and green by now), writes
/// them straight into a store, starts the daemon on it and times the API, the board and
/// /metrics.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore]
async fn many_cases_latency_figures() {
    use redlight::store::{Store, WriteBatch};
    use std::time::Instant;
    let n: usize = std::env::var("REDLIGHT_VIEW_CASES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1_000_000);
    let brokers = broker();
    let topic = unique("api-many");
    create_topic(&brokers, &topic, 1).await;
    let dir = std::env::temp_dir().join(&topic);
    std::fs::create_dir_all(&dir).expect("dir");
    let port = free_port();
    let config = write_config(&dir, &brokers, &topic, &format!("127.0.0.1:{port}"), "", "");

    let t = Instant::now();
    let cfg = redlight::config::Config::load(&config).expect("config");
    let mut engine = cfg.build_engine().expect("engine");
    engine.track_changes();
    let depts: Vec<String> = (0..20).map(|i| format!("第{i:02}局")).collect();
    let now = chrono::Utc::now();
    let mut alerts = Vec::new();
    let mut events = Vec::with_capacity(n * 2);
    for i in 0..n {
        // Accepted over the last 40 days; a third decided and completed within 3 days.
        let at = now - chrono::Duration::seconds(((i as i64) * 3_456_000) / n as i64 + 60);
        let case = format!("BIG-{i:08}");
        events.push((at, format!(
            r#"{{"specversion":"1.0","id":"a{i}","source":"/f","type":"approval.accepted","time":"{}","subject":"{case}","data":{{"department":"{}","item":"事项{}","handler":"经办人{}","kind":"promised","promised_workdays":{}}}}}"#,
            at.to_rfc3339(), depts[i % 20], i % 50, i % 300, 5 + i % 16)));
        if i % 3 == 0 {
            let done = at + chrono::Duration::days(3);
            if done < now {
                for (k, ty) in [("d", "approval.decided"), ("c", "approval.completed")] {
                    events.push((done, format!(
                        r#"{{"specversion":"1.0","id":"{k}{i}","source":"/f","type":"{ty}","time":"{}","subject":"{case}","data":{{"outcome":"denied"}}}}"#,
                        done.to_rfc3339())));
                }
            }
        }
    }
    events.sort_by_key(|e| e.0);
    for (_, line) in &events {
        let ev = redlight::event::Event::parse(line.as_bytes()).expect("event");
        engine.advance_before(ev.time_ms(), &mut alerts);
        engine.apply(&ev, &mut alerts).expect("apply");
        alerts.clear();
    }
    engine.advance(now.timestamp_millis(), &mut alerts);
    let built = t.elapsed();
    let store = Store::open(&dir.join("data")).expect("store");
    // `REDLIGHT_VIEW_JOURNAL=1`: no checkpoint, every case left in the store's journal, so
    // that the API reads them all through the overlay (the worst case; the daemon
    // checkpoints at `store.checkpoint_cases`).
    let journal = std::env::var_os("REDLIGHT_VIEW_JOURNAL").is_some();
    if journal {
        store.set_checkpoint_cases(usize::MAX);
    }
    let mut batch = WriteBatch::default();
    for c in engine.cases() {
        redlight::scorecard::ledger_rows(c, engine.rules(), &mut batch.ledger);
        batch.cases.put(&topic, 0, c).expect("encode");
        if batch.cases.len() >= 50_000 {
            store.commit(&batch).expect("commit");
            batch = WriteBatch::default();
        }
    }
    batch.offsets.push((topic.clone(), 0, 0));
    store.commit(&batch).expect("commit");
    let in_journal = store.overlay_size();
    drop(store);
    let bytes = std::fs::metadata(dir.join("data/redlight.redb")).map_or(0, |m| m.len());
    println!(
        "\n{n} cases built with the engine in {:.1} s and stored ({:.0} MiB, {} alerts meanwhile; {in_journal} in the journal{})",
        built.as_secs_f64(),
        bytes as f64 / 1048576.0,
        engine.stats().applied,
        if journal {
            ", REDLIGHT_VIEW_JOURNAL"
        } else {
            ""
        }
    );
    drop(engine);

    let log = dir.join("redlight.log");
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_redlight"))
        .args(["run", "--config"])
        .arg(&config)
        .stderr(std::fs::File::create(&log).expect("log"))
        .spawn()
        .expect("start");
    let t = Instant::now();
    loop {
        if let Some(r) = get(port, "/readyz", &[])
            && r.status == 200
        {
            break;
        }
        assert!(t.elapsed().as_secs() < 300, "not ready");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    println!(
        "daemon ready on the store in {:.1} s",
        t.elapsed().as_secs_f64()
    );
    let cpu = || {
        std::fs::read_to_string(format!("/proc/{}/stat", child.id()))
            .ok()
            .and_then(|s| {
                let f: Vec<u64> = s
                    .rsplit(')')
                    .next()?
                    .split_whitespace()
                    .filter_map(|x| x.parse().ok())
                    .collect();
                Some((f.get(10)? + f.get(11)?) as f64 / 100.0)
            })
            .unwrap_or(0.0)
    };
    // Let the restore settle (timers due since the store was written fire and persist).
    let settle = Instant::now();
    let mut last = cpu();
    loop {
        std::thread::sleep(std::time::Duration::from_secs(1));
        let c = cpu();
        if c - last < 0.05 || settle.elapsed().as_secs() > 120 {
            break;
        }
        last = c;
    }
    println!(
        "daemon settled {:.1} s later ({:.1} s of CPU so far)",
        settle.elapsed().as_secs_f64(),
        cpu()
    );
    let time = |path: &str| -> (f64, usize) {
        let t = Instant::now();
        let r = get(port, path, &[]).expect("GET");
        assert_eq!(r.status, 200, "{path}: {}", r.body);
        (t.elapsed().as_secs_f64() * 1000.0, r.body.len())
    };
    for (what, path) in [
        ("board, first view (recount of the store)", "/"),
        ("board, cached", "/"),
        ("/metrics (gauges cached)", "/metrics"),
        ("cases, first page of 100", "/api/v1/cases"),
        ("cases, light=red, 100", "/api/v1/cases?light=red"),
        (
            "cases, department + light=yellow, 100",
            "/api/v1/cases?department=%E7%AC%AC07%E5%B1%80&light=yellow",
        ),
        (
            "cases, rule=xk.decision&light=red, 100",
            "/api/v1/cases?rule=xk.decision&light=red",
        ),
        (
            "cases, a department with no case (full scan)",
            "/api/v1/cases?department=%E6%97%A0",
        ),
        (
            "cases, light=green&open=false (full scan)",
            "/api/v1/cases?open=false&light=red",
        ),
        ("one case", "/api/v1/cases/BIG-00000042"),
        ("alerts, first 1000", "/api/v1/alerts"),
        ("scorecard of the year", "/api/v1/scorecard?period=2026"),
    ] {
        let (ms, len) = time(path);
        println!("{what:<48} {ms:>9.1} ms  ({len} bytes)");
    }
    std::thread::sleep(std::time::Duration::from_millis(5500));
    let (ms, _) = time("/");
    println!("{:<48} {ms:>9.1} ms", "board after the cache expired");
    let _ = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let _ = child.wait();
    let _ = std::fs::remove_dir_all(&dir);
}

/// The calendar data having ended is said on `/readyz`, the board and `/metrics`, but the
/// daemon stays ready: readiness decides whether a pod gets traffic (a Kubernetes Service
/// drops one that is not ready), and the supervisors need the board then too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_calendar_that_has_ended_is_a_warning_not_unreadiness() {
    let old = shipped_calendars("redlight-old-calendar", 2020..=2022);
    let calendars = old.display().to_string();
    // Starting waits for /readyz to answer 200.
    let mut d = Daemon::start_with(
        "calendar-ended",
        1,
        "",
        "",
        &[("REDLIGHT_ENGINE__CALENDARS", calendars.as_str())],
    )
    .await;
    let ready = d.json("/readyz");
    assert_eq!(ready["ready"], true, "{ready}");
    assert_eq!(ready["calendar_last_day"], "2022-12-31", "{ready}");
    let warnings = ready["warnings"].as_array().cloned().unwrap_or_default();
    assert!(
        warnings.len() == 1
            && warnings[0]
                .as_str()
                .is_some_and(|w| w.contains("calendar data ended on 2022-12-31")),
        "{ready}"
    );
    let board = d.get("/");
    assert!(
        board.body.contains("id=\"calendar-notice\""),
        "the board says so"
    );
    let metrics = d.get("/metrics").body;
    assert!(metrics.contains("\nredlight_ready 1\n"), "{metrics}");
    // A market registered in November 2022: its report for 2022Q4 is due 15 days after the
    // quarter, in 2023, beyond the data. The duty waits pending, and the case shows no due
    // time for it (`due` null), not the instant the engine tries again.
    let market = [
        r#"{"specversion":"1.0","id":"OLD-1","source":"/t","type":"market.registration_accepted","time":"2022-11-01T10:00:00+08:00","subject":"NX-OLD","data":{"department":"银川市市场监管局","market":"旧市场"}}"#.to_string(),
        r#"{"specversion":"1.0","id":"OLD-2","source":"/t","type":"market.registration_decided","time":"2022-11-10T10:00:00+08:00","subject":"NX-OLD","data":{"outcome":"approved"}}"#.to_string(),
    ];
    produce(&broker(), &d.topic, &market).await;
    d.wait_consumed(2);
    let c = d.json("/api/v1/cases/NX-OLD");
    let duty = &c["duties"][0];
    assert_eq!(duty["rule"], "nx.quarterly_report", "{c}");
    assert_eq!(duty["period"], "2022Q4", "{c}");
    assert_eq!(duty["pending"], true, "{c}");
    assert!(duty["due"].is_null(), "{c}");
    d.stop();
    let _ = std::fs::remove_dir_all(&old);
}

/// The stored cases name their rules by number, which a start keeps whatever order the
/// packs list the rules in now; a stored rule no pack has is refused before anything is
/// restored, naming it; a rule the packs retire with `enabled = false` keeps its place,
/// recorded as retired; rules added are numbered after the stored ones, and recorded.
/// No broker is needed: all this comes before consuming.
#[test]
fn a_start_keeps_the_stored_rule_numbers_whatever_the_packs_order() {
    let dir = std::env::temp_dir().join(unique("rule-order"));
    std::fs::create_dir_all(&dir).expect("dir");
    let listen = format!("127.0.0.1:{}", free_port());
    let config_path = write_config(&dir, "127.0.0.1:1", "rule-order", &listen, "", "");
    let config = redlight::config::Config::load(&config_path).expect("config");
    let rules = config.load_rules().expect("rules");
    let ids: Vec<String> = rules.rules.iter().map(|r| r.id.to_string()).collect();
    let types = rules.type_order().to_vec();
    let record = |order: &[String]| {
        let store = redlight::store::Store::open(&dir.join("data")).expect("store");
        store.record_order(order, &types).expect("record");
    };
    let stored = || {
        let store = redlight::store::Store::open(&dir.join("data")).expect("store");
        store.rule_order().expect("read")
    };
    let log = dir.join("daemon.log");
    let start = || {
        std::process::Command::new(env!("CARGO_BIN_EXE_redlight"))
            .args(["run", "--config"])
            .arg(&config_path)
            .stderr(std::fs::File::create(&log).expect("log"))
            .spawn()
            .expect("redlight run")
    };
    let wait = |child: &mut std::process::Child, what: &str| {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                return Some(status);
            }
            let said = std::fs::read_to_string(&log).unwrap_or_default();
            if said.contains(what) || std::time::Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                return None;
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
    };

    // Stored as if the first pack's first rule had been listed last, before any event was
    // applied: a store without cases takes the packs as they are now.
    let mut moved = ids.clone();
    let first = moved.remove(0);
    moved.push(first.clone());
    record(&moved);
    let mut child = start();
    let status = wait(&mut child, "recorded the order of the packs' rules");
    let said = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(
        status.is_none() && said.contains("it holds no case yet"),
        "started on a store without cases: {status:?} {said}"
    );
    assert_eq!(stored(), Some(ids.clone()));
    {
        // An event applied (its offset stored with its case): from now on the stored
        // numbers are kept.
        let store = redlight::store::Store::open(&dir.join("data")).expect("store");
        let mut batch = redlight::store::WriteBatch::default();
        batch.offsets.push(("rule-order".into(), 0, 1));
        store.commit(&batch).expect("an offset");
    }
    record(&moved);
    let mut child = start();
    let status = wait(&mut child, "http listening");
    let said = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(status.is_none(), "started: {status:?} {said}");
    assert_eq!(stored(), Some(moved.clone()), "numbered as stored: {said}");

    // A stored rule no pack has: refused, naming it.
    let mut gone = moved.clone();
    gone.push("zz.repealed".into());
    record(&gone);
    let mut child = start();
    let status = wait(&mut child, "\u{0}never");
    let said = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(
        status.is_some_and(|s| !s.success()),
        "refused and stopped: {status:?} {said}"
    );
    assert!(
        said.contains("no rule pack has: `zz.repealed`")
            && said.contains("enabled = false")
            && said.contains("engine.rule_packs"),
        "{said}"
    );
    assert!(
        !said.contains("http listening"),
        "refused before anything started: {said}"
    );
    assert_eq!(stored(), Some(gone), "nothing recorded");

    // Stored with all but the last rule: the last is added after them. And the packs
    // retire `xk.decision` (a copy of its pack with `enabled = false`): its place stays,
    // recorded as retired.
    let xk = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("config/rules/xk.toml");
    let text = std::fs::read_to_string(&xk).expect("xk pack");
    let retiring = text.replace(
        "id = \"xk.decision\"\n",
        "id = \"xk.decision\"\nenabled = false\n",
    );
    assert_ne!(retiring, text);
    let copy = dir.join("xk.toml");
    std::fs::write(&copy, retiring).expect("pack copy");
    let cfg = std::fs::read_to_string(&config_path).expect("config");
    let cfg = cfg.replace(&xk.display().to_string(), &copy.display().to_string());
    std::fs::write(&config_path, cfg).expect("config");
    record(&ids[..ids.len() - 1]);
    {
        // A stored case with clocks of `xk.decision` and `xz.promised`, numbered as the
        // packs were (the stored order's prefix).
        let mut engine = config.build_engine().expect("engine");
        let line = r#"{"specversion":"1.0","id":"e1","source":"/t","type":"approval.accepted","time":"2026-06-01T09:00:00+08:00","subject":"XZ-9","data":{"department":"d","kind":"promised","promised_workdays":20}}"#;
        let ev = redlight::event::Event::parse(line.as_bytes()).expect("event");
        engine.apply(&ev, &mut Vec::new()).expect("apply");
        let case = engine.case("XZ-9").expect("case");
        assert_eq!(case.clocks.len(), 2);
        let store = redlight::store::Store::open(&dir.join("data")).expect("store");
        let mut batch = redlight::store::WriteBatch::default();
        batch.cases.put("rule-order", 0, case).expect("encode");
        batch.offsets.push(("rule-order".into(), 0, 2));
        store.commit(&batch).expect("a case");
    }
    let mut child = start();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while !std::fs::read_to_string(&log)
        .unwrap_or_default()
        .contains("http listening")
        && std::time::Instant::now() < deadline
    {
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    // The case as the API shows it: without the retired rule's clock.
    let port: u16 = listen
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .expect("port");
    let shown = get(port, "/api/v1/cases/XZ-9", &[]);
    let _ = child.kill();
    let _ = child.wait();
    let said = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(
        said.contains("retired rules") && said.contains("xk.decision"),
        "{said}"
    );
    let shown: Value = serde_json::from_str(&shown.expect("the case").body).expect("json");
    let clocks: Vec<&str> = shown["clocks"]
        .as_array()
        .expect("clocks")
        .iter()
        .filter_map(|c| c["rule"].as_str())
        .collect();
    assert_eq!(clocks, ["xz.promised"], "{shown}");
    let expected: Vec<String> = ids
        .iter()
        .map(|id| {
            if id == "xk.decision" {
                "retired xk.decision".to_string()
            } else {
                id.clone()
            }
        })
        .collect();
    assert_eq!(stored(), Some(expected), "{said}");
    let store = redlight::store::Store::open(&dir.join("data")).expect("store");
    assert_eq!(store.type_order().expect("read"), Some(types), "{said}");
    drop(store);
    let _ = std::fs::remove_dir_all(&dir);
}

/// `store.backup_every`: the daemon writes backups by itself, one each interval, and keeps
/// `store.backups_keep` of them; the metrics count them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scheduled_backups_are_written_and_the_oldest_removed() {
    let env = [
        ("REDLIGHT_STORE__BACKUP_EVERY", "1s"),
        ("REDLIGHT_STORE__BACKUPS_KEEP", "2"),
    ];
    let mut d = Daemon::start_with("api-backups", 1, "", "", &env).await;
    produce(&broker(), &d.topic, &fixed_samples()).await;
    d.wait_consumed(fixed_samples().len() as u64);
    let ok = |d: &Daemon| -> f64 {
        d.get("/metrics")
            .body
            .lines()
            .find_map(|l| l.strip_prefix(r#"redlight_store_backups_total{result="ok"} "#))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0.0)
    };
    let started = std::time::Instant::now();
    while ok(&d) < 4.0 {
        assert!(
            started.elapsed() < std::time::Duration::from_secs(30),
            "four scheduled backups within 30 s; metrics:\n{}\nlog:\n{}",
            d.get("/metrics").body,
            d.log_text()
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    let backups = d.dir.join("data").join("backups");
    let kept: Vec<String> = std::fs::read_dir(&backups)
        .expect("backups dir")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("redlight-backup-"))
        .collect();
    assert_eq!(kept.len(), 2, "{kept:?}");
    assert!(
        d.log_text().contains("scheduled backups of the store"),
        "{}",
        d.log_text()
    );
    d.stop();
}
