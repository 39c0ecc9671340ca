//! Reference placeholders: `{ "$ref" = { kind, name, attr } }` in evaluated Nickel.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::{Address, Kind};

/// A reference from one resource's attribute to another resource's output.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Ref {
    pub kind: Kind,
    pub name: String,
    pub attr: String,
}

pub const REF_KEY: &str = "$ref";

impl Ref {
    pub fn address(&self) -> Address {
        Address::new(self.kind, self.name.clone())
    }

    /// The placeholder form, as the stdlib writes it.
    pub fn to_value(&self) -> Value {
        serde_json::json!({ REF_KEY: { "kind": self.kind, "name": self.name, "attr": self.attr } })
    }

    /// Recognises a placeholder. `Ok(None)`: not a placeholder; `Err`: a malformed one.
    pub fn from_value(v: &Value) -> Result<Option<Ref>, String> {
        let Some(obj) = v.as_object() else {
            return Ok(None);
        };
        let Some(inner) = obj.get(REF_KEY) else {
            return Ok(None);
        };
        if obj.len() != 1 {
            return Err("a reference placeholder must have `$ref` as its only field".into());
        }
        serde_json::from_value::<Ref>(inner.clone())
            .map(Some)
            .map_err(|e| format!("malformed reference placeholder: {e}"))
    }
}

impl std::fmt::Display for Ref {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}.{}", self.kind, self.name, self.attr)
    }
}
