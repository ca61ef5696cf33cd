//! [`ImageBackend`] over containerd's own gRPC services (content, images, leases).

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use containerd_client::services::v1::{
    AbortRequest, CreateImageRequest, GetImageRequest, Image, Info, InfoRequest,
    UpdateImageRequest, UpdateRequest,
};
use containerd_client::tonic::{
    Code, Request, Status, metadata::AsciiMetadataValue, transport::Channel,
};
use containerd_client::types::Descriptor;

use super::backend::{BlobWrite, ImageBackend, ImageRecord, WriteOutcome};
use super::{CRI_NAMESPACE, ImageError, Result};

/// Timeout for unary calls (blob writes have none: layers can be large).
const CALL_TIMEOUT: Duration = Duration::from_secs(60);
/// Timeout for connecting to the socket.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// A lease left behind by a crashed importer expires after this long.
const LEASE_EXPIRY: Duration = Duration::from_secs(3600);

/// containerd's content, images and leases services in one namespace (CRI's `k8s.io` unless
/// changed with [`ContainerdImages::with_namespace`]).
#[derive(Clone)]
pub struct ContainerdImages {
    channel: Channel,
    namespace: AsciiMetadataValue,
    socket: PathBuf,
}

/// Connect to containerd's gRPC socket (e.g. `/run/k8slite/containerd/containerd.sock`); the
/// result imports into namespace `k8s.io`.
pub async fn connect(socket: impl AsRef<Path>) -> Result<ContainerdImages> {
    let socket = socket.as_ref().to_path_buf();
    let channel =
        match tokio::time::timeout(CONNECT_TIMEOUT, containerd_client::connect(&socket)).await {
            Err(_) => return Err(ImageError::ConnectTimeout { socket }),
            Ok(Err(source)) => return Err(ImageError::Connect { socket, source }),
            Ok(Ok(c)) => c,
        };
    Ok(ContainerdImages {
        channel,
        namespace: AsciiMetadataValue::from_static(CRI_NAMESPACE),
        socket,
    })
}

impl ContainerdImages {
    /// Use another containerd namespace.
    pub fn with_namespace(mut self, namespace: &str) -> Result<Self> {
        self.namespace =
            AsciiMetadataValue::try_from(namespace).map_err(|_| ImageError::InvalidReference {
                reference: namespace.to_string(),
                reason: "not a valid containerd namespace".into(),
            })?;
        Ok(self)
    }

    /// The socket this client talks to.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// The underlying gRPC channel (for other containerd services).
    pub fn channel(&self) -> Channel {
        self.channel.clone()
    }

    pub(super) fn request<T>(
        &self,
        msg: T,
        lease: Option<&str>,
        timeout: bool,
    ) -> Result<Request<T>> {
        let mut req = Request::new(msg);
        req.metadata_mut()
            .insert("containerd-namespace", self.namespace.clone());
        if let Some(lease) = lease {
            let v = AsciiMetadataValue::try_from(lease).map_err(|_| {
                ImageError::containerd(
                    "lease",
                    Status::invalid_argument(format!("bad lease id {lease}")),
                )
            })?;
            req.metadata_mut().insert("containerd-lease", v);
        }
        if timeout {
            req.set_timeout(CALL_TIMEOUT);
        }
        Ok(req)
    }
}

fn expiry_label() -> String {
    let at = SystemTime::now() + LEASE_EXPIRY;
    match jiff::Timestamp::try_from(at) {
        Ok(ts) => ts.to_string(),
        Err(_) => String::new(),
    }
}

#[async_trait]
impl ImageBackend for ContainerdImages {
    async fn lease_create(&self) -> Result<String> {
        use containerd_client::services::v1::CreateRequest;
        let nanos = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        let id = format!("k8slite-import-{}-{nanos}", std::process::id());
        let mut labels = HashMap::new();
        let expire = expiry_label();
        if !expire.is_empty() {
            labels.insert("containerd.io/gc.expire".to_string(), expire);
        }
        let req = self.request(
            CreateRequest {
                id: id.clone(),
                labels,
            },
            None,
            true,
        )?;
        let mut client =
            containerd_client::services::v1::leases_client::LeasesClient::new(self.channel());
        client
            .create(req)
            .await
            .map_err(|s| ImageError::containerd(format!("leases.Create {id}"), s))?;
        Ok(id)
    }

    async fn lease_delete(&self, lease: &str) -> Result<()> {
        use containerd_client::services::v1::DeleteRequest;
        let req = self.request(
            DeleteRequest {
                id: lease.to_string(),
                sync: false,
            },
            None,
            true,
        )?;
        let mut client =
            containerd_client::services::v1::leases_client::LeasesClient::new(self.channel());
        match client.delete(req).await {
            Ok(_) => Ok(()),
            Err(s) if s.code() == Code::NotFound => Ok(()),
            Err(s) => Err(ImageError::containerd(format!("leases.Delete {lease}"), s)),
        }
    }

    async fn lease_add_content(&self, lease: &str, digest: &str) -> Result<()> {
        use containerd_client::services::v1::{AddResourceRequest, Resource};
        let resource = Resource {
            id: digest.to_string(),
            r#type: "content".to_string(),
        };
        let req = self.request(
            AddResourceRequest {
                id: lease.to_string(),
                resource: Some(resource),
            },
            None,
            true,
        )?;
        let mut client =
            containerd_client::services::v1::leases_client::LeasesClient::new(self.channel());
        client
            .add_resource(req)
            .await
            .map_err(|s| ImageError::containerd(format!("leases.AddResource {digest}"), s))?;
        Ok(())
    }

    async fn content_size(&self, digest: &str) -> Result<Option<u64>> {
        let req = self.request(
            InfoRequest {
                digest: digest.to_string(),
            },
            None,
            true,
        )?;
        match self.content_client().info(req).await {
            Ok(resp) => Ok(resp
                .into_inner()
                .info
                .map(|i| u64::try_from(i.size).unwrap_or(0))),
            Err(s) if s.code() == Code::NotFound => Ok(None),
            Err(s) => Err(ImageError::containerd(format!("content.Info {digest}"), s)),
        }
    }

    async fn content_set_labels(
        &self,
        digest: &str,
        labels: &BTreeMap<String, String>,
    ) -> Result<()> {
        if labels.is_empty() {
            return Ok(());
        }
        let info = Info {
            digest: digest.to_string(),
            labels: labels.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
            ..Default::default()
        };
        let paths = labels.keys().map(|k| format!("labels.{k}")).collect();
        let msg = UpdateRequest {
            info: Some(info),
            update_mask: Some(prost_types::FieldMask { paths }),
        };
        let req = self.request(msg, None, true)?;
        self.content_client()
            .update(req)
            .await
            .map_err(|s| ImageError::containerd(format!("content.Update {digest}"), s))?;
        Ok(())
    }

    async fn content_write(&self, lease: &str, blob: BlobWrite) -> Result<WriteOutcome> {
        super::write::write_blob(self, lease, blob).await
    }

    async fn image_get(&self, name: &str) -> Result<Option<ImageRecord>> {
        let req = self.request(
            GetImageRequest {
                name: name.to_string(),
            },
            None,
            true,
        )?;
        match self.images_client().get(req).await {
            Ok(resp) => Ok(resp.into_inner().image.map(from_image)),
            Err(s) if s.code() == Code::NotFound => Ok(None),
            Err(s) => Err(ImageError::containerd(format!("images.Get {name}"), s)),
        }
    }

    async fn image_put(&self, lease: &str, image: &ImageRecord) -> Result<()> {
        let msg = CreateImageRequest {
            image: Some(to_image(image)),
            source_date_epoch: None,
        };
        let req = self.request(msg, Some(lease), true)?;
        match self.images_client().create(req).await {
            Ok(_) => return Ok(()),
            Err(s) if s.code() == Code::AlreadyExists => {}
            Err(s) => {
                return Err(ImageError::containerd(
                    format!("images.Create {}", image.name),
                    s,
                ));
            }
        }
        let mut paths = vec!["target".to_string()];
        paths.extend(image.labels.keys().map(|k| format!("labels.{k}")));
        let msg = UpdateImageRequest {
            image: Some(to_image(image)),
            update_mask: Some(prost_types::FieldMask { paths }),
            source_date_epoch: None,
        };
        let req = self.request(msg, Some(lease), true)?;
        self.images_client()
            .update(req)
            .await
            .map_err(|s| ImageError::containerd(format!("images.Update {}", image.name), s))?;
        Ok(())
    }
}

impl ContainerdImages {
    pub(super) fn content_client(
        &self,
    ) -> containerd_client::services::v1::content_client::ContentClient<Channel> {
        containerd_client::services::v1::content_client::ContentClient::new(self.channel())
    }

    fn images_client(
        &self,
    ) -> containerd_client::services::v1::images_client::ImagesClient<Channel> {
        containerd_client::services::v1::images_client::ImagesClient::new(self.channel())
    }

    pub(super) async fn abort(&self, reference: &str) {
        if let Ok(req) = self.request(
            AbortRequest {
                r#ref: reference.to_string(),
            },
            None,
            true,
        ) && let Err(s) = self.content_client().abort(req).await
            && s.code() != Code::NotFound
        {
            tracing::debug!(reference, error = %s, "aborting content write failed");
        }
    }
}

fn to_image(image: &ImageRecord) -> Image {
    Image {
        name: image.name.clone(),
        labels: image
            .labels
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
        target: Some(Descriptor {
            media_type: image.media_type.clone(),
            digest: image.digest.clone(),
            size: i64::try_from(image.size).unwrap_or(i64::MAX),
            annotations: HashMap::new(),
        }),
        created_at: None,
        updated_at: None,
    }
}

fn from_image(image: Image) -> ImageRecord {
    let target = image.target.unwrap_or_default();
    ImageRecord {
        name: image.name,
        media_type: target.media_type,
        digest: target.digest,
        size: u64::try_from(target.size).unwrap_or(0),
        labels: image.labels.into_iter().collect(),
    }
}
