//! Resource addresses: `kind.name`, unique within a stack.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// A resource kind of the provider-agnostic model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    Network,
    Subnet,
    Firewall,
    Instance,
    Volume,
}

impl Kind {
    pub const ALL: [Kind; 5] = [
        Kind::Network,
        Kind::Subnet,
        Kind::Firewall,
        Kind::Instance,
        Kind::Volume,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Network => "network",
            Kind::Subnet => "subnet",
            Kind::Firewall => "firewall",
            Kind::Instance => "instance",
            Kind::Volume => "volume",
        }
    }

    /// The stdlib schema a user applies to build a resource of this kind.
    pub fn schema_name(self) -> &'static str {
        match self {
            Kind::Network => "Network",
            Kind::Subnet => "Subnet",
            Kind::Firewall => "Firewall",
            Kind::Instance => "Instance",
            Kind::Volume => "Volume",
        }
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Kind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Kind::ALL
            .into_iter()
            .find(|k| k.as_str() == s)
            .ok_or_else(|| format!("unknown resource kind `{s}`"))
    }
}

/// A concrete provider a resource is placed on (after `'cheapest` is resolved).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ProviderName {
    Local,
    Aws,
    Gcp,
    Azure,
}

impl ProviderName {
    pub const ALL: [ProviderName; 4] = [
        ProviderName::Local,
        ProviderName::Aws,
        ProviderName::Gcp,
        ProviderName::Azure,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ProviderName::Local => "local",
            ProviderName::Aws => "aws",
            ProviderName::Gcp => "gcp",
            ProviderName::Azure => "azure",
        }
    }
}

impl fmt::Display for ProviderName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for ProviderName {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        ProviderName::ALL
            .into_iter()
            .find(|p| p.as_str() == s)
            .ok_or_else(|| format!("unknown provider `{s}`"))
    }
}

/// `kind.name`: the identity of a resource within a stack.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Address {
    pub kind: Kind,
    pub name: String,
}

impl Address {
    pub fn new(kind: Kind, name: impl Into<String>) -> Self {
        Address {
            kind,
            name: name.into(),
        }
    }
}

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.kind, self.name)
    }
}

impl FromStr for Address {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (kind, name) = s.split_once('.').ok_or_else(|| {
            format!("invalid address `{s}`: expected KIND.NAME, e.g. instance.web-0")
        })?;
        if name.is_empty() {
            return Err(format!(
                "invalid address `{s}`: the name after `.` is empty"
            ));
        }
        Ok(Address::new(kind.parse()?, name))
    }
}

impl Serialize for Address {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Address {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn address_round_trips_through_text() {
        let a: Address = "instance.web-0.blue".parse().unwrap();
        assert_eq!(a.kind, Kind::Instance);
        assert_eq!(a.name, "web-0.blue");
        assert_eq!(a.to_string(), "instance.web-0.blue");
        assert!("bogus.x".parse::<Address>().is_err());
        assert!("instance".parse::<Address>().is_err());
    }
}
