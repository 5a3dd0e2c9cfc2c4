//! `deploy/grafana/redis-proxy.json` and `deploy/prometheus/alerts.yml`
//! cannot rot: every metric they name is one the proxy exports, and the
//! alert rules pass `promtool check rules` (Debian's prometheus package;
//! `make test` installs it).

mod common;

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

use common::setup;

/// Every series name in a /metrics text (counters with `_total`,
/// histograms with `_bucket`, `_sum`, `_count`), from its samples and its
/// `# TYPE` lines.
fn exported(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let mut words = rest.split_whitespace();
            let (Some(name), Some(kind)) = (words.next(), words.next()) else {
                continue;
            };
            match kind {
                "counter" => drop(names.insert(format!("{name}_total"))),
                "histogram" => {
                    for suffix in ["_bucket", "_sum", "_count"] {
                        names.insert(format!("{name}{suffix}"));
                    }
                }
                _ => drop(names.insert(name.to_string())),
            }
        } else if !line.starts_with('#') && !line.is_empty() {
            let name = line.split(['{', ' ']).next().unwrap();
            names.insert(name.to_string());
        }
    }
    names
}

/// The `redis_proxy_…` names a file uses.
fn used(path: &str) -> BTreeSet<String> {
    let text = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join(path)).unwrap();
    let mut names = BTreeSet::new();
    let mut rest = text.as_str();
    while let Some(at) = rest.find("redis_proxy_") {
        let tail = &rest[at..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        names.insert(tail[..end].to_string());
        rest = &tail[end..];
    }
    names
}

#[test]
fn every_metric_the_dashboard_and_the_alerts_use_is_exported() {
    let (redis, proxy) = setup(&[]);
    redis.set("k", "v");
    // Traffic, so that the labelled families have samples.
    assert_eq!(proxy.get("/get/k").status, 200);
    assert_eq!(proxy.get("/get/missing").status, 404);
    let mut c = redis::Client::open(format!("redis://127.0.0.1:{}/0", proxy.resp))
        .unwrap()
        .get_connection()
        .unwrap();
    let _: Option<String> = redis::cmd("GET").arg("k").query(&mut c).unwrap();
    let _: redis::RedisResult<i64> = redis::cmd("INCR").arg("n").query(&mut c);
    let metrics = proxy.admin_get("/metrics").unwrap().text();
    let exported = exported(&metrics);
    for path in ["deploy/grafana/redis-proxy.json", "deploy/prometheus/alerts.yml"] {
        let used = used(path);
        assert!(used.len() >= 6, "{path} names only {used:?}");
        let unknown: Vec<&String> = used.iter().filter(|n| !exported.contains(*n)).collect();
        assert!(
            unknown.is_empty(),
            "{path} uses metrics the proxy does not export: {unknown:?}"
        );
    }
    // The limits the alerts compare against are exported with their values.
    for (name, value) in [
        ("redis_proxy_max_clients", "10000"),
        ("redis_proxy_max_pinned_connections", "1000"),
        ("redis_proxy_cache_capacity", "10000"),
        ("redis_proxy_cache_max_bytes", "1073741824"),
    ] {
        assert!(
            metrics.lines().any(|l| l == format!("{name} {value}")),
            "no {name} {value} in {metrics}"
        );
    }
}

#[test]
fn the_alert_rules_pass_promtool() {
    let rules = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/prometheus/alerts.yml");
    let out = Command::new("promtool")
        .args(["check", "rules"])
        .arg(&rules)
        .output()
        .expect("promtool (make test installs Debian's prometheus package)");
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let grafana = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/grafana/redis-proxy.json"),
    )
    .unwrap();
    let dashboard: serde_json::Value = serde_json::from_str(&grafana).unwrap();
    assert!(dashboard["panels"].as_array().is_some_and(|p| p.len() >= 10));
}
