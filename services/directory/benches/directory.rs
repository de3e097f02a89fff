//! `make bench`: the directory at the size DESIGN §6 names — 100k accounts, 10k organisations,
//! 300k grants — against a bare tonic echo RPC measured in the same run on the same machine.
//!
//! The data set is loaded with a few bulk statements straight into the directory's tables,
//! shaped like the real tree: one service desk, the 7 regions, 42 commissioning organisations
//! and practices for the rest, each organisation's ancestry (`path`) built from its parent's as
//! the service builds it. Accounts live in identity; here they are the account ids grants refer
//! to. Most hold 1-5 practice grants, mostly within one commissioning organisation; some hold
//! commissioning grants at a commissioning organisation or a region; a few are the service
//! desk. Then `VACUUM (ANALYZE)`, as autovacuum would leave the tables.
//!
//! The directory runs in-process as a deployment runs it: the full server stack with the auth
//! layer (and its cache of verified tokens), the default database pool, user sessions in
//! Redis, and the in-memory permission cache (`store::cache`), whose start-up load is awaited
//! as a replica that has been up for a moment would have done it. Measured:
//!
//! * capacity: calls per second from enough closed-loop callers to saturate the machine. For
//!   CheckPermission with token verification, as a ratio of the echo rate (target ≥ 0.5); the
//!   headline is the internal path (a service token), the user path (a user asking about
//!   itself, which also checks that its session is live: from the session cache that
//!   identity's announcements keep true, `cqrs_auth::CachedSessionCheck`) is shown too. Echo and CheckPermission
//!   phases alternate, so other load on the machine weighs on both alike. A breakdown shows
//!   where CheckPermission's time goes: the server stack alone (the public health check), with
//!   token verification (a request refused before any lookup), the decision's query alone
//!   (what a check the cache cannot answer adds), and the signature check alone and cached;
//! * latency (p50/p90/p99) under moderate load, so queueing does not dominate: an open loop
//!   offering one call per millisecond, evenly paced (at most a quarter of the call's
//!   capacity) — CheckPermission (p99 < 5 ms with token verification, < 2 ms at this size),
//!   ListGrants of random accounts (p99 < 2 ms), SearchOrganisations by a 2-3 letter prefix of
//!   an existing name (p99 < 10 ms). The same from 8 closed-loop callers is printed for
//!   reference: on a 2-core machine that is already near capacity, so it mostly measures
//!   queueing.
//!
//! * how long an ended session still counts on another replica: a session is ended as
//!   identity ends one (its key deleted, then the end announced) while a
//!   second session checker, which had the session cached, is asked in a tight loop until it
//!   refuses; p50/p99 over many trials.
//!
//! Figures are printed, never asserted: timing on shared machines is too noisy for a pass/fail
//! test. Other work on the machine (a build, another benchmark) skews them; run it alone.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use cqrs_auth::RoleProto;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use cqrs_auth::{
    ActiveGrant, CachedSessionCheck, IssuerTokenSource, Permission, Role, SessionCheck,
};
use cqrs_directory::store::grants as grant_store;
use cqrs_directory::{Directory, RevocationConfig, Store};
use cqrs_proto::directory::v1::{self as pb, directory_service_client::DirectoryServiceClient};
use cqrs_proto::testing::v1::echo_service_client::EchoServiceClient;
use cqrs_runtime::clock::{Clock, SystemClock};
use cqrs_runtime::config::ServerConfig;
use cqrs_runtime::db::PoolSettings;
use cqrs_testkit::{TestDb, TestKeys, TestRedis, echo, spawn, with_token};
use sqlx::PgPool;
use tonic::transport::{Channel, Endpoint};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_client::HealthClient;
use uuid::Uuid;

const ACCOUNTS: usize = 100_000;
const ORGANISATIONS: usize = 10_000;
const REGIONS: usize = 7;
const COMMISSIONERS: usize = 42;
const PRACTICES: usize = ORGANISATIONS - 1 - REGIONS - COMMISSIONERS;
const GRANTS: usize = 300_000;
const SERVICE_DESK_ACCOUNTS: usize = 50;
/// Share of accounts working for commissioners (the rest work in practices).
const COMMISSIONING_SHARE: f64 = 0.08;
/// Rows per bulk insert of grants.
const GRANT_CHUNK: usize = 100_000;

/// Saturating load: callers spread over HTTP/2 connections, as many clients would.
const CONNECTIONS: usize = 4;
const SATURATING_CALLERS: usize = 32;
/// Alternating echo / CheckPermission phases, and how long each lasts.
const ROUNDS: usize = 3;
const PHASE: Duration = Duration::from_secs(3);
/// Closed-loop callers of the reference latency runs.
const LATENCY_CALLERS: usize = 8;
/// Open-loop latency runs offer one call per millisecond (a busy hour for a directory of this
/// size), or this share of the call's measured capacity on a machine too small for that.
const PACED_RATE: f64 = 1_000.0;
const PACED_MAX_SHARE: f64 = 0.25;
const LATENCY_PHASE: Duration = Duration::from_secs(5);
const WARM_UP: Duration = Duration::from_secs(1);
/// Users with a live session, for the user-token path.
const USER_TOKENS: usize = 2_000;

// ---------------------------------------------------------------------------------------------
// Deterministic randomness (SplitMix64): the same data set every run, no extra dependency.

#[derive(Clone)]
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Self {
        Rng(seed)
    }

    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn chance(&mut self, p: f64) -> bool {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64 <= p
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }

    fn uuid(&mut self) -> Uuid {
        let mut bytes = [0u8; 16];
        bytes[..8].copy_from_slice(&self.next().to_le_bytes());
        bytes[8..].copy_from_slice(&self.next().to_le_bytes());
        uuid::Builder::from_random_bytes(bytes).into_uuid()
    }

    /// A time within the last `days` days.
    fn past(&mut self, now: DateTime<Utc>, days: i64) -> DateTime<Utc> {
        let secs = self.below(usize::try_from(days * 86_400).unwrap()) as i64;
        now - chrono::Duration::seconds(secs)
    }
}

/// A random stream for call `n` of caller `caller`, without shared state between callers.
fn call_rng(caller: usize, n: u64) -> Rng {
    let mut rng = Rng::new(((caller as u64) << 40) ^ n ^ 0x5EED);
    rng.next();
    rng
}

// ---------------------------------------------------------------------------------------------
// The data set.

const TOWNS: &str = "\
    Abbeydale Acton Alderley Alnwick Ambleside Ashford Ashton Aylesbury Bakewell Banbury \
    Barnsley Barton Bedford Beverley Bexley Bicester Blackburn Bolton Bourne Bradford \
    Braintree Brampton Bridgwater Brixham Bromley Buckingham Burnley Buxton Camborne \
    Canterbury Carlisle Castleford Chatham Chelmsford Chesham Chester Chorley Clitheroe \
    Colchester Corby Crawley Crewe Darlington Dartford Derby Dewsbury Doncaster \
    Dorchester Dover Durham Ealing Eastleigh Ely Epsom Exeter Exmouth Falmouth Farnham \
    Frome Gainsborough Glossop Gloucester Goole Grantham Guildford Halifax Harlow \
    Harrogate Hastings Hexham Hinckley Horsham Huddersfield Hythe Ilkley Ipswich Keighley \
    Kendal Keswick Kettering Lancaster Ledbury Leek Lewes Lichfield Lincoln Louth Ludlow \
    Luton Maidstone Malton Malvern Margate Matlock Melton Morpeth Newark Newbury \
    Northallerton Norwich Oakham Oldham Ormskirk Otley Oxford Penrith Penzance Pickering \
    Preston Ramsgate Reading Redcar Richmond Ripon Rochdale Romsey Rotherham Rugby \
    Salisbury Scarborough Selby Sheffield Shrewsbury Skipton Southport Spalding Stafford \
    Stamford Stockport Stroud Sudbury Swindon Taunton Telford Thirsk Thornbury Tiverton \
    Truro Wakefield Walsall Warwick Watford Wells Whitby Wigan Windsor Witney Woking \
    Worcester Worthing Yeovil York";

const STREETS: &str = "\
    Park Road, High Street, Church Lane, Station Road, Mill Lane, Market Square, \
    Victoria Road, Albion Street, Queens Road, Bridge Street, Castle Street, Green Lane";

const SURNAMES: &str = "\
    Ahmed Baker Chandra Davies Evans Fletcher Gupta Hughes Iqbal Jones Khan Lewis Morgan \
    Nolan Okafor Patel Quinn Roberts Shah Taylor Walsh Young";

/// NHS England's regions, with their ODS codes.
const REGION_NAMES: [(&str, &str); REGIONS] = [
    ("Y56", "London"),
    ("Y58", "South West"),
    ("Y59", "South East"),
    ("Y60", "Midlands"),
    ("Y61", "East of England"),
    ("Y62", "North West"),
    ("Y63", "North East and Yorkshire"),
];

/// The word lists, split.
struct Words {
    towns: Vec<&'static str>,
    streets: Vec<&'static str>,
    surnames: Vec<&'static str>,
}

impl Words {
    fn new() -> Self {
        Words {
            towns: TOWNS.split_whitespace().collect(),
            streets: STREETS.split(", ").collect(),
            surnames: SURNAMES.split_whitespace().collect(),
        }
    }
}

fn practice_name(words: &Words, rng: &mut Rng) -> String {
    let town = rng.pick(&words.towns);
    match rng.below(10) {
        0 | 1 => format!("{town} Medical Practice"),
        2 | 3 => format!("{town} Surgery"),
        4 => format!("{town} Health Centre"),
        5 => format!("{town} Medical Centre"),
        6 => format!("{town} Family Practice"),
        7 => format!("The {town} Practice"),
        8 => format!("{} Surgery, {town}", rng.pick(&words.streets)),
        _ => format!("Dr {} and Partners, {town}", rng.pick(&words.surnames)),
    }
}

struct Org {
    id: Uuid,
    kind: &'static str,
    ods_code: String,
    name: String,
    parent: Option<Uuid>,
    multi_level_approval: bool,
    created_at: DateTime<Utc>,
}

struct Grant {
    id: Uuid,
    account_id: Uuid,
    organisation_id: Uuid,
    role: Role,
    created_at: DateTime<Utc>,
}

struct DataSet {
    desk: Vec<Org>,
    regions: Vec<Org>,
    commissioners: Vec<Org>,
    practices: Vec<Org>,
    grants: Vec<Grant>,
    accounts: Vec<Uuid>,
}

impl DataSet {
    fn organisation_ids(&self) -> Vec<Uuid> {
        [
            &self.desk,
            &self.regions,
            &self.commissioners,
            &self.practices,
        ]
        .into_iter()
        .flatten()
        .map(|o| o.id)
        .collect()
    }

    fn names(&self) -> Vec<&str> {
        [
            &self.desk,
            &self.regions,
            &self.commissioners,
            &self.practices,
        ]
        .into_iter()
        .flatten()
        .map(|o| o.name.as_str())
        .collect()
    }
}

/// A practice ODS code: a letter and five digits (A81001).
fn practice_code(i: usize) -> String {
    const LETTERS: &[u8] = b"ABCDEFGHJKLMNPY";
    let letter = LETTERS[i % LETTERS.len()] as char;
    format!("{letter}{}", 81_001 + i / LETTERS.len())
}

/// Roles at a commissioner, as they are spread among commissioning staff.
fn commissioning_role(rng: &mut Rng) -> Role {
    match rng.below(20) {
        0..=9 => Role::CommissioningUser,
        10..=13 => Role::CommissioningAccountAdministrator,
        14..=16 => Role::CommissioningApprover,
        _ => Role::CommissioningFinance,
    }
}

fn generate(now: DateTime<Utc>) -> DataSet {
    let mut rng = Rng::new(20_240_601);
    let words = Words::new();
    let org = |rng: &mut Rng, kind, ods_code: String, name: String, parent: Option<&Org>| Org {
        id: rng.uuid(),
        kind,
        ods_code,
        name,
        parent: parent.map(|p| p.id),
        multi_level_approval: kind == "SERVICE_PROVIDER" && rng.chance(0.1),
        created_at: rng.past(now, 5 * 365),
    };
    let desk = vec![org(
        &mut rng,
        "SERVICE_DESK",
        "X26".into(),
        "National Service Desk".into(),
        None,
    )];
    let regions: Vec<Org> = REGION_NAMES
        .iter()
        .map(|(code, name)| {
            org(
                &mut rng,
                "REGION",
                (*code).into(),
                format!("NHS England {name}"),
                None,
            )
        })
        .collect();
    let commissioners: Vec<Org> = (0..COMMISSIONERS)
        .map(|i| {
            let region = &regions[i % REGIONS];
            let code = format!(
                "Q{}{}",
                (b'A' + (i / 26) as u8) as char,
                (b'A' + (i % 26) as u8) as char
            );
            let town = words.towns[(i * 7) % words.towns.len()];
            let name = format!("NHS {town} Integrated Care Board");
            org(
                &mut rng,
                "COMMISSIONING_ORGANISATION",
                code,
                name,
                Some(region),
            )
        })
        .collect();
    let practices: Vec<Org> = (0..PRACTICES)
        .map(|i| {
            let parent = &commissioners[rng.below(COMMISSIONERS)];
            let name = practice_name(&words, &mut rng);
            org(
                &mut rng,
                "SERVICE_PROVIDER",
                practice_code(i),
                name,
                Some(parent),
            )
        })
        .collect();

    // Practices by commissioner, so practice staff mostly work within one area.
    let commissioner_index = |id: Uuid| commissioners.iter().position(|c| c.id == id).unwrap();
    let mut by_commissioner: Vec<Vec<usize>> = vec![Vec::new(); COMMISSIONERS];
    for (i, p) in practices.iter().enumerate() {
        by_commissioner[commissioner_index(p.parent.unwrap())].push(i);
    }
    let region_of = |c: usize| regions[c % REGIONS].id;

    let accounts: Vec<Uuid> = (0..ACCOUNTS).map(|_| rng.uuid()).collect();
    // (organisation, role) per account; kept distinct as the unique index requires.
    let mut held: Vec<Vec<(Uuid, Role)>> = vec![Vec::new(); ACCOUNTS];
    let add = |held: &mut Vec<(Uuid, Role)>, grant: (Uuid, Role)| {
        if !held.contains(&grant) {
            held.push(grant);
        }
    };
    let practice_grant = |rng: &mut Rng, home: usize| {
        let practice = if rng.chance(0.85) {
            &practices[*rng.pick(&by_commissioner[home])]
        } else {
            rng.pick(&practices)
        };
        let role = if rng.chance(0.15) {
            Role::PracticeManager
        } else {
            Role::PracticeUser
        };
        (practice.id, role)
    };
    let mut practice_staff = Vec::new();
    for (i, grants) in held.iter_mut().enumerate() {
        if i < SERVICE_DESK_ACCOUNTS {
            add(grants, (desk[0].id, Role::ServiceDesk));
            continue;
        }
        let home = rng.below(COMMISSIONERS);
        if rng.chance(COMMISSIONING_SHARE) {
            for _ in 0..1 + rng.below(3) {
                let at = if rng.chance(0.2) {
                    region_of(home)
                } else {
                    commissioners[home].id
                };
                add(grants, (at, commissioning_role(&mut rng)));
            }
            // Some commissioners also work in a practice.
            if rng.chance(0.1) {
                add(grants, practice_grant(&mut rng, home));
            }
        } else {
            let wanted = match rng.below(20) {
                0..=3 => 1,
                4..=7 => 2,
                8..=12 => 3,
                13..=16 => 4,
                _ => 5,
            };
            while grants.len() < wanted {
                add(grants, practice_grant(&mut rng, home));
            }
            practice_staff.push((i, home));
        }
    }
    // Exactly GRANTS: trim or top up random practice staff, staying within 1-5 grants.
    let mut total: usize = held.iter().map(Vec::len).sum();
    while total != GRANTS {
        let (i, home) = *rng.pick(&practice_staff);
        let grants = &mut held[i];
        if total > GRANTS && grants.len() > 1 {
            grants.pop();
            total -= 1;
        } else if total < GRANTS && grants.len() < 5 {
            let before = grants.len();
            add(grants, practice_grant(&mut rng, home));
            total += grants.len() - before;
        }
    }

    let grants = held
        .iter()
        .zip(&accounts)
        .flat_map(|(grants, account)| grants.iter().map(move |g| (*account, *g)))
        .map(|(account_id, (organisation_id, role))| Grant {
            id: rng.uuid(),
            account_id,
            organisation_id,
            role,
            created_at: rng.past(now, 3 * 365),
        })
        .collect();
    DataSet {
        desk,
        regions,
        commissioners,
        practices,
        grants,
        accounts,
    }
}

/// Inserts one level of the tree; each row's `path` is itself and then its parent's path,
/// as `store::organisations::insert` writes it.
async fn insert_orgs(pool: &PgPool, orgs: &[Org]) {
    let ids: Vec<Uuid> = orgs.iter().map(|o| o.id).collect();
    let kinds: Vec<&str> = orgs.iter().map(|o| o.kind).collect();
    let codes: Vec<&str> = orgs.iter().map(|o| o.ods_code.as_str()).collect();
    let names: Vec<&str> = orgs.iter().map(|o| o.name.as_str()).collect();
    let parents: Vec<Option<Uuid>> = orgs.iter().map(|o| o.parent).collect();
    let multi: Vec<bool> = orgs.iter().map(|o| o.multi_level_approval).collect();
    let created: Vec<DateTime<Utc>> = orgs.iter().map(|o| o.created_at).collect();
    sqlx::query(
        "INSERT INTO organisations (id, kind, ods_code, name, parent_id, path, \
             multi_level_approval, created_at, updated_at) \
         SELECT u.id, u.kind, u.ods_code, u.name, u.parent_id, \
                ARRAY[u.id] || COALESCE(p.path, '{}'), u.multi, u.created_at, u.created_at \
         FROM UNNEST($1::uuid[], $2::text[], $3::text[], $4::text[], $5::uuid[], $6::bool[], \
                     $7::timestamptz[]) \
              AS u(id, kind, ods_code, name, parent_id, multi, created_at) \
         LEFT JOIN organisations p ON p.id = u.parent_id",
    )
    .bind(&ids)
    .bind(&kinds)
    .bind(&codes)
    .bind(&names)
    .bind(&parents)
    .bind(&multi)
    .bind(&created)
    .execute(pool)
    .await
    .unwrap();
}

async fn insert_grants(pool: &PgPool, grants: &[Grant]) {
    for chunk in grants.chunks(GRANT_CHUNK) {
        let ids: Vec<Uuid> = chunk.iter().map(|g| g.id).collect();
        let accounts: Vec<Uuid> = chunk.iter().map(|g| g.account_id).collect();
        let orgs: Vec<Uuid> = chunk.iter().map(|g| g.organisation_id).collect();
        let roles: Vec<&str> = chunk.iter().map(|g| g.role.as_str()).collect();
        let created: Vec<DateTime<Utc>> = chunk.iter().map(|g| g.created_at).collect();
        sqlx::query(
            "INSERT INTO grants (id, account_id, organisation_id, role, created_at) \
             SELECT * FROM UNNEST($1::uuid[], $2::uuid[], $3::uuid[], $4::text[], \
                                  $5::timestamptz[])",
        )
        .bind(&ids)
        .bind(&accounts)
        .bind(&orgs)
        .bind(&roles)
        .bind(&created)
        .execute(pool)
        .await
        .unwrap();
    }
}

async fn load(pool: &PgPool, data: &DataSet) {
    insert_orgs(pool, &data.desk).await;
    insert_orgs(pool, &data.regions).await;
    insert_orgs(pool, &data.commissioners).await;
    insert_orgs(pool, &data.practices).await;
    insert_grants(pool, &data.grants).await;
    // A steady state: statistics, and a visibility map as autovacuum would leave it.
    for statement in ["VACUUM (ANALYZE) organisations", "VACUUM (ANALYZE) grants"] {
        sqlx::raw_sql(statement).execute(pool).await.unwrap();
    }
}

// ---------------------------------------------------------------------------------------------
// Load generation.

struct Outcome {
    calls: u64,
    elapsed: Duration,
    latencies: Vec<Duration>,
}

impl Outcome {
    fn rate(&self) -> f64 {
        self.calls as f64 / self.elapsed.as_secs_f64()
    }

    fn percentile(&mut self, p: f64) -> Duration {
        self.latencies.sort_unstable();
        let rank = ((self.latencies.len() as f64 * p).ceil() as usize).max(1);
        self.latencies[rank.min(self.latencies.len()) - 1]
    }

    fn merge(outcomes: Vec<Outcome>) -> Outcome {
        let mut all = Outcome {
            calls: 0,
            elapsed: Duration::ZERO,
            latencies: Vec::new(),
        };
        for o in outcomes {
            all.calls += o.calls;
            all.elapsed += o.elapsed;
            all.latencies.extend(o.latencies);
        }
        all
    }
}

/// Runs `call(caller, n)` from `callers` tasks for `run_for`, timing every call.
async fn drive<F, Fut>(callers: usize, run_for: Duration, call: F) -> Outcome
where
    F: Fn(usize, u64) -> Fut + Clone + Send + 'static,
    Fut: Future<Output = ()> + Send,
{
    let next = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let tasks: Vec<_> = (0..callers)
        .map(|caller| {
            let (call, next) = (call.clone(), next.clone());
            tokio::spawn(async move {
                let mut latencies = Vec::new();
                while start.elapsed() < run_for {
                    let n = next.fetch_add(1, Ordering::Relaxed);
                    let t = Instant::now();
                    call(caller, n).await;
                    latencies.push(t.elapsed());
                }
                latencies
            })
        })
        .collect();
    let mut latencies = Vec::new();
    for task in tasks {
        latencies.extend(task.await.unwrap());
    }
    Outcome {
        calls: latencies.len() as u64,
        elapsed: start.elapsed(),
        latencies,
    }
}

/// Offers `rate` calls per second for `run_for`, evenly spaced whatever the answers' pace
/// (open loop), timing each call from when it was sent.
async fn paced<F, Fut>(rate: f64, run_for: Duration, call: F) -> Outcome
where
    F: Fn(usize, u64) -> Fut + Clone + Send + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let interval = Duration::from_secs_f64(1.0 / rate);
    let total = (run_for.as_secs_f64() * rate) as u64;
    let start = Instant::now();
    let mut tasks = Vec::new();
    for n in 0..total {
        tokio::time::sleep_until((start + interval.mul_f64(n as f64)).into()).await;
        let call = call.clone();
        tasks.push(tokio::spawn(async move {
            let sent = Instant::now();
            call((n % CONNECTIONS as u64) as usize, n).await;
            sent.elapsed()
        }));
    }
    let mut latencies = Vec::with_capacity(tasks.len());
    for task in tasks {
        latencies.push(task.await.unwrap());
    }
    Outcome {
        calls: latencies.len() as u64,
        elapsed: start.elapsed(),
        latencies,
    }
}

async fn channels(addr: std::net::SocketAddr) -> Vec<Channel> {
    let mut channels = Vec::new();
    for _ in 0..CONNECTIONS {
        let channel = Endpoint::from_shared(format!("http://{addr}"))
            .unwrap()
            .connect()
            .await
            .unwrap();
        channels.push(channel);
    }
    channels
}

/// What the callers pick from.
struct Picks {
    accounts: Vec<Uuid>,
    organisations: Vec<Uuid>,
    /// (account, organisation, role) of every grant.
    grants: Vec<(Uuid, Uuid, Role)>,
    /// 2-3 letter prefixes of existing names, as often as names start with them.
    prefixes: Vec<String>,
    /// User tokens with live sessions, and the grant each acts through.
    users: Vec<(String, Uuid, Uuid, Role)>,
    service_token: String,
}

fn prefixes(names: &[&str], rng: &mut Rng) -> Vec<String> {
    (0..5_000)
        .map(|_| {
            let name = rng.pick(names).to_lowercase();
            let len = 2 + rng.below(2);
            let prefix: String = name.chars().take(len).collect();
            prefix.trim_end().to_owned()
        })
        .filter(|p| p.chars().count() >= 2)
        .collect()
}

/// A CheckPermission question of the kind other services ask: an account, about one of its
/// own organisations or any other, with or without the grant it acts through.
fn service_check(picks: &Picks, rng: &mut Rng) -> pb::CheckPermissionRequest {
    let (account, org, role) = *rng.pick(&picks.grants);
    let target = if rng.chance(0.5) {
        org
    } else {
        *rng.pick(&picks.organisations)
    };
    let active = rng.chance(0.5);
    pb::CheckPermissionRequest {
        account_id: account.to_string(),
        permission: rng.pick(&Permission::ALL).as_str().to_owned(),
        organisation_id: target.to_string(),
        active_organisation_id: if active {
            org.to_string()
        } else {
            String::new()
        },
        active_role: if active { role.to_proto() as i32 } else { 0 },
        target_account_id: String::new(),
    }
}

/// A user asking about itself, acting through its active grant.
fn user_check(picks: &Picks, rng: &mut Rng) -> (String, pb::CheckPermissionRequest) {
    let (token, account, org, role) = rng.pick(&picks.users);
    let target = if rng.chance(0.7) {
        *org
    } else {
        *rng.pick(&picks.organisations)
    };
    let request = pb::CheckPermissionRequest {
        account_id: account.to_string(),
        permission: rng.pick(&Permission::ALL).as_str().to_owned(),
        organisation_id: target.to_string(),
        active_organisation_id: org.to_string(),
        active_role: role.to_proto() as i32,
        target_account_id: String::new(),
    };
    (token.clone(), request)
}

#[derive(Clone)]
struct Callers {
    channels: Arc<Vec<Channel>>,
    pool: PgPool,
    picks: Arc<Picks>,
    allowed: Arc<AtomicU64>,
}

impl Callers {
    fn client(&self, caller: usize) -> DirectoryServiceClient<Channel> {
        DirectoryServiceClient::new(self.channels[caller % self.channels.len()].clone())
    }

    async fn check_as_service(self, caller: usize, n: u64) {
        let request = service_check(&self.picks, &mut call_rng(caller, n));
        let answer = self
            .client(caller)
            .check_permission(with_token(request, &self.picks.service_token))
            .await
            .unwrap()
            .into_inner();
        if answer.allowed {
            self.allowed.fetch_add(1, Ordering::Relaxed);
        }
    }

    async fn check_as_user(self, caller: usize, n: u64) {
        let (token, request) = user_check(&self.picks, &mut call_rng(caller, n));
        let answer = self
            .client(caller)
            .check_permission(with_token(request, &token))
            .await
            .unwrap()
            .into_inner();
        if answer.allowed {
            self.allowed.fetch_add(1, Ordering::Relaxed);
        }
    }

    async fn list_grants(self, caller: usize, n: u64) {
        let account = *call_rng(caller, n).pick(&self.picks.accounts);
        let request = pb::ListGrantsRequest {
            account_id: account.to_string(),
            page_size: 0,
            page_token: String::new(),
        };
        let answer = self
            .client(caller)
            .list_grants(with_token(request, &self.picks.service_token))
            .await
            .unwrap()
            .into_inner();
        self.allowed
            .fetch_add(answer.grants.len() as u64, Ordering::Relaxed);
    }

    /// The server stack alone: the public health check (no token, no database).
    async fn health(self, caller: usize, _n: u64) {
        let channel = self.channels[caller % self.channels.len()].clone();
        HealthClient::new(channel)
            .check(HealthCheckRequest::default())
            .await
            .unwrap();
    }

    /// Authenticated, then refused before any lookup: the server stack and token verification
    /// without the database.
    async fn refused_before_lookup(self, caller: usize, _n: u64) {
        let request = pb::CheckPermissionRequest::default();
        let status = self
            .client(caller)
            .check_permission(with_token(request, &self.picks.service_token))
            .await
            .unwrap_err();
        assert_eq!(status.code(), tonic::Code::InvalidArgument);
    }

    /// CheckPermission's query alone, on the service's pool (no gRPC, no token).
    async fn decision_query(self, caller: usize, n: u64) {
        let mut rng = call_rng(caller, n);
        let (account, _, _) = *rng.pick(&self.picks.grants);
        let target = *rng.pick(&self.picks.organisations);
        grant_store::for_decision(&self.pool, account, target)
            .await
            .unwrap()
            .unwrap();
    }

    async fn search(self, caller: usize, n: u64) {
        let prefix = call_rng(caller, n).pick(&self.picks.prefixes).clone();
        let request = pb::SearchOrganisationsRequest {
            query: prefix,
            kind: 0,
            page_size: 0,
            page_token: String::new(),
        };
        let answer = self
            .client(caller)
            .search_organisations(with_token(request, &self.picks.service_token))
            .await
            .unwrap()
            .into_inner();
        assert!(
            !answer.organisations.is_empty(),
            "a prefix of a name matches"
        );
        self.allowed
            .fetch_add(answer.organisations.len() as u64, Ordering::Relaxed);
    }

    /// Runs `method` and returns its outcome and the counter it advanced (then reset).
    async fn run<F, Fut>(&self, callers: usize, run_for: Duration, method: F) -> (Outcome, u64)
    where
        F: Fn(Callers, usize, u64) -> Fut + Clone + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send,
    {
        self.allowed.store(0, Ordering::Relaxed);
        let this = self.clone();
        let outcome = drive(callers, run_for, move |caller, n| {
            method.clone()(this.clone(), caller, n)
        })
        .await;
        (outcome, self.allowed.swap(0, Ordering::Relaxed))
    }

    /// Offers `method` at `rate` calls per second (see [`paced`]).
    async fn paced<F, Fut>(&self, rate: f64, run_for: Duration, method: F) -> (Outcome, u64)
    where
        F: Fn(Callers, usize, u64) -> Fut + Clone + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        self.allowed.store(0, Ordering::Relaxed);
        let this = self.clone();
        let outcome = paced(rate, run_for, move |caller, n| {
            method.clone()(this.clone(), caller, n)
        })
        .await;
        (outcome, self.allowed.swap(0, Ordering::Relaxed))
    }
}

async fn echo_phase(channels: &Arc<Vec<Channel>>, callers: usize, run_for: Duration) -> Outcome {
    let channels = channels.clone();
    drive(callers, run_for, move |caller, n| {
        let mut client = EchoServiceClient::new(channels[caller % channels.len()].clone());
        async move {
            client
                .echo(echo::EchoRequest {
                    message: format!("ping-{n}"),
                })
                .await
                .unwrap();
        }
    })
    .await
}

// ---------------------------------------------------------------------------------------------

const END_TRIALS: usize = 200;

/// Ends sessions as identity does (DEL in a MULTI/EXEC, then the announcement) while another replica's
/// checker, which has each cached, is asked until it refuses: the p50 and p99 of that time.
async fn end_to_refusal(redis: &cqrs_testkit::TestRedis) -> (Duration, Duration) {
    let other = CachedSessionCheck::new(redis.conn.clone(), redis.namespace.clone());
    let mut conn = redis.conn.clone();
    let mut took = Vec::with_capacity(END_TRIALS);
    while took.len() < END_TRIALS {
        let account = Uuid::new_v4();
        let sid = Uuid::new_v4().simple().to_string();
        let key = cqrs_auth::session_key(&redis.namespace, account, &sid);
        let _: () = redis::AsyncCommands::set_ex(&mut conn, &key, "1", 60)
            .await
            .unwrap();
        assert!(other.is_live(account, &sid).await.unwrap());
        // Cached only once the checker trusts its channel; such a trial is not counted.
        let _: () = redis::AsyncCommands::del(&mut conn, &key).await.unwrap();
        if !other.is_live(account, &sid).await.unwrap() {
            tokio::time::sleep(Duration::from_millis(20)).await;
            continue;
        }
        let _: () = redis::AsyncCommands::set_ex(&mut conn, &key, "1", 60)
            .await
            .unwrap();
        let mut end = redis::pipe();
        end.del(&key);
        let started = Instant::now();
        let _: redis::Value = conn.exec_replicated(&end).await.unwrap();
        cqrs_auth::announce_ended(&mut conn, &redis.namespace, std::slice::from_ref(&key))
            .await
            .unwrap();
        while other.is_live(account, &sid).await.unwrap() {
            tokio::task::yield_now().await;
        }
        took.push(started.elapsed());
    }
    took.sort_unstable();
    (took[END_TRIALS / 2], took[END_TRIALS * 99 / 100])
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1000.0)
}

fn verdict(ok: bool) -> &'static str {
    if ok { "PASS" } else { "MISS" }
}

#[tokio::main]
async fn main() {
    let now = SystemClock.now();
    let started = Instant::now();
    let data = generate(now);
    let db = TestDb::new(&cqrs_directory::MIGRATOR).await;
    load(&db.pool, &data).await;
    let load_time = started.elapsed();
    let (orgs, grants): (i64, i64) = sqlx::query_as(
        "SELECT (SELECT count(*) FROM organisations), (SELECT count(*) FROM grants)",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    let (accounts,): (i64,) = sqlx::query_as("SELECT count(DISTINCT account_id) FROM grants")
        .fetch_one(&db.pool)
        .await
        .unwrap();

    // The directory as `cqrs_directory::run` builds it, with the default pool.
    let pool = cqrs_runtime::db::connect_with(&db.config(), PoolSettings::default())
        .await
        .unwrap();
    let redis = TestRedis::new().await;
    let keys = TestKeys::generate();
    let identity =
        cqrs_directory::identity_channel("http://127.0.0.1:1", Duration::from_secs(2)).unwrap();
    let cache_started = Instant::now();
    let directory = Directory::new(
        Store::new(pool.clone()),
        identity,
        Arc::new(IssuerTokenSource::new(
            Arc::new(keys.issuer.clone()),
            "directory",
            Arc::new(SystemClock),
        )),
        RevocationConfig::default(),
        Arc::new(SystemClock),
    );
    let sessions = Arc::new(CachedSessionCheck::new(
        redis.conn.clone(),
        redis.namespace.clone(),
    ));
    let server = spawn(directory.server(
        ServerConfig::for_tests("directory", keys.verifier.clone()),
        sessions,
    ))
    .await;

    let mut rng = Rng::new(7);
    let grant_triples: Vec<(Uuid, Uuid, Role)> = data
        .grants
        .iter()
        .map(|g| (g.account_id, g.organisation_id, g.role))
        .collect();
    let mut users = Vec::with_capacity(USER_TOKENS);
    for _ in 0..USER_TOKENS {
        let (account, org, role) = *rng.pick(&grant_triples);
        let active = ActiveGrant {
            organisation_id: org,
            role,
        };
        let token = keys.user_token(&redis, account, Some(active)).await;
        users.push((token, account, org, role));
    }
    let picks = Picks {
        accounts: data.accounts.clone(),
        organisations: data.organisation_ids(),
        grants: grant_triples,
        prefixes: prefixes(&data.names(), &mut rng),
        users,
        service_token: keys.service_token("access"),
    };
    let directory_callers = Callers {
        channels: Arc::new(channels(server.addr).await),
        pool,
        picks: Arc::new(picks),
        allowed: Arc::new(AtomicU64::new(0)),
    };
    let echo_server = echo::spawn().await;
    let echo_channels = Arc::new(channels(echo_server.addr).await);

    // A replica that has been up for a moment: its permission cache has loaded the grants
    // (measured from the directory's creation).
    let cache = directory.api.cache();
    while !cache.is_warm()
        && cache_started.elapsed() < Duration::from_secs(120)
        && (cache.is_listening() || cache_started.elapsed() < Duration::from_secs(10))
    {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let cache_load = cache.is_warm().then(|| cache_started.elapsed());
    let cached_accounts = cache.cached_accounts();

    // Warm-up: connections opened, statements prepared on every pooled connection.
    echo_phase(&echo_channels, SATURATING_CALLERS, WARM_UP).await;
    directory_callers
        .run(SATURATING_CALLERS, WARM_UP, Callers::check_as_service)
        .await;
    directory_callers
        .run(SATURATING_CALLERS, WARM_UP, Callers::check_as_user)
        .await;
    directory_callers
        .run(LATENCY_CALLERS, WARM_UP, Callers::list_grants)
        .await;
    directory_callers
        .run(LATENCY_CALLERS, WARM_UP, Callers::search)
        .await;

    // Saturating rates of CheckPermission, alternating with the baseline.
    let (mut echo_runs, mut service_runs, mut user_runs) = (Vec::new(), Vec::new(), Vec::new());
    let (mut service_allowed, mut user_allowed) = (0, 0);
    for _ in 0..ROUNDS {
        echo_runs.push(echo_phase(&echo_channels, SATURATING_CALLERS, PHASE).await);
        let (o, a) = directory_callers
            .run(SATURATING_CALLERS, PHASE, Callers::check_as_service)
            .await;
        service_runs.push(o);
        service_allowed += a;
        let (o, a) = directory_callers
            .run(SATURATING_CALLERS, PHASE, Callers::check_as_user)
            .await;
        user_runs.push(o);
        user_allowed += a;
    }
    let mut echo_sat = Outcome::merge(echo_runs);
    let mut service_sat = Outcome::merge(service_runs);
    let mut user_sat = Outcome::merge(user_runs);
    // The other reads' capacity, which their latency runs are paced from.
    let (mut list_sat, _) = directory_callers
        .run(SATURATING_CALLERS, PHASE, Callers::list_grants)
        .await;
    let (mut search_sat, _) = directory_callers
        .run(SATURATING_CALLERS, PHASE, Callers::search)
        .await;

    // Where CheckPermission's time goes: the server stack alone, with token verification, the
    // database without the stack, and token verification alone on one thread.
    let (stack_only, _) = directory_callers
        .run(SATURATING_CALLERS, PHASE, Callers::health)
        .await;
    let (no_db, _) = directory_callers
        .run(SATURATING_CALLERS, PHASE, Callers::refused_before_lookup)
        .await;
    let (query_only, _) = directory_callers
        .run(SATURATING_CALLERS, PHASE, Callers::decision_query)
        .await;
    // The signature check itself, and a token the verifier has seen before (its cache).
    let verify_rate_of = |verify: &dyn Fn(&str)| {
        let token = &directory_callers.picks.service_token;
        let start = Instant::now();
        let mut n = 0u64;
        while start.elapsed() < Duration::from_secs(1) {
            verify(token);
            n += 1;
        }
        n as f64 / start.elapsed().as_secs_f64()
    };
    let verify_rate = verify_rate_of(&|token| {
        keys.verifier
            .verify_uncached(token, SystemClock.now())
            .unwrap();
    });
    let cached_verify_rate = verify_rate_of(&|token| {
        keys.verifier.verify(token, SystemClock.now()).unwrap();
    });

    // Latency under moderate load: an open loop well below each call's capacity.
    let at = |o: &Outcome| PACED_RATE.min(o.rate() * PACED_MAX_SHARE);
    let (mut check_paced, _) = directory_callers
        .paced(at(&service_sat), LATENCY_PHASE, Callers::check_as_service)
        .await;
    let (mut user_paced, _) = directory_callers
        .paced(at(&user_sat), LATENCY_PHASE, Callers::check_as_user)
        .await;
    let (mut list_paced, listed) = directory_callers
        .paced(at(&list_sat), LATENCY_PHASE, Callers::list_grants)
        .await;
    let (mut search_paced, found) = directory_callers
        .paced(at(&search_sat), LATENCY_PHASE, Callers::search)
        .await;

    // And from a fixed number of closed-loop callers, for reference.
    let mut echo_closed = echo_phase(&echo_channels, LATENCY_CALLERS, LATENCY_PHASE).await;
    let (mut check_closed, _) = directory_callers
        .run(LATENCY_CALLERS, LATENCY_PHASE, Callers::check_as_service)
        .await;
    let (mut user_closed, _) = directory_callers
        .run(LATENCY_CALLERS, LATENCY_PHASE, Callers::check_as_user)
        .await;
    let (mut list_closed, _) = directory_callers
        .run(LATENCY_CALLERS, LATENCY_PHASE, Callers::list_grants)
        .await;
    let (mut search_closed, _) = directory_callers
        .run(LATENCY_CALLERS, LATENCY_PHASE, Callers::search)
        .await;

    let (end_p50, end_p99) = end_to_refusal(&redis).await;

    let echo_rate = echo_sat.rate();
    let service_ratio = service_sat.rate() / echo_rate;
    let user_ratio = user_sat.rate() / echo_rate;

    println!();
    println!(
        "directory benchmark: {accounts} accounts, {orgs} organisations (1 service desk, \
         {REGIONS} regions, {COMMISSIONERS} commissioning, {PRACTICES} practices), {grants} \
         grants; generated and loaded in {:.1} s",
        load_time.as_secs_f64()
    );
    match cache_load {
        Some(took) => println!(
            "  permission cache: {cached_accounts} accounts' grants loaded within {:.1} s of start-up",
            took.as_secs_f64()
        ),
        None => println!("  permission cache: not loaded (checks read Postgres)"),
    }
    println!(
        "  ListGrants answers {:.2} grants on average; SearchOrganisations {:.1} organisations \
         (page of 20); CheckPermission allowed {:.0}% (service) / {:.0}% (user)",
        listed as f64 / list_paced.calls as f64,
        found as f64 / search_paced.calls as f64,
        100.0 * service_allowed as f64 / service_sat.calls as f64,
        100.0 * user_allowed as f64 / user_sat.calls as f64,
    );

    println!();
    println!(
        "capacity: {SATURATING_CALLERS} closed-loop callers over {CONNECTIONS} connections; \
         echo and CheckPermission alternate, {ROUNDS} rounds x {}s",
        PHASE.as_secs()
    );
    println!(
        "  {:<46} {:>10} {:>8} {:>10} {:>10}",
        "", "calls/s", "x echo", "p50", "p99"
    );
    let sat_row = |name: &str, o: &mut Outcome| {
        println!(
            "  {:<46} {:>10.0} {:>8.3} {:>10} {:>10}",
            name,
            o.rate(),
            o.rate() / echo_rate,
            ms(o.percentile(0.5)),
            ms(o.percentile(0.99)),
        );
    };
    sat_row("bare tonic echo RPC (baseline)", &mut echo_sat);
    sat_row("token + CheckPermission (service token)", &mut service_sat);
    sat_row("token + session + CheckPermission (user)", &mut user_sat);
    sat_row("ListGrants (service token)", &mut list_sat);
    sat_row("SearchOrganisations (service token)", &mut search_sat);
    println!("  where CheckPermission's time goes:");
    println!(
        "  {:<46} {:>10.0} {:>8.3}",
        "  server stack alone (public health check)",
        stack_only.rate(),
        stack_only.rate() / echo_rate
    );
    println!(
        "  {:<46} {:>10.0} {:>8.3}",
        "  + token verification, refused before lookup",
        no_db.rate(),
        no_db.rate() / echo_rate
    );
    println!(
        "  {:<46} {:>10.0} {:>8.3}",
        "  its query alone, through the service's pool",
        query_only.rate(),
        query_only.rate() / echo_rate
    );
    println!(
        "  {:<46} {:>10.0}          (one thread)",
        "  token verification alone", verify_rate
    );
    println!(
        "  {:<46} {:>10.0}          (one thread)",
        "  the same token again (verifier's cache)", cached_verify_rate
    );

    let lat_header = |title: String| {
        println!();
        println!("{title}");
        println!(
            "  {:<46} {:>10} {:>10} {:>10} {:>10}",
            "", "calls/s", "p50", "p90", "p99"
        );
    };
    let lat_row = |name: &str, o: &mut Outcome| {
        println!(
            "  {:<46} {:>10.0} {:>10} {:>10} {:>10}",
            name,
            o.rate(),
            ms(o.percentile(0.5)),
            ms(o.percentile(0.9)),
            ms(o.percentile(0.99)),
        );
    };
    lat_header(format!(
        "latency under moderate load: open loop, evenly paced at {PACED_RATE:.0} calls/s (at \
         most {:.0}% of capacity), {}s each",
        PACED_MAX_SHARE * 100.0,
        LATENCY_PHASE.as_secs()
    ));
    lat_row("token + CheckPermission (service token)", &mut check_paced);
    lat_row("token + session + CheckPermission (user)", &mut user_paced);
    lat_row("ListGrants (random accounts)", &mut list_paced);
    lat_row("SearchOrganisations (2-3 letter prefix)", &mut search_paced);
    lat_header(format!(
        "latency from {LATENCY_CALLERS} closed-loop callers (for reference; on a small machine \
         this is near capacity), {}s each",
        LATENCY_PHASE.as_secs()
    ));
    lat_row("bare tonic echo RPC", &mut echo_closed);
    lat_row("token + CheckPermission (service token)", &mut check_closed);
    lat_row("token + session + CheckPermission (user)", &mut user_closed);
    lat_row("ListGrants (random accounts)", &mut list_closed);
    lat_row(
        "SearchOrganisations (2-3 letter prefix)",
        &mut search_closed,
    );

    let check_p99 = check_paced.percentile(0.99);
    let user_p99 = user_paced.percentile(0.99);
    let list_p99 = list_paced.percentile(0.99);
    let search_p99 = search_paced.percentile(0.99);
    let under = |d: Duration, limit_ms: u64| d < Duration::from_millis(limit_ms);
    let rows = [
        (
            "token + CheckPermission rate (service token)",
            format!("{service_ratio:.3} x echo"),
            ">= 0.50 x echo",
            service_ratio >= 0.5,
        ),
        (
            "  the same with a user token (+ session)",
            format!("{user_ratio:.3} x echo"),
            ">= 0.50 x echo",
            user_ratio >= 0.5,
        ),
        (
            "token + CheckPermission p99 (service token)",
            ms(check_p99),
            "< 5 ms",
            under(check_p99, 5),
        ),
        (
            "  the same with a user token (+ session)",
            ms(user_p99),
            "< 5 ms",
            under(user_p99, 5),
        ),
        (
            "CheckPermission p99 at this size",
            ms(check_p99),
            "< 2 ms",
            under(check_p99, 2),
        ),
        ("ListGrants p99", ms(list_p99), "< 2 ms", under(list_p99, 2)),
        (
            "SearchOrganisations by prefix p99",
            ms(search_p99),
            "< 10 ms",
            under(search_p99, 10),
        ),
    ];
    println!();
    println!(
        "  an ended session, until another replica refuses it ({END_TRIALS} trials): p50 {}, p99 {}",
        ms(end_p50),
        ms(end_p99)
    );
    println!();
    println!(
        "  {:<46} {:>14}   {:<16} result",
        "figure (DESIGN 6)", "measured", "target"
    );
    for (figure, measured, target, ok) in rows {
        println!(
            "  {figure:<46} {measured:>14}   {target:<16} {}",
            verdict(ok)
        );
    }
    println!();
    drop(server);
}
