//! `validate` against EC2's limits, offline: no client is ever made.

use std::collections::BTreeMap;

use chimera_model::Address;
use chimera_model::kinds::{FirewallSpec, InstanceSpec, NetworkSpec, Rule, SubnetSpec, VolumeSpec};
use serde_json::json;

use super::*;

fn violations(spec: Spec, tags: &BTreeMap<String, String>) -> Vec<Violation> {
    let aws = AwsCloud::new(AwsSettings::default());
    let address = Address::new(spec.kind(), "r");
    let native = Map::new();
    aws.validate(&Request {
        stack: "s",
        address: &address,
        native_region: "us-east-1",
        spec: &spec,
        tags,
        native: &native,
        // At plan time there is no token yet.
        token: "",
    })
}

/// The fields at fault.
fn fields(spec: Spec) -> Vec<String> {
    violations(spec, &BTreeMap::new())
        .into_iter()
        .map(|v| v.field)
        .collect()
}

fn network(cidr: &str) -> Spec {
    Spec::Network(NetworkSpec { cidr: cidr.into() })
}

fn subnet(cidr: &str) -> Spec {
    Spec::Subnet(SubnetSpec {
        network: "vpc-1".into(),
        cidr: cidr.into(),
        zone: "a".into(),
        public: false,
    })
}

fn instance(user_data: Option<String>) -> Spec {
    Spec::Instance(InstanceSpec {
        size: Some("small".into()),
        cpu: None,
        memory_gib: None,
        instance_type: "t3.small".into(),
        image: "ubuntu-24.04".into(),
        image_ref: json!({ "owner": "099720109477", "name": "ubuntu*" }),
        subnet: "subnet-1".into(),
        firewalls: vec![],
        public_ip: false,
        user_data,
    })
}

fn volume(disk_type: &str, size_gib: u32) -> Spec {
    Spec::Volume(VolumeSpec {
        size_gib,
        volume_type: "ssd".into(),
        disk_type: disk_type.into(),
        zone: "a".into(),
        encrypted: true,
        instance: None,
    })
}

fn rule(protocol: &str, from: Option<u16>, to: Option<u16>, cidrs: usize) -> Rule {
    Rule {
        protocol: protocol.into(),
        from_port: from,
        to_port: to,
        cidrs: (0..cidrs).map(|i| format!("10.0.{i}.0/24")).collect(),
        description: None,
    }
}

fn firewall(ingress: Vec<Rule>, egress: Vec<Rule>) -> Spec {
    Spec::Firewall(FirewallSpec {
        network: "vpc-1".into(),
        ingress,
        egress,
    })
}

#[test]
fn network_and_subnet_blocks_are_16_to_28() {
    assert!(fields(network("10.0.0.0/16")).is_empty());
    assert!(fields(network("10.0.0.0/28")).is_empty());
    assert_eq!(fields(network("10.0.0.0/8")), ["cidr"]);
    assert!(fields(subnet("10.0.1.0/24")).is_empty());
    assert_eq!(fields(subnet("10.0.1.0/29")), ["cidr"]);
    let v = violations(subnet("10.0.0.0/15"), &BTreeMap::new());
    assert!(v[0].message.contains("/16 and /28"), "{}", v[0].message);
}

#[test]
fn user_data_is_at_most_16_kib_before_base64() {
    assert!(fields(instance(None)).is_empty());
    assert!(fields(instance(Some("x".repeat(16 * 1024)))).is_empty());
    let v = violations(instance(Some("x".repeat(16 * 1024 + 1))), &BTreeMap::new());
    assert_eq!(v.len(), 1);
    assert_eq!(v[0].field, "user_data");
    assert!(v[0].message.contains("16385 bytes"), "{}", v[0].message);
}

#[test]
fn volume_sizes_follow_the_ebs_type() {
    for (ty, ok, bad) in [
        ("gp3", [1, 16_384], [0, 16_385]),
        ("gp2", [1, 16_384], [0, 16_385]),
        ("io1", [4, 16_384], [3, 16_385]),
        ("io2", [4, 65_536], [3, 65_537]),
        ("st1", [125, 16_384], [124, 16_385]),
        ("sc1", [125, 16_384], [124, 16_385]),
        ("standard", [1, 1_024], [0, 1_025]),
    ] {
        for size in ok {
            assert!(fields(volume(ty, size)).is_empty(), "{ty} {size}");
        }
        for size in bad {
            assert_eq!(fields(volume(ty, size)), ["size_gib"], "{ty} {size}");
        }
    }
    let small_hdd = violations(volume("st1", 50), &BTreeMap::new());
    assert!(
        small_hdd[0].message.contains("125 to 16384") && small_hdd[0].message.contains("'ssd"),
        "{}",
        small_hdd[0].message
    );
    let unknown = violations(volume("gp9", 10), &BTreeMap::new());
    assert_eq!(unknown[0].field, "type");
    assert!(unknown[0].message.contains("gp9"), "{}", unknown[0].message);
}

#[test]
fn at_most_47_user_tags_since_chimera_adds_3() {
    let tags = |n: usize| -> BTreeMap<String, String> {
        (0..n).map(|i| (format!("k{i}"), "v".to_string())).collect()
    };
    assert!(violations(network("10.0.0.0/16"), &tags(47)).is_empty());
    let v = violations(network("10.0.0.0/16"), &tags(49));
    assert_eq!(v.len(), 1);
    assert_eq!(v[0].field, "tags");
    assert!(
        v[0].message.contains("at most 47") && v[0].message.contains("remove 2"),
        "{}",
        v[0].message
    );
}

#[test]
fn tags_stay_out_of_the_aws_namespace_and_values_within_256() {
    let tags: BTreeMap<String, String> = [
        ("aws:owner".to_string(), "me".to_string()),
        ("long".to_string(), "x".repeat(257)),
        ("fine".to_string(), "y".repeat(256)),
    ]
    .into();
    let v = violations(network("10.0.0.0/16"), &tags);
    assert_eq!(v.len(), 2, "{v:?}");
    assert!(v.iter().all(|v| v.field == "tags"));
    assert!(v.iter().any(|v| v.message.contains("aws:")));
    assert!(v.iter().any(|v| v.message.contains("257 characters")));
}

#[test]
fn a_security_group_holds_60_rules_each_way_one_per_cidr() {
    // 60 in one rule, or split across rules: the count is per CIDR.
    let sixty = vec![
        rule("tcp", Some(443), Some(443), 30),
        rule("tcp", Some(80), Some(80), 30),
    ];
    assert!(fields(firewall(sixty.clone(), sixty)).is_empty());
    let over = vec![
        rule("tcp", Some(443), Some(443), 31),
        rule("tcp", Some(80), Some(80), 30),
    ];
    assert_eq!(fields(firewall(over.clone(), vec![])), ["ingress"]);
    let v = violations(firewall(vec![], over), &BTreeMap::new());
    assert_eq!(v.len(), 1);
    assert_eq!(v[0].field, "egress");
    assert!(
        v[0].message.contains("61") && v[0].message.contains("quota"),
        "{}",
        v[0].message
    );
    // The same CIDR twice is one rule.
    let dup = vec![
        rule("tcp", Some(22), Some(22), 60),
        rule("tcp", Some(22), Some(22), 60),
    ];
    assert!(fields(firewall(dup, vec![])).is_empty());
}

#[test]
fn tcp_and_udp_ports_run_from_low_to_high() {
    let ok = vec![
        rule("tcp", Some(0), Some(65535), 1),
        rule("udp", Some(53), Some(53), 1),
        rule("tcp", None, None, 1),
        rule("all", None, None, 1),
    ];
    assert!(fields(firewall(ok, vec![])).is_empty());
    let v = violations(
        firewall(vec![rule("tcp", Some(90), Some(80), 1)], vec![]),
        &BTreeMap::new(),
    );
    assert_eq!(v.len(), 1);
    assert!(
        v[0].message.contains("from = 80, to = 90"),
        "{}",
        v[0].message
    );
    assert_eq!(
        fields(firewall(vec![], vec![rule("udp", Some(53), None, 1)])),
        ["egress"]
    );
}

#[test]
fn settings_are_checked() {
    let s = AwsSettings::from_settings(&json!({ "aws": { "endpoint": "http://127.0.0.1:1", "images": { "ubuntu-24.04": "ami-1" }, "regions": ["eu-west-1"] } })).unwrap();
    assert_eq!(s.endpoint.as_deref(), Some("http://127.0.0.1:1"));
    assert_eq!(s.images["ubuntu-24.04"], "ami-1");
    let e = AwsSettings::from_settings(&json!({ "aws": { "endpont": "x" } })).unwrap_err();
    assert!(e.contains("providers.aws.endpont"), "{e}");
}

/// The SDK's client is rustls on ring, the process's one crypto provider: it is made without
/// aws-lc, after [`chimera_providers::install_tls_crypto`].
#[test]
fn the_https_client_is_made_on_ring() {
    chimera_providers::install_tls_crypto();
    drop(https_client());
}
