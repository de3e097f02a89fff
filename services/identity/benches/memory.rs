//! `make bench`: identity's memory, as a deployment sees it — the release binary in a process
//! of its own (real Postgres and Redis, default settings), its resident set read from
//! `/proc/<pid>/status` while this process drives it over loopback:
//!
//! 1. idle, after start-up (the dummy hash made and the password rules' word lists built);
//! 2. after [`REGISTRATIONS`] CompleteRegistration calls, one at a time (each hashes a new
//!    password);
//! 3. during [`SUSTAINED_SIGNINS`] successful sign-ins from [`SUSTAINED_CALLERS`] callers, and
//!    after [`IDLE`] with nothing to do (the memory must be given back);
//! 4. during a flood of SignIn from [`FLOOD_CLIENTS`] connections for [`FLOOD`], and after
//!    [`IDLE`] again.
//!
//! The bound for every phase is the issue's: idle + cores × (one argon2 memory block, 19 MiB)
//! × 1.3 — hashing may hold one block per core while busy, and little else may grow. Figures
//! are printed against it, never asserted.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::net::{SocketAddr, TcpListener};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use cqrs_auth::{SigningKey, TokenIssuer};
use cqrs_identity::{Clock, SystemClock};
use cqrs_proto::identity::v1::{self as pb, identity_service_client::IdentityServiceClient};
use cqrs_testkit::{TestDb, TestRedis, with_token};
use tonic::Code;
use tonic::transport::{Channel, Endpoint};
use tonic_health::pb::health_check_response::ServingStatus;

const PASSWORD: &str = "Velvet#Harbor42";
const REGISTRATIONS: usize = 24;
const SUSTAINED_CALLERS: usize = 16;
const SUSTAINED_SIGNINS: u64 = 3000;
const FLOOD_CLIENTS: usize = 500;
const FLOOD: Duration = Duration::from_secs(20);
/// How long a new connection's health check may wait to be served.
const CONNECTION_WAIT: Duration = Duration::from_secs(2);
const IDLE: Duration = Duration::from_secs(30);
const SAMPLE_EVERY: Duration = Duration::from_millis(50);
/// argon2id m=19456 KiB: the memory one hash works in.
const ARGON2_BLOCK_MIB: f64 = 19.0;

/// The identity binary, killed when dropped.
struct Service {
    child: Child,
}

impl Drop for Service {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Service {
    fn rss_mib(&self) -> f64 {
        self.status_kib("VmRSS:") / 1024.0
    }

    fn peak_mib(&self) -> f64 {
        self.status_kib("VmHWM:") / 1024.0
    }

    fn status_kib(&self, field: &str) -> f64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .expect("the identity process is gone");
        status
            .lines()
            .find_map(|line| line.strip_prefix(field))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or_else(|| panic!("no {field} in /proc status"))
    }
}

/// The service's highest RSS during a phase, sampled every [`SAMPLE_EVERY`].
struct PeakSampler {
    done: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<f64>,
}

impl PeakSampler {
    fn start(service: &Arc<Service>) -> Self {
        let done = Arc::new(AtomicBool::new(false));
        let (service, stop) = (Arc::clone(service), Arc::clone(&done));
        let task = tokio::spawn(async move {
            let mut peak = 0.0f64;
            while !stop.load(Ordering::Relaxed) {
                peak = peak.max(service.rss_mib());
                tokio::time::sleep(SAMPLE_EVERY).await;
            }
            peak.max(service.rss_mib())
        });
        PeakSampler { done, task }
    }

    /// The peak in MiB.
    async fn stop(self) -> f64 {
        self.done.store(true, Ordering::Relaxed);
        self.task.await.unwrap()
    }
}

/// How the flood's calls were answered.
#[derive(Default)]
struct Answers {
    ok: AtomicU64,
    exhausted: AtomicU64,
    other: AtomicU64,
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

async fn wait_serving(channel: &Channel) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let status = tonic_health::pb::health_client::HealthClient::new(channel.clone())
            .check(tonic_health::pb::HealthCheckRequest::default())
            .await
            .map(|r| r.into_inner().status);
        if status.as_ref().ok() == Some(&(ServingStatus::Serving as i32)) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "identity never SERVING: {status:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn connect(addr: SocketAddr) -> Channel {
    let endpoint = Endpoint::from_shared(format!("http://{addr}")).unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        match endpoint.connect().await {
            Ok(channel) => return channel,
            Err(e) => assert!(Instant::now() < deadline, "cannot connect to identity: {e}"),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn sign_in(client: &mut IdentityServiceClient<Channel>, login: &str) -> Result<(), Code> {
    client
        .sign_in(pb::SignInRequest {
            login: login.into(),
            password: PASSWORD.into(),
        })
        .await
        .map(drop)
        .map_err(|status| status.code())
}

struct Row {
    phase: String,
    mib: f64,
    bound: f64,
}

#[tokio::main]
async fn main() {
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    let db = TestDb::new(&cqrs_identity::MIGRATOR).await;
    let redis = TestRedis::new().await;
    let signing = SigningKey::generate("bench");
    let addr = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let log = std::env::temp_dir().join(format!("cqrs-identity-memory-bench-{}.log", addr.port()));
    let child = Command::new(env!("CARGO_BIN_EXE_cqrs-identity"))
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        // Allocator tuning, if the caller experiments with it.
        .envs(std::env::vars().filter(|(k, _)| k.starts_with("MALLOC_") || k == "GLIBC_TUNABLES"))
        .env("IDENTITY_LISTEN", addr.to_string())
        .env("IDENTITY_ADMIN_LISTEN", "off")
        .env("IDENTITY_DATABASE_URL", &db.url)
        .env("REDIS_URL", &redis.url)
        .env("CQRS_REDIS_NAMESPACE", &redis.namespace)
        .env("CQRS_TOKEN_SIGNING_KEY", signing.to_env_value())
        .env(
            "CQRS_TOKEN_VERIFY_KEYS",
            signing.verifying_key().to_env_value(),
        )
        // No directory: sign-ins answer without grants after a refused connection.
        .env("DIRECTORY_URL", "http://127.0.0.1:1")
        // The flood comes from one client on purpose: the figure is memory, not the limit.
        .env("CQRS_RATE_LIMIT_PER_CLIENT", "off")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let service = Arc::new(Service { child });
    let channel = connect(addr).await;
    wait_serving(&channel).await;
    let token = TokenIssuer::new(signing, Duration::from_secs(3600))
        .issue_service("bench", SystemClock.now())
        .unwrap()
        .token;
    let mut client = IdentityServiceClient::new(channel.clone());
    // Settle: start-up made the dummy hash, whose argon2 memory is kept until hashing has
    // been idle for a while; idle is measured once it is freed.
    assert_eq!(
        sign_in(&mut client, "ZQX000").await,
        Err(Code::Unauthenticated)
    );
    tokio::time::sleep(cqrs_identity::hashing::IDLE_RELEASE + Duration::from_secs(3)).await;
    let idle = service.rss_mib();
    let bound = idle + cores as f64 * ARGON2_BLOCK_MIB * 1.3;
    let mut rows = vec![Row {
        phase: "idle after start-up".into(),
        mib: idle,
        bound: f64::NAN,
    }];

    // Registrations, one at a time.
    let mut users = Vec::new();
    let mut after_first = 0.0;
    let mut registration_peak = 0.0f64;
    for n in 0..REGISTRATIONS {
        let account = client
            .create_account(with_token(
                pb::CreateAccountRequest {
                    request_id: uuid::Uuid::new_v4().to_string(),
                    realm: pb::Realm::National as i32,
                    email: format!("memory.bench{n}@nhs.net"),
                    first_name: "Ann".into(),
                    last_name: "Smith".into(),
                },
                &token,
            ))
            .await
            .unwrap()
            .into_inner()
            .account
            .unwrap();
        let (link,): (String,) = sqlx::query_as(
            "SELECT payload->'params'->>'token' FROM outbox WHERE payload->>'account_id' = $1 \
             AND payload->>'template' = 'EMAIL_TEMPLATE_REGISTRATION_LINK'",
        )
        .bind(&account.id)
        .fetch_one(&db.pool)
        .await
        .unwrap();
        client
            .complete_registration(pb::CompleteRegistrationRequest {
                token: link,
                new_password: PASSWORD.into(),
                ..Default::default()
            })
            .await
            .unwrap();
        users.push(account.user_id);
        let rss = service.rss_mib();
        registration_peak = registration_peak.max(rss);
        if n == 0 {
            after_first = rss;
        }
    }
    rows.push(Row {
        phase: "after the first CompleteRegistration".into(),
        mib: after_first,
        bound,
    });
    rows.push(Row {
        phase: format!("highest during {REGISTRATIONS} sequential CompleteRegistration"),
        mib: registration_peak,
        bound,
    });
    rows.push(Row {
        phase: format!("after {REGISTRATIONS} sequential CompleteRegistration"),
        mib: service.rss_mib(),
        bound,
    });
    let users = Arc::new(users);

    // Sustained sign-ins.
    let sampler = PeakSampler::start(&service);
    let succeeded = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for caller in 0..SUSTAINED_CALLERS {
        let (users, succeeded) = (users.clone(), succeeded.clone());
        let mut client = IdentityServiceClient::new(channel.clone());
        tasks.push(tokio::spawn(async move {
            let login = &users[caller % users.len()];
            while succeeded.load(Ordering::Relaxed) < SUSTAINED_SIGNINS {
                if sign_in(&mut client, login).await.is_ok() {
                    succeeded.fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    let sustained_secs = started.elapsed().as_secs_f64();
    rows.push(Row {
        phase: format!(
            "peak during {SUSTAINED_SIGNINS} sign-ins, {SUSTAINED_CALLERS} at once ({:.0}/s)",
            SUSTAINED_SIGNINS as f64 / sustained_secs
        ),
        mib: sampler.stop().await,
        bound,
    });
    tokio::time::sleep(IDLE).await;
    rows.push(Row {
        phase: format!("after those sign-ins and {} s idle", IDLE.as_secs()),
        mib: service.rss_mib(),
        bound,
    });

    // The flood: many connections, each calling as fast as it is answered. The service
    // serves so many connections at once (CQRS_MAX_CONNECTIONS); the rest wait, unanswered,
    // in its listen queue.
    let endpoint = Endpoint::from_shared(format!("http://{addr}")).unwrap();
    let channels: Vec<Channel> = (0..FLOOD_CLIENTS)
        .map(|_| endpoint.connect_lazy())
        .collect();
    let checks: Vec<_> = channels
        .iter()
        .map(|channel| {
            let mut health = tonic_health::pb::health_client::HealthClient::new(channel.clone());
            tokio::spawn(async move {
                let check = health.check(tonic_health::pb::HealthCheckRequest::default());
                matches!(
                    tokio::time::timeout(CONNECTION_WAIT, check).await,
                    Ok(Ok(_))
                )
            })
        })
        .collect();
    let mut served = 0;
    for check in checks {
        served += usize::from(check.await.unwrap());
    }
    rows.push(Row {
        phase: format!("{FLOOD_CLIENTS} connections opened ({served} served), a health check each"),
        mib: service.rss_mib(),
        bound,
    });
    let sampler = PeakSampler::start(&service);
    let answers = Arc::new(Answers::default());
    let started = Instant::now();
    let mut tasks = Vec::new();
    for (n, channel) in channels.into_iter().enumerate() {
        let (users, answers) = (users.clone(), answers.clone());
        tasks.push(tokio::spawn(async move {
            let mut client = IdentityServiceClient::new(channel);
            let login = &users[n % users.len()];
            // A connection still waiting to be served when the flood ends gives up then.
            while let Some(left) = FLOOD.checked_sub(started.elapsed()) {
                let Ok(answer) = tokio::time::timeout(left, sign_in(&mut client, login)).await
                else {
                    break;
                };
                let counter = match answer {
                    Ok(()) => &answers.ok,
                    Err(Code::ResourceExhausted) => &answers.exhausted,
                    Err(_) => &answers.other,
                };
                counter.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    let flood_secs = started.elapsed().as_secs_f64();
    let flood_peak = sampler.stop().await;
    let answered = |c: &AtomicU64| c.load(Ordering::Relaxed) as f64 / flood_secs;
    rows.push(Row {
        phase: format!(
            "peak during a {}-connection SignIn flood, {} s",
            FLOOD_CLIENTS,
            FLOOD.as_secs()
        ),
        mib: flood_peak,
        bound,
    });
    tokio::time::sleep(IDLE).await;
    rows.push(Row {
        phase: format!("after the flood and {} s idle", IDLE.as_secs()),
        mib: service.rss_mib(),
        bound,
    });
    rows.push(Row {
        phase: "highest ever (VmHWM)".into(),
        mib: service.peak_mib(),
        bound,
    });

    println!(
        "identity memory benchmark: release binary, {cores} cores, argon2id m=19456 t=2 p=1; \
         bound = idle + {cores} x {ARGON2_BLOCK_MIB} MiB x 1.3 = {bound:.1} MiB"
    );
    println!();
    println!(
        "  {:<62} {:>9} {:>9}  result",
        "resident set (MiB)", "RSS", "bound"
    );
    for row in &rows {
        if row.bound.is_nan() {
            println!("  {:<62} {:>9.1}", row.phase, row.mib);
        } else {
            println!(
                "  {:<62} {:>9.1} {:>9.1}  {}",
                row.phase,
                row.mib,
                row.bound,
                if row.mib <= row.bound { "PASS" } else { "MISS" }
            );
        }
    }
    println!();
    println!(
        "  flood answers per second: OK {:.1}, ResourceExhausted {:.1}, other {:.1}",
        answered(&answers.ok),
        answered(&answers.exhausted),
        answered(&answers.other)
    );
    println!("  threads at the end: {}", service.status_kib("Threads:"));
    let _ = std::fs::remove_file(log);
}
