//! The ops files — Dockerfile, docker-compose.yml, Prometheus config and rules, the
//! Grafana dashboard — kept right without a Docker engine: every file they reference
//! exists, `docker-compose config` and `promtool` accept them, the compose environment
//! is a valid pgch configuration, and every metric they name is one pgch exports.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Finds `name` on PATH; `None` prints why the check is skipped.
fn tool(name: &str) -> Option<PathBuf> {
    let found = std::env::var("PATH")
        .unwrap_or_default()
        .split(':')
        .map(|d| Path::new(d).join(name))
        .find(|p| p.is_file());
    if found.is_none() {
        eprintln!("skipped: {name} is not installed (bash .ci/install installs it)");
    }
    found
}

fn run_ok(cmd: &mut Command) -> String {
    let out = cmd.current_dir(root()).output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{cmd:?} failed:\n{text}");
    text
}

/// A YAML file as JSON, through Python's yaml module (docker-compose depends on it).
fn yaml(path: &Path) -> serde_json::Value {
    let out = Command::new("python3")
        .args([
            "-c",
            "import json, sys, yaml; print(json.dumps(yaml.safe_load(open(sys.argv[1]))))",
        ])
        .arg(path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{} does not parse as YAML: {}",
        path.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

fn compose() -> serde_json::Value {
    yaml(&root().join("docker-compose.yml"))
}

#[test]
fn compose_file_parses_and_docker_compose_accepts_it() {
    let c = compose();
    for service in ["postgres", "clickhouse", "pgch", "prometheus", "grafana"] {
        assert!(
            c["services"][service].is_object(),
            "service {service} missing"
        );
    }
    if let Some(dc) = tool("docker-compose") {
        run_ok(Command::new(dc).args(["-f", "docker-compose.yml", "config", "-q"]));
    }
}

#[test]
fn files_the_compose_file_and_dockerfile_reference_exist() {
    let c = compose();
    for (name, service) in c["services"].as_object().unwrap() {
        for volume in service["volumes"].as_array().into_iter().flatten() {
            let host = volume.as_str().unwrap().split(':').next().unwrap();
            if host.starts_with('.') || host.starts_with('/') {
                assert!(root().join(host).exists(), "{name}: {host} does not exist");
            }
        }
        if let Some(ctx) = service["build"].as_str() {
            assert!(
                root().join(ctx).join("Dockerfile").is_file(),
                "{name}: no Dockerfile"
            );
        }
    }
    let dockerfile = std::fs::read_to_string(root().join("Dockerfile")).unwrap();
    for line in dockerfile.lines().filter(|l| l.starts_with("COPY ")) {
        if line.contains("--from=") {
            continue;
        }
        let parts: Vec<&str> = line.split_whitespace().skip(1).collect();
        for src in &parts[..parts.len() - 1] {
            assert!(root().join(src).exists(), "Dockerfile copies missing {src}");
        }
    }
    assert!(
        dockerfile.contains("\nUSER ") && !dockerfile.contains("USER root"),
        "the runtime image runs as a non-root user"
    );
    // Grafana's provider path is where the dashboards directory is mounted.
    let provider = yaml(&root().join("deploy/grafana/provisioning/dashboards/pgch.yml"));
    let path = provider["providers"][0]["options"]["path"]
        .as_str()
        .unwrap();
    let mounted = c["services"]["grafana"]["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|v| v.as_str())
        .find(|v| v.split(':').nth(1) == Some(path))
        .unwrap_or_else(|| panic!("nothing mounted at {path}"));
    let host = mounted.split(':').next().unwrap();
    assert!(root().join(host).join("pgch.json").is_file());
}

#[test]
fn compose_environment_is_a_valid_pgch_configuration() {
    let c = compose();
    let env: Vec<(String, String)> = c["services"]["pgch"]["environment"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_string()))
        .collect();
    let settings = pgch::config::Config::load_with_env(None, env)
        .and_then(|c| c.validate())
        .unwrap();
    assert_eq!(settings.metrics.listen.port(), 9188);
    assert!(
        !settings.metrics.listen.ip().is_loopback(),
        "Prometheus in another container must reach pgch"
    );
    let targets = yaml(&root().join("deploy/prometheus/prometheus.yml"));
    let target = targets["scrape_configs"][0]["static_configs"][0]["targets"][0]
        .as_str()
        .unwrap();
    assert_eq!(target, "pgch:9188");
}

#[test]
fn promtool_accepts_the_prometheus_config_and_rules() {
    let Some(promtool) = tool("promtool") else {
        return;
    };
    run_ok(Command::new(&promtool).args(["check", "config", "deploy/prometheus/prometheus.yml"]));
    for rules in std::fs::read_dir(root().join("deploy/prometheus/rules")).unwrap() {
        let path = rules.unwrap().path();
        run_ok(Command::new(&promtool).arg("check").arg("rules").arg(&path));
    }
}

/// Every `pgch_…` name in `text`, histogram suffixes folded into their family.
fn metric_names(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let bytes = text.as_bytes();
    let mut i = 0;
    while let Some(pos) = text[i..].find("pgch_") {
        let start = i + pos;
        let mut end = start;
        while end < bytes.len() && (bytes[end].is_ascii_alphanumeric() || bytes[end] == b'_') {
            end += 1;
        }
        let preceded =
            start > 0 && (bytes[start - 1].is_ascii_alphanumeric() || bytes[start - 1] == b'_');
        if !preceded {
            let name = &text[start..end];
            let family = ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|s| {
                    name.strip_suffix(s)
                        .filter(|f| pgch::metrics::ALL.contains(f))
                })
                .unwrap_or(name);
            names.insert(family.to_string());
        }
        i = end.max(start + 1);
    }
    names
}

#[test]
fn dashboard_and_rules_name_only_metrics_pgch_exports() {
    let dashboard =
        std::fs::read_to_string(root().join("deploy/grafana/dashboards/pgch.json")).unwrap();
    let json: serde_json::Value = serde_json::from_str(&dashboard).unwrap();
    let mut exprs = String::new();
    for panel in json["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().into_iter().flatten() {
            exprs.push_str(target["expr"].as_str().unwrap());
            exprs.push('\n');
        }
    }
    let rules =
        std::fs::read_to_string(root().join("deploy/prometheus/rules/pgch.rules.yml")).unwrap();
    let parsed = yaml(&root().join("deploy/prometheus/rules/pgch.rules.yml"));
    let mut rule_exprs = String::new();
    for group in parsed["groups"].as_array().unwrap() {
        for rule in group["rules"].as_array().unwrap() {
            rule_exprs.push_str(rule["expr"].as_str().unwrap());
            rule_exprs.push('\n');
        }
    }
    let exported: BTreeSet<String> = pgch::metrics::ALL.iter().map(|s| s.to_string()).collect();
    for (what, text) in [("dashboard", &exprs), ("rules", &rule_exprs)] {
        let used = metric_names(text);
        assert!(used.len() >= 5, "{what} uses few metrics: {used:?}");
        let unknown: Vec<_> = used.difference(&exported).collect();
        assert!(
            unknown.is_empty(),
            "{what} names metrics pgch does not export: {unknown:?}"
        );
    }
    for must in [
        "pgch_slot_retained_wal_ratio",
        "pgch_lag_seconds",
        "pgch_slot_wal_status",
    ] {
        assert!(rules.contains(must), "no alert on {must}");
        assert!(exprs.contains(must), "no panel on {must}");
    }
}
