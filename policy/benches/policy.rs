//! Policy evaluation at scale: a 10,000-resource plan document (mixed kinds, realistic tags,
//! a few violations) evaluated with the example Rego library and with the example Nickel
//! library (examples/policies). Each case runs in a fresh process (this binary, re-executed),
//! so its peak resident memory is its own; prints a markdown table.
//!
//! `cargo bench -p chimera-policy --bench policy [-- RUNS]`

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use chimera_policy::{PolicyOptions, load};
use serde_json::{Value, json};

// The CLI's allocator: Nickel allocates a lot, and the system allocator is much slower at it.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const RESOURCES: usize = 10_000;

fn examples() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/policies")
}

fn tags(i: usize) -> Value {
    let app = ["shop", "search", "billing", "auth"][i % 4];
    let mut t = json!({
        "owner": format!("team-{}", i % 17),
        "cost-center": format!("cc-{}", 1000 + i % 43),
        "app": app,
        "env": "prod",
    });
    // One resource in a hundred lacks its cost centre.
    if i % 100 == 7 {
        t.as_object_mut().unwrap().remove("cost-center");
    }
    t
}

fn change(kind: &str, name: String, after: Value, monthly: Option<f64>) -> Value {
    let changes: Vec<Value> = after
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| json!({ "attr": k, "before": null, "after": v, "force_new": false, "sensitive": false }))
        .collect();
    json!({
        "address": format!("{kind}.{name}"), "kind": kind, "name": name, "action": "create",
        "provider": "aws", "region": "us-east", "native_region": "us-east-1",
        "create_before_destroy": false, "reasons": [], "changes": changes,
        "before": null, "after": after,
        "cost": { "monthly_before": null, "monthly_after": monthly },
    })
}

/// 2% networks, 10% subnets, 8% firewalls, 60% instances, 20% volumes.
fn plan() -> Value {
    let mut changes = Vec::with_capacity(RESOURCES);
    let mut monthly = 0.0;
    for i in 0..RESOURCES {
        let c = match i % 50 {
            0 => change(
                "network",
                format!("net-{i}"),
                json!({ "cidr": "10.0.0.0/16", "tags": tags(i) }),
                None,
            ),
            1..=5 => change(
                "subnet",
                format!("sub-{i}"),
                json!({
                    "network": format!("${{chimera:network.net-{}.id}}", i - i % 50), "cidr": "10.0.1.0/24",
                    "zone": "us-east-1a", "public": i % 2 == 0, "tags": tags(i),
                }),
                None,
            ),
            6..=9 => change(
                "firewall",
                format!("fw-{i}"),
                json!({
                    "network": format!("${{chimera:network.net-{}.id}}", i - i % 50),
                    "ingress": [
                        { "protocol": "tcp", "from_port": 443, "to_port": 443, "cidrs": ["0.0.0.0/0"] },
                        // One firewall in a hundred and fifty opens SSH to the internet.
                        { "protocol": "tcp", "from_port": 22, "to_port": 22,
                          "cidrs": [if i % 150 == 6 { "0.0.0.0/0" } else { "10.0.0.0/8" }] },
                    ],
                    "egress": [{ "protocol": "all", "from_port": null, "to_port": null, "cidrs": ["0.0.0.0/0"] }],
                    "tags": tags(i),
                }),
                None,
            ),
            10..=39 => {
                let (size, ty, price) = if i % 3 == 0 {
                    ("medium", "t3.medium", 30.37)
                } else {
                    ("small", "t3.small", 15.18)
                };
                monthly += price;
                change(
                    "instance",
                    format!("web-{i}"),
                    json!({
                        "size": size, "instance_type": ty, "image": "ubuntu-24.04", "image_ref": "ami-0abcdef",
                        "subnet": format!("${{chimera:subnet.sub-{}.id}}", i - i % 50 + 1),
                        "firewalls": [format!("${{chimera:firewall.fw-{}.id}}", i - i % 50 + 6)],
                        "public_ip": false, "user_data": "(sensitive)", "tags": tags(i),
                    }),
                    Some(price),
                )
            }
            _ => {
                monthly += 4.0;
                change(
                    "volume",
                    format!("vol-{i}"),
                    json!({
                        "size_gib": 50, "type": "ssd", "disk_type": "gp3", "zone": "us-east-1a",
                        "encrypted": i % 200 != 45, "instance": format!("${{chimera:instance.web-{}.id}}", i - i % 50 + 10),
                        "tags": tags(i),
                    }),
                    Some(4.0),
                )
            }
        };
        changes.push(c);
    }
    json!({
        "format_version": 2, "stack": "fleet", "lineage": null, "prior_serial": 0,
        "desired_hash": "0".repeat(64), "destroy": false,
        "summary": { "create": RESOURCES }, "changes": changes, "drift": [],
        "cost": { "currency": "USD", "monthly_before": 0.0, "monthly_after": monthly, "delta": monthly,
                  "delta_percent": null, "unpriced": [] },
    })
}

fn peak_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

/// One case in this process: prints `load_ms median_ms min_ms max_ms findings base_kib peak_kib`.
fn case(lang: &str, runs: usize) {
    let input = plan();
    let base = peak_kib();
    let opts = PolicyOptions {
        timeout: Duration::from_secs(120),
        ..PolicyOptions::default()
    };
    let start = Instant::now();
    let lib = load(&examples().join(lang), &opts).unwrap_or_else(|d| panic!("{d:#?}"));
    let load_ms = start.elapsed().as_secs_f64() * 1e3;
    let mut times = Vec::new();
    let mut findings = 0;
    for _ in 0..runs {
        let start = Instant::now();
        let f = lib.evaluate(&input).unwrap_or_else(|d| panic!("{d:#?}"));
        times.push(start.elapsed().as_secs_f64() * 1e3);
        findings = f.len();
    }
    times.sort_by(f64::total_cmp);
    println!(
        "{load_ms:.1} {:.1} {:.1} {:.1} {findings} {base} {}",
        times[times.len() / 2],
        times[0],
        times[times.len() - 1],
        peak_kib()
    );
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "--case") {
        let runs = args.get(i + 2).and_then(|r| r.parse().ok()).unwrap_or(5);
        case(&args[i + 1], runs);
        return;
    }
    // `cargo bench` passes `--bench`; a number is the runs per case.
    let runs: usize = args
        .iter()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(5);
    let bytes = serde_json::to_vec(&plan()).map(|v| v.len()).unwrap_or(0);
    println!(
        "Plan document: {RESOURCES} resources, {:.1} MiB of JSON; {runs} runs per case, each case in a fresh process.\n",
        bytes as f64 / (1 << 20) as f64
    );
    println!(
        "| library | load | evaluate (median) | min – max | findings | peak RSS (plan alone) |"
    );
    println!("|---|---|---|---|---|---|");
    let exe = std::env::current_exe().expect("the bench binary");
    for (lang, name) in [
        ("rego", "Rego (6 files, regorus)"),
        ("nickel", "Nickel (6 files)"),
    ] {
        let out = Command::new(&exe)
            .args(["--case", lang, &runs.to_string()])
            .output()
            .expect("re-run the bench");
        let text = String::from_utf8_lossy(&out.stdout);
        let v: Vec<&str> = text.split_whitespace().collect();
        if !out.status.success() || v.len() < 7 {
            eprintln!("{name}: {}", String::from_utf8_lossy(&out.stderr));
            continue;
        }
        let mib = |s: &str| s.parse::<f64>().unwrap_or(0.0) / 1024.0;
        println!(
            "| {name} | {} ms | {} ms | {} – {} ms | {} | {:.0} MiB ({:.0} MiB) |",
            v[0],
            v[1],
            v[2],
            v[3],
            v[4],
            mib(v[6]),
            mib(v[5])
        );
    }
}
