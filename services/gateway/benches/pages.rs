//! `make bench`: pages per second through the gateway — the sign-in page for a new visitor
//! and the inbox of a signed-in person — next to a bare axum handler on the same machine in
//! the same run, with p99 latencies. Ratios, not absolute numbers, compare across machines.
//! Targets (DESIGN): a signed-in page at >= 0.30 of the bare handler, every page p99 < 50 ms.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "../tests/common/mod.rs"]
mod common;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cqrs_suite::Suite;

use common::Gateway;

const CONCURRENCY: usize = 16;
const RUN_FOR: Duration = Duration::from_secs(5);

struct Measured {
    rate: f64,
    p99: Duration,
}

/// GETs `url` from CONCURRENCY clients (each its own cookies, from `clients`) for RUN_FOR.
async fn measure(clients: Vec<reqwest::Client>, url: String) -> Measured {
    let latencies = Arc::new(Mutex::new(Vec::new()));
    let start = Instant::now();
    let mut tasks = Vec::new();
    for client in clients {
        let (url, latencies) = (url.clone(), Arc::clone(&latencies));
        tasks.push(tokio::spawn(async move {
            let mut mine = Vec::new();
            while start.elapsed() < RUN_FOR {
                let began = Instant::now();
                let answer = client.get(&url).send().await.unwrap();
                assert!(answer.status().is_success(), "{url}: {}", answer.status());
                answer.bytes().await.unwrap();
                mine.push(began.elapsed());
            }
            latencies.lock().unwrap().extend(mine);
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    let mut all = std::mem::take(&mut *latencies.lock().unwrap());
    all.sort();
    let p99 = all[(all.len() * 99 / 100).min(all.len() - 1)];
    Measured {
        rate: all.len() as f64 / start.elapsed().as_secs_f64(),
        p99,
    }
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .cookie_store(true)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

async fn bare_axum() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/", listener.local_addr().unwrap());
    let app = axum::Router::new().route(
        "/",
        axum::routing::get(|| async { axum::response::Html("<!doctype html><p>ok</p>") }),
    );
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    url
}

fn report(name: &str, page: &Measured, bare: &Measured, target: Option<f64>) {
    let ratio = page.rate / bare.rate;
    let verdict = |ok: bool| if ok { "meets" } else { "MISSES" };
    let ratio_note = target.map_or(String::new(), |t| {
        format!(" (target >= {t:.2}: {})", verdict(ratio >= t))
    });
    println!(
        "  {name:<34} {:>8.0}/s  ratio {ratio:.3}{ratio_note}  p99 {:>6.2} ms (target < 50 ms: {})",
        page.rate,
        page.p99.as_secs_f64() * 1000.0,
        verdict(page.p99 < Duration::from_millis(50)),
    );
}

#[tokio::main]
async fn main() {
    let suite = Suite::start_registered().await;
    let gateway = Gateway::start(&suite).await;

    let bare_url = bare_axum().await;
    let bare = measure((0..CONCURRENCY).map(|_| client()).collect(), bare_url).await;

    let sign_in = measure(
        (0..CONCURRENCY).map(|_| client()).collect(),
        format!("{}/portal/sign-in", gateway.origin),
    )
    .await;

    // Each client signs in as the service desk (its own session), then reads its inbox.
    let mut signed_in = Vec::new();
    for _ in 0..CONCURRENCY {
        let browser = gateway.browser();
        browser
            .sign_in(suite.desk_user_id(), Suite::DESK_PASSWORD)
            .await;
        signed_in.push(browser.client);
    }
    let inbox = measure(
        signed_in,
        format!("{}/portal/notifications", gateway.origin),
    )
    .await;

    println!("gateway pages ({CONCURRENCY} clients, {RUN_FOR:?} each)");
    println!(
        "  {:<34} {:>8.0}/s  p99 {:>6.2} ms",
        "bare axum handler (baseline)",
        bare.rate,
        bare.p99.as_secs_f64() * 1000.0
    );
    report("sign-in page (new visitor)", &sign_in, &bare, None);
    report("inbox (signed in)", &inbox, &bare, Some(0.30));
}
