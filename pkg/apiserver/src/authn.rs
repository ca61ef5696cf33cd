//! Authentication of bearer tokens. Client certificates are verified by TLS (see `serve`);
//! requests without one may carry `Authorization: Bearer <token>`, which each registered
//! [`TokenAuthenticator`] is asked about in turn (join token, service-account JWTs, …).

use std::future::Future;
use std::pin::Pin;

use http::HeaderMap;

use crate::authz::Identity;

/// What [`TokenAuthenticator::authenticate`] returns: a boxed future, so authenticators can
/// read the store (service-account tokens check their bound objects) and stay object-safe.
pub type AuthFuture<'a> = Pin<Box<dyn Future<Output = Option<Identity>> + Send + 'a>>;

/// Maps a bearer token to an identity, or says it does not know it.
pub trait TokenAuthenticator: Send + Sync + 'static {
    /// The identity `token` stands for, `None` when this authenticator does not accept it.
    fn authenticate<'a>(&'a self, token: &'a str) -> AuthFuture<'a>;
}

/// The bearer token of a request, if it has one.
pub fn bearer_token(headers: &HeaderMap) -> Option<&str> {
    let v = headers.get(http::header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = v.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_forms() {
        let mut h = HeaderMap::new();
        assert_eq!(bearer_token(&h), None);
        h.insert(
            http::header::AUTHORIZATION,
            http::HeaderValue::from_static("Bearer abc"),
        );
        assert_eq!(bearer_token(&h), Some("abc"));
        h.insert(
            http::header::AUTHORIZATION,
            http::HeaderValue::from_static("bearer  xyz "),
        );
        assert_eq!(bearer_token(&h), Some("xyz"));
        h.insert(
            http::header::AUTHORIZATION,
            http::HeaderValue::from_static("Basic abc"),
        );
        assert_eq!(bearer_token(&h), None);
        h.insert(
            http::header::AUTHORIZATION,
            http::HeaderValue::from_static("Bearer "),
        );
        assert_eq!(bearer_token(&h), None);
    }
}
