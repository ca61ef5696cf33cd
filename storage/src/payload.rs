//! Payloads of the atomic-writer volumes: configMap, secret, downwardAPI and the non-token
//! sources of projected volumes.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{ConfigMap, DownwardAPIVolumeFile, KeyToPath, Pod, Secret};
use k8slite_api::quantity::Quantity;

use crate::atomic::{FileProjection, Payload};
use crate::downward::{field_value, resource_value};
use crate::fsutil::validate_relative;
use crate::{VolumeError, VolumeSource};

/// The default file mode of configMap, secret, downwardAPI and projected volumes (0644).
pub const DEFAULT_MODE: i32 = 0o644;

/// A mode from the API (decimal in JSON), checked.
pub(crate) fn mode(m: Option<i32>, default: i32) -> Result<u32, VolumeError> {
    let m = m.unwrap_or(default);
    u32::try_from(m)
        .ok()
        .filter(|m| *m <= 0o777)
        .ok_or(VolumeError::InvalidMode(m))
}

/// Keys → contents, from items or every key.
fn project(
    keys: &BTreeMap<String, Vec<u8>>,
    items: Option<&[KeyToPath]>,
    default_mode: u32,
    optional: bool,
    missing: impl Fn(&str) -> VolumeError,
) -> Result<Payload, VolumeError> {
    let mut out = Payload::new();
    match items {
        None => {
            for (k, v) in keys {
                out.insert(
                    k.clone(),
                    FileProjection {
                        data: v.clone(),
                        mode: default_mode,
                    },
                );
            }
        }
        Some(items) => {
            for item in items {
                validate_relative(&item.path, false)?;
                let Some(v) = keys.get(&item.key) else {
                    if optional {
                        continue;
                    }
                    return Err(missing(&item.key));
                };
                let m = match item.mode {
                    Some(m) => mode(Some(m), 0)?,
                    None => default_mode,
                };
                out.insert(
                    item.path.clone(),
                    FileProjection {
                        data: v.clone(),
                        mode: m,
                    },
                );
            }
        }
    }
    Ok(out)
}

fn source_err(what: String) -> impl FnOnce(crate::SourceError) -> VolumeError {
    move |source| VolumeError::Source { what, source }
}

/// The payload of a config map (volume or projection).
pub(crate) async fn config_map(
    source: &dyn VolumeSource,
    namespace: &str,
    name: &str,
    items: Option<&[KeyToPath]>,
    default_mode: u32,
    optional: bool,
) -> Result<Payload, VolumeError> {
    let cm: Option<ConfigMap> = source
        .config_map(namespace, name)
        .await
        .map_err(source_err(format!("get configmap {name:?}")))?;
    let Some(cm) = cm else {
        return if optional {
            Ok(Payload::new())
        } else {
            Err(VolumeError::ConfigMapNotFound(name.to_string()))
        };
    };
    let mut keys: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    for (k, v) in cm.data.unwrap_or_default() {
        keys.insert(k, v.into_bytes());
    }
    for (k, v) in cm.binary_data.unwrap_or_default() {
        keys.insert(k, v.0);
    }
    project(&keys, items, default_mode, optional, |k| {
        VolumeError::ConfigMapKey(k.to_string())
    })
}

/// The payload of a secret (volume or projection).
pub(crate) async fn secret(
    source: &dyn VolumeSource,
    namespace: &str,
    name: &str,
    items: Option<&[KeyToPath]>,
    default_mode: u32,
    optional: bool,
) -> Result<Payload, VolumeError> {
    let s: Option<Secret> = source
        .secret(namespace, name)
        .await
        .map_err(source_err(format!("get secret {name:?}")))?;
    let Some(s) = s else {
        return if optional {
            Ok(Payload::new())
        } else {
            Err(VolumeError::SecretNotFound(name.to_string()))
        };
    };
    let mut keys: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    for (k, v) in s.data.unwrap_or_default() {
        keys.insert(k, v.0);
    }
    // stringData is write-only in the API; honour it should a source hand it over unmerged
    for (k, v) in s.string_data.unwrap_or_default() {
        keys.entry(k).or_insert_with(|| v.into_bytes());
    }
    project(&keys, items, default_mode, optional, |k| {
        VolumeError::SecretKey(k.to_string())
    })
}

/// The payload of downward API items.
pub(crate) fn downward_api(
    pod: &Pod,
    items: &[DownwardAPIVolumeFile],
    default_mode: u32,
    allocatable: &BTreeMap<String, Quantity>,
) -> Result<Payload, VolumeError> {
    let mut out = Payload::new();
    for item in items {
        validate_relative(&item.path, false)?;
        let value = match (&item.field_ref, &item.resource_field_ref) {
            (Some(f), _) => field_value(pod, &f.field_path)?,
            (None, Some(r)) => resource_value(pod, r, allocatable)?,
            (None, None) => {
                return Err(VolumeError::FieldPath(format!(
                    "item {:?} has neither fieldRef nor resourceFieldRef",
                    item.path
                )));
            }
        };
        let m = match item.mode {
            Some(m) => mode(Some(m), 0)?,
            None => default_mode,
        };
        out.insert(
            item.path.clone(),
            FileProjection {
                data: value.into_bytes(),
                mode: m,
            },
        );
    }
    Ok(out)
}
