//! STUB(job): filled in by its owner this session.

use tokio_util::sync::CancellationToken;

use crate::{Ctx, Error};

/// Run until `shutdown`.
pub async fn run(ctx: Ctx, shutdown: CancellationToken) -> Result<(), Error> {
    let _ = ctx;
    shutdown.cancelled().await;
    Ok(())
}
