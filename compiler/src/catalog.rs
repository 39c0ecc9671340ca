//! The stdlib's dated catalog, as typed data for lowering: regions, sizes, images, volume types
//! and prices per provider.

use std::collections::BTreeMap;

use chimera_model::ProviderName;
use serde::Deserialize;
use serde_json::Value;

#[derive(Debug, Clone, Deserialize)]
pub struct InstanceType {
    pub cpu: f64,
    pub memory_gib: f64,
    pub hourly: f64,
}

#[derive(Debug, Clone, Deserialize)]
pub struct DiskType {
    #[serde(rename = "type")]
    pub native: String,
    pub gib_month: f64,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Catalog {
    pub date: String,
    pub regions: BTreeMap<String, BTreeMap<String, String>>,
    pub instance_types: BTreeMap<String, BTreeMap<String, InstanceType>>,
    pub sizes: BTreeMap<String, BTreeMap<String, String>>,
    pub images: BTreeMap<String, BTreeMap<String, Value>>,
    pub volume_types: BTreeMap<String, BTreeMap<String, DiskType>>,
}

/// Hours in a billing month; defined with the prices.
pub use crate::prices::HOURS_PER_MONTH;

impl Catalog {
    pub fn native_region(&self, region: &str, p: ProviderName) -> Option<&str> {
        self.regions
            .get(region)?
            .get(p.as_str())
            .map(String::as_str)
    }

    pub fn providers_for_region(&self, region: &str) -> Vec<&str> {
        self.regions
            .get(region)
            .map(|m| m.keys().map(String::as_str).collect())
            .unwrap_or_default()
    }

    pub fn size_type(&self, size: &str, p: ProviderName) -> Option<&str> {
        self.sizes.get(size)?.get(p.as_str()).map(String::as_str)
    }

    pub fn instance_type(&self, p: ProviderName, ty: &str) -> Option<&InstanceType> {
        self.instance_types.get(p.as_str())?.get(ty)
    }

    /// The cheapest instance type with at least `cpu` vCPUs and `memory_gib` GiB.
    pub fn fit_instance_type(&self, p: ProviderName, cpu: f64, memory_gib: f64) -> Option<&str> {
        self.instance_types
            .get(p.as_str())?
            .iter()
            .filter(|(_, t)| t.cpu >= cpu && t.memory_gib >= memory_gib)
            .min_by(|a, b| {
                a.1.hourly
                    .total_cmp(&b.1.hourly)
                    .then(a.1.cpu.total_cmp(&b.1.cpu))
                    .then(a.1.memory_gib.total_cmp(&b.1.memory_gib))
                    .then(a.0.cmp(b.0))
            })
            .map(|(name, _)| name.as_str())
    }

    pub fn image(&self, family: &str, p: ProviderName) -> Option<&Value> {
        self.images.get(family)?.get(p.as_str())
    }

    pub fn disk(&self, volume_type: &str, p: ProviderName) -> Option<&DiskType> {
        self.volume_types.get(volume_type)?.get(p.as_str())
    }
}
