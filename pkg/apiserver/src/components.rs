//! `componentstatuses` (v1 `ComponentStatus`, deprecated upstream since 1.19 and still served
//! by 1.33 and k3s): the health of the scheduler, the controller manager and the datastore
//! (`etcd-0`, whatever the datastore is, as k3s names it), computed on each request. The
//! server registers a probe per in-process component ([`ApiServer::add_component`]); the
//! datastore's probe is a read of its current revision.

use std::sync::Arc;

use http::{Response, StatusCode};
use k8slite_api::ApiError;
use serde_json::{Value, json};

use crate::ApiServer;
use crate::body::Body;
use crate::handler::ResourceRequest;

/// The health of one component: `Ok` or the error text shown in the ERROR column.
pub type ComponentProbe = Arc<dyn Fn() -> Result<(), String> + Send + Sync>;

/// The warning upstream attaches to every ComponentStatus request.
const DEPRECATED: &str = "v1 ComponentStatus is deprecated in v1.19+";

/// The datastore's entry.
const DATASTORE: &str = "etcd-0";

fn item(name: &str, health: &Result<(), String>) -> Value {
    let condition = match health {
        Ok(()) => json!({"type": "Healthy", "status": "True", "message": "ok"}),
        Err(e) => json!({"type": "Healthy", "status": "False", "error": e}),
    };
    json!({
        "kind": "ComponentStatus",
        "apiVersion": "v1",
        "metadata": {"name": name},
        "conditions": [condition],
    })
}

impl ApiServer {
    /// Report `name`'s health through `probe` in `componentstatuses` (later names replace).
    pub fn add_component(&self, name: &str, probe: ComponentProbe) {
        let mut c = match self.components.write() {
            Ok(c) => c,
            Err(p) => p.into_inner(),
        };
        c.retain(|(n, _)| n != name);
        c.push((name.to_string(), probe));
    }

    async fn component_items(&self) -> Vec<Value> {
        let probes: Vec<(String, ComponentProbe)> = match self.components.read() {
            Ok(c) => c.clone(),
            Err(p) => p.into_inner().clone(),
        };
        let mut items: Vec<Value> = probes.iter().map(|(n, p)| item(n, &p())).collect();
        let store = self
            .store
            .current_revision()
            .await
            .map(|_| ())
            .map_err(|e| e.to_string());
        items.push(item(DATASTORE, &store));
        items.sort_by(|a, b| {
            a["metadata"]["name"]
                .as_str()
                .cmp(&b["metadata"]["name"].as_str())
        });
        items
    }

    /// GET/LIST of `componentstatuses`.
    pub(crate) async fn component_statuses(
        &self,
        r: &ResourceRequest,
    ) -> Result<Response<Body>, ApiError> {
        let items = self.component_items().await;
        let warnings = [DEPRECATED.to_string()];
        let body = match r.name() {
            "" => {
                json!({"kind": "ComponentStatusList", "apiVersion": "v1", "metadata": {}, "items": items})
            }
            name => items
                .into_iter()
                .find(|i| i["metadata"]["name"] == name)
                .ok_or_else(|| ApiError::not_found("", "componentstatuses", name))?,
        };
        Ok(self.respond_with_warnings(r, StatusCode::OK, &body, &warnings))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn healthy_and_unhealthy_conditions() {
        let ok = item("scheduler", &Ok(()));
        assert_eq!(
            ok["conditions"][0],
            json!({"type": "Healthy", "status": "True", "message": "ok"})
        );
        let bad = item("controller-manager", &Err("not running".into()));
        assert_eq!(bad["conditions"][0]["status"], "False");
        assert_eq!(bad["conditions"][0]["error"], "not running");
        assert_eq!(bad["metadata"]["name"], "controller-manager");
    }
}
