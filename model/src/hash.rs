//! Content hashes: blake3 over canonical JSON.

use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// A blake3 digest, shown and stored as lowercase hex.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ContentHash(pub [u8; 32]);

impl ContentHash {
    pub fn to_hex(&self) -> String {
        blake3::Hash::from(self.0).to_hex().to_string()
    }

    pub fn from_hex(s: &str) -> Result<Self, String> {
        blake3::Hash::from_hex(s)
            .map(|h| ContentHash(*h.as_bytes()))
            .map_err(|e| format!("invalid content hash `{s}`: {e}"))
    }
}

impl fmt::Debug for ContentHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ContentHash({})", self.to_hex())
    }
}

impl fmt::Display for ContentHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl Serialize for ContentHash {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_hex())
    }
}

impl<'de> Deserialize<'de> for ContentHash {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        ContentHash::from_hex(&s).map_err(serde::de::Error::custom)
    }
}

/// [`write_canonical`] for an object, without wrapping it in a `Value`.
pub fn write_canonical_object(map: &serde_json::Map<String, Value>, out: &mut Vec<u8>) {
    out.push(b'{');
    let mut keys: Vec<&String> = map.keys().collect();
    keys.sort_unstable();
    for (i, k) in keys.into_iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        // serde_json's string escaping is deterministic.
        out.extend_from_slice(serde_json::to_string(k).unwrap_or_default().as_bytes());
        out.push(b':');
        write_canonical(&map[k], out);
    }
    out.push(b'}');
}

/// Writes `v` as canonical JSON: object keys sorted, no whitespace, numbers as serde_json
/// prints them. Two equal values always give the same bytes, whatever their key order.
pub fn write_canonical(v: &Value, out: &mut Vec<u8>) {
    match v {
        Value::Object(map) => write_canonical_object(map, out),
        Value::Array(items) => {
            out.push(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_canonical(item, out);
            }
            out.push(b']');
        }
        scalar => out.extend_from_slice(scalar.to_string().as_bytes()),
    }
}

/// An incremental hasher for content addressing, with domain-separated parts.
pub struct Hasher(blake3::Hasher);

impl Default for Hasher {
    fn default() -> Self {
        Self::new()
    }
}

impl Hasher {
    pub fn new() -> Self {
        Hasher(blake3::Hasher::new())
    }

    /// Adds a length-prefixed part, so that ("ab","c") and ("a","bc") hash differently.
    pub fn part(&mut self, bytes: &[u8]) -> &mut Self {
        self.0.update(&(bytes.len() as u64).to_le_bytes());
        self.0.update(bytes);
        self
    }

    /// Adds a serialisable value as JSON, streamed into the hash without building a `Value`.
    /// Canonical only for types whose maps are ordered (structs, `BTreeMap`, serde_json's
    /// default `Map`), never for a `HashMap`. The end of the part is marked, not its length.
    pub fn serialized<T: serde::Serialize>(&mut self, v: &T) -> &mut Self {
        // Writing into a hasher cannot fail; a type whose serialisation fails hashes its prefix.
        // Buffered: serde_json writes many tiny slices, and each hasher update has a fixed cost.
        let mut w = std::io::BufWriter::with_capacity(16 * 1024, &mut self.0);
        let _ = serde_json::to_writer(&mut w, v);
        let _ = std::io::Write::flush(&mut w);
        drop(w);
        self.0.update(b"\0end");
        self
    }

    pub fn object(&mut self, map: &serde_json::Map<String, Value>) -> &mut Self {
        let mut buf = Vec::with_capacity(256);
        write_canonical_object(map, &mut buf);
        self.part(&buf)
    }

    pub fn value(&mut self, v: &Value) -> &mut Self {
        let mut buf = Vec::with_capacity(256);
        write_canonical(v, &mut buf);
        self.part(&buf)
    }

    pub fn finish(&self) -> ContentHash {
        ContentHash(*self.0.finalize().as_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn canonical_json_ignores_key_order() {
        let a = json!({"b": 1, "a": [true, null, "x"], "c": {"z": 1.5, "y": "q"}});
        let b = json!({"c": {"y": "q", "z": 1.5}, "a": [true, null, "x"], "b": 1});
        let (mut x, mut y) = (Vec::new(), Vec::new());
        write_canonical(&a, &mut x);
        write_canonical(&b, &mut y);
        assert_eq!(x, y);
        assert_eq!(
            String::from_utf8(x).unwrap(),
            r#"{"a":[true,null,"x"],"b":1,"c":{"y":"q","z":1.5}}"#
        );
    }

    #[test]
    fn parts_are_length_prefixed() {
        let h1 = Hasher::new().part(b"ab").part(b"c").finish();
        let h2 = Hasher::new().part(b"a").part(b"bc").finish();
        assert_ne!(h1, h2);
        assert_eq!(ContentHash::from_hex(&h1.to_hex()).unwrap(), h1);
    }
}
