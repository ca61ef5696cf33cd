//! Pod and container names → runtime ids, through the `ContainerRuntime` trait: sandboxes by
//! their metadata (namespace, name, uid), containers by the `io.kubernetes.container.name`
//! label or their metadata name; the newest attempt is the current one, the one before it the
//! previous.

use k8slite_runtime::{
    ContainerFilter, ContainerRuntime, ContainerState, ContainerStatus, PodSandboxStatus,
    SandboxState,
};

use super::routes::HttpError;

/// Label the agent puts on containers with their spec name.
const CONTAINER_NAME_LABEL: &str = "io.kubernetes.container.name";

/// The pod's current sandbox (the newest; a ready one first), optionally of one UID.
pub(crate) async fn sandbox(
    rt: &dyn ContainerRuntime,
    ns: &str,
    pod: &str,
    uid: Option<&str>,
) -> Result<PodSandboxStatus, HttpError> {
    let all = pod_sandboxes(rt, ns, pod, uid).await?;
    all.into_iter()
        .max_by_key(|s| (s.state == SandboxState::Ready, s.created_at))
        .ok_or_else(|| HttpError::not_found(format!("pod {ns}/{pod} not found on this node")))
}

async fn pod_sandboxes(
    rt: &dyn ContainerRuntime,
    ns: &str,
    pod: &str,
    uid: Option<&str>,
) -> Result<Vec<PodSandboxStatus>, HttpError> {
    let all = rt
        .list_pod_sandboxes()
        .await
        .map_err(|e| HttpError::internal(format!("listing pod sandboxes: {e}")))?;
    let mut mine: Vec<_> = all
        .into_iter()
        .filter(|s| s.metadata.namespace == ns && s.metadata.name == pod)
        .filter(|s| uid.is_none_or(|u| s.metadata.uid == u))
        .collect();
    // A recreated pod of the same name has another UID: keep only the newest UID's sandboxes.
    if let Some(newest) = mine.iter().max_by_key(|s| s.created_at) {
        let uid = newest.metadata.uid.clone();
        mine.retain(|s| s.metadata.uid == uid);
    }
    Ok(mine)
}

fn container_name(c: &ContainerStatus) -> &str {
    c.labels
        .get(CONTAINER_NAME_LABEL)
        .map(String::as_str)
        .unwrap_or(&c.metadata.name)
}

/// A container of a pod and the sandbox it runs in.
pub(crate) struct Found {
    pub sandbox: PodSandboxStatus,
    pub container: ContainerStatus,
}

/// The current (or, with `previous`, the previous terminated) container `name` of the pod.
pub(crate) async fn container(
    rt: &dyn ContainerRuntime,
    ns: &str,
    pod: &str,
    uid: Option<&str>,
    name: &str,
    previous: bool,
) -> Result<Found, HttpError> {
    let sandboxes = pod_sandboxes(rt, ns, pod, uid).await?;
    if sandboxes.is_empty() {
        return Err(HttpError::not_found(format!(
            "pod {ns}/{pod} not found on this node"
        )));
    }
    let mut found: Vec<(ContainerStatus, PodSandboxStatus)> = Vec::new();
    for s in &sandboxes {
        let filter = ContainerFilter {
            pod_sandbox_id: Some(s.id.clone()),
            ..Default::default()
        };
        let list = rt
            .list_containers(&filter)
            .await
            .map_err(|e| HttpError::internal(format!("listing containers: {e}")))?;
        found.extend(
            list.into_iter()
                .filter(|c| container_name(c) == name)
                .map(|c| (c, s.clone())),
        );
    }
    // Newest first: by attempt, then creation time.
    found.sort_by_key(|(c, _)| std::cmp::Reverse((c.metadata.attempt, c.created_at)));
    let pick = if previous {
        found
            .into_iter()
            .skip(1)
            .find(|(c, _)| c.state == ContainerState::Exited)
            .ok_or_else(|| {
                HttpError::bad_request(format!(
                    "previous terminated container \"{name}\" in pod \"{pod}\" not found"
                ))
            })?
    } else {
        found.into_iter().next().ok_or_else(|| {
            HttpError::bad_request(format!(
                "container \"{name}\" in pod \"{pod}\" is waiting to start: ContainerCreating"
            ))
        })?
    };
    Ok(Found {
        container: pick.0,
        sandbox: pick.1,
    })
}
