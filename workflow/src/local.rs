//! The local simulated cloud: what is in it, and changing it behind Chimera's back (drift for
//! tests and demos).

use chimera_model::{Address, Diagnostic, codes};
use chimera_providers::Observed;
use chimera_providers::local::LocalCloud;
use serde_json::Value;

use crate::error::{Error, ErrorKind};
use crate::stack::{Stack, local_knobs, open_local};

/// An out-of-band change to one resource.
#[derive(Debug, Clone)]
pub enum LocalChange {
    /// Set attributes (`key`, value).
    Set(Vec<(String, Value)>),
    /// Delete the resource.
    Delete,
}

/// `chimera local mutate --set` keys that set an instance's simulated utilisation (percent)
/// instead of an attribute.
pub const CPU_UTILISATION: &str = "cpu_utilisation";
pub const MEMORY_UTILISATION: &str = "memory_utilisation";

fn percent(key: &str, v: &Value) -> Result<f64, String> {
    v.as_f64()
        .or_else(|| v.as_str().and_then(|s| s.trim().parse().ok()))
        .ok_or_else(|| format!("{key}={v} is not a number (a percentage between 0 and 100)"))
}

fn local_err(summary: &str, m: String) -> Error {
    Error::new(
        ErrorKind::Provider,
        Diagnostic::error(codes::LOCAL_CLOUD, summary.to_string()).detail(m),
    )
}

impl Stack {
    async fn local_cloud(&self) -> Result<LocalCloud, Error> {
        let knobs = local_knobs(&Value::Null, &self.settings.provider_env)?;
        open_local(&self.local_cloud_path(), knobs).await
    }

    /// Everything in the local cloud.
    pub async fn local_inventory(&self) -> Result<Vec<Observed>, Error> {
        self.local_cloud()
            .await?
            .all()
            .await
            .map_err(|m| local_err("cannot read the local cloud", m))
    }

    /// Changes the resource state knows as `address` in the local cloud; returns its id.
    pub async fn local_mutate(
        &mut self,
        address: &Address,
        change: &LocalChange,
    ) -> Result<String, Error> {
        let row = self.state_row(address).await?;
        let cloud = self.local_cloud().await?;
        match change {
            LocalChange::Delete => cloud.remove(&row.cloud_id).await.map(|_| ()),
            LocalChange::Set(kvs) => {
                let mut r = Ok(());
                let mut usage = (None, None);
                for (k, v) in kvs {
                    r = match k.as_str() {
                        // A simulated reading, not an attribute: never drift.
                        CPU_UTILISATION => percent(k, v).map(|p| usage.0 = Some(p)),
                        MEMORY_UTILISATION => percent(k, v).map(|p| usage.1 = Some(p)),
                        _ => cloud.mutate(&row.cloud_id, k, v.clone()).await,
                    };
                    if r.is_err() {
                        break;
                    }
                }
                if r.is_ok() && (usage.0.is_some() || usage.1.is_some()) {
                    r = cloud.set_utilisation(&row.cloud_id, usage.0, usage.1).await;
                }
                r
            }
        }
        .map_err(|m| local_err("cannot change the local cloud", m))?;
        Ok(row.cloud_id)
    }
}
