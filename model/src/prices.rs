//! The dated price catalog: list prices per provider × native region, from `stdlib/prices.json`
//! (embedded, parsed once, never fetched: compiling works offline). `scripts/refresh-prices.py`
//! regenerates the file from the providers' price APIs; docs/cost.md says how.
//!
//! The stdlib's `catalog.ncl` says what exists (regions, instance types with their vCPUs and
//! memory, disk types); this module says what it costs where. A price the file lacks is `None`
//! ("unpriced"), never 0. Nothing is rounded here; callers round for display.

use std::collections::BTreeMap;
use std::sync::LazyLock;

use crate::ProviderName;
use crate::kinds::Spec;
use crate::Kind;
use serde_json::{Map, Value};
use serde::Deserialize;

/// Hours in a billing month, as cloud price lists count them.
pub const HOURS_PER_MONTH: f64 = 730.0;

/// The price data as committed: `stdlib/prices.json`.
pub const JSON: &str = include_str!("../../stdlib/prices.json");

/// Where one provider's prices come from, and when they were taken.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PriceSource {
    pub provider: ProviderName,
    /// The price API or offer files the data was taken from.
    pub source: String,
    pub url: String,
    /// The date (YYYY-MM-DD) the prices reflect.
    pub retrieved: String,
    /// How the snapshot was made, and what to know when reading it.
    pub note: String,
}

/// List prices per provider and native region.
#[derive(Debug, Clone)]
pub struct Prices {
    currency: String,
    providers: BTreeMap<ProviderName, ProviderPrices>,
}

#[derive(Debug, Clone)]
struct ProviderPrices {
    source: PriceSource,
    regions: BTreeMap<String, RegionPrices>,
}

/// One native region's prices. `None` is a name the file lists without a price yet.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RegionPrices {
    /// Instance type → USD per hour (on-demand, Linux).
    #[serde(default)]
    instances: BTreeMap<String, Option<f64>>,
    /// Native disk type → USD per GiB-month.
    #[serde(default)]
    disks: BTreeMap<String, Option<f64>>,
}

#[derive(Deserialize)]
struct FileDoc {
    currency: String,
    hours_per_month: f64,
    providers: BTreeMap<ProviderName, ProviderDoc>,
}

#[derive(Deserialize)]
struct ProviderDoc {
    source: String,
    url: String,
    retrieved: String,
    note: String,
    regions: BTreeMap<String, RegionPrices>,
    // Other fields (e.g. gcp's `billing` shapes) are the refresh script's business.
}

/// The embedded prices, parsed on first use.
pub fn prices() -> &'static Prices {
    static PRICES: LazyLock<Prices> = LazyLock::new(|| {
        // The file is embedded at build time and `compiler/tests/prices.rs` parses it, so this
        // cannot fail in a tested build.
        Prices::from_json(JSON).unwrap_or_else(|e| panic!("stdlib/prices.json: {e}"))
    });
    &PRICES
}

impl Prices {
    /// Parses a price file of `stdlib/prices.json`'s shape (e.g. one the refresh script wrote).
    pub fn from_json(text: &str) -> Result<Prices, String> {
        let doc: FileDoc = serde_json::from_str(text).map_err(|e| e.to_string())?;
        if doc.hours_per_month != HOURS_PER_MONTH {
            return Err(format!(
                "hours_per_month is {}, the compiler counts {HOURS_PER_MONTH}",
                doc.hours_per_month
            ));
        }
        let providers = doc
            .providers
            .into_iter()
            .map(|(provider, p)| {
                let source = PriceSource {
                    provider,
                    source: p.source,
                    url: p.url,
                    retrieved: p.retrieved,
                    note: p.note,
                };
                (
                    provider,
                    ProviderPrices {
                        source,
                        regions: p.regions,
                    },
                )
            })
            .collect();
        Ok(Prices {
            currency: doc.currency,
            providers,
        })
    }

    pub fn currency(&self) -> &str {
        &self.currency
    }

    fn region(&self, p: ProviderName, native_region: &str) -> Option<&RegionPrices> {
        self.providers.get(&p)?.regions.get(native_region)
    }

    /// On-demand Linux USD per hour; `local` is free everywhere.
    pub fn instance_hourly(
        &self,
        p: ProviderName,
        native_region: &str,
        instance_type: &str,
    ) -> Option<f64> {
        if p == ProviderName::Local {
            return Some(0.0);
        }
        *self
            .region(p, native_region)?
            .instances
            .get(instance_type)?
    }

    /// USD per GiB-month of a native disk type; `local` is free everywhere.
    pub fn disk_gib_month(
        &self,
        p: ProviderName,
        native_region: &str,
        disk_type: &str,
    ) -> Option<f64> {
        if p == ProviderName::Local {
            return Some(0.0);
        }
        *self.region(p, native_region)?.disks.get(disk_type)?
    }

    /// Monthly list price of one resource: instances hourly × 730; volumes gib_month × size_gib;
    /// networks, subnets and firewalls Some(0.0) (free on every cloud); everything on `local`
    /// Some(0.0). None when the catalog has no price for that type in that region (shown as
    /// "unpriced", never as 0).
    pub fn monthly(&self, p: ProviderName, native_region: &str, spec: &Spec) -> Option<f64> {
        if p == ProviderName::Local {
            return Some(0.0);
        }
        match spec {
            Spec::Network(_) | Spec::Subnet(_) | Spec::Firewall(_) => Some(0.0),
            Spec::Instance(i) => self
                .instance_hourly(p, native_region, &i.instance_type)
                .map(|h| h * HOURS_PER_MONTH),
            Spec::Volume(v) => self
                .disk_gib_month(p, native_region, &v.disk_type)
                .map(|g| g * f64::from(v.size_gib)),
        }
    }

    /// [`Prices::monthly`] of a resource given by its attributes as state records them (where a
    /// sensitive value is a digest, so the typed spec may not rebuild): instances by
    /// `instance_type`, volumes by `disk_type` and `size_gib`.
    pub fn monthly_attrs(
        &self,
        p: ProviderName,
        native_region: &str,
        kind: Kind,
        attrs: &Map<String, Value>,
    ) -> Option<f64> {
        if p == ProviderName::Local {
            return Some(0.0);
        }
        let text = |k: &str| attrs.get(k).and_then(Value::as_str);
        match kind {
            Kind::Network | Kind::Subnet | Kind::Firewall => Some(0.0),
            Kind::Instance => self
                .instance_hourly(p, native_region, text("instance_type")?)
                .map(|h| h * HOURS_PER_MONTH),
            Kind::Volume => {
                let size = attrs.get("size_gib").and_then(Value::as_f64)?;
                self.disk_gib_month(p, native_region, text("disk_type")?)
                    .map(|g| g * size)
            }
        }
    }

    /// Where `p`'s prices come from; None for `local` (free, no source) or a provider the file
    /// lacks.
    pub fn source(&self, p: ProviderName) -> Option<&PriceSource> {
        self.providers.get(&p).map(|pp| &pp.source)
    }

    /// Every provider's source, in provider order.
    pub fn sources(&self) -> impl Iterator<Item = &PriceSource> {
        self.providers.values().map(|pp| &pp.source)
    }

    /// The native regions the file prices for `p`, sorted.
    pub fn regions(&self, p: ProviderName) -> impl Iterator<Item = &str> {
        self.providers
            .get(&p)
            .into_iter()
            .flat_map(|pp| pp.regions.keys().map(String::as_str))
    }
}
