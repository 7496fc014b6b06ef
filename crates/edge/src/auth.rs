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

/// A NumericDate (RFC 7519 §2): seconds since the epoch as any JSON
/// number, integer or not, negative or not (`exp = now + 3600.5` is valid).
#[derive(Debug, Clone, Copy, PartialEq, PartialOrd)]
pub struct NumericDate(f64);

impl NumericDate {
    /// Milliseconds since the epoch (saturating far outside any real date).
    pub fn as_millis(self) -> i64 {
        // `as` saturates at the i64 bounds; JSON numbers are never NaN.
        (self.0 * 1000.0) as i64
    }
}

impl<'de> Deserialize<'de> for NumericDate {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = NumericDate;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a NumericDate (a JSON number of seconds since the epoch)")
            }
            #[allow(clippy::cast_precision_loss)]
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<NumericDate, E> {
                Ok(NumericDate(v as f64))
            }
            #[allow(clippy::cast_precision_loss)]
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<NumericDate, E> {
                Ok(NumericDate(v as f64))
            }
            fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<NumericDate, E> {
                if v.is_finite() {
                    Ok(NumericDate(v))
                } else {
                    Err(E::custom("a NumericDate must be finite"))
                }
            }
        }
        d.deserialize_any(Visitor)
    }
}

/// A claim that is one string or an array of strings (as JWT libraries
/// write `aud`, and some write list claims such as `groups`).
fn one_or_many<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Vec<String>>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        One(String),
        Many(Vec<String>),
    }
    Ok(Option::<OneOrMany>::deserialize(d)?.map(|v| match v {
        OneOrMany::One(s) => vec![s],
        OneOrMany::Many(v) => v,
    }))
}

/// The claims Switchboard reads. Registered claims it does not read (`iat`,
/// `jti`) and private claims are ignored, whatever their type.
#[derive(Debug, Clone, Deserialize)]
pub struct Claims {
    /// clientId.
    pub sub: String,
    /// bizCode.
    pub biz: String,
    /// Groups the client may join and send to (an array, or one string);
    /// absent: any.
    #[serde(default, deserialize_with = "one_or_many")]
    pub groups: Option<Vec<String>>,
    /// Expiry (required; checked by [`Verifier::verify`], not by the parser,
    /// so a missing one gets a clear message).
    pub exp: Option<NumericDate>,
    /// Not valid before, if present.
    pub nbf: Option<NumericDate>,
    /// When the connection must close with 4001, whole seconds since the
    /// epoch: `exp` plus the leeway, rounded up. Computed by
    /// [`Verifier::verify`]; the handshake admits a token exactly while
    /// the current time is before `exp` + leeway, so a connection it
    /// admitted is never closed before that moment.
    #[serde(skip)]
    pub expires_at: u64,
}

/// Why a token was refused.
#[derive(Debug, thiserror::Error)]
#[error("invalid token: {0}")]
pub struct AuthError(String);

/// Checks connection tokens.
pub struct Verifier {
    key: DecodingKey,
    validation: Validation,
    /// `auth.leeway`: clock skew allowed on `exp` and `nbf`.
    leeway_ms: i64,
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
        // `exp` and `nbf` are checked here, not by jsonwebtoken: its
        // NumericDate is an unsigned integer (a negative `nbf` would be
        // refused, a fractional `exp` rounded), and one rule decides both
        // the handshake and the expiry close (see `Claims::expires_at`).
        validation.validate_exp = false;
        validation.validate_nbf = false;
        validation.leeway = 0;
        validation.set_required_spec_claims(&["sub"]);
        match &config.audience {
            Some(aud) => validation.set_audience(&[aud]),
            None => validation.validate_aud = false,
        }
        if let Some(iss) = &config.issuer {
            validation.set_issuer(&[iss]);
        }
        Ok(Self {
            key,
            validation,
            leeway_ms: i64::try_from(config.leeway.as_millis()).unwrap_or(i64::MAX),
        })
    }

    /// Verifies a token and returns its claims, with
    /// [`Claims::expires_at`] set.
    ///
    /// # Errors
    /// [`AuthError`] for a bad signature, another algorithm, an expired or
    /// not-yet-valid token, a wrong audience/issuer or missing claims.
    pub fn verify(&self, token: &str) -> Result<Claims, AuthError> {
        let now_ms = i64::try_from(switchboard_runtime::now_ms()).unwrap_or(i64::MAX);
        self.verify_at(token, now_ms)
    }

    /// [`verify`](Self::verify) at `now_ms` (milliseconds since the epoch).
    ///
    /// A token is valid while `nbf - leeway <= now < exp + leeway`.
    ///
    /// # Errors
    /// As [`verify`](Self::verify).
    pub fn verify_at(&self, token: &str, now_ms: i64) -> Result<Claims, AuthError> {
        let mut claims = jsonwebtoken::decode::<Claims>(token, &self.key, &self.validation)
            .map(|d| d.claims)
            .map_err(|e| AuthError(e.to_string()))?;
        let exp = claims
            .exp
            .ok_or_else(|| AuthError("the token has no exp claim".into()))?;
        let deadline_ms = exp.as_millis().saturating_add(self.leeway_ms);
        if now_ms >= deadline_ms {
            return Err(AuthError("the token has expired".into()));
        }
        if let Some(nbf) = claims.nbf {
            if nbf.as_millis() > now_ms.saturating_add(self.leeway_ms) {
                return Err(AuthError("the token is not valid yet (nbf)".into()));
            }
        }
        // Rounded up: the sweeper closes once the whole second reaches it,
        // never before the deadline. Never 0 (that means "no expiry").
        let secs = deadline_ms.div_euclid(1000) + i64::from(deadline_ms.rem_euclid(1000) != 0);
        claims.expires_at = u64::try_from(secs).unwrap_or(0).max(1);
        Ok(claims)
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
    use jsonwebtoken::{encode, EncodingKey, Header};
    use serde_json::{json, Value};

    const SECRET: &str = "0123456789abcdef0123456789abcdef-unit";
    /// A fixed "now": 2026-11-20T00:00:00Z, in milliseconds.
    const NOW_MS: i64 = 1_795_132_800_000;
    const NOW: i64 = NOW_MS / 1000;

    fn verifier(leeway: u64) -> Verifier {
        let config = AuthConfig {
            mode: AuthMode::Jwt,
            secret: Some(SECRET.into()),
            leeway: Duration::from_secs(leeway),
            audience: Some("sb".into()),
            ..AuthConfig::default()
        };
        Verifier::new(&config, None).expect("verifier")
    }

    fn token(claims: &Value) -> String {
        encode(&Header::default(), claims, &EncodingKey::from_secret(SECRET.as_bytes())).expect("sign")
    }

    fn check(leeway: u64, extra: Value) -> Result<Claims, AuthError> {
        let mut claims = json!({"sub": "c1", "biz": "d1", "aud": "sb", "exp": NOW + 3600});
        if let (Some(c), Value::Object(e)) = (claims.as_object_mut(), extra) {
            c.extend(e);
        }
        verifier(leeway).verify_at(&token(&claims), NOW_MS)
    }

    #[test]
    fn every_numeric_date_may_be_any_json_number() {
        // Fractions, exponent notation, negative values, in every NumericDate claim.
        for extra in [
            json!({"exp": NOW as f64 + 3600.5}),
            json!({"exp": 1.8e9}),
            json!({"exp": u64::MAX}),
            json!({"nbf": NOW as f64 - 0.25, "iat": NOW as f64 - 0.25}),
            json!({"nbf": -1, "iat": -1}),
            json!({"nbf": -1.5, "iat": 0.5}),
            json!({"iat": "not a number: iat is not read"}),
            json!({"aud": ["other", "sb"]}),
            json!({"groups": "g1"}),
            json!({"groups": ["g1", "g2"]}),
            json!({"groups": null}),
        ] {
            assert!(check(0, extra.clone()).is_ok(), "{extra}");
        }
        let c = check(0, json!({"exp": NOW as f64 + 3600.5})).expect("fractional exp");
        assert_eq!(c.expires_at, (NOW + 3601) as u64, "rounded up, never early");
        assert_eq!(
            check(0, json!({"groups": "g1"})).expect("one group").groups,
            Some(vec!["g1".to_owned()])
        );
    }

    #[test]
    fn malformed_or_missing_dates_are_refused() {
        for extra in [
            json!({"exp": "1795132800"}),
            json!({"exp": null}),
            json!({"exp": NOW as f64 - 0.5}),
            json!({"exp": -1}),
            json!({"nbf": NOW + 1}),
            json!({"nbf": "yesterday"}),
            json!({"aud": ["other"]}),
            json!({"groups": 3}),
        ] {
            assert!(check(0, extra.clone()).is_err(), "{extra}");
        }
    }

    #[test]
    fn leeway_is_one_deadline_for_the_handshake_and_the_close() {
        // exp passed 10 s ago, leeway 30 s: valid until exp + 30 s, and the
        // connection closes then, not at exp.
        let c = check(30, json!({"exp": NOW - 10})).expect("within leeway");
        assert_eq!(c.expires_at, (NOW + 20) as u64);
        assert!(check(30, json!({"exp": NOW - 30})).is_err(), "at exp + leeway");
        assert!(check(30, json!({"exp": NOW as f64 - 29.5})).is_ok());
        let c = check(30, json!({"exp": NOW as f64 - 29.5})).expect("half a second left");
        assert_eq!(c.expires_at, (NOW + 1) as u64);
        // nbf up to the leeway ahead is accepted.
        assert!(check(30, json!({"nbf": NOW + 30})).is_ok());
        assert!(check(30, json!({"nbf": NOW + 31})).is_err());
    }

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
