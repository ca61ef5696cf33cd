//! containerd's content `Write`: one bidirectional stream per blob, chunks then a commit.

use std::collections::HashMap;

use containerd_client::services::v1::{WriteAction, WriteContentRequest};
use containerd_client::tonic::{Code, Status};

use super::backend::{BlobWrite, WriteOutcome};
use super::containerd::ContainerdImages;
use super::{ImageError, Result};

/// State of the request stream of one content `Write`.
struct WriteState {
    chunks: tokio::sync::mpsc::Receiver<std::io::Result<Vec<u8>>>,
    reference: String,
    digest: String,
    total: i64,
    offset: i64,
    labels: HashMap<String, String>,
    done: bool,
    failure: std::sync::Arc<std::sync::Mutex<Option<std::io::Error>>>,
}

pub(super) async fn write_blob(
    client: &ContainerdImages,
    lease: &str,
    blob: BlobWrite,
) -> Result<WriteOutcome> {
    let reference = format!("k8slite-import-{}", blob.digest);
    let call = || format!("content.Write {}", blob.digest);
    let failure = std::sync::Arc::new(std::sync::Mutex::new(None));
    let state = WriteState {
        chunks: blob.chunks,
        reference: reference.clone(),
        digest: blob.digest.clone(),
        total: i64::try_from(blob.size).unwrap_or(i64::MAX),
        offset: 0,
        labels: blob.labels.into_iter().collect(),
        done: false,
        failure: failure.clone(),
    };
    // Every message carries its offset: containerd truncates the ingest on a write at offset 0.
    let requests = futures::stream::unfold(state, |mut st| async move {
        if st.done {
            return None;
        }
        let (action, data) = match st.chunks.recv().await {
            Some(Ok(data)) => (WriteAction::Write, data),
            Some(Err(e)) => {
                if let Ok(mut f) = st.failure.lock() {
                    *f = Some(e);
                }
                return None;
            }
            None => {
                st.done = true;
                (WriteAction::Commit, Vec::new())
            }
        };
        let msg = WriteContentRequest {
            action: action as i32,
            r#ref: st.reference.clone(),
            total: st.total,
            expected: st.digest.clone(),
            offset: st.offset,
            labels: if st.done {
                std::mem::take(&mut st.labels)
            } else {
                HashMap::new()
            },
            data,
        };
        st.offset += msg.data.len() as i64;
        Some((msg, st))
    });
    let req = client.request(requests, Some(lease), false)?;
    let mut committed = false;
    let result = async {
        let mut responses = client.content_client().write(req).await?.into_inner();
        while let Some(resp) = responses.message().await? {
            if resp.action == WriteAction::Commit as i32 {
                committed = true;
            }
        }
        Ok::<_, Status>(())
    }
    .await;
    match result {
        Err(s) if s.code() == Code::AlreadyExists => return Ok(WriteOutcome::AlreadyPresent),
        Err(s) => {
            client.abort(&reference).await;
            return Err(ImageError::containerd(call(), s));
        }
        Ok(()) => {}
    }
    let failed = failure.lock().ok().and_then(|mut f| f.take());
    if let Some(e) = failed {
        client.abort(&reference).await;
        return Err(ImageError::containerd(
            call(),
            Status::data_loss(format!("reading the blob failed: {e}")),
        ));
    }
    if !committed {
        client.abort(&reference).await;
        return Err(ImageError::containerd(
            call(),
            Status::unknown("the write ended without a commit"),
        ));
    }
    Ok(WriteOutcome::Written)
}
