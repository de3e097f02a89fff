//! The journeys of the seeds in a real browser: Debian's Chromium driven over WebDriver
//! (chromedriver), against the gateway and the whole suite in-process. Each step saves a
//! screenshot under `target/screenshots/<journey>/` so a person can look at every screen, and
//! every page is checked with axe-core (WCAG 2 A/AA rules) for what an automated checker can
//! find. Typing and clicking go through the keyboard and mouse events a person would make.
//!
//! Needs /usr/bin/chromium, /usr/bin/chromedriver and axe-core under `.tools/axe`;
//! `scripts/dev-services.sh` (run by `make test`) installs them.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use cqrs_suite::{Suite, subject};
use fantoccini::{Client, ClientBuilder, Locator};
use hyper_util::client::legacy::connect::HttpConnector;
use serde_json::{Value, json};

use common::{Gateway, on_gateway};

const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// axe-core's browser bundle, installed from the npm registry by scripts/dev-services.sh.
fn axe_source() -> String {
    let path = workspace().join(".tools/axe/node_modules/axe-core/axe.min.js");
    std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "{} is missing ({e}): run scripts/dev-services.sh, which installs axe-core",
            path.display()
        )
    })
}

/// A headless Chromium under its own chromedriver, and where its screenshots go.
struct Browser {
    client: Client,
    driver: Child,
    origin: String,
    shots: PathBuf,
    step: usize,
    axe: String,
    _profile: TempDir,
}

/// A directory removed when dropped (Chromium's profile).
struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Browser {
    async fn start(gateway: &Gateway, journey: &str) -> Browser {
        for tool in [CHROMIUM, CHROMEDRIVER] {
            assert!(
                Path::new(tool).exists(),
                "{tool} is missing: run scripts/dev-services.sh, which installs Debian's \
                 chromium and chromium-driver"
            );
        }
        let port = free_port();
        let driver = Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start chromedriver");
        let profile = TempDir(
            std::env::temp_dir().join(format!("cqrs-chromium-{}", uuid::Uuid::new_v4().simple())),
        );
        // Without the background-networking flags Chromium keeps trying Google's hosts, which
        // this machine's closed network refuses.
        let capabilities: serde_json::Map<String, Value> = json!({
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": CHROMIUM,
                "args": [
                    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic",
                    "--no-first-run", "--disable-background-networking",
                    "--disable-component-update", "--disable-sync",
                    "--window-size=1280,900",
                    format!("--user-data-dir={}", profile.0.display()),
                ],
            },
        })
        .as_object()
        .cloned()
        .unwrap();
        let mut client = None;
        for _ in 0..100 {
            match ClientBuilder::new(HttpConnector::new())
                .capabilities(capabilities.clone())
                .connect(&format!("http://127.0.0.1:{port}"))
                .await
            {
                Ok(c) => {
                    client = Some(c);
                    break;
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
        let client = client.expect("chromedriver did not start a Chromium session within 10 s");
        let shots = workspace().join("target/screenshots").join(journey);
        let _ = std::fs::remove_dir_all(&shots);
        std::fs::create_dir_all(&shots).unwrap();
        Browser {
            client,
            driver,
            origin: gateway.origin.clone(),
            shots,
            step: 0,
            axe: axe_source(),
            _profile: profile,
        }
    }

    async fn open(&self, path: &str) {
        let url = if path.starts_with("http") {
            path.to_owned()
        } else {
            format!("{}{path}", self.origin)
        };
        self.client.goto(&url).await.unwrap();
    }

    async fn path(&self) -> String {
        self.client.current_url().await.unwrap().path().to_owned()
    }

    /// Types into the input labelled by `id`, as a keyboard would.
    async fn type_into(&self, id: &str, text: &str) {
        let input = self.client.find(Locator::Id(id)).await.unwrap();
        input.clear().await.unwrap();
        input.send_keys(text).await.unwrap();
    }

    /// Clicks the button whose text is `label`.
    async fn press(&self, label: &str) {
        let xpath = format!("//button[normalize-space()='{label}']");
        self.client
            .find(Locator::XPath(&xpath))
            .await
            .unwrap_or_else(|e| panic!("no button {label:?} on {}: {e}", self.origin))
            .click()
            .await
            .unwrap();
    }

    async fn follow(&self, link_text: &str) {
        self.client
            .find(Locator::LinkText(link_text))
            .await
            .unwrap_or_else(|e| panic!("no link {link_text:?}: {e}"))
            .click()
            .await
            .unwrap();
    }

    /// The text of the page's `main`, once the page in flight (after a click) has loaded.
    async fn text(&self) -> String {
        for _ in 0..100 {
            let found = match self.client.find(Locator::Css("main")).await {
                Ok(main) => main.text().await.ok(),
                Err(_) => None,
            };
            if let Some(text) = found {
                return text;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("the page has no main element")
    }

    /// Waits (up to 10 s) until the page shows `text`: a click's navigation is not awaited
    /// by WebDriver.
    async fn assert_shows(&self, text: &str) {
        let mut shown = String::new();
        for _ in 0..100 {
            shown = self.text().await;
            if shown.contains(text) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("the page does not show {text:?}:\n{shown}");
    }

    /// Saves a screenshot of this step, then checks the page with axe-core.
    async fn shot(&mut self, name: &str) {
        self.step += 1;
        let png = self.client.screenshot().await.unwrap();
        let file = self.shots.join(format!("{:02}-{name}.png", self.step));
        std::fs::write(&file, png).unwrap();
        self.accessible(name).await;
    }

    /// No axe-core violations of WCAG 2 A/AA on the page.
    async fn accessible(&self, name: &str) {
        self.client.execute(&self.axe, vec![]).await.unwrap();
        let found = self
            .client
            .execute_async(
                "const done = arguments[arguments.length - 1];
                 axe.run(document, { runOnly: ['wcag2a', 'wcag2aa', 'best-practice'] })
                   .then(r => done(r.violations.map(v =>
                      v.id + ': ' + v.help + ' — ' + v.nodes.map(n => n.target.join(' ')).join(', '))))
                   .catch(e => done(['axe failed: ' + e]));",
                vec![],
            )
            .await
            .unwrap();
        let violations: Vec<String> = serde_json::from_value(found).unwrap();
        assert!(
            violations.is_empty(),
            "axe-core finds on {name}:\n{}",
            violations.join("\n")
        );
    }

    /// Moves to the next element with Tab and says which element has the focus.
    async fn tab(&self) -> String {
        let active = self.client.active_element().await.unwrap();
        active.send_keys("\u{e004}").await.unwrap();
        let now = self.client.active_element().await.unwrap();
        let id = now.attr("id").await.unwrap().unwrap_or_default();
        let text = now.text().await.unwrap_or_default();
        format!("{id}{text}")
    }
}

/// The service desk's first day: from the mailed link to the Security Information screen,
/// every password rule it fails listed, its User ID shown, signed in, My profile; the
/// sign-in form used with the keyboard only; a lock-out reads as a wrong password.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_desk_registers_signs_in_and_is_locked_out() {
    let suite = Suite::start().await;
    let gateway = Gateway::start(&suite).await;
    let mut browser = Browser::start(&gateway, "desk-first-day").await;

    let mail = suite
        .mail(Suite::DESK_EMAIL, subject::REGISTRATION_LINK)
        .await;
    browser.open(&on_gateway(&mail.links()[0])).await;
    // The token left the address bar at once.
    assert_eq!(browser.path().await, "/portal/register/complete");
    assert!(
        !browser
            .client
            .current_url()
            .await
            .unwrap()
            .as_str()
            .contains("token")
    );
    browser.assert_shows("Password policy").await;
    browser.shot("security-information").await;

    browser.type_into("password", "lantern").await;
    browser.type_into("confirm", "lantern").await;
    browser.press("Complete registration").await;
    browser
        .assert_shows("Password must be at least 8 characters.")
        .await;
    browser
        .assert_shows("Password must contain three of these four")
        .await;
    browser.shot("password-rules-failed").await;

    browser.type_into("password", Suite::DESK_PASSWORD).await;
    browser.type_into("confirm", Suite::DESK_PASSWORD).await;
    browser.press("Complete registration").await;
    browser.assert_shows("Registration complete").await;
    let user_id = browser
        .client
        .find(Locator::Id("user-id"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(user_id.starts_with("SDE"), "{user_id}");
    browser.shot("registration-complete").await;

    // Keyboard only: Tab from the address bar's page into the form, type, Enter.
    browser.follow("Sign in").await;
    assert_eq!(browser.path().await, "/portal/sign-in");
    browser.shot("sign-in").await;
    browser
        .client
        .find(Locator::Id("login"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    browser
        .client
        .active_element()
        .await
        .unwrap()
        .send_keys(&user_id)
        .await
        .unwrap();
    assert_eq!(browser.tab().await, "password");
    browser
        .client
        .active_element()
        .await
        .unwrap()
        .send_keys(&format!("{}\u{e007}", Suite::DESK_PASSWORD))
        .await
        .unwrap();
    browser.assert_shows("Welcome, ").await;
    browser
        .assert_shows("You are working as Service Desk")
        .await;
    browser.shot("home").await;

    browser.follow("My profile").await;
    browser.assert_shows(Suite::DESK_EMAIL).await;
    browser.assert_shows(&user_id).await;
    browser.shot("my-profile").await;

    browser.press("Sign out").await;
    browser.assert_shows("You have signed out.").await;
    browser.shot("signed-out").await;

    // Three wrong passwords lock the account for good; each answer reads the same.
    for attempt in 1..=Suite::LOCKOUT_THRESHOLD {
        browser.type_into("login", &user_id).await;
        browser.type_into("password", "Wrong#Guess1").await;
        browser.press("Sign in").await;
        browser.assert_shows("contact the service desk").await;
        if attempt == 1 {
            browser.shot("wrong-password").await;
        }
    }
    browser.type_into("login", &user_id).await;
    browser.type_into("password", Suite::DESK_PASSWORD).await;
    browser.press("Sign in").await;
    browser.assert_shows("contact the service desk").await;
    browser.shot("locked-out").await;
    suite.mail(Suite::DESK_EMAIL, subject::ACCOUNT_LOCKED).await;
}
