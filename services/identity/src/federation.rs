//! The relying party of upstream OpenID providers ("Sign in with NHSmail"), on the
//! `openidconnect` crate: the authorization code flow with PKCE (S256), `state` and `nonce`.
//!
//! Discovery runs at each step, so the provider's current signing keys are always the ones
//! checked against: a provider that rotates its keys is followed at once. The ID token is
//! checked for its signature, issuer, audience, expiry and nonce before anything in it is
//! believed; what to do with the e-mail it names is the caller's rule.

use std::time::Duration;

use openidconnect::core::{
    CoreAuthenticationFlow, CoreClient, CoreJwsSigningAlgorithm, CoreProviderMetadata,
};
use openidconnect::{
    AuthorizationCode, ClientId, ClientSecret, CsrfToken, EndpointMaybeSet, EndpointNotSet,
    EndpointSet, IssuerUrl, Nonce, PkceCodeChallenge, PkceCodeVerifier, RedirectUrl, Scope,
    TokenResponse,
};

use crate::config::OidcProvider;

/// A started sign-in: where to send the browser, and what must be kept until it comes back.
pub struct Started {
    pub authorization_url: String,
    pub state: String,
    pub nonce: String,
    pub pkce_verifier: String,
}

/// What a checked ID token says about the person.
#[derive(Debug)]
pub struct Verified {
    pub email: Option<String>,
    pub email_verified: bool,
    /// RFC 8176 method references the provider gave (`amr`).
    pub methods: Vec<String>,
}

/// Why a step failed. The text comes from the provider's answer or the checks and may quote
/// what was sent (a code, a nonce): show [`FederationError::kind`] in logs, not the text.
#[derive(Debug, thiserror::Error)]
pub enum FederationError {
    #[error("provider discovery failed: {0}")]
    Discovery(String),
    #[error("code exchange failed: {0}")]
    Exchange(String),
    #[error("the ID token was refused: {0}")]
    IdToken(String),
}

impl FederationError {
    /// What failed, without anything the provider or the person sent.
    pub fn kind(&self) -> &'static str {
        match self {
            FederationError::Discovery(_) => "discovery",
            FederationError::Exchange(_) => "code_exchange",
            FederationError::IdToken(_) => "id_token",
        }
    }
}

/// ID token signatures accepted: asymmetric only (never `none` or a shared-secret MAC).
const ALLOWED_ALGS: [CoreJwsSigningAlgorithm; 5] = [
    CoreJwsSigningAlgorithm::RsaSsaPkcs1V15Sha256,
    CoreJwsSigningAlgorithm::RsaSsaPssSha256,
    CoreJwsSigningAlgorithm::EcdsaP256Sha256,
    CoreJwsSigningAlgorithm::EcdsaP384Sha384,
    CoreJwsSigningAlgorithm::EdDsa,
];

/// A client made from discovery: authorization endpoint known, token endpoint maybe.
type RelyingParty = CoreClient<
    EndpointSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointMaybeSet,
    EndpointMaybeSet,
>;

/// The HTTP side of single sign-on. Cheap to clone.
#[derive(Clone)]
pub struct Federation {
    http: openidconnect::reqwest::Client,
}

impl Federation {
    /// Calls to providers give up after `timeout`; redirects are not followed (SSRF).
    pub fn new(timeout: Duration) -> Result<Self, FederationError> {
        let http = openidconnect::reqwest::ClientBuilder::new()
            .redirect(openidconnect::reqwest::redirect::Policy::none())
            .timeout(timeout)
            .build()
            .map_err(|e| FederationError::Discovery(e.to_string()))?;
        Ok(Federation { http })
    }

    /// The provider as discovery describes it now (its current keys included), as this
    /// suite's client coming back to `redirect_uri`.
    async fn client(
        &self,
        provider: &OidcProvider,
        redirect_uri: &str,
    ) -> Result<RelyingParty, FederationError> {
        let discovery = |e: &dyn std::fmt::Display| FederationError::Discovery(e.to_string());
        let issuer = IssuerUrl::new(provider.issuer.clone()).map_err(|e| discovery(&e))?;
        let metadata = CoreProviderMetadata::discover_async(issuer, &self.http)
            .await
            .map_err(|e| discovery(&e))?;
        let redirect = RedirectUrl::new(redirect_uri.to_owned()).map_err(|e| discovery(&e))?;
        Ok(CoreClient::from_provider_metadata(
            metadata,
            ClientId::new(provider.client_id.clone()),
            Some(ClientSecret::new(provider.client_secret.clone())),
        )
        .set_redirect_uri(redirect))
    }

    /// The provider's authorization URL for a new sign-in coming back to `redirect_uri`.
    pub async fn start(
        &self,
        provider: &OidcProvider,
        redirect_uri: &str,
    ) -> Result<Started, FederationError> {
        let client = self.client(provider, redirect_uri).await?;
        let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
        let (url, state, nonce) = client
            .authorize_url(
                CoreAuthenticationFlow::AuthorizationCode,
                CsrfToken::new_random,
                Nonce::new_random,
            )
            .add_scope(Scope::new("email".to_owned()))
            .set_pkce_challenge(challenge)
            .url();
        Ok(Started {
            authorization_url: url.to_string(),
            state: state.secret().clone(),
            nonce: nonce.secret().clone(),
            pkce_verifier: verifier.secret().clone(),
        })
    }

    /// Exchanges `code` and checks the ID token against the provider's current keys and the
    /// sign-in's `nonce`.
    pub async fn complete(
        &self,
        provider: &OidcProvider,
        redirect_uri: &str,
        code: &str,
        nonce: &str,
        pkce_verifier: &str,
    ) -> Result<Verified, FederationError> {
        let client = self.client(provider, redirect_uri).await?;
        let answer = client
            .exchange_code(AuthorizationCode::new(code.to_owned()))
            .map_err(|e| FederationError::Exchange(e.to_string()))?
            .set_pkce_verifier(PkceCodeVerifier::new(pkce_verifier.to_owned()))
            .request_async(&self.http)
            .await
            .map_err(|e| FederationError::Exchange(e.to_string()))?;
        let id_token = answer
            .id_token()
            .ok_or_else(|| FederationError::IdToken("no ID token in the answer".to_owned()))?;
        let verifier = client.id_token_verifier().set_allowed_algs(ALLOWED_ALGS);
        let claims = id_token
            .claims(&verifier, &Nonce::new(nonce.to_owned()))
            .map_err(|e| FederationError::IdToken(e.to_string()))?;
        Ok(Verified {
            email: claims.email().map(|e| e.as_str().to_owned()),
            email_verified: claims.email_verified().unwrap_or(false),
            methods: claims
                .auth_method_refs()
                .map(|refs| refs.iter().map(|r| r.as_str().to_owned()).collect())
                .unwrap_or_default(),
        })
    }
}
