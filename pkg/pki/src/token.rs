//! The join token: `K10<hex sha256 of the server CA bundle>::server:<secret>`, as k3s writes
//! it. An agent pins the CA by the hash before it sends the secret.

use std::fmt;
use std::path::Path;

use rand::Rng;
use sha2::{Digest, Sha256};

use crate::files::{ensure_mode, read_optional, write_atomic};
use crate::{PkiError, Result};

const PREFIX: &str = "K10";
const SECRET_LEN: usize = 32;

/// A parsed join token. `Debug` redacts the secret; [`fmt::Display`] gives the token string.
#[derive(Clone, PartialEq, Eq)]
pub struct JoinToken {
    /// Lower-case hex SHA-256 of the server CA bundle, when the token pins one.
    pub ca_hash: Option<String>,
    /// User part (`server`; `server` too for the short form).
    pub username: String,
    /// The secret.
    pub password: String,
}

impl fmt::Debug for JoinToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JoinToken")
            .field("ca_hash", &self.ca_hash)
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .finish()
    }
}

impl fmt::Display for JoinToken {
    /// The full form `K10<hash>::<user>:<secret>`, or the bare secret when nothing is pinned.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.ca_hash {
            Some(h) => write!(f, "{PREFIX}{h}::{}:{}", self.username, self.password),
            None => f.write_str(&self.password),
        }
    }
}

/// Lower-case hex SHA-256 of a CA bundle: the PEM bytes exactly as stored and served.
pub fn ca_hash(ca_pem: &[u8]) -> String {
    hex::encode(Sha256::digest(ca_pem))
}

/// Equality of two byte strings in time independent of where they differ.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn token_err(msg: &str) -> PkiError {
    PkiError::Token(msg.to_string())
}

impl JoinToken {
    /// A new token pinning `server_ca_pem`, user `server`, with a random 32-character
    /// alphanumeric secret.
    pub fn generate(server_ca_pem: &str) -> Self {
        let password = rand::rng()
            .sample_iter(rand::distr::Alphanumeric)
            .take(SECRET_LEN)
            .map(char::from)
            .collect();
        Self {
            ca_hash: Some(ca_hash(server_ca_pem.as_bytes())),
            username: "server".into(),
            password,
        }
    }

    /// Parse the full form `K10<64 hex digits>::<user>:<secret>` or a bare `<secret>` (then
    /// nothing is pinned and the user is `server`). Surrounding whitespace is ignored.
    pub fn parse(s: &str) -> Result<Self> {
        let s = s.trim();
        if s.is_empty() {
            return Err(token_err("empty"));
        }
        if s.contains(char::is_whitespace) {
            return Err(token_err("contains whitespace"));
        }
        let Some(rest) = s.strip_prefix(PREFIX).filter(|r| r.contains("::")) else {
            return Ok(Self {
                ca_hash: None,
                username: "server".into(),
                password: s.into(),
            });
        };
        let (hash, creds) = rest
            .split_once("::")
            .ok_or_else(|| token_err("expected K10<ca hash>::<user>:<secret>"))?;
        if hash.len() != 64 || !hash.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(token_err("the CA hash must be 64 hex digits"));
        }
        let (user, pass) = creds
            .split_once(':')
            .ok_or_else(|| token_err("expected <user>:<secret> after '::'"))?;
        if user.is_empty() || pass.is_empty() {
            return Err(token_err("user and secret must not be empty"));
        }
        Ok(Self {
            ca_hash: Some(hash.to_ascii_lowercase()),
            username: user.into(),
            password: pass.into(),
        })
    }

    /// Whether `ca_pem` (the bundle the server presented) matches the pinned hash, compared in
    /// constant time. `true` when the token pins nothing (short form: the caller decides
    /// whether to trust the CA some other way).
    pub fn verify_ca(&self, ca_pem: &[u8]) -> bool {
        match &self.ca_hash {
            Some(h) => constant_time_eq(ca_hash(ca_pem).as_bytes(), h.as_bytes()),
            None => true,
        }
    }

    /// Whether `secret` equals this token's secret, compared in constant time.
    pub fn secret_matches(&self, secret: &str) -> bool {
        constant_time_eq(self.password.as_bytes(), secret.as_bytes())
    }

    /// The token's string form (same as [`fmt::Display`]).
    pub fn to_token_string(&self) -> String {
        self.to_string()
    }

    /// Read the token at `path` (`<data-dir>/server/token`), or create it (mode 0600, full
    /// form pinning `server_ca_pem`). An existing file is reused as it is and kept 0600.
    pub fn load_or_create(path: &Path, server_ca_pem: &str) -> Result<Self> {
        if let Some(existing) = read_optional(path)? {
            ensure_mode(path, 0o600)?;
            return Self::parse(&existing)
                .map_err(|e| PkiError::invalid(path.display().to_string(), e.to_string()));
        }
        let token = Self::generate(server_ca_pem);
        write_atomic(path, format!("{token}\n").as_bytes(), 0o600)?;
        tracing::info!(path = %path.display(), "created join token");
        Ok(token)
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    #[test]
    fn created_once_reused_and_round_trips() {
        let dir = tempfile::tempdir().expect("tmp");
        let p = dir.path().join("server/token");
        let t = JoinToken::load_or_create(&p, "CA PEM").expect("create");
        let again = JoinToken::load_or_create(&p, "other CA").expect("reload");
        assert_eq!(t, again, "reused, not re-created");
        assert_eq!(
            std::fs::metadata(&p).expect("meta").permissions().mode() & 0o777,
            0o600
        );
        let s = t.to_string();
        assert_eq!(std::fs::read_to_string(&p).expect("read"), format!("{s}\n"));
        let hash = ca_hash(b"CA PEM");
        assert_eq!(hash.len(), 64);
        assert!(s.starts_with(&format!("K10{hash}::server:")), "{s}");
        assert_eq!(t.password.len(), 32);
        assert!(t.password.bytes().all(|b| b.is_ascii_alphanumeric()));
        assert_eq!(JoinToken::parse(&s).expect("parse"), t);
        assert_eq!(t.to_token_string(), s);
        assert!(t.verify_ca(b"CA PEM"));
        assert!(!t.verify_ca(b"CA PEM\n"));
        assert!(t.secret_matches(&t.password));
        assert!(!t.secret_matches("nope"));
        assert!(!format!("{t:?}").contains(&t.password), "Debug redacts");
        assert_ne!(JoinToken::generate("CA PEM"), t, "random secret");
    }

    #[test]
    fn parse_forms_and_errors() {
        let hash = "AB".repeat(32);
        let t = JoinToken::parse(&format!(" K10{hash}::node:s:e:c \n")).expect("full");
        assert_eq!(t.ca_hash.as_deref(), Some("ab".repeat(32).as_str()));
        assert_eq!(
            (t.username.as_str(), t.password.as_str()),
            ("node", "s:e:c")
        );

        let short = JoinToken::parse("justasecret").expect("short form");
        assert_eq!(short.ca_hash, None);
        assert_eq!(short.username, "server");
        assert_eq!(short.password, "justasecret");
        assert_eq!(short.to_string(), "justasecret");
        assert!(short.verify_ca(b"anything"));
        // A bare secret may itself start with K10.
        assert_eq!(
            JoinToken::parse("K10abc").expect("short").password,
            "K10abc"
        );

        for bad in [
            "",
            "   ",
            "K10abc::server:x",
            &format!("K10{hash}::server"),
            &format!("K10{hash}:::x"),
            &format!("K10{hash}::server:"),
            "two words",
        ] {
            let err = JoinToken::parse(bad).expect_err(bad);
            assert!(err.to_string().starts_with("join token: "), "{err}");
        }
    }

    #[test]
    fn malformed_token_file_names_the_file() {
        let dir = tempfile::tempdir().expect("tmp");
        let p = dir.path().join("token");
        std::fs::write(&p, "K10zz::server:x").expect("write");
        let err = JoinToken::load_or_create(&p, "CA")
            .expect_err("bad")
            .to_string();
        assert!(
            err.contains(&p.display().to_string()) && err.contains("hex"),
            "{err}"
        );
    }
}
