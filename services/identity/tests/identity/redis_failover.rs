//! A Redis master dies in the middle of sign-ins — in a Redis Cluster and under Sentinel —
//! and comes back as a replica: no more passwords are checked than the lock-out allows, and
//! no session whose sign-out was answered comes back.
//!
//! Each test runs a deployment of its own (`scripts/redis-topologies.sh`, real
//! `redis-server` processes on loopback) with `replica_acks=1`.

use std::time::{Duration, Instant};

use cqrs_auth::account_key_prefix;
use cqrs_proto::identity::v1 as pb;
use cqrs_suite::Suite;
use cqrs_testkit::{RedisDeployment, with_token};
use tonic::Code;
use uuid::Uuid;

use crate::calls::{IdentityCalls, PASSWORDS, start_on_redis};

const THRESHOLD: usize = 5;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_master_failover_in_the_middle_of_sign_ins() {
    failover_in_the_middle_of_sign_ins(RedisDeployment::cluster()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sentinel_failover_in_the_middle_of_sign_ins() {
    failover_in_the_middle_of_sign_ins(RedisDeployment::sentinel()).await;
}

async fn failover_in_the_middle_of_sign_ins(redis: RedisDeployment) {
    let h = start_on_redis(
        &redis.url,
        &[
            ("CQRS_LOCKOUT_TEMPORARY_AFTER", "5"),
            ("CQRS_LOCKOUT_PERMANENT_AFTER", "10"),
        ],
    )
    .await;
    let master_of = |account: &pb::Account| {
        let id = Uuid::parse_str(&account.id).unwrap();
        redis.master_of(&(account_key_prefix(&h.redis.namespace, id) + "lockout"))
    };
    let victim = h
        .active(pb::Realm::National, "vic.tor@nhs.net", PASSWORDS[0])
        .await;
    let master = master_of(&victim);
    // A person whose sessions live on the same master (in a cluster, accounts spread over
    // three).
    let mut person = None;
    for i in 0..12 {
        let account = h
            .active(
                pb::Realm::National,
                &format!("pat.{i}@nhs.net"),
                PASSWORDS[1],
            )
            .await;
        if master_of(&account) == master {
            person = Some(account);
            break;
        }
    }
    let person = person.expect("an account on the victim's master");
    let mut sessions = Vec::new();
    for _ in 0..5 {
        sessions.push(h.sign_in(&person.user_id, PASSWORDS[1]).await.unwrap());
    }
    // One sign-out just before the master dies: it must survive the failover. (On a loaded
    // machine a replica may be slow to confirm; the sign-out is then refused, and repeated.)
    let mut tries = 0;
    while let Err(status) = h
        .identity()
        .sign_out(with_token(pb::SignOutRequest {}, &sessions[0].access_token))
        .await
    {
        tries += 1;
        assert!(
            tries < 20 && status.code() == Code::Unavailable,
            "{status:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // Wrong passwords against the victim, and sign-outs of the person's sessions, while the
    // master is killed and, once a replica has taken its place (three seconds at least),
    // started again.
    let attacker = {
        let mut client = h.identity();
        let login = victim.user_id.clone();
        tokio::spawn(async move {
            let mut codes = Vec::new();
            for i in 0..40 {
                let answer = client
                    .sign_in(pb::SignInRequest {
                        login: login.clone(),
                        password: format!("Wrong#Guess{i}"),
                    })
                    .await;
                codes.push(answer.unwrap_err().code());
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            codes
        })
    };
    let signing_out = {
        let mut client = h.identity();
        let tokens: Vec<String> = sessions.iter().map(|s| s.access_token.clone()).collect();
        tokio::spawn(async move {
            let mut acknowledged = vec![true];
            for token in &tokens[1..4] {
                tokio::time::sleep(Duration::from_millis(1500)).await;
                let answer = client
                    .sign_out(with_token(pb::SignOutRequest {}, token))
                    .await;
                acknowledged.push(answer.is_ok());
            }
            acknowledged
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    redis.kill(master);
    tokio::time::sleep(Duration::from_secs(3)).await;
    redis.restart(master);
    let codes = attacker.await.unwrap();
    let acknowledged = signing_out.await.unwrap();
    assert!(
        codes.contains(&Code::Unavailable),
        "the attempts met the failover: {codes:?}"
    );

    // The service recovers by itself: the person signs in again.
    let deadline = Instant::now() + Duration::from_secs(30);
    let fresh = loop {
        match h.sign_in(&person.user_id, PASSWORDS[1]).await {
            Ok(signed) => break signed,
            Err(status) if Instant::now() < deadline => {
                assert_eq!(status.code(), Code::Unavailable, "{status:?}");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(status) => panic!("identity did not recover: {status:?}"),
        }
    };
    h.get_account(&fresh.access_token, &person.id)
        .await
        .unwrap();

    // No lock-out bypass: no more passwords were checked than the threshold allows, however
    // the failover fell, and the right one is refused now.
    let checked = h
        .audit_rows("SIGN_IN", &victim.id)
        .await
        .into_iter()
        .filter(|(_, detail)| detail["reason"] == "wrong_password")
        .count();
    // (A client retry during the failover may count one attempt twice: fewer checks, never
    // more.)
    assert!(
        (1..=THRESHOLD).contains(&checked),
        "{checked} checked: {codes:?}"
    );
    let refused = h.sign_in(&victim.user_id, PASSWORDS[0]).await.unwrap_err();
    assert_eq!(refused.code(), Code::Unauthenticated);

    // No session resurrected: every acknowledged sign-out still holds, on both checks.
    for (signed, ok) in sessions.iter().zip(&acknowledged) {
        if !ok {
            continue;
        }
        assert_ended(&h, signed, &person.id).await;
    }
    // The session nobody signed out is still there.
    h.get_account(&sessions[4].access_token, &person.id)
        .await
        .unwrap();
}

async fn assert_ended(h: &Suite, signed: &pb::SignInResponse, account_id: &str) {
    let err = h
        .get_account(&signed.access_token, account_id)
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated);
    let err = h
        .identity()
        .refresh_access_token(pb::RefreshAccessTokenRequest {
            session_token: signed.session_token.clone(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated);
}
