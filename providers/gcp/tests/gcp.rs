//! The GCP provider against the in-repo fake of the Compute REST API on 127.0.0.1 (started by
//! each test): lifecycle, long-running operations and their errors, idempotency, throttling,
//! eventual consistency, plan-time limits, and the fake's own contract.

use std::collections::BTreeMap;
use std::time::Duration;

use chimera_gcp::{GcpCloud, GcpSettings};
use chimera_model::kinds::{
    FirewallSpec, InstanceSpec, NetworkSpec, Rule, Spec, SubnetSpec, VolumeSpec, firewall,
};
use chimera_model::{Address, Kind};
use chimera_providers::{
    CloudRef, FailureClass, Observed, Proposal, Provider, ProviderError, Retrying,
};
use chimera_testkit::fake_gcp::{FakeGcp, Knobs};
use serde_json::{Map, Value, json};

const STACK: &str = "fake-test";
const PROJECT: &str = "chimera-test";
const REGION: &str = "us-east1";
const UBUNTU: &str = "projects/ubuntu-os-cloud/global/images/family/ubuntu-2404-lts-amd64";

fn fast() -> Knobs {
    Knobs {
        op_delay: Duration::from_millis(6),
        ..Knobs::default()
    }
}

fn cloud(fake: &FakeGcp) -> Retrying<GcpCloud> {
    Retrying(GcpCloud::new(GcpSettings {
        project: Some(PROJECT.into()),
        endpoint: Some(fake.url.clone()),
        poll_interval: Duration::from_millis(2),
        ..GcpSettings::default()
    }))
}

async fn create_tagged(
    p: &dyn Provider,
    name: &str,
    spec: Spec,
    tags: &[(&str, &str)],
    native: Map<String, Value>,
) -> Result<Observed, ProviderError> {
    let address = Address::new(spec.kind(), name);
    let token = format!("tok-{}-{name}", spec.kind());
    let proposal = Proposal {
        spec,
        tags: tags
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        native,
    };
    p.create(&proposal.request(STACK, &address, REGION, &token))
        .await
}

async fn create(p: &dyn Provider, name: &str, spec: Spec) -> Result<Observed, ProviderError> {
    create_tagged(p, name, spec, &[], Map::new()).await
}

async fn update(
    p: &dyn Provider,
    name: &str,
    spec: Spec,
    tags: &[(&str, &str)],
    cloud_id: &str,
) -> Result<Observed, ProviderError> {
    let address = Address::new(spec.kind(), name);
    let proposal = Proposal {
        spec,
        tags: tags
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        native: Map::new(),
    };
    p.update(
        &proposal.request(STACK, &address, REGION, "tok-update"),
        cloud_id,
    )
    .await
}

fn network() -> Spec {
    Spec::Network(NetworkSpec {
        cidr: "10.0.0.0/16".into(),
    })
}

fn subnet(network: &str) -> Spec {
    Spec::Subnet(SubnetSpec {
        network: network.into(),
        cidr: "10.0.1.0/24".into(),
        zone: "a".into(),
        public: false,
    })
}

fn rule(port: u16) -> Rule {
    Rule {
        protocol: "tcp".into(),
        from_port: Some(port),
        to_port: Some(port),
        cidrs: vec!["0.0.0.0/0".into()],
        description: Some(format!("port {port}")),
    }
}

fn firewall_spec(network: &str, ports: &[u16]) -> Spec {
    Spec::Firewall(FirewallSpec {
        network: network.into(),
        ingress: ports.iter().map(|p| rule(*p)).collect(),
        egress: Vec::new(),
    })
}

fn instance(subnet: &str, machine_type: &str, firewalls: &[&str]) -> Spec {
    Spec::Instance(InstanceSpec {
        size: None,
        cpu: None,
        memory_gib: None,
        instance_type: machine_type.into(),
        image: "ubuntu-24.04".into(),
        image_ref: json!(UBUNTU),
        subnet: subnet.into(),
        firewalls: firewalls.iter().map(|f| f.to_string()).collect(),
        public_ip: true,
        user_data: Some("#!/bin/sh\necho hello\n".into()),
    })
}

fn volume(size: u32, instance: Option<&str>) -> Spec {
    Spec::Volume(VolumeSpec {
        size_gib: size,
        volume_type: "ssd".into(),
        disk_type: "pd-ssd".into(),
        zone: "a".into(),
        encrypted: true,
        instance: instance.map(str::to_string),
    })
}

fn requests(fake: &FakeGcp, key: &str) -> u64 {
    fake.requests().get(key).copied().unwrap_or(0)
}

#[tokio::test]
async fn lifecycle_creates_changes_in_place_replaces_and_destroys() {
    let fake = FakeGcp::start(fast());
    let gcp = cloud(&fake);
    let net = create(&gcp, "main", network()).await.unwrap();
    let sn = create(&gcp, "app", subnet(&net.cloud_id)).await.unwrap();
    let fw = create(&gcp, "web", firewall_spec(&net.cloud_id, &[443]))
        .await
        .unwrap();
    let vm = create_tagged(
        &gcp,
        "web-0",
        instance(&sn.cloud_id, "e2-micro", &[&fw.cloud_id]),
        &[("team", "Platform Ops")],
        Map::new(),
    )
    .await
    .unwrap();
    let disk = create(&gcp, "data", volume(20, Some(&vm.cloud_id)))
        .await
        .unwrap();

    // What the fake holds is what was asked, in GCP's terms.
    let zone = "us-east1-b";
    assert!(
        vm.cloud_id.starts_with(&format!("{zone}/web-0-")),
        "{}",
        vm.cloud_id
    );
    let instances = fake.resources(PROJECT, &format!("zones/{zone}/instances"));
    let raw = instances.values().next().expect("one instance");
    assert!(
        raw["machineType"]
            .as_str()
            .unwrap()
            .ends_with("/machineTypes/e2-micro")
    );
    assert_eq!(raw["tags"]["items"], json!([fw.cloud_id]));
    assert_eq!(raw["metadata"]["items"][0]["key"], "startup-script");
    assert_eq!(raw["labels"]["chimera-stack"], STACK);
    assert_eq!(raw["labels"]["chimera-address"], "instance_2eweb-0");
    assert_eq!(
        vm.tags.get("team").map(String::as_str),
        Some("Platform Ops")
    );
    assert!(
        vm.outputs["private_ip"]
            .as_str()
            .unwrap()
            .starts_with("10.0.1.")
    );
    assert!(vm.outputs["public_ip"].is_string());
    let networks = fake.resources(PROJECT, "global/networks");
    assert_eq!(networks[&net.cloud_id]["autoCreateSubnetworks"], false);
    assert_eq!(disk.attrs["instance"], json!(vm.cloud_id));

    // In place: machine type (stop, set, start), labels, firewall rules by PATCH, disk resize.
    let vm2 = update(
        &gcp,
        "web-0",
        instance(&sn.cloud_id, "e2-small", &[&fw.cloud_id]),
        &[("owner", "platform")],
        &vm.cloud_id,
    )
    .await
    .unwrap();
    assert_eq!(vm2.cloud_id, vm.cloud_id);
    assert_eq!(vm2.attrs["instance_type"], "e2-small");
    assert_eq!(vm2.tags.get("owner").map(String::as_str), Some("platform"));
    assert!(!vm2.tags.contains_key("team"));
    assert_eq!(vm2.tags.get("chimera-token"), vm.tags.get("chimera-token"));
    for call in [
        "instances.stop",
        "instances.setMachineType",
        "instances.start",
        "instances.setLabels",
    ] {
        assert_eq!(
            requests(&fake, &format!("POST {call}")),
            1,
            "{call}: {:?}",
            fake.requests()
        );
    }
    let fw2 = update(
        &gcp,
        "web",
        firewall_spec(&net.cloud_id, &[8443, 22]),
        &[],
        &fw.cloud_id,
    )
    .await
    .unwrap();
    assert_eq!(
        requests(&fake, "PATCH firewalls"),
        1,
        "{:?}",
        fake.requests()
    );
    assert_eq!(
        firewall::canonical_rules(&fw2.attrs["ingress"]),
        firewall::canonical_rules(&serde_json::to_value(vec![rule(8443), rule(22)]).unwrap())
    );
    let disk2 = update(
        &gcp,
        "data",
        volume(30, Some(&vm.cloud_id)),
        &[],
        &disk.cloud_id,
    )
    .await
    .unwrap();
    assert_eq!(disk2.attrs["size_gib"], 30);
    assert_eq!(requests(&fake, "POST disks.resize"), 1);
    // A disk never shrinks: refused with what to do.
    let shrink = update(
        &gcp,
        "data",
        volume(10, Some(&vm.cloud_id)),
        &[],
        &disk.cloud_id,
    )
    .await
    .unwrap_err();
    assert!(shrink.to_string().contains("only grow"), "{shrink}");

    // Replace: the old one goes, a new one (new token, new name) comes.
    gcp.delete(&disk.at()).await.unwrap();
    let disk3 = create_tagged(&gcp, "data-b", volume(10, None), &[], Map::new())
        .await
        .unwrap();
    assert_ne!(disk3.cloud_id, disk.cloud_id);
    assert!(gcp.read(&disk.at()).await.unwrap().is_none());

    // Destroy, dependents first; deleting what is gone succeeds.
    for o in [&disk3, &vm, &fw, &sn, &net] {
        gcp.delete(&o.at()).await.unwrap();
        gcp.delete(&o.at()).await.unwrap();
    }
    for kind in ["instances", "disks", "firewalls", "networks", "subnetworks"] {
        assert!(
            fake.all(kind).is_empty(),
            "{kind} left: {:?}",
            fake.all(kind).keys()
        );
    }
}

#[tokio::test]
async fn operations_are_polled_until_done_and_a_failed_one_is_classified() {
    let fake = FakeGcp::start(Knobs {
        op_delay: Duration::from_millis(60),
        exhausted_zones: vec!["us-east1-b".into()],
        ..Knobs::default()
    });
    let gcp = cloud(&fake);
    let net = create(&gcp, "main", network()).await.unwrap();
    assert!(
        requests(&fake, "GET operations") >= 2,
        "PENDING, RUNNING, DONE are polled: {:?}",
        fake.requests()
    );
    let sn = create(&gcp, "app", subnet(&net.cloud_id)).await.unwrap();
    // The insert is accepted; its operation ends DONE with ZONE_RESOURCE_POOL_EXHAUSTED.
    let e = create(&gcp, "web", instance(&sn.cloud_id, "e2-micro", &[]))
        .await
        .unwrap_err();
    assert_eq!(e.class(), FailureClass::Quota, "{e}");
    assert!(
        e.to_string().contains("ZONE_RESOURCE_POOL_EXHAUSTED"),
        "{e}"
    );
    // An image family GCP does not have: the operation's 404 is "not found".
    let mut bad_image = instance(&sn.cloud_id, "e2-micro", &[]);
    if let Spec::Instance(i) = &mut bad_image {
        i.image_ref = json!("projects/ubuntu-os-cloud/global/images/family/ubuntu-1004");
    }
    let fake2 = FakeGcp::start(fast());
    let gcp2 = cloud(&fake2);
    let net2 = create(&gcp2, "main", network()).await.unwrap();
    let sn2 = create(&gcp2, "app", subnet(&net2.cloud_id)).await.unwrap();
    let mut spec = bad_image;
    if let Spec::Instance(i) = &mut spec {
        i.subnet = sn2.cloud_id.clone();
    }
    let e = create(&gcp2, "web", spec).await.unwrap_err();
    assert_eq!(e.class(), FailureClass::NotFound, "{e}");
    // A machine type the zone lacks is refused at once, naming it.
    let e = create(&gcp2, "arm", instance(&sn2.cloud_id, "t2a-standard-1", &[]))
        .await
        .unwrap_err();
    assert_eq!(e.class(), FailureClass::Permanent, "{e}");
    assert!(e.to_string().contains("t2a-standard-1"), "{e}");
}

#[tokio::test]
async fn a_lost_create_is_found_by_its_token_and_never_made_twice() {
    let fake = FakeGcp::start(fast());
    let gcp = cloud(&fake);
    let net = create(&gcp, "main", network()).await.unwrap();
    let sn = create(&gcp, "app", subnet(&net.cloud_id)).await.unwrap();
    let spec = instance(&sn.cloud_id, "e2-micro", &[]);
    let first = create(&gcp, "web", spec.clone()).await.unwrap();
    let inserts = fake.inserts();
    // The response was lost: the token finds it, and the retried create returns it.
    let found = gcp
        .find_by_token(Kind::Instance, REGION, "tok-instance-web")
        .await
        .unwrap()
        .expect("found by token");
    assert_eq!(found.cloud_id, first.cloud_id);
    let again = create(&gcp, "web", spec).await.unwrap();
    assert_eq!(again.cloud_id, first.cloud_id);
    assert_eq!(fake.inserts(), inserts, "no second insert");
    // Another token with the same hash suffix would still not be taken for it.
    assert!(
        gcp.find_by_token(Kind::Instance, REGION, "tok-never")
            .await
            .unwrap()
            .is_none()
    );
}

#[tokio::test]
async fn throttling_unavailability_and_eventual_consistency_are_ridden_out() {
    let fake = FakeGcp::start(Knobs {
        op_delay: Duration::from_millis(4),
        throttle_every: 4,
        unavailable_every: 7,
        invisible_for: Duration::from_millis(150),
        ..Knobs::default()
    });
    let gcp = cloud(&fake);
    let net = create(&gcp, "main", network()).await.unwrap();
    let sn = create(&gcp, "app", subnet(&net.cloud_id)).await.unwrap();
    let mut ids = Vec::new();
    for i in 0..4 {
        let vm = create(
            &gcp,
            &format!("w-{i}"),
            instance(&sn.cloud_id, "e2-micro", &[]),
        )
        .await
        .unwrap();
        ids.push(vm.at());
    }
    assert!(fake.injected() >= 5, "injected {}", fake.injected());
    let seen = gcp.observe(&ids).await.unwrap();
    assert!(seen.iter().all(Option::is_some));
    assert_eq!(fake.all("instances").len(), 4, "one instance each");
    let e = chimera_gcp::GcpCloud::new(GcpSettings {
        project: Some(PROJECT.into()),
        endpoint: Some(fake.url.clone()),
        poll_interval: Duration::from_millis(2),
        ..GcpSettings::default()
    });
    // Unwrapped, a 429 is a throttled error for the engine to retry.
    let mut throttled = None;
    for _ in 0..8 {
        if let Err(err) = e.read(&ids[0]).await {
            throttled = Some(err);
            break;
        }
    }
    let throttled = throttled.expect("one of eight reads is throttled or unavailable");
    assert!(
        matches!(
            throttled.class(),
            FailureClass::Throttled | FailureClass::Retryable
        ),
        "{throttled}"
    );
}

#[tokio::test]
async fn network_tags_cannot_change_in_place_and_say_so() {
    let fake = FakeGcp::start(fast());
    let gcp = cloud(&fake);
    let net = create(&gcp, "main", network()).await.unwrap();
    let same = update(&gcp, "main", network(), &[], &net.cloud_id)
        .await
        .unwrap();
    assert_eq!(same.cloud_id, net.cloud_id);
    let e = update(&gcp, "main", network(), &[("env", "prod")], &net.cloud_id)
        .await
        .unwrap_err();
    assert!(
        e.to_string().contains("UnsupportedUpdate") && e.to_string().contains("replace"),
        "{e}"
    );
}

#[tokio::test]
async fn orphans_and_imports_are_found_across_regions() {
    let fake = FakeGcp::start(fast());
    let gcp = cloud(&fake);
    let net = create(&gcp, "main", network()).await.unwrap();
    let sn = create(&gcp, "app", subnet(&net.cloud_id)).await.unwrap();
    let listed = gcp.list_managed(STACK).await.unwrap();
    let ids: Vec<&str> = listed.iter().map(|o| o.cloud_id.as_str()).collect();
    assert_eq!(ids.len(), 2, "{ids:?}");
    assert!(gcp.list_managed("another").await.unwrap().is_empty());
    // A subnet read with its region unknown (an import by bare name) is searched for.
    let found = gcp
        .read(&CloudRef::new(Kind::Subnet, sn.cloud_id.clone(), ""))
        .await
        .unwrap()
        .expect("found by search");
    assert_eq!(found.native_region, REGION);
}

#[test]
fn plan_time_limits_name_what_to_change() {
    let gcp = GcpCloud::new(GcpSettings::default());
    let check = |spec: Spec, region: &str, native: Map<String, Value>, tags: &[(&str, &str)]| {
        let address = Address::new(spec.kind(), "x");
        let proposal = Proposal {
            spec,
            tags: tags
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect::<BTreeMap<_, _>>(),
            native,
        };
        gcp.validate(&proposal.request(STACK, &address, region, "t"))
    };
    let mut arm = Map::new();
    arm.insert("machine_type".into(), json!("t2a-standard-1"));
    let v = check(instance("s", "e2-small", &[]), "us-east1", arm.clone(), &[]);
    assert!(
        v.iter().any(|v| v.field == "gcp"
            && v.message.contains("t2a-standard-1")
            && v.message.contains("us-central1")),
        "{v:?}"
    );
    assert!(check(instance("s", "e2-small", &[]), "us-central1", arm, &[]).is_empty());
    let mut far = volume(10, None);
    if let Spec::Volume(v) = &mut far {
        v.zone = "d".into();
        v.encrypted = false;
    }
    let v = check(far, "us-east1", Map::new(), &[]);
    assert!(
        v.iter()
            .any(|v| v.field == "zone" && v.message.contains("us-east1-b")),
        "{v:?}"
    );
    assert!(v.iter().any(|v| v.field == "encrypted"), "{v:?}");
    let v = check(volume(10, None), "us-east1", Map::new(), &[("9lives", "x")]);
    assert!(v.iter().any(|v| v.field == "tags"), "{v:?}");
    let tiny = Spec::Subnet(SubnetSpec {
        network: "n".into(),
        cidr: "10.0.0.0/30".into(),
        zone: "a".into(),
        public: false,
    });
    assert!(
        check(tiny, "us-east1", Map::new(), &[])
            .iter()
            .any(|v| v.field == "cidr")
    );
}

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into()
}

/// A plain HTTP client of the fake's project `p`: `call(method, path, body)` → status and JSON.
fn rest(fake: &FakeGcp) -> impl Fn(&str, &str, Option<Value>) -> (u16, Value) {
    let a = agent();
    let base = format!("{}/compute/v1/projects/p", fake.url);
    move |method: &str, path: &str, body: Option<Value>| -> (u16, Value) {
        let url = format!("{base}/{path}");
        let mut r = match (method, body) {
            ("GET", _) => a.get(&url).call(),
            ("POST", Some(b)) => a
                .post(&url)
                .header("content-type", "application/json")
                .send(b.to_string()),
            ("POST", None) => a.post(&url).send_empty(),
            _ => unreachable!(),
        }
        .expect("the fake answers");
        let status = r.status().as_u16();
        let text = r.body_mut().read_to_string().unwrap_or_default();
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }
}

/// The fake holds to what the API reference says, checked over plain HTTP.
#[test]
fn the_fake_holds_to_the_rest_contract() {
    let fake = FakeGcp::start(Knobs {
        op_delay: Duration::ZERO,
        ..Knobs::default()
    });
    let (agent, call) = (agent(), rest(&fake));
    let base = format!("{}/compute/v1/projects/p", fake.url);
    let (s, op) = call(
        "POST",
        "global/networks?requestId=9f0c3c5e-1111-4222-8333-444455556666",
        Some(json!({ "name": "n1", "autoCreateSubnetworks": false })),
    );
    assert_eq!(s, 200, "{op}");
    assert_eq!(op["status"], "DONE");
    assert!(op["id"].is_string() && op["targetId"].is_string(), "{op}");
    // The same requestId returns the same operation and does nothing again.
    let (_, again) = call(
        "POST",
        "global/networks?requestId=9f0c3c5e-1111-4222-8333-444455556666",
        Some(json!({ "name": "n1", "autoCreateSubnetworks": false })),
    );
    assert_eq!(again["name"], op["name"]);
    assert_eq!(fake.inserts(), 1);
    let (s, dup) = call("POST", "global/networks", Some(json!({ "name": "n1" })));
    assert_eq!(s, 409);
    assert_eq!(dup["error"]["status"], "ALREADY_EXISTS");
    assert_eq!(dup["error"]["errors"][0]["reason"], "alreadyExists");
    let (s, bad) = call(
        "POST",
        "global/networks",
        Some(json!({ "name": "Bad_Name" })),
    );
    assert_eq!(
        (s, bad["error"]["status"].as_str()),
        (400, Some("INVALID_ARGUMENT"))
    );
    call(
        "POST",
        "regions/us-east1/subnetworks",
        Some(
            json!({ "name": "s1", "network": "global/networks/n1", "ipCidrRange": "10.0.0.0/24" }),
        ),
    );
    call(
        "POST",
        "zones/us-east1-b/instances",
        Some(json!({
            "name": "i1",
            "machineType": "zones/us-east1-b/machineTypes/e2-micro",
            "disks": [{ "boot": true, "initializeParams": { "sourceImage": UBUNTU } }],
            "networkInterfaces": [{ "subnetwork": "regions/us-east1/subnetworks/s1" }],
            "labels": { "a": "b" },
        })),
    );
    let (_, i) = call("GET", "zones/us-east1-b/instances/i1", None);
    assert!(i["id"].is_string(), "uint64 as a decimal string: {i}");
    let fp = i["labelFingerprint"].as_str().unwrap();
    assert!(
        !fp.contains('+') && !fp.contains('/'),
        "URL-safe base64: {fp}"
    );
    // A stale fingerprint is refused with 412; the current one is taken.
    let (s, e) = call(
        "POST",
        "zones/us-east1-b/instances/i1/setLabels",
        Some(json!({ "labels": { "a": "c" }, "labelFingerprint": "AAAAAAAAAAA=" })),
    );
    assert_eq!(
        (s, e["error"]["errors"][0]["reason"].as_str()),
        (412, Some("conditionNotMet"))
    );
    let (s, _) = call(
        "POST",
        "zones/us-east1-b/instances/i1/setLabels",
        Some(json!({ "labels": { "a": "c" }, "labelFingerprint": fp })),
    );
    assert_eq!(s, 200);
    // setMachineType only on a TERMINATED instance.
    let (s, e) = call(
        "POST",
        "zones/us-east1-b/instances/i1/setMachineType",
        Some(json!({ "machineType": "zones/us-east1-b/machineTypes/e2-small" })),
    );
    assert_eq!(s, 400, "{e}");
    call("POST", "zones/us-east1-b/instances/i1/stop", None);
    let (s, _) = call(
        "POST",
        "zones/us-east1-b/instances/i1/setMachineType",
        Some(json!({ "machineType": "zones/us-east1-b/machineTypes/e2-small" })),
    );
    assert_eq!(s, 200);
    // Deleting a network in use is an operation that fails, DONE with its error.
    let (s, op) = call("POST", "global/networks/n1", None);
    assert_eq!(s, 404, "POST on a network is not a method: {op}");
    let del = agent
        .delete(&format!("{base}/global/networks/n1"))
        .call()
        .unwrap()
        .body_mut()
        .read_to_string()
        .unwrap();
    let op: Value = serde_json::from_str(&del).unwrap();
    assert_eq!(op["status"], "DONE");
    assert_eq!(
        op["error"]["errors"][0]["code"],
        "RESOURCE_IN_USE_BY_ANOTHER_RESOURCE"
    );
    assert_eq!(op["httpErrorStatusCode"], 400);
    // Lists page and filter.
    let (_, l) = call(
        "GET",
        "global/networks?filter=name%20eq%20%22n.*%22&maxResults=1",
        None,
    );
    assert_eq!(l["items"].as_array().map(Vec::len), Some(1));
    let (_, agg) = call("GET", "aggregated/instances", None);
    assert!(
        agg["items"]["zones/us-east1-b"]["instances"].is_array(),
        "{agg}"
    );
}

/// As on GCP, an inserted instance is there at once, PROVISIONING, and takes its name: a second
/// insert of it is 409 `alreadyExists` unless it repeats the first's `requestId`; it takes no
/// other method until its operation is DONE, which makes it RUNNING with its address.
#[test]
fn the_fake_shows_an_insert_at_once_and_holds_its_name() {
    let fake = FakeGcp::start(Knobs {
        op_delay: Duration::from_millis(400),
        ..Knobs::default()
    });
    let call = rest(&fake);
    let wait = |op: &Value| {
        let path = op["selfLink"]
            .as_str()
            .and_then(|l| l.split_once("/projects/p/"))
            .map(|(_, p)| p.to_string())
            .unwrap();
        for _ in 0..200 {
            if call("GET", &path, None).1["status"] == "DONE" {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        panic!("{path} is not DONE after 2 s");
    };
    let (_, op) = call(
        "POST",
        "global/networks",
        Some(json!({ "name": "n1", "autoCreateSubnetworks": false })),
    );
    wait(&op);
    let (_, op) = call(
        "POST",
        "regions/us-east1/subnetworks",
        Some(
            json!({ "name": "s1", "network": "global/networks/n1", "ipCidrRange": "10.0.0.0/24" }),
        ),
    );
    wait(&op);
    let rid = "0b1c2d3e-aaaa-4bbb-8ccc-ddddeeeeffff";
    let body = json!({
        "name": "i1",
        "machineType": "zones/us-east1-b/machineTypes/e2-micro",
        "disks": [{ "boot": true, "initializeParams": { "sourceImage": UBUNTU } }],
        "networkInterfaces": [{ "subnetwork": "regions/us-east1/subnetworks/s1" }],
        "labels": { "a": "b" },
    });
    let path = format!("zones/us-east1-b/instances?requestId={rid}");
    let (s, op) = call("POST", &path, Some(body.clone()));
    assert_eq!(s, 200, "{op}");
    assert_ne!(op["status"], "DONE", "{op}");
    let (s, i) = call("GET", "zones/us-east1-b/instances/i1", None);
    assert_eq!(s, 200, "visible while its insert runs: {i}");
    assert!(
        matches!(i["status"].as_str(), Some("PROVISIONING" | "STAGING")),
        "{i}"
    );
    assert_eq!(i["id"], op["targetId"], "the operation names it");
    let (s, e) = call("POST", "zones/us-east1-b/instances", Some(body.clone()));
    assert_eq!(s, 409, "{e}");
    assert_eq!(e["error"]["status"], "ALREADY_EXISTS");
    assert_eq!(e["error"]["errors"][0]["reason"], "alreadyExists");
    let (s, again) = call("POST", &path, Some(body));
    assert_eq!((s, &again["name"]), (200, &op["name"]), "{again}");
    assert_eq!(fake.inserts(), 3);
    let fp = i["labelFingerprint"].as_str().unwrap();
    let (s, e) = call(
        "POST",
        "zones/us-east1-b/instances/i1/setLabels",
        Some(json!({ "labels": {}, "labelFingerprint": fp })),
    );
    assert_eq!(
        (s, e["error"]["errors"][0]["reason"].as_str()),
        (400, Some("resourceNotReady"))
    );
    wait(&op);
    let (_, i) = call("GET", "zones/us-east1-b/instances/i1", None);
    assert_eq!(i["status"], "RUNNING", "{i}");
    assert!(
        i["networkInterfaces"][0]["networkIP"]
            .as_str()
            .is_some_and(|ip| ip.starts_with("10.0.0.")),
        "{i}"
    );
}

/// A fake with 300 ms operations (and `knobs`), a network and a subnet on it, and the create
/// of instance `web` cut off once its insert is accepted, as a killed process leaves it: the
/// instance is there, PROVISIONING. Returns the fake, the provider and the instance's spec.
async fn create_cut_off(knobs: Knobs) -> (FakeGcp, Retrying<GcpCloud>, Spec) {
    let fake = FakeGcp::start(Knobs {
        op_delay: Duration::from_millis(300),
        ..knobs
    });
    let gcp = cloud(&fake);
    let net = create(&gcp, "main", network()).await.unwrap();
    let sn = create(&gcp, "app", subnet(&net.cloud_id)).await.unwrap();
    let spec = instance(&sn.cloud_id, "e2-micro", &[]);
    let cut = tokio::time::timeout(Duration::from_millis(80), create(&gcp, "web", spec.clone()));
    assert!(cut.await.is_err(), "the create was cut off in flight");
    let live = fake.all("instances");
    assert_eq!(live.len(), 1, "{:?}", live.keys());
    assert!(
        matches!(
            live.values().next().unwrap()["status"].as_str(),
            Some("PROVISIONING" | "STAGING")
        ),
        "{live:?}"
    );
    (fake, gcp, spec)
}

/// After a create cut off in flight, `find_by_token` waits for the PROVISIONING instance and
/// returns it made, and the retried create converges on it.
#[tokio::test]
async fn an_insert_in_flight_is_waited_for_never_taken_as_absent() {
    let (fake, gcp, spec) = create_cut_off(Knobs::default()).await;
    let found = gcp
        .find_by_token(Kind::Instance, REGION, "tok-instance-web")
        .await
        .unwrap()
        .expect("an insert in flight is found");
    assert!(
        found.outputs["private_ip"]
            .as_str()
            .is_some_and(|ip| ip.starts_with("10.0.1.")),
        "waited for until made: {:?}",
        found.outputs
    );
    let again = create(&gcp, "web", spec).await.unwrap();
    assert_eq!(again.cloud_id, found.cloud_id);
    assert_eq!(fake.inserts(), 3, "network, subnet, one instance");
}

/// An insert whose operation fails in flight (its zone has no capacity) leaves nothing to
/// adopt, and the retried create reports the failure (its requestId finds the operation).
#[tokio::test]
async fn an_insert_that_fails_in_flight_is_absent_not_half_there() {
    let (fake, gcp, spec) = create_cut_off(Knobs {
        exhausted_zones: vec!["us-east1-b".into()],
        ..Knobs::default()
    })
    .await;
    let found = gcp
        .find_by_token(Kind::Instance, REGION, "tok-instance-web")
        .await
        .unwrap();
    assert!(found.is_none(), "{found:?}");
    assert!(fake.all("instances").is_empty());
    let e = create(&gcp, "web", spec).await.unwrap_err();
    assert!(
        e.to_string().contains("ZONE_RESOURCE_POOL_EXHAUSTED"),
        "{e}"
    );
    assert_eq!(fake.inserts(), 3, "the retry inserted nothing");
}

/// Two creates with one token at once, when GCP no longer remembers the `requestId` (or a read
/// lags): the second insert is 409 `alreadyExists` on the token-hashed name, and it adopts
/// what the first made instead of failing or making another.
#[tokio::test]
async fn a_create_refused_as_existing_adopts_what_its_token_made() {
    let fake = FakeGcp::start(Knobs {
        op_delay: Duration::from_millis(20),
        invisible_for: Duration::from_millis(300),
        request_ids_kept: Duration::ZERO,
        ..Knobs::default()
    });
    let gcp = cloud(&fake);
    let (a, b) = tokio::join!(
        create(&gcp, "main", network()),
        create(&gcp, "main", network())
    );
    let (a, b) = (a.unwrap(), b.unwrap());
    assert_eq!(a.cloud_id, b.cloud_id);
    assert_eq!(fake.all("networks").len(), 1);
    assert_eq!(fake.inserts(), 1);
}
