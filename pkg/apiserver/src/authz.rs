//! Identities and authorization. RBAC and the Node authorizer slot in behind [`Authorizer`].

/// Who sent a request (from the client certificate, later from tokens).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Identity {
    /// User name (certificate CN).
    pub user: String,
    /// Groups (certificate O values), plus `system:authenticated`.
    pub groups: Vec<String>,
}

impl Identity {
    /// An identity with `user` and `groups`; `system:authenticated` is added.
    pub fn new(user: impl Into<String>, groups: impl IntoIterator<Item = String>) -> Self {
        let mut groups: Vec<String> = groups.into_iter().collect();
        if !groups.iter().any(|g| g == "system:authenticated") {
            groups.push("system:authenticated".to_string());
        }
        Self {
            user: user.into(),
            groups,
        }
    }

    /// Whether the identity is in `group`.
    pub fn in_group(&self, group: &str) -> bool {
        self.groups.iter().any(|g| g == group)
    }
}

/// What a request wants to do, as authorizers see it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Attributes {
    /// Verb (`get`, `list`, `watch`, `create`, …).
    pub verb: String,
    /// API group.
    pub group: String,
    /// Resource plural.
    pub resource: String,
    /// Subresource.
    pub subresource: String,
    /// Namespace.
    pub namespace: Option<String>,
    /// Object name.
    pub name: Option<String>,
    /// Non-resource path (`/version`, `/openapi/v3`), empty for resource requests.
    pub path: String,
}

/// The decision of an authorizer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Allowed.
    Allow,
    /// Denied.
    Deny,
}

/// Decides whether an identity may do something.
pub trait Authorizer: Send + Sync + 'static {
    /// The decision for `id` doing `attrs`.
    fn authorize(&self, id: &Identity, attrs: &Attributes) -> Decision;
}

/// The authorizer until RBAC exists: `system:masters` may do everything, and so may
/// `system:nodes` (agents authenticated by the join token; the Node authorizer will narrow this
/// to a node's own objects); everyone authenticated may read discovery, OpenAPI, version and
/// health; nothing else.
#[derive(Clone, Copy, Debug, Default)]
pub struct MastersOnly;

impl Authorizer for MastersOnly {
    fn authorize(&self, id: &Identity, attrs: &Attributes) -> Decision {
        if id.in_group("system:masters") || id.in_group("system:nodes") {
            return Decision::Allow;
        }
        let public = [
            "/version", "/api", "/apis", "/openapi", "/healthz", "/livez", "/readyz",
        ];
        if !attrs.path.is_empty()
            && attrs.verb == "get"
            && public
                .iter()
                .any(|p| attrs.path == *p || attrs.path.starts_with(&format!("{p}/")))
        {
            return Decision::Allow;
        }
        Decision::Deny
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masters_and_public_paths() {
        let admin = Identity::new("system:admin", vec!["system:masters".to_string()]);
        let bob = Identity::new("bob", Vec::new());
        let pods = Attributes {
            verb: "list".into(),
            resource: "pods".into(),
            ..Default::default()
        };
        assert_eq!(MastersOnly.authorize(&admin, &pods), Decision::Allow);
        assert_eq!(MastersOnly.authorize(&bob, &pods), Decision::Deny);
        let disc = Attributes {
            verb: "get".into(),
            path: "/apis/apps/v1".into(),
            ..Default::default()
        };
        assert_eq!(MastersOnly.authorize(&bob, &disc), Decision::Allow);
    }
}
