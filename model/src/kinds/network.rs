//! network: an isolated IPv4 block (AWS VPC, GCP network, Azure virtual network).

use serde::{Deserialize, Serialize};

use super::{Field, KindDef, NameRule};
use crate::{Kind, ProviderName};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NetworkSpec {
    pub cidr: String,
}

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
    names: &[
        (ProviderName::Gcp, NameRule::Rfc1035 { max: 63 }),
        // Virtual networks: 2-64.
        (ProviderName::Azure, NameRule::Azure { min: 2, max: 64 }),
        // The Name tag: 256 characters.
        (
            ProviderName::Aws,
            NameRule::Length {
                max: 256,
                reserved: None,
            },
        ),
    ],
};
