//! The build stays lean: no heavy crate is compiled twice (in two versions) for any set of
//! features, and no second TLS stack or crypto provider creeps in (issue #20).
//!
//! Cargo.lock is the union of every feature set, target and dev-dependency, so a crate listed
//! once there is built at most once whatever features are on. A dependency bump that pulls a
//! second reqwest, hyper or rustls fails here with the versions and the fix.

use std::collections::BTreeMap;

/// Crates that cost minutes to compile or megabytes in the binary when doubled.
const HEAVY: &[&str] = &[
    "reqwest",
    "hyper",
    "hyper-util",
    "hyper-rustls",
    "h2",
    "http",
    "rustls",
    "tokio-rustls",
    "ring",
    "tokio",
    "tower",
    "tonic",
    "prost",
    "axum",
    "sqlx-core",
    "libsqlite3-sys",
    "nickel-lang-core",
    "aws-sdk-ec2",
    "aws-smithy-runtime",
    "google-cloud-compute-v1",
    "google-cloud-gax-internal",
    "azure_core",
    "serde",
    "serde_json",
];

/// Crates that must not be built at all: the workspace is rustls-only, on one crypto provider
/// (ring; `chimera_providers::install_tls_crypto`).
const BANNED: &[(&str, &str)] = &[
    (
        "aws-lc-sys",
        "a dependency enabled rustls's aws-lc backend (a second crypto provider beside ring, and a 44 s C build); turn it off: reqwest `rustls-no-provider`, the AWS SDK without `default-https-client`, google-cloud without `default-rustls-provider`, azure_core without `reqwest_rustls`",
    ),
    (
        "openssl-sys",
        "a dependency enabled native TLS; turn its `rustls` feature on and default features off",
    ),
    (
        "native-tls",
        "a dependency enabled native TLS; turn its `rustls` feature on and default features off",
    ),
];

fn locked() -> BTreeMap<String, Vec<String>> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/Cargo.lock");
    let text = std::fs::read_to_string(path).expect("Cargo.lock is committed");
    let lock: toml::Table = toml::from_str(&text).expect("Cargo.lock is TOML");
    let mut versions: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for package in lock["package"].as_array().expect("[[package]] entries") {
        let name = package["name"].as_str().expect("a package name");
        let version = package["version"].as_str().expect("a package version");
        versions
            .entry(name.to_string())
            .or_default()
            .push(version.to_string());
    }
    versions
}

#[test]
fn no_heavy_crate_is_built_twice() {
    let versions = locked();
    let doubled: Vec<String> = HEAVY
        .iter()
        .filter_map(|name| {
            let v = versions.get(*name)?;
            (v.len() > 1).then(|| format!("{name}: {}", v.join(", ")))
        })
        .collect();
    assert!(
        doubled.is_empty(),
        "Cargo.lock holds two versions of a heavy crate:\n  {}\n\
         Run `cargo tree -i NAME@VERSION` to see who pulls the older one, then align the \
         versions in [workspace.dependencies] (or pick the dependency's version that uses ours).",
        doubled.join("\n  ")
    );
    // The list names crates that are really there: a rename upstream must not silently turn
    // this check off.
    for name in [
        "reqwest",
        "hyper",
        "rustls",
        "tokio",
        "nickel-lang-core",
        "sqlx-core",
    ] {
        assert!(
            versions.contains_key(name),
            "`{name}` is no longer in Cargo.lock: update HEAVY"
        );
    }
}

#[test]
fn no_native_tls() {
    let versions = locked();
    for (name, fix) in BANNED {
        assert!(
            !versions.contains_key(*name),
            "Cargo.lock holds `{name}`: {fix} (`cargo tree -i {name}` shows who)."
        );
    }
}

/// Cloud SDK crates: only the cloud crates (and testkit, for raw calls in tests) depend on them.
const CLOUD_SDKS: &[&str] = &[
    "aws-config",
    "aws-sdk-ec2",
    "aws-smithy-http-client",
    "google-cloud-compute-v1",
    "google-cloud-gax",
    "google-cloud-auth",
    "azure_core",
    "azure_identity",
];

/// One crate per cloud (docs/ARCHITECTURE.md, decision 26): the clouds build at opt-level 1
/// while chimera-providers, which holds the hot local cloud, stays at 3. A cloud SDK in any
/// other workspace crate's dependencies (dev-dependencies aside) would undo that.
#[test]
fn only_the_cloud_crates_link_cloud_sdks() {
    let out = std::process::Command::new(env!("CARGO"))
        .args([
            "metadata",
            "--no-deps",
            "--offline",
            "--format-version",
            "1",
        ])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("cargo metadata runs");
    assert!(
        out.status.success(),
        "cargo metadata failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let meta: serde_json::Value = serde_json::from_slice(&out.stdout).expect("metadata JSON");
    let allowed = [
        "chimera-aws",
        "chimera-gcp",
        "chimera-azure",
        "chimera-testkit",
    ];
    let mut wrong = Vec::new();
    let mut seen = 0;
    for package in meta["packages"].as_array().expect("packages") {
        let name = package["name"].as_str().expect("a package name");
        for dep in package["dependencies"].as_array().expect("dependencies") {
            let dep_name = dep["name"].as_str().expect("a dependency name");
            if !CLOUD_SDKS.contains(&dep_name) || dep["kind"].as_str() == Some("dev") {
                continue;
            }
            seen += 1;
            if !allowed.contains(&name) {
                wrong.push(format!("{name} → {dep_name}"));
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "a cloud SDK outside the cloud crates:\n  {}\n\
         Move the code that needs it into chimera-aws, chimera-gcp or chimera-azure \
         (providers/*), which are built at opt-level 1.",
        wrong.join("\n  ")
    );
    assert!(
        seen > 0,
        "no crate depends on a cloud SDK: update CLOUD_SDKS"
    );
}
