//! Ed25519 token keys and their environment-variable form `kid:base64url(32 bytes)`.

use std::fmt;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ed25519_dalek::Signer as _;
use rand::RngCore;
use serde::Serialize;

use crate::error::KeyError;

const KEY_LEN: usize = 32;
const MAX_KID_LEN: usize = 64;

fn valid_kid(kid: &str) -> bool {
    !kid.is_empty()
        && kid.len() <= MAX_KID_LEN
        && kid
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// Splits `kid:base64url` and decodes the key part to exactly 32 bytes.
fn parse_env_value(s: &str) -> Result<(String, [u8; KEY_LEN]), KeyError> {
    let s = s.trim();
    if s.is_empty() {
        return Err(KeyError::Empty);
    }
    let (kid, b64) = s.split_once(':').ok_or(KeyError::Format)?;
    if !valid_kid(kid) {
        return Err(KeyError::InvalidKid);
    }
    // Padding is tolerated because some tools add it; the canonical form has none.
    let bytes = URL_SAFE_NO_PAD
        .decode(b64.trim_end_matches('='))
        .map_err(|_| KeyError::Base64)?;
    let key: [u8; KEY_LEN] = bytes.as_slice().try_into().map_err(|_| KeyError::Length {
        expected: KEY_LEN,
        actual: bytes.len(),
    })?;
    Ok((kid.to_owned(), key))
}

/// The private half: signs access tokens. Only the identity service holds one.
///
/// `Debug` shows the key id and public key, never the seed.
#[derive(Clone)]
pub struct SigningKey {
    kid: String,
    secret: ed25519_dalek::SigningKey,
}

impl SigningKey {
    /// A fresh random key (from the thread-local CSPRNG, seeded by the OS).
    ///
    /// Characters of `kid` outside `[A-Za-z0-9._-]` become `_` and it is cut to 64 bytes (an
    /// empty kid becomes `"key"`), so the result always round-trips through
    /// [`SigningKey::to_env_value`].
    pub fn generate(kid: &str) -> Self {
        let mut kid: String = kid
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        kid.truncate(MAX_KID_LEN);
        if kid.is_empty() {
            kid.push_str("key");
        }
        let mut seed = [0u8; KEY_LEN];
        rand::rng().fill_bytes(&mut seed);
        let key = Self::build(kid, &seed);
        seed.fill(0);
        key
    }

    /// A key from its 32-byte seed.
    pub fn from_seed(kid: &str, seed: &[u8; KEY_LEN]) -> Result<Self, KeyError> {
        if !valid_kid(kid) {
            return Err(KeyError::InvalidKid);
        }
        Ok(Self::build(kid.to_owned(), seed))
    }

    /// Parses `kid:base64url(32-byte seed)` (unpadded base64url, the form
    /// [`SigningKey::to_env_value`] writes).
    pub fn from_env_value(s: &str) -> Result<Self, KeyError> {
        let (kid, mut seed) = parse_env_value(s)?;
        let key = Self::build(kid, &seed);
        seed.fill(0);
        Ok(key)
    }

    /// `kid:base64url(seed)`. This is the secret: put it in a secret store, never in logs.
    pub fn to_env_value(&self) -> String {
        format!(
            "{}:{}",
            self.kid,
            URL_SAFE_NO_PAD.encode(self.secret.as_bytes())
        )
    }

    /// The key id written into each token's header.
    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// The public half, for verifiers.
    pub fn verifying_key(&self) -> VerifyingKey {
        VerifyingKey {
            kid: self.kid.clone(),
            key: self.secret.verifying_key(),
        }
    }

    /// `claims` as a JWT (compact JWS, RFC 7515) signed EdDSA with this key, its `kid` in the
    /// header: access tokens, and the test OpenID provider's ID tokens.
    ///
    /// Signed here rather than by `jsonwebtoken::encode`, which takes the key in PKCS#8 form
    /// and parses it and derives its public half again for every signature: half of what a
    /// token cost, once per sign-in. Verification stays with `jsonwebtoken`.
    pub fn sign_jwt<T: Serialize>(&self, claims: &T) -> Result<String, serde_json::Error> {
        #[derive(Serialize)]
        struct JwsHeader<'a> {
            typ: &'static str,
            alg: &'static str,
            kid: &'a str,
        }
        let header = serde_json::to_vec(&JwsHeader {
            typ: "JWT",
            alg: "EdDSA",
            kid: &self.kid,
        })?;
        let claims = serde_json::to_vec(claims)?;
        // Base64 is 4/3 the size; the signature is 64 bytes (86 characters).
        let mut jws = String::with_capacity((header.len() + claims.len()) * 4 / 3 + 96);
        URL_SAFE_NO_PAD.encode_string(&header, &mut jws);
        jws.push('.');
        URL_SAFE_NO_PAD.encode_string(&claims, &mut jws);
        let signature = self.secret.sign(jws.as_bytes());
        jws.push('.');
        URL_SAFE_NO_PAD.encode_string(signature.to_bytes(), &mut jws);
        Ok(jws)
    }

    fn build(kid: String, seed: &[u8; KEY_LEN]) -> Self {
        Self {
            kid,
            secret: ed25519_dalek::SigningKey::from_bytes(seed),
        }
    }
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SigningKey")
            .field("kid", &self.kid)
            .field("public_key", &self.verifying_key().public_key_b64url())
            .finish_non_exhaustive()
    }
}

/// The public half of a [`SigningKey`]: verifies tokens whose header `kid` matches.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerifyingKey {
    /// Key id.
    pub kid: String,
    key: ed25519_dalek::VerifyingKey,
}

impl VerifyingKey {
    /// A key from its id and 32 raw public-key bytes (as published by `GetSigningKeys`).
    /// Rejects bytes that are not a point on the curve and small-order ("weak") keys.
    pub fn new(kid: &str, public_key: &[u8]) -> Result<Self, KeyError> {
        if !valid_kid(kid) {
            return Err(KeyError::InvalidKid);
        }
        let bytes: &[u8; KEY_LEN] = public_key.try_into().map_err(|_| KeyError::Length {
            expected: KEY_LEN,
            actual: public_key.len(),
        })?;
        let key = ed25519_dalek::VerifyingKey::from_bytes(bytes)
            .map_err(|_| KeyError::InvalidPublicKey)?;
        if key.is_weak() {
            return Err(KeyError::InvalidPublicKey);
        }
        Ok(Self {
            kid: kid.to_owned(),
            key,
        })
    }

    /// Parses `kid:base64url(32-byte public key)`.
    pub fn from_env_value(s: &str) -> Result<Self, KeyError> {
        let (kid, bytes) = parse_env_value(s)?;
        Self::new(&kid, &bytes)
    }

    /// `kid:base64url(public key)`.
    pub fn to_env_value(&self) -> String {
        format!("{}:{}", self.kid, self.public_key_b64url())
    }

    /// The raw public key, unpadded base64url (the JWK `x` member).
    pub fn public_key_b64url(&self) -> String {
        URL_SAFE_NO_PAD.encode(self.key.as_bytes())
    }

    /// The raw 32-byte public key.
    pub fn public_key_bytes(&self) -> [u8; KEY_LEN] {
        self.key.to_bytes()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    #[test]
    fn signing_key_env_round_trip() {
        let key = SigningKey::generate("k1");
        let value = key.to_env_value();
        assert!(value.starts_with("k1:"));
        let back = SigningKey::from_env_value(&value).unwrap();
        assert_eq!(back.kid(), "k1");
        assert_eq!(back.verifying_key(), key.verifying_key());
        assert_eq!(back.to_env_value(), value);
        // padded and surrounded by whitespace is tolerated
        let padded = format!("  {value}=\n");
        assert_eq!(
            SigningKey::from_env_value(&padded).unwrap().verifying_key(),
            key.verifying_key()
        );
    }

    #[test]
    fn verifying_key_env_round_trip() {
        let vk = SigningKey::generate("2024-01.a").verifying_key();
        let value = vk.to_env_value();
        assert_eq!(value, format!("2024-01.a:{}", vk.public_key_b64url()));
        assert_eq!(VerifyingKey::from_env_value(&value).unwrap(), vk);
        assert_eq!(
            VerifyingKey::new("2024-01.a", &vk.public_key_bytes()).unwrap(),
            vk
        );
    }

    #[test]
    fn env_value_errors() {
        let b64_32 = URL_SAFE_NO_PAD.encode([7u8; 32]);
        let b64_31 = URL_SAFE_NO_PAD.encode([7u8; 31]);
        let cases: Vec<(String, KeyError)> = vec![
            ("".into(), KeyError::Empty),
            ("   ".into(), KeyError::Empty),
            ("k1".into(), KeyError::Format),
            (format!(":{b64_32}"), KeyError::InvalidKid),
            (format!("bad kid:{b64_32}"), KeyError::InvalidKid),
            (format!("{}:{b64_32}", "k".repeat(65)), KeyError::InvalidKid),
            ("k1:not base64!".into(), KeyError::Base64),
            (format!("k1:{b64_32}:x"), KeyError::Base64),
            (
                format!("k1:{b64_31}"),
                KeyError::Length {
                    expected: 32,
                    actual: 31,
                },
            ),
            (
                "k1:".into(),
                KeyError::Length {
                    expected: 32,
                    actual: 0,
                },
            ),
        ];
        for (value, expected) in cases {
            assert_eq!(
                SigningKey::from_env_value(&value).unwrap_err(),
                expected,
                "signing {value:?}"
            );
            assert_eq!(
                VerifyingKey::from_env_value(&value).unwrap_err(),
                expected,
                "verifying {value:?}"
            );
        }
    }

    #[test]
    fn weak_or_invalid_public_keys_are_refused() {
        // the identity point: small order
        let mut identity = [0u8; 32];
        identity[0] = 1;
        assert_eq!(
            VerifyingKey::new("k", &identity).unwrap_err(),
            KeyError::InvalidPublicKey
        );
        assert_eq!(
            VerifyingKey::new("k", &[1u8; 31]).unwrap_err(),
            KeyError::Length {
                expected: 32,
                actual: 31
            }
        );
    }

    #[test]
    fn generate_sanitises_kid() {
        assert_eq!(SigningKey::generate("a:b,c d").kid(), "a_b_c_d");
        assert_eq!(SigningKey::generate("").kid(), "key");
        assert_eq!(SigningKey::generate(&"x".repeat(100)).kid().len(), 64);
        assert!(SigningKey::from_seed("a:b", &[1; 32]).is_err());
    }

    #[test]
    fn generated_keys_differ() {
        let a = SigningKey::generate("k");
        let b = SigningKey::generate("k");
        assert_ne!(a.verifying_key(), b.verifying_key());
    }

    #[test]
    fn debug_hides_the_seed() {
        let key = SigningKey::from_seed("k1", &[42u8; 32]).unwrap();
        let seed_b64 = URL_SAFE_NO_PAD.encode([42u8; 32]);
        let dbg = format!("{key:?}");
        assert!(dbg.contains("k1"));
        assert!(!dbg.contains(&seed_b64));
        assert!(!dbg.contains("42, 42"));
        assert!(!dbg.contains("2a2a"));
    }

    #[test]
    fn signed_jwts_verify_with_jsonwebtoken_and_name_their_key() {
        let key = SigningKey::generate("k9");
        let claims = serde_json::json!({ "sub": "someone", "exp": 4_102_444_800_i64 });
        let jwt = key.sign_jwt(&claims).unwrap();

        let header = jsonwebtoken::decode_header(&jwt).unwrap();
        assert_eq!(header.alg, jsonwebtoken::Algorithm::EdDSA);
        assert_eq!(header.kid.as_deref(), Some("k9"));
        crate::token::ensure_crypto_provider();
        let public =
            jsonwebtoken::DecodingKey::from_ed_der(&key.verifying_key().public_key_bytes());
        let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::EdDSA);
        validation.validate_aud = false;
        let decoded =
            jsonwebtoken::decode::<serde_json::Value>(&jwt, &public, &validation).unwrap();
        assert_eq!(decoded.claims, claims);

        // Another key's signature, or a changed payload, does not verify.
        let other = SigningKey::generate("k9").sign_jwt(&claims).unwrap();
        assert!(jsonwebtoken::decode::<serde_json::Value>(&other, &public, &validation).is_err());
        let (signed, signature) = jwt.rsplit_once('.').unwrap();
        let (head, _) = signed.split_once('.').unwrap();
        let forged = format!(
            "{head}.{}.{signature}",
            URL_SAFE_NO_PAD.encode(br#"{"sub":"admin"}"#)
        );
        assert!(jsonwebtoken::decode::<serde_json::Value>(&forged, &public, &validation).is_err());
    }
}
