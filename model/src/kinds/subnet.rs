//! subnet: a block inside a network, in one zone.

use serde::{Deserialize, Serialize};

use super::{Field, ForceNewWhen, KindDef, NameRule, ProviderForceNew, name_rules};
use crate::{Kind, ProviderName};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SubnetSpec {
    pub network: String,
    pub cidr: String,
    pub zone: String,
    pub public: bool,
}

/// Azure subnets: 1-80; AWS: the Name tag, 256.
const NAMES: [(ProviderName, NameRule); 3] = name_rules((1, 80), 256, None);

pub static DEF: KindDef = KindDef {
    kind: Kind::Subnet,
    schema: "Subnet",
    fields: &[
        Field {
            name: "network",
            required: true,
            doc: "The network: a Network resource or its `outputs.id`.",
        },
        Field {
            name: "cidr",
            required: true,
            doc: "An IPv4 block inside the network's.",
        },
        Field {
            name: "zone",
            required: false,
            doc: "The zone within the region: \"a\", \"b\" or \"c\" (default \"a\").",
        },
        Field {
            name: "public",
            required: false,
            doc: "Whether instances get a public address by default (default false).",
        },
    ],
    outputs: &["id"],
    force_new: &["network", "cidr", "zone"],
    sensitive: &[],
    names: &NAMES,
    provider_force_new: &[ProviderForceNew {
        provider: ProviderName::Gcp,
        attr: "tags",
        when: ForceNewWhen::Changed,
        why: "GCP fixes a subnetwork's description, where Chimera keeps its tags, at creation",
    }],
};
