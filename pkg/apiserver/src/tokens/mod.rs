//! Service-account tokens: ES256 JWTs with upstream's claims, issued by the
//! `serviceaccounts/token` subresource (TokenRequest), checked by TokenReview and accepted as
//! bearer tokens (identity `system:serviceaccount:NS:NAME`).
//!
//! JWT encoding and claim validation come from `jsonwebtoken`; its crypto backends are
//! aws-lc-rs or RustCrypto, so this module installs a small ring-backed provider for ES256 (the
//! only algorithm we sign with) and the build keeps one crypto library.

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

/// Errors of token signing and verification.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    /// The JWT could not be encoded, or failed signature or claim validation.
    #[error("{0}")]
    Jwt(#[from] jsonwebtoken::errors::Error),
    /// The token is well-formed and signed but no longer valid (its objects are gone).
    #[error("{0}")]
    Invalidated(String),
    /// The bound objects could not be read.
    #[error("reading bound objects: {0}")]
    Store(String),
}

mod api;
mod ring_provider;

/// `{name, uid}` of an object a token names.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObjectRef {
    /// Name.
    pub name: String,
    /// UID.
    pub uid: String,
}

/// The `kubernetes.io` private claim.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct KubernetesClaims {
    /// Namespace of the service account.
    pub namespace: String,
    /// The service account.
    pub serviceaccount: ObjectRef,
    /// The pod the token is bound to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod: Option<ObjectRef>,
    /// The secret the token is bound to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret: Option<ObjectRef>,
    /// The node of the bound pod (or the bound node).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<ObjectRef>,
    /// When clients should warn that they use an old projected token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub warnafter: Option<i64>,
}

/// Claims of a service-account token, as upstream issues them.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// Audiences.
    pub aud: Vec<String>,
    /// Expiry (seconds since the epoch).
    pub exp: i64,
    /// Issued at.
    pub iat: i64,
    /// Issuer.
    pub iss: String,
    /// Token id.
    pub jti: String,
    /// Not before.
    pub nbf: i64,
    /// `system:serviceaccount:NS:NAME`.
    pub sub: String,
    /// Bound objects.
    #[serde(rename = "kubernetes.io")]
    pub kubernetes: KubernetesClaims,
}

/// Signs and verifies service-account tokens with the cluster's key.
pub struct TokenSigner {
    encoding: EncodingKey,
    decoding: DecodingKey,
    kid: String,
    issuer: String,
    audiences: Vec<String>,
}

impl TokenSigner {
    /// A signer for `key`, issuing as `issuer`; the API server's own audience is the issuer
    /// (like k3s: `https://kubernetes.default.svc.cluster.local`).
    pub fn new(key: &k8slite_pki::ServiceAccountKey, issuer: &str) -> Self {
        ring_provider::install();
        Self {
            encoding: EncodingKey::from_ec_der(&key.pkcs8_der),
            decoding: DecodingKey::from_ec_der(&key.public_raw),
            kid: key.kid.clone(),
            issuer: issuer.to_string(),
            audiences: vec![issuer.to_string()],
        }
    }

    /// The issuer.
    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    /// The audiences the API server accepts.
    pub fn audiences(&self) -> &[String] {
        &self.audiences
    }

    /// Sign `claims`.
    pub fn issue(&self, claims: &Claims) -> Result<String, TokenError> {
        let mut header = Header::new(Algorithm::ES256);
        header.kid = Some(self.kid.clone());
        Ok(jsonwebtoken::encode(&header, claims, &self.encoding)?)
    }

    /// Check signature, issuer, expiry and that one of `audiences` is in the token's.
    pub fn verify(&self, token: &str, audiences: &[String]) -> Result<Claims, TokenError> {
        let mut v = Validation::new(Algorithm::ES256);
        v.set_issuer(&[&self.issuer]);
        v.set_audience(audiences);
        v.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        v.validate_nbf = true;
        Ok(jsonwebtoken::decode::<Claims>(token, &self.decoding, &v)?.claims)
    }
}

/// What a valid service-account token stands for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServiceAccountUser {
    /// `system:serviceaccount:NS:NAME`.
    pub username: String,
    /// UID of the service account.
    pub uid: String,
    /// `system:serviceaccounts`, `system:serviceaccounts:NS`, `system:authenticated`.
    pub groups: Vec<String>,
    /// Extra attributes (pod name/uid, node, credential id).
    pub extra: serde_json::Map<String, Value>,
    /// The token's audiences that matched.
    pub audiences: Vec<String>,
}

/// The user of verified claims.
pub fn user_of(claims: &Claims, audiences: &[String]) -> ServiceAccountUser {
    let k = &claims.kubernetes;
    let mut extra = serde_json::Map::new();
    if let Some(p) = &k.pod {
        extra.insert(
            "authentication.kubernetes.io/pod-name".into(),
            json!([p.name]),
        );
        extra.insert(
            "authentication.kubernetes.io/pod-uid".into(),
            json!([p.uid]),
        );
    }
    if let Some(n) = &k.node {
        extra.insert(
            "authentication.kubernetes.io/node-name".into(),
            json!([n.name]),
        );
        extra.insert(
            "authentication.kubernetes.io/node-uid".into(),
            json!([n.uid]),
        );
    }
    if !claims.jti.is_empty() {
        extra.insert(
            "authentication.kubernetes.io/credential-id".into(),
            json!([format!("JTI={}", claims.jti)]),
        );
    }
    ServiceAccountUser {
        username: format!(
            "system:serviceaccount:{}:{}",
            k.namespace, k.serviceaccount.name
        ),
        uid: k.serviceaccount.uid.clone(),
        groups: vec![
            "system:serviceaccounts".into(),
            format!("system:serviceaccounts:{}", k.namespace),
            "system:authenticated".into(),
        ],
        extra,
        audiences: claims
            .aud
            .iter()
            .filter(|a| audiences.contains(a))
            .cloned()
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn signer() -> TokenSigner {
        let dir = tempfile::tempdir().expect("tempdir");
        let key = k8slite_pki::ServiceAccountKey::load_or_create(&dir.path().join("sa.key"))
            .expect("key");
        TokenSigner::new(&key, "https://kubernetes.default.svc.cluster.local")
    }

    fn claims(s: &TokenSigner, exp_in: i64) -> Claims {
        let now = jiff::Timestamp::now().as_second();
        Claims {
            aud: s.audiences().to_vec(),
            exp: now + exp_in,
            iat: now,
            iss: s.issuer().to_string(),
            jti: "j".into(),
            nbf: now,
            sub: "system:serviceaccount:default:default".into(),
            kubernetes: KubernetesClaims {
                namespace: "default".into(),
                serviceaccount: ObjectRef {
                    name: "default".into(),
                    uid: "u1".into(),
                },
                pod: Some(ObjectRef {
                    name: "p".into(),
                    uid: "u2".into(),
                }),
                ..Default::default()
            },
        }
    }

    #[test]
    fn issue_and_verify() {
        let s = signer();
        let c = claims(&s, 3600);
        let t = s.issue(&c).expect("signed");
        let header = jsonwebtoken::decode_header(&t).expect("header");
        assert_eq!(header.alg, Algorithm::ES256);
        assert!(header.kid.is_some());
        let back = s.verify(&t, s.audiences()).expect("valid");
        assert_eq!(back, c);
        let u = user_of(&back, s.audiences());
        assert_eq!(u.username, "system:serviceaccount:default:default");
        assert_eq!(
            u.groups,
            [
                "system:serviceaccounts",
                "system:serviceaccounts:default",
                "system:authenticated"
            ]
        );
        assert_eq!(
            u.extra["authentication.kubernetes.io/pod-name"],
            json!(["p"])
        );
    }

    #[test]
    fn rejects_expired_forged_and_foreign_audience() {
        let s = signer();
        let expired = s.issue(&claims(&s, -3600)).expect("signed");
        assert!(s.verify(&expired, s.audiences()).is_err(), "expired");
        let good = s.issue(&claims(&s, 3600)).expect("signed");
        assert!(s.verify(&good, &["other".to_string()]).is_err(), "audience");
        // another key's signature
        let other = signer();
        let forged = other.issue(&claims(&other, 3600)).expect("signed");
        assert!(s.verify(&forged, s.audiences()).is_err(), "foreign key");
        // tampered payload
        let mut parts: Vec<&str> = good.split('.').collect();
        let evil = claims(&s, 99999);
        let payload = {
            use base64::Engine as _;
            base64::engine::general_purpose::URL_SAFE_NO_PAD
                .encode(serde_json::to_vec(&evil).expect("json"))
        };
        parts[1] = &payload;
        assert!(
            s.verify(&parts.join("."), s.audiences()).is_err(),
            "tampered"
        );
        assert!(s.verify("not-a-jwt", s.audiences()).is_err());
    }
}
