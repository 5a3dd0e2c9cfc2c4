//! The operator's view: the hot keys (`/hotkeys`, `INFO hotkeys`) and the
//! status page, opened in a real headless Chromium and held against
//! `/status` and `/metrics`.

mod common;

use std::process::Command;
use std::time::Duration;

use common::{Proxy, RedisServer, wait_up_to};
use serde_json::Value;

/// A key that would run script if a page wrote it as HTML.
const XSS: &str = "<img src=x onerror=alert(1)>";

fn resp(proxy: &Proxy) -> redis::Connection {
    redis::Client::open(format!("redis://127.0.0.1:{}", proxy.resp))
        .unwrap()
        .get_connection()
        .unwrap()
}

fn get(conn: &mut redis::Connection, key: &[u8]) -> Option<Vec<u8>> {
    redis::cmd("GET").arg(key).query(conn).unwrap()
}

fn json(proxy: &Proxy, path: &str) -> Value {
    let r = proxy.admin_get(path).expect(path);
    assert_eq!(r.status, 200, "{path}: {}", r.text());
    r.json()
}

fn info_hotkeys(conn: &mut redis::Connection) -> String {
    let v: redis::Value = redis::cmd("INFO").arg("hotkeys").query(conn).unwrap();
    match v {
        redis::Value::BulkString(b) => String::from_utf8(b).unwrap(),
        redis::Value::VerbatimString { text, .. } => text,
        other => panic!("INFO hotkeys answered {other:?}"),
    }
}

#[test]
fn hot_keys_rank_the_most_read_keys_over_both_front_ends() {
    let redis = RedisServer::start();
    redis.set("hot", "1");
    redis.set("warm", "2");
    redis.set(&b"bin\xff"[..], "3");
    // A long lease: on a loaded machine a late probe must not turn a hit
    // into a miss, since hits are counted exactly here.
    let proxy = Proxy::start_ready(&redis, &["--tracking-lease", "30s"]);
    let mut conn = resp(&proxy);
    for _ in 0..30 {
        assert_eq!(proxy.get("/get/hot").status, 200);
    }
    for _ in 0..20 {
        get(&mut conn, b"hot");
        get(&mut conn, b"bin\xff");
    }
    for _ in 0..10 {
        get(&mut conn, b"warm");
    }
    for _ in 0..5 {
        get(&mut conn, b"absent");
    }
    let hot = json(&proxy, "/hotkeys");
    assert_eq!(hot["capacity"], 1024);
    let keys = hot["keys"].as_array().unwrap();
    let names: Vec<String> = keys
        .iter()
        .map(|k| {
            k["key"]
                .as_str()
                .map(String::from)
                .unwrap_or_else(|| format!("base64:{}", k["key_base64"].as_str().unwrap()))
        })
        .collect();
    assert_eq!(names, ["hot", "base64:Ymlu/w==", "warm", "absent"]);
    let first = &keys[0];
    assert_eq!(first["since_start"]["reads"], 50);
    assert_eq!(first["since_start"]["reads_error"], 0);
    // The first read missed, the other 49 hit.
    assert_eq!(first["since_start"]["hits"], 49);
    assert_eq!(first["last_minute"]["reads"], 50);
    assert_eq!(keys[3]["since_start"]["hit_ratio"], 0.0);
    assert_eq!(json(&proxy, "/hotkeys?n=2")["keys"].as_array().unwrap().len(), 2);
    assert_eq!(proxy.admin_get("/hotkeys?n=lots").unwrap().status, 400);

    let info = info_hotkeys(&mut conn);
    assert!(
        info.starts_with("# Hotkeys\r\nhotkeys_capacity:1024\r\n"),
        "{info}"
    );
    assert!(
        info.contains(
            "hotkey_0:reads=50,reads_error=0,hits=49,minute_reads=50,minute_hits=49,key=\"hot\"\r\n"
        ),
        "{info}"
    );
    assert!(
        info.contains("hotkey_1:reads=20,") && info.contains("key=\"bin\\xff\"\r\n"),
        "{info}"
    );
    // Never a label: a key's name is nowhere in /metrics.
    let metrics = proxy.admin_get("/metrics").unwrap().text();
    assert!(
        !metrics.contains("warm") && !metrics.contains("absent"),
        "{metrics}"
    );

    let off = Proxy::start_ready(&redis, &["--hotkeys-capacity", "0"]);
    let mut conn = resp(&off);
    get(&mut conn, b"hot");
    let hot = json(&off, "/hotkeys");
    assert_eq!(
        (hot["capacity"].as_u64(), hot["keys"].as_array().unwrap().len()),
        (Some(0), 0)
    );
    assert_eq!(info_hotkeys(&mut conn), "# Hotkeys\r\nhotkeys_capacity:0\r\n");
}

/// The text of the element with `id` in a dumped DOM (a leaf: its text up
/// to the next tag).
fn text_of(dom: &str, id: &str) -> String {
    let at = dom
        .find(&format!("id=\"{id}\""))
        .unwrap_or_else(|| panic!("no #{id} in the page"));
    let start = at + dom[at..].find('>').unwrap() + 1;
    let end = start + dom[start..].find('<').unwrap();
    unescape(&dom[start..end])
}

fn unescape(s: &str) -> String {
    s.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&amp;", "&")
}

/// The cells of each row of the table body `id`.
fn rows_of(dom: &str, id: &str) -> Vec<Vec<String>> {
    let at = dom
        .find(&format!("id=\"{id}\""))
        .unwrap_or_else(|| panic!("no #{id} in the page"));
    let body = &dom[at..at + dom[at..].find("</tbody>").unwrap()];
    body.split("<tr")
        .skip(1)
        .map(|row| {
            row.split("<td")
                .skip(1)
                .map(|cell| {
                    let start = cell.find('>').unwrap() + 1;
                    unescape(&cell[start..cell.find("</td>").unwrap()])
                })
                .collect()
        })
        .collect()
}

/// A figure as the page prints integers ("12,345").
fn int(text: &str) -> u64 {
    text.replace(',', "")
        .parse()
        .unwrap_or_else(|_| panic!("{text:?} is not a count"))
}

fn chromium() -> String {
    for name in ["chromium", "chromium-browser", "google-chrome"] {
        if Command::new(name)
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success())
        {
            return name.to_string();
        }
    }
    panic!("no chromium: `make test` installs Debian's chromium (scripts/ensure-test-deps.sh)");
}

/// Chromium, headless, on `url`: `what` is `--dump-dom` or
/// `--screenshot=…`. The page's script runs (and refreshes) for a few
/// seconds of virtual time first. Chromium runs in a process group of its
/// own, killed whole if it has not finished within a minute (a page stuck
/// in an `alert()` would never finish).
fn browse(url: &str, what: &str) -> String {
    use std::os::unix::process::CommandExt;
    let dir = tempdir("chromium");
    let out_path = dir.join("out");
    let mut child = Command::new(chromium())
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--disable-breakpad",
            "--disable-crash-reporter",
            "--hide-scrollbars",
            "--no-first-run",
            "--window-size=1280,1750",
            "--virtual-time-budget=4000",
        ])
        .arg(format!("--user-data-dir={}", dir.join("profile").display()))
        .arg(what)
        .arg(url)
        .stdout(std::fs::File::create(&out_path).unwrap())
        .stderr(std::process::Stdio::null())
        .process_group(0)
        .spawn()
        .unwrap();
    let group = child.id().to_string();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break Some(status);
        }
        if std::time::Instant::now() > deadline {
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    // Whatever it left behind in its group goes too.
    let _ = Command::new("kill")
        .args(["-KILL", "--", &format!("-{group}")])
        .status();
    let _ = child.wait();
    let out = std::fs::read_to_string(&out_path).unwrap_or_default();
    let _ = std::fs::remove_dir_all(&dir);
    match status {
        Some(s) if s.success() => out,
        Some(s) => panic!("chromium failed ({s}) on {url}"),
        None => panic!(
            "chromium did not finish within 60 s on {url}: a script dialog (an injected alert?) holds it"
        ),
    }
}

fn tempdir(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("redis-proxy-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// The p-quantile of one front end's latency, from `/metrics`'s
/// cumulative buckets, as Prometheus's `histogram_quantile` computes it.
fn quantile_from_metrics(metrics: &str, frontend: &str, q: f64) -> f64 {
    let mut buckets: Vec<(f64, f64)> = metrics
        .lines()
        .filter_map(|l| {
            let rest = l.strip_prefix("redis_proxy_request_duration_seconds_bucket{")?;
            let (labels, count) = rest.split_once("} ")?;
            if !labels.contains(&format!("frontend=\"{frontend}\"")) {
                return None;
            }
            let le = labels.split("le=\"").nth(1)?.split('"').next()?;
            let le = if le == "+Inf" {
                f64::INFINITY
            } else {
                le.parse().ok()?
            };
            Some((le, count.parse().ok()?))
        })
        .collect();
    buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
    let total = buckets.last().unwrap().1;
    let rank = q * total;
    let (mut lower, mut below) = (0.0, 0.0);
    for (le, cumulative) in buckets {
        if cumulative >= rank && cumulative > below {
            if le.is_infinite() {
                return lower * 1e3;
            }
            return (lower + (le - lower) * (rank - below) / (cumulative - below)) * 1e3;
        }
        lower = le;
        below = cumulative;
    }
    lower * 1e3
}

#[test]
fn the_status_page_in_a_real_browser_shows_what_status_and_metrics_say() {
    let redis = RedisServer::start();
    redis.set("foo", "bar");
    redis.set(XSS, "payload");
    // A long lease, as above: the hits below are counted exactly.
    let proxy = Proxy::start_ready(
        &redis,
        &[
            "--allow-writes",
            "--cache-capacity",
            "100",
            "--tracking-lease",
            "30s",
        ],
    );
    let mut conn = resp(&proxy);
    // Traffic on both front ends, over a few seconds so the charts have
    // samples: hits, misses, not-found, a forwarded write; the XSS key is
    // read most.
    for round in 0..3 {
        for _ in 0..40 {
            get(&mut conn, XSS.as_bytes());
        }
        for _ in 0..25 {
            assert_eq!(proxy.get("/get/foo").status, 200);
        }
        assert_eq!(proxy.get(&format!("/get/missing{round}")).status, 404);
        let _: i64 = redis::cmd("INCR").arg("counter").query(&mut conn).unwrap();
        std::thread::sleep(Duration::from_millis(700));
    }
    // Traffic stopped: wait until the ring's samples hold all of it, and a
    // quiet second after it.
    wait_up_to(Duration::from_secs(15), "the ring to hold every request", || {
        let s = json(&proxy, "/status");
        let sampled: u64 = ["http", "resp"]
            .iter()
            .flat_map(|f| {
                s["series"][f]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|v| v.as_u64().unwrap())
            })
            .sum();
        let total: u64 = ["http", "resp"]
            .iter()
            .flat_map(|f| {
                s["requests"][f]["total"]
                    .as_object()
                    .unwrap()
                    .values()
                    .map(|v| v.as_u64().unwrap())
            })
            .sum();
        let last = s["series"]["http"].as_array().unwrap().last().cloned();
        (sampled == total && total > 0 && last == Some(0.into())).then_some(s)
    });

    let url = format!("http://127.0.0.1:{}/", proxy.admin);
    // Only the page's own script may run (it still ran: the page rendered,
    // checked below).
    let page = proxy.admin_get("/").unwrap();
    let policy = page
        .header("content-security-policy")
        .unwrap_or_default()
        .to_string();
    let scripts = policy
        .split(';')
        .map(str::trim)
        .find(|d| d.starts_with("script-src"));
    assert!(
        scripts.is_some_and(|d| d.starts_with("script-src 'sha256-") && !d.contains("unsafe")),
        "{policy}"
    );
    let dom = browse(&url, "--dump-dom");
    let after = json(&proxy, "/status");
    let metrics = proxy.admin_get("/metrics").unwrap().text();
    let metric = |name: &str| -> u64 {
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
            .unwrap_or_else(|| panic!("no {name} in /metrics"))
    };

    let rendered = dom
        .split("data-rendered=\"")
        .nth(1)
        .and_then(|r| r.split('"').next());
    assert!(int(rendered.unwrap()) >= 1, "the page never rendered /status");
    assert_eq!(text_of(&dom, "version"), env!("CARGO_PKG_VERSION"));
    assert_eq!(text_of(&dom, "run-id"), after["run_id"].as_str().unwrap());
    assert_eq!(text_of(&dom, "ready"), "ready");

    // The cache's figures: page = /status = /metrics.
    for (id, field, name) in [
        ("cache-hits", "hits", "redis_proxy_cache_hits_total"),
        ("cache-misses", "misses", "redis_proxy_cache_misses_total"),
        ("cache-entries", "entries", "redis_proxy_cache_entries"),
        ("cache-capacity", "capacity", "redis_proxy_cache_capacity"),
        (
            "cache-evictions",
            "evictions",
            "redis_proxy_cache_evictions_total",
        ),
        (
            "cache-expirations",
            "expirations",
            "redis_proxy_cache_expirations_total",
        ),
        (
            "cache-invalidations",
            "invalidations",
            "redis_proxy_invalidations_total",
        ),
    ] {
        let shown = int(&text_of(&dom, id));
        assert_eq!(shown, after["cache"][field].as_u64().unwrap(), "{id}");
        assert_eq!(shown, metric(name), "{id} against {name}");
    }
    let (hits, misses) = (
        metric("redis_proxy_cache_hits_total"),
        metric("redis_proxy_cache_misses_total"),
    );
    assert_eq!(
        text_of(&dom, "hit-ratio"),
        format!("{:.1}%", 100.0 * hits as f64 / (hits + misses) as f64)
    );
    assert_eq!(
        int(&text_of(&dom, "max-clients")),
        metric("redis_proxy_max_clients")
    );
    assert_eq!(
        int(&text_of(&dom, "pinned")),
        metric("redis_proxy_pinned_connections")
    );
    assert_eq!(
        int(&text_of(&dom, "max-pinned")),
        metric("redis_proxy_max_pinned_connections")
    );
    // One client connection is the test's own RESP one.
    assert_eq!(
        int(&text_of(&dom, "clients")),
        after["clients"]["connections"].as_u64().unwrap()
    );

    // Requests by front end and outcome, since start.
    for row in rows_of(&dom, "outcomes") {
        let outcome = row[0].replace(' ', "_");
        for (column, frontend) in [(1, "http"), (3, "resp")] {
            let name = format!("redis_proxy_requests_total{{frontend=\"{frontend}\",outcome=\"{outcome}\"}}");
            assert_eq!(int(&row[column]), metric(&name), "{name}");
            assert_eq!(
                int(&row[column]),
                after["requests"][frontend]["total"][&outcome].as_u64().unwrap()
            );
        }
    }
    assert_eq!(
        metric("redis_proxy_requests_total{frontend=\"http\",outcome=\"hit\"}"),
        74
    );
    assert_eq!(
        metric("redis_proxy_requests_total{frontend=\"http\",outcome=\"not_found\"}"),
        3
    );

    // Latency: the page's p50/p99 are /status's, which are the quantiles
    // of /metrics's histogram.
    for frontend in ["http", "resp"] {
        for q in ["p50", "p99"] {
            let shown: f64 = text_of(&dom, &format!("{frontend}-{q}")).parse().unwrap();
            let status_ms = after["requests"][frontend][format!("{q}_ms")].as_f64().unwrap();
            assert!(
                (shown - status_ms).abs() < 0.0006,
                "{frontend} {q}: page {shown}, /status {status_ms}"
            );
            let from_metrics = quantile_from_metrics(&metrics, frontend, if q == "p50" { 0.5 } else { 0.99 });
            assert!(
                (shown - from_metrics).abs() < 0.0011,
                "{frontend} {q}: page {shown}, /metrics {from_metrics}"
            );
        }
    }

    // Redis: one node, up, tracking on.
    let nodes = rows_of(&dom, "nodes");
    assert_eq!(nodes.len(), 1);
    assert_eq!(nodes[0][1..3], ["up".to_string(), "on".to_string()]);

    // Top commands: the forwarded INCRs.
    let commands = rows_of(&dom, "commands");
    let incr = commands
        .iter()
        .find(|r| r[0] == "incr")
        .expect("incr among the top commands");
    assert_eq!(int(&incr[1]), 3);

    // Hot keys: the XSS key first, as text, with /status's figures.
    let hot = rows_of(&dom, "hot-keys");
    assert_eq!(hot[0][0], XSS);
    let first = &after["hot_keys"]["keys"][0];
    assert_eq!(first["key"], XSS);
    assert_eq!(int(&hot[0][1]), first["last_minute"]["reads"].as_u64().unwrap());
    assert_eq!(int(&hot[0][3]), 120);
    assert_eq!(int(&hot[0][3]), first["since_start"]["reads"].as_u64().unwrap());
    assert_eq!(hot[0][5], "99.2%"); // 119 of 120: the first read missed
    assert_eq!(hot[1][0], "foo");
    // The key is text: no element was made of it.
    assert!(!dom.contains("<img"), "an element was injected: {dom}");
    assert!(dom.contains("&lt;img src=x onerror=alert(1)&gt;"));

    // The flags in force, all of them.
    let flags = rows_of(&dom, "flags");
    assert!(flags.iter().any(|r| r[0] == "--allow-writes" && r[1] == "true"));
    assert_eq!(flags.len(), after["flags"].as_array().unwrap().len());

    // The charts drew the ring: one path per line, with points.
    let chart = &dom[dom.find("id=\"chart-requests\"").unwrap()..];
    let chart = &chart[..chart.find("</svg>").unwrap()];
    assert_eq!(chart.matches("<path").count(), 3);
    assert!(chart.contains(" L"), "a line of several samples: {chart}");

    // The picture for the README, when asked for.
    if let Ok(path) = std::env::var("STATUS_SCREENSHOT") {
        browse(&url, &format!("--screenshot={path}"));
        assert!(std::fs::metadata(&path).is_ok_and(|m| m.len() > 10_000));
    }
}
