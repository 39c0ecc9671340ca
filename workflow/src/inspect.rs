//! Reading state: its rows, one resource, its history; and removing a stale lock.

use chimera_model::{Address, Diagnostic, StateResource, codes};
use chimera_state::GenerationInfo;
use serde::Serialize;

use crate::error::{Error, ErrorKind};
use crate::stack::Stack;

/// A stack's current state as `chimera state pull` prints it (and `chimera test` reads as a
/// fixture).
#[derive(Debug, Serialize)]
pub struct Pulled {
    pub stack: String,
    pub lineage: Option<String>,
    pub serial: u64,
    pub resources: Vec<StateResource>,
}

impl Stack {
    /// The current state rows.
    pub async fn state_rows(&mut self) -> Result<Vec<StateResource>, Error> {
        let stack = self.name()?;
        Ok(self.store().await?.current(&stack).await?)
    }

    /// One resource's current state row.
    pub async fn state_row(&mut self, address: &Address) -> Result<StateResource, Error> {
        let stack = self.name()?;
        self.state_rows()
            .await?
            .into_iter()
            .find(|r| &r.address == address)
            .ok_or_else(|| {
                Error::new(
                    ErrorKind::Input,
                    Diagnostic::error(codes::NOT_IN_STATE, "no such resource in state").detail(
                        format!(
                            "{address} is not in the state of stack `{stack}`; `chimera state list` shows what is"
                        ),
                    ),
                )
            })
    }

    /// The current state with its lineage and serial.
    pub async fn pull(&mut self) -> Result<Pulled, Error> {
        let stack = self.name()?;
        let store = self.store().await?;
        let resources = store.current(&stack).await?;
        let info = store.stack(&stack).await?;
        Ok(Pulled {
            lineage: info.as_ref().map(|i| i.lineage.clone()),
            serial: info.map(|i| i.serial).unwrap_or(0),
            stack,
            resources,
        })
    }

    /// The stack's generations, oldest first.
    pub async fn history(&mut self) -> Result<Vec<GenerationInfo>, Error> {
        let stack = self.name()?;
        Ok(self.store().await?.history(&stack).await?)
    }

    /// Removes the stack's lock; `false` when it was not locked.
    pub async fn force_unlock(&mut self) -> Result<bool, Error> {
        let stack = self.name()?;
        let actor = self.settings.actor.clone();
        let store = self.store().await?;
        let removed = store.force_unlock(&stack).await?;
        if removed {
            let _ = store.audit(&actor, "force-unlock", &stack, "ok", "").await;
        }
        Ok(removed)
    }
}
