//! The gateway over the in-process suite, and a browser of plain HTTP requests (its own
//! cookies, no redirects followed) for the page tests.

#![allow(dead_code)]

use std::sync::Arc;

use cqrs_runtime::clock::SystemClock;
use cqrs_runtime::config::Env;
use cqrs_suite::{Service, Suite, subject};
use reqwest::StatusCode;
use reqwest::header::{HeaderMap, LOCATION};

/// The gateway over a running suite, served under `/portal/` on a loopback port.
pub struct Gateway {
    pub origin: String,
    _server: tokio::task::JoinHandle<()>,
}

impl Gateway {
    pub async fn start(suite: &Suite) -> Gateway {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        Self::start_on(suite, listener).await
    }

    /// The gateway on a listener bound before the suite started (whose address the suite's
    /// settings needed, e.g. the single sign-on callback).
    pub async fn start_on(suite: &Suite, listener: tokio::net::TcpListener) -> Gateway {
        let origin = format!("http://{}", listener.local_addr().unwrap());
        let base = format!("{origin}/portal/");
        let env = Env::from_pairs(&[
            ("CQRS_PUBLIC_BASE_URL", &base),
            ("IDENTITY_URL", &suite.url(Service::Identity)),
            ("DIRECTORY_URL", &suite.url(Service::Directory)),
            ("ACCESS_URL", &suite.url(Service::Access)),
            ("NOTIFICATIONS_URL", &suite.url(Service::Notifications)),
            ("REDIS_URL", &suite.redis.url),
            ("CQRS_REDIS_NAMESPACE", &suite.redis.namespace),
        ]);
        let config = cqrs_gateway::GatewayConfig::from_env(&env).unwrap();
        let redis = cqrs_runtime::db::redis_connection(&config.redis_url).unwrap();
        let app = cqrs_gateway::router(
            cqrs_gateway::state(config, redis, Arc::new(SystemClock)).unwrap(),
        );
        let server = tokio::spawn(async move {
            let app = app.into_make_service_with_connect_info::<std::net::SocketAddr>();
            axum::serve(listener, app).await.unwrap();
        });
        Gateway {
            origin,
            _server: server,
        }
    }

    /// A new browser (its own cookies) on this gateway.
    pub fn browser(&self) -> Browser {
        Browser {
            client: reqwest::Client::builder()
                .cookie_store(true)
                .user_agent(USER_AGENT)
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .unwrap(),
            origin: self.origin.clone(),
        }
    }
}

/// What the test browsers say they are.
pub const USER_AGENT: &str = "cqrs-gateway-tests/1.0";

pub struct Browser {
    pub client: reqwest::Client,
    pub origin: String,
}

pub struct Page {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: String,
}

impl Page {
    pub fn location(&self) -> &str {
        self.headers
            .get(LOCATION)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_else(|| panic!("no Location on a {} answer", self.status))
    }

    /// The CSRF token of the page's first form.
    pub fn csrf(&self) -> String {
        let at = self
            .body
            .find("name=\"csrf\" value=\"")
            .unwrap_or_else(|| panic!("no form on the page: {}", self.body));
        let rest = &self.body[at + "name=\"csrf\" value=\"".len()..];
        rest[..rest.find('"').unwrap()].to_owned()
    }

    pub fn contains(&self, text: &str) -> bool {
        self.body.contains(text)
    }

    #[track_caller]
    pub fn assert_shows(&self, text: &str) {
        assert!(
            self.contains(text),
            "the page does not show {text:?}:\n{}",
            self.body
        );
    }
}

impl Browser {
    pub fn url(&self, path: &str) -> String {
        if path.starts_with("http") {
            path.to_owned()
        } else {
            format!("{}{path}", self.origin)
        }
    }

    pub async fn page(response: reqwest::Response) -> Page {
        Page {
            status: response.status(),
            headers: response.headers().clone(),
            body: response.text().await.unwrap(),
        }
    }

    pub async fn get(&self, path: &str) -> Page {
        Self::page(self.client.get(self.url(path)).send().await.unwrap()).await
    }

    /// Posts a form as a browser on this origin does.
    pub async fn post(&self, path: &str, form: &[(&str, &str)]) -> Page {
        let response = self
            .client
            .post(self.url(path))
            .header("origin", &self.origin)
            .form(form)
            .send()
            .await
            .unwrap();
        Self::page(response).await
    }

    /// GETs `path`, then posts its form with the page's CSRF token and `fields`.
    pub async fn fill(&self, path: &str, fields: &[(&str, &str)]) -> Page {
        self.fill_at(path, path, fields).await
    }

    /// GETs the page at `path`, then posts a form of it to `action`.
    pub async fn fill_at(&self, path: &str, action: &str, fields: &[(&str, &str)]) -> Page {
        let csrf = self.get(path).await.csrf();
        let mut form = vec![("csrf", csrf.as_str())];
        form.extend_from_slice(fields);
        self.post(action, &form).await
    }

    /// Signs in and follows to the home page.
    pub async fn sign_in(&self, login: &str, password: &str) -> Page {
        let answer = self
            .fill(
                "/portal/sign-in",
                &[("login", login), ("password", password)],
            )
            .await;
        assert_eq!(answer.status, StatusCode::SEE_OTHER, "{}", answer.body);
        self.get(answer.location()).await
    }
}

/// The path and query of a mailed link, on the gateway.
pub fn on_gateway(link: &url::Url) -> String {
    format!("{}?{}", link.path(), link.query().unwrap_or_default())
}

pub async fn registration_link(suite: &Suite) -> String {
    let mail = suite
        .mail(Suite::DESK_EMAIL, subject::REGISTRATION_LINK)
        .await;
    on_gateway(&mail.links()[0])
}

/// The suite with the loopback OpenID provider configured for identity (its e-mail domains
/// replaced by `domains` when given), and the listener the gateway is to serve on: the
/// provider sends browsers back to its callback page.
#[allow(dead_code)]
pub async fn sso_suite(
    domains: Option<&str>,
) -> (
    cqrs_suite::oidc::TestProvider,
    Suite,
    tokio::net::TcpListener,
) {
    let provider = cqrs_suite::oidc::TestProvider::start().await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let callback = format!(
        "http://{}/portal/sign-in/sso/callback",
        listener.local_addr().unwrap()
    );
    let env: Vec<(String, String)> = provider
        .identity_env(&callback)
        .into_iter()
        .filter_map(|(k, v)| match (k.as_str(), domains) {
            ("CQRS_OIDC_NHSMAIL_DOMAINS", None) => None,
            ("CQRS_OIDC_NHSMAIL_DOMAINS", Some(domains)) => Some((k, domains.to_owned())),
            _ => Some((k, v)),
        })
        .collect();
    let pairs: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let mut suite = Suite::builder()
        .env(Service::Identity, &pairs)
        .start()
        .await;
    suite.register_desk().await;
    (provider, suite, listener)
}
