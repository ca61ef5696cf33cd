//! k8slite-scheduler: places pending pods on nodes (filter → score → bind via `pods/binding`).

use tokio_util::sync::CancellationToken;

/// Errors of the scheduler.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A call to the API failed.
    #[error("kubernetes api: {0}")]
    Kube(#[from] kube::Error),
}

/// Run the scheduler until `shutdown`.
pub async fn run(client: kube::Client, shutdown: CancellationToken) -> Result<(), Error> {
    // STUB(scheduler): replaced by the scheduler helper.
    let _ = client;
    shutdown.cancelled().await;
    Ok(())
}
