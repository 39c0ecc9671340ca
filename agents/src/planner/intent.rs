//! The offline planner's grammar: an intent sentence becomes one [`Intent`], deterministically.
//! Words are matched case-insensitively; filler words (`the`, `a`, `please`, `servers`, …) are
//! ignored; each intent has a few synonyms. docs/agents-planner.md lists the grammar.

/// What the planner can do.
#[derive(Debug, Clone, PartialEq)]
pub enum Intent {
    /// `scale web to 5`: the number of instances of a tier.
    Scale { tier: String, count: u64 },
    /// `resize web to large`: the size of a tier's instances.
    Resize { tier: String, size: String },
    /// `add a 100 GiB ssd volume to web-0`.
    AddVolume {
        instance: String,
        size_gib: u64,
        /// `ssd` or `standard` (`hdd`); `None` leaves the schema's default.
        kind: Option<String>,
    },
    /// `open port 8080 on web [from 10.0.0.0/16]`.
    OpenPort {
        tier: String,
        port: u16,
        protocol: String,
        cidr: Option<String>,
    },
    /// `close port 22 on web`.
    ClosePort { tier: String, port: u16 },
    /// `tag everything with owner=platform`.
    Tag { key: String, value: String },
    /// `move the stack to region eu-west`; `tier: None` is the whole stack.
    Region {
        tier: Option<String>,
        region: String,
    },
    /// `put web on the cheapest provider`; `tier: None` is the whole stack.
    Cheapest { tier: Option<String> },
    /// `cut cost by 30% keeping at least 2 web`.
    CostCut {
        /// A fraction: 0.3 is 30%.
        fraction: f64,
        /// Tiers that keep at least this many instances.
        keep: Vec<(String, u64)>,
    },
    /// `rightsize from utilisation`.
    Rightsize,
}

/// What the planner knows, for an intent it does not.
pub const KNOWN: &str = "the offline planner knows: `scale TIER to N`, `resize TIER to SIZE`, \
`add a N GiB [ssd|standard] volume to INSTANCE`, `open port P on TIER [from CIDR]`, \
`close port P on TIER`, `tag everything with KEY=VALUE`, `move the stack|TIER to region R`, \
`put the stack|TIER on the cheapest provider`, `cut cost by N% [keeping at least K TIER]`, \
`rightsize from utilisation` (docs/agents-planner.md)";

/// The instance sizes, smallest first (the stdlib's `Size`).
pub const SIZES: [&str; 7] = [
    "nano", "micro", "small", "medium", "large", "xlarge", "2xlarge",
];

const FILLER: &[&str] = &[
    "the",
    "a",
    "an",
    "please",
    "tier",
    "servers",
    "server",
    "instances",
    "instance",
    "nodes",
    "node",
    "vms",
    "vm",
    "replicas",
    "machines",
    "our",
    "my",
    "of",
    "group",
];

const WHOLE: &[&str] = &["stack", "everything", "all", "resources", "whole"];

/// One word: as written, and lower-cased for matching.
#[derive(Debug, Clone)]
struct Word {
    raw: String,
    low: String,
}

/// Parses `text`; `Err` says what the planner knows.
pub fn parse(text: &str) -> Result<Intent, String> {
    let words: Vec<Word> = text
        .split_whitespace()
        .map(|w| w.trim_matches(|c: char| matches!(c, ',' | '.' | ';' | '!' | '?' | '"' | '`')))
        .filter(|w| !w.is_empty())
        .map(|w| Word {
            raw: w.to_string(),
            low: w.to_lowercase(),
        })
        .filter(|w| !FILLER.contains(&w.low.as_str()))
        .collect();
    let low: Vec<&str> = words.iter().map(|w| w.low.as_str()).collect();
    let unknown = || format!("`{}` is not an intent {KNOWN}", text.trim());
    let Some(&verb) = low.first() else {
        return Err(unknown());
    };
    let has = |w: &str| low.contains(&w);
    let pos = |ws: &[&str]| low.iter().position(|w| ws.contains(w));

    if matches!(verb, "rightsize" | "right-size" | "rightsizing")
        || (verb == "right" && low.get(1) == Some(&"size"))
    {
        return Ok(Intent::Rightsize);
    }
    if verb == "tag" || (matches!(verb, "add" | "set" | "put") && (has("tag") || has("tags"))) {
        let kv = words
            .iter()
            .find(|w| w.raw.contains('=') || (w.raw.contains(':') && !w.raw.ends_with(':')));
        if let Some(kv) = kv {
            let (k, v) = kv
                .raw
                .split_once('=')
                .or_else(|| kv.raw.split_once(':'))
                .unwrap_or_default();
            let (k, v) = (k.trim(), v.trim());
            if !k.is_empty() && !v.is_empty() {
                return Ok(Intent::Tag {
                    key: k.to_string(),
                    value: v.to_string(),
                });
            }
        }
        return Err(format!(
            "a tag intent needs KEY=VALUE, e.g. `tag everything with owner=platform`; {}",
            unknown()
        ));
    }
    if low
        .iter()
        .any(|w| matches!(*w, "cost" | "costs" | "bill" | "spend" | "spending"))
        && matches!(
            verb,
            "cut" | "reduce" | "lower" | "save" | "trim" | "shrink" | "decrease"
        )
    {
        let fraction = percent(&low).ok_or_else(|| {
            format!(
                "a cost cut needs a percentage, e.g. `cut cost by 30%`; {}",
                unknown()
            )
        })?;
        let mut keep = Vec::new();
        for (i, w) in low.iter().enumerate() {
            if matches!(*w, "least" | "keeping" | "keep" | "minimum")
                && let (Some(n), Some(t)) = (
                    low.get(i + 1).and_then(|w| w.parse::<u64>().ok()),
                    low.get(i + 2),
                )
            {
                keep.push((t.to_string(), n));
            }
        }
        return Ok(Intent::CostCut { fraction, keep });
    }
    if has("cheapest") {
        let tier = between(
            &low,
            &["put", "move", "place", "run", "switch"],
            &["on", "to"],
        );
        return Ok(Intent::Cheapest {
            tier: tier.filter(|t| !WHOLE.contains(&t.as_str())),
        });
    }
    if (has("volume") || has("disk")) && matches!(verb, "add" | "attach" | "give") {
        let to = pos(&["to", "on", "for"]).ok_or_else(unknown)?;
        let instance = low.get(to + 1).ok_or_else(unknown)?.to_string();
        let mut size_gib = None;
        for (i, w) in low[..to].iter().enumerate() {
            let digits: String = w.chars().take_while(char::is_ascii_digit).collect();
            if digits.is_empty() {
                continue;
            }
            let unit = &w[digits.len()..];
            let next = low.get(i + 1).copied().unwrap_or("");
            if matches!(unit, "gib" | "gb" | "g")
                || (unit.is_empty() && matches!(next, "gib" | "gb" | "g"))
            {
                size_gib = digits.parse().ok();
            }
        }
        let size_gib = size_gib.ok_or_else(|| {
            format!(
                "a volume needs a size, e.g. `add a 100 GiB ssd volume to web-0`; {}",
                unknown()
            )
        })?;
        let kind = if has("ssd") {
            Some("ssd".to_string())
        } else if has("hdd") || has("standard") {
            Some("standard".to_string())
        } else {
            None
        };
        return Ok(Intent::AddVolume {
            instance,
            size_gib,
            kind,
        });
    }
    let opening = matches!(verb, "open" | "allow" | "expose");
    let closing = matches!(verb, "close" | "block" | "deny" | "disallow" | "remove");
    if (opening || closing) && (has("port") || low.get(1).is_some_and(|w| port(w).is_some())) {
        let at = if low.get(1) == Some(&"port") { 2 } else { 1 };
        let (p, protocol) = low.get(at).and_then(|w| port(w)).ok_or_else(unknown)?;
        let on = low[at..]
            .iter()
            .position(|w| matches!(*w, "on" | "to" | "for" | "from" | "in"))
            .map(|i| i + at)
            .ok_or_else(unknown)?;
        let tier = low.get(on + 1).ok_or_else(unknown)?.to_string();
        if closing {
            return Ok(Intent::ClosePort { tier, port: p });
        }
        let cidr = low[on + 2..]
            .iter()
            .position(|w| *w == "from")
            .and_then(|i| low.get(on + 3 + i))
            .map(|c| c.to_string());
        return Ok(Intent::OpenPort {
            tier,
            port: p,
            protocol,
            cidr,
        });
    }
    if matches!(verb, "move" | "relocate" | "migrate")
        || (matches!(verb, "change" | "set") && has("region"))
    {
        if let Some(to) = pos(&["to"]) {
            let mut at = to + 1;
            if low.get(at) == Some(&"region") {
                at += 1;
            }
            if let Some(r) = low.get(at) {
                let tier = if matches!(verb, "move" | "relocate" | "migrate") {
                    low[1..to]
                        .iter()
                        .find(|w| **w != "region")
                        .map(|w| w.to_string())
                        .filter(|t| !WHOLE.contains(&t.as_str()))
                } else {
                    None
                };
                return Ok(Intent::Region {
                    tier,
                    region: r.to_string(),
                });
            }
        }
    }
    if matches!(verb, "scale" | "grow" | "shrink" | "run")
        || (verb == "set" && (has("count") || has("number")))
    {
        if verb == "run"
            && let (Some(n), Some(t)) = (low.get(1).and_then(|w| w.parse().ok()), low.get(2))
        {
            return Ok(Intent::Scale {
                tier: t.to_string(),
                count: n,
            });
        }
        if let Some(to) = pos(&["to"])
            && let Some(n) = low.get(to + 1).and_then(|w| w.parse().ok())
        {
            let tier = low[1..to]
                .iter()
                .find(|w| !matches!(**w, "count" | "number" | "up" | "down" | "out" | "in"))
                .ok_or_else(unknown)?;
            return Ok(Intent::Scale {
                tier: tier.to_string(),
                count: n,
            });
        }
    }
    if matches!(
        verb,
        "resize" | "make" | "change" | "set" | "upsize" | "downsize"
    ) && let Some(size) = low
        .iter()
        .rev()
        .find_map(|w| SIZES.iter().find(|s| *s == w))
    {
        let tier = low[1..]
            .iter()
            .find(|w| !matches!(**w, "size" | "to" | "into" | "be") && !SIZES.contains(w))
            .ok_or_else(unknown)?;
        return Ok(Intent::Resize {
            tier: tier.to_string(),
            size: size.to_string(),
        });
    }
    Err(unknown())
}

/// `30%`, `30 %` or `30 percent`, as a fraction.
fn percent(low: &[&str]) -> Option<f64> {
    for (i, w) in low.iter().enumerate() {
        let n = if let Some(n) = w.strip_suffix('%') {
            n.parse::<f64>().ok()
        } else if matches!(low.get(i + 1), Some(&"%") | Some(&"percent")) {
            w.parse::<f64>().ok()
        } else {
            None
        };
        if let Some(n) = n.filter(|n| *n > 0.0 && *n < 100.0) {
            return Some(n / 100.0);
        }
    }
    None
}

/// `8080`, `8080/tcp`, `53/udp`.
fn port(w: &str) -> Option<(u16, String)> {
    let (p, proto) = w.split_once('/').unwrap_or((w, "tcp"));
    let p = p.parse::<u16>().ok().filter(|p| *p > 0)?;
    matches!(proto, "tcp" | "udp").then(|| (p, proto.to_string()))
}

/// The first word after one of `starts` and before one of `ends`.
fn between(low: &[&str], starts: &[&str], ends: &[&str]) -> Option<String> {
    let s = low.iter().position(|w| starts.contains(w))?;
    let e = low[s + 1..].iter().position(|w| ends.contains(w))? + s + 1;
    (e > s + 1).then(|| low[s + 1].to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_grammar_with_its_synonyms() {
        let cases: Vec<(&str, Intent)> = vec![
            (
                "scale web to 5",
                Intent::Scale {
                    tier: "web".into(),
                    count: 5,
                },
            ),
            (
                "Scale the web tier to 5 instances.",
                Intent::Scale {
                    tier: "web".into(),
                    count: 5,
                },
            ),
            (
                "set the count of worker to 10",
                Intent::Scale {
                    tier: "worker".into(),
                    count: 10,
                },
            ),
            (
                "run 4 api servers",
                Intent::Scale {
                    tier: "api".into(),
                    count: 4,
                },
            ),
            (
                "resize web to large",
                Intent::Resize {
                    tier: "web".into(),
                    size: "large".into(),
                },
            ),
            (
                "make the web servers medium",
                Intent::Resize {
                    tier: "web".into(),
                    size: "medium".into(),
                },
            ),
            (
                "add a 100 GiB ssd volume to web-0",
                Intent::AddVolume {
                    instance: "web-0".into(),
                    size_gib: 100,
                    kind: Some("ssd".into()),
                },
            ),
            (
                "attach a 20GB disk to batch",
                Intent::AddVolume {
                    instance: "batch".into(),
                    size_gib: 20,
                    kind: None,
                },
            ),
            (
                "open port 8080 on web",
                Intent::OpenPort {
                    tier: "web".into(),
                    port: 8080,
                    protocol: "tcp".into(),
                    cidr: None,
                },
            ),
            (
                "allow port 53/udp to web from 10.0.0.0/16",
                Intent::OpenPort {
                    tier: "web".into(),
                    port: 53,
                    protocol: "udp".into(),
                    cidr: Some("10.0.0.0/16".into()),
                },
            ),
            (
                "close port 22 on web",
                Intent::ClosePort {
                    tier: "web".into(),
                    port: 22,
                },
            ),
            (
                "tag everything with owner=Platform",
                Intent::Tag {
                    key: "owner".into(),
                    value: "Platform".into(),
                },
            ),
            (
                "move the stack to region eu-west",
                Intent::Region {
                    tier: None,
                    region: "eu-west".into(),
                },
            ),
            (
                "move prod to eu-west",
                Intent::Region {
                    tier: Some("prod".into()),
                    region: "eu-west".into(),
                },
            ),
            (
                "put web on the cheapest provider",
                Intent::Cheapest {
                    tier: Some("web".into()),
                },
            ),
            (
                "move everything to the cheapest cloud",
                Intent::Cheapest { tier: None },
            ),
            (
                "cut cost by 30% keeping at least 2 web",
                Intent::CostCut {
                    fraction: 0.3,
                    keep: vec![("web".into(), 2)],
                },
            ),
            (
                "reduce the monthly cost by 25 percent",
                Intent::CostCut {
                    fraction: 0.25,
                    keep: vec![],
                },
            ),
            ("rightsize from utilisation", Intent::Rightsize),
            ("Right-size using utilization", Intent::Rightsize),
        ];
        for (text, want) in cases {
            assert_eq!(parse(text), Ok(want), "{text}");
        }
    }

    #[test]
    fn what_it_does_not_know_says_what_it_knows() {
        for text in [
            "",
            "make it faster",
            "delete the database",
            "tag everything",
            "cut cost",
        ] {
            let e = parse(text).unwrap_err();
            assert!(e.contains("scale TIER to N"), "{text}: {e}");
        }
    }
}
