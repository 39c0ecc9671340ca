//! Reference placeholders: `${chimera:KIND.NAME.ATTR}` strings in evaluated Nickel.
//!
//! A placeholder is a string so that it survives string interpolation: a user can write
//! `"http://%{db.outputs.private_ip}:5432"` and the compiler finds the reference inside it.

use serde::{Deserialize, Serialize};

use crate::{Address, Kind};

/// A reference from one resource's attribute to another resource's output.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Ref {
    pub kind: Kind,
    pub name: String,
    pub attr: String,
}

const OPEN: &str = "${chimera:";

/// A piece of a string that may contain placeholders.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Piece<'a> {
    Text(&'a str),
    Ref(Ref),
}

impl Ref {
    pub fn new(kind: Kind, name: impl Into<String>, attr: impl Into<String>) -> Self {
        Ref {
            kind,
            name: name.into(),
            attr: attr.into(),
        }
    }

    pub fn address(&self) -> Address {
        Address::new(self.kind, self.name.clone())
    }

    /// The placeholder form, as the stdlib writes it.
    pub fn placeholder(&self) -> String {
        format!("{OPEN}{}.{}.{}}}", self.kind, self.name, self.attr)
    }

    /// Parses the inside of a placeholder, `KIND.NAME.ATTR` (names may contain dots).
    fn parse_inner(inner: &str) -> Result<Ref, String> {
        let bad = || format!("malformed reference `{OPEN}{inner}}}`: expected KIND.NAME.ATTR");
        let (kind, rest) = inner.split_once('.').ok_or_else(bad)?;
        let (name, attr) = rest.rsplit_once('.').ok_or_else(bad)?;
        if name.is_empty() || attr.is_empty() {
            return Err(bad());
        }
        let kind: Kind = kind.parse().map_err(|e| format!("{}: {e}", bad()))?;
        Ok(Ref::new(kind, name, attr))
    }

    /// The string is exactly one placeholder.
    pub fn parse_exact(s: &str) -> Option<Result<Ref, String>> {
        let inner = s.strip_prefix(OPEN)?.strip_suffix('}')?;
        if inner.contains('}') {
            return None;
        }
        Some(Ref::parse_inner(inner))
    }

    /// Whether a string contains any placeholder (cheap pre-check).
    pub fn contains_placeholder(s: &str) -> bool {
        s.contains(OPEN)
    }

    /// Splits a string into text and references.
    pub fn split(s: &str) -> Result<Vec<Piece<'_>>, String> {
        let mut out = Vec::new();
        let mut rest = s;
        while let Some(i) = rest.find(OPEN) {
            if i > 0 {
                out.push(Piece::Text(&rest[..i]));
            }
            let after = &rest[i + OPEN.len()..];
            let end = after
                .find('}')
                .ok_or_else(|| format!("unterminated reference in `{s}`"))?;
            out.push(Piece::Ref(Ref::parse_inner(&after[..end])?));
            rest = &after[end + 1..];
        }
        if !rest.is_empty() {
            out.push(Piece::Text(rest));
        }
        Ok(out)
    }
}

impl std::fmt::Display for Ref {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}.{}", self.kind, self.name, self.attr)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_round_trip_and_split() {
        let r = Ref::new(Kind::Instance, "db.eu-1", "private_ip");
        let p = r.placeholder();
        assert_eq!(p, "${chimera:instance.db.eu-1.private_ip}");
        assert_eq!(Ref::parse_exact(&p), Some(Ok(r.clone())));
        let s = format!("http://{p}:5432/");
        assert_eq!(
            Ref::split(&s).unwrap(),
            vec![Piece::Text("http://"), Piece::Ref(r), Piece::Text(":5432/")]
        );
        assert!(Ref::parse_exact("${chimera:bogus.x.id}").unwrap().is_err());
        assert_eq!(Ref::parse_exact("plain"), None);
    }
}
