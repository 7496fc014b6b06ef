//! Client authentication: connection JWTs (HS256 with a shared secret,
//! RS256/ES256 with a public key), the algorithm pinned by configuration.

use std::time::Duration;

use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;

/// `[auth]` configuration.
#[derive(Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthConfig {
    /// `off` (any token accepted; for local development) or `jwt`.
    /// Default `off`.
    pub mode: AuthMode,
    /// `HS256`, `RS256` or `ES256`; tokens signed otherwise are refused.
    /// Default `HS256`.
    pub algorithm: String,
    /// HS256 shared secret (at least 32 bytes).
    pub secret: Option<String>,
    /// RS256/ES256: path of the PEM public key.
    pub public_key_file: Option<std::path::PathBuf>,
    /// Clock skew allowed on `exp` and `nbf`. Default `30s`.
    #[serde(with = "humantime_serde")]
    pub leeway: Duration,
    /// Required `aud`, if set.
    pub audience: Option<String>,
    /// Required `iss`, if set.
    pub issuer: Option<String>,
}

/// Whether client tokens are checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum AuthMode {
    /// Any token (or none) is accepted.
    #[default]
    Off,
    /// A valid JWT is required.
    Jwt,
}

impl Default for AuthConfig {
    fn default() -> Self {
        Self {
            mode: AuthMode::Off,
            algorithm: "HS256".to_owned(),
            secret: None,
            public_key_file: None,
            leeway: Duration::from_secs(30),
            audience: None,
            issuer: None,
        }
    }
}

impl std::fmt::Debug for AuthConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthConfig")
            .field("mode", &self.mode)
            .field("algorithm", &self.algorithm)
            .field("secret", &self.secret.as_ref().map(|_| "<redacted>"))
            .field("public_key_file", &self.public_key_file)
            .field("leeway", &self.leeway)
            .field("audience", &self.audience)
            .field("issuer", &self.issuer)
            .finish()
    }
}

impl AuthConfig {
    /// Pushes configuration problems (the key file is checked by [`Verifier::new`]).
    pub fn validate(&self, problems: &mut Vec<String>) {
        if self.mode == AuthMode::Off {
            return;
        }
        match self.algorithm.as_str() {
            "HS256" => match &self.secret {
                Some(s) if s.len() >= 32 => {}
                _ => problems.push("auth.secret of at least 32 bytes is required for HS256".into()),
            },
            "RS256" | "ES256" => {
                if self.public_key_file.is_none() {
                    problems.push(format!("auth.public_key_file is required for {}", self.algorithm));
                }
            }
            other => problems.push(format!("auth.algorithm must be HS256, RS256 or ES256, not {other:?}")),
        }
    }
}

/// The claims Switchboard reads.
#[derive(Debug, Clone, Deserialize)]
pub struct Claims {
    /// clientId.
    pub sub: String,
    /// bizCode.
    pub biz: String,
    /// Groups the client may join and send to; absent: any.
    pub groups: Option<Vec<String>>,
    /// Expiry, seconds since the epoch (required).
    pub exp: u64,
}

/// Why a token was refused.
#[derive(Debug, thiserror::Error)]
#[error("invalid token: {0}")]
pub struct AuthError(String);

/// Checks connection tokens.
pub struct Verifier {
    key: DecodingKey,
    validation: Validation,
}

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Verifier").finish_non_exhaustive()
    }
}

impl Verifier {
    /// A verifier for `config` (mode `jwt`); `public_key_pem` is the content
    /// of `public_key_file` for RS256/ES256.
    ///
    /// # Errors
    /// A message naming the problem with the algorithm or key.
    pub fn new(config: &AuthConfig, public_key_pem: Option<&[u8]>) -> Result<Self, String> {
        let (alg, key) = match config.algorithm.as_str() {
            "HS256" => {
                let secret = config.secret.as_deref().ok_or("auth.secret is required for HS256")?;
                (Algorithm::HS256, DecodingKey::from_secret(secret.as_bytes()))
            }
            "RS256" => {
                let pem = public_key_pem.ok_or("auth.public_key_file is required for RS256")?;
                let key = DecodingKey::from_rsa_pem(pem).map_err(|e| format!("auth.public_key_file: {e}"))?;
                (Algorithm::RS256, key)
            }
            "ES256" => {
                let pem = public_key_pem.ok_or("auth.public_key_file is required for ES256")?;
                let key = DecodingKey::from_ec_pem(pem).map_err(|e| format!("auth.public_key_file: {e}"))?;
                (Algorithm::ES256, key)
            }
            other => return Err(format!("unsupported auth.algorithm {other:?}")),
        };
        let mut validation = Validation::new(alg);
        validation.leeway = config.leeway.as_secs();
        validation.validate_nbf = true;
        validation.set_required_spec_claims(&["exp", "sub"]);
        match &config.audience {
            Some(aud) => validation.set_audience(&[aud]),
            None => validation.validate_aud = false,
        }
        if let Some(iss) = &config.issuer {
            validation.set_issuer(&[iss]);
        }
        Ok(Self { key, validation })
    }

    /// Verifies a token and returns its claims.
    ///
    /// # Errors
    /// [`AuthError`] for a bad signature, another algorithm, an expired or
    /// not-yet-valid token, a wrong audience/issuer or missing claims.
    pub fn verify(&self, token: &str) -> Result<Claims, AuthError> {
        jsonwebtoken::decode::<Claims>(token, &self.key, &self.validation)
            .map(|d| d.claims)
            .map_err(|e| AuthError(e.to_string()))
    }
}

/// Whether `origin` matches an allow-list entry: exact, or `scheme://*.domain`
/// for any subdomain.
pub fn origin_allowed(allowed: &[String], origin: &str) -> bool {
    allowed.iter().any(|a| {
        if a == "*" || a.eq_ignore_ascii_case(origin) {
            return true;
        }
        match a.split_once("://*.") {
            Some((scheme, domain)) => origin
                .strip_prefix(scheme)
                .and_then(|o| o.strip_prefix("://"))
                .is_some_and(|host| {
                    host.len() > domain.len()
                        && host
                            .to_ascii_lowercase()
                            .ends_with(&format!(".{}", domain.to_ascii_lowercase()))
                }),
            None => false,
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins() {
        let list = vec!["https://app.example.com".to_owned(), "https://*.example.org".to_owned()];
        assert!(origin_allowed(&list, "https://app.example.com"));
        assert!(origin_allowed(&list, "https://a.b.example.org"));
        assert!(!origin_allowed(&list, "https://example.org"));
        assert!(!origin_allowed(&list, "http://a.example.org"));
        assert!(!origin_allowed(&list, "https://evil.com"));
        assert!(!origin_allowed(&list, "https://app.example.com.evil.com"));
    }
}
