//! volume: a block disk in one zone, optionally attached to an instance.

use serde::{Deserialize, Serialize};

use super::{Field, ForceNewWhen, KindDef, NameRule, ProviderForceNew, name_rules};
use crate::{Kind, ProviderName};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VolumeSpec {
    pub size_gib: u32,
    /// The abstract type the user chose (`ssd`, `standard`).
    #[serde(rename = "type")]
    pub volume_type: String,
    /// The provider's disk type, resolved from the catalog.
    pub disk_type: String,
    pub zone: String,
    pub encrypted: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance: Option<String>,
}

/// Azure managed disks: 1-80; AWS: the Name tag, 256.
const NAMES: [(ProviderName, NameRule); 3] = name_rules((1, 80), 256, None);

pub static DEF: KindDef = KindDef {
    kind: Kind::Volume,
    schema: "Volume",
    fields: &[
        Field {
            name: "size_gib",
            required: true,
            doc: "Size in GiB, 1 to 16384.",
        },
        Field {
            name: "type",
            required: false,
            doc: "'ssd (default) or 'standard; the catalog maps it to the provider's disk type.",
        },
        Field {
            name: "zone",
            required: false,
            doc: "The zone within the region: \"a\", \"b\" or \"c\" (default \"a\").",
        },
        Field {
            name: "encrypted",
            required: false,
            doc: "Encrypted at rest (default true).",
        },
        Field {
            name: "instance",
            required: false,
            doc: "The instance to attach it to: an Instance resource or its `outputs.id`.",
        },
    ],
    outputs: &["id"],
    force_new: &["zone", "encrypted", "type", "disk_type"],
    sensitive: &[],
    names: &NAMES,
    provider_force_new: &[
        ProviderForceNew {
            provider: ProviderName::Aws,
            attr: "size_gib",
            when: ForceNewWhen::Shrinks,
            why: "EBS volumes only grow",
        },
        ProviderForceNew {
            provider: ProviderName::Gcp,
            attr: "size_gib",
            when: ForceNewWhen::Shrinks,
            why: "persistent disks only grow",
        },
        ProviderForceNew {
            provider: ProviderName::Azure,
            attr: "size_gib",
            when: ForceNewWhen::Shrinks,
            why: "managed disks only grow",
        },
    ],
};
