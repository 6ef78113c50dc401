//! Passwords, access tokens and refresh tokens.
//!
//! - Passwords: Argon2id with OWASP's minimum parameters (19 MiB, 2 passes, 1 lane) in PHC
//!   strings; hashing runs on a blocking thread (it costs ~50 ms of CPU by design).
//! - Access tokens: HS256 JWTs pinned to that one algorithm, with `exp`, `iss`, `aud`, minutes
//!   long ([`crate::limits::ACCESS_TOKEN_TTL`]).
//! - Refresh tokens: 256 random bits, opaque, stored only as a BLAKE3 hash, rotated on every use;
//!   [`rotate`] is the pure decision of what a presented token means.

use argon2::password_hash::{PasswordHasher, PasswordVerifier};
use argon2::{Algorithm, Argon2, Params, Version};
use jsonwebtoken::{Algorithm as JwtAlgorithm, DecodingKey, EncodingKey, Header, Validation};
use rand::TryRngCore;
use serde::{Deserialize, Serialize};

/// Issuer of every access token.
pub const ISSUER: &str = "cairn";
/// Audience of access tokens; refresh tokens are not JWTs, so they can never pass as one.
pub const ACCESS_AUDIENCE: &str = "cairn-api";

fn argon2() -> Argon2<'static> {
    let params = Params::new(19 * 1024, 2, 1, None).expect("OWASP parameters are valid");
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
}

/// Hashes a password into a PHC string.
///
/// # Errors
/// Only if the OS random source fails.
pub fn hash_password(password: &str) -> Result<String, String> {
    // The salt is 16 random bytes from the OS (password-hash's `getrandom` feature).
    argon2()
        .hash_password(password.as_bytes())
        .map(|hash| hash.to_string())
        .map_err(|e| e.to_string())
}

/// Checks a password against a stored PHC string; false for a wrong password or a damaged hash.
pub fn verify_password(password: &str, phc: &str) -> bool {
    argon2().verify_password(password.as_bytes(), phc).is_ok()
}

/// A PHC string to verify against when the user does not exist, so a login for an unknown name
/// costs the same time as one with a wrong password (no user enumeration by timing).
pub fn dummy_hash() -> &'static str {
    static DUMMY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    DUMMY.get_or_init(|| hash_password("cairn-dummy-password").unwrap_or_default())
}

/// The claims of an access token.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Claims {
    /// User id.
    pub sub: String,
    /// Login name.
    pub name: String,
    /// Issuer, always [`ISSUER`].
    pub iss: String,
    /// Audience, always [`ACCESS_AUDIENCE`].
    pub aud: String,
    /// Issued at, Unix seconds.
    pub iat: u64,
    /// Expires at, Unix seconds.
    pub exp: u64,
}

/// Signs and checks access tokens with one HS256 key.
#[derive(Clone)]
pub struct TokenKeys {
    encoding: EncodingKey,
    decoding: DecodingKey,
}

impl std::fmt::Debug for TokenKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TokenKeys([redacted])")
    }
}

impl TokenKeys {
    /// Keys from a secret of at least 32 bytes.
    pub fn new(secret: &[u8]) -> Self {
        TokenKeys {
            encoding: EncodingKey::from_secret(secret),
            decoding: DecodingKey::from_secret(secret),
        }
    }

    /// Issues an access token for `user_id` valid from `now_secs` for `ttl_secs`.
    ///
    /// # Errors
    /// Only on a serialisation failure.
    pub fn issue(
        &self,
        user_id: i64,
        name: &str,
        now_secs: u64,
        ttl_secs: u64,
    ) -> Result<String, String> {
        let claims = Claims {
            sub: user_id.to_string(),
            name: name.to_owned(),
            iss: ISSUER.to_owned(),
            aud: ACCESS_AUDIENCE.to_owned(),
            iat: now_secs,
            exp: now_secs + ttl_secs,
        };
        jsonwebtoken::encode(&Header::new(JwtAlgorithm::HS256), &claims, &self.encoding)
            .map_err(|e| e.to_string())
    }

    /// Checks a token: HS256 only, signature, `exp` (no leeway), `iss` and `aud`.
    ///
    /// # Errors
    /// A short reason, never the token.
    pub fn verify(&self, token: &str) -> Result<Claims, String> {
        let mut validation = Validation::new(JwtAlgorithm::HS256);
        validation.algorithms = vec![JwtAlgorithm::HS256];
        validation.leeway = 0;
        validation.set_issuer(&[ISSUER]);
        validation.set_audience(&[ACCESS_AUDIENCE]);
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        jsonwebtoken::decode::<Claims>(token, &self.decoding, &validation)
            .map(|data| data.claims)
            .map_err(|e| e.to_string())
    }
}

/// A fresh refresh token: 32 random bytes as URL-safe hex.
///
/// # Errors
/// Only if the OS random source fails.
pub fn new_refresh_token() -> Result<String, String> {
    random_hex(32)
}

/// A fresh random family id for a login's chain of refresh tokens.
///
/// # Errors
/// Only if the OS random source fails.
pub fn new_family() -> Result<String, String> {
    random_hex(16)
}

fn random_hex(len: usize) -> Result<String, String> {
    let mut bytes = vec![0u8; len];
    rand::rngs::OsRng
        .try_fill_bytes(&mut bytes)
        .map_err(|e| e.to_string())?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// How a refresh token is stored: BLAKE3 of it, hex. The token has 256 bits of entropy, so a
/// fast hash suffices (no offline guessing is possible).
pub fn refresh_token_hash(token: &str) -> String {
    blake3::hash(token.as_bytes()).to_hex().to_string()
}

/// What a stored refresh token looks like when presented.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TokenState {
    /// Expiry, Unix ms.
    pub expires_at: i64,
    /// Whether it was already exchanged.
    pub used: bool,
    /// Whether its family was revoked.
    pub revoked: bool,
}

/// The decision for a presented refresh token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rotation {
    /// Valid: issue a new token in the same family and mark this one used.
    Rotate,
    /// Already used: someone replayed it, so revoke the whole family.
    Reuse,
    /// Revoked (logout or an earlier reuse) or expired: refuse.
    Refuse,
}

/// Decides what a presented refresh token means (pure: the caller supplies `now`).
pub fn rotate(state: TokenState, now_ms: i64) -> Rotation {
    if state.revoked {
        Rotation::Refuse
    } else if state.used {
        Rotation::Reuse
    } else if now_ms >= state.expires_at {
        Rotation::Refuse
    } else {
        Rotation::Rotate
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_hash_to_argon2id_phc_and_verify() {
        let phc = hash_password("correct horse").expect("hash");
        assert!(phc.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{phc}");
        assert!(verify_password("correct horse", &phc));
        assert!(!verify_password("wrong horse", &phc));
        assert!(!verify_password("correct horse", "not a phc string"));
    }

    #[test]
    fn tokens_round_trip_and_reject_tampering() {
        let keys = TokenKeys::new(&[7; 32]);
        let token = keys.issue(42, "ann", 1_000, 900).expect("issue");
        assert!(
            keys.verify(&token).is_err(),
            "issued in 1970, so long expired"
        );
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock")
            .as_secs();
        let token = keys.issue(42, "ann", now, 900).expect("issue");
        assert_eq!(keys.verify(&token).expect("valid").sub, "42");
        assert!(
            TokenKeys::new(&[8; 32]).verify(&token).is_err(),
            "another key"
        );
        let mut parts: Vec<&str> = token.split('.').collect();
        let none_header = "eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0"; // {"alg":"none","typ":"JWT"}
        parts[0] = none_header;
        assert!(
            keys.verify(&format!("{}.{}.", parts[0], parts[1])).is_err(),
            "alg none"
        );
    }

    #[test]
    fn rotation_decisions_in_both_directions() {
        let live = TokenState {
            expires_at: 2_000,
            used: false,
            revoked: false,
        };
        assert_eq!(rotate(live, 1_000), Rotation::Rotate);
        assert_eq!(
            rotate(live, 2_000),
            Rotation::Refuse,
            "expired at the instant"
        );
        assert_eq!(
            rotate(TokenState { used: true, ..live }, 1_000),
            Rotation::Reuse
        );
        assert_eq!(
            rotate(
                TokenState {
                    revoked: true,
                    used: true,
                    ..live
                },
                1_000
            ),
            Rotation::Refuse
        );
        assert_eq!(
            rotate(
                TokenState {
                    revoked: true,
                    ..live
                },
                1_000
            ),
            Rotation::Refuse
        );
    }
}
