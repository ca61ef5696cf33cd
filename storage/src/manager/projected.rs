//! Projected volumes: the combined payload of their sources and service-account tokens.

use std::collections::{BTreeMap, HashSet};

use k8s_openapi::api::core::v1::{Pod, ProjectedVolumeSource, ServiceAccountTokenProjection};

use super::VolumeManager;
use crate::atomic::{self, Payload};
use crate::payload::{self, DEFAULT_MODE, mode};
use crate::token::{CachedToken, DEFAULT_EXPIRATION_SECONDS};
use crate::{VolumeError, VolumeSource};

impl VolumeManager {
    /// The combined payload of a projected volume.
    pub(super) async fn projected(
        &self,
        pod: &Pod,
        p: &ProjectedVolumeSource,
        source: &dyn VolumeSource,
        tokens: &mut BTreeMap<String, CachedToken>,
    ) -> Result<Payload, VolumeError> {
        let namespace = pod.metadata.namespace.as_deref().unwrap_or("default");
        let dm = mode(p.default_mode, DEFAULT_MODE)?;
        let mut out = Payload::new();
        let mut live_tokens = HashSet::new();
        for s in p.sources.iter().flatten() {
            let part = if let Some(c) = &s.config_map {
                let optional = c.optional.unwrap_or(false);
                payload::config_map(source, namespace, &c.name, c.items.as_deref(), dm, optional)
                    .await?
            } else if let Some(c) = &s.secret {
                let optional = c.optional.unwrap_or(false);
                payload::secret(source, namespace, &c.name, c.items.as_deref(), dm, optional)
                    .await?
            } else if let Some(d) = &s.downward_api {
                let items = d.items.as_deref().unwrap_or_default();
                payload::downward_api(pod, items, dm, &self.options.node_allocatable)?
            } else if let Some(t) = &s.service_account_token {
                live_tokens.insert(t.path.clone());
                let token = self.token(pod, t, source, tokens).await?;
                Payload::from([(
                    t.path.clone(),
                    atomic::FileProjection {
                        data: token.into_bytes(),
                        mode: dm,
                    },
                )])
            } else if s.cluster_trust_bundle.is_some() {
                return Err(VolumeError::Unsupported(
                    "projected clusterTrustBundle".into(),
                ));
            } else {
                continue;
            };
            out.extend(part);
        }
        tokens.retain(|path, _| live_tokens.contains(path));
        Ok(out)
    }

    /// The token of one projection: the cached one unless due for renewal.
    async fn token(
        &self,
        pod: &Pod,
        t: &ServiceAccountTokenProjection,
        source: &dyn VolumeSource,
        tokens: &mut BTreeMap<String, CachedToken>,
    ) -> Result<String, VolumeError> {
        let now = self.clock.now();
        if let Some(c) = tokens.get(&t.path)
            && !c.needs_refresh(now)
        {
            return Ok(c.token.clone());
        }
        let spec = pod.spec.as_ref();
        let sa = spec
            .and_then(|s| {
                s.service_account_name
                    .clone()
                    .or_else(|| s.service_account.clone())
            })
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| "default".to_string());
        let audience = t.audience.as_deref().filter(|a| !a.is_empty());
        let expiration = t.expiration_seconds.unwrap_or(DEFAULT_EXPIRATION_SECONDS);
        let got = match source
            .service_account_token(pod, &sa, audience, expiration)
            .await
        {
            Ok(got) => got,
            // renewal failed but the old token is still valid: keep serving it (the kubelet
            // does the same) and try again on the next refresh
            Err(e) => match tokens.get(&t.path) {
                Some(c) if now < c.expiration => {
                    tracing::warn!(sa = %sa, path = %t.path, error = %e, "token renewal failed; keeping the current token");
                    return Ok(c.token.clone());
                }
                _ => return Err(VolumeError::Token(e)),
            },
        };
        tracing::debug!(sa = %sa, path = %t.path, "service account token obtained");
        tokens.insert(
            t.path.clone(),
            CachedToken {
                token: got.token.clone(),
                issued: now,
                expiration: got.expiration,
            },
        );
        Ok(got.token)
    }
}
