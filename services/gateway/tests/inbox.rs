//! The Notifications tile and the review pages behind it (seed 002 §5 and §9 "What will
//! happen now?"), over HTTP against the whole suite in-process: a self-registration reaches
//! the administrator's inbox, Review opens it, Reject needs a reason, Confirm decides it in
//! the access service and mails the applicant; an access request is approved the same way and
//! the grant exists; marking read lowers the unread count in the header; the inbox pages with
//! "Older"; a role that may not review is refused the review pages; a request outside the
//! administrator's scope is "not found", and a requester is refused the review of their own.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::Duration;

use cqrs_proto::access::v1 as access_pb;
use cqrs_proto::common::v1::Role;
use cqrs_proto::directory::v1 as dir_pb;
use cqrs_proto::notifications::v1 as notifications_pb;
use cqrs_suite::world::{PASSWORD, people};
use cqrs_suite::{World, subject};
use cqrs_testkit::with_token;
use reqwest::StatusCode;

use common::{Browser, Gateway, Page};

const APPLICANT: &str = "jo.bloggs@bridgestreet.nhs.uk";

/// GETs `path` until it shows `text` (the outbox relays notifications a moment after the
/// request that raised them).
async fn eventually_shows(browser: &Browser, path: &str, text: &str) -> Page {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let page = browser.get(path).await;
        assert_eq!(page.status, StatusCode::OK, "{}", page.body);
        if page.contains(text) || tokio::time::Instant::now() >= deadline {
            page.assert_shows(text);
            return page;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The administrator of the world's CCG, signed in to the gateway.
async fn admin_browser(world: &World, gateway: &Gateway) -> Browser {
    let browser = gateway.browser();
    browser
        .sign_in(&world.admin.user_id, PASSWORD)
        .await
        .assert_shows("Commissioning Account Administrator, Riverside CCG");
    browser
}

async fn registration(world: &World, id: &str) -> access_pb::Registration {
    world
        .suite
        .access()
        .list_registrations(with_token(
            access_pb::ListRegistrationsRequest::default(),
            &world.admin_session.token,
        ))
        .await
        .unwrap()
        .into_inner()
        .registrations
        .into_iter()
        .find(|r| r.id == id)
        .unwrap_or_else(|| panic!("registration {id} is not listed"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_registration_is_reviewed_from_the_inbox_and_rejected_with_a_reason() {
    let world = World::start().await;
    let suite = &world.suite;
    let gateway = Gateway::start(suite).await;
    let admin = admin_browser(&world, &gateway).await;

    let submitted = suite
        .submit_registration(
            APPLICANT,
            ("Jo", "Bloggs"),
            &world.tree.practice.ods_code,
            Role::PracticeUser,
        )
        .await
        .unwrap();
    suite
        .mail(&world.admin.email, subject::REGISTRATION_RECEIVED)
        .await;

    // The inbox: the notice, unread, with Review opening the registration.
    let inbox = eventually_shows(
        &admin,
        "/portal/notifications",
        "New registration for Bridge Street Surgery",
    )
    .await;
    let review = format!("/portal/reviews/registration/{}", submitted.id);
    inbox.assert_shows(&format!("href=\"{review}\">Review"));
    inbox.assert_shows("Jo Bloggs (jo.bloggs@bridgestreet.nhs.uk) has asked to register");
    inbox.assert_shows("<span class=\"inbox-tag\">Unread</span>");
    inbox.assert_shows("<span class=\"unread-count\">1 unread</span>");
    inbox.assert_shows("You have 1 unread notification.");
    inbox.assert_shows("href=\"/portal/reviews\">Requests awaiting your review");

    // The list of requests awaiting review has it too.
    let waiting = admin.get("/portal/reviews").await;
    assert_eq!(waiting.status, StatusCode::OK);
    waiting.assert_shows("<td>Jo Bloggs</td>");
    waiting.assert_shows(&format!("href=\"{review}\""));

    // The details, then Reject without a reason: the error by the reason field.
    let details = admin.get(&review).await;
    assert_eq!(details.status, StatusCode::OK, "{}", details.body);
    details.assert_shows("<h1>Registration of Jo Bloggs</h1>");
    details.assert_shows(APPLICANT);
    details.assert_shows("Bridge Street Surgery (A81001)");
    details.assert_shows("<dd>Practice User</dd>");
    details.assert_shows("Awaiting review");
    let no_reason = admin
        .fill(&review, &[("decision", "reject"), ("reason", "   ")])
        .await;
    assert_eq!(no_reason.status, StatusCode::OK, "{}", no_reason.body);
    no_reason.assert_shows("id=\"reason-error\"");
    no_reason.assert_shows("Enter the reason for rejecting this registration");
    no_reason.assert_shows("aria-describedby=\"reason-error\"");

    // With a reason: the confirm page, and nothing decided yet.
    let reason = "Nobody of that name works at Bridge Street Surgery.";
    let check = admin
        .fill(&review, &[("decision", "reject"), ("reason", reason)])
        .await;
    assert_eq!(check.status, StatusCode::OK, "{}", check.body);
    check.assert_shows("<h1>Check and confirm</h1>");
    check.assert_shows("<dd id=\"decision\">Reject</dd>");
    check.assert_shows(reason);
    check.assert_shows(&format!("action=\"{review}/confirm\""));
    assert_eq!(
        registration(&world, &submitted.id).await.state,
        access_pb::RegistrationState::Pending as i32
    );
    // "Change your decision" goes back to the review form with the reason as typed.
    let changed = admin
        .fill(&review, &[("decision", "change"), ("reason", reason)])
        .await;
    changed.assert_shows("<h1>Registration of Jo Bloggs</h1>");
    changed.assert_shows(&format!(">{reason}</textarea>"));
    assert!(!changed.contains("reason-error"), "{}", changed.body);

    // Confirm: rejected in the access service, the outcome as a notice, the applicant mailed.
    let confirmed = admin
        .post(
            &format!("{review}/confirm"),
            &[
                ("csrf", &check.csrf()),
                ("decision", "reject"),
                ("reason", reason),
            ],
        )
        .await;
    assert_eq!(
        confirmed.status,
        StatusCode::SEE_OTHER,
        "{}",
        confirmed.body
    );
    assert_eq!(confirmed.location(), "/portal/reviews");
    let after = admin.get("/portal/reviews").await;
    after.assert_shows("You rejected the registration of Jo Bloggs.");
    after.assert_shows("No registrations are awaiting your review.");
    let decided = registration(&world, &submitted.id).await;
    assert_eq!(decided.state, access_pb::RegistrationState::Rejected as i32);
    assert_eq!(decided.decision_reason, reason);
    assert_eq!(decided.reviewer_id, world.admin.account_id);
    let mail = suite.mail(APPLICANT, subject::REGISTRATION_REJECTED).await;
    assert!(mail.text.contains(reason), "{}", mail.text);

    // Decided: the page says so and offers no decision any more.
    let done = admin.get(&review).await;
    done.assert_shows("<dd id=\"status\">Rejected</dd>");
    done.assert_shows(reason);
    assert!(!done.contains("value=\"approve\""), "{}", done.body);
    // A second confirm (say, from another tab) is told it was decided already.
    let again = admin
        .fill_at(
            &review,
            &format!("{review}/confirm"),
            &[("decision", "approve"), ("reason", "")],
        )
        .await;
    assert_eq!(again.status, StatusCode::OK);
    assert!(!again.contains("Check and confirm"), "{}", again.body);
    assert_eq!(
        registration(&world, &submitted.id).await.state,
        access_pb::RegistrationState::Rejected as i32
    );

    // A request that is not there (or not in scope).
    let missing = admin
        .get(&format!(
            "/portal/reviews/registration/{}",
            uuid::Uuid::new_v4()
        ))
        .await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
    missing.assert_shows("Request not found");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_access_request_is_approved_from_the_inbox_and_the_grant_exists() {
    let world = World::start().await;
    let suite = &world.suite;
    let gateway = Gateway::start(suite).await;
    let sam = world.practice_user().await;
    let sam_session = suite
        .sign_in_person(&sam, &world.tree.practice, Role::PracticeUser)
        .await;
    let reason = "I cover Mill Lane Practice on Fridays.";
    let request = suite
        .request_access(
            &sam_session.token,
            &world.tree.second_practice,
            Role::PracticeUser,
            reason,
        )
        .await
        .unwrap();

    let admin = admin_browser(&world, &gateway).await;
    let inbox = eventually_shows(
        &admin,
        "/portal/notifications",
        "New access request for Mill Lane Practice",
    )
    .await;
    let review = format!("/portal/reviews/access-request/{}", request.id);
    inbox.assert_shows(&format!("href=\"{review}\">Review"));

    let waiting = admin.get("/portal/reviews").await;
    waiting.assert_shows("<td>Sam Patel</td>");
    waiting.assert_shows(reason);

    // The details name the requester, to be verified; Approve needs no reason.
    let details = admin.get(&review).await;
    assert_eq!(details.status, StatusCode::OK, "{}", details.body);
    details.assert_shows("<h1>Access request of Sam Patel</h1>");
    details.assert_shows(people::PRACTICE_USER.0);
    details.assert_shows("<dd>Mill Lane Practice</dd>");
    details.assert_shows(reason);
    let check = admin
        .fill(&review, &[("decision", "approve"), ("reason", "")])
        .await;
    assert_eq!(check.status, StatusCode::OK, "{}", check.body);
    check.assert_shows("<h1>Check and confirm</h1>");
    check.assert_shows("<dd id=\"decision\">Approve</dd>");
    let confirmed = admin
        .post(
            &format!("{review}/confirm"),
            &[
                ("csrf", &check.csrf()),
                ("decision", "approve"),
                ("reason", ""),
            ],
        )
        .await;
    assert_eq!(
        confirmed.status,
        StatusCode::SEE_OTHER,
        "{}",
        confirmed.body
    );
    admin
        .get(confirmed.location())
        .await
        .assert_shows("You approved the access request for Practice User, Mill Lane Practice.");

    // The grant exists in the directory, and the requester is told by mail.
    let grants = suite
        .directory()
        .list_grants(with_token(
            dir_pb::ListGrantsRequest {
                account_id: sam.account_id.clone(),
                ..Default::default()
            },
            &world.desk.token,
        ))
        .await
        .unwrap()
        .into_inner()
        .grants;
    assert!(
        grants
            .iter()
            .any(|g| g.organisation_id == world.tree.second_practice.id
                && g.role == Role::PracticeUser as i32),
        "{grants:#?}"
    );
    suite
        .mail(&sam.email, subject::ACCESS_REQUEST_APPROVED)
        .await;
    admin
        .get(&review)
        .await
        .assert_shows("<dd id=\"status\">Approved</dd>");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn marking_read_lowers_the_unread_count_and_older_notices_are_a_page_away() {
    let world = World::start().await;
    let suite = &world.suite;
    let gateway = Gateway::start(suite).await;
    let service = suite.service_token().await;
    for n in 1..=22 {
        suite
            .notifications()
            .notify(with_token(
                notifications_pb::NotifyRequest {
                    account_ids: vec![world.admin.account_id.clone()],
                    kind: "SERVICE_NOTICE".into(),
                    title: format!("Notice number {n}"),
                    body: "Planned maintenance on Sunday.".into(),
                    ..Default::default()
                },
                &service,
            ))
            .await
            .unwrap();
    }

    let admin = admin_browser(&world, &gateway).await;
    let home = admin.get("/portal/").await;
    home.assert_shows("<span class=\"unread-count\">22 unread</span>");

    // Newest first, twenty to a page; nothing here to review.
    let first = admin.get("/portal/notifications").await;
    first.assert_shows("You have 22 unread notifications.");
    first.assert_shows("Notice number 22<");
    first.assert_shows("Notice number 3<");
    assert!(!first.contains("Notice number 2<"), "{}", first.body);
    assert!(!first.contains(">Review"), "{}", first.body);
    assert!(
        first.body.find("Notice number 22<") < first.body.find("Notice number 21<"),
        "newest first"
    );
    let older = first
        .body
        .split("href=\"")
        .filter_map(|s| s.split('"').next())
        .find(|href| href.starts_with("/portal/notifications?page_token="))
        .expect("an Older link")
        .replace("&amp;", "&");
    first.assert_shows(">Older</a>");

    let second = admin.get(&older).await;
    second.assert_shows("Notice number 2<");
    second.assert_shows("Notice number 1<");
    assert!(!second.contains("Notice number 3<"), "{}", second.body);
    assert!(!second.contains(">Older</a>"), "{}", second.body);
    second.assert_shows("href=\"/portal/notifications\">Newest</a>");

    // Mark the oldest read, from the second page: back on that page, one fewer unread.
    let listed = suite
        .notifications()
        .list_notifications(with_token(
            notifications_pb::ListNotificationsRequest {
                page_size: 100,
                ..Default::default()
            },
            &world.admin_session.token,
        ))
        .await
        .unwrap()
        .into_inner();
    let oldest = listed
        .notifications
        .iter()
        .find(|n| n.title == "Notice number 1")
        .unwrap();
    let token = older.split("page_token=").nth(1).unwrap().to_owned();
    let token = url::form_urlencoded::parse(format!("t={token}").as_bytes())
        .next()
        .unwrap()
        .1
        .into_owned();
    let marked = admin
        .post(
            "/portal/notifications/read",
            &[
                ("csrf", &second.csrf()),
                ("notification_id", &oldest.id),
                ("page_token", &token),
            ],
        )
        .await;
    assert_eq!(marked.status, StatusCode::SEE_OTHER, "{}", marked.body);
    assert_eq!(marked.location(), older);
    let after = admin.get(marked.location()).await;
    after.assert_shows("<span class=\"unread-count\">21 unread</span>");
    after.assert_shows("You have 21 unread notifications.");
    assert!(
        !after.contains(&format!("value=\"{}\"", oldest.id)),
        "{}",
        after.body
    );
    let read = suite
        .notifications()
        .list_notifications(with_token(
            notifications_pb::ListNotificationsRequest {
                unread_only: true,
                page_size: 1,
                ..Default::default()
            },
            &world.admin_session.token,
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(read.unread_count, 21);
    admin
        .get("/portal/")
        .await
        .assert_shows("<span class=\"unread-count\">21 unread</span>");

    // Someone else's notification, or none: a message, nothing marked.
    let bogus = admin
        .fill_at(
            "/portal/notifications",
            "/portal/notifications/read",
            &[("notification_id", &uuid::Uuid::new_v4().to_string())],
        )
        .await;
    assert_eq!(bogus.location(), "/portal/notifications");
    admin
        .get("/portal/notifications")
        .await
        .assert_shows("That notification could not be found.");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_role_without_review_permission_is_refused_the_review_pages() {
    let world = World::start().await;
    let suite = &world.suite;
    let gateway = Gateway::start(suite).await;
    let sam = world.practice_user().await;
    let pending = suite
        .submit_registration(
            APPLICANT,
            ("Jo", "Bloggs"),
            &world.tree.practice.ods_code,
            Role::PracticeUser,
        )
        .await
        .unwrap();

    let browser = gateway.browser();
    browser
        .sign_in(&sam.user_id, PASSWORD)
        .await
        .assert_shows("Practice User, Bridge Street Surgery");
    // The inbox works, without the way to reviews.
    let inbox = browser.get("/portal/notifications").await;
    assert_eq!(inbox.status, StatusCode::OK);
    assert!(!inbox.contains("/portal/reviews"), "{}", inbox.body);

    let review = format!("/portal/reviews/registration/{}", pending.id);
    for path in ["/portal/reviews", review.as_str()] {
        let refused = browser.get(path).await;
        assert_eq!(refused.status, StatusCode::FORBIDDEN, "{path}");
        refused.assert_shows("You cannot use this page");
    }
    let csrf = inbox.csrf();
    for action in [review.clone(), format!("{review}/confirm")] {
        let refused = browser
            .post(
                &action,
                &[("csrf", &csrf), ("decision", "approve"), ("reason", "")],
            )
            .await;
        assert_eq!(refused.status, StatusCode::FORBIDDEN, "{action}");
        refused.assert_shows("You cannot use this page");
    }
    assert_eq!(
        registration(&world, &pending.id).await.state,
        access_pb::RegistrationState::Pending as i32
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_outside_the_scope_are_not_found_and_requesters_do_not_review_their_own() {
    let world = World::start().await;
    let suite = &world.suite;
    let gateway = Gateway::start(suite).await;
    let (_, elsewhere) = world.other_ccg().await;
    let sam = world.practice_user().await;
    let sam_session = suite
        .sign_in_person(&sam, &world.tree.practice, Role::PracticeUser)
        .await;
    let registration = suite
        .submit_registration(
            APPLICANT,
            ("Jo", "Bloggs"),
            &elsewhere.ods_code,
            Role::PracticeUser,
        )
        .await
        .unwrap();
    let request = suite
        .request_access(
            &sam_session.token,
            &elsewhere,
            Role::PracticeUser,
            "I cover Haxby Group Practice on Mondays.",
        )
        .await
        .unwrap();
    let registration_page = format!("/portal/reviews/registration/{}", registration.id);
    let request_page = format!("/portal/reviews/access-request/{}", request.id);

    // Both exist, in another CCG: to the administrator they are as missing as an unknown id.
    let admin = admin_browser(&world, &gateway).await;
    let unknown = format!("/portal/reviews/access-request/{}", uuid::Uuid::new_v4());
    for path in [&registration_page, &request_page, &unknown] {
        let missing = admin.get(path).await;
        assert_eq!(
            missing.status,
            StatusCode::NOT_FOUND,
            "{path}: {}",
            missing.body
        );
        missing.assert_shows("Request not found");
        assert!(!missing.contains("Jo Bloggs"), "{}", missing.body);
        assert!(!missing.contains("Haxby"), "{}", missing.body);
    }

    // The requester may read their own request elsewhere, but these are reviewers' pages.
    let browser = gateway.browser();
    browser
        .sign_in(&sam.user_id, PASSWORD)
        .await
        .assert_shows("Practice User, Bridge Street Surgery");
    let refused = browser.get(&request_page).await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN, "{}", refused.body);
    refused.assert_shows("You cannot use this page");
}
