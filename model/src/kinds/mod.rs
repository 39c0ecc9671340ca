//! The resource kinds, each defined once: its typed spec (what a provider receives, references
//! resolved), the fields a user writes and which are required, the outputs it offers to
//! references, the attributes that force a replacement or are always sensitive, and the names
//! each provider accepts. The compiler lowers into these specs, the planner reads force-new and
//! sensitivity here, and providers take the typed spec: a field no kind defines cannot be read.

pub mod firewall;
pub mod instance;
pub mod network;
pub mod subnet;
pub mod volume;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::{Kind, ProviderName};

pub use firewall::{FirewallSpec, Rule};
pub use instance::InstanceSpec;
pub use network::NetworkSpec;
pub use subnet::SubnetSpec;
pub use volume::VolumeSpec;

/// A field a user writes on a resource of some kind (beyond the common ones).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Field {
    pub name: &'static str,
    /// The stdlib schema declares it without a default: leaving it out is an error.
    pub required: bool,
    pub doc: &'static str,
}

/// How a provider constrains a resource's name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NameRule {
    /// RFC 1035 labels: lowercase letters, digits and `-`, starting with a letter, not ending
    /// with `-` (GCP).
    Rfc1035 { max: usize },
    /// Starts with a letter or digit and does not end with `.` or `-` (Azure).
    Azure { min: usize, max: usize },
    /// At most `max` characters and not starting with `reserved` (an AWS id prefix).
    Length {
        max: usize,
        reserved: Option<&'static str>,
    },
}

impl NameRule {
    pub fn check(self, provider: ProviderName, kind: Kind, name: &str) -> Result<(), String> {
        let ok = match self {
            NameRule::Rfc1035 { max } => {
                name.len() <= max
                    && name.starts_with(|c: char| c.is_ascii_lowercase())
                    && name
                        .chars()
                        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
                    && !name.ends_with('-')
            }
            NameRule::Azure { min, max } => {
                (min..=max).contains(&name.len())
                    && name.starts_with(|c: char| c.is_ascii_alphanumeric())
                    && !name.ends_with('.')
                    && !name.ends_with('-')
            }
            NameRule::Length { max, reserved } => {
                name.len() <= max && reserved.is_none_or(|p| !name.starts_with(p))
            }
        };
        if ok {
            return Ok(());
        }
        Err(match self {
            NameRule::Rfc1035 { max } => format!(
                "{provider} {kind} names must be 1-{max} lowercase letters, digits and `-`, start with a letter and not end with `-` (RFC 1035)"
            ),
            NameRule::Azure { min, max } => format!(
                "{provider} {kind} names must be {min}-{max} characters, start with a letter or digit and not end with `.` or `-`"
            ),
            NameRule::Length { max, reserved } => format!(
                "{provider} {kind} names must be at most {max} characters{}",
                reserved
                    .map(|p| format!(" and not start with `{p}`"))
                    .unwrap_or_default()
            ),
        })
    }
}

/// The name rules of a kind on each provider: RFC 1035 labels of at most 63 on GCP, Azure's
/// length range for its resource type, and at most `aws_max` characters on AWS (not starting
/// with `aws_reserved`, an id prefix).
pub const fn name_rules(
    azure: (usize, usize),
    aws_max: usize,
    aws_reserved: Option<&'static str>,
) -> [(ProviderName, NameRule); 3] {
    [
        (ProviderName::Gcp, NameRule::Rfc1035 { max: 63 }),
        (
            ProviderName::Azure,
            NameRule::Azure {
                min: azure.0,
                max: azure.1,
            },
        ),
        (
            ProviderName::Aws,
            NameRule::Length {
                max: aws_max,
                reserved: aws_reserved,
            },
        ),
    ]
}

/// Everything Chimera knows about a kind, in one place.
#[derive(Debug)]
pub struct KindDef {
    pub kind: Kind,
    /// The stdlib schema a user builds it from (`c.Network & { … }`).
    pub schema: &'static str,
    pub fields: &'static [Field],
    /// Outputs other resources may reference (`outputs.id`, …).
    pub outputs: &'static [&'static str],
    /// Attributes whose change cannot be applied in place (written or derived ones).
    pub force_new: &'static [&'static str],
    /// Attributes that are always sensitive.
    pub sensitive: &'static [&'static str],
    /// Name rules per provider, beyond the generic one every name follows.
    pub names: &'static [(ProviderName, NameRule)],
    /// Changes one provider cannot make in place, beyond `force_new` (which holds on every
    /// provider): planned as a replacement there, an update elsewhere.
    pub provider_force_new: &'static [ProviderForceNew],
}

/// A change that forces a replacement on one provider (Terraform's per-resource `ForceNew` and
/// `ForceNewIfChange`, where Chimera's kinds span providers).
#[derive(Debug)]
pub struct ProviderForceNew {
    pub provider: ProviderName,
    pub attr: &'static str,
    pub when: ForceNewWhen,
    /// Why, for the plan's reason line: what the cloud cannot do.
    pub why: &'static str,
}

/// Which changes of the attribute force the replacement.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ForceNewWhen {
    /// Any change.
    Changed,
    /// A smaller number than before (disks that only grow).
    Shrinks,
}

impl ForceNewWhen {
    fn applies(self, before: Option<&Value>, after: Option<&Value>) -> bool {
        match self {
            ForceNewWhen::Changed => before != after,
            ForceNewWhen::Shrinks => match (
                before.and_then(Value::as_f64),
                after.and_then(Value::as_f64),
            ) {
                (Some(b), Some(a)) => a < b,
                _ => false,
            },
        }
    }
}

impl KindDef {
    pub fn field_names(&self) -> impl Iterator<Item = &'static str> {
        self.fields.iter().map(|f| f.name)
    }

    pub fn has_field(&self, name: &str) -> bool {
        self.fields.iter().any(|f| f.name == name)
    }

    /// Whether `provider` accepts `name` for this kind.
    pub fn check_name(&self, provider: ProviderName, name: &str) -> Result<(), String> {
        self.names
            .iter()
            .filter(|(p, _)| *p == provider)
            .try_for_each(|(_, rule)| rule.check(provider, self.kind, name))
    }
}

/// The definition of `kind`.
pub fn def(kind: Kind) -> &'static KindDef {
    match kind {
        Kind::Network => &network::DEF,
        Kind::Subnet => &subnet::DEF,
        Kind::Firewall => &firewall::DEF,
        Kind::Instance => &instance::DEF,
        Kind::Volume => &volume::DEF,
    }
}

/// Whether changing `attr` of `kind` forces a replacement. The provider escape hatch is always
/// force-new (it may name anything).
pub fn is_force_new(kind: Kind, attr: &str) -> bool {
    def(kind).force_new.contains(&attr) || matches!(attr, "local" | "aws" | "gcp" | "azure")
}

/// Why changing `attr` of a `kind` resource on `provider` from `before` to `after` forces a
/// replacement, or `None` when the change is made in place. The planner asks this for every
/// attribute that changed.
pub fn force_new_reason(
    kind: Kind,
    provider: ProviderName,
    attr: &str,
    before: Option<&Value>,
    after: Option<&Value>,
) -> Option<String> {
    if is_force_new(kind, attr) {
        return Some(format!("`{attr}` forces replacement"));
    }
    def(kind)
        .provider_force_new
        .iter()
        .find(|r| r.provider == provider && r.attr == attr && r.when.applies(before, after))
        .map(|r| format!("`{attr}` forces replacement on {provider}: {}", r.why))
}

/// The kind-specific, typed part of a resource. Serialised untagged: a spec's JSON is the
/// resource's canonical attributes (what content hashes cover), so this shape is part of every
/// hash and every state row.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum Spec {
    Network(NetworkSpec),
    Subnet(SubnetSpec),
    Firewall(FirewallSpec),
    Instance(InstanceSpec),
    Volume(VolumeSpec),
}

impl Spec {
    pub fn kind(&self) -> Kind {
        match self {
            Spec::Network(_) => Kind::Network,
            Spec::Subnet(_) => Kind::Subnet,
            Spec::Firewall(_) => Kind::Firewall,
            Spec::Instance(_) => Kind::Instance,
            Spec::Volume(_) => Kind::Volume,
        }
    }

    /// The spec of a `kind` from its attributes (tags and escape hatches are ignored). Fails
    /// when an attribute is missing or mistyped, e.g. a reference left unresolved.
    pub fn from_attrs(kind: Kind, attrs: &Map<String, Value>) -> Result<Spec, String> {
        fn typed<T: for<'de> Deserialize<'de>>(
            attrs: &Map<String, Value>,
        ) -> serde_json::Result<T> {
            T::deserialize(attrs)
        }
        match kind {
            Kind::Network => typed(attrs).map(Spec::Network),
            Kind::Subnet => typed(attrs).map(Spec::Subnet),
            Kind::Firewall => typed(attrs).map(Spec::Firewall),
            Kind::Instance => typed(attrs).map(Spec::Instance),
            Kind::Volume => typed(attrs).map(Spec::Volume),
        }
        .map_err(|e| format!("the {kind} attributes do not match its spec: {e}"))
    }

    /// The canonical attributes (JSON object) of this spec.
    pub fn to_attrs(&self) -> Map<String, Value> {
        match serde_json::to_value(self) {
            Ok(Value::Object(m)) => m,
            _ => Map::new(),
        }
    }

    /// The provider-native type the catalog resolved (an instance type, a disk type).
    pub fn native_type(&self) -> Option<&str> {
        match self {
            Spec::Instance(i) => Some(&i.instance_type),
            Spec::Volume(v) => Some(&v.disk_type),
            _ => None,
        }
    }

    /// The resources this one refers to, as `(attribute, value)`: before references are
    /// resolved the values are placeholders, after they are cloud ids.
    pub fn references(&self) -> Vec<(&'static str, &str)> {
        match self {
            Spec::Network(_) => vec![],
            Spec::Subnet(s) => vec![("network", &s.network)],
            Spec::Firewall(f) => vec![("network", &f.network)],
            Spec::Instance(i) => std::iter::once(("subnet", i.subnet.as_str()))
                .chain(i.firewalls.iter().map(|f| ("firewalls", f.as_str())))
                .collect(),
            Spec::Volume(v) => v
                .instance
                .iter()
                .map(|i| ("instance", i.as_str()))
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs_round_trip_through_attributes() {
        let specs = [
            Spec::Network(NetworkSpec {
                cidr: "10.0.0.0/16".into(),
            }),
            Spec::Subnet(SubnetSpec {
                network: "vpc-1".into(),
                cidr: "10.0.1.0/24".into(),
                zone: "b".into(),
                public: true,
            }),
            Spec::Firewall(FirewallSpec {
                network: "vpc-1".into(),
                ingress: vec![Rule {
                    protocol: "tcp".into(),
                    from_port: Some(443),
                    to_port: Some(443),
                    cidrs: vec!["0.0.0.0/0".into()],
                    description: Some("https".into()),
                }],
                egress: vec![],
            }),
            Spec::Instance(InstanceSpec {
                size: Some("small".into()),
                cpu: None,
                memory_gib: None,
                instance_type: "t3.small".into(),
                image: "ubuntu-24.04".into(),
                image_ref: serde_json::json!({"owner": "099720109477", "name": "ubuntu*"}),
                subnet: "subnet-1".into(),
                firewalls: vec!["sg-1".into()],
                public_ip: false,
                user_data: Some("#!/bin/sh".into()),
            }),
            Spec::Volume(VolumeSpec {
                size_gib: 20,
                volume_type: "ssd".into(),
                disk_type: "gp3".into(),
                zone: "a".into(),
                encrypted: true,
                instance: None,
            }),
        ];
        for s in specs {
            let mut attrs = s.to_attrs();
            attrs.insert("tags".into(), serde_json::json!({"team": "a"}));
            attrs.insert("aws".into(), serde_json::json!({"ami": "ami-1"}));
            assert_eq!(Spec::from_attrs(s.kind(), &attrs).unwrap(), s);
        }
    }

    #[test]
    fn a_missing_attribute_is_an_error_not_a_default() {
        let e = Spec::from_attrs(Kind::Subnet, &Map::new()).unwrap_err();
        assert!(e.contains("subnet") && e.contains("network"), "{e}");
    }

    #[test]
    fn every_force_new_or_sensitive_attribute_is_an_attribute_of_the_kind() {
        let derived = ["instance_type", "image_ref", "disk_type"];
        for kind in Kind::ALL {
            let d = def(kind);
            assert_eq!(d.kind, kind);
            for a in d.force_new.iter().chain(d.sensitive) {
                assert!(
                    d.has_field(a) || derived.contains(a),
                    "{kind}: `{a}` is not an attribute"
                );
            }
        }
    }

    #[test]
    fn provider_force_new_rules_name_attributes_of_the_kind() {
        for kind in Kind::ALL {
            for r in def(kind).provider_force_new {
                assert!(
                    def(kind).has_field(r.attr) || r.attr == "tags",
                    "{kind}: `{}` is not an attribute",
                    r.attr
                );
            }
        }
    }

    #[test]
    fn a_change_one_provider_cannot_make_replaces_there_only() {
        let tags = |t: &str| serde_json::json!({ "team": t });
        let (a, b) = (tags("a"), tags("b"));
        let why = force_new_reason(Kind::Network, ProviderName::Gcp, "tags", Some(&a), Some(&b));
        assert!(why.is_some_and(|w| w.contains("on gcp")));
        for p in [ProviderName::Aws, ProviderName::Azure, ProviderName::Local] {
            assert_eq!(
                force_new_reason(Kind::Network, p, "tags", Some(&a), Some(&b)),
                None
            );
        }
        // Disks grow in place and are replaced to shrink, on every cloud; locally both in place.
        let (small, big) = (serde_json::json!(10), serde_json::json!(20));
        for p in [ProviderName::Aws, ProviderName::Gcp, ProviderName::Azure] {
            assert!(
                force_new_reason(Kind::Volume, p, "size_gib", Some(&big), Some(&small)).is_some()
            );
            assert_eq!(
                force_new_reason(Kind::Volume, p, "size_gib", Some(&small), Some(&big)),
                None
            );
        }
        assert_eq!(
            force_new_reason(
                Kind::Volume,
                ProviderName::Local,
                "size_gib",
                Some(&big),
                Some(&small)
            ),
            None
        );
        // The kind's own force-new holds everywhere.
        assert!(force_new_reason(Kind::Network, ProviderName::Local, "cidr", None, None).is_some());
    }

    #[test]
    fn names_follow_each_providers_rules() {
        let net = def(Kind::Network);
        assert!(net.check_name(ProviderName::Gcp, "main-net").is_ok());
        assert!(net.check_name(ProviderName::Gcp, "Main").is_err());
        assert!(net.check_name(ProviderName::Gcp, &"a".repeat(64)).is_err());
        assert!(net.check_name(ProviderName::Azure, "a").is_err());
        assert!(net.check_name(ProviderName::Azure, "ab").is_ok());
        assert!(net.check_name(ProviderName::Aws, "Main_Net.1").is_ok());
        let fw = def(Kind::Firewall);
        assert!(fw.check_name(ProviderName::Aws, "sg-web").is_err());
        assert!(fw.check_name(ProviderName::Aws, "web").is_ok());
        let vm = def(Kind::Instance);
        assert!(vm.check_name(ProviderName::Azure, &"a".repeat(65)).is_err());
        assert!(
            def(Kind::Subnet)
                .check_name(ProviderName::Azure, &"a".repeat(80))
                .is_ok()
        );
    }
}
