//! Readiness follows the session store: directory and access answer no user call without the
//! Redis that holds identity's sessions, so they report NOT_SERVING while it is unreachable.

use cqrs_suite::Service;
use cqrs_testkit::{assert_reason, wait_health};
use tonic::Code;
use tonic_health::pb::health_check_response::ServingStatus;

use crate::calls::AccessSuite;

#[tokio::test]
async fn directory_and_access_are_not_serving_without_the_session_store() {
    let h = AccessSuite::start().await;
    let token = h.user_token(uuid::Uuid::new_v4(), None).await;
    for service in [Service::Directory, Service::Access] {
        let dead = h
            .serve_with_session_store(service, "redis://127.0.0.1:1")
            .await;
        wait_health(&dead.channel, ServingStatus::NotServing).await;
        // The same service over the suite's Redis is ready.
        let live = h.serve_with_session_store(service, &h.redis.url).await;
        wait_health(&live.channel, ServingStatus::Serving).await;
        // A user call on the unready one fails closed, as before.
        let err = match service {
            Service::Directory => {
                cqrs_proto::directory::v1::directory_service_client::DirectoryServiceClient::new(
                    dead.channel.clone(),
                )
                .list_grants(cqrs_testkit::with_token(
                    cqrs_proto::directory::v1::ListGrantsRequest::default(),
                    &token,
                ))
                .await
                .map(drop)
            }
            _ => cqrs_proto::access::v1::access_service_client::AccessServiceClient::new(
                dead.channel.clone(),
            )
            .list_access_requests(cqrs_testkit::with_token(
                cqrs_proto::access::v1::ListAccessRequestsRequest::default(),
                &token,
            ))
            .await
            .map(drop),
        }
        .unwrap_err();
        assert_reason(&err, Code::Unavailable, "UNAVAILABLE");
    }
}
