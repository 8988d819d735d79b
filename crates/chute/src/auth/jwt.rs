//! Signed tokens from the application (JWTs), as Bearer tokens beside chute's own API tokens.
//!
//! The application signs `{"sub": "alice", "exp": ...}` with its HS256 secret
//! (`auth_jwt_secret`) or its private key (`auth_jwt_public_key`: RS256, ES256 or EdDSA), and
//! hands the token to its user; chute checks the signature, `exp`, `nbf`, `aud` and `iss`,
//! and serves user `sub`, created on first sight. Each key admits only its own algorithm,
//! chosen by chute and never by the token's header, so `alg: none` and HS/RS confusion (an
//! HS256 token "signed" with the public key as its secret) are refused.

use std::collections::HashSet;

use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;

use crate::config::Settings;

/// Longest token looked at; longer ones are refused before any decoding.
pub const MAX_TOKEN_LEN: usize = 8 * 1024;

/// Why a signed token was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JwtError {
    #[error("the signed token has expired")]
    Expired,
    #[error("the signed token is not valid: {0}")]
    Invalid(String),
}

/// What a valid token says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claims {
    /// The user's name (`sub`).
    pub user: String,
    /// `staff: true`, counted only when `auth_jwt_allow_staff` is set.
    pub staff: bool,
    /// `max_upload_size`: narrows the server's largest upload for this token.
    pub max_upload_size: Option<u64>,
    /// `quota`: narrows the user's quota for this token.
    pub quota: Option<u64>,
}

#[derive(Deserialize)]
struct Raw {
    sub: String,
    #[serde(default)]
    staff: bool,
    #[serde(default)]
    max_upload_size: Option<u64>,
    #[serde(default)]
    quota: Option<u64>,
}

/// Checks signed tokens against the application's keys.
pub struct JwtVerifier {
    /// One (key, validation) per configured key; each validation admits one algorithm.
    keys: Vec<(DecodingKey, Validation)>,
    allow_staff: bool,
}

impl JwtVerifier {
    /// The verifier the settings describe; None when no key is set.
    pub fn from_settings(s: &Settings) -> Result<Option<Self>, String> {
        let mut keys = Vec::new();
        if !s.auth_jwt_secret.is_empty() {
            let key = DecodingKey::from_secret(s.auth_jwt_secret.as_bytes())
                .map_err(|e| format!("auth_jwt_secret: {e}"))?;
            keys.push((key, Algorithm::HS256));
        }
        if !s.auth_jwt_public_key.is_empty() {
            let pem = if s.auth_jwt_public_key.trim_start().starts_with("-----BEGIN") {
                s.auth_jwt_public_key.clone().into_bytes()
            } else {
                std::fs::read(&s.auth_jwt_public_key)
                    .map_err(|e| format!("auth_jwt_public_key {}: {e}", s.auth_jwt_public_key))?
            };
            keys.push(public_key(&pem)?);
        }
        if keys.is_empty() {
            return Ok(None);
        }
        let keys = keys
            .into_iter()
            .map(|(key, alg)| (key, validation(s, alg)))
            .collect();
        Ok(Some(Self {
            keys,
            allow_staff: s.auth_jwt_allow_staff,
        }))
    }

    /// Whether `token` looks like a JWT at all (three dot-separated parts), so that it is
    /// checked here rather than as an API token.
    pub fn looks_like_jwt(token: &str) -> bool {
        token.split('.').count() == 3
    }

    /// The claims of a valid `token`.
    pub fn verify(&self, token: &str) -> Result<Claims, JwtError> {
        if token.len() > MAX_TOKEN_LEN {
            return Err(JwtError::Invalid(format!(
                "longer than {MAX_TOKEN_LEN} bytes"
            )));
        }
        let header = jsonwebtoken::decode_header(token)
            .map_err(|e| JwtError::Invalid(format!("its header: {e}")))?;
        let Some((key, validation)) = self
            .keys
            .iter()
            .find(|(_, v)| v.algorithms.contains(&header.alg))
        else {
            return Err(JwtError::Invalid(format!(
                "algorithm {:?} is not accepted",
                header.alg
            )));
        };
        let data =
            jsonwebtoken::decode::<Raw>(token, key, validation).map_err(|e| match e.kind() {
                ErrorKind::ExpiredSignature => JwtError::Expired,
                ErrorKind::ImmatureSignature => JwtError::Invalid("not valid yet (nbf)".into()),
                ErrorKind::InvalidSignature => JwtError::Invalid("bad signature".into()),
                ErrorKind::InvalidAudience => JwtError::Invalid("wrong audience (aud)".into()),
                ErrorKind::InvalidIssuer => JwtError::Invalid("wrong issuer (iss)".into()),
                ErrorKind::MissingRequiredClaim(c) => JwtError::Invalid(format!("no `{c}` claim")),
                _ => JwtError::Invalid(e.to_string()),
            })?;
        let raw = data.claims;
        if !crate::names::valid_user_name(&raw.sub) {
            return Err(JwtError::Invalid(format!(
                "`sub` is not a user name ({})",
                crate::names::USER_NAME_RULE
            )));
        }
        Ok(Claims {
            user: raw.sub,
            staff: raw.staff && self.allow_staff,
            max_upload_size: raw.max_upload_size,
            quota: raw.quota,
        })
    }
}

/// An RSA, P-256 or Ed25519 public key, and the one algorithm it verifies.
fn public_key(pem: &[u8]) -> Result<(DecodingKey, Algorithm), String> {
    if let Ok(k) = DecodingKey::from_rsa_pem(pem) {
        return Ok((k, Algorithm::RS256));
    }
    if let Ok(k) = DecodingKey::from_ec_pem(pem) {
        return Ok((k, Algorithm::ES256));
    }
    if let Ok(k) = DecodingKey::from_ed_pem(pem) {
        return Ok((k, Algorithm::EdDSA));
    }
    Err("auth_jwt_public_key: not an RSA, P-256 or Ed25519 public key in PEM".into())
}

fn validation(s: &Settings, alg: Algorithm) -> Validation {
    let mut v = Validation::new(alg);
    v.leeway = s.auth_jwt_leeway.0.as_secs();
    v.validate_nbf = true;
    let mut required: HashSet<String> = ["exp", "sub"].into_iter().map(String::from).collect();
    if !s.auth_jwt_audience.is_empty() {
        v.set_audience(&[&s.auth_jwt_audience]);
        required.insert("aud".into());
    }
    if !s.auth_jwt_issuer.is_empty() {
        v.set_issuer(&[&s.auth_jwt_issuer]);
        required.insert("iss".into());
    }
    v.required_spec_claims = required;
    v
}
