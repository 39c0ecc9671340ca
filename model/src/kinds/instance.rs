//! instance: a virtual machine in a subnet.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{Field, ForceNewWhen, KindDef, NameRule, ProviderForceNew, name_rules};
use crate::{Kind, ProviderName};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InstanceSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_gib: Option<f64>,
    /// Resolved from the catalog for the provider.
    pub instance_type: String,
    pub image: String,
    /// Provider-native image reference from the catalog.
    pub image_ref: Value,
    pub subnet: String,
    pub firewalls: Vec<String>,
    pub public_ip: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_data: Option<String>,
}

/// Azure Linux virtual machines: 1-64; AWS: the Name tag, 256.
const NAMES: [(ProviderName, NameRule); 3] = name_rules((1, 64), 256, None);

pub static DEF: KindDef = KindDef {
    kind: Kind::Instance,
    schema: "Instance",
    fields: &[
        Field {
            name: "size",
            required: false,
            doc: "An abstract size from `catalog.sizes` ('small, …), or give `cpu` and `memory_gib`.",
        },
        Field {
            name: "cpu",
            required: false,
            doc: "vCPUs (with `memory_gib`): the cheapest type that fits is chosen.",
        },
        Field {
            name: "memory_gib",
            required: false,
            doc: "Memory in GiB (with `cpu`).",
        },
        Field {
            name: "image",
            required: false,
            doc: "An image family from `catalog.images` (default \"ubuntu-24.04\").",
        },
        Field {
            name: "subnet",
            required: true,
            doc: "The subnet: a Subnet resource or its `outputs.id`.",
        },
        Field {
            name: "firewalls",
            required: false,
            doc: "Firewall resources (or their ids) applied to the instance.",
        },
        Field {
            name: "public_ip",
            required: false,
            doc: "Whether the instance gets a public address (default false).",
        },
        Field {
            name: "user_data",
            required: false,
            doc: "Boot script or cloud-init; always sensitive.",
        },
    ],
    outputs: &["id", "private_ip", "public_ip"],
    force_new: &["image", "image_ref", "subnet", "user_data"],
    sensitive: &["user_data"],
    names: &NAMES,
    provider_force_new: &[
        ProviderForceNew {
            provider: ProviderName::Aws,
            attr: "public_ip",
            when: ForceNewWhen::Changed,
            why: "EC2 assigns an instance's public address at launch",
        },
        ProviderForceNew {
            provider: ProviderName::Gcp,
            attr: "public_ip",
            when: ForceNewWhen::Changed,
            why: "Chimera gives a GCP instance its external address at creation",
        },
    ],
};
