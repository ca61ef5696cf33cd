//! A watch-fed store of compact copies ([`ServiceInfo`](k8slite_network::objects::ServiceInfo),
//! [`SliceInfo`](k8slite_network::objects::SliceInfo)) instead of the k8s-openapi objects a
//! kube reflector would keep: each object the watch delivers is turned into its compact copy
//! at once and the full value is dropped. Same semantics as a reflector's store: keyed by
//! namespace and name, a relist replaces the whole content when it is complete.

use std::collections::HashMap;
use std::sync::{Arc, PoisonError, RwLock};

use futures::StreamExt;
use kube::Api;
use kube::runtime::{WatchStreamExt, watcher};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::cache::Generation;

type Map<T> = HashMap<Box<str>, Arc<T>>;

/// The compact copies of every object of one kind, shared by its readers.
pub struct CompactStore<T> {
    map: Arc<RwLock<Map<T>>>,
    ready: watch::Receiver<bool>,
}

impl<T> Clone for CompactStore<T> {
    fn clone(&self) -> Self {
        Self {
            map: self.map.clone(),
            ready: self.ready.clone(),
        }
    }
}

impl<T> CompactStore<T> {
    /// Every object (in no particular order).
    pub fn state(&self) -> Vec<Arc<T>> {
        self.map
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .values()
            .cloned()
            .collect()
    }

    /// Wait until the first list is in; `false` if the watch ended before.
    pub async fn wait_until_ready(&self) -> bool {
        let mut ready = self.ready.clone();
        ready.wait_for(|r| *r).await.is_ok()
    }
}

/// Applies watch events to the map (the buffer holds a relist until it is complete).
struct Writer<T> {
    map: Arc<RwLock<Map<T>>>,
    buffer: Map<T>,
    ready: watch::Sender<bool>,
}

impl<T> Writer<T> {
    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Map<T>> {
        self.map.write().unwrap_or_else(PoisonError::into_inner)
    }

    /// Apply one event; whether readers should look again.
    fn apply<K>(&mut self, event: watcher::Event<K>) -> bool
    where
        K: kube::Resource,
        T: for<'a> From<&'a K>,
    {
        match event {
            watcher::Event::Apply(o) => {
                let v = Arc::new(T::from(&o));
                self.write().insert(key(&o), v);
                true
            }
            watcher::Event::Delete(o) => {
                self.write().remove(&key(&o));
                true
            }
            watcher::Event::Init => {
                self.buffer = Map::new();
                false
            }
            watcher::Event::InitApply(o) => {
                let v = Arc::new(T::from(&o));
                self.buffer.insert(key(&o), v);
                false
            }
            watcher::Event::InitDone => {
                let mut fresh = std::mem::take(&mut self.buffer);
                fresh.shrink_to_fit();
                *self.write() = fresh;
                self.ready.send_replace(true);
                true
            }
        }
    }
}

fn key<K: kube::Resource>(o: &K) -> Box<str> {
    let m = o.meta();
    format!(
        "{}/{}",
        m.namespace.as_deref().unwrap_or(""),
        m.name.as_deref().unwrap_or("")
    )
    .into()
}

/// Watch every object of `api` into a new store until `shutdown`; every change runs `bump` on
/// `tx`.
pub(super) fn spawn<K, T>(
    api: Api<K>,
    tx: Arc<watch::Sender<Generation>>,
    bump: fn(&mut Generation),
    shutdown: CancellationToken,
) -> CompactStore<T>
where
    K: kube::Resource<DynamicType = ()>
        + Clone
        + std::fmt::Debug
        + serde::de::DeserializeOwned
        + Send
        + 'static,
    T: for<'a> From<&'a K> + Send + Sync + 'static,
{
    let (ready_tx, ready) = watch::channel(false);
    let map = Arc::new(RwLock::new(Map::new()));
    let mut writer = Writer {
        map: map.clone(),
        buffer: Map::new(),
        ready: ready_tx,
    };
    let stream = watcher::watcher(api, watcher::Config::default()).default_backoff();
    tokio::spawn(async move {
        let mut stream = std::pin::pin!(stream);
        loop {
            let item = tokio::select! {
                i = stream.next() => i,
                _ = shutdown.cancelled() => return,
            };
            match item {
                Some(Ok(event)) => {
                    if writer.apply(event) {
                        tx.send_modify(bump);
                    }
                }
                Some(Err(e)) => tracing::debug!("network cache watch: {e}"),
                None => return,
            }
        }
    });
    CompactStore { map, ready }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::Service;
    use k8slite_network::objects::ServiceInfo;

    fn svc(ns: &str, name: &str, ip: &str) -> Service {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": name, "namespace": ns},
            "spec": {"clusterIP": ip, "ports": [{"port": 80}]}
        }))
        .expect("test value")
    }

    fn names(s: &CompactStore<ServiceInfo>) -> Vec<String> {
        let mut v: Vec<String> = s
            .state()
            .iter()
            .map(|i| format!("{}/{}", i.namespace().unwrap_or(""), i.name().unwrap_or("")))
            .collect();
        v.sort();
        v
    }

    #[test]
    fn events_apply_as_a_reflector_does() {
        let (ready_tx, ready) = watch::channel(false);
        let map = Arc::new(RwLock::new(Map::new()));
        let store: CompactStore<ServiceInfo> = CompactStore {
            map: map.clone(),
            ready,
        };
        let mut w = Writer {
            map,
            buffer: Map::new(),
            ready: ready_tx,
        };
        assert!(!w.apply(watcher::Event::<Service>::Init));
        assert!(!w.apply(watcher::Event::InitApply(svc("a", "x", "10.43.0.1"))));
        assert!(
            names(&store).is_empty(),
            "a list is served only when complete"
        );
        assert!(w.apply(watcher::Event::<Service>::InitDone));
        assert!(*store.ready.borrow());
        assert_eq!(names(&store), ["a/x"]);
        assert!(w.apply(watcher::Event::Apply(svc("b", "y", "10.43.0.2"))));
        assert!(w.apply(watcher::Event::Apply(svc("a", "x", "10.43.0.3"))));
        assert_eq!(names(&store), ["a/x", "b/y"]);
        let x = store
            .state()
            .into_iter()
            .find(|i| i.name() == Some("x"))
            .expect("x");
        assert_eq!(*x, ServiceInfo::from(&svc("a", "x", "10.43.0.3")));
        assert!(w.apply(watcher::Event::Delete(svc("b", "y", "10.43.0.2"))));
        assert_eq!(names(&store), ["a/x"]);
        // A relist replaces everything when done.
        assert!(!w.apply(watcher::Event::<Service>::Init));
        assert!(!w.apply(watcher::Event::InitApply(svc("c", "z", "10.43.0.4"))));
        assert_eq!(names(&store), ["a/x"]);
        assert!(w.apply(watcher::Event::<Service>::InitDone));
        assert_eq!(names(&store), ["c/z"]);
    }
}
