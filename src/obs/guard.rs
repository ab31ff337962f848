//! [`ObsGuard`]: flushes and shuts the global instance down at the end of `main`.

use std::fmt;

use super::Obs;
use crate::core::error::Error;

/// Flushes and shuts down the global instance when dropped. Keep it alive for all of `main`:
///
/// ```no_run
/// fn main() -> Result<(), mercenary_obs::Error> {
///     let _guard = mercenary_obs::Obs::builder().service_name("api").from_env().init()?;
///     // ... run the server ...
///     Ok(())
/// }
/// ```
///
/// Shutting down is bounded by [`ObsBuilder::shutdown_timeout`](crate::ObsBuilder::shutdown_timeout):
/// it never hangs, on any runtime flavour, because it waits on a plain thread, not on the async
/// runtime. Lines logged after shutdown are written synchronously.
#[must_use = "dropping the guard at once shuts the log writer down at once"]
pub struct ObsGuard {
    obs: Option<Obs>,
}

impl fmt::Debug for ObsGuard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ObsGuard").finish_non_exhaustive()
    }
}

impl ObsGuard {
    pub(crate) fn new(obs: Obs) -> Self {
        Self { obs: Some(obs) }
    }

    /// The installed instance.
    pub fn obs(&self) -> Option<&Obs> {
        self.obs.as_ref()
    }

    /// Flushes and shuts down now, reporting whether everything was written in time.
    pub fn shutdown(mut self) -> Result<(), Error> {
        self.shutdown_inner()
    }

    fn shutdown_inner(&mut self) -> Result<(), Error> {
        let Some(obs) = self.obs.take() else {
            return Ok(());
        };
        let timeout = obs.inner.pipelines.shutdown_timeout;
        if obs.inner.pipelines.shutdown(timeout) {
            Ok(())
        } else {
            Err(Error::ShutdownTimedOut { timeout })
        }
    }
}

impl Drop for ObsGuard {
    fn drop(&mut self) {
        let _ = self.shutdown_inner();
    }
}
