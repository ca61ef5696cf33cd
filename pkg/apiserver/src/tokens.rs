//! Service-account tokens: ES256 JWTs with upstream's claims, issued by the
//! `serviceaccounts/token` subresource (TokenRequest), checked by TokenReview and accepted as
//! bearer tokens (identity `system:serviceaccount:NS:NAME`).
//!
//! JWT encoding and claim validation come from `jsonwebtoken`; its crypto backends are
//! aws-lc-rs or RustCrypto, so this module installs a small ring-backed provider for ES256 (the
//! only algorithm we sign with) and the build keeps one crypto library.

use std::sync::{Arc, Weak};

use bytes::Bytes;
use http::{Response, StatusCode};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use k8slite_api::{ApiError, Cause, meta};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::ApiServer;
use crate::authn::{AuthFuture, TokenAuthenticator};
use crate::authz::Identity;
use crate::body::Body;
use crate::handler::ResourceRequest;

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

mod ring_provider {
    //! ES256 over ring for jsonwebtoken's `CryptoProvider`.
    use jsonwebtoken::crypto::{CryptoProvider, JwtSigner, JwtVerifier, KeyUtils};
    use jsonwebtoken::errors::{ErrorKind, Result};
    use jsonwebtoken::signature::{Error, Signer, Verifier};
    use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey};
    use ring::rand::SystemRandom;
    use ring::signature::{
        ECDSA_P256_SHA256_FIXED, ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, UnparsedPublicKey,
    };

    struct Es256Signer(EcdsaKeyPair, SystemRandom);

    impl Signer<Vec<u8>> for Es256Signer {
        fn try_sign(&self, msg: &[u8]) -> std::result::Result<Vec<u8>, Error> {
            self.0
                .sign(&self.1, msg)
                .map(|s| s.as_ref().to_vec())
                .map_err(|_| Error::new())
        }
    }

    impl JwtSigner for Es256Signer {
        fn algorithm(&self) -> Algorithm {
            Algorithm::ES256
        }
    }

    struct Es256Verifier(Vec<u8>);

    impl Verifier<Vec<u8>> for Es256Verifier {
        fn verify(&self, msg: &[u8], sig: &Vec<u8>) -> std::result::Result<(), Error> {
            UnparsedPublicKey::new(&ECDSA_P256_SHA256_FIXED, &self.0)
                .verify(msg, sig)
                .map_err(|_| Error::new())
        }
    }

    impl JwtVerifier for Es256Verifier {
        fn algorithm(&self) -> Algorithm {
            Algorithm::ES256
        }
    }

    fn signer(alg: &Algorithm, key: &EncodingKey) -> Result<Box<dyn JwtSigner>> {
        if *alg != Algorithm::ES256 {
            return Err(ErrorKind::InvalidAlgorithm.into());
        }
        let rng = SystemRandom::new();
        let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, key.as_bytes(), &rng)
            .map_err(|_| ErrorKind::InvalidEcdsaKey)?;
        Ok(Box::new(Es256Signer(pair, rng)))
    }

    fn verifier(alg: &Algorithm, key: &DecodingKey) -> Result<Box<dyn JwtVerifier>> {
        if *alg != Algorithm::ES256 {
            return Err(ErrorKind::InvalidAlgorithm.into());
        }
        Ok(Box::new(Es256Verifier(key.try_get_as_bytes()?.to_vec())))
    }

    static PROVIDER: CryptoProvider = CryptoProvider {
        signer_factory: signer,
        verifier_factory: verifier,
        key_utils: KeyUtils::new_unimplemented(),
    };

    /// Make the ring provider the process default (a no-op when one is installed already).
    pub fn install() {
        let _ = PROVIDER.install_default();
    }
}

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

/// Bearer-token authenticator of service-account JWTs.
struct ServiceAccountAuthenticator(Weak<ApiServer>);

impl TokenAuthenticator for ServiceAccountAuthenticator {
    fn authenticate<'a>(&'a self, token: &'a str) -> AuthFuture<'a> {
        Box::pin(async move {
            let server = self.0.upgrade()?;
            let signer = server.sa_signer.get()?.clone();
            match server
                .validate_sa_token(&signer, token, signer.audiences())
                .await
            {
                Ok(u) => Some(Identity {
                    user: u.username,
                    groups: u.groups,
                }),
                Err(e) => {
                    tracing::debug!(error = %e, "service-account token rejected");
                    None
                }
            }
        })
    }
}

fn invalid(name: &str, field: &str, msg: String) -> ApiError {
    ApiError::invalid(
        "authentication.k8s.io",
        "TokenRequest",
        name,
        vec![Cause::new("FieldValueInvalid", field, msg)],
    )
}

impl ApiServer {
    /// Sign service-account tokens with `signer`, serve TokenRequest/TokenReview with it, and
    /// accept its tokens as bearer tokens.
    pub fn enable_service_account_tokens(self: &Arc<Self>, signer: Arc<TokenSigner>) {
        if self.sa_signer.set(signer).is_ok() {
            self.add_token_authenticator(Arc::new(ServiceAccountAuthenticator(Arc::downgrade(
                self,
            ))));
        }
    }

    /// Verify a token and that the service account (and bound pod or secret) still exist with
    /// the UIDs it names.
    pub(crate) async fn validate_sa_token(
        &self,
        signer: &TokenSigner,
        token: &str,
        audiences: &[String],
    ) -> Result<ServiceAccountUser, TokenError> {
        let claims = signer.verify(token, audiences)?;
        let k = &claims.kubernetes;
        let ns = k.namespace.as_str();
        let check = |plural: &'static str, r: &ObjectRef| {
            let r = r.clone();
            async move {
                let found = self
                    .get_object("", "v1", plural, Some(ns), &r.name)
                    .await
                    .map_err(|e| TokenError::Store(e.message))?;
                match found {
                    Some((o, _))
                        if meta::uid(&o) == r.uid
                            && !(plural == "pods" && meta::is_deleting(&o)) =>
                    {
                        Ok(())
                    }
                    Some((o, _)) if meta::uid(&o) != r.uid => {
                        Err(TokenError::Invalidated(format!(
                            "{plural} UID ({}) does not match claim ({})",
                            meta::uid(&o),
                            r.uid
                        )))
                    }
                    Some(_) => Err(TokenError::Invalidated(format!(
                        "pod {} is being deleted",
                        r.name
                    ))),
                    None => Err(TokenError::Invalidated(format!(
                        "{plural} \"{}\" not found: token has been invalidated",
                        r.name
                    ))),
                }
            }
        };
        check("serviceaccounts", &k.serviceaccount).await?;
        if let Some(p) = &k.pod {
            check("pods", p).await?;
        }
        if let Some(s) = &k.secret {
            check("secrets", s).await?;
        }
        Ok(user_of(&claims, audiences))
    }

    /// POST serviceaccounts/token: issue a TokenRequest's token.
    pub(crate) async fn create_token(
        self: &Arc<Self>,
        r: &ResourceRequest,
        body: Bytes,
    ) -> Result<Response<Body>, ApiError> {
        let signer =
            self.sa_signer.get().cloned().ok_or_else(|| {
                ApiError::internal("service-account token signing is not configured")
            })?;
        let tr = r.decode_body(&body)?;
        let (api_version, kind) = meta::type_meta(&tr);
        if !kind.is_empty() && (kind != "TokenRequest" || api_version != "authentication.k8s.io/v1")
        {
            return Err(ApiError::bad_request(format!(
                "the body must be an authentication.k8s.io/v1 TokenRequest, not {api_version} {kind}"
            )));
        }
        let ns = r.ns().unwrap_or_default().to_string();
        let name = r.name().to_string();
        let (sa, _) = self
            .get_object("", "v1", "serviceaccounts", Some(&ns), &name)
            .await?
            .ok_or_else(|| ApiError::not_found("", "serviceaccounts", &name))?;
        let spec = tr.get("spec").cloned().unwrap_or_else(|| json!({}));
        let exp_secs = spec
            .get("expirationSeconds")
            .and_then(Value::as_i64)
            .unwrap_or(3600);
        if exp_secs < 600 {
            return Err(invalid(
                &name,
                "spec.expirationSeconds",
                format!(
                    "Invalid value: {exp_secs}: may not specify a duration less than 10 minutes"
                ),
            ));
        }
        if exp_secs > 1 << 32 {
            return Err(invalid(
                &name,
                "spec.expirationSeconds",
                format!(
                    "Invalid value: {exp_secs}: may not specify a duration larger than 2^32 seconds"
                ),
            ));
        }
        let audiences: Vec<String> = match spec.get("audiences").and_then(Value::as_array) {
            Some(a) if !a.is_empty() => a
                .iter()
                .filter_map(|v| v.as_str().map(str::to_string))
                .collect(),
            _ => signer.audiences().to_vec(),
        };
        let mut kclaims = KubernetesClaims {
            namespace: ns.clone(),
            serviceaccount: ObjectRef {
                name: name.clone(),
                uid: meta::uid(&sa).to_string(),
            },
            ..Default::default()
        };
        let bound = spec.get("boundObjectRef").filter(|b| !b.is_null()).cloned();
        if let Some(b) = &bound {
            let bkind = b.get("kind").and_then(Value::as_str).unwrap_or_default();
            let bname = b.get("name").and_then(Value::as_str).unwrap_or_default();
            let buid = b.get("uid").and_then(Value::as_str).unwrap_or_default();
            let plural = match bkind {
                "Pod" => "pods",
                "Secret" => "secrets",
                "Node" => "nodes",
                other => {
                    return Err(invalid(
                        &name,
                        "spec.boundObjectRef.kind",
                        format!(
                            "Unsupported value: \"{other}\": supported values: \"Pod\", \"Secret\", \"Node\""
                        ),
                    ));
                }
            };
            if bname.is_empty() {
                return Err(ApiError::invalid(
                    "authentication.k8s.io",
                    "TokenRequest",
                    &name,
                    vec![Cause::new(
                        "FieldValueRequired",
                        "spec.boundObjectRef.name",
                        "Required value",
                    )],
                ));
            }
            let obj_ns = (plural != "nodes").then_some(ns.as_str());
            let (obj, _) = self
                .get_object("", "v1", plural, obj_ns, bname)
                .await?
                .ok_or_else(|| ApiError::not_found("", plural, bname))?;
            if !buid.is_empty() && buid != meta::uid(&obj) {
                return Err(ApiError::conflict(
                    "",
                    bkind,
                    bname,
                    &format!(
                        "the UID in the bound object reference ({buid}) does not match the UID in record. The object might have been deleted and then recreated"
                    ),
                ));
            }
            let oref = ObjectRef {
                name: bname.to_string(),
                uid: meta::uid(&obj).to_string(),
            };
            match plural {
                "pods" => {
                    if crate::admission::serviceaccount::service_account_name(&obj) != name {
                        return Err(ApiError::bad_request(format!(
                            "cannot bind token for serviceaccount \"{name}\" to pod running with different serviceaccount name."
                        )));
                    }
                    if let Some(node) = obj
                        .pointer("/spec/nodeName")
                        .and_then(Value::as_str)
                        .filter(|n| !n.is_empty())
                        && let Some((n, _)) = self.get_object("", "v1", "nodes", None, node).await?
                    {
                        kclaims.node = Some(ObjectRef {
                            name: node.to_string(),
                            uid: meta::uid(&n).to_string(),
                        });
                    }
                    kclaims.pod = Some(oref);
                }
                "secrets" => kclaims.secret = Some(oref),
                _ => kclaims.node = Some(oref),
            }
        }
        let now = jiff::Timestamp::now().as_second();
        if exp_secs == crate::admission::serviceaccount::PROJECTED_EXPIRATION {
            kclaims.warnafter = Some(now + exp_secs);
        }
        let claims = Claims {
            aud: audiences.clone(),
            exp: now + exp_secs,
            iat: now,
            iss: signer.issuer().to_string(),
            jti: uuid::Uuid::new_v4().to_string(),
            nbf: now,
            sub: format!("system:serviceaccount:{ns}:{name}"),
            kubernetes: kclaims,
        };
        let token = if r.query.dry_run()? {
            String::new()
        } else {
            signer
                .issue(&claims)
                .map_err(|e| ApiError::internal(format!("signing token: {e}")))?
        };
        let expires = jiff::Timestamp::from_second(claims.exp)
            .map(meta::format_time)
            .unwrap_or_default();
        let out = json!({
            "kind": "TokenRequest", "apiVersion": "authentication.k8s.io/v1",
            "metadata": {"name": name, "namespace": ns, "creationTimestamp": null},
            "spec": {"audiences": audiences, "expirationSeconds": exp_secs, "boundObjectRef": bound},
            "status": {"token": token, "expirationTimestamp": expires},
        });
        Ok(crate::body::json_response(StatusCode::CREATED, &out))
    }

    /// The status of a TokenReview of `spec`.
    pub(crate) async fn token_review_status(&self, spec: &Value) -> Value {
        let token = spec
            .get("token")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let requested: Vec<String> = spec
            .get("audiences")
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(|v| v.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default();
        let mut errors = Vec::new();
        if let Some(signer) = self.sa_signer.get() {
            let audiences = if requested.is_empty() {
                signer.audiences().to_vec()
            } else {
                requested.clone()
            };
            match self.validate_sa_token(signer, token, &audiences).await {
                Ok(u) => {
                    let mut user =
                        json!({"username": u.username, "uid": u.uid, "groups": u.groups});
                    if !u.extra.is_empty() {
                        user["extra"] = Value::Object(u.extra);
                    }
                    return json!({"authenticated": true, "user": user, "audiences": u.audiences});
                }
                Err(e) => errors.push(e.to_string()),
            }
        }
        // Other bearer tokens (the join token) are reviewed by their authenticators.
        let others = match self.tokens.read() {
            Ok(t) => t.clone(),
            Err(p) => p.into_inner().clone(),
        };
        for a in &others {
            if let Some(id) = a.authenticate(token).await {
                // Service-account tokens were judged above, against the requested audiences.
                if id.user.starts_with("system:serviceaccount:") {
                    continue;
                }
                return json!({"authenticated": true, "user": {"username": id.user, "groups": id.groups}});
            }
        }
        errors.insert(0, "invalid bearer token".to_string());
        json!({"user": {}, "error": format!("[{}]", errors.join(", "))})
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
