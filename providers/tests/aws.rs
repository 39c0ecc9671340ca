//! The AWS provider against moto (an EC2 emulator) on 127.0.0.1, started by each test.
#![cfg(feature = "aws")]

use std::sync::Arc;

use chimera_model::{Address, Kind};
use chimera_providers::aws::{AwsCloud, AwsSettings};
use chimera_providers::{Provider, ProviderError, Request, Retrying};
use chimera_testkit::{MOTO_AMI, Moto, REGION, ThrottleProxy};
use serde_json::{Map, Value, json};

fn attrs(v: Value) -> Map<String, Value> {
    v.as_object().cloned().unwrap()
}

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

async fn create(
    p: &dyn Provider,
    kind: Kind,
    name: &str,
    a: Value,
) -> Result<chimera_providers::Observed, ProviderError> {
    let address = Address::new(kind, name);
    let a = attrs(a);
    let token = format!("tok-{kind}-{name}");
    p.create(&Request {
        stack: "moto-test",
        address: &address,
        native_region: REGION,
        attrs: &a,
        token: &token,
    })
    .await
}

/// `n` instances `w-0`… in `subnet`, launched concurrently: their ids, in the order they
/// finished.
async fn launch(aws: &Arc<Retrying<AwsCloud>>, subnet: &str, n: usize) -> Vec<String> {
    let mut set = tokio::task::JoinSet::new();
    for i in 0..n {
        let aws = aws.clone();
        let subnet = subnet.to_string();
        set.spawn(async move {
            create(
                aws.as_ref(),
                Kind::Instance,
                &format!("w-{i}"),
                json!({ "instance_type": "t3.micro", "image": "ubuntu-24.04", "subnet": subnet, "firewalls": [], "public_ip": false }),
            )
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
    let net = create(p, Kind::Network, "n", json!({ "cidr": "10.0.0.0/16" }))
        .await
        .unwrap();
    create(
        p,
        Kind::Subnet,
        "s",
        json!({ "network": net.cloud_id, "cidr": cidr, "zone": "a", "public": false }),
    )
    .await
    .unwrap()
    .cloud_id
}

#[tokio::test]
async fn aws_passes_the_conformance_suite() {
    let moto = Moto::start();
    let aws = cloud(&moto.endpoint).await;
    chimera_providers::conformance::run(&aws, REGION, "conformance")
        .await
        .unwrap();
    // Twice on one emulator, reset in between: the suite leaves nothing behind either way.
    moto.reset();
    chimera_providers::conformance::run(&aws, REGION, "conformance-again")
        .await
        .unwrap();
}

#[tokio::test]
async fn throttling_is_retried_until_the_calls_succeed() {
    let moto = Moto::start();
    // Every third request answers RequestLimitExceeded.
    let proxy = ThrottleProxy::start(&moto.endpoint, 3);
    let aws = cloud(&proxy.endpoint).await;
    chimera_providers::conformance::run(&aws, REGION, "throttled")
        .await
        .unwrap();
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
    let net = create(
        p,
        Kind::Network,
        "main",
        json!({ "cidr": "10.0.0.0/16", "tags": { "app": "t" } }),
    )
    .await
    .unwrap();
    let sub = create(
        p,
        Kind::Subnet,
        "public",
        json!({ "network": net.cloud_id, "cidr": "10.0.1.0/24", "zone": "a", "public": true }),
    )
    .await
    .unwrap();
    assert_eq!(sub.attrs["public"], json!(true));
    assert_eq!(sub.attrs["zone"], json!("a"));
    let rules = json!([
        { "protocol": "tcp", "from_port": 443, "to_port": 443, "cidrs": ["0.0.0.0/0"] },
        { "protocol": "tcp", "from_port": 22, "to_port": 22, "cidrs": ["10.0.0.0/16"], "description": "ssh" },
    ]);
    let all_out =
        json!([{ "protocol": "all", "from_port": null, "to_port": null, "cidrs": ["0.0.0.0/0"] }]);
    let fw = create(
        p,
        Kind::Firewall,
        "web",
        json!({ "network": net.cloud_id, "ingress": rules, "egress": all_out }),
    )
    .await
    .unwrap();
    assert_eq!(
        chimera_model::kinds::firewall::canonical_rules(&fw.attrs["ingress"]),
        chimera_model::kinds::firewall::canonical_rules(&rules)
    );
    let instance = json!({
        "instance_type": "t3.small", "image": "ubuntu-24.04", "subnet": sub.cloud_id,
        "firewalls": [fw.cloud_id], "public_ip": true, "user_data": "#!/bin/sh\necho hi\n",
    });
    let vm = create(p, Kind::Instance, "web-0", instance.clone())
        .await
        .unwrap();
    assert!(vm.cloud_id.starts_with("i-"), "{}", vm.cloud_id);
    assert!(vm.outputs["private_ip"].is_string(), "{:?}", vm.outputs);
    assert_eq!(vm.attrs["instance_type"], json!("t3.small"));
    // The same token again is the same instance.
    let again = create(p, Kind::Instance, "web-0", instance.clone())
        .await
        .unwrap();
    assert_eq!(again.cloud_id, vm.cloud_id);
    let vol = create(
        p,
        Kind::Volume,
        "data",
        json!({ "size_gib": 50, "disk_type": "gp3", "zone": "a", "encrypted": true, "instance": vm.cloud_id }),
    )
    .await
    .unwrap();
    assert_eq!(vol.attrs["instance"], json!(vm.cloud_id));

    // Instance type changes in place: stop, modify, start.
    let address = Address::new(Kind::Instance, "web-0");
    let mut bigger = attrs(instance);
    bigger.insert("instance_type".into(), json!("t3.medium"));
    let updated = p
        .update(
            &Request {
                stack: "moto-test",
                address: &address,
                native_region: REGION,
                attrs: &bigger,
                token: "tok-update",
            },
            &vm.cloud_id,
        )
        .await
        .unwrap();
    assert_eq!(updated.cloud_id, vm.cloud_id);
    assert_eq!(updated.attrs["instance_type"], json!("t3.medium"));
    assert_eq!(
        updated.tags["chimera-token"], "tok-instance-web-0",
        "the creation token stays"
    );

    // Rules change in place.
    let fw_address = Address::new(Kind::Firewall, "web");
    let fewer =
        attrs(json!({ "network": net.cloud_id, "ingress": [rules[0].clone()], "egress": all_out }));
    let fw2 = p
        .update(
            &Request {
                stack: "moto-test",
                address: &fw_address,
                native_region: REGION,
                attrs: &fewer,
                token: "tok-update-fw",
            },
            &fw.cloud_id,
        )
        .await
        .unwrap();
    assert_eq!(fw2.attrs["ingress"].as_array().unwrap().len(), 1);

    assert_eq!(p.list_managed("moto-test").await.unwrap().len(), 5);
    p.delete(Kind::Volume, &vol.cloud_id).await.unwrap();
    p.delete(Kind::Instance, &vm.cloud_id).await.unwrap();
    p.delete(Kind::Firewall, &fw.cloud_id).await.unwrap();
    p.delete(Kind::Subnet, &sub.cloud_id).await.unwrap();
    p.delete(Kind::Network, &net.cloud_id).await.unwrap();
    assert!(
        p.read(Kind::Instance, &vm.cloud_id)
            .await
            .unwrap()
            .is_none()
    );
    assert!(p.list_managed("moto-test").await.unwrap().is_empty());
}

#[tokio::test]
async fn an_instance_type_ec2_rejects_is_an_error_with_its_aws_code() {
    let moto = Moto::start_with_env(&[("MOTO_EC2_ENABLE_INSTANCE_TYPE_VALIDATION", "true")]);
    let aws = cloud(&moto.endpoint).await;
    let sub = subnet(&aws, "10.0.1.0/24").await;
    let err = create(
        &aws,
        Kind::Instance,
        "bad",
        json!({ "instance_type": "m9.enormous", "image": "ubuntu-24.04", "subnet": sub, "firewalls": [], "public_ip": false }),
    )
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
    let err = create(&aws, Kind::Network, "n", json!({ "cidr": "10.0.0.0/16" }))
        .await
        .unwrap_err();
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
    let managed = aws.list_managed("moto-test").await.unwrap();
    assert_eq!(
        managed.len(),
        107,
        "every page: 105 instances, a subnet and a network"
    );
    let live = chimera_testkit::live_instances(&moto.endpoint, "moto-test").await;
    assert_eq!(live.len(), 105);
}

#[tokio::test]
async fn not_found_right_after_a_create_is_eventual_consistency_not_absence() {
    let moto = Moto::start();
    // The first three describes of an instance by id say it does not exist.
    let proxy = ThrottleProxy::start_not_found(&moto.endpoint, 3);
    let aws = cloud(&proxy.endpoint).await;
    let sub = subnet(&aws, "10.0.1.0/24").await;
    let vm = create(
        &aws,
        Kind::Instance,
        "fresh",
        json!({ "instance_type": "t3.micro", "image": "ubuntu-24.04", "subnet": sub, "firewalls": [], "public_ip": false }),
    )
    .await
    .unwrap();
    // Not "absent": retried until EC2 shows it.
    let seen = aws.read(Kind::Instance, &vm.cloud_id).await.unwrap();
    assert_eq!(seen.map(|o| o.cloud_id), Some(vm.cloud_id.clone()));
    assert_eq!(
        proxy.throttled(),
        3,
        "three not-found answers were absorbed"
    );
    // A stranger's id that this process never created is absent at once.
    assert!(
        aws.read(Kind::Instance, "i-0123456789abcdef0")
            .await
            .unwrap()
            .is_none()
    );
}

#[tokio::test]
async fn observing_many_resources_takes_a_few_describe_calls() {
    let moto = Moto::start();
    // Every request goes through the proxy, which counts them by EC2 Action.
    let proxy = ThrottleProxy::start(&moto.endpoint, 0);
    let aws = Arc::new(cloud(&proxy.endpoint).await);
    let sub = subnet(aws.as_ref(), "10.0.0.0/20").await;
    let ids = launch(&aws, &sub, 200).await;
    let mut items: Vec<(Kind, String)> =
        ids.iter().map(|id| (Kind::Instance, id.clone())).collect();
    items.push((Kind::Subnet, sub.clone()));
    // One that is gone: observed as absent, in its place.
    items.push((Kind::Instance, "i-00000000000000000".into()));
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
    // 201 instance ids: two filters of up to 200, each paged by moto at 100; one for the subnet.
    let describes: u64 = after
        .keys()
        .filter(|a| a.starts_with("Describe"))
        .map(|a| calls(a))
        .sum();
    assert!(
        calls("DescribeInstances") <= 4 && calls("DescribeSubnets") == 1,
        "{:?}",
        after
    );
    assert!(
        describes <= 6,
        "200 instances in {describes} Describe calls"
    );
    eprintln!("observe of 201 instances and a subnet: {describes} Describe calls");
}
