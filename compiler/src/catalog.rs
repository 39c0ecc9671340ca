//! The stdlib's dated catalog, as typed data for lowering: regions, sizes, images, instance and
//! volume types per provider. What they cost per native region is [`crate::prices`].

use std::collections::BTreeMap;

use chimera_model::ProviderName;

use crate::prices::prices;
use serde::Deserialize;
use serde_json::Value;

#[derive(Debug, Clone, Deserialize)]
pub struct InstanceType {
    pub cpu: f64,
    pub memory_gib: f64,
}

#[derive(Debug, Clone, Deserialize)]
pub struct DiskType {
    #[serde(rename = "type")]
    pub native: String,
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

    /// The cheapest instance type in `native_region` with at least `cpu` vCPUs and `memory_gib`
    /// GiB (ties: fewer vCPUs, less memory, then by name). Types without a price there rank
    /// after every priced one, so an unpriced region still gets the smallest type that fits.
    pub fn fit_instance_type(
        &self,
        p: ProviderName,
        native_region: &str,
        cpu: f64,
        memory_gib: f64,
    ) -> Option<&str> {
        let price = |ty: &str| prices().instance_hourly(p, native_region, ty);
        self.instance_types
            .get(p.as_str())?
            .iter()
            .filter(|(_, t)| t.cpu >= cpu && t.memory_gib >= memory_gib)
            .map(|(name, t)| (name, t, price(name)))
            .min_by(|a, b| {
                let key = |h: Option<f64>| (h.is_none(), h.unwrap_or(0.0));
                let ((an, ah), (bn, bh)) = (key(a.2), key(b.2));
                an.cmp(&bn)
                    .then(ah.total_cmp(&bh))
                    .then(a.1.cpu.total_cmp(&b.1.cpu))
                    .then(a.1.memory_gib.total_cmp(&b.1.memory_gib))
                    .then(a.0.cmp(b.0))
            })
            .map(|(name, _, _)| name.as_str())
    }

    pub fn image(&self, family: &str, p: ProviderName) -> Option<&Value> {
        self.images.get(family)?.get(p.as_str())
    }

    pub fn disk(&self, volume_type: &str, p: ProviderName) -> Option<&DiskType> {
        self.volume_types.get(volume_type)?.get(p.as_str())
    }
}
