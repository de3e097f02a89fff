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

use cqrs_testkit::free_port;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use cqrs_suite::{PASSWORD, Service, Suite, people, subject};
use fantoccini::elements::Element;
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
    /// Killing chromedriver leaves its Chromium running: the browser's processes are found by
    /// this test's own profile directory and ended too, even after a panic.
    fn drop(&mut self) {
        let _ = self.driver.kill();
        let _ = self.driver.wait();
        let _ = Command::new("pkill")
            .arg("-KILL")
            .arg("-f")
            .arg("--")
            .arg(format!("--user-data-dir={}", self._profile.0.display()))
            .status();
    }
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
        let button = match self.client.find(Locator::XPath(&xpath)).await {
            Ok(button) => button,
            Err(e) => panic!("no button {label:?} on {}: {e}", self.path().await),
        };
        self.click_away(button).await;
    }

    async fn follow(&self, link_text: &str) {
        let link = self
            .client
            .find(Locator::LinkText(link_text))
            .await
            .unwrap_or_else(|e| panic!("no link {link_text:?}: {e}"));
        self.click_away(link).await;
    }

    /// Clicks `element` (a link, or a form's button) and waits (up to 10 s) until the page it
    /// was on has been replaced: WebDriver does not always wait for the page a click asks for,
    /// and what is typed next belongs on the new page.
    async fn click_away(&self, element: Element) {
        let page = self.client.find(Locator::Css("html")).await.unwrap();
        element.click().await.unwrap();
        for _ in 0..200 {
            if page.tag_name().await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
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

    /// The element `xpath` finds, saying `what` is missing if there is none.
    async fn element(&self, xpath: &str, what: &str) -> Element {
        match self.client.find(Locator::XPath(xpath)).await {
            Ok(element) => element,
            Err(e) => panic!("no {what} on {}: {e}", self.path().await),
        }
    }

    /// Clicks what `xpath` finds on this page (an option, a label).
    async fn click(&self, xpath: &str, what: &str) {
        self.element(xpath, what).await.click().await.unwrap();
    }

    /// Follows the link `xpath` finds.
    async fn follow_xpath(&self, xpath: &str, what: &str) {
        let link = self.element(xpath, what).await;
        self.click_away(link).await;
    }

    /// Follows the first link whose text starts with `text` (a link may say more to a screen
    /// reader, e.g. "Review: New registration…", or show a count, "Notifications 1 unread").
    async fn follow_starting(&self, text: &str) {
        self.follow_xpath(
            &format!("//a[starts-with(normalize-space(), '{text}')]"),
            &format!("link starting {text:?}"),
        )
        .await;
    }

    /// Chooses, with the mouse, the option of the select `id` whose text contains `text`.
    async fn choose(&self, id: &str, text: &str) {
        self.click(
            &format!("//select[@id='{id}']//option[contains(normalize-space(), '{text}')]"),
            &format!("option {text:?} in the select {id:?}"),
        )
        .await;
    }

    /// Ticks the radio button or box whose label contains `text`, by clicking the label.
    async fn tick(&self, text: &str) {
        self.click(
            &format!("//main//label[contains(normalize-space(), '{text}')]"),
            &format!("label {text:?}"),
        )
        .await;
    }

    /// Reloads the page (as a person waiting for something would) until it shows `text`:
    /// notifications reach the inbox a moment after what raised them.
    async fn reload_until(&self, text: &str) {
        for _ in 0..150 {
            if self.text().await.contains(text) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
            self.client.refresh().await.unwrap();
        }
        self.assert_shows(text).await;
    }

    /// Scrolls the element `id` to the middle of the window, as a person reading down to it
    /// would, so that the next screenshot shows it.
    async fn scroll_to(&self, id: &str) {
        self.client
            .execute(
                "document.getElementById(arguments[0]).scrollIntoView({ block: 'center' });",
                vec![json!(id)],
            )
            .await
            .unwrap();
    }

    /// The text of the element `id`.
    async fn text_of(&self, id: &str) -> String {
        self.client
            .find(Locator::Id(id))
            .await
            .unwrap_or_else(|e| panic!("no element #{id}: {e}"))
            .text()
            .await
            .unwrap()
    }

    /// Signs in from the sign-in page; the home page greets the person.
    async fn sign_in(&self, login: &str, password: &str) {
        self.give_password(login, password).await;
        self.assert_shows("Welcome, ").await;
    }

    /// The sign-in page's form, sent; what follows depends on the account.
    async fn give_password(&self, login: &str, password: &str) {
        self.open("/portal/sign-in").await;
        self.type_into("login", login).await;
        self.type_into("password", password).await;
        self.press("Sign in").await;
    }

    async fn sign_out(&self) {
        self.press("Sign out").await;
        self.assert_shows("You have signed out.").await;
    }

    /// `who` sets the password from a mailed registration link (a screenshot of the Security
    /// Information screen and of the end); the User ID the page shows.
    async fn register_from(&mut self, who: &str, link: &str, password: &str) -> String {
        self.open(link).await;
        self.assert_shows("Password policy").await;
        self.shot(&format!("{who}-security-information")).await;
        self.type_into("password", password).await;
        self.type_into("confirm", password).await;
        self.press("Complete registration").await;
        self.assert_shows("Registration complete").await;
        self.shot(&format!("{who}-registration-complete")).await;
        self.text_of("user-id").await
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

/// Issue 11, the seeds' journeys end to end through the pages only: the service desk
/// registers, builds the organisation tree (a region, a CCG, two practices) and invites the
/// CCG's Commissioning Account Administrator, who accepts and registers from the mails; a
/// practice user self-registers, the administrator approves from the inbox, the user
/// registers from the mail and asks for access to the second practice, which the
/// administrator approves too; the user switches between the two practices' roles, locks the
/// account with wrong passwords, and the service desk unlocks it. One browser, signed out
/// between people; the suite is asked only for the mailed links and for what no page shows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_seed_journeys_from_an_empty_suite_to_two_practices() {
    let suite = Suite::start().await;
    let gateway = Gateway::start(&suite).await;
    let mut browser = Browser::start(&gateway, "seed-journeys").await;
    let (admin_email, (admin_first, admin_last)) = people::ADMIN;
    let (sam_email, (sam_first, sam_last)) = people::PRACTICE_USER;

    // 1. The desk registers from its mailed link and signs in.
    let mail = suite
        .mail(Suite::DESK_EMAIL, subject::REGISTRATION_LINK)
        .await;
    let desk_id = browser
        .register_from("desk", &on_gateway(&mail.links()[0]), Suite::DESK_PASSWORD)
        .await;
    browser.sign_in(&desk_id, Suite::DESK_PASSWORD).await;
    browser
        .assert_shows("You are working as Service Desk")
        .await;
    browser.shot("desk-home").await;

    // … and builds the tree: Service desk → Organisations → Create organisation, four times.
    browser.follow("Service desk").await;
    browser.assert_shows("Find an account").await;
    browser.follow("Organisations").await;
    // Only the service desk's own organisation is there.
    browser.assert_shows("The organisation tree").await;
    browser.assert_shows("CQRS Service Desk").await;
    browser.shot("desk-organisations").await;
    let organisations = [
        ("Region", "Y56", "North Region", None),
        (
            "Commissioning organisation",
            "15N",
            "Riverside CCG",
            Some("North Region (Y56)"),
        ),
        (
            "GP practice",
            "A81001",
            "Bridge Street Surgery",
            Some("Riverside CCG (15N)"),
        ),
        (
            "GP practice",
            "A81002",
            "Mill Lane Practice",
            Some("Riverside CCG (15N)"),
        ),
    ];
    for (kind, ods_code, name, parent) in organisations {
        browser.choose("kind", kind).await;
        browser.type_into("ods_code", ods_code).await;
        browser.type_into("name", name).await;
        if let Some(parent) = parent {
            browser.choose("parent", parent).await;
        }
        if kind == "Region" {
            browser.shot("desk-create-region").await;
        }
        browser.press("Create organisation").await;
        browser
            .assert_shows(&format!("{kind} {name} ({ods_code}) has been created."))
            .await;
    }
    browser.shot("desk-organisation-tree").await;
    let tree = browser.text_of("main").await;
    for (_, ods_code, name, _) in organisations {
        assert!(tree.contains(&format!("{name} {ods_code}")), "{tree}");
    }

    // 2. Users → Invite: e-mail, names, organisation, role, check, send.
    browser.follow("Users").await;
    browser.follow("Invite").await;
    browser.assert_shows("What is their e-mail address?").await;
    browser.type_into("email", admin_email).await;
    browser.shot("invite-email").await;
    browser.press("Next").await;
    browser.assert_shows("What is their name?").await;
    browser.type_into("first_name", admin_first).await;
    browser.type_into("last_name", admin_last).await;
    browser.press("Next").await;
    browser
        .assert_shows("Which organisation are you inviting them to?")
        .await;
    browser.choose("organisation", "Riverside CCG").await;
    browser.shot("invite-organisation").await;
    browser.press("Next").await;
    browser.assert_shows("Which role will they have?").await;
    browser.tick("Commissioning Account Administrator").await;
    browser.shot("invite-role").await;
    browser.press("Next").await;
    browser
        .assert_shows("Check the invitation, then send it")
        .await;
    browser
        .assert_shows("Commissioning Account Administrator")
        .await;
    browser.shot("invite-check").await;
    browser.press("Send").await;
    browser
        .assert_shows(&format!("The invitation was sent to {admin_email}."))
        .await;
    browser.assert_shows("Waiting to be accepted").await;
    browser.shot("invitations").await;
    browser.sign_out().await;

    // 3. The administrator accepts from the invitation mail, registers from the next mail,
    // and signs in: one role, so it is the one worked in.
    let invitation = suite.mail(admin_email, subject::INVITATION).await;
    browser.open(&on_gateway(&invitation.links()[0])).await;
    assert_eq!(browser.path().await, "/portal/invitation");
    browser.assert_shows("You have been invited to CQRS").await;
    browser.assert_shows("Riverside CCG").await;
    browser.shot("invitation").await;
    browser.press("Accept invitation").await;
    browser.assert_shows("Invitation accepted").await;
    browser.shot("invitation-accepted").await;
    let registration = suite.mail(admin_email, subject::REGISTRATION_LINK).await;
    let admin_id = browser
        .register_from("admin", &on_gateway(&registration.links()[0]), PASSWORD)
        .await;
    browser.sign_in(&admin_id, PASSWORD).await;
    browser
        .assert_shows("You are working as Commissioning Account Administrator, Riverside CCG")
        .await;
    browser.shot("admin-home").await;
    browser.sign_out().await;

    // 4. A practice user registers at the first practice, found by searching.
    browser.follow("Register for an account").await;
    browser
        .assert_shows("Register for a CQRS Local account")
        .await;
    browser.type_into("q", "Bridge Street").await;
    browser.press("Search").await;
    browser
        .assert_shows("Organisations matching “Bridge Street”")
        .await;
    browser.tick("Bridge Street Surgery (A81001)").await;
    browser.type_into("email", sam_email).await;
    browser.choose("role", "Practice User").await;
    browser.type_into("first_name", sam_first).await;
    browser.type_into("last_name", sam_last).await;
    browser.shot("register").await;
    browser.press("Register").await;
    browser.assert_shows("Your request is under review").await;
    browser.shot("registration-submitted").await;
    suite
        .mail(admin_email, subject::REGISTRATION_RECEIVED)
        .await;

    // 5. The administrator approves it from the inbox: Review → Approve → Confirm.
    browser.sign_in(&admin_id, PASSWORD).await;
    browser.follow_starting("Notifications").await;
    browser.assert_shows("unread notification").await;
    browser
        .reload_until("New registration for Bridge Street Surgery")
        .await;
    browser.shot("admin-inbox-registration").await;
    browser.follow_starting("Review").await;
    browser
        .assert_shows(&format!("Registration of {sam_first} {sam_last}"))
        .await;
    browser.scroll_to("decision").await;
    browser.shot("review-registration").await;
    browser.press("Approve").await;
    browser.assert_shows("Check and confirm").await;
    browser.shot("confirm-registration").await;
    browser.press("Confirm").await;
    browser
        .assert_shows(&format!(
            "You approved the registration of {sam_first} {sam_last}."
        ))
        .await;
    browser.shot("registration-approved").await;
    browser.sign_out().await;

    // 6. The practice user registers from the mail, signs in, and asks for access to the
    // second practice: My profile → Request access → search → role and reason → check → send.
    let registration = suite.mail(sam_email, subject::REGISTRATION_LINK).await;
    let sam_id = browser
        .register_from(
            "practice-user",
            &on_gateway(&registration.links()[0]),
            PASSWORD,
        )
        .await;
    browser.sign_in(&sam_id, PASSWORD).await;
    browser
        .assert_shows("You are working as Practice User, Bridge Street Surgery")
        .await;
    browser.shot("practice-user-home").await;
    browser.follow("My profile").await;
    browser.assert_shows(sam_email).await;
    browser.shot("practice-user-profile").await;
    browser.follow("Request access").await;
    browser
        .assert_shows("Request access to another organisation")
        .await;
    browser.type_into("q", "Mill Lane").await;
    browser.press("Search").await;
    browser
        .assert_shows("Organisations matching “Mill Lane”")
        .await;
    browser.tick("Mill Lane Practice (A81002)").await;
    browser.shot("request-access-search").await;
    browser.press("Next").await;
    browser
        .assert_shows("Request access to Mill Lane Practice")
        .await;
    browser.choose("role", "Practice User").await;
    let reason = "I cover Mill Lane Practice on Fridays.";
    browser.type_into("reason", reason).await;
    browser.shot("request-access-details").await;
    browser.press("Next").await;
    browser.assert_shows("Check your request").await;
    browser.assert_shows(reason).await;
    browser.shot("request-access-check").await;
    browser.press("Send").await;
    browser
        .assert_shows("Your request for access as Practice User, Mill Lane Practice has been sent.")
        .await;
    browser.shot("request-access-sent").await;
    browser.sign_out().await;

    // 7. The administrator approves it from the inbox.
    browser.sign_in(&admin_id, PASSWORD).await;
    browser.follow_starting("Notifications").await;
    browser.assert_shows("unread notification").await;
    browser
        .reload_until("New access request for Mill Lane Practice")
        .await;
    browser.shot("admin-inbox-access-request").await;
    browser
        .follow_xpath(
            "//li[contains(., 'New access request for Mill Lane Practice')]\
             //a[starts-with(normalize-space(), 'Review')]",
            "Review link of the access request",
        )
        .await;
    browser
        .assert_shows(&format!("Access request of {sam_first} {sam_last}"))
        .await;
    browser.assert_shows(reason).await;
    browser.scroll_to("decision").await;
    browser.shot("review-access-request").await;
    browser.press("Approve").await;
    browser.assert_shows("Check and confirm").await;
    browser.press("Confirm").await;
    browser
        .assert_shows("You approved the access request for Practice User, Mill Lane Practice.")
        .await;
    browser.shot("access-request-approved").await;
    browser.sign_out().await;
    suite
        .mail(sam_email, subject::ACCESS_REQUEST_APPROVED)
        .await;

    // … and the practice user, signed in again, holds both roles and switches between them
    // with the header's role switcher.
    browser.sign_in(&sam_id, PASSWORD).await;
    browser
        .assert_shows("Choose the organisation and role to work as")
        .await;
    browser
        .assert_shows("Practice User, Bridge Street Surgery")
        .await;
    browser
        .assert_shows("Practice User, Mill Lane Practice")
        .await;
    browser.shot("practice-user-two-roles").await;
    for practice in ["Mill Lane Practice", "Bridge Street Surgery"] {
        browser
            .choose("role-switch", &format!("Practice User, {practice}"))
            .await;
        browser.press("Switch role").await;
        browser
            .assert_shows(&format!("You are working as Practice User, {practice}"))
            .await;
        browser
            .shot(&format!(
                "working-at-{}",
                practice.to_lowercase().replace(' ', "-")
            ))
            .await;
    }
    browser.sign_out().await;

    // 8. Three wrong passwords lock the account; the right one is refused after that.
    for _ in 0..Suite::LOCKOUT_THRESHOLD {
        browser.type_into("login", &sam_id).await;
        browser.type_into("password", "Wrong#Guess1").await;
        browser.press("Sign in").await;
        browser.assert_shows("contact the service desk").await;
    }
    browser.type_into("login", &sam_id).await;
    browser.type_into("password", PASSWORD).await;
    browser.press("Sign in").await;
    browser.assert_shows("contact the service desk").await;
    browser.shot("practice-user-locked-out").await;
    suite.mail(sam_email, subject::ACCOUNT_LOCKED).await;

    // The desk finds the account and unlocks it.
    browser.sign_in(&desk_id, Suite::DESK_PASSWORD).await;
    browser.follow("Service desk").await;
    browser.type_into("login", &sam_id).await;
    browser.press("Find account").await;
    browser
        .assert_shows("Locked after too many wrong passwords")
        .await;
    browser.scroll_to("account-lock").await;
    browser.shot("desk-locked-account").await;
    browser.press("Unlock the account").await;
    browser
        .assert_shows(&format!(
            "The account is unlocked: {sam_first} {sam_last} can sign in again."
        ))
        .await;
    assert_eq!(browser.text_of("account-lock").await, "Not locked");
    browser.shot("desk-unlocked").await;
    // The audit trail, every service at once: the unlock, by the desk as the desk, with what
    // it changed and the browser it came from.
    browser.follow("Audit trail").await;
    browser.type_into("action", "unlock account").await;
    browser.press("Show events").await;
    browser.assert_shows("Events: all services").await;
    browser.assert_shows("UNLOCK_ACCOUNT").await;
    browser.assert_shows("as Service desk").await;
    browser
        .assert_shows("TOO_MANY_FAILED_ATTEMPTS → (none)")
        .await;
    browser.assert_shows("Browser").await;
    browser.scroll_to("events-heading").await;
    browser.shot("desk-audit-trail").await;
    browser.sign_out().await;
    suite.mail(sam_email, subject::ACCOUNT_UNLOCKED).await;

    // The practice user signs in again.
    browser.sign_in(&sam_id, PASSWORD).await;
    browser
        .assert_shows("Choose the organisation and role to work as")
        .await;
    browser.shot("practice-user-back").await;
}

/// Issue 12: the desk, whose role needs an authenticator app, is led to add one right after
/// its first sign-in (QR code, key, recovery codes shown once), then signs in with its
/// password and a code from the app.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_desk_adds_an_authenticator_app_and_signs_in_with_a_code() {
    let suite = Suite::builder()
        .env(
            Service::Identity,
            &[("CQRS_SECOND_FACTOR_ROLES", "SERVICE_DESK")],
        )
        .start()
        .await;
    let gateway = Gateway::start(&suite).await;
    let mut browser = Browser::start(&gateway, "authenticator").await;
    let mail = suite
        .mail(Suite::DESK_EMAIL, subject::REGISTRATION_LINK)
        .await;
    let user_id = browser
        .register_from("desk", &on_gateway(&mail.links()[0]), Suite::DESK_PASSWORD)
        .await;

    browser.give_password(&user_id, Suite::DESK_PASSWORD).await;
    browser
        .assert_shows("One of your roles needs an authenticator app")
        .await;
    assert_eq!(browser.path().await, "/portal/profile/authenticator");
    browser.shot("add-an-authenticator-app").await;
    let secret = browser.text_of("secret").await.replace(' ', "");
    browser.type_into("code", &suite.totp_code(&secret)).await;
    browser.press("Add the app").await;
    browser.assert_shows("Your recovery codes").await;
    browser.shot("recovery-codes").await;
    browser.follow("Continue").await;
    browser.assert_shows("Welcome, ").await;
    browser
        .assert_shows("You are working as Service Desk")
        .await;
    browser.sign_out().await;

    suite.advance_clock(chrono::TimeDelta::seconds(30));
    browser.give_password(&user_id, Suite::DESK_PASSWORD).await;
    browser
        .assert_shows("Enter the code from your authenticator app")
        .await;
    browser.shot("code").await;
    browser.type_into("code", &suite.totp_code(&secret)).await;
    browser.press("Continue").await;
    browser.assert_shows("Welcome, ").await;
    browser.shot("signed-in-with-a-code").await;
}

/// Issue 12: "Sign in with NHSmail" above the User ID form; the provider (on loopback, no
/// login form of its own) sends the browser back, and the person picks one of their roles.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_desk_signs_in_with_nhsmail_and_picks_a_role() {
    use cqrs_proto::common::v1::Role;
    use cqrs_proto::directory::v1 as dir_pb;

    let (provider, suite, listener) = common::sso_suite(None).await;
    // A second grant, so there is a role to pick.
    let desk = suite.desk_sign_in().await;
    let region = suite
        .create_organisation(
            &desk.token,
            cqrs_proto::directory::v1::OrganisationKind::Region,
            "Y57",
            "Harbour Region",
            None,
        )
        .await
        .unwrap();
    suite
        .directory()
        .grant_role(cqrs_suite::with_token(
            dir_pb::GrantRoleRequest {
                request_id: uuid::Uuid::new_v4().to_string(),
                account_id: desk.account_id().to_owned(),
                organisation_id: region.id.clone(),
                role: Role::CommissioningUser as i32,
            },
            &suite.service_token().await,
        ))
        .await
        .unwrap();
    provider.sign_in_as(Suite::DESK_EMAIL, true, &["pwd"]);

    let gateway = Gateway::start_on(&suite, listener).await;
    let mut browser = Browser::start(&gateway, "nhsmail").await;
    browser.open("/portal/sign-in").await;
    browser.assert_shows("With your NHSmail account").await;
    browser.shot("sign-in-with-nhsmail").await;
    browser.follow("Sign in with NHSmail").await;
    browser
        .assert_shows("Choose the organisation and role to work as")
        .await;
    browser.shot("signed-in-with-nhsmail").await;
    browser
        .choose("role-switch", "Commissioning User, Harbour Region")
        .await;
    browser.press("Switch role").await;
    browser
        .assert_shows("You are working as Commissioning User, Harbour Region")
        .await;
    browser.shot("working-as-commissioning-user").await;
}
