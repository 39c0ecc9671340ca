//! Lowering: evaluated resources → typed, validated, provider-resolved resources.
//!
//! Every check here reports a diagnostic pointing at the offending value's source span; lowering
//! never stops at the first problem, so one run shows them all.

use chimera_model::codes;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::Ipv4Addr;

use chimera_model::graph::{Candidate, Placement};
use chimera_model::{Address, Diagnostic, Kind, Location, ProviderName, Ref, SourceMap, Span};
use serde_json::{Map, Value};

use crate::catalog::Catalog;
use crate::eval::RawResource;
use crate::prices::{HOURS_PER_MONTH, prices};

pub use chimera_model::graph::Lifecycle;
pub use chimera_model::kinds::{
    FirewallSpec, InstanceSpec, NetworkSpec, Rule, Spec, SubnetSpec, VolumeSpec, def,
};

/// A lowered resource (before graph construction assigns dependencies and hashes).
#[derive(Debug, Clone)]
pub struct Lowered {
    pub address: Address,
    pub provider: ProviderName,
    pub region: String,
    pub native_region: String,
    pub tags: BTreeMap<String, String>,
    pub lifecycle: Lifecycle,
    pub sensitive: BTreeSet<String>,
    /// The provider escape hatch for the resolved provider, passed through unchanged.
    pub native: Map<String, Value>,
    pub spec: Spec,
    /// Estimated monthly list price (USD) from the catalog.
    pub monthly_cost: f64,
    pub name_span: Option<Span>,
    pub field_spans: std::sync::Arc<[(String, Span)]>,
}

impl Lowered {
    /// Where `field` was written, or the resource's name when the field has no span.
    pub fn location(&self, field: &str, sources: &SourceMap) -> Option<Location> {
        self.field_spans
            .iter()
            .find(|(f, _)| f == field)
            .map(|(_, s)| *s)
            .or(self.name_span)
            .and_then(|s| sources.locate(s))
    }
}

const COMMON_FIELDS: &[&str] = &[
    "kind",
    "name",
    "provider",
    "region",
    "tags",
    "lifecycle",
    "sensitive",
    "local",
    "aws",
    "gcp",
    "azure",
];

/// Longest string accepted in any attribute.
pub const MAX_STRING: usize = 64 * 1024;

struct Ctx<'a> {
    raw: &'a RawResource,
    sources: &'a SourceMap,
    address: String,
    diags: &'a mut Vec<Diagnostic>,
}

impl Ctx<'_> {
    fn loc(&self, field: &str) -> Option<Location> {
        self.raw
            .field_span(field)
            .or_else(|| self.raw.field_span("name"))
            .or(self.raw.span)
            .and_then(|s| self.sources.locate(s))
    }

    fn err(&mut self, code: chimera_model::Code, field: &str, summary: &str, detail: String) {
        let d = Diagnostic::error(code, summary)
            .detail(detail)
            .address(&self.address)
            .at(self.loc(field));
        self.diags.push(d);
    }

    /// A required field has no value; `how` ends the detail (default: "add `field = ...`").
    fn missing(&mut self, field: &str, how: &str) {
        let how = if how.is_empty() {
            format!("; add `{field} = ...`")
        } else {
            how.to_string()
        };
        let detail = format!("`{field}` is required on {}{how}", self.address);
        self.err(
            codes::INVALID_FIELD,
            field,
            "missing required field",
            detail,
        );
    }

    fn get(&self, field: &str) -> Option<&Value> {
        self.raw.fields.get(field).filter(|v| !v.is_null())
    }

    fn string(&mut self, field: &str, required: bool) -> Option<String> {
        match self.get(field) {
            None if required => {
                self.missing(field, "");
                None
            }
            None => None,
            Some(Value::String(s)) => {
                if s.len() > MAX_STRING {
                    self.err(
                        codes::TOO_LARGE,
                        field,
                        "value too large",
                        format!(
                            "`{field}` is {} bytes; attributes are limited to {} KiB. Store large content elsewhere and reference it",
                            s.len(),
                            MAX_STRING / 1024
                        ),
                    );
                    return None;
                }
                Some(s.clone())
            }
            Some(other) => {
                let got = type_name(other);
                self.err(
                    codes::INVALID_FIELD,
                    field,
                    "wrong type",
                    format!("`{field}` must be a string, got {got}"),
                );
                None
            }
        }
    }

    fn boolean(&mut self, field: &str, default: bool) -> bool {
        match self.get(field) {
            None => default,
            Some(Value::Bool(b)) => *b,
            Some(other) => {
                let got = type_name(other);
                self.err(
                    codes::INVALID_FIELD,
                    field,
                    "wrong type",
                    format!("`{field}` must be true or false, got {got}"),
                );
                default
            }
        }
    }

    fn integer(&mut self, field: &str, lo: i64, hi: i64, required: bool) -> Option<i64> {
        match self.get(field) {
            None if required => {
                self.missing(field, "");
                None
            }
            None => None,
            Some(v) => check_integer(v, lo, hi)
                .map_err(|m| {
                    self.err(
                        codes::INVALID_FIELD,
                        field,
                        "value out of range",
                        format!("`{field}` {m}"),
                    );
                })
                .ok(),
        }
    }

    fn one_of(&mut self, field: &str, options: &[&str], default: &str) -> String {
        match self.get(field) {
            None => default.to_string(),
            Some(Value::String(s)) if options.contains(&s.as_str()) => s.clone(),
            Some(v) => {
                let shown = show(v);
                let list = options
                    .iter()
                    .map(|o| format!("'{o}"))
                    .collect::<Vec<_>>()
                    .join(", ");
                self.err(
                    codes::INVALID_FIELD,
                    field,
                    "unknown value",
                    format!("`{field}` is {shown}; expected one of {list}"),
                );
                default.to_string()
            }
        }
    }

    /// A reference to a resource of `kind` (a placeholder string).
    fn reference(&mut self, field: &str, kind: Kind, required: bool) -> Option<String> {
        let v = self.get(field).cloned();
        match v {
            None if required => {
                self.missing(
                    field,
                    &format!("; pass the {kind} resource or its `outputs.id`"),
                );
                None
            }
            None => None,
            Some(v) => self.reference_value(field, &v, kind),
        }
    }

    fn reference_value(&mut self, field: &str, v: &Value, kind: Kind) -> Option<String> {
        match v.as_str().and_then(Ref::parse_exact) {
            Some(Ok(r)) if r.kind == kind => Some(v.as_str()?.to_string()),
            Some(Ok(r)) => {
                self.err(
                    codes::BAD_REFERENCE,
                    field,
                    "reference to the wrong kind",
                    format!(
                        "`{field}` must reference a {kind}, but references {}",
                        r.address()
                    ),
                );
                None
            }
            Some(Err(e)) => {
                self.err(codes::BAD_REFERENCE, field, "malformed reference", e);
                None
            }
            None => {
                let shown = show(v);
                self.err(
                    codes::INVALID_FIELD,
                    field,
                    "expected a reference",
                    format!(
                        "`{field}` must reference a {kind} (pass the resource, or `my_{kind}.outputs.id`), got {shown}"
                    ),
                );
                None
            }
        }
    }

    fn cidr(&mut self, field: &str, required: bool) -> Option<String> {
        let s = self.string(field, required)?;
        if Ref::parse_exact(&s).is_some() {
            return Some(s);
        }
        match parse_cidr(&s) {
            Ok((addr, prefix)) => {
                let net = network_of(addr, prefix);
                if net != addr {
                    self.err(
                        codes::INVALID_CIDR,
                        field,
                        "CIDR block has host bits set",
                        format!("`{s}` is not a network address; did you mean \"{net}/{prefix}\"?"),
                    );
                    return None;
                }
                Some(s)
            }
            Err(m) => {
                self.err(codes::INVALID_CIDR, field, "invalid CIDR block", m);
                None
            }
        }
    }
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "a record",
    }
}

fn show(v: &Value) -> String {
    match v {
        Value::String(s) if s.len() <= 64 => format!("\"{s}\""),
        Value::Number(n) => n.to_string(),
        Value::Bool(b) => b.to_string(),
        other => type_name(other).to_string(),
    }
}

fn check_integer(v: &Value, lo: i64, hi: i64) -> Result<i64, String> {
    let Some(f) = v.as_f64() else {
        return Err(format!(
            "must be a whole number between {lo} and {hi}, got {}",
            show(v)
        ));
    };
    if f.fract() != 0.0 {
        return Err(format!(
            "must be a whole number between {lo} and {hi}, got {f}"
        ));
    }
    if f < lo as f64 || f > hi as f64 {
        return Err(format!("must be between {lo} and {hi}, got {}", show(v)));
    }
    Ok(f as i64)
}

pub fn parse_cidr(s: &str) -> Result<(Ipv4Addr, u8), String> {
    let hint = "expected an IPv4 block such as \"10.0.0.0/16\" (four octets 0-255, prefix 0-32)";
    let (addr, prefix) = s
        .split_once('/')
        .ok_or_else(|| format!("`{s}` has no `/prefix`; {hint}"))?;
    let addr: Ipv4Addr = addr
        .parse()
        .map_err(|_| format!("`{s}` is not a valid IPv4 address; {hint}"))?;
    let prefix: u8 = prefix
        .parse()
        .ok()
        .filter(|p| *p <= 32)
        .ok_or_else(|| format!("`{s}` has an invalid prefix; {hint}"))?;
    Ok((addr, prefix))
}

fn mask(prefix: u8) -> u32 {
    if prefix == 0 {
        0
    } else {
        u32::MAX << (32 - prefix)
    }
}

fn network_of(addr: Ipv4Addr, prefix: u8) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(addr) & mask(prefix))
}

/// `inner` lies inside `outer`.
pub fn cidr_within(inner: (Ipv4Addr, u8), outer: (Ipv4Addr, u8)) -> bool {
    inner.1 >= outer.1
        && (u32::from(inner.0) & mask(outer.1)) == (u32::from(outer.0) & mask(outer.1))
}

fn cidrs_overlap(a: (Ipv4Addr, u8), b: (Ipv4Addr, u8)) -> bool {
    cidr_within(a, b) || cidr_within(b, a)
}

fn generic_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 128
        && name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "invalid name \"{}\": use 1-128 letters, digits, `-`, `_` and `.`, starting with a letter or digit",
            name.chars().take(64).collect::<String>()
        ))
    }
}

fn valid_tag_key(k: &str) -> bool {
    !k.is_empty()
        && k.len() <= 128
        && k.chars()
            .all(|c| c.is_ascii_alphanumeric() || " _.:/=+-@".contains(c))
}

/// The provider a resource asked for, before `'cheapest` is resolved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PlacementRequest {
    Fixed(ProviderName),
    Cheapest,
}

/// First pass: kind, name and placement of every resource, and unknown fields.
pub struct Header {
    pub kind: Kind,
    pub name: String,
    pub placement: PlacementRequest,
}

pub fn header(
    raw: &RawResource,
    sources: &SourceMap,
    diags: &mut Vec<Diagnostic>,
) -> Option<Header> {
    let loc = |field: &str| {
        raw.field_span(field)
            .or(raw.span)
            .and_then(|s| sources.locate(s))
    };
    let kind = match raw.fields.get("kind") {
        Some(Value::String(k)) => match k.parse::<Kind>() {
            Ok(k) => k,
            Err(_) => {
                diags.push(
                    Diagnostic::error(codes::UNKNOWN_KIND, "unknown resource kind")
                        .detail(format!(
                            "kind \"{k}\" is not one of network, subnet, firewall, instance, volume; build resources from the stdlib schemas, e.g. `c.Instance & {{ ... }}`"
                        ))
                        .at(loc("kind")),
                );
                return None;
            }
        },
        _ => {
            diags.push(
                Diagnostic::error(codes::UNKNOWN_KIND, "resource without a kind")
                    .detail("this record has no `kind`; build resources from the stdlib schemas, e.g. `c.Network & { name = \"main\", cidr = \"10.0.0.0/16\" }`")
                    .at(loc("kind")),
            );
            return None;
        }
    };
    let name = match raw.fields.get("name") {
        Some(Value::String(n)) => n.clone(),
        Some(other) => {
            diags.push(
                Diagnostic::error(codes::INVALID_FIELD, "wrong type")
                    .detail(format!("`name` must be a string, got {}", type_name(other)))
                    .at(loc("name")),
            );
            return None;
        }
        None => {
            diags.push(
                Diagnostic::error(codes::INVALID_FIELD, "missing required field")
                    .detail(format!("a {kind} needs a `name`; add `name = \"...\"`"))
                    .at(loc("kind")),
            );
            return None;
        }
    };
    let address = Address::new(kind, name.clone());
    if let Err(m) = generic_name(&name) {
        diags.push(
            Diagnostic::error(codes::INVALID_NAME, "invalid name")
                .detail(m)
                .address(&address)
                .at(loc("name")),
        );
    }
    // Unknown fields, with a suggestion.
    let known: Vec<&str> = COMMON_FIELDS
        .iter()
        .copied()
        .chain(def(kind).field_names())
        .collect();
    for field in raw.fields.keys() {
        if !known.contains(&field.as_str()) {
            let suggestion = known
                .iter()
                .map(|k| (strsim::jaro_winkler(field, k), *k))
                .filter(|(score, _)| *score > 0.7)
                .max_by(|a, b| a.0.total_cmp(&b.0))
                .map(|(_, k)| format!("did you mean `{k}`? "))
                .unwrap_or_default();
            diags.push(
                Diagnostic::error(codes::UNKNOWN_FIELD, "unknown field")
                    .detail(format!(
                        "a {kind} has no field `{field}`; {suggestion}fields are: {}",
                        known.join(", ")
                    ))
                    .address(&address)
                    .at(loc(field)),
            );
        }
    }
    let placement = match raw.fields.get("provider") {
        None => PlacementRequest::Fixed(ProviderName::Local),
        Some(Value::String(p)) if p == "cheapest" => PlacementRequest::Cheapest,
        Some(Value::String(p)) => match p.parse::<ProviderName>() {
            Ok(p) => PlacementRequest::Fixed(p),
            Err(_) => {
                diags.push(
                    Diagnostic::error(codes::INVALID_FIELD, "unknown provider")
                        .detail(format!(
                            "provider \"{p}\" is not one of 'local, 'aws, 'gcp, 'azure, 'cheapest"
                        ))
                        .address(&address)
                        .at(loc("provider")),
                );
                return None;
            }
        },
        Some(other) => {
            diags.push(
                Diagnostic::error(codes::INVALID_FIELD, "wrong type")
                    .detail(format!(
                        "`provider` must be one of 'local, 'aws, 'gcp, 'azure, 'cheapest, got {}",
                        type_name(other)
                    ))
                    .address(&address)
                    .at(loc("provider")),
            );
            return None;
        }
    };
    Some(Header {
        kind,
        name,
        placement,
    })
}

/// Second pass: validate and type one resource on a resolved provider.
pub fn lower_one(
    raw: &RawResource,
    header: &Header,
    provider: ProviderName,
    catalog: &Catalog,
    sources: &SourceMap,
    diags: &mut Vec<Diagnostic>,
) -> Option<Lowered> {
    let address = Address::new(header.kind, header.name.clone());
    let before = diags.len();
    let mut cx = Ctx {
        raw,
        sources,
        address: address.to_string(),
        diags,
    };
    if let Err(m) = def(header.kind).check_name(provider, &header.name) {
        cx.err(
            codes::INVALID_NAME,
            "name",
            "invalid name for the provider",
            m,
        );
    }
    let region = cx
        .string("region", false)
        .unwrap_or_else(|| "us-east".into());
    let native_region = match catalog.native_region(&region, provider) {
        Some(r) => r.to_string(),
        None => {
            if catalog.regions.contains_key(&region) {
                let offered = catalog.providers_for_region(&region).join(", ");
                cx.err(
                    codes::UNKNOWN_REGION,
                    "region",
                    "region not offered by the provider",
                    format!(
                        "{provider} does not offer region \"{region}\" in the catalog of {}; providers there: {offered}. Choose another region or provider",
                        catalog.date
                    ),
                );
            } else {
                let known = catalog
                    .regions
                    .keys()
                    .cloned()
                    .collect::<Vec<_>>()
                    .join(", ");
                cx.err(
                    codes::UNKNOWN_REGION,
                    "region",
                    "unknown region",
                    format!("region \"{region}\" is not in the catalog; known regions: {known}"),
                );
            }
            String::new()
        }
    };

    // Tags.
    let mut tags = BTreeMap::new();
    match cx.get("tags").cloned() {
        None => {}
        Some(Value::Object(map)) => {
            for (k, v) in map {
                if !valid_tag_key(&k) || k.starts_with("chimera-") {
                    cx.err(
                        codes::INVALID_FIELD,
                        "tags",
                        "invalid tag key",
                        format!("tag key \"{k}\" must be 1-128 letters, digits, spaces and _ . : / = + - @, and not start with `chimera-` (reserved)"),
                    );
                    continue;
                }
                match v {
                    Value::String(s) if s.len() <= 256 => {
                        tags.insert(k, s);
                    }
                    Value::String(_) => cx.err(
                        codes::TOO_LARGE,
                        "tags",
                        "value too large",
                        format!("tag \"{k}\" is longer than 256 characters"),
                    ),
                    other => cx.err(
                        codes::INVALID_FIELD,
                        "tags",
                        "wrong type",
                        format!("tag \"{k}\" must be a string, got {}", type_name(&other)),
                    ),
                }
            }
        }
        Some(other) => cx.err(
            codes::INVALID_FIELD,
            "tags",
            "wrong type",
            format!(
                "`tags` must be a record of strings, got {}",
                type_name(&other)
            ),
        ),
    }

    // Lifecycle.
    let mut lifecycle = Lifecycle::default();
    match cx.get("lifecycle").cloned() {
        None => {}
        Some(Value::Object(map)) => {
            for (k, v) in map {
                match (k.as_str(), v) {
                    ("prevent_destroy", Value::Bool(b)) => lifecycle.prevent_destroy = b,
                    ("create_before_destroy", Value::Bool(b)) => lifecycle.create_before_destroy = b,
                    ("ignore_changes", Value::Array(items)) => {
                        let known: Vec<&str> = def(header.kind).field_names().chain(["tags"]).collect();
                        for item in items {
                            match item.as_str() {
                                Some(a) if known.contains(&a) => lifecycle.ignore_changes.push(a.to_string()),
                                _ => cx.err(
                                    codes::INVALID_FIELD,
                                    "lifecycle",
                                    "unknown attribute in ignore_changes",
                                    format!("`lifecycle.ignore_changes` entries must be attributes of a {}: {}", header.kind, known.join(", ")),
                                ),
                            }
                        }
                    }
                    (k, v) => cx.err(
                        codes::INVALID_FIELD,
                        "lifecycle",
                        "invalid lifecycle",
                        format!("`lifecycle.{k}` = {}: lifecycle takes prevent_destroy (bool), create_before_destroy (bool) and ignore_changes (array of attribute names)", show(&v)),
                    ),
                }
            }
        }
        Some(other) => cx.err(
            codes::INVALID_FIELD,
            "lifecycle",
            "wrong type",
            format!("`lifecycle` must be a record, got {}", type_name(&other)),
        ),
    }

    // Sensitive attributes.
    let mut sensitive: BTreeSet<String> = def(header.kind)
        .sensitive
        .iter()
        .map(|s| s.to_string())
        .collect();
    match cx.get("sensitive").cloned() {
        None => {}
        Some(Value::Array(items)) => {
            for item in items {
                match item.as_str() {
                    Some(a) if def(header.kind).has_field(a) || a == "tags" => {
                        sensitive.insert(a.to_string());
                    }
                    _ => cx.err(
                        codes::INVALID_FIELD,
                        "sensitive",
                        "unknown sensitive attribute",
                        format!(
                            "`sensitive` entries must be attributes of a {}: {}",
                            header.kind,
                            def(header.kind)
                                .field_names()
                                .collect::<Vec<_>>()
                                .join(", ")
                        ),
                    ),
                }
            }
        }
        Some(other) => cx.err(
            codes::INVALID_FIELD,
            "sensitive",
            "wrong type",
            format!(
                "`sensitive` must be an array of attribute names, got {}",
                type_name(&other)
            ),
        ),
    }

    // Provider escape hatch.
    let native = match cx.get(provider.as_str()).cloned() {
        None => Map::new(),
        Some(Value::Object(m)) => m,
        Some(other) => {
            cx.err(
                codes::INVALID_FIELD,
                provider.as_str(),
                "wrong type",
                format!(
                    "`{provider}` (the provider escape hatch) must be a record, got {}",
                    type_name(&other)
                ),
            );
            Map::new()
        }
    };

    let mut monthly_cost = 0.0;
    let spec = match header.kind {
        Kind::Network => Spec::Network(NetworkSpec {
            cidr: cx.cidr("cidr", true).unwrap_or_default(),
        }),
        Kind::Subnet => Spec::Subnet(SubnetSpec {
            network: cx
                .reference("network", Kind::Network, true)
                .unwrap_or_default(),
            cidr: cx.cidr("cidr", true).unwrap_or_default(),
            zone: cx.one_of("zone", &["a", "b", "c"], "a"),
            public: cx.boolean("public", false),
        }),
        Kind::Firewall => {
            let network = cx
                .reference("network", Kind::Network, true)
                .unwrap_or_default();
            let ingress = rules(&mut cx, "ingress", Vec::new());
            let egress = rules(
                &mut cx,
                "egress",
                vec![Rule {
                    protocol: "all".into(),
                    from_port: None,
                    to_port: None,
                    cidrs: vec!["0.0.0.0/0".into()],
                    description: None,
                }],
            );
            Spec::Firewall(FirewallSpec {
                network,
                ingress,
                egress,
            })
        }
        Kind::Instance => {
            let size = cx.get("size").cloned();
            let cpu = cx.integer("cpu", 1, 448, false).map(|c| c as u32);
            let memory_gib = match cx.get("memory_gib").cloned() {
                None => None,
                Some(v) => match v.as_f64() {
                    Some(m) if m > 0.0 && m <= 24576.0 => Some(m),
                    _ => {
                        cx.err(codes::INVALID_FIELD, "memory_gib", "value out of range", format!("`memory_gib` must be a number greater than 0 and at most 24576, got {}", show(&v)));
                        None
                    }
                },
            };
            let instance_type = match (&size, cpu, memory_gib) {
                (Some(Value::String(s)), None, None) => {
                    if !catalog.sizes.contains_key(s) {
                        let known = catalog
                            .sizes
                            .keys()
                            .map(|k| format!("'{k}"))
                            .collect::<Vec<_>>()
                            .join(", ");
                        cx.err(
                            codes::UNKNOWN_SIZE,
                            "size",
                            "unknown size class",
                            format!("size '{s} is not in the catalog; known sizes: {known}"),
                        );
                        String::new()
                    } else {
                        match catalog.size_type(s, provider) {
                            Some(t) => t.to_string(),
                            None => {
                                cx.err(codes::UNKNOWN_SIZE, "size", "size not offered by the provider", format!("{provider} has no '{s} size in the catalog of {}; pick another size or give `cpu` and `memory_gib`", catalog.date));
                                String::new()
                            }
                        }
                    }
                }
                (Some(other), None, None) => {
                    cx.err(
                        codes::INVALID_FIELD,
                        "size",
                        "wrong type",
                        format!(
                            "`size` must be a size class such as 'small, got {}",
                            show(other)
                        ),
                    );
                    String::new()
                }
                (None, Some(c), Some(m)) => {
                    match catalog.fit_instance_type(provider, &native_region, c as f64, m) {
                        Some(t) => t.to_string(),
                        None => {
                            cx.err(codes::UNKNOWN_SIZE, "cpu", "no instance type fits", format!("{provider} has no instance type in the catalog with {c} vCPUs and {m} GiB; lower the request or pick another provider"));
                            String::new()
                        }
                    }
                }
                (None, None, None) => {
                    cx.err(codes::INVALID_FIELD, "size", "missing size", "an instance needs `size = 'small` (a class from the catalog) or both `cpu` and `memory_gib`".into());
                    String::new()
                }
                _ => {
                    cx.err(
                        codes::INVALID_FIELD,
                        "size",
                        "conflicting size",
                        "give either `size` or both `cpu` and `memory_gib`, not a mix".into(),
                    );
                    String::new()
                }
            };
            if let Some(h) = prices().instance_hourly(provider, &native_region, &instance_type) {
                monthly_cost += h * HOURS_PER_MONTH;
            }
            let image = cx
                .string("image", false)
                .unwrap_or_else(|| "ubuntu-24.04".into());
            let image_ref = match catalog.image(&image, provider) {
                Some(v) => v.clone(),
                None => {
                    let known = catalog
                        .images
                        .keys()
                        .cloned()
                        .collect::<Vec<_>>()
                        .join(", ");
                    cx.err(codes::UNKNOWN_IMAGE, "image", "image not offered", format!("image family \"{image}\" is not in the catalog for {provider}; known families: {known}"));
                    Value::Null
                }
            };
            let subnet = cx
                .reference("subnet", Kind::Subnet, true)
                .unwrap_or_default();
            let mut firewalls = Vec::new();
            match cx.get("firewalls").cloned() {
                None => {}
                Some(Value::Array(items)) => {
                    for item in items {
                        if let Some(r) = cx.reference_value("firewalls", &item, Kind::Firewall) {
                            firewalls.push(r);
                        }
                    }
                }
                Some(other) => cx.err(
                    codes::INVALID_FIELD,
                    "firewalls",
                    "wrong type",
                    format!(
                        "`firewalls` must be an array of firewall references, got {}",
                        type_name(&other)
                    ),
                ),
            }
            Spec::Instance(InstanceSpec {
                size: size.and_then(|s| s.as_str().map(str::to_string)),
                cpu,
                memory_gib,
                instance_type,
                image,
                image_ref,
                subnet,
                firewalls,
                public_ip: cx.boolean("public_ip", false),
                user_data: cx.string("user_data", false),
            })
        }
        Kind::Volume => {
            let size_gib = cx.integer("size_gib", 1, 16384, true).unwrap_or(1) as u32;
            let volume_type = cx.one_of("type", &["standard", "ssd"], "ssd");
            let disk_type = match catalog.disk(&volume_type, provider) {
                Some(d) => {
                    if let Some(g) = prices().disk_gib_month(provider, &native_region, &d.native) {
                        monthly_cost += g * f64::from(size_gib);
                    }
                    d.native.clone()
                }
                None => {
                    cx.err(
                        codes::UNKNOWN_SIZE,
                        "type",
                        "volume type not offered",
                        format!("{provider} has no '{volume_type} volumes in the catalog"),
                    );
                    String::new()
                }
            };
            Spec::Volume(VolumeSpec {
                size_gib,
                volume_type,
                disk_type,
                zone: cx.one_of("zone", &["a", "b", "c"], "a"),
                encrypted: cx.boolean("encrypted", true),
                instance: cx.reference("instance", Kind::Instance, false),
            })
        }
    };
    if diags.len() > before {
        return None;
    }
    Some(Lowered {
        address,
        provider,
        region,
        native_region,
        tags,
        lifecycle,
        sensitive,
        native,
        spec,
        monthly_cost,
        name_span: raw.field_span("name"),
        field_spans: raw.field_spans.clone(),
    })
}

fn rules(cx: &mut Ctx, field: &str, default: Vec<Rule>) -> Vec<Rule> {
    let Some(v) = cx.get(field).cloned() else {
        return default;
    };
    let Value::Array(items) = v else {
        cx.err(
            codes::INVALID_FIELD,
            field,
            "wrong type",
            format!("`{field}` must be an array of rules, got {}", type_name(&v)),
        );
        return default;
    };
    let mut out = Vec::new();
    for (i, item) in items.iter().enumerate() {
        let Value::Object(rule) = item else {
            cx.err(
                codes::INVALID_FIELD,
                field,
                "wrong type",
                format!(
                    "`{field}[{i}]` must be a rule record, got {}",
                    type_name(item)
                ),
            );
            continue;
        };
        for k in rule.keys() {
            if !["protocol", "ports", "cidrs", "description"].contains(&k.as_str()) {
                cx.err(codes::UNKNOWN_FIELD, field, "unknown field", format!("`{field}[{i}]` has no field `{k}`; rules have protocol, ports, cidrs, description"));
            }
        }
        let protocol = match rule.get("protocol") {
            None => "tcp".to_string(),
            Some(Value::String(p)) if ["tcp", "udp", "icmp", "all"].contains(&p.as_str()) => {
                p.clone()
            }
            Some(other) => {
                cx.err(
                    codes::INVALID_FIELD,
                    field,
                    "unknown protocol",
                    format!(
                        "`{field}[{i}].protocol` is {}; expected 'tcp, 'udp, 'icmp or 'all",
                        show(other)
                    ),
                );
                continue;
            }
        };
        let port = |v: &Value| check_integer(v, 0, 65535).map(|p| p as u16);
        let (from_port, to_port) = match rule.get("ports") {
            None => (None, None),
            Some(Value::Object(range)) => {
                match (range.get("from").map(port), range.get("to").map(port)) {
                    (Some(Ok(a)), Some(Ok(b))) if a <= b => (Some(a), Some(b)),
                    (Some(Ok(a)), Some(Ok(b))) => {
                        cx.err(codes::INVALID_FIELD, field, "empty port range", format!("`{field}[{i}].ports` goes from {a} down to {b}; write `{{ from = {b}, to = {a} }}`"));
                        continue;
                    }
                    (Some(Err(m)), _) | (_, Some(Err(m))) => {
                        cx.err(
                            codes::INVALID_FIELD,
                            field,
                            "port out of range",
                            format!("`{field}[{i}].ports`: a port {m}"),
                        );
                        continue;
                    }
                    _ => {
                        cx.err(
                            codes::INVALID_FIELD,
                            field,
                            "incomplete port range",
                            format!("`{field}[{i}].ports` needs both `from` and `to`"),
                        );
                        continue;
                    }
                }
            }
            Some(v) => match port(v) {
                Ok(p) => (Some(p), Some(p)),
                Err(m) => {
                    cx.err(
                        codes::INVALID_FIELD,
                        field,
                        "port out of range",
                        format!("`{field}[{i}].ports`: a port {m}"),
                    );
                    continue;
                }
            },
        };
        let mut cidrs = Vec::new();
        match rule.get("cidrs") {
            None => cidrs.push("0.0.0.0/0".to_string()),
            Some(Value::Array(list)) => {
                for c in list {
                    match c.as_str() {
                        Some(s) if Ref::parse_exact(s).is_some() => cidrs.push(s.to_string()),
                        Some(s) => match parse_cidr(s) {
                            Ok(_) => cidrs.push(s.to_string()),
                            Err(m) => cx.err(
                                codes::INVALID_CIDR,
                                field,
                                "invalid CIDR block",
                                format!("`{field}[{i}].cidrs`: {m}"),
                            ),
                        },
                        None => cx.err(
                            codes::INVALID_FIELD,
                            field,
                            "wrong type",
                            format!("`{field}[{i}].cidrs` must be strings, got {}", type_name(c)),
                        ),
                    }
                }
            }
            Some(other) => cx.err(
                codes::INVALID_FIELD,
                field,
                "wrong type",
                format!(
                    "`{field}[{i}].cidrs` must be an array of CIDR blocks, got {}",
                    type_name(other)
                ),
            ),
        }
        let description = rule
            .get("description")
            .and_then(|d| d.as_str())
            .map(str::to_string);
        out.push(Rule {
            protocol,
            from_port,
            to_port,
            cidrs,
            description,
        });
    }
    out
}

/// Resolves `'cheapest` placements. Resources joined by references form a group that must
/// share one provider: a group with an explicit provider uses it; a group of only `'cheapest`
/// resources goes to the cloud (aws, gcp, azure; never the `local` simulator) with the lowest
/// catalog price for the whole group among those that offer every region, size and image.
/// Also returns, per group that asked for `'cheapest`, how it was placed and why.
pub fn resolve_placements(
    raws: &[RawResource],
    headers: &[Option<Header>],
    catalog: &Catalog,
    sources: &SourceMap,
    diags: &mut Vec<Diagnostic>,
) -> (Vec<Option<ProviderName>>, Vec<Placement>) {
    let n = raws.len();
    let mut out: Vec<Option<ProviderName>> = headers
        .iter()
        .map(|h| match h.as_ref().map(|h| h.placement) {
            Some(PlacementRequest::Fixed(p)) => Some(p),
            _ => None,
        })
        .collect();
    let mut explained = Vec::new();
    if !headers
        .iter()
        .flatten()
        .any(|h| h.placement == PlacementRequest::Cheapest)
    {
        return (out, explained);
    }
    // Union-find over structural references.
    let mut parent: Vec<usize> = (0..n).collect();
    fn find(p: &mut [usize], i: usize) -> usize {
        let mut r = i;
        while p[r] != r {
            r = p[r];
        }
        let mut j = i;
        while p[j] != r {
            let next = p[j];
            p[j] = r;
            j = next;
        }
        r
    }
    let address = |i: usize| {
        headers[i]
            .as_ref()
            .map(|h| Address::new(h.kind, h.name.clone()))
    };
    let index: HashMap<Address, usize> = (0..n).filter_map(|i| Some((address(i)?, i))).collect();
    for (i, raw) in raws.iter().enumerate() {
        for field in ["network", "subnet", "firewalls", "instance"] {
            let mut refs = Vec::new();
            match raw.fields.get(field) {
                Some(Value::String(s)) => refs.push(s.clone()),
                Some(Value::Array(items)) => {
                    refs.extend(items.iter().filter_map(|v| v.as_str().map(str::to_string)))
                }
                _ => {}
            }
            for s in refs {
                if let Some(Ok(r)) = Ref::parse_exact(&s)
                    && let Some(&j) = index.get(&r.address())
                {
                    let (a, b) = (find(&mut parent, i), find(&mut parent, j));
                    parent[a] = b;
                }
            }
        }
    }
    let mut groups: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
    for (i, h) in headers.iter().enumerate().take(n) {
        if h.is_some() {
            let root = find(&mut parent, i);
            groups.entry(root).or_default().push(i);
        }
    }
    for members in groups.values() {
        let cheapest: Vec<usize> = members
            .iter()
            .copied()
            .filter(|&i| {
                headers[i]
                    .as_ref()
                    .is_some_and(|h| h.placement == PlacementRequest::Cheapest)
            })
            .collect();
        if cheapest.is_empty() {
            continue;
        }
        let mut resources: Vec<Address> = members.iter().filter_map(|&i| address(i)).collect();
        resources.sort();
        let fixed: BTreeSet<ProviderName> = members.iter().filter_map(|&i| out[i]).collect();
        let (chosen, candidates, reason) = if let Some(&p) = fixed.iter().next() {
            // With more than one fixed provider the cross-provider check reports the conflict;
            // place on the first.
            let pinned: Vec<String> = members
                .iter()
                .filter(|&&i| out[i] == Some(p))
                .filter_map(|&i| address(i).map(|a| a.to_string()))
                .take(3)
                .collect();
            (
                Some(p),
                Vec::new(),
                format!(
                    "{p} is fixed by {} in the same group (connected resources share a provider)",
                    pinned.join(", ")
                ),
            )
        } else {
            let mut candidates: Vec<Candidate> = Vec::new();
            for p in [ProviderName::Aws, ProviderName::Gcp, ProviderName::Azure] {
                let mut total = 0.0;
                let mut lacks = None;
                for &i in members {
                    let mut scratch = Vec::new();
                    let h = headers[i].as_ref().unwrap_or_else(|| unreachable!());
                    let lowered = lower_one(&raws[i], h, p, catalog, sources, &mut scratch);
                    // An unpriced type would look free: it cannot win a price race.
                    let priced = lowered.as_ref().and_then(|l| {
                        chimera_model::prices::prices().monthly(p, &l.native_region, &l.spec)
                    });
                    match lowered {
                        Some(l) if scratch.is_empty() && priced.is_none() => {
                            lacks = Some(format!(
                                "{}: no list price for {} in {}",
                                l.address,
                                l.spec.native_type().unwrap_or("it"),
                                l.native_region
                            ));
                            break;
                        }
                        Some(_) if scratch.is_empty() => total += priced.unwrap_or(0.0),
                        _ => {
                            let why = scratch
                                .iter()
                                .find(|d| d.is_error())
                                .map(|d| d.summary.clone())
                                .unwrap_or_else(|| "cannot host it".into());
                            lacks =
                                Some(format!("{}: {why}", Address::new(h.kind, h.name.clone())));
                            break;
                        }
                    }
                }
                candidates.push(Candidate {
                    provider: p,
                    monthly: lacks.is_none().then_some(total),
                    unavailable: lacks,
                });
            }
            // Cheapest first; ties keep the aws, gcp, azure order (a stable sort).
            candidates.sort_by(|a, b| match (a.monthly, b.monthly) {
                (Some(x), Some(y)) => x.total_cmp(&y),
                (Some(_), None) => std::cmp::Ordering::Less,
                (None, Some(_)) => std::cmp::Ordering::Greater,
                (None, None) => std::cmp::Ordering::Equal,
            });
            let able: Vec<&Candidate> = candidates.iter().filter(|c| c.monthly.is_some()).collect();
            let reason = match able.as_slice() {
                [] => "no cloud offers every region, size and image the group needs".to_string(),
                [only] => format!(
                    "{} is the only cloud that offers every region, size and image the group needs",
                    only.provider
                ),
                [win, next, ..] => {
                    let (w, s) = (win.monthly.unwrap_or(0.0), next.monthly.unwrap_or(0.0));
                    if s - w < 0.005 {
                        format!(
                            "{} and {} cost the same (${w:.2}/month); {} comes first in the order aws, gcp, azure",
                            win.provider, next.provider, win.provider
                        )
                    } else {
                        format!(
                            "{} is ${:.2}/month cheaper than {}, the next cheapest",
                            win.provider,
                            s - w,
                            next.provider
                        )
                    }
                }
            };
            let chosen = able.first().map(|c| c.provider);
            if chosen.is_none() {
                let i = cheapest[0];
                let mut d = Diagnostic::error(codes::NO_PLACEMENT, "no provider can host this group")
                    .detail("`provider = 'cheapest` found no cloud (aws, gcp, azure) that offers every region, size and image this group of connected resources needs; pin a provider or change the region or size")
                    .address(address(i).map(|a| a.to_string()).unwrap_or_default())
                    .at(raws[i].field_span("provider").or(raws[i].field_span("name")).and_then(|s| sources.locate(s)));
                for c in &candidates {
                    if let Some(u) = &c.unavailable {
                        d = d.note(format!("{}: {u}", c.provider));
                    }
                }
                diags.push(d);
            }
            (chosen, candidates, reason)
        };
        for i in cheapest {
            out[i] = chosen;
        }
        explained.push(Placement {
            resources,
            chosen,
            candidates,
            reason,
        });
    }
    (out, explained)
}

/// Cross-resource checks that need the whole set: subnets inside their network and not
/// overlapping each other, and structural references within one provider.
pub fn check_relations(lowered: &[Lowered], sources: &SourceMap, diags: &mut Vec<Diagnostic>) {
    let by_addr: HashMap<&Address, &Lowered> = lowered.iter().map(|l| (&l.address, l)).collect();
    let loc = |l: &Lowered, field: &str| l.location(field, sources);
    let target = |placeholder: &str| -> Option<&Lowered> {
        let r = Ref::parse_exact(placeholder)?.ok()?;
        by_addr.get(&r.address()).copied()
    };
    type Block = (Ipv4Addr, u8);
    let mut subnets_by_network: BTreeMap<String, Vec<(&Lowered, Block)>> = BTreeMap::new();
    for l in lowered {
        for (field, placeholder) in l.spec.references() {
            if let Some(t) = target(placeholder)
                && t.provider != l.provider
            {
                diags.push(
                    Diagnostic::error(codes::CROSS_PROVIDER, "reference across providers")
                        .detail(format!(
                            "{} is on {} but its `{field}` {} is on {}; a resource can only attach to resources of its own provider. Put both on one provider",
                            l.address, l.provider, t.address, t.provider
                        ))
                        .address(&l.address)
                        .at(loc(l, field))
                        .label(loc(t, "provider"), format!("{} is placed here", t.address)),
                );
            }
        }
        if let Spec::Subnet(s) = &l.spec
            && let Ok(inner) = parse_cidr(&s.cidr)
            && let Some(net) = target(&s.network)
            && let Spec::Network(n) = &net.spec
            && let Ok(outer) = parse_cidr(&n.cidr)
        {
            if !cidr_within(inner, outer) {
                diags.push(
                    Diagnostic::error(codes::SUBNET_PLACEMENT, "subnet outside its network")
                        .detail(format!(
                            "{} has cidr {} which is not inside {} ({}); choose a block inside the network's",
                            l.address, s.cidr, net.address, n.cidr
                        ))
                        .address(&l.address)
                        .at(loc(l, "cidr"))
                        .label(loc(net, "cidr"), "the network's block"),
                );
            } else {
                subnets_by_network
                    .entry(net.address.to_string())
                    .or_default()
                    .push((l, inner));
            }
        }
    }
    for subnets in subnets_by_network.values() {
        for (i, (a, ca)) in subnets.iter().enumerate() {
            for (b, cb) in &subnets[i + 1..] {
                if cidrs_overlap(*ca, *cb) {
                    diags.push(
                        Diagnostic::error(codes::SUBNET_PLACEMENT, "overlapping subnets")
                            .detail(format!(
                                "{} and {} overlap; subnets of one network need disjoint blocks",
                                b.address, a.address
                            ))
                            .address(&b.address)
                            .at(loc(b, "cidr"))
                            .label(loc(a, "cidr"), format!("{} is here", a.address)),
                    );
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cidr_containment() {
        let net = parse_cidr("10.0.0.0/16").unwrap();
        assert!(cidr_within(parse_cidr("10.0.1.0/24").unwrap(), net));
        assert!(!cidr_within(parse_cidr("10.1.0.0/24").unwrap(), net));
        assert!(!cidr_within(parse_cidr("10.0.0.0/8").unwrap(), net));
        assert!(cidr_within(
            parse_cidr("0.0.0.0/0").unwrap(),
            parse_cidr("0.0.0.0/0").unwrap()
        ));
        assert!(parse_cidr("10.0.0.0/33").is_err());
        assert!(parse_cidr("256.0.0.0/8").is_err());
    }

    #[test]
    fn generic_names() {
        assert!(generic_name("ok-name.1").is_ok());
        assert!(generic_name("-bad").is_err());
    }
}
