//! The example policy library (examples/policies): each policy written in Rego and in Nickel,
//! on its passing and its failing fixture. Both languages must report the same findings.

use std::path::{Path, PathBuf};

use chimera_policy::{Finding, Level, PolicyOptions, load, run_tests};

fn examples() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/policies")
}

fn fixture(policy: &str, kind: &str) -> serde_json::Value {
    let path = examples()
        .join("fixtures")
        .join(policy)
        .join(format!("{kind}.json"));
    serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap()
}

type Row = (Level, &'static str, Option<&'static str>, &'static str);

/// What the whole library reports on each policy's fixtures (the other policies pass them).
fn expected(policy: &str, kind: &str) -> Vec<Row> {
    use Level::*;
    let mut rows: Vec<Row> = match (policy, kind) {
        ("required_tags", "fail") => vec![
            (
                Deny,
                "required_tags",
                Some("instance.web-1"),
                "instance.web-1 has no `cost-center` tag",
            ),
            (
                Deny,
                "required_tags",
                Some("instance.worker"),
                "instance.worker has no `owner` tag",
            ),
            (
                Deny,
                "required_tags",
                Some("network.main"),
                "network.main has no `cost-center` tag",
            ),
            (
                Deny,
                "required_tags",
                Some("network.main"),
                "network.main has no `owner` tag",
            ),
        ],
        ("regions", "fail") => vec![
            (
                Deny,
                "regions",
                Some("instance.web-1"),
                "instance.web-1 uses provider `gcp`, which is not allowed (allowed: aws, local)",
            ),
            (
                Deny,
                "regions",
                Some("subnet.web"),
                "subnet.web is in region `ap-south`, which is not allowed (allowed: eu-west, us-east)",
            ),
        ],
        ("sizes", "fail") => vec![
            (
                Deny,
                "sizes",
                Some("instance.web-1"),
                "instance.web-1 has size `xlarge`, which is not allowed (allowed: medium, small)",
            ),
            (
                Deny,
                "sizes",
                Some("instance.web-1"),
                "instance.web-1 has instance type `t3.2xlarge`, which is not allowed",
            ),
            (
                Deny,
                "sizes",
                Some("instance.worker"),
                "instance.worker has instance type `m5.large`, which is not allowed",
            ),
        ],
        ("open_ports", "fail") => vec![
            (
                Deny,
                "open_ports",
                Some("firewall.admin"),
                "firewall.admin admits the internet to port 3389 (rdp)",
            ),
            (
                Deny,
                "open_ports",
                Some("firewall.web"),
                "firewall.web admits the internet to port 22 (ssh)",
            ),
            (
                Deny,
                "open_ports",
                Some("firewall.web"),
                "firewall.web admits the internet to port 3389 (rdp)",
            ),
        ],
        ("encryption", "fail") => vec![(
            Deny,
            "encryption",
            Some("volume.data"),
            "volume.data is not encrypted",
        )],
        ("budget", "pass") => vec![(
            Warn,
            "budget",
            None,
            "the monthly cost would be 900.5 USD, over 80% of the budget",
        )],
        ("budget", "fail") => vec![
            (
                Deny,
                "budget",
                None,
                "the monthly cost would be 1250.5 USD, over the budget of 1000",
            ),
            (
                Deny,
                "budget",
                None,
                "the plan adds 450.5 USD a month, more than the 200 one plan may add",
            ),
            (
                Deny,
                "budget",
                None,
                "the plan raises the monthly cost by 56.31%, more than 50%",
            ),
        ],
        _ => vec![],
    };
    rows.sort();
    rows
}

fn rows(findings: &[Finding]) -> Vec<(Level, String, Option<String>, String)> {
    let mut out: Vec<_> = findings
        .iter()
        .map(|f| {
            (
                f.level,
                f.rule.clone(),
                f.address.clone(),
                f.message.clone(),
            )
        })
        .collect();
    out.sort();
    out
}

const POLICIES: [&str; 6] = [
    "required_tags",
    "regions",
    "sizes",
    "open_ports",
    "encryption",
    "budget",
];

fn check_library(lang: &str) {
    let lib = load(&examples().join(lang), &PolicyOptions::default())
        .unwrap_or_else(|d| panic!("{d:#?}"));
    assert_eq!(lib.files().len(), POLICIES.len(), "{:?}", lib.files());
    for policy in POLICIES {
        for kind in ["pass", "fail"] {
            let findings = lib
                .evaluate(&fixture(policy, kind))
                .unwrap_or_else(|d| panic!("{lang} {policy} {kind}: {d:#?}"));
            let want: Vec<_> = expected(policy, kind)
                .into_iter()
                .map(|(l, r, a, m)| (l, r.to_string(), a.map(str::to_string), m.to_string()))
                .collect();
            assert_eq!(rows(&findings), want, "{lang} on {policy}/{kind}.json");
            if kind == "fail" {
                assert!(!want.is_empty());
            }
            for f in &findings {
                let ext = if lang == "rego" { "rego" } else { "ncl" };
                assert!(
                    f.file.ends_with(&format!("{lang}/{}.{ext}", f.rule)),
                    "{f:?}"
                );
                assert!(f.line.is_some(), "{f:?}");
            }
        }
    }
}

#[test]
fn the_rego_library_reports_each_fixture() {
    check_library("rego");
}

#[test]
fn the_nickel_library_reports_each_fixture() {
    check_library("nickel");
}

#[test]
fn findings_point_at_the_definition_that_produced_them() {
    let lib = load(&examples().join("rego"), &PolicyOptions::default()).unwrap();
    let findings = lib.evaluate(&fixture("sizes", "fail")).unwrap();
    let text = std::fs::read_to_string(examples().join("rego/sizes.rego")).unwrap();
    for f in findings {
        let line = text.lines().nth(f.line.unwrap() - 1).unwrap();
        assert!(line.starts_with("deny contains"), "{f:?} at `{line}`");
        // Two definitions: the size one comes first in the file.
        let size_rule = f.message.contains("has size");
        let first = text
            .lines()
            .position(|l| l.starts_with("deny contains"))
            .unwrap()
            + 1;
        assert_eq!(f.line == Some(first), size_rule, "{f:?}");
    }
    let nickel = load(&examples().join("nickel"), &PolicyOptions::default()).unwrap();
    let text = std::fs::read_to_string(examples().join("nickel/budget.ncl")).unwrap();
    for f in nickel.evaluate(&fixture("budget", "pass")).unwrap() {
        let line = text.lines().nth(f.line.unwrap() - 1).unwrap();
        assert!(line.trim_start().starts_with("warn ="), "{f:?} at `{line}`");
    }
}

#[test]
fn the_example_tests_pass() {
    for lang in ["rego", "nickel"] {
        let report = run_tests(&examples().join(lang), &PolicyOptions::default())
            .unwrap_or_else(|d| panic!("{lang}: {d:#?}"));
        let failed: Vec<_> = report.results.iter().filter(|r| !r.passed).collect();
        assert!(failed.is_empty(), "{lang}: {failed:#?}");
        assert!(report.results.len() >= 6, "{lang}: {:#?}", report.results);
    }
}

#[test]
fn the_digest_follows_names_and_contents() {
    let opts = PolicyOptions::default();
    let a = load(&examples().join("rego"), &opts).unwrap();
    let b = load(&examples().join("rego"), &opts).unwrap();
    assert_eq!(a.digest(), b.digest());
    let n = load(&examples().join("nickel"), &opts).unwrap();
    assert_ne!(a.digest(), n.digest());
    let dir = tempfile::tempdir().unwrap();
    let copy = |name: &str, to: &str| {
        std::fs::copy(examples().join("rego").join(name), dir.path().join(to)).unwrap();
    };
    copy("encryption.rego", "encryption.rego");
    let one = load(dir.path(), &opts).unwrap().digest();
    std::fs::rename(
        dir.path().join("encryption.rego"),
        dir.path().join("volumes.rego"),
    )
    .unwrap();
    assert_ne!(load(dir.path(), &opts).unwrap().digest(), one);
}
