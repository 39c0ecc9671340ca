//! The Azure provider through the `chimera` binary against the in-repo fake of Azure Resource
//! Manager on 127.0.0.1: a stack end to end (in-place resize, drift then refresh, destroy with
//! nothing left), kill -9 during VM creates, a VM size the region lacks, throttling, orphans and
//! import.

mod common;

use std::time::Duration;

use chimera_testkit::fake_azure::{FakeAzure, Knobs};
use common::cloud::{crash_iterations, fleet, killed_applies, run, text};

const VM: &str = "Microsoft.Compute/virtualMachines";

/// `providers.azure` pointing at the fake.
fn settings(fake: &FakeAzure) -> String {
    format!(
        r#"{{ azure = {{ endpoint = "{}", subscription = "00000000-0000-0000-0000-000000000000", credential = "none", max_poll_interval_ms = 20 }} }}"#,
        fake.endpoint
    )
}

fn shop(fake: &FakeAzure, size: &str) -> String {
    format!(
        r#"let c = import "chimera.ncl" in
let on = {{ provider = 'azure, region = "us-east" }} in
let net = c.Network & on & {{ name = "main", cidr = "10.0.0.0/16" }} in
let sn = c.Subnet & on & {{ name = "app", network = net, cidr = "10.0.1.0/24" }} in
let fw = c.Firewall & on & {{ name = "web", network = net, ingress = [{{ protocol = 'tcp, ports = 443 }}] }} in
let web = std.array.generate (fun i => c.Instance & on & {{ name = "web-%{{std.to_string i}}", size = '{size}, subnet = sn, firewalls = [fw] }}) 2 in
{{ stack = "shop", providers = {},
  resources = [net, sn, fw] @ web @ [c.Volume & on & {{ name = "data", size_gib = 20, instance = std.array.first web }}] }}
"#,
        settings(fake)
    )
}

#[test]
fn a_stack_on_azure_end_to_end() {
    let fake = FakeAzure::start(Knobs::default());
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(d.join("main.ncl"), shop(&fake, "micro")).unwrap();

    let o = run(d, &["apply", "-y"]);
    assert!(o.status.success(), "{}", text(&o));
    let o = run(d, &["plan", "--detailed-exitcode"]);
    assert_eq!(o.status.code(), Some(0), "idempotent: {}", text(&o));
    assert_eq!(fake.count_tagged(VM, "chimera-stack", "shop"), 2);

    // A bigger size class is an in-place resize (deallocate, resize, start).
    std::fs::write(d.join("main.ncl"), shop(&fake, "medium")).unwrap();
    let o = run(d, &["plan", "--detailed-exitcode"]);
    let t = text(&o);
    assert_eq!(o.status.code(), Some(2), "{t}");
    assert!(
        t.contains("~ instance.web-0") && t.contains("Standard_B2s"),
        "{t}"
    );
    assert!(
        t.contains("0 to create, 2 to update, 0 to replace, 0 to delete"),
        "{t}"
    );
    let o = run(d, &["apply", "-y"]);
    assert!(o.status.success(), "{}", text(&o));
    let o = run(d, &["plan", "--detailed-exitcode"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));

    // Drift made in the "portal" is reported by refresh, and the next plan heals it.
    let net = fake
        .resource_ids()
        .into_iter()
        .find(|id| id.contains("/virtualNetworks/main-") && !id.contains("/subnets/"))
        .expect("the network");
    fake.set_tag(&net, "env", "prod").unwrap();
    let o = run(d, &["refresh"]);
    let t = text(&o);
    assert!(o.status.success(), "{t}");
    assert!(t.contains("network.main") && t.contains("prod"), "{t}");
    let o = run(d, &["plan", "--detailed-exitcode"]);
    let t = text(&o);
    assert_eq!(o.status.code(), Some(2), "{t}");
    assert!(t.contains("~ network.main"), "{t}");

    let o = run(d, &["destroy", "-y"]);
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(fake.resource_ids(), Vec::<String>::new());
    assert_eq!(fake.resource_groups(), Vec::<String>::new());
}

#[test]
fn kill_9_during_vm_creates_never_duplicates() {
    // Slow enough that kills land while VM PUTs and their operations are in flight.
    let fake = FakeAzure::start(Knobs {
        latency: Duration::from_millis(30),
        op_duration: Duration::from_millis(400),
        ..Knobs::default()
    });
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let count = 20;
    std::fs::write(d.join("main.ncl"), fleet("azure", &settings(&fake), count)).unwrap();
    let iterations = crash_iterations("CHIMERA_AZURE_CRASH_ITERATIONS");
    let interrupted = killed_applies(d, iterations, 0xa3_5eed, 200..1700);
    assert!(
        interrupted >= 2,
        "only {interrupted} kills hit an apply in flight"
    );
    let o = run(d, &["apply", "-y", "--parallelism", "16"]);
    assert!(o.status.success(), "{}", text(&o));
    let o = run(d, &["plan", "--detailed-exitcode"]);
    assert_eq!(o.status.code(), Some(0), "converged: {}", text(&o));
    assert_eq!(fake.count_tagged(VM, "chimera-stack", "burst"), count);
    for i in 0..count {
        let address = format!("instance.w-{i}");
        assert_eq!(
            fake.count_tagged(VM, "chimera-address", &address),
            1,
            "one VM at {address}"
        );
    }
    // Every interface belongs to a VM: none was left behind by a killed create.
    assert_eq!(
        fake.count_tagged(
            "Microsoft.Network/networkInterfaces",
            "chimera-stack",
            "burst"
        ),
        count
    );
}

#[test]
fn a_vm_size_the_region_lacks_names_the_address_and_the_azure_code() {
    let fake = FakeAzure::start(Knobs {
        unavailable_sizes: vec![("eastus".into(), "Standard_B1ms".into())],
        ..Knobs::default()
    });
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(
        d.join("main.ncl"),
        format!(
            r#"let c = import "chimera.ncl" in
let on = {{ provider = 'azure, region = "us-east" }} in
let net = c.Network & on & {{ name = "main", cidr = "10.0.0.0/16" }} in
let sn = c.Subnet & on & {{ name = "s", network = net, cidr = "10.0.1.0/24" }} in
{{ stack = "bad", providers = {},
  resources = [net, sn, c.Instance & on & {{ name = "huge", size = 'small, subnet = sn }}] }}
"#,
            settings(&fake)
        ),
    )
    .unwrap();
    let o = run(d, &["apply", "-y"]);
    let t = text(&o);
    assert_eq!(o.status.code(), Some(1), "{t}");
    assert!(
        t.contains("instance.huge") && t.contains("SkuNotAvailable") && t.contains("Standard_B1ms"),
        "{t}"
    );
    // What could be created was, and is in state; the refused VM left no interface.
    let o = run(d, &["state", "list", "--stack", "bad"]);
    assert!(text(&o).contains("subnet.s"), "{}", text(&o));
    assert!(
        fake.resource_ids()
            .iter()
            .all(|id| !id.contains("networkInterfaces")),
        "{:?}",
        fake.resource_ids()
    );
}

#[test]
fn throttled_requests_wait_out_retry_after_and_the_apply_succeeds() {
    let fake = FakeAzure::start(Knobs {
        throttle_every: 4,
        throttle_retry_after_secs: 3,
        ..Knobs::default()
    });
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(d.join("main.ncl"), fleet("azure", &settings(&fake), 6)).unwrap();
    let o = run(d, &["apply", "-y"]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(fake.throttled() > 5, "throttled {}", fake.throttled());
    assert_eq!(fake.count_tagged(VM, "chimera-stack", "burst"), 6);
    let o = run(d, &["plan", "--detailed-exitcode"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
}

#[test]
fn orphans_and_import_on_azure() {
    let fake = FakeAzure::start(Knobs::default());
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(
        d.join("main.ncl"),
        format!(
            r#"let c = import "chimera.ncl" in
{{ stack = "adopt", providers = {}, resources = [
  c.Network & {{ provider = 'azure, region = "us-east", name = "main", cidr = "10.0.0.0/16" }},
  c.Network & {{ provider = 'azure, region = "us-east", name = "legacy", cidr = "10.9.0.0/16" }} ] }}
"#,
            settings(&fake)
        ),
    )
    .unwrap();
    let o = run(d, &["apply", "-y"]);
    assert!(o.status.success(), "{}", text(&o));
    // Made outside Chimera: one tagged for the stack (an orphan), one untagged (to import).
    let orphan = fake.create_network("hand-made", "stray", "eastus", "10.7.0.0/16");
    fake.set_tag(&orphan, "chimera-stack", "adopt").unwrap();
    fake.set_tag(&orphan, "chimera-address", "network.stray")
        .unwrap();
    let legacy = fake.create_network("hand-made", "legacy", "eastus", "10.9.0.0/16");
    let o = run(d, &["orphans"]);
    let t = text(&o);
    assert!(o.status.success(), "{t}");
    assert!(t.contains("stray") && t.contains("network.stray"), "{t}");
    assert!(
        !t.contains("/virtualNetworks/legacy"),
        "untagged resources are not the stack's: {t}"
    );

    // Import the untagged network at an address the stack declares, after forgetting ours.
    let o = run(d, &["destroy", "-y"]);
    assert!(o.status.success(), "{}", text(&o));
    let o = run(
        d,
        &["import", "network.legacy", &legacy, "--provider", "azure"],
    );
    assert!(o.status.success(), "{}", text(&o));
    let o = run(d, &["state", "list", "--stack", "adopt"]);
    assert!(
        text(&o).contains("network.legacy") && text(&o).contains(&legacy),
        "{}",
        text(&o)
    );
    // The plan keeps the imported network (same block) and creates only the missing one.
    let o = run(d, &["plan"]);
    let t = text(&o);
    assert!(
        t.contains("+ network.main") && !t.contains("network.legacy will be"),
        "{t}"
    );
}
