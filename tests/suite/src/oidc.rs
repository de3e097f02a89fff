//! A small OpenID provider on loopback, for the single sign-on tests: discovery, an
//! authorization endpoint that signs in whoever the test says (no login form), a token
//! endpoint that checks the client secret and PKCE (S256), and a JWKS. It signs ID tokens
//! with EdDSA keys of its own, can rotate them, and can be told to misbehave in the ways a
//! relying party must refuse.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::{Form, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use cqrs_auth::SigningKey;
use rand::RngCore as _;
use serde::Deserialize;
use serde_json::json;
use sha2::{Digest, Sha256};

/// What the provider does wrong in the next ID tokens it signs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    None,
    WrongNonce,
    WrongAudience,
    WrongIssuer,
    Expired,
    /// Signed with a key the JWKS does not hold.
    UnknownKey,
}

/// The person the provider signs in at its authorization endpoint.
#[derive(Clone, Debug)]
pub struct Upstream {
    pub email: String,
    pub email_verified: bool,
    /// RFC 8176 `amr` of the ID token.
    pub amr: Vec<String>,
}

struct Grant {
    nonce: String,
    challenge: String,
    redirect_uri: String,
    person: Upstream,
}

struct Inner {
    issuer: String,
    /// The authorization endpoint asks which e-mail to sign in as (for `make run`), instead
    /// of signing in the person the test set.
    interactive: bool,
    keys: Vec<SigningKey>,
    stray: SigningKey,
    person: Upstream,
    fault: Fault,
    codes: HashMap<String, Grant>,
}

/// The provider; stops when dropped.
pub struct TestProvider {
    pub issuer: String,
    pub client_id: String,
    pub client_secret: String,
    inner: Arc<Mutex<Inner>>,
    server: tokio::task::JoinHandle<()>,
}

impl Drop for TestProvider {
    fn drop(&mut self) {
        self.server.abort();
    }
}

#[derive(Clone)]
struct App {
    inner: Arc<Mutex<Inner>>,
    client_id: String,
    client_secret: String,
}

impl TestProvider {
    pub const CLIENT_ID: &'static str = "cqrs-suite";

    pub async fn start() -> TestProvider {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        Self::start_on(listener, random(), false).await
    }

    /// The provider on `listener` with `client_secret`; `interactive` makes its
    /// authorization endpoint ask whom to sign in (the local development provider).
    pub async fn start_on(
        listener: tokio::net::TcpListener,
        client_secret: String,
        interactive: bool,
    ) -> TestProvider {
        let issuer = format!("http://{}", listener.local_addr().unwrap());
        let inner = Arc::new(Mutex::new(Inner {
            issuer: issuer.clone(),
            interactive,
            keys: vec![SigningKey::generate("upstream-1")],
            stray: SigningKey::generate("upstream-stray"),
            person: Upstream {
                email: "nobody@nhs.net".into(),
                email_verified: true,
                amr: vec!["pwd".into()],
            },
            fault: Fault::None,
            codes: HashMap::new(),
        }));
        let app = App {
            inner: inner.clone(),
            client_id: Self::CLIENT_ID.into(),
            client_secret: client_secret.clone(),
        };
        let router = Router::new()
            .route("/.well-known/openid-configuration", get(discovery))
            .route("/authorize", get(authorize).post(authorize_as))
            .route("/token", post(token))
            .route("/jwks", get(jwks))
            .with_state(app);
        let server = tokio::spawn(async move {
            axum::serve(listener, router).await.unwrap();
        });
        TestProvider {
            issuer,
            client_id: Self::CLIENT_ID.into(),
            client_secret,
            inner,
            server,
        }
    }

    /// Identity's settings for this provider under the id `nhsmail`, sending the browser back
    /// to `redirect_uri`.
    pub fn identity_env(&self, redirect_uri: &str) -> Vec<(String, String)> {
        vec![
            ("CQRS_OIDC_PROVIDERS".into(), "nhsmail".into()),
            ("CQRS_OIDC_NHSMAIL_ISSUER".into(), self.issuer.clone()),
            ("CQRS_OIDC_NHSMAIL_CLIENT_ID".into(), self.client_id.clone()),
            (
                "CQRS_OIDC_NHSMAIL_CLIENT_SECRET".into(),
                self.client_secret.clone(),
            ),
            ("CQRS_OIDC_NHSMAIL_DOMAINS".into(), "nhs.net".into()),
            ("CQRS_OIDC_NHSMAIL_LABEL".into(), "NHSmail".into()),
            ("CQRS_OIDC_REDIRECT_URI".into(), redirect_uri.into()),
        ]
    }

    /// Whom the authorization endpoint signs in from now on.
    pub fn sign_in_as(&self, email: &str, email_verified: bool, amr: &[&str]) {
        self.inner.lock().unwrap().person = Upstream {
            email: email.into(),
            email_verified,
            amr: amr.iter().map(|m| (*m).to_owned()).collect(),
        };
    }

    pub fn misbehave(&self, fault: Fault) {
        self.inner.lock().unwrap().fault = fault;
    }

    /// A new signing key; the JWKS holds only it from now on.
    pub fn rotate_keys(&self) {
        let mut inner = self.inner.lock().unwrap();
        let next = format!("upstream-{}", inner.keys.len() + 1);
        inner.keys = vec![SigningKey::generate(&next)];
    }

    /// Follows an authorization URL as a browser would, without a login form: the `code`
    /// and `state` of the redirect back.
    pub async fn authorize(&self, authorization_url: &str) -> (String, String) {
        let client = reqwest_free_get(authorization_url).await;
        let location = url::Url::parse(&client).unwrap();
        let find = |name: &str| {
            location
                .query_pairs()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.into_owned())
                .unwrap_or_default()
        };
        (find("code"), find("state"))
    }
}

/// GETs `url` on loopback and returns the `Location` of its redirect.
async fn reqwest_free_get(url: &str) -> String {
    let answer = http(url, None).await;
    location(&answer).unwrap_or_else(|| panic!("the provider did not redirect: {answer}"))
}

/// A bare HTTP/1.1 request on loopback (the suite has no HTTP client crate of its own): a GET
/// of `url`, or a POST of the form `body`; the whole answer as text.
async fn http(url: &str, body: Option<&str>) -> String {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let url = url::Url::parse(url).unwrap();
    let address = format!("{}:{}", url.host_str().unwrap(), url.port().unwrap());
    let mut stream = tokio::net::TcpStream::connect(&address).await.unwrap();
    let path = match url.query() {
        Some(query) => format!("{}?{query}", url.path()),
        None => url.path().to_owned(),
    };
    let request = match body {
        None => format!("GET {path} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n"),
        Some(body) => format!(
            "POST {path} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\
             Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        ),
    };
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).await.unwrap();
    answer
}

fn location(answer: &str) -> Option<String> {
    answer.lines().find_map(|line| {
        let (name, value) = line.split_once(':')?;
        name.eq_ignore_ascii_case("location")
            .then(|| value.trim().to_owned())
    })
}

fn random() -> String {
    let mut bytes = [0u8; 24];
    rand::rng().fill_bytes(&mut bytes);
    URL_SAFE_NO_PAD.encode(bytes)
}

async fn discovery(State(app): State<App>) -> Response {
    let issuer = app.inner.lock().unwrap().issuer.clone();
    json_answer(
        StatusCode::OK,
        &json!({
            "issuer": issuer,
            "authorization_endpoint": format!("{issuer}/authorize"),
            "token_endpoint": format!("{issuer}/token"),
            "jwks_uri": format!("{issuer}/jwks"),
            "response_types_supported": ["code"],
            "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": ["EdDSA"],
            "scopes_supported": ["openid", "email"],
            "token_endpoint_auth_methods_supported": ["client_secret_basic"],
            "code_challenge_methods_supported": ["S256"],
        }),
    )
}

async fn jwks(State(app): State<App>) -> Response {
    let inner = app.inner.lock().unwrap();
    let keys: Vec<serde_json::Value> = inner
        .keys
        .iter()
        .map(|key| {
            let public = key.verifying_key();
            json!({
                "kty": "OKP",
                "crv": "Ed25519",
                "use": "sig",
                "alg": "EdDSA",
                "kid": key.kid(),
                "x": public.public_key_b64url(),
            })
        })
        .collect();
    json_answer(StatusCode::OK, &json!({ "keys": keys }))
}

#[derive(Deserialize, serde::Serialize)]
struct AuthorizeQuery {
    response_type: String,
    client_id: String,
    redirect_uri: String,
    state: String,
    nonce: String,
    code_challenge: String,
    code_challenge_method: String,
}

async fn authorize(State(app): State<App>, Query(query): Query<AuthorizeQuery>) -> Response {
    if query.response_type != "code"
        || query.client_id != app.client_id
        || query.code_challenge_method != "S256"
    {
        return (StatusCode::BAD_REQUEST, "bad authorization request").into_response();
    }
    if app.inner.lock().unwrap().interactive {
        return ask_whom(&query);
    }
    let person = app.inner.lock().unwrap().person.clone();
    grant_code(&app, query, person)
}

/// Issues a code for `person` and sends the browser back with it.
fn grant_code(app: &App, query: AuthorizeQuery, person: Upstream) -> Response {
    let code = random();
    let mut inner = app.inner.lock().unwrap();
    inner.codes.insert(
        code.clone(),
        Grant {
            nonce: query.nonce,
            challenge: query.code_challenge,
            redirect_uri: query.redirect_uri.clone(),
            person,
        },
    );
    let mut back = url::Url::parse(&query.redirect_uri).unwrap();
    back.query_pairs_mut()
        .append_pair("code", &code)
        .append_pair("state", &query.state);
    (StatusCode::FOUND, [(header::LOCATION, back.to_string())]).into_response()
}

/// The local provider's page: which address to sign in as. Not a login: it is for trying
/// single sign-on on one machine.
fn ask_whom(query: &AuthorizeQuery) -> Response {
    let hidden: String = serde_json::to_value(query)
        .unwrap()
        .as_object()
        .unwrap()
        .iter()
        .map(|(name, value)| {
            format!(
                "<input type=\"hidden\" name=\"{name}\" value=\"{}\">",
                escape(value.as_str().unwrap_or_default())
            )
        })
        .collect();
    let page = format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>Local test \
         provider</title></head><body><main><h1>Local test provider (not NHSmail)</h1>\
         <p>For trying single sign-on on this machine: choose the address to sign in as.</p>\
         <form method=\"post\" action=\"/authorize\">{hidden}\
         <p><label for=\"email\">E-mail address</label> \
         <input id=\"email\" name=\"email\" type=\"email\" required></p>\
         <p><input id=\"verified\" name=\"verified\" type=\"checkbox\" value=\"1\" checked> \
         <label for=\"verified\">The address is verified</label></p>\
         <p><input id=\"mfa\" name=\"mfa\" type=\"checkbox\" value=\"1\"> \
         <label for=\"mfa\">Signed in with multi-factor authentication</label></p>\
         <p><button type=\"submit\">Sign in</button></p></form></main></body></html>"
    );
    ([(header::CONTENT_TYPE, "text/html; charset=utf-8")], page).into_response()
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('"', "&quot;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

#[derive(Deserialize)]
struct WhomForm {
    #[serde(flatten)]
    query: AuthorizeQuery,
    email: String,
    #[serde(default)]
    verified: Option<String>,
    #[serde(default)]
    mfa: Option<String>,
}

async fn authorize_as(State(app): State<App>, Form(form): Form<WhomForm>) -> Response {
    if form.query.client_id != app.client_id {
        return (StatusCode::BAD_REQUEST, "bad authorization request").into_response();
    }
    let mut amr = vec!["pwd".to_owned()];
    if form.mfa.is_some() {
        amr.push("mfa".to_owned());
    }
    let person = Upstream {
        email: form.email,
        email_verified: form.verified.is_some(),
        amr,
    };
    grant_code(&app, form.query, person)
}

#[derive(Deserialize)]
struct TokenForm {
    grant_type: String,
    code: String,
    redirect_uri: String,
    code_verifier: String,
}

async fn token(
    State(app): State<App>,
    headers: HeaderMap,
    Form(form): Form<TokenForm>,
) -> Response {
    let expected = format!(
        "Basic {}",
        STANDARD.encode(format!("{}:{}", app.client_id, app.client_secret))
    );
    let authorised = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v == expected);
    if !authorised {
        return json_answer(
            StatusCode::UNAUTHORIZED,
            &json!({"error": "invalid_client"}),
        );
    }
    let mut inner = app.inner.lock().unwrap();
    let Some(grant) = inner.codes.remove(&form.code) else {
        return invalid_grant();
    };
    let challenge = URL_SAFE_NO_PAD.encode(Sha256::digest(form.code_verifier.as_bytes()));
    if form.grant_type != "authorization_code"
        || challenge != grant.challenge
        || form.redirect_uri != grant.redirect_uri
    {
        return invalid_grant();
    }
    // Token time: the system clock, as every verifier's.
    let now = {
        use cqrs_runtime::clock::Clock as _;
        cqrs_runtime::clock::SystemClock.now().timestamp()
    };
    let fault = inner.fault;
    let (iat, exp) = if fault == Fault::Expired {
        (now - 7200, now - 3600)
    } else {
        (now, now + 300)
    };
    let claims = json!({
        "iss": if fault == Fault::WrongIssuer { "http://127.0.0.1:1/elsewhere".to_owned() } else { inner.issuer.clone() },
        "sub": format!("upstream-{}", grant.person.email),
        "aud": if fault == Fault::WrongAudience { "someone-else" } else { app.client_id.as_str() },
        "iat": iat,
        "exp": exp,
        "nonce": if fault == Fault::WrongNonce { "not-the-nonce".to_owned() } else { grant.nonce },
        "email": grant.person.email,
        "email_verified": grant.person.email_verified,
        "amr": grant.person.amr,
    });
    let key = if fault == Fault::UnknownKey {
        &inner.stray
    } else {
        &inner.keys[0]
    };
    let id_token = key.sign_jwt(&claims).unwrap();
    json_answer(
        StatusCode::OK,
        &json!({
            "access_token": random(),
            "token_type": "Bearer",
            "expires_in": 300,
            "id_token": id_token,
        }),
    )
}

fn invalid_grant() -> Response {
    json_answer(StatusCode::BAD_REQUEST, &json!({"error": "invalid_grant"}))
}

fn json_answer(status: StatusCode, body: &serde_json::Value) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The local development provider asks whom to sign in as, then sends the browser back
    /// with a code for that person.
    #[tokio::test]
    async fn the_interactive_provider_asks_whom_to_sign_in() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let provider = TestProvider::start_on(listener, "secret".into(), true).await;
        let query = "response_type=code&client_id=cqrs-suite&redirect_uri=http%3A%2F%2F127.0.0.1%3A9%2Fcb\
                     &scope=openid&state=st4te&nonce=n0nce&code_challenge=abc&code_challenge_method=S256";
        let page = http(&format!("{}/authorize?{query}", provider.issuer), None).await;
        assert!(page.starts_with("HTTP/1.1 200"), "{page}");
        assert!(page.contains("name=\"email\""), "{page}");
        assert!(page.contains("name=\"state\" value=\"st4te\""), "{page}");

        let form = format!("{query}&email=ann.smith%40nhs.net&verified=1&mfa=1");
        let answer = http(&format!("{}/authorize", provider.issuer), Some(&form)).await;
        let back = location(&answer).unwrap_or_else(|| panic!("no redirect: {answer}"));
        assert!(back.starts_with("http://127.0.0.1:9/cb?code="), "{back}");
        assert!(back.ends_with("&state=st4te"), "{back}");
        let inner = provider.inner.lock().unwrap();
        let grant = inner.codes.values().next().unwrap();
        assert_eq!(grant.person.email, "ann.smith@nhs.net");
        assert!(grant.person.email_verified);
        assert_eq!(grant.person.amr, vec!["pwd".to_owned(), "mfa".to_owned()]);
    }
}
