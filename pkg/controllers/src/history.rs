//! ControllerRevision history shared by the StatefulSet and DaemonSet controllers: a revision
//! holds a pod template (as upstream's `{"spec":{"template":{…,"$patch":"replace"}}}` patch),
//! is named `<owner>-<hash>`, carries a revision number, and old ones beyond the history limit
//! are deleted when no pod uses them.

use std::collections::{BTreeMap, HashSet};

use k8s_openapi::api::apps::v1::ControllerRevision;
use k8s_openapi::api::core::v1::PodTemplateSpec;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use k8s_openapi::apimachinery::pkg::runtime::RawExtension;
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use serde_json::Value;

use crate::util;

/// Label upstream puts on every ControllerRevision with its hash.
pub const HASH_LABEL: &str = "controller.kubernetes.io/hash";

/// Errors of the revision history.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A call to the API failed.
    #[error("controller revisions: {0}")]
    Kube(#[from] kube::Error),
    /// The pod template could not be serialized.
    #[error("serializing a pod template: {0}")]
    Serialize(#[from] serde_json::Error),
}

/// The revision data for `template`: a strategic-merge patch replacing the template.
pub fn revision_data(template: &PodTemplateSpec) -> Result<Value, Error> {
    let mut t = serde_json::to_value(template)?;
    if let Value::Object(m) = &mut t {
        m.insert("$patch".into(), Value::String("replace".into()));
    }
    Ok(serde_json::json!({ "spec": { "template": t } }))
}

/// The pod template stored in a revision.
pub fn template_of(rev: &ControllerRevision) -> Option<PodTemplateSpec> {
    let mut t = rev.data.as_ref()?.0.get("spec")?.get("template")?.clone();
    if let Value::Object(m) = &mut t {
        m.remove("$patch");
    }
    serde_json::from_value(t).ok()
}

/// FNV-1a (32 bit) over `bytes`, the hash upstream uses for revisions and pod templates.
fn fnv32a(bytes: &[u8]) -> u32 {
    let mut h: u32 = 0x811c_9dc5;
    for b in bytes {
        h ^= u32::from(*b);
        h = h.wrapping_mul(0x0100_0193);
    }
    h
}

/// Upstream's `rand.SafeEncodeString`: maps each character onto consonants and digits so that
/// a hash never spells words.
pub fn safe_encode(s: &str) -> String {
    const ALPHANUMS: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    s.bytes()
        .map(|b| char::from(ALPHANUMS[usize::from(b) % ALPHANUMS.len()]))
        .collect()
}

/// The hash of revision data with the owner's collision count, safe-encoded.
pub fn hash(data: &Value, collision_count: Option<i32>) -> String {
    let mut bytes = data.to_string().into_bytes();
    if let Some(c) = collision_count {
        bytes.extend_from_slice(&c.to_le_bytes());
    }
    safe_encode(&fnv32a(&bytes).to_string())
}

/// Highest revision number among `revs` (0 when none).
pub fn max_revision(revs: &[ControllerRevision]) -> i64 {
    revs.iter().map(|r| r.revision).max().unwrap_or(0)
}

/// What must happen for the history to hold the owner's current template.
#[derive(Debug, PartialEq)]
pub enum Plan {
    /// A revision with equal data exists; bump its number to `Some(n)` when it is not the newest.
    Existing {
        /// Its name.
        name: String,
        /// New revision number, when it must be raised.
        bump_to: Option<i64>,
    },
    /// Create this revision.
    Create(Box<ControllerRevision>),
    /// A revision with the hashed name but other data exists: raise the collision count.
    Collision,
}

/// Decide how the history reaches `template` (pure).
pub fn plan(
    existing: &[ControllerRevision],
    owner_name: &str,
    namespace: &str,
    owner: OwnerReference,
    labels: BTreeMap<String, String>,
    template: &PodTemplateSpec,
    collision_count: Option<i32>,
) -> Result<Plan, Error> {
    let data = revision_data(template)?;
    let max = max_revision(existing);
    if let Some(eq) = existing
        .iter()
        .find(|r| r.data.as_ref().map(|d| &d.0) == Some(&data))
    {
        let bump_to = (eq.revision < max).then_some(max + 1);
        return Ok(Plan::Existing {
            name: eq.metadata.name.clone().unwrap_or_default(),
            bump_to,
        });
    }
    let h = hash(&data, collision_count);
    let name = format!("{owner_name}-{h}");
    if existing
        .iter()
        .any(|r| r.metadata.name.as_deref() == Some(name.as_str()))
    {
        return Ok(Plan::Collision);
    }
    let mut labels = labels;
    labels.insert(HASH_LABEL.into(), h);
    Ok(Plan::Create(Box::new(ControllerRevision {
        metadata: ObjectMeta {
            name: Some(name),
            namespace: Some(namespace.to_string()),
            labels: Some(labels),
            owner_references: Some(vec![owner]),
            ..ObjectMeta::default()
        },
        data: Some(RawExtension(data)),
        revision: max + 1,
    })))
}

/// Revisions controlled by `owner_uid` in `namespace` (oldest revision first).
pub async fn list_owned(
    api: &Api<ControllerRevision>,
    owner_uid: &str,
) -> Result<Vec<ControllerRevision>, Error> {
    let mut revs: Vec<ControllerRevision> = api
        .list(&ListParams::default())
        .await?
        .items
        .into_iter()
        .filter(|r| util::is_controlled_by(&r.metadata, owner_uid))
        .collect();
    revs.sort_by_key(|r| r.revision);
    Ok(revs)
}

/// Make the history hold `template`: returns the revision's name and the collision count to
/// record in the owner's status. `existing` is updated to include it.
#[allow(clippy::too_many_arguments)]
pub async fn ensure(
    api: &Api<ControllerRevision>,
    existing: &mut Vec<ControllerRevision>,
    owner_name: &str,
    namespace: &str,
    owner: OwnerReference,
    labels: BTreeMap<String, String>,
    template: &PodTemplateSpec,
    collision_count: Option<i32>,
) -> Result<(ControllerRevision, Option<i32>), Error> {
    let mut collision = collision_count;
    for _ in 0..10 {
        match plan(
            existing,
            owner_name,
            namespace,
            owner.clone(),
            labels.clone(),
            template,
            collision,
        )? {
            Plan::Existing { name, bump_to } => {
                let Some(idx) = existing
                    .iter()
                    .position(|r| r.metadata.name.as_deref() == Some(name.as_str()))
                else {
                    break;
                };
                if let Some(n) = bump_to {
                    let mut r = existing[idx].clone();
                    r.revision = n;
                    let updated = api.replace(&name, &PostParams::default(), &r).await?;
                    existing[idx] = updated;
                }
                return Ok((existing[idx].clone(), collision));
            }
            Plan::Create(rev) => {
                let created = match api.create(&PostParams::default(), &rev).await {
                    Ok(c) => c,
                    Err(kube::Error::Api(e)) if e.code == 409 => {
                        // Someone else's object under that name: a collision.
                        collision = Some(collision.unwrap_or(0) + 1);
                        continue;
                    }
                    Err(e) => return Err(e.into()),
                };
                existing.push(created.clone());
                return Ok((created, collision));
            }
            Plan::Collision => collision = Some(collision.unwrap_or(0) + 1),
        }
    }
    Err(Error::Kube(kube::Error::Service(
        "too many controller revision hash collisions".into(),
    )))
}

/// Names of revisions to delete: beyond `limit` non-live ones, oldest first (pure).
pub fn to_truncate(revs: &[ControllerRevision], live: &HashSet<String>, limit: i32) -> Vec<String> {
    let mut old: Vec<&ControllerRevision> = revs
        .iter()
        .filter(|r| !live.contains(r.metadata.name.as_deref().unwrap_or_default()))
        .collect();
    old.sort_by_key(|r| r.revision);
    let limit = usize::try_from(limit.max(0)).unwrap_or(0);
    let excess = old.len().saturating_sub(limit);
    old.into_iter()
        .take(excess)
        .filter_map(|r| r.metadata.name.clone())
        .collect()
}

/// Delete the revisions [`to_truncate`] names.
pub async fn truncate(
    api: &Api<ControllerRevision>,
    revs: &[ControllerRevision],
    live: &HashSet<String>,
    limit: i32,
) -> Result<(), Error> {
    for name in to_truncate(revs, live, limit) {
        match api.delete(&name, &DeleteParams::default()).await {
            Ok(_) => {}
            Err(kube::Error::Api(e)) if e.code == 404 => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{Container, PodSpec};

    fn tmpl(image: &str) -> PodTemplateSpec {
        PodTemplateSpec {
            metadata: None,
            spec: Some(PodSpec {
                containers: vec![Container {
                    name: "c".into(),
                    image: Some(image.into()),
                    ..Container::default()
                }],
                ..PodSpec::default()
            }),
        }
    }

    fn owner() -> OwnerReference {
        OwnerReference {
            api_version: "apps/v1".into(),
            kind: "StatefulSet".into(),
            name: "web".into(),
            uid: "u1".into(),
            controller: Some(true),
            block_owner_deletion: Some(true),
        }
    }

    #[test]
    fn plan_creates_then_reuses_and_bumps() {
        let p = plan(
            &[],
            "web",
            "default",
            owner(),
            BTreeMap::new(),
            &tmpl("a"),
            None,
        )
        .expect("plan");
        let Plan::Create(r1) = p else {
            panic!("expected create, got {p:?}")
        };
        assert_eq!(r1.revision, 1);
        let name1 = r1.metadata.name.clone().expect("name");
        assert!(name1.starts_with("web-"));
        assert_eq!(template_of(&r1), Some(tmpl("a")));
        let hash_label = r1.metadata.labels.as_ref().and_then(|l| l.get(HASH_LABEL));
        assert_eq!(
            Some(name1.trim_start_matches("web-")),
            hash_label.map(String::as_str)
        );
        let Plan::Create(r2) = plan(
            &[(*r1).clone()],
            "web",
            "default",
            owner(),
            BTreeMap::new(),
            &tmpl("b"),
            None,
        )
        .expect("plan") else {
            panic!("expected create")
        };
        assert_eq!(r2.revision, 2);
        let all = vec![(*r1).clone(), (*r2).clone()];
        // Going back to template a reuses revision 1, renumbered 3.
        assert_eq!(
            plan(
                &all,
                "web",
                "default",
                owner(),
                BTreeMap::new(),
                &tmpl("a"),
                None
            )
            .expect("plan"),
            Plan::Existing {
                name: name1,
                bump_to: Some(3)
            }
        );
        // The collision count changes the hash.
        let d = revision_data(&tmpl("a")).expect("data");
        assert_ne!(hash(&d, None), hash(&d, Some(1)));
        assert!(
            hash(&d, None)
                .chars()
                .all(|c| "bcdfghjklmnpqrstvwxz2456789".contains(c))
        );
    }

    #[test]
    fn truncation_keeps_live_and_newest() {
        let rev = |n: &str, r: i64| ControllerRevision {
            metadata: ObjectMeta {
                name: Some(n.into()),
                ..ObjectMeta::default()
            },
            data: None,
            revision: r,
        };
        let revs = vec![rev("a", 1), rev("b", 2), rev("c", 3), rev("d", 4)];
        let live = HashSet::from(["d".to_string(), "a".to_string()]);
        assert_eq!(to_truncate(&revs, &live, 1), vec!["b".to_string()]);
        assert_eq!(
            to_truncate(&revs, &live, 0),
            vec!["b".to_string(), "c".to_string()]
        );
        assert!(to_truncate(&revs, &live, 10).is_empty());
    }
}
