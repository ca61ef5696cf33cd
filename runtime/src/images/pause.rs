//! k8slite's own pause image: the pause binary as `/pause`, entrypoint `["/pause"]`.

use super::Result;
use super::backend::ImageBackend;
use super::builder::ImageBuilder;
use super::import::{ImportSummary, import_bytes};

/// Build the pause image named `name` from the pause program `binary` in memory and import it.
/// The image is deterministic: importing the same binary again writes nothing.
pub async fn import_pause_image(
    backend: &dyn ImageBackend,
    name: &str,
    binary: &[u8],
) -> Result<ImportSummary> {
    let archive = ImageBuilder::new()
        .tag(name)
        .file("pause", binary.to_vec(), 0o755)
        .entrypoint(["/pause"])
        .docker_archive()?;
    import_bytes(backend, &format!("pause image {name}"), archive).await
}
