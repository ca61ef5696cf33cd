//! What the node's network keeps across agent restarts, under `<data-dir>/agent/network/`
//! (framed, checked, atomic state files of [`k8slite_network::persist`]):
//!
//! - `cluster-network.state`: the server's cluster network settings (the data of
//!   `kube-system/k8slite-network`, before this agent's overrides), written when they are read
//!   from the API server and differ from the file;
//! - `dns-records.state`: a snapshot of the cluster DNS records
//!   ([`k8slite_network::dns::Records::to_snapshot`]), written by the DNS loop when the records
//!   changed, at most once a minute, and at shutdown.
//!
//! With both, a restarting agent answers DNS before it joins ([`super::dns::start_early`]).
//! A missing or corrupt file is ignored with a warning.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use k8s_openapi::api::core::v1::ConfigMap;
use k8slite_api::cluster_network::ClusterNetwork;
use k8slite_network::persist::{Debounce, FileStore, StateFile, StateStore};

/// File of the cluster network settings.
pub const SETTINGS_FILE: &str = "cluster-network.state";
/// File of the DNS records snapshot.
pub const DNS_RECORDS_FILE: &str = "dns-records.state";
/// Kind word of the settings file.
const SETTINGS_KIND: &str = "cluster-network";
/// Kind word of the records file.
pub(super) const DNS_KIND: &str = "dns-records";
/// At most one records write per this interval.
pub const DNS_WRITE_INTERVAL: Duration = Duration::from_secs(60);
/// Changes settle this long before the records are written.
pub const DNS_WRITE_SETTLE: Duration = Duration::from_secs(5);

/// The records file in `dir`.
pub(super) fn dns_records(dir: &Path) -> StateFile<FileStore> {
    StateFile::new(FileStore::new(dir.join(DNS_RECORDS_FILE)), DNS_KIND)
}

/// The debounce of the records writes.
pub(super) fn dns_debounce() -> Debounce {
    Debounce::new(DNS_WRITE_INTERVAL, DNS_WRITE_SETTLE)
}

/// The settings saved in `store`, `None` (logged) when missing or unusable.
pub fn load_settings<S: StateStore>(store: S) -> Option<ClusterNetwork> {
    let body = StateFile::new(store, SETTINGS_KIND).load()?;
    let data: BTreeMap<String, String> = match serde_json::from_slice(&body) {
        Ok(d) => d,
        Err(e) => {
            tracing::warn!("ignoring saved cluster network settings: {e}");
            return None;
        }
    };
    let cm = ConfigMap {
        data: Some(data),
        ..ConfigMap::default()
    };
    match ClusterNetwork::from_config_map(&cm) {
        Ok(s) => Some(s),
        Err(e) => {
            tracing::warn!("ignoring saved cluster network settings: {e}");
            None
        }
    }
}

/// Save `settings` into `store` unless it holds them already; whether it was written.
pub fn save_settings<S: StateStore>(store: S, settings: &ClusterNetwork) -> bool {
    let data = settings.to_config_map().data.unwrap_or_default();
    let body = match serde_json::to_vec(&data) {
        Ok(b) => b,
        Err(e) => {
            tracing::warn!("encoding the cluster network settings: {e}");
            return false;
        }
    };
    let mut file = StateFile::new(store, SETTINGS_KIND);
    // Loading first remembers what the file holds, so equal settings are not rewritten.
    let _ = file.load();
    match file.save(&body) {
        Ok(wrote) => wrote,
        Err(e) => {
            tracing::warn!("saving the cluster network settings: {e}");
            false
        }
    }
}

/// The settings store in `dir`.
pub(super) fn settings_store(dir: &Path) -> FileStore {
    FileStore::new(dir.join(SETTINGS_FILE))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use k8slite_network::persist::{MemoryStore, frame};

    use super::*;

    fn settings() -> ClusterNetwork {
        ClusterNetwork {
            cluster_cidr: "10.42.0.0/16".parse().unwrap(),
            service_cidr: "10.43.0.0/16".parse().unwrap(),
            cluster_dns: "10.43.0.10".parse().unwrap(),
            cluster_domain: "cluster.local".into(),
            backend: "vxlan".into(),
            mtu: Some(1450),
            servicelb: true,
            dns: true,
        }
    }

    #[test]
    fn settings_round_trip_and_are_written_only_when_changed() {
        let store = MemoryStore::new();
        assert!(load_settings(store.clone()).is_none());
        assert!(save_settings(store.clone(), &settings()));
        assert!(!save_settings(store.clone(), &settings()));
        assert_eq!(store.state().writes, 1);
        assert_eq!(load_settings(store.clone()).unwrap(), settings());
        let mut other = settings();
        other.dns = false;
        assert!(save_settings(store.clone(), &other));
        assert_eq!(load_settings(store.clone()).unwrap(), other);
    }

    #[test]
    fn corrupt_or_foreign_settings_are_ignored() {
        let store = MemoryStore::new();
        store.set(Some(b"garbage".to_vec()));
        assert!(load_settings(store.clone()).is_none());
        store.set(Some(frame(SETTINGS_KIND, b"[1,2]")));
        assert!(load_settings(store.clone()).is_none());
        store.set(Some(frame(SETTINGS_KIND, br#"{"clusterCIDR":"nope"}"#)));
        assert!(load_settings(store.clone()).is_none());
        store.set(Some(frame(DNS_KIND, b"{}")));
        assert!(load_settings(store).is_none());
    }

    #[test]
    fn files_live_in_the_state_dir() {
        let dir = tempfile::tempdir().unwrap();
        assert!(save_settings(settings_store(dir.path()), &settings()));
        assert!(dir.path().join(SETTINGS_FILE).exists());
        assert_eq!(
            load_settings(settings_store(dir.path())).unwrap(),
            settings()
        );
    }
}
