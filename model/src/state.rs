//! What state stores hold about one resource, as plain data.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::{Address, ContentHash, ProviderName};

/// A resource as recorded in state: the desired attributes it was created or updated from
/// (references symbolic), what the cloud reported back, and where it lives.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StateResource {
    pub address: Address,
    pub provider: ProviderName,
    pub region: String,
    pub native_region: String,
    /// Desired attributes at the last apply, with `${chimera:…}` placeholders.
    pub attrs: Map<String, Value>,
    pub sensitive: Vec<String>,
    /// The content hash of the desired resource at the last apply.
    pub hash: ContentHash,
    /// The provider's id for the resource.
    pub cloud_id: String,
    /// Observed outputs (`id`, `private_ip`, …).
    pub outputs: Map<String, Value>,
    pub deps: Vec<Address>,
    /// `lifecycle.prevent_destroy` at the last apply: a plan may not delete it.
    #[serde(default)]
    pub prevent_destroy: bool,
}
