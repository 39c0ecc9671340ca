//! What a plan costs: each resource's monthly list price before and after, the totals and the
//! delta, as Infracost shows them, priced from the dated catalog (`chimera_model::prices`).
//!
//! A resource is priced from its attributes in its provider's native region, before from the
//! state row, after from the desired attributes, so both sides use today's catalog and the
//! delta is what the change does, not what prices did. A type the catalog lacks is *unpriced*:
//! named, and left out of the totals, never counted as free. `local` is free (simulated) and is
//! shown apart, so it never hides what a cloud costs.

use std::collections::BTreeMap;

use chimera_model::prices::prices;
use chimera_model::{Address, Kind, ProviderName};
use serde::Serialize;
use serde_json::{Map, Value};

use crate::plan::{Action, Plan, ResourceChange};

/// One resource's monthly price, before and after the plan. A side where the resource does not
/// exist costs 0; `None` is a side the catalog cannot price.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ResourceCost {
    pub address: Address,
    pub action: Action,
    pub provider: ProviderName,
    pub region: String,
    pub native_region: String,
    /// The instance or disk type priced after the plan (before it, for a delete), if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub native_type: Option<String>,
    /// The type state records, when it differs from `native_type`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub native_type_before: Option<String>,
    pub monthly_before: Option<f64>,
    pub monthly_after: Option<f64>,
}

impl ResourceCost {
    /// After minus before, when both sides are priced.
    pub fn delta(&self) -> Option<f64> {
        Some(self.monthly_after? - self.monthly_before?)
    }

    fn unpriced(&self) -> bool {
        self.monthly_before.is_none() || self.monthly_after.is_none()
    }

    /// The type the catalog could not price: `aws x9.mega in us-east-1`.
    pub fn unpriced_type(&self) -> String {
        let ty = if self.monthly_before.is_none() {
            self.native_type_before.as_ref().or(self.native_type.as_ref())
        } else {
            self.native_type.as_ref()
        };
        format!(
            "{} {} in {}",
            self.provider,
            ty.map(String::as_str).unwrap_or("?"),
            self.native_region
        )
    }
}

/// Totals of one group (a provider, a kind, a region).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Subtotal {
    pub resources: usize,
    pub monthly_before: f64,
    pub monthly_after: f64,
}

/// What a plan (or a stack, with nothing before) costs per month.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PlanCost {
    pub currency: String,
    /// Sums over priced resources.
    pub monthly_before: f64,
    pub monthly_after: f64,
    pub delta: f64,
    /// `None` when nothing was paid before (any increase from 0 is infinite).
    pub delta_percent: Option<f64>,
    /// Resources the catalog cannot price (left out of the totals).
    pub unpriced: Vec<Address>,
    pub by_provider: BTreeMap<ProviderName, Subtotal>,
    /// Every resource of the plan, no-ops included, in address order.
    #[serde(skip)]
    pub resources: Vec<ResourceCost>,
}

fn text_attr<'a>(attrs: &'a Map<String, Value>, key: &str) -> Option<&'a str> {
    attrs.get(key).and_then(Value::as_str)
}

fn native_type(kind: Kind, attrs: &Map<String, Value>) -> Option<String> {
    match kind {
        Kind::Instance => text_attr(attrs, "instance_type").map(str::to_string),
        Kind::Volume => text_attr(attrs, "disk_type").map(str::to_string),
        _ => None,
    }
}

/// The cost of one change.
pub fn resource_cost(c: &ResourceChange) -> Option<ResourceCost> {
    let kind = c.address.kind;
    let before = c.prior.as_ref().filter(|_| c.action != Action::Create);
    let after = c.desired.as_ref().filter(|_| c.action != Action::Delete);
    let (provider, region, native_region, attrs) = match (after, before) {
        (Some(d), _) => (d.provider, &d.region, &d.native_region, &d.attrs),
        (None, Some(p)) => (p.provider, &p.region, &p.native_region, &p.attrs),
        (None, None) => return None,
    };
    let price = prices();
    let ty = native_type(kind, attrs);
    let ty_before = before
        .and_then(|p| native_type(kind, &p.attrs))
        .filter(|b| Some(b) != ty.as_ref());
    Some(ResourceCost {
        address: c.address.clone(),
        action: c.action,
        provider,
        region: region.clone(),
        native_region: native_region.clone(),
        native_type: ty,
        native_type_before: ty_before,
        monthly_before: match before {
            Some(p) => price.monthly_attrs(p.provider, &p.native_region, kind, &p.attrs),
            None => Some(0.0),
        },
        monthly_after: match after {
            Some(d) => price.monthly_attrs(d.provider, &d.native_region, kind, &d.attrs),
            None => Some(0.0),
        },
    })
}

impl PlanCost {
    /// Totals over `resources`.
    pub fn of(resources: Vec<ResourceCost>) -> PlanCost {
        let mut cost = PlanCost {
            currency: prices().currency().to_string(),
            monthly_before: 0.0,
            monthly_after: 0.0,
            delta: 0.0,
            delta_percent: None,
            unpriced: Vec::new(),
            by_provider: BTreeMap::new(),
            resources: Vec::new(),
        };
        for r in &resources {
            let sub = cost.by_provider.entry(r.provider).or_default();
            sub.resources += 1;
            if r.unpriced() {
                cost.unpriced.push(r.address.clone());
                continue;
            }
            let (b, a) = (
                r.monthly_before.unwrap_or(0.0),
                r.monthly_after.unwrap_or(0.0),
            );
            sub.monthly_before += b;
            sub.monthly_after += a;
            cost.monthly_before += b;
            cost.monthly_after += a;
        }
        cost.delta = cost.monthly_after - cost.monthly_before;
        cost.delta_percent =
            (cost.monthly_before > 0.0).then(|| cost.delta / cost.monthly_before * 100.0);
        cost.resources = resources;
        cost
    }

    /// The resources whose price changes (or cannot be known), for tables.
    pub fn changed(&self) -> impl Iterator<Item = &ResourceCost> {
        self.resources.iter().filter(|r| {
            r.action != Action::NoOp && (r.unpriced() || r.delta().is_some_and(|d| d != 0.0))
        })
    }

    /// Sums after the plan grouped by `key` (kind, provider, region…), largest first.
    pub fn breakdown(&self, key: impl Fn(&ResourceCost) -> String) -> Vec<(String, Subtotal)> {
        let mut groups: BTreeMap<String, Subtotal> = BTreeMap::new();
        for r in &self.resources {
            let sub = groups.entry(key(r)).or_default();
            sub.resources += 1;
            sub.monthly_before += r.monthly_before.unwrap_or(0.0);
            sub.monthly_after += r.monthly_after.unwrap_or(0.0);
        }
        let mut v: Vec<(String, Subtotal)> = groups.into_iter().collect();
        v.sort_by(|a, b| b.1.monthly_after.total_cmp(&a.1.monthly_after));
        v
    }

    /// The cost as the plan JSON's `cost` member (docs/json.md).
    pub fn to_json(&self) -> Value {
        serde_json::json!({
            "currency": self.currency,
            "monthly_before": cents(self.monthly_before),
            "monthly_after": cents(self.monthly_after),
            "delta": cents(self.delta),
            "delta_percent": self.delta_percent.map(|p| (p * 10.0).round() / 10.0),
            "unpriced": self.unpriced,
            "by_provider": self.by_provider.iter().map(|(p, s)| (p.to_string(), serde_json::json!({
                "resources": s.resources,
                "monthly_before": cents(s.monthly_before),
                "monthly_after": cents(s.monthly_after),
            }))).collect::<Map<String, Value>>(),
        })
    }
}

/// The plan's cost: every resource in it, no-ops included (they count in the totals).
pub fn plan_cost(plan: &Plan) -> PlanCost {
    PlanCost::of(plan.changes.iter().filter_map(resource_cost).collect())
}

/// Rounded to cents, for documents.
pub fn cents(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

/// `$1,234.56`, `-$3.10`.
pub fn money(x: f64) -> String {
    let sign = if x < -0.004 { "-" } else { "" };
    let cents_total = (x.abs() * 100.0).round() as u64;
    let (whole, frac) = (cents_total / 100, cents_total % 100);
    let digits = whole.to_string();
    let mut grouped = String::new();
    for (i, ch) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            grouped.push(',');
        }
        grouped.push(ch);
    }
    format!("{sign}${grouped}.{frac:02}")
}

/// `+$3.10`, `-$3.10`, `$0.00`.
pub fn signed_money(x: f64) -> String {
    if x > 0.004 {
        format!("+{}", money(x))
    } else {
        money(x)
    }
}

/// `(+12.5%)`, or nothing when there was nothing before.
pub fn percent(p: Option<f64>) -> String {
    match p {
        Some(p) if p >= 0.0 => format!(" (+{p:.1}%)"),
        Some(p) => format!(" ({p:.1}%)"),
        None => String::new(),
    }
}

/// A price or `unpriced`.
pub fn price_text(x: Option<f64>) -> String {
    x.map(money).unwrap_or_else(|| "unpriced".into())
}

/// What a compiled stack costs per month once applied (every resource as a no-op: before and
/// after are its desired price), for `chimera cost`.
pub fn graph_cost(graph: &chimera_model::graph::Graph) -> PlanCost {
    let price = prices();
    PlanCost::of(
        graph
            .resources
            .iter()
            .map(|r| {
                let m = price.monthly_attrs(r.provider, &r.native_region, r.address.kind, &r.attrs);
                ResourceCost {
                    address: r.address.clone(),
                    action: Action::NoOp,
                    provider: r.provider,
                    region: r.region.clone(),
                    native_region: r.native_region.clone(),
                    native_type: native_type(r.address.kind, &r.attrs),
                    native_type_before: None,
                    monthly_before: m,
                    monthly_after: m,
                }
            })
            .collect(),
    )
}
