//! `cqrs-soak`: a mixed workload against a suite of real processes, while its Redis, Postgres
//! and SMTP server are each stopped and started again, then a sign-in flood; prints what it
//! saw as tables and checks that nothing acknowledged was lost (`make soak`, `scripts/soak.sh`).
//!
//! Each client repeats: sign in, switch to the practice role, check permissions, switch to the
//! commissioning role, check again, and every few rounds request access and withdraw it and
//! create an account; then sign out. A step that fails ends the round (the next starts after a
//! pause). Afterwards every acknowledged account and access request must be there (withdrawn
//! where that was acknowledged), every such account must have had exactly one registration
//! mail (none lost, none twice), and every service must be SERVING.
//!
//! Environment (`scripts/soak.sh` sets it): the suite's (`IDENTITY_URL`, `DIRECTORY_URL`,
//! `ACCESS_URL`, `NOTIFICATIONS_URL`, `MAILSINK_DIR`, `CQRS_TOKEN_SIGNING_KEY`);
//! `SOAK_SECS` (600), `SOAK_CLIENTS` (16), `SOAK_USERS` (24), `SOAK_FLOOD_CLIENTS` (500),
//! `SOAK_FLOOD_SECS` (20), `SOAK_PID_DIR` (the services' pid files, for their RSS), and the
//! shell commands `SOAK_{STOP,START}_{REDIS,POSTGRES,SMTP}`.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cqrs_proto::access::v1::{self as acc, access_service_client::AccessServiceClient};
use cqrs_proto::common::v1::Role;
use cqrs_proto::directory::v1::{
    self as dir, OrganisationKind, directory_service_client::DirectoryServiceClient,
};
use cqrs_proto::identity::v1::{self as idp, identity_service_client::IdentityServiceClient};
use cqrs_testkit::loader::{Error, Loader, connect, describe, mails_to, var, with_bearer};
use tonic::transport::Channel;
use tonic::{Code, Status};
use tonic_health::pb::health_check_response::ServingStatus;

const SERVICES: [&str; 5] = [
    "identity",
    "directory",
    "access",
    "notifications",
    "gateway",
];

#[tokio::main]
async fn main() -> ExitCode {
    match run().await {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("cqrs-soak: {e}");
            ExitCode::FAILURE
        }
    }
}

fn number(name: &str, default: u64) -> Result<u64, Error> {
    match std::env::var(name) {
        Ok(raw) if !raw.is_empty() => raw
            .parse()
            .map_err(|_| format!("{name}: expected a whole number, got {raw:?}").into()),
        _ => Ok(default),
    }
}

/// Latencies and answers per RPC.
#[derive(Default)]
struct Stats {
    rpcs: Mutex<BTreeMap<&'static str, RpcStats>>,
}

#[derive(Default)]
struct RpcStats {
    micros: Vec<u32>,
    codes: BTreeMap<String, u64>,
}

impl Stats {
    fn record<T>(&self, rpc: &'static str, started: Instant, result: &Result<T, Status>) {
        let micros = u32::try_from(started.elapsed().as_micros()).unwrap_or(u32::MAX);
        let code = match result {
            Ok(_) => "OK".to_owned(),
            Err(status) => format!("{:?}", status.code()),
        };
        let mut rpcs = self.rpcs.lock().unwrap_or_else(|e| e.into_inner());
        let entry = rpcs.entry(rpc).or_default();
        entry.micros.push(micros);
        *entry.codes.entry(code).or_default() += 1;
    }
}

/// Peak RSS per service (KiB), per phase.
#[derive(Default)]
struct Peaks {
    by_phase: Mutex<HashMap<&'static str, HashMap<&'static str, u64>>>,
    phase: Mutex<&'static str>,
}

/// What the workload was told was done; checked afterwards.
#[derive(Default)]
struct Acknowledged {
    accounts: Mutex<Vec<String>>,
    /// Access request id, and whether its withdrawal was acknowledged too.
    access_requests: Mutex<Vec<(String, bool)>>,
}

#[derive(Clone)]
struct Person {
    account_id: String,
    user_id: String,
    password: String,
}

impl Person {
    fn sign_in_request(&self) -> idp::SignInRequest {
        idp::SignInRequest {
            login: self.user_id.clone(),
            password: self.password.clone(),
        }
    }
}

#[derive(Clone)]
struct Clients {
    /// The service token accounts are created with.
    service: String,
    identity: IdentityServiceClient<Channel>,
    directory: DirectoryServiceClient<Channel>,
    access: AccessServiceClient<Channel>,
}

struct Setup {
    practice: String,
    commissioning: String,
    people: Vec<Person>,
}

async fn run() -> Result<bool, Error> {
    let secs = number("SOAK_SECS", 600)?;
    let clients = number("SOAK_CLIENTS", 16)?;
    let users = number("SOAK_USERS", 24)?;
    let flood_clients = number("SOAK_FLOOD_CLIENTS", 500)?;
    let flood_secs = number("SOAK_FLOOD_SECS", 20)?;
    let loader = Arc::new(Loader::from_env("soak").await?);
    let setup = Arc::new(set_up(&loader, users).await?);
    println!(
        "cqrs-soak: {} people ready; {clients} clients for {secs} s",
        setup.people.len()
    );

    let peaks = Arc::new(Peaks::default());
    *peaks.phase.lock().unwrap_or_else(|e| e.into_inner()) = "soak";
    let sampler = tokio::spawn(sample_rss(Arc::clone(&peaks)));

    let stats = Arc::new(Stats::default());
    let acknowledged = Arc::new(Acknowledged::default());
    let started = Instant::now();
    let deadline = started + Duration::from_secs(secs);
    let chaos = tokio::spawn(chaos(started, secs));
    let clients_now = Clients {
        service: loader.token.clone(),
        identity: IdentityServiceClient::new(connect(var("IDENTITY_URL")?).await?),
        directory: DirectoryServiceClient::new(connect(var("DIRECTORY_URL")?).await?),
        access: AccessServiceClient::new(connect(var("ACCESS_URL")?).await?),
    };
    let mut workers = Vec::new();
    for client in 0..clients {
        let (c, setup, stats, acknowledged) = (
            clients_now.clone(),
            Arc::clone(&setup),
            Arc::clone(&stats),
            Arc::clone(&acknowledged),
        );
        workers.push(tokio::spawn(async move {
            let mut round = 0u64;
            while Instant::now() < deadline {
                round += 1;
                let person = &setup.people[usize::try_from((client + round) % users).unwrap_or(0)];
                let done =
                    one_round(&c, &setup, person, &stats, &acknowledged, client, round).await;
                if done.is_err() {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        }));
    }
    for worker in workers {
        worker.await?;
    }
    let outages = chaos.await??;
    let soak_elapsed = started.elapsed();
    println!("cqrs-soak: workload over; checking what was acknowledged");

    let mut ok = true;
    ok &= wait_serving().await?;
    let (missing, checked) = verify_writes(&loader, &acknowledged).await?;
    let (lost_mail, twice) = verify_mail(&loader, &acknowledged, &setup).await?;

    *peaks.phase.lock().unwrap_or_else(|e| e.into_inner()) = "flood";
    let flood_stats = Arc::new(Stats::default());
    flood(&setup, &flood_stats, flood_clients, flood_secs).await?;
    sampler.abort();

    print_rpcs("Workload", &stats, soak_elapsed);
    print_rpcs(
        &format!("Sign-in flood ({flood_clients} clients)"),
        &flood_stats,
        Duration::from_secs(flood_secs),
    );
    print_rss(&peaks);
    println!("\n| outage | stopped for |\n|---|---|");
    for (what, down) in &outages {
        println!("| {what} | {:.1} s |", down.as_secs_f64());
    }
    println!("\n| check | result |\n|---|---|");
    let mut line = |name: &str, good: bool, detail: String| {
        ok &= good;
        println!(
            "| {name} | {} {detail} |",
            if good { "ok" } else { "FAILED" }
        );
    };
    line(
        "acknowledged writes present",
        missing.is_empty(),
        format!("({checked} checked, {} missing)", missing.len()),
    );
    for what in missing.iter().take(10) {
        println!("|   missing | {what} |");
    }
    line(
        "every acknowledged account mailed",
        lost_mail.is_empty(),
        format!("({} without mail)", lost_mail.len()),
    );
    line(
        "no mail sent twice",
        twice.is_empty(),
        format!("({} duplicates)", twice.len()),
    );
    line(
        "every service SERVING",
        wait_serving().await?,
        String::new(),
    );
    Ok(ok)
}

async fn set_up(loader: &Loader, users: u64) -> Result<Setup, Error> {
    let region = loader
        .organisation(OrganisationKind::Region, "YSK", "Soak Region", None)
        .await?;
    let commissioning = loader
        .organisation(
            OrganisationKind::CommissioningOrganisation,
            "SK1",
            "Soak Commissioning",
            Some(region),
        )
        .await?;
    let practice = loader
        .organisation(
            OrganisationKind::ServiceProvider,
            "SK0001",
            "Soak Practice",
            Some(commissioning.clone()),
        )
        .await?;
    let mut people = Vec::new();
    for i in 0..users {
        let email = format!("soak.person{i}@soak.nhs.uk");
        let account = loader
            .account(&email, "Soak", &format!("Person{i}"))
            .await?;
        loader
            .grant(&account.id, &practice, Role::PracticeUser)
            .await?;
        loader
            .grant(&account.id, &commissioning, Role::CommissioningUser)
            .await?;
        let (user_id, password) = loader.register(&account, None).await?;
        if password.starts_with('(') {
            return Err(format!(
                "{email} was registered by an earlier run: start from an empty database"
            )
            .into());
        }
        people.push(Person {
            account_id: account.id,
            user_id,
            password,
        });
    }
    Ok(Setup {
        practice,
        commissioning,
        people,
    })
}

macro_rules! timed {
    ($stats:expr, $rpc:literal, $call:expr) => {{
        let started = Instant::now();
        let result = $call.await;
        $stats.record($rpc, started, &result);
        result.map(tonic::Response::into_inner)
    }};
}

async fn one_round(
    c: &Clients,
    setup: &Setup,
    person: &Person,
    stats: &Stats,
    acknowledged: &Acknowledged,
    client: u64,
    round: u64,
) -> Result<(), Status> {
    let (mut identity, mut directory, mut access) =
        (c.identity.clone(), c.directory.clone(), c.access.clone());
    let signed = timed!(
        stats,
        "identity.SignIn",
        identity.sign_in(person.sign_in_request())
    )?;
    let session = signed.access_token;
    let roles = [
        (&setup.practice, Role::PracticeUser, "VIEW_PRACTICE_USERS"),
        (&setup.commissioning, Role::CommissioningUser, "VIEW_SCOPE"),
    ];
    let mut token = session.clone();
    for (organisation, role, permission) in roles {
        let selected = timed!(
            stats,
            "identity.SelectRole",
            identity.select_role(with_bearer(
                idp::SelectRoleRequest {
                    organisation_id: organisation.clone(),
                    role: role as i32,
                },
                &session,
            ))
        )?;
        token = selected.access_token;
        for _ in 0..5 {
            timed!(
                stats,
                "directory.CheckPermission",
                directory.check_permission(with_bearer(
                    dir::CheckPermissionRequest {
                        account_id: person.account_id.clone(),
                        permission: permission.to_owned(),
                        organisation_id: organisation.clone(),
                        active_organisation_id: organisation.clone(),
                        active_role: role as i32,
                        ..Default::default()
                    },
                    &token,
                ))
            )?;
        }
    }
    if round.is_multiple_of(4) {
        let requested = timed!(
            stats,
            "access.RequestAccess",
            access.request_access(with_bearer(
                acc::RequestAccessRequest {
                    request_id: uuid::Uuid::new_v4().to_string(),
                    organisation_id: setup.practice.clone(),
                    role: Role::PracticeManager as i32,
                    reason: "Covering the practice manager's leave".to_owned(),
                },
                &token,
            ))
        )?;
        let id = requested.access_request.map(|r| r.id).unwrap_or_default();
        let index = {
            let mut list = acknowledged
                .access_requests
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            list.push((id.clone(), false));
            list.len() - 1
        };
        timed!(
            stats,
            "access.WithdrawAccessRequest",
            access.withdraw_access_request(with_bearer(
                acc::WithdrawAccessRequestRequest {
                    access_request_id: id,
                },
                &token,
            ))
        )?;
        acknowledged
            .access_requests
            .lock()
            .unwrap_or_else(|e| e.into_inner())[index]
            .1 = true;
    }
    if round % 4 == 2 {
        let email = format!("soak.new{client}.{round}@soak.nhs.uk");
        timed!(
            stats,
            "identity.CreateAccount",
            identity.create_account(with_bearer(
                idp::CreateAccountRequest {
                    request_id: uuid::Uuid::new_v4().to_string(),
                    realm: idp::Realm::National as i32,
                    email: email.clone(),
                    first_name: "New".to_owned(),
                    last_name: format!("Starter{client}"),
                },
                &c.service,
            ))
        )?;
        acknowledged
            .accounts
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(email);
    }
    timed!(
        stats,
        "identity.SignOut",
        identity.sign_out(with_bearer(idp::SignOutRequest {}, &session))
    )?;
    Ok(())
}

/// Stops and starts Redis, Postgres and the SMTP server once each, spread over the run.
async fn chaos(started: Instant, secs: u64) -> Result<Vec<(&'static str, Duration)>, Error> {
    let plan = [
        ("Redis", "REDIS", 0.2, 15),
        ("Postgres", "POSTGRES", 0.45, 15),
        ("SMTP", "SMTP", 0.7, 30),
    ];
    let mut outages = Vec::new();
    for (name, var_part, at, down_secs) in plan {
        let stop = var(&format!("SOAK_STOP_{var_part}"))?;
        let start = var(&format!("SOAK_START_{var_part}"))?;
        let when = started + Duration::from_secs_f64(secs as f64 * at);
        tokio::time::sleep_until(when.into()).await;
        println!("cqrs-soak: stopping {name}");
        let stopped = Instant::now();
        shell(&stop).await?;
        tokio::time::sleep(Duration::from_secs(down_secs)).await;
        println!("cqrs-soak: starting {name}");
        shell(&start).await?;
        outages.push((name, stopped.elapsed()));
    }
    Ok(outages)
}

async fn shell(command: &str) -> Result<(), Error> {
    let status = tokio::process::Command::new("bash")
        .arg("-c")
        .arg(command)
        .status()
        .await?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("{command:?} failed: {status}").into())
    }
}

async fn sample_rss(peaks: Arc<Peaks>) {
    let Ok(dir) = var("SOAK_PID_DIR") else {
        return;
    };
    loop {
        let phase = *peaks.phase.lock().unwrap_or_else(|e| e.into_inner());
        for service in SERVICES {
            let Some(kib) = rss_kib(&dir, service) else {
                continue;
            };
            let mut by_phase = peaks.by_phase.lock().unwrap_or_else(|e| e.into_inner());
            let peak = by_phase
                .entry(phase)
                .or_default()
                .entry(service)
                .or_default();
            *peak = (*peak).max(kib);
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

fn rss_kib(pid_dir: &str, service: &str) -> Option<u64> {
    let pid = std::fs::read_to_string(format!("{pid_dir}/{service}.pid")).ok()?;
    let status = std::fs::read_to_string(format!("/proc/{}/status", pid.trim())).ok()?;
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()
}

/// Waits (up to two minutes) for every gRPC service to answer SERVING.
async fn wait_serving() -> Result<bool, Error> {
    let deadline = Instant::now() + Duration::from_secs(120);
    for url_var in [
        "IDENTITY_URL",
        "DIRECTORY_URL",
        "ACCESS_URL",
        "NOTIFICATIONS_URL",
    ] {
        let url = var(url_var)?;
        loop {
            let serving = match connect(url.clone()).await {
                Ok(channel) => {
                    tonic_health::pb::health_client::HealthClient::new(channel)
                        .check(tonic_health::pb::HealthCheckRequest::default())
                        .await
                        .map(|r| r.into_inner().status)
                        .ok()
                        == Some(ServingStatus::Serving as i32)
                }
                Err(_) => false,
            };
            if serving {
                break;
            }
            if Instant::now() > deadline {
                println!("cqrs-soak: {url_var} is not SERVING");
                return Ok(false);
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
    Ok(true)
}

/// Every acknowledged write, read back; what is missing, and how many were checked.
async fn verify_writes(
    loader: &Loader,
    acknowledged: &Acknowledged,
) -> Result<(Vec<String>, usize), Error> {
    let accounts = acknowledged
        .accounts
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    let requests = acknowledged
        .access_requests
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    let mut missing = Vec::new();
    for email in &accounts {
        if loader.lookup(email).await?.is_none() {
            missing.push(format!("account {email}"));
        }
    }
    let mut access = AccessServiceClient::new(connect(var("ACCESS_URL")?).await?);
    for (id, withdrawn) in &requests {
        let found = access
            .get_access_request(loader.request(acc::GetAccessRequestRequest {
                access_request_id: id.clone(),
            }))
            .await;
        let state = match found {
            Ok(found) => found.into_inner().access_request.map(|r| r.state),
            Err(s) if s.code() == Code::NotFound => None,
            Err(s) => return Err(describe(&s).into()),
        };
        let want_withdrawn = acc::AccessRequestState::Withdrawn as i32;
        match state {
            None => missing.push(format!("access request {id}")),
            Some(state) if *withdrawn && state != want_withdrawn => {
                missing.push(format!("withdrawal of access request {id}"));
            }
            Some(_) => {}
        }
    }
    Ok((missing, accounts.len() + requests.len()))
}

/// Accounts whose registration mail never came (after waiting for the queue to drain), and
/// mails that came twice (the same link to the same person).
async fn verify_mail(
    loader: &Loader,
    acknowledged: &Acknowledged,
    setup: &Setup,
) -> Result<(Vec<String>, Vec<String>), Error> {
    let accounts = acknowledged
        .accounts
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    let deadline = Instant::now() + Duration::from_secs(300);
    let mut lost = accounts.clone();
    while !lost.is_empty() && Instant::now() < deadline {
        let mut still = Vec::new();
        for email in lost {
            if mails_to(&loader.mail_dir, &email)?.is_empty() {
                still.push(email);
            }
        }
        lost = still;
        if !lost.is_empty() {
            tokio::time::sleep(Duration::from_secs(2)).await;
        }
    }
    let mut twice = Vec::new();
    let people = (0..setup.people.len()).map(|i| format!("soak.person{i}@soak.nhs.uk"));
    for email in accounts.iter().cloned().chain(people) {
        let mut seen = HashSet::new();
        for mail in mails_to(&loader.mail_dir, &email)? {
            let key = mail.link_token().unwrap_or_else(|| mail.subject.clone());
            if !seen.insert(key) {
                twice.push(email.clone());
            }
        }
    }
    Ok((lost, twice))
}

/// `clients` connections signing in as fast as they are answered, for `secs`.
async fn flood(setup: &Setup, stats: &Arc<Stats>, clients: u64, secs: u64) -> Result<(), Error> {
    let url = var("IDENTITY_URL")?;
    let deadline = Instant::now() + Duration::from_secs(secs);
    let mut tasks = Vec::new();
    for client in 0..clients {
        let channel = connect(url.clone()).await?;
        let person =
            setup.people[usize::try_from(client).unwrap_or(0) % setup.people.len()].clone();
        let stats = Arc::clone(stats);
        tasks.push(tokio::spawn(async move {
            let mut identity = IdentityServiceClient::new(channel);
            // Past identity's CQRS_MAX_CONNECTIONS a connection waits in its listen queue; a
            // call still unanswered when the flood ends is given up, unrecorded.
            while let Some(left) = deadline.checked_duration_since(Instant::now()) {
                let call = async {
                    timed!(
                        stats,
                        "identity.SignIn",
                        identity.sign_in(person.sign_in_request())
                    )
                };
                let Ok(result) = tokio::time::timeout(left, call).await else {
                    break;
                };
                if let Ok(signed) = result {
                    let _ = identity
                        .sign_out(with_bearer(idp::SignOutRequest {}, &signed.access_token))
                        .await;
                }
            }
        }));
    }
    for task in tasks {
        task.await?;
    }
    Ok(())
}

fn percentile(sorted: &[u32], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    f64::from(sorted[rank.min(sorted.len() - 1)]) / 1000.0
}

fn print_rpcs(title: &str, stats: &Stats, elapsed: Duration) {
    println!("\n### {title}, {:.0} s\n", elapsed.as_secs_f64());
    println!("| RPC | calls | per second | p50 ms | p99 ms | answers |");
    println!("|---|---:|---:|---:|---:|---|");
    let rpcs = stats.rpcs.lock().unwrap_or_else(|e| e.into_inner());
    for (rpc, s) in rpcs.iter() {
        let mut sorted = s.micros.clone();
        sorted.sort_unstable();
        let codes: Vec<String> = s.codes.iter().map(|(c, n)| format!("{c} {n}")).collect();
        println!(
            "| {rpc} | {} | {:.1} | {:.1} | {:.1} | {} |",
            sorted.len(),
            sorted.len() as f64 / elapsed.as_secs_f64(),
            percentile(&sorted, 0.5),
            percentile(&sorted, 0.99),
            codes.join(", ")
        );
    }
}

fn print_rss(peaks: &Peaks) {
    let by_phase = peaks.by_phase.lock().unwrap_or_else(|e| e.into_inner());
    println!("\n| service | peak RSS, workload | peak RSS, sign-in flood |\n|---|---:|---:|");
    for service in SERVICES {
        let mib = |phase: &str| {
            by_phase
                .get(phase)
                .and_then(|p| p.get(service))
                .map_or("—".to_owned(), |kib| {
                    format!("{:.0} MiB", *kib as f64 / 1024.0)
                })
        };
        println!("| {service} | {} | {} |", mib("soak"), mib("flood"));
    }
}
