//! network: an isolated IPv4 block (AWS VPC, GCP network, Azure virtual network).

use serde::{Deserialize, Serialize};

use super::{Field, ForceNewWhen, KindDef, NameRule, ProviderForceNew, name_rules};
use crate::{Kind, ProviderName};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NetworkSpec {
    pub cidr: String,
}

/// Virtual networks: 2-64; AWS: the Name tag, 256.
const NAMES: [(ProviderName, NameRule); 3] = name_rules((2, 64), 256, None);

pub static DEF: KindDef = KindDef {
    kind: Kind::Network,
    schema: "Network",
    fields: &[Field {
        name: "cidr",
        required: true,
        doc: "The network's IPv4 block, e.g. \"10.0.0.0/16\".",
    }],
    outputs: &["id"],
    force_new: &["cidr"],
    sensitive: &[],
    names: &NAMES,
    provider_force_new: &[ProviderForceNew {
        provider: ProviderName::Gcp,
        attr: "tags",
        when: ForceNewWhen::Changed,
        why: "GCP fixes a network's description, where Chimera keeps its tags, at creation",
    }],
};
