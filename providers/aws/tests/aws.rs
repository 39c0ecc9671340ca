//! The AWS provider against moto (an EC2 emulator) on 127.0.0.1, started by each test.

use std::collections::BTreeMap;
use std::sync::Arc;

use async_trait::async_trait;
use aws_sdk_ec2::types::Tag;
use chimera_aws::{AwsCloud, AwsSettings};
use chimera_model::kinds::{
    FirewallSpec, InstanceSpec, NetworkSpec, Rule, Spec, SubnetSpec, VolumeSpec, firewall,
};
use chimera_model::{Address, Kind};
use chimera_providers::conformance::{self, Harness};
use chimera_providers::{CloudRef, Observed, Proposal, Provider, ProviderError, Retrying};
use chimera_testkit::{MOTO_AMI, Moto, REGION, ThrottleProxy};
use serde_json::{Map, Value, json};

const STACK: &str = "moto-test";

fn settings() -> AwsSettings {
    AwsSettings {
        images: [("ubuntu-24.04".to_string(), MOTO_AMI.to_string())].into(),
        ..AwsSettings::default()
    }
}

async fn cloud(endpoint: &str) -> Retrying<AwsCloud> {
    Retrying(AwsCloud::with_config(
        settings(),
        chimera_testkit::sdk_config(endpoint).await,
    ))
}

/// The suite's view of moto: the provider, and the EC2 API to change resources behind its back.
struct OnMoto<P> {
    provider: P,
    endpoint: String,
}

#[async_trait]
impl<P: Provider> Harness for OnMoto<P> {
    fn provider(&self) -> &dyn Provider {
        &self.provider
    }
    fn region(&self) -> &str {
        REGION
    }
    async fn tag_out_of_band(&self, at: &CloudRef, key: &str, value: &str) -> Result<(), String> {
        chimera_testkit::ec2(&self.endpoint)
            .await
            .create_tags()
            .resources(&at.id)
            .tags(Tag::builder().key(key).value(value).build())
            .send()
            .await
            .map(|_| ())
            .map_err(|e| format!("{e:?}"))
    }
}

/// Runs every conformance case; panics listing each broken one.
async fn conforms(h: &dyn Harness) {
    let failed = conformance::check_all(h).await;
    assert!(
        failed.is_empty(),
        "{}",
        failed
            .iter()
            .map(|(kind, verb, why)| format!("{kind}::{verb}: {}", why.join("; ")))
            .collect::<Vec<_>>()
            .join("\n")
    );
}

/// Creates `spec` as `name` in `region` with the user's `tags`; its token names it.
async fn create_in(
    p: &dyn Provider,
    region: &str,
    name: &str,
    spec: Spec,
    tags: &[(&str, &str)],
) -> Result<Observed, ProviderError> {
    let address = Address::new(spec.kind(), name);
    let token = format!("tok-{}-{name}", spec.kind());
    let proposal = Proposal {
        spec,
        tags: tags
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        native: Map::new(),
    };
    p.create(&proposal.request(STACK, &address, region, &token))
        .await
}

async fn create(p: &dyn Provider, name: &str, spec: Spec) -> Result<Observed, ProviderError> {
    create_in(p, REGION, name, spec, &[]).await
}

/// Updates `name` (created as `cloud_id`) to `spec`, under a token of its own.
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

fn network(cidr: &str) -> Spec {
    Spec::Network(NetworkSpec { cidr: cidr.into() })
}

fn subnet_in(network: &str, cidr: &str, public: bool) -> Spec {
    Spec::Subnet(SubnetSpec {
        network: network.into(),
        cidr: cidr.into(),
        zone: "a".into(),
        public,
    })
}

fn instance(instance_type: &str, subnet: &str) -> InstanceSpec {
    InstanceSpec {
        size: None,
        cpu: None,
        memory_gib: None,
        instance_type: instance_type.into(),
        image: "ubuntu-24.04".into(),
        image_ref: Value::Null,
        subnet: subnet.into(),
        firewalls: vec![],
        public_ip: false,
        user_data: None,
    }
}

fn rule(protocol: &str, ports: Option<u16>, cidrs: &[&str], description: Option<&str>) -> Rule {
    Rule {
        protocol: protocol.into(),
        from_port: ports,
        to_port: ports,
        cidrs: cidrs.iter().map(|c| c.to_string()).collect(),
        description: description.map(str::to_string),
    }
}

/// `n` instances `w-0`… in `subnet`, launched concurrently: their ids, in the order they
/// finished.
async fn launch(aws: &Arc<Retrying<AwsCloud>>, subnet: &str, n: usize) -> Vec<String> {
    let mut set = tokio::task::JoinSet::new();
    for i in 0..n {
        let aws = aws.clone();
        let spec = Spec::Instance(instance("t3.micro", subnet));
        set.spawn(async move {
            create(aws.as_ref(), &format!("w-{i}"), spec)
                .await
                .unwrap()
                .cloud_id
        });
    }
    let mut ids = Vec::new();
    while let Some(r) = set.join_next().await {
        ids.push(r.unwrap());
    }
    ids
}

/// A network and a subnet with `cidr` in it (zone a, private): returns the subnet's id.
async fn subnet(p: &dyn Provider, cidr: &str) -> String {
    let net = create(p, "n", network("10.0.0.0/16")).await.unwrap();
    create(p, "s", subnet_in(&net.cloud_id, cidr, false))
        .await
        .unwrap()
        .cloud_id
}

#[tokio::test]
async fn throttling_is_retried_until_the_calls_succeed() {
    let moto = Moto::start();
    // The whole conformance suite (also run case by case in tests/conformance.rs), with every
    // third request answered RequestLimitExceeded.
    let proxy = ThrottleProxy::start(&moto.endpoint, 3);
    let h = OnMoto {
        provider: cloud(&proxy.endpoint).await,
        endpoint: moto.endpoint.clone(),
    };
    conforms(&h).await;
    assert!(
        proxy.throttled() > 5,
        "the proxy throttled {} requests",
        proxy.throttled()
    );
}

#[tokio::test]
async fn instances_volumes_and_rules_round_trip_through_ec2() {
    let moto = Moto::start();
    let aws = Arc::new(cloud(&moto.endpoint).await);
    let p: &dyn Provider = aws.as_ref();
    let net = create_in(p, REGION, "main", network("10.0.0.0/16"), &[("app", "t")])
        .await
        .unwrap();
    assert_eq!(net.tags["app"], "t");
    let sub = create(p, "public", subnet_in(&net.cloud_id, "10.0.1.0/24", true))
        .await
        .unwrap();
    assert_eq!(sub.attrs["public"], json!(true));
    assert_eq!(sub.attrs["zone"], json!("a"));
    let rules = vec![
        rule("tcp", Some(443), &["0.0.0.0/0"], None),
        rule("tcp", Some(22), &["10.0.0.0/16"], Some("ssh")),
        // Without ports: every port, and (ICMP) every type; read back as the same rules.
        rule("udp", None, &["10.1.0.0/16"], None),
        rule("icmp", None, &["10.2.0.0/16"], None),
    ];
    let all_out = vec![rule("all", None, &["0.0.0.0/0"], None)];
    let fw_spec = FirewallSpec {
        network: net.cloud_id.clone(),
        ingress: rules.clone(),
        egress: all_out.clone(),
    };
    let fw = create(p, "web", Spec::Firewall(fw_spec.clone()))
        .await
        .unwrap();
    assert_eq!(
        firewall::canonical_rules(&fw.attrs["ingress"]),
        firewall::canonical_rules(&json!(rules))
    );
    let web = InstanceSpec {
        firewalls: vec![fw.cloud_id.clone()],
        public_ip: true,
        user_data: Some("#!/bin/sh\necho hi\n".into()),
        ..instance("t3.small", &sub.cloud_id)
    };
    let vm = create(p, "web-0", Spec::Instance(web.clone()))
        .await
        .unwrap();
    assert!(vm.cloud_id.starts_with("i-"), "{}", vm.cloud_id);
    assert!(vm.outputs["private_ip"].is_string(), "{:?}", vm.outputs);
    assert_eq!(vm.attrs["instance_type"], json!("t3.small"));
    // (Not `firewalls`: moto reports only groups given outside a network interface, and a
    // public address puts them on the interface.)
    assert_eq!(vm.attrs["image_id"], json!(MOTO_AMI));
    // The same token again is the same instance.
    let again = create(p, "web-0", Spec::Instance(web.clone()))
        .await
        .unwrap();
    assert_eq!(again.cloud_id, vm.cloud_id);
    let vol = create(
        p,
        "data",
        Spec::Volume(VolumeSpec {
            size_gib: 50,
            volume_type: "ssd".into(),
            disk_type: "gp3".into(),
            zone: "a".into(),
            encrypted: true,
            instance: Some(vm.cloud_id.clone()),
        }),
    )
    .await
    .unwrap();
    assert_eq!(vol.attrs["instance"], json!(vm.cloud_id));
    assert_eq!(vol.attrs["size_gib"], json!(50));
    assert_eq!(vol.attrs["disk_type"], json!("gp3"));
    assert_eq!(vol.attrs["zone"], json!("a"));

    // Instance type changes in place: stop, modify, start.
    let bigger = InstanceSpec {
        instance_type: "t3.medium".into(),
        ..web
    };
    let updated = update(p, "web-0", Spec::Instance(bigger), &vm.cloud_id).await;
    assert_eq!(updated.cloud_id, vm.cloud_id);
    assert_eq!(updated.attrs["instance_type"], json!("t3.medium"));
    assert_eq!(
        updated.tags["chimera-token"], "tok-instance-web-0",
        "the creation token stays"
    );

    // Rules change in place.
    let fewer = FirewallSpec {
        ingress: vec![rules[0].clone()],
        ..fw_spec
    };
    let fw2 = update(p, "web", Spec::Firewall(fewer), &fw.cloud_id).await;
    assert_eq!(fw2.attrs["ingress"].as_array().unwrap().len(), 1);

    assert_eq!(p.list_managed(STACK).await.unwrap().len(), 5);
    for o in [&vol, &vm, &fw, &sub, &net] {
        p.delete(&o.at()).await.unwrap();
    }
    assert!(p.read(&vm.at()).await.unwrap().is_none());
    assert!(p.list_managed(STACK).await.unwrap().is_empty());
}

#[tokio::test]
async fn reads_and_deletes_go_to_the_region_and_search_only_when_it_is_unknown() {
    let moto = Moto::start();
    let proxy = ThrottleProxy::start(&moto.endpoint, 0);
    let aws = cloud(&proxy.endpoint).await;
    let east = create(&aws, "east", network("10.0.0.0/16")).await.unwrap();
    let west = create_in(&aws, "eu-west-1", "west", network("10.1.0.0/16"), &[])
        .await
        .unwrap();
    assert_eq!(west.native_region, "eu-west-1");
    // Asked by another process (a later refresh): to this one, "not found" right after its own
    // create would be eventual consistency, wherever it asked.
    let aws = cloud(&proxy.endpoint).await;
    let elsewhere = |o: &Observed, region: &str| CloudRef::new(o.kind, o.cloud_id.clone(), region);

    // Straight to the region given: not found there is absent, even if it lives elsewhere.
    assert!(aws.read(&elsewhere(&west, REGION)).await.unwrap().is_none());
    let found = aws.read(&west.at()).await.unwrap().unwrap();
    assert_eq!(found.native_region, "eu-west-1");
    // An unknown region is searched: the default region, then those in use.
    let found = aws.read(&elsewhere(&west, "")).await.unwrap().unwrap();
    assert_eq!(found.native_region, "eu-west-1");

    // A batch: one Describe in the known region; the ref whose region is unknown is searched
    // for (the default region first, where it is), and an id already found costs nothing.
    let before = proxy.requests();
    let seen = aws
        .observe(&[west.at(), elsewhere(&east, ""), elsewhere(&west, "")])
        .await
        .unwrap();
    let after = proxy.requests();
    let ids: Vec<_> = seen
        .iter()
        .map(|o| o.as_ref().map(|o| &o.cloud_id))
        .collect();
    assert_eq!(
        ids,
        [
            Some(&west.cloud_id),
            Some(&east.cloud_id),
            Some(&west.cloud_id)
        ]
    );
    assert_eq!(seen[0].as_ref().unwrap().native_region, "eu-west-1");
    assert_eq!(seen[1].as_ref().unwrap().native_region, REGION);
    let vpcs = after["DescribeVpcs"] - before.get("DescribeVpcs").copied().unwrap_or(0);
    assert_eq!(vpcs, 2, "{after:?}");

    // A delete in the wrong region deletes nothing; in the right one, it deletes.
    aws.delete(&elsewhere(&west, REGION)).await.unwrap();
    assert!(aws.read(&west.at()).await.unwrap().is_some());
    aws.delete(&elsewhere(&west, "")).await.unwrap();
    assert!(aws.read(&west.at()).await.unwrap().is_none());
    aws.delete(&east.at()).await.unwrap();
    assert!(aws.read(&east.at()).await.unwrap().is_none());
}

#[tokio::test]
async fn an_instance_type_ec2_rejects_is_an_error_with_its_aws_code() {
    let moto = Moto::start_with_env(&[("MOTO_EC2_ENABLE_INSTANCE_TYPE_VALIDATION", "true")]);
    let aws = cloud(&moto.endpoint).await;
    let sub = subnet(&aws, "10.0.1.0/24").await;
    let err = create(&aws, "bad", Spec::Instance(instance("m9.enormous", &sub)))
        .await
        .unwrap_err();
    match err {
        ProviderError::Failed { code, message } => {
            assert!(code.starts_with("InvalidInstanceType"), "{code}: {message}");
            assert!(message.contains("m9.enormous"), "{message}");
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
}

#[tokio::test]
async fn an_unreachable_endpoint_is_a_clear_error() {
    // A port nothing listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let aws = AwsCloud::with_config(
        settings(),
        chimera_testkit::sdk_config(&format!("http://127.0.0.1:{port}")).await,
    );
    let err = create(&aws, "n", network("10.0.0.0/16")).await.unwrap_err();
    assert!(
        err.to_string().contains("ConnectionError") && err.to_string().contains("endpoint"),
        "{err}"
    );
}

#[tokio::test]
async fn list_managed_and_find_by_token_page_through_every_result() {
    // moto pages DescribeInstances at 100.
    let moto = Moto::start();
    let aws = Arc::new(cloud(&moto.endpoint).await);
    let sub = subnet(aws.as_ref(), "10.0.0.0/20").await;
    launch(&aws, &sub, 105).await;
    let managed = aws.list_managed(STACK).await.unwrap();
    assert_eq!(
        managed.len(),
        107,
        "every page: 105 instances, a subnet and a network"
    );
    let live = chimera_testkit::live_instances(&moto.endpoint, STACK).await;
    assert_eq!(live.len(), 105);
    let found = aws
        .find_by_token(Kind::Instance, REGION, "tok-instance-w-104")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(found.tags["chimera-address"], "instance.w-104");
}

#[tokio::test]
async fn not_found_right_after_a_create_is_eventual_consistency_not_absence() {
    let moto = Moto::start();
    // The first three describes of an instance by id say it does not exist.
    let proxy = ThrottleProxy::start_not_found(&moto.endpoint, 3);
    let aws = cloud(&proxy.endpoint).await;
    let sub = subnet(&aws, "10.0.1.0/24").await;
    let vm = create(&aws, "fresh", Spec::Instance(instance("t3.micro", &sub)))
        .await
        .unwrap();
    // Not "absent": retried until EC2 shows it.
    let seen = aws.read(&vm.at()).await.unwrap();
    assert_eq!(seen.map(|o| o.cloud_id), Some(vm.cloud_id.clone()));
    assert_eq!(
        proxy.throttled(),
        3,
        "three not-found answers were absorbed"
    );
    // A stranger's id that this process never created is absent at once.
    let stranger = CloudRef::new(Kind::Instance, "i-0123456789abcdef0", REGION);
    assert!(aws.read(&stranger).await.unwrap().is_none());
}

#[tokio::test]
async fn observing_many_resources_takes_a_few_describe_calls() {
    let moto = Moto::start();
    // Every request goes through the proxy, which counts them by EC2 Action.
    let proxy = ThrottleProxy::start(&moto.endpoint, 0);
    let aws = Arc::new(cloud(&proxy.endpoint).await);
    let sub = subnet(aws.as_ref(), "10.0.0.0/20").await;
    let ids = launch(&aws, &sub, 200).await;
    let mut items: Vec<CloudRef> = ids
        .iter()
        .map(|id| CloudRef::new(Kind::Instance, id.clone(), REGION))
        .collect();
    items.push(CloudRef::new(Kind::Subnet, sub.clone(), REGION));
    // One that is gone: observed as absent, in its place.
    items.push(CloudRef::new(Kind::Instance, "i-00000000000000000", REGION));
    let before = proxy.requests();
    let observed = aws.observe(&items).await.unwrap();
    let after = proxy.requests();
    let calls = |a: &str| after.get(a).copied().unwrap_or(0) - before.get(a).copied().unwrap_or(0);
    assert_eq!(observed.len(), 202);
    assert!(observed[..200].iter().all(Option::is_some));
    assert_eq!(observed[200].as_ref().unwrap().cloud_id, sub);
    assert!(observed[201].is_none());
    for (o, id) in observed.iter().zip(&ids) {
        assert_eq!(&o.as_ref().unwrap().cloud_id, id, "in the order asked");
    }
    // 201 instance ids in one region: a filter of 200 (paged by moto at 100) and one of 1; one
    // call for the subnet.
    let describes: u64 = after
        .keys()
        .filter(|a| a.starts_with("Describe"))
        .map(|a| calls(a))
        .sum();
    assert!(
        calls("DescribeInstances") <= 3 && calls("DescribeSubnets") == 1,
        "{after:?}"
    );
    assert!(
        describes <= 4,
        "200 instances in {describes} Describe calls"
    );
    eprintln!(
        "observe of 201 instances and a subnet: {describes} Describe calls ({} DescribeInstances)",
        calls("DescribeInstances")
    );
}

#[tokio::test]
async fn a_lost_create_outside_the_default_region_is_found_by_its_region() {
    let moto = Moto::start();
    let aws = cloud(&moto.endpoint).await;
    let net = create_in(&aws, "eu-west-1", "west", network("10.9.0.0/16"), &[])
        .await
        .unwrap();
    // After a crash: a new process, with no client for eu-west-1 yet.
    let fresh = cloud(&moto.endpoint).await;
    let found = fresh
        .find_by_token(Kind::Network, "eu-west-1", "tok-network-west")
        .await
        .unwrap();
    assert_eq!(found.map(|o| o.cloud_id), Some(net.cloud_id));
    // Without the region, only the regions it knows are searched: the default one.
    let fresh = cloud(&moto.endpoint).await;
    assert!(
        fresh
            .find_by_token(Kind::Network, "", "tok-network-west")
            .await
            .unwrap()
            .is_none()
    );
}
