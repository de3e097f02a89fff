//! Rate limits on the public RPCs that mail or check a password (`cqrs_edge::rate_limit`):
//! a flood of reset requests for one address queues at most the budget's mails, known and
//! unknown addresses are answered alike, and the client address is the one a trusted gateway
//! vouches for, never a header from anyone else.

use std::time::Duration;

use cqrs_proto::identity::v1 as pb;
use cqrs_testkit::assert_reason;
use tonic::Code;
use tonic::metadata::MetadataValue;
use tonic_types::StatusExt;

use crate::calls::{IdentityCalls, PASSWORDS, start};

fn reset_from(
    login: &str,
    client: Option<&str>,
) -> tonic::Request<pb::RequestPasswordResetRequest> {
    let mut request = tonic::Request::new(pb::RequestPasswordResetRequest {
        login: login.into(),
    });
    if let Some(client) = client {
        request.metadata_mut().insert(
            "x-cqrs-client-address",
            MetadataValue::try_from(client).unwrap(),
        );
    }
    request
}

/// The refusal: RESOURCE_EXHAUSTED, RATE_LIMITED, a retry delay within the budget's period.
fn assert_limited(status: &tonic::Status, at_most: Duration) -> Duration {
    assert_reason(status, Code::ResourceExhausted, "RATE_LIMITED");
    let delay = status
        .get_details_retry_info()
        .and_then(|info| info.retry_delay)
        .expect("a retry delay");
    assert!(delay > Duration::ZERO && delay <= at_most, "{delay:?}");
    delay
}

#[tokio::test]
async fn a_flood_of_resets_for_one_address_queues_at_most_the_budget() {
    let h = start(&[
        ("CQRS_RATE_LIMIT_PER_ADDRESS", "3/hour"),
        ("CQRS_RATE_LIMIT_PER_CLIENT", "off"),
    ])
    .await;
    let account = h
        .active(pb::Realm::Local, "rae.moon@practice.org", PASSWORDS[0])
        .await;
    let mut answers = Vec::new();
    for (i, login) in [account.email.as_str(), "nobody@practice.org"]
        .into_iter()
        .flat_map(|login| std::iter::repeat_n(login, 10))
        .enumerate()
    {
        // From many addresses, in any case: the address's budget is the one that runs out.
        let client = format!("10.1.{}.{}", i / 200, i % 200);
        let login = if i % 2 == 0 {
            login.to_uppercase()
        } else {
            login.to_owned()
        };
        answers.push(
            h.identity()
                .request_password_reset(reset_from(&login, Some(&client)))
                .await,
        );
    }
    let (known, unknown) = answers.split_at(10);
    for answers in [known, unknown] {
        assert!(answers[..3].iter().all(Result::is_ok), "{answers:?}");
        for refused in &answers[3..] {
            assert_limited(refused.as_ref().unwrap_err(), Duration::from_secs(20 * 60));
        }
    }
    // Known and unknown refusals read the same.
    let (k, u) = (
        known[9].as_ref().unwrap_err(),
        unknown[9].as_ref().unwrap_err(),
    );
    assert_eq!(
        k.message().split(" in ").next(),
        u.message().split(" in ").next()
    );
    assert_eq!(h.outbox_count("PASSWORD_RESET").await, 3);

    // Another address has a budget of its own.
    let other = h
        .active(pb::Realm::Local, "sol.hart@practice.org", PASSWORDS[0])
        .await;
    h.identity()
        .request_password_reset(reset_from(&other.email, None))
        .await
        .unwrap();
    assert_eq!(h.outbox_count("PASSWORD_RESET").await, 4);
}

#[tokio::test]
async fn sign_in_is_limited_per_client_as_a_trusted_gateway_reports_it() {
    let h = start(&[
        ("CQRS_RATE_LIMIT_PER_CLIENT", "4/min"),
        ("CQRS_RATE_LIMIT_PER_ADDRESS", "off"),
    ])
    .await;
    let account = h
        .active(pb::Realm::Local, "tom.reid@practice.org", PASSWORDS[0])
        .await;
    let sign_in = |client: &str| {
        let mut request = tonic::Request::new(pb::SignInRequest {
            login: account.email.clone(),
            password: PASSWORDS[0].into(),
        });
        request.metadata_mut().insert(
            "x-cqrs-client-address",
            MetadataValue::try_from(client).unwrap(),
        );
        let mut client = h.identity();
        async move { client.sign_in(request).await }
    };
    for _ in 0..4 {
        sign_in("192.0.2.10").await.unwrap();
    }
    let refused = sign_in("192.0.2.10").await.unwrap_err();
    assert_limited(&refused, Duration::from_secs(15));
    // Another person behind the same gateway is not held back.
    sign_in("192.0.2.11").await.unwrap();
}

#[tokio::test]
async fn a_client_address_header_from_an_untrusted_peer_is_ignored() {
    let h = start(&[
        ("CQRS_RATE_LIMIT_PER_CLIENT", "3/min"),
        ("CQRS_RATE_LIMIT_PER_ADDRESS", "off"),
        ("CQRS_TRUSTED_GATEWAYS", "192.0.2.99"),
    ])
    .await;
    // Every call claims another address, but comes from loopback, which is not trusted here:
    // all of them count against loopback.
    for i in 0..3 {
        h.identity()
            .request_password_reset(reset_from(
                "x@practice.org",
                Some(&format!("198.51.100.{i}")),
            ))
            .await
            .unwrap();
    }
    let refused = h
        .identity()
        .request_password_reset(reset_from("y@practice.org", Some("198.51.100.200")))
        .await
        .unwrap_err();
    assert_limited(&refused, Duration::from_secs(20));
}
