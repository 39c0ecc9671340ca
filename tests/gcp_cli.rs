//! The GCP provider through the `chimera` binary against the in-repo fake of the Compute API,
//! served from this test process on 127.0.0.1 (so it outlives a killed CLI): the multicloud
//! example's GCP placement end to end with drift, kill -9 during inserts, a machine type the
//! region lacks, throttling, and `orphans` and `import`.
#![cfg(feature = "gcp")]

mod common;

use std::path::Path;
use std::time::Duration;

use chimera_testkit::fake_gcp::{FakeGcp, Knobs};
use common::cloud::{crash_iterations, fleet, killed_applies, run, text};
use serde_json::{Value, json};

const PROJECT: &str = "demo";

fn providers(fake: &FakeGcp) -> String {
    format!(
        r#"{{ gcp = {{ project = "{PROJECT}", endpoint = "{}", poll_interval_ms = 5 }} }}"#,
        fake.url
    )
}

fn fake(op_delay_ms: u64) -> FakeGcp {
    FakeGcp::start(Knobs {
        op_delay: Duration::from_millis(op_delay_ms),
        ..Knobs::default()
    })
}

/// The multicloud example with only its GCP placement.
fn multicloud_on_gcp(fake: &FakeGcp) -> String {
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/multicloud/main.ncl");
    format!(
        r#"let m = import "{}" in
{{
  stack = m.stack,
  providers = {},
  resources = std.array.filter (fun r => r.provider == 'gcp) m.resources,
}}
"#,
        example.display(),
        providers(fake)
    )
}

/// Live instances per `chimera-address` label (escaped as the provider writes it).
fn instances_by_address(fake: &FakeGcp) -> std::collections::BTreeMap<String, usize> {
    let mut out = std::collections::BTreeMap::new();
    for i in fake.all("instances").values() {
        let a = i["labels"]["chimera-address"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        *out.entry(a).or_insert(0) += 1;
    }
    out
}

#[test]
fn the_multicloud_gcp_placement_applies_replans_empty_and_reports_drift() {
    let fake = fake(20);
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(d.join("main.ncl"), multicloud_on_gcp(&fake)).unwrap();
    let o = run(d, &["apply", "-y"]);
    assert!(o.status.success(), "{}", text(&o));
    let o = run(d, &["plan", "--detailed-exitcode"]);
    assert_eq!(o.status.code(), Some(0), "re-plans empty: {}", text(&o));
    // europe-west1's first zone is b; the catalog's 'medium is e2-medium.
    let vms = fake.resources(PROJECT, "zones/europe-west1-b/instances");
    assert_eq!(vms.len(), 2, "{:?}", vms.keys());
    for vm in vms.values() {
        assert!(vm["machineType"].as_str().unwrap().ends_with("/e2-medium"));
        assert_eq!(vm["labels"]["app"], "shop");
        assert_eq!(vm["tags"]["items"].as_array().map(Vec::len), Some(1));
    }
    let rules = fake.resources(PROJECT, "global/firewalls");
    let ingress: Vec<&Value> = rules
        .values()
        .filter(|r| r["direction"] == "INGRESS")
        .collect();
    assert_eq!(ingress.len(), 1, "{:?}", rules.keys());
    assert_eq!(
        ingress[0]["allowed"],
        json!([{ "IPProtocol": "tcp", "ports": ["443"] }])
    );

    // Drift: a label changed in the console is what refresh reports, and the plan heals it.
    let (path, _) = fake.all("instances").into_iter().next().unwrap();
    assert!(fake.mutate(&path, |i| i["labels"]["app"] = json!("hijacked")));
    let o = run(d, &["refresh"]);
    let t = text(&o);
    assert!(o.status.success(), "{t}");
    assert!(t.contains("hijacked"), "{t}");
    let o = run(d, &["plan", "--detailed-exitcode"]);
    let t = text(&o);
    assert_eq!(o.status.code(), Some(2), "{t}");
    assert!(t.contains("~ instance.shop-gcp-web-"), "{t}");
    let o = run(d, &["apply", "-y"]);
    assert!(o.status.success(), "{}", text(&o));
    let o = run(d, &["plan", "--detailed-exitcode"]);
    assert_eq!(o.status.code(), Some(0), "healed: {}", text(&o));

    let o = run(d, &["destroy", "-y"]);
    assert!(o.status.success(), "{}", text(&o));
    for kind in ["instances", "disks", "firewalls", "subnetworks", "networks"] {
        assert!(
            fake.all(kind).is_empty(),
            "{kind}: {:?}",
            fake.all(kind).keys()
        );
    }
}

/// Killed while inserts are in flight, the CLI leaves instances PROVISIONING (GCP shows them
/// at once): the next apply's recovery finds each by its token, waits for it and adopts it, so
/// none is made twice.
#[test]
fn kill_9_during_inserts_never_duplicates() {
    // Operations take 300 ms: a kill often lands between an insert and its DONE.
    let fake = fake(300);
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let count = 24;
    std::fs::write(d.join("main.ncl"), fleet("gcp", &providers(&fake), count)).unwrap();
    let iterations = crash_iterations("CHIMERA_GCP_CRASH_ITERATIONS");
    let interrupted = killed_applies(d, iterations, 0x9c_5eed, 200..1100);
    assert!(
        interrupted >= 2,
        "only {interrupted} kills hit an apply in flight"
    );
    let o = run(d, &["apply", "-y", "--parallelism", "16"]);
    assert!(o.status.success(), "{}", text(&o));
    let o = run(d, &["plan", "--detailed-exitcode"]);
    assert_eq!(o.status.code(), Some(0), "converged: {}", text(&o));
    let live = instances_by_address(&fake);
    assert_eq!(live.len(), count, "one instance per address: {live:?}");
    assert!(live.values().all(|n| *n == 1), "duplicates: {live:?}");
}

#[test]
fn a_machine_type_the_region_lacks_is_a_plan_time_diagnostic() {
    let fake = fake(5);
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(
        d.join("main.ncl"),
        format!(
            r#"let c = import "chimera.ncl" in
let on = {{ provider = 'gcp, region = "us-east" }} in
let net = c.Network & on & {{ name = "main", cidr = "10.0.0.0/16" }} in
let sn = c.Subnet & on & {{ name = "s", network = net, cidr = "10.0.1.0/24" }} in
{{ stack = "arm", providers = {},
  resources = [net, sn, c.Instance & on & {{ name = "arm", size = 'small, subnet = sn, gcp = {{ machine_type = "t2a-standard-1" }} }}] }}
"#,
            providers(&fake)
        ),
    )
    .unwrap();
    let o = run(d, &["plan"]);
    let t = text(&o);
    assert_eq!(o.status.code(), Some(1), "{t}");
    assert!(
        t.contains("instance.arm") && t.contains("t2a-standard-1") && t.contains("us-central1"),
        "{t}"
    );
    assert_eq!(fake.inserts(), 0, "nothing was created: {t}");
}

#[test]
fn throttled_and_unavailable_requests_are_retried() {
    let fake = FakeGcp::start(Knobs {
        op_delay: Duration::from_millis(5),
        throttle_every: 5,
        unavailable_every: 11,
        ..Knobs::default()
    });
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(d.join("main.ncl"), fleet("gcp", &providers(&fake), 6)).unwrap();
    let o = run(d, &["apply", "-y"]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(fake.injected() > 3, "injected {}", fake.injected());
    assert_eq!(instances_by_address(&fake).len(), 6);
    let o = run(d, &["plan", "--detailed-exitcode"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
}

/// Inserts a network straight through the fake's API, as someone outside Chimera would.
fn network_outside(fake: &FakeGcp, name: &str, description: Option<Value>) {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let mut body = json!({ "name": name, "autoCreateSubnetworks": false });
    if let Some(d) = description {
        body["description"] = json!(d.to_string());
    }
    let r = agent
        .post(&format!(
            "{}/compute/v1/projects/{PROJECT}/global/networks",
            fake.url
        ))
        .header("content-type", "application/json")
        .send(body.to_string())
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
}

#[test]
fn orphans_and_import_on_gcp() {
    let fake = fake(5);
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(
        d.join("main.ncl"),
        format!(
            r#"let c = import "chimera.ncl" in
{{ stack = "adopt", providers = {}, resources = [
  c.Network & {{ provider = 'gcp, region = "us-east", name = "main", cidr = "10.0.0.0/16" }},
  c.Network & {{ provider = 'gcp, region = "us-east", name = "legacy", cidr = "10.9.0.0/16" }} ] }}
"#,
            providers(&fake)
        ),
    )
    .unwrap();
    let o = run(d, &["apply", "-y"]);
    assert!(o.status.success(), "{}", text(&o));
    // Made outside Chimera: one described as the stack's (an orphan), one plain (to import).
    network_outside(
        &fake,
        "stray-net",
        Some(
            json!({ "chimera": { "chimera-stack": "adopt", "chimera-address": "network.stray" } }),
        ),
    );
    network_outside(&fake, "legacy-net", None);
    std::thread::sleep(Duration::from_millis(20));
    let o = run(d, &["orphans"]);
    let t = text(&o);
    assert!(o.status.success(), "{t}");
    assert!(
        t.contains("stray-net") && t.contains("network.stray"),
        "{t}"
    );
    assert!(
        !t.contains("legacy-net"),
        "untagged resources are not the stack's: {t}"
    );

    let o = run(d, &["destroy", "-y"]);
    assert!(o.status.success(), "{}", text(&o));
    let o = run(
        d,
        &[
            "import",
            "network.legacy",
            "legacy-net",
            "--provider",
            "gcp",
        ],
    );
    assert!(o.status.success(), "{}", text(&o));
    let o = run(d, &["state", "list", "--stack", "adopt"]);
    assert!(
        text(&o).contains("network.legacy") && text(&o).contains("legacy-net"),
        "{}",
        text(&o)
    );
}

/// A stack whose network tags, instance address and disk size are parameters.
fn changeable(fake: &FakeGcp, team: &str, public_ip: bool, size_gib: u32) -> String {
    format!(
        r#"let c = import "chimera.ncl" in
let on = {{ provider = 'gcp, region = "us-east" }} in
let net = c.Network & on & {{ name = "main", cidr = "10.0.0.0/16", tags = {{ team = "{team}" }} }} in
let sn = c.Subnet & on & {{ name = "web", network = net, cidr = "10.0.1.0/24" }} in
let vm = c.Instance & on & {{ name = "web", size = 'small, subnet = sn, public_ip = {public_ip} }} in
{{ stack = "changes", providers = {},
  resources = [net, sn, vm, c.Volume & on & {{ name = "data", size_gib = {size_gib}, instance = vm }}] }}
"#,
        providers(fake)
    )
}

/// What GCP cannot change in place is planned as a replace (reason named), applied, and
/// converges; what it can (a disk that grows) stays an update.
#[test]
fn changes_gcp_cannot_make_in_place_are_planned_as_replacements() {
    let fake = fake(5);
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let write = |team, ip, size| {
        std::fs::write(d.join("main.ncl"), changeable(&fake, team, ip, size)).unwrap()
    };
    write("a", false, 20);
    let o = run(d, &["apply", "-y"]);
    assert!(o.status.success(), "{}", text(&o));

    // Network tags live in its description, fixed at creation: a replace, which replaces the
    // subnet and the instance on it too.
    write("b", false, 20);
    let o = run(d, &["plan", "--detailed-exitcode"]);
    let t = text(&o);
    assert_eq!(o.status.code(), Some(2), "{t}");
    assert!(t.contains("-/+ network.main"), "{t}");
    assert!(
        t.contains("forces replacement on gcp: GCP fixes a network's description"),
        "{t}"
    );
    let o = run(d, &["apply", "-y"]);
    assert!(o.status.success(), "{}", text(&o));
    let nets = fake.all("networks");
    assert_eq!(nets.len(), 1, "{:?}", nets.keys());
    let described = nets.values().next().unwrap()["description"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(described.contains("\"team\":\"b\""), "{described}");

    // The external address: a replace of the instance alone.
    write("b", true, 20);
    let o = run(d, &["plan", "--detailed-exitcode"]);
    let t = text(&o);
    assert!(t.contains("-/+ instance.web"), "{t}");
    assert!(t.contains("`public_ip` forces replacement on gcp"), "{t}");
    assert!(
        !t.contains("network.main"),
        "only the instance changes: {t}"
    );
    let o = run(d, &["apply", "-y"]);
    assert!(o.status.success(), "{}", text(&o));
    let vms = fake.all("instances");
    assert_eq!(vms.len(), 1, "{:?}", vms.keys());
    let vm = vms.values().next().unwrap();
    assert!(
        vm["networkInterfaces"][0]["accessConfigs"]
            .as_array()
            .is_some_and(|a| !a.is_empty()),
        "{vm}"
    );

    // A disk grows in place, and is replaced to shrink.
    write("b", true, 30);
    let o = run(d, &["plan"]);
    let t = text(&o);
    assert!(t.contains("~ volume.data"), "{t}");
    let o = run(d, &["apply", "-y"]);
    assert!(o.status.success(), "{}", text(&o));
    write("b", true, 10);
    let o = run(d, &["plan"]);
    let t = text(&o);
    assert!(t.contains("-/+ volume.data"), "{t}");
    assert!(t.contains("`size_gib` forces replacement on gcp"), "{t}");
    let o = run(d, &["apply", "-y"]);
    assert!(o.status.success(), "{}", text(&o));
    // The instance's boot disk is a disk too: only the volume's are counted.
    let disks: Vec<Value> = fake
        .all("disks")
        .into_iter()
        .filter(|(path, _)| path.contains("/disks/data-"))
        .map(|(_, d)| d)
        .collect();
    assert_eq!(disks.len(), 1, "{disks:?}");
    assert_eq!(disks[0]["sizeGb"], json!("10"));
    let o = run(d, &["plan", "--detailed-exitcode"]);
    assert_eq!(o.status.code(), Some(0), "converged: {}", text(&o));
}
