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
                for (k, v) in kvs {
                    r = cloud.mutate(&row.cloud_id, k, v.clone()).await;
                    if r.is_err() {
                        break;
                    }
                }
                r
            }
        }
        .map_err(|m| local_err("cannot change the local cloud", m))?;
        Ok(row.cloud_id)
    }
}
