//! The Azure provider against the in-repo fake of Azure Resource Manager on 127.0.0.1, started
//! by each test: a whole lifecycle, a create whose response was lost, throttling with
//! Retry-After, long-running operations, a VM size the region lacks, and plan-time limits.

use std::collections::BTreeMap;
use std::time::Duration;

use async_trait::async_trait;
use chimera_azure::{AzureCloud, AzureSettings, CredentialKind, subnet_tag_key};
use chimera_model::kinds::{
    FirewallSpec, InstanceSpec, NetworkSpec, Rule, Spec, SubnetSpec, VolumeSpec,
};
use chimera_model::{Address, Kind};
use chimera_providers::conformance::{self, Harness};
use chimera_providers::{CloudRef, Observed, Proposal, Provider, ProviderError, Retrying};
use chimera_testkit::fake_azure::{FakeAzure, Knobs};
use serde_json::{Map, Value, json};

const STACK: &str = "azure-test";
const REGION: &str = "eastus";
const SUBSCRIPTION: &str = "00000000-0000-0000-0000-000000000000";
const VM: &str = "Microsoft.Compute/virtualMachines";
const NIC: &str = "Microsoft.Network/networkInterfaces";

fn settings(fake: &FakeAzure) -> AzureSettings {
    AzureSettings {
        subscription: Some(SUBSCRIPTION.into()),
        endpoint: fake.endpoint.clone(),
        credential: CredentialKind::None,
        max_poll_interval: Duration::from_millis(20),
        images: [(
            "ubuntu-24.04".to_string(),
            "Canonical:ubuntu-24_04-lts:server:latest".to_string(),
        )]
        .into(),
        ..AzureSettings::default()
    }
}

fn cloud(fake: &FakeAzure) -> Retrying<AzureCloud> {
    Retrying(AzureCloud::new(settings(fake)))
}

/// The suite's view of the fake: the provider, and the fake to change resources behind its back.
struct OnFake {
    provider: Retrying<AzureCloud>,
    fake: FakeAzure,
}

#[async_trait]
impl Harness for OnFake {
    fn provider(&self) -> &dyn Provider {
        &self.provider
    }
    fn region(&self) -> &str {
        REGION
    }
    async fn tag_out_of_band(&self, at: &CloudRef, key: &str, value: &str) -> Result<(), String> {
        match at.id.rsplit_once("/subnets/") {
            Some((network, name)) => self
                .fake
                .set_tag(network, &subnet_tag_key(name, key), value),
            None => self.fake.set_tag(&at.id, key, value),
        }
    }
}

/// Creates `spec` as `name` with the user's `tags` under `token`.
async fn create_with(
    p: &dyn Provider,
    name: &str,
    spec: Spec,
    token: &str,
) -> Result<Observed, ProviderError> {
    let address = Address::new(spec.kind(), name);
    let proposal = Proposal {
        spec,
        tags: [("team".to_string(), "infra".to_string())].into(),
        native: Map::new(),
    };
    p.create(&proposal.request(STACK, &address, REGION, token))
        .await
}

async fn create(p: &dyn Provider, name: &str, spec: Spec) -> Result<Observed, ProviderError> {
    let token = format!("tok-{}-{name}", spec.kind());
    create_with(p, name, spec, &token).await
}

async fn update(p: &dyn Provider, name: &str, spec: Spec, cloud_id: &str) -> Observed {
    let address = Address::new(spec.kind(), name);
    let proposal = Proposal {
        spec,
        tags: BTreeMap::new(),
        native: Map::new(),
    };
    p.update(
        &proposal.request(STACK, &address, REGION, "tok-update"),
        cloud_id,
    )
    .await
    .unwrap()
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

fn firewall(network: &str, ports: &[u16]) -> Spec {
    Spec::Firewall(FirewallSpec {
        network: network.into(),
        ingress: ports
            .iter()
            .map(|p| Rule {
                protocol: "tcp".into(),
                from_port: Some(*p),
                to_port: Some(*p),
                cidrs: vec!["0.0.0.0/0".into()],
                description: None,
            })
            .collect(),
        egress: vec![],
    })
}

fn instance(size: &str, subnet: &str, firewalls: &[&str]) -> InstanceSpec {
    InstanceSpec {
        size: Some("micro".into()),
        cpu: None,
        memory_gib: None,
        instance_type: size.into(),
        image: "ubuntu-24.04".into(),
        image_ref: Value::String("Canonical:ubuntu-24_04-lts:server:latest".into()),
        subnet: subnet.into(),
        firewalls: firewalls.iter().map(|f| f.to_string()).collect(),
        public_ip: false,
        user_data: Some("#!/bin/sh\necho hi\n".into()),
    }
}

fn volume(size_gib: u32, instance: Option<&str>) -> Spec {
    Spec::Volume(VolumeSpec {
        size_gib,
        volume_type: "ssd".into(),
        disk_type: "Premium_LRS".into(),
        zone: "a".into(),
        encrypted: true,
        instance: instance.map(str::to_string),
    })
}

/// A network and a subnet in it: the subnet's id.
async fn subnet_id(p: &dyn Provider) -> String {
    let net = create(p, "net", network()).await.unwrap();
    create(p, "sub", subnet(&net.cloud_id))
        .await
        .unwrap()
        .cloud_id
}

#[tokio::test]
async fn a_stack_lives_and_leaves_nothing_behind() {
    let fake = FakeAzure::start(Knobs::default());
    let az = cloud(&fake);
    let net = create(&az, "net", network()).await.unwrap();
    let sub = create(&az, "sub", subnet(&net.cloud_id)).await.unwrap();
    let fw = create(&az, "web", firewall(&net.cloud_id, &[443]))
        .await
        .unwrap();
    let vm = create(
        &az,
        "vm",
        Spec::Instance(instance("Standard_B1s", &sub.cloud_id, &[&fw.cloud_id])),
    )
    .await
    .unwrap();
    assert_eq!(vm.attrs["instance_type"], "Standard_B1s");
    assert_eq!(vm.attrs["subnet"], json!(sub.cloud_id));
    assert_eq!(vm.attrs["firewalls"], json!([fw.cloud_id]));
    assert!(
        vm.outputs["private_ip"]
            .as_str()
            .is_some_and(|ip| ip.starts_with("10.0.1.")),
        "{:?}",
        vm.outputs
    );
    assert_eq!(
        fake.count_tagged(NIC, "chimera-token", "tok-instance-vm"),
        1
    );
    let disk = create(&az, "data", volume(10, Some(&vm.cloud_id)))
        .await
        .unwrap();
    assert_eq!(disk.attrs["instance"], json!(vm.cloud_id));
    assert_eq!(disk.attrs["zone"], "a");

    // In place: the VM's size (deallocate, resize, start), the disk's size, the rules.
    let resized = update(
        &az,
        "vm",
        Spec::Instance(instance("Standard_B2s", &sub.cloud_id, &[&fw.cloud_id])),
        &vm.cloud_id,
    )
    .await;
    assert_eq!(resized.cloud_id, vm.cloud_id);
    assert_eq!(resized.attrs["instance_type"], "Standard_B2s");
    assert_eq!(resized.tags["chimera-token"], "tok-instance-vm");
    let grown = update(&az, "data", volume(20, Some(&vm.cloud_id)), &disk.cloud_id).await;
    assert_eq!(grown.attrs["size_gib"], 20);
    let opened = update(
        &az,
        "web",
        firewall(&net.cloud_id, &[443, 22]),
        &fw.cloud_id,
    )
    .await;
    assert_eq!(opened.attrs["ingress"].as_array().map(Vec::len), Some(2));
    // Shrinking a disk is refused by Azure, with its code.
    let address = Address::new(Kind::Volume, "data");
    let small = Proposal {
        spec: volume(5, Some(&vm.cloud_id)),
        tags: BTreeMap::new(),
        native: Map::new(),
    };
    let e = az
        .update(&small.request(STACK, &address, REGION, "t"), &disk.cloud_id)
        .await
        .unwrap_err();
    assert!(e.to_string().contains("only be increased"), "{e}");

    let listed = az.list_managed(STACK).await.unwrap();
    assert_eq!(listed.len(), 5, "{listed:#?}");
    assert!(
        listed
            .iter()
            .any(|o| o.kind == Kind::Subnet && o.tags["team"] == "infra")
    );

    // Deleted in dependency order, nothing stays: not the interface, not the resource group.
    for o in [&disk, &vm, &fw, &sub, &net] {
        az.delete(&o.at()).await.unwrap();
        assert_eq!(az.read(&o.at()).await.unwrap(), None, "{}", o.cloud_id);
    }
    assert_eq!(fake.resource_ids(), Vec::<String>::new());
    assert_eq!(fake.resource_groups(), Vec::<String>::new());
}

#[tokio::test]
async fn a_create_sent_again_after_a_lost_response_converges() {
    let fake = FakeAzure::start(Knobs::default());
    let az = cloud(&fake);
    let sub = subnet_id(&az).await;
    let spec = Spec::Instance(instance("Standard_B1s", &sub, &[]));
    let first = create_with(&az, "vm", spec.clone(), "tok-lost")
        .await
        .unwrap();
    // The response was lost: the engine asks by token, and creates again with the same token.
    let found = az
        .find_by_token(Kind::Instance, REGION, "tok-lost")
        .await
        .unwrap()
        .expect("found by token");
    assert_eq!(found.cloud_id, first.cloud_id);
    let again = create_with(&az, "vm", spec, "tok-lost").await.unwrap();
    assert_eq!(again.cloud_id, first.cloud_id);
    assert_eq!(fake.count_tagged(VM, "chimera-token", "tok-lost"), 1);
    assert_eq!(fake.count_tagged(NIC, "chimera-token", "tok-lost"), 1);
}

#[tokio::test]
async fn throttling_is_waited_out_with_retry_after() {
    let fake = FakeAzure::start(Knobs {
        throttle_every: 3,
        throttle_retry_after_secs: 5,
        ..Knobs::default()
    });
    // Every third request is a 429 asking for 5 s; the provider honours Retry-After, capped at
    // 20 ms by the settings, and the whole suite passes.
    let h = OnFake {
        provider: cloud(&fake),
        fake,
    };
    let failed = conformance::check_all(&h).await;
    assert!(
        failed.is_empty(),
        "{}",
        failed
            .iter()
            .map(|(kind, verb, why)| format!("{kind}::{verb}: {}", why.join("; ")))
            .collect::<Vec<_>>()
            .join("\n")
    );
    assert!(h.fake.throttled() > 20, "throttled {}", h.fake.throttled());
}

#[tokio::test]
async fn long_running_operations_are_polled_to_the_end() {
    // Operations take 300 ms; ARM says to poll every second, the settings cap it at 20 ms.
    let fake = FakeAzure::start(Knobs {
        op_duration: Duration::from_millis(300),
        ..Knobs::default()
    });
    let az = cloud(&fake);
    let sub = subnet_id(&az).await;
    let vm = create(
        &az,
        "vm",
        Spec::Instance(instance("Standard_B1s", &sub, &[])),
    )
    .await
    .unwrap();
    // The disk's PUT answers 202 and the disk reads as 404 until its operation is done: the
    // create returns once it is there.
    let disk = create(&az, "data", volume(8, Some(&vm.cloud_id)))
        .await
        .unwrap();
    assert_eq!(disk.attrs["size_gib"], 8);
    assert_eq!(disk.attrs["instance"], json!(vm.cloud_id));
    az.delete(&disk.at()).await.unwrap();
    az.delete(&vm.at()).await.unwrap();
    assert_eq!(
        fake.count_tagged(NIC, "chimera-token", "tok-instance-vm"),
        0
    );
}

#[tokio::test]
async fn a_size_the_region_lacks_is_refused_with_azure_code_and_leaves_nothing() {
    let fake = FakeAzure::start(Knobs {
        unavailable_sizes: vec![(REGION.into(), "Standard_D8s_v5".into())],
        ..Knobs::default()
    });
    let az = cloud(&fake);
    let sub = subnet_id(&az).await;
    let e = create(
        &az,
        "big",
        Spec::Instance(instance("Standard_D8s_v5", &sub, &[])),
    )
    .await
    .unwrap_err();
    match &e {
        ProviderError::Failed { code, message } => {
            assert_eq!(code, "SkuNotAvailable");
            assert!(
                message.contains("Standard_D8s_v5") && message.contains(REGION),
                "{message}"
            );
        }
        other => panic!("expected SkuNotAvailable, got {other:?}"),
    }
    // The interface made for it went with it.
    assert_eq!(fake.count_tagged(NIC, "chimera-stack", STACK), 0);
}

#[tokio::test]
async fn drift_and_import_by_bare_id() {
    let fake = FakeAzure::start(Knobs::default());
    let az = cloud(&fake);
    let sub = subnet_id(&az).await;
    let vm = create(
        &az,
        "vm",
        Spec::Instance(instance("Standard_B1s", &sub, &[])),
    )
    .await
    .unwrap();
    // Resized in the portal: read and observe report it.
    fake.set_property(
        &vm.cloud_id,
        "hardwareProfile.vmSize",
        json!("Standard_B2s"),
    )
    .unwrap();
    let seen = az.observe(&[vm.at()]).await.unwrap();
    assert_eq!(
        seen[0].as_ref().unwrap().attrs["instance_type"],
        "Standard_B2s"
    );
    // A network made outside Chimera is read by its id alone (no region).
    let legacy = fake.create_network("legacy-rg", "legacy", REGION, "10.9.0.0/16");
    let read = az
        .read(&CloudRef::new(Kind::Network, legacy.clone(), ""))
        .await
        .unwrap()
        .expect("read by bare id");
    assert_eq!(read.attrs["cidr"], "10.9.0.0/16");
    assert_eq!(read.native_region, REGION);
    // Untagged: not the stack's.
    assert!(
        az.list_managed(STACK)
            .await
            .unwrap()
            .iter()
            .all(|o| o.cloud_id != legacy)
    );
}

#[test]
fn plan_time_limits_name_the_field_and_the_fix() {
    let az = AzureCloud::new(AzureSettings::default());
    let address = Address::new(Kind::Instance, "vm");
    let mut spec = instance("Standard_B1s", "s", &["a", "b"]);
    spec.public_ip = true;
    spec.image_ref = Value::Null;
    let p = Proposal {
        spec: Spec::Instance(spec),
        tags: BTreeMap::new(),
        native: Map::new(),
    };
    let v = az.validate(&p.request(STACK, &address, REGION, "t"));
    let fields: Vec<&str> = v.iter().map(|v| v.field.as_str()).collect();
    assert_eq!(fields, ["firewalls", "public_ip", "image"], "{v:?}");
    let disk = Proposal {
        spec: Spec::Volume(VolumeSpec {
            size_gib: 2,
            volume_type: "ssd".into(),
            disk_type: "gp3".into(),
            zone: "d".into(),
            encrypted: false,
            instance: None,
        }),
        tags: BTreeMap::new(),
        native: Map::new(),
    };
    let address = Address::new(Kind::Volume, "d");
    let v = az.validate(&disk.request(STACK, &address, REGION, "t"));
    let fields: Vec<&str> = v.iter().map(|v| v.field.as_str()).collect();
    assert_eq!(fields, ["type", "size_gib", "encrypted", "zone"], "{v:?}");
}
