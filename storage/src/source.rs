//! What the storage crate needs from outside: API objects ([`VolumeSource`], implemented by the
//! agent over its client) and the time ([`Clock`]).

use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use k8s_openapi::api::core::v1::{ConfigMap, PersistentVolume, PersistentVolumeClaim, Pod, Secret};

use crate::SourceError;

/// A service-account token obtained with a TokenRequest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceAccountToken {
    /// The token (a JWT).
    pub token: String,
    /// When it expires (`status.expirationTimestamp`).
    pub expiration: SystemTime,
}

/// The API objects volumes are made of. `Ok(None)` means "not found"; errors are anything else
/// (the message ends up in the pod's `FailedMount` event).
#[async_trait]
pub trait VolumeSource: Send + Sync {
    /// `GET /api/v1/namespaces/{namespace}/configmaps/{name}`.
    async fn config_map(
        &self,
        namespace: &str,
        name: &str,
    ) -> Result<Option<ConfigMap>, SourceError>;
    /// `GET /api/v1/namespaces/{namespace}/secrets/{name}`.
    async fn secret(&self, namespace: &str, name: &str) -> Result<Option<Secret>, SourceError>;
    /// `POST .../serviceaccounts/{service_account}/token` bound to `pod` (kind Pod, name, uid),
    /// with the audience (`None`: the API server's) and the requested lifetime.
    async fn service_account_token(
        &self,
        pod: &Pod,
        service_account: &str,
        audience: Option<&str>,
        expiration_seconds: i64,
    ) -> Result<ServiceAccountToken, SourceError>;
    /// `GET /api/v1/namespaces/{namespace}/persistentvolumeclaims/{name}`.
    async fn persistent_volume_claim(
        &self,
        namespace: &str,
        name: &str,
    ) -> Result<Option<PersistentVolumeClaim>, SourceError>;
    /// `GET /api/v1/persistentvolumes/{name}`.
    async fn persistent_volume(&self, name: &str) -> Result<Option<PersistentVolume>, SourceError>;
}

/// The wall clock (a seam for token-refresh tests).
pub trait Clock: Send + Sync {
    /// Now.
    fn now(&self) -> SystemTime;
}

/// The system's clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> SystemTime {
        SystemTime::now()
    }
}

/// A clock that only moves when told to (tests).
#[derive(Debug)]
pub struct ManualClock(Mutex<SystemTime>);

impl ManualClock {
    /// A clock showing `start`.
    pub fn new(start: SystemTime) -> Self {
        Self(Mutex::new(start))
    }

    /// Move the clock forward.
    pub fn advance(&self, by: Duration) {
        let mut now = self.0.lock().unwrap_or_else(|e| e.into_inner());
        *now += by;
    }

    /// Set the clock.
    pub fn set(&self, to: SystemTime) {
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) = to;
    }
}

impl Clock for ManualClock {
    fn now(&self) -> SystemTime {
        *self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}
