//! Service-account token renewal timing, as the kubelet's token manager decides it.

use std::time::{Duration, SystemTime};

/// The longest a projected token is kept without renewal, whatever its expiry (24 h).
pub const MAX_TOKEN_AGE: Duration = Duration::from_secs(24 * 60 * 60);

/// The default `expirationSeconds` of a serviceAccountToken projection (1 h).
pub const DEFAULT_EXPIRATION_SECONDS: i64 = 3600;

/// A token held for one projection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CachedToken {
    /// The token.
    pub token: String,
    /// When it was obtained.
    pub issued: SystemTime,
    /// When it expires.
    pub expiration: SystemTime,
}

impl CachedToken {
    /// Whether to renew the token at `now`: it expired, it is older than 24 h, or 80 % of its
    /// lifetime has passed.
    pub fn needs_refresh(&self, now: SystemTime) -> bool {
        if now >= self.expiration {
            return true;
        }
        let age = now.duration_since(self.issued).unwrap_or_default();
        if age > MAX_TOKEN_AGE {
            return true;
        }
        let ttl = self
            .expiration
            .duration_since(self.issued)
            .unwrap_or_default();
        age >= ttl.mul_f64(0.8)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::UNIX_EPOCH;

    #[test]
    fn refresh_at_80_percent_or_24h() {
        let t0 = UNIX_EPOCH + Duration::from_secs(1_000_000);
        let tok = CachedToken {
            token: "t".into(),
            issued: t0,
            expiration: t0 + Duration::from_secs(3600),
        };
        assert!(!tok.needs_refresh(t0));
        assert!(!tok.needs_refresh(t0 + Duration::from_secs(2879)));
        assert!(tok.needs_refresh(t0 + Duration::from_secs(2880)));
        assert!(tok.needs_refresh(t0 + Duration::from_secs(4000)));
        let long = CachedToken {
            expiration: t0 + Duration::from_secs(365 * 86_400),
            ..tok
        };
        assert!(!long.needs_refresh(t0 + Duration::from_secs(86_400)));
        assert!(long.needs_refresh(t0 + Duration::from_secs(86_401)));
        // a clock set back: not refreshed early, still refreshed once expired
        assert!(!long.needs_refresh(t0 - Duration::from_secs(10)));
    }
}
