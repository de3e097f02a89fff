//! The journeys again, on two replicas of every service over one database per service and one
//! Redis, with the suite's clients taking the replicas in turn: a grant change on
//! one directory reaches the other's cache, a session begun on one identity is checked on the
//! other, and two outbox relays and two mail workers per producer send every mail once.

use std::collections::BTreeMap;

use cqrs_suite::World;

/// Runs `journey` on a replicated world; afterwards no mail went out twice.
async fn on_two_replicas<F>(journey: F)
where
    F: AsyncFnOnce(&World),
{
    let world = World::start_replicated().await;
    journey(&world).await;
    let mut seen: BTreeMap<(Vec<String>, String, String), usize> = BTreeMap::new();
    for mail in world.suite.smtp.messages() {
        *seen
            .entry((mail.to.clone(), mail.subject.clone(), mail.text.clone()))
            .or_default() += 1;
    }
    let twice: Vec<_> = seen.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "sent more than once: {twice:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoke_on_two_replicas() {
    on_two_replicas(crate::revoke::journey).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn access_request_on_two_replicas() {
    on_two_replicas(crate::access_request::journey).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lockout_reset_on_two_replicas() {
    on_two_replicas(crate::lockout_reset::journey).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disable_enable_on_two_replicas() {
    on_two_replicas(crate::disable_enable::journey).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn self_registration_on_two_replicas() {
    on_two_replicas(crate::self_registration::journey).await;
}
