//! Reading the cloud: drift, refresh, import, orphans.

use chimera_engine::Drift;
use chimera_model::{Address, ProviderName};
use chimera_providers::{CloudRef, Observed};

use crate::error::Error;
use crate::stack::Stack;

/// What a refresh found, and the generation it recorded (none for a dry run or no drift).
#[derive(Debug)]
pub struct Refreshed {
    pub stack: String,
    pub drift: Vec<Drift>,
    pub serial: Option<u64>,
}

impl Stack {
    /// Reads every resource from its cloud and reports drift; unless `dry_run`, records it as
    /// a generation so the next plan shows how to heal it.
    pub async fn refresh(&mut self, dry_run: bool) -> Result<Refreshed, Error> {
        let stack = self.name()?;
        let actor = self.settings.actor.clone();
        let (store, providers) = self.state_and_providers().await?;
        let (drift, serial) = if dry_run {
            (
                chimera_engine::detect_drift(store, providers, &stack).await?,
                None,
            )
        } else {
            chimera_engine::refresh(store, providers, &stack, &actor).await?
        };
        Ok(Refreshed {
            stack,
            drift,
            serial,
        })
    }

    /// Adopts the cloud resource `cloud_id` of `provider` (in `native_region`, or empty to
    /// search the provider's regions) as `address`; returns the new generation.
    pub async fn import(
        &mut self,
        address: &Address,
        provider: ProviderName,
        cloud_id: &str,
        native_region: &str,
    ) -> Result<u64, Error> {
        let stack = self.name()?;
        let actor = self.settings.actor.clone();
        let (store, providers) = self.state_and_providers().await?;
        Ok(chimera_engine::import(
            store,
            providers,
            &stack,
            address,
            provider,
            &CloudRef::new(address.kind, cloud_id, native_region),
            &actor,
        )
        .await?)
    }

    /// Resources tagged for the stack on `scan` (default: the providers its state uses, or
    /// `local`) but absent from its state.
    pub async fn orphans(&mut self, scan: &[ProviderName]) -> Result<Vec<Observed>, Error> {
        let stack = self.name()?;
        let mut scan = scan.to_vec();
        if scan.is_empty() {
            scan.extend(
                self.store()
                    .await?
                    .current(&stack)
                    .await?
                    .iter()
                    .map(|r| r.provider),
            );
            if scan.is_empty() {
                scan.push(ProviderName::Local);
            }
        }
        scan.sort_by_key(|p| p.as_str());
        scan.dedup();
        let (store, providers) = self.state_and_providers().await?;
        Ok(chimera_engine::orphans(store, providers, &stack, &scan).await?)
    }
}
