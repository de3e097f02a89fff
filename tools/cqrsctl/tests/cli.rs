//! The real binary against the real suite (`cqrs_suite::Suite`: all four services
//! in-process over real Postgres, Redis and an SMTP sink), signed in as the bootstrapped
//! service desk. Needs `TEST_DATABASE_URL` / `TEST_REDIS_URL` services, as every suite test.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::Write;
use std::process::{Command, Stdio};

use cqrs_suite::{Service, Suite};

const DESK_EMAIL: &str = Suite::DESK_EMAIL;
const DESK_PASSWORD: &str = Suite::DESK_PASSWORD;

#[derive(Debug)]
struct Out {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Out {
    fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("stdout is not JSON ({e}): {self:?}"))
    }
}

struct Cli {
    home: tempfile::TempDir,
    urls: [(&'static str, String); 4],
}

impl Cli {
    fn new(suite: &Suite) -> Self {
        Cli {
            home: tempfile::tempdir().unwrap(),
            urls: [
                ("CQRSCTL_IDENTITY_URL", suite.url(Service::Identity)),
                ("CQRSCTL_DIRECTORY_URL", suite.url(Service::Directory)),
                ("CQRSCTL_ACCESS_URL", suite.url(Service::Access)),
                (
                    "CQRSCTL_NOTIFICATIONS_URL",
                    suite.url(Service::Notifications),
                ),
            ],
        }
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_cqrsctl"));
        cmd.args(args)
            .env_remove("CQRSCTL_PROFILE")
            .env("HOME", self.home.path())
            .env("XDG_CONFIG_HOME", self.home.path())
            .env("CQRSCTL_TIMEOUT", "20s")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (name, url) in &self.urls {
            cmd.env(name, url);
        }
        cmd
    }

    /// Runs the binary on a blocking thread so the in-process services keep running.
    async fn run(&self, args: &[&str], stdin: Option<&str>) -> Out {
        let mut cmd = self.command(args);
        let stdin = stdin.map(str::to_owned);
        tokio::task::spawn_blocking(move || {
            let mut child = cmd.spawn().unwrap();
            {
                let mut input = child.stdin.take().unwrap();
                if let Some(text) = stdin {
                    input.write_all(text.as_bytes()).unwrap();
                }
            }
            let out = child.wait_with_output().unwrap();
            Out {
                code: out.status.code().unwrap_or(-1),
                stdout: String::from_utf8(out.stdout).unwrap(),
                stderr: String::from_utf8(out.stderr).unwrap(),
            }
        })
        .await
        .unwrap()
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn service_desk_journey() {
    let suite = Suite::start_registered().await;
    let cli = Cli::new(&suite);
    let user_id = suite.desk_user_id().to_owned();

    // A wrong password: exit 3, nothing cached.
    let out = cli
        .run(
            &["login", "--user-id", &user_id, "--password-stdin"],
            Some("Wrong-passw0rd\n"),
        )
        .await;
    assert_eq!(out.code, 3, "{out:?}");
    assert!(out.stderr.starts_with("error: UNAUTHENTICATED"), "{out:?}");
    assert!(!cli.home.path().join("cqrsctl/default.json").exists());

    // The desk has one grant: it is selected without options.
    let out = cli
        .run(
            &[
                "login",
                "--user-id",
                &user_id,
                "--password-stdin",
                "--output",
                "json",
            ],
            Some(&format!("{DESK_PASSWORD}\n")),
        )
        .await;
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(out.json()["active_role"], "SERVICE_DESK");
    let cache = std::fs::read_to_string(cli.home.path().join("cqrsctl/default.json")).unwrap();
    assert!(!cache.contains(DESK_PASSWORD));

    let out = cli.run(&["whoami", "--output", "json"], None).await;
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(out.json()["email"], DESK_EMAIL);

    // Organisations.
    let out = cli
        .run(
            &[
                "org", "create", "--kind", "region", "--ods", "Y56", "--name", "London",
                "--output", "json",
            ],
            None,
        )
        .await;
    assert_eq!(out.code, 0, "{out:?}");
    let region_id = out.json()["id"].as_str().unwrap().to_owned();
    let out = cli
        .run(&["org", "search", "Lond", "--output", "json"], None)
        .await;
    assert_eq!(out.code, 0, "{out:?}");
    assert!(
        out.json()
            .as_array()
            .unwrap()
            .iter()
            .any(|o| o["id"] == region_id.as_str())
    );
    let out = cli
        .run(&["org", "get", "Y56", "--output", "json"], None)
        .await;
    assert_eq!(out.json()["name"], "London");

    // Errors: code, reason and exit code.
    let out = cli
        .run(
            &[
                "org",
                "create",
                "--kind",
                "service-provider",
                "--ods",
                "A81009",
                "--name",
                "Wrong Parent",
                "--parent",
                "Y56",
            ],
            None,
        )
        .await;
    assert_eq!(out.code, 6, "{out:?}");
    assert!(
        out.stderr
            .starts_with("error: FAILED_PRECONDITION (reason PARENT_KIND_MISMATCH)"),
        "{out:?}"
    );
    let out = cli
        .run(
            &[
                "org", "create", "--kind", "region", "--ods", "Y56", "--name", "London",
            ],
            None,
        )
        .await;
    assert_eq!(out.code, 7, "{out:?}");
    assert!(out.stderr.contains("(reason ODS_CODE_TAKEN)"), "{out:?}");
    let out = cli
        .run(
            &[
                "org", "create", "--kind", "region", "--ods", "1", "--name", "", "--output", "json",
            ],
            None,
        )
        .await;
    assert_eq!(out.code, 6, "{out:?}");
    let err: serde_json::Value = serde_json::from_str(out.stderr.lines().last().unwrap()).unwrap();
    let fields: Vec<&str> = err["error"]["violations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["field"].as_str().unwrap())
        .collect();
    assert!(
        fields.contains(&"ods_code") && fields.contains(&"name"),
        "{err}"
    );

    // Bulk import, then a re-run that creates nothing.
    let csv = cli.home.path().join("orgs.csv");
    std::fs::write(
        &csv,
        "ods_code,name,kind,parent_ods\n\
         Y56,London,region,\n\
         15N,North Central London,commissioning-organisation,Y56\n\
         A81001,The Surgery,service-provider,15N\n\
         A81002,Second Surgery,service-provider,15N\n",
    )
    .unwrap();
    let csv = csv.to_str().unwrap();
    let out = cli
        .run(
            &["org", "import", csv, "--no-progress", "--output", "json"],
            None,
        )
        .await;
    assert_eq!(out.code, 0, "{out:?}");
    let s = out.json();
    assert_eq!(
        (
            s["created"].as_u64(),
            s["existing"].as_u64(),
            s["failed"].as_u64()
        ),
        (Some(3), Some(1), Some(0))
    );
    let out = cli
        .run(&["org", "import", csv, "--no-progress"], None)
        .await;
    assert_eq!(out.code, 0, "{out:?}");
    assert!(
        out.stdout.ends_with("0 created, 4 existing, 0 failed\n"),
        "{out:?}"
    );
    let out = cli
        .run(
            &["org", "list", "--parent", "15N", "--output", "json"],
            None,
        )
        .await;
    assert_eq!(out.json().as_array().unwrap().len(), 2, "{out:?}");

    // Accounts.
    let out = cli
        .run(
            &[
                "account",
                "lookup",
                "--user-id",
                &user_id,
                "--output",
                "json",
            ],
            None,
        )
        .await;
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(out.json()["email"], DESK_EMAIL);
    let out = cli
        .run(
            &["account", "lookup", "--email", "nobody.here@nhs.net"],
            None,
        )
        .await;
    assert_eq!(out.code, 5, "{out:?}");
    let out = cli
        .run(&["grants", "list", &user_id, "--output", "json"], None)
        .await;
    assert_eq!(out.json()[0]["role"], "SERVICE_DESK");

    // The directory's audit trail has the creates, newest first.
    let out = cli
        .run(
            &[
                "audit",
                "tail",
                "--service",
                "directory",
                "--output",
                "json",
            ],
            None,
        )
        .await;
    assert_eq!(out.code, 0, "{out:?}");
    assert!(
        out.json()
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["action"] == "CREATE_ORGANISATION")
    );

    // --follow prints a new event as one JSON line.
    let mut follow = cli
        .command(&[
            "audit",
            "tail",
            "--service",
            "directory",
            "--follow",
            "--limit",
            "1",
            "--output",
            "json",
        ])
        .spawn()
        .unwrap();
    let stdout = follow.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel::<serde_json::Value>();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(serde_json::from_str(&line).unwrap()).is_err() {
                break;
            }
        }
    });
    // The newest existing event comes first.
    let wait = std::time::Duration::from_secs(20);
    let first = tokio::task::block_in_place(|| rx.recv_timeout(wait)).unwrap();
    assert_eq!(first["service"], "directory");
    let out = cli
        .run(
            &[
                "org", "create", "--kind", "region", "--ods", "Y58", "--name", "Followed",
                "--output", "json",
            ],
            None,
        )
        .await;
    assert_eq!(out.code, 0, "{out:?}");
    let created_id = out.json()["id"].as_str().unwrap().to_owned();
    let seen = tokio::task::block_in_place(|| {
        let deadline = std::time::Instant::now() + wait;
        while let Some(left) = deadline.checked_duration_since(std::time::Instant::now()) {
            match rx.recv_timeout(left) {
                Ok(event) if event["target_id"] == created_id.as_str() => return Some(event),
                Ok(_) => continue,
                Err(_) => return None,
            }
        }
        None
    });
    follow.kill().unwrap();
    let _ = follow.wait();
    let event = seen.expect("the followed create never showed up");
    assert_eq!(event["action"], "CREATE_ORGANISATION");

    // Sign out: the session is gone.
    assert_eq!(cli.run(&["logout"], None).await.code, 0);
    assert_eq!(cli.run(&["whoami"], None).await.code, 3);
}

/// Role selection, the session cache and session endings, with the desk holding two grants.
#[tokio::test(flavor = "multi_thread")]
async fn roles_cache_and_session_endings() {
    use cqrs_proto::directory::v1 as dir;
    use cqrs_proto::identity::v1 as id;
    use cqrs_suite::with_token;

    let suite = Suite::start_registered().await;
    let cli = Cli::new(&suite);
    let user_id = suite.desk_user_id().to_owned();
    let desk_id = suite.desk_account_id().to_owned();
    let service = suite.service_token().await;
    let region = suite
        .create_organisation(
            &service,
            dir::OrganisationKind::Region,
            "Y56",
            "North of England",
            None,
        )
        .await
        .unwrap();
    suite
        .directory()
        .grant_role(with_token(
            dir::GrantRoleRequest {
                request_id: "0190a1b2-c3d4-7e5f-8a9b-00000000c0de".into(),
                account_id: desk_id.clone(),
                organisation_id: region.id.clone(),
                role: cqrs_proto::common::v1::Role::CommissioningUser as i32,
            },
            &service,
        ))
        .await
        .unwrap();
    let login = |extra: &'static [&'static str]| {
        let mut args = vec!["login", "--user-id", user_id.as_str(), "--password-stdin"];
        args.extend_from_slice(extra);
        args.into_iter().map(str::to_owned).collect::<Vec<_>>()
    };
    let password = format!("{DESK_PASSWORD}\n");
    let run_login = |extra: &'static [&'static str]| {
        let args = login(extra);
        let password = password.clone();
        let cli = &cli;
        async move {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            cli.run(&args, Some(&password)).await
        }
    };

    // Two grants: signed in without a role.
    let out = run_login(&[]).await;
    assert_eq!(out.code, 0, "{out:?}");
    assert!(
        out.stderr.contains("signed in with no active role"),
        "{out:?}"
    );
    // The cache: private, with tokens, without the password.
    let cache = cli.home.path().join("cqrsctl/default.json");
    let text = std::fs::read_to_string(&cache).unwrap();
    assert!(!text.contains(DESK_PASSWORD));
    assert!(!text.to_lowercase().contains("password"));
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&cache).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    // use-role lists the grants, then switches.
    let out = cli.run(&["use-role"], None).await;
    assert_eq!(out.code, 0, "{out:?}");
    assert!(
        out.stdout.contains("SERVICE_DESK") && out.stdout.contains("COMMISSIONING_USER"),
        "{out:?}"
    );
    let out = cli.run(&["use-role", "--role", "service-desk"], None).await;
    assert_eq!(out.code, 0, "{out:?}");
    let me = cli.run(&["whoami", "--output", "json"], None).await.json();
    assert_eq!(me["active_role"], "SERVICE_DESK");
    assert_eq!(me["active_ods_code"], "X26");
    assert_eq!(me["user_id"], user_id.as_str());

    // A mistyped password keeps the current session.
    let out = cli
        .run(
            &["login", "--user-id", &user_id, "--password-stdin"],
            Some("typo\n"),
        )
        .await;
    assert_eq!(out.code, 3, "{out:?}");
    assert_eq!(cli.run(&["whoami"], None).await.code, 0);

    // A named grant that does not exist: exit 5, signed in without a role.
    let out = run_login(&["--role", "practice-user"]).await;
    assert_eq!(out.code, 5, "{out:?}");
    assert!(
        out.stderr.contains("no grant of the account fits"),
        "{out:?}"
    );
    let out = run_login(&["--role", "COMMISSIONING_USER", "--organisation", "y56"]).await;
    assert_eq!(out.code, 0, "{out:?}");
    let me = cli.run(&["whoami", "--output", "json"], None).await.json();
    assert_eq!(me["active_role"], "COMMISSIONING_USER");
    assert_eq!(me["active_organisation_id"], region.id.as_str());

    // Sessions ended elsewhere (e.g. the account was disabled) need a new login.
    suite
        .identity()
        .end_sessions(with_token(
            id::EndSessionsRequest {
                account_id: desk_id,
                reason: "TEST".into(),
                ..Default::default()
            },
            &service,
        ))
        .await
        .unwrap();
    let out = cli.run(&["whoami"], None).await;
    assert_eq!(out.code, 3, "{out:?}");
    // Logging out of an ended session, and twice, is fine.
    assert_eq!(cli.run(&["logout"], None).await.code, 0);
    assert_eq!(cli.run(&["logout"], None).await.code, 0);
    assert!(!cache.exists());
}

/// An account with an authenticator app signs in with `--code` (its code or a recovery
/// code); without it, the CLI says what is missing and caches nothing.
#[tokio::test(flavor = "multi_thread")]
async fn login_with_a_second_factor() {
    use cqrs_proto::identity::v1 as id_pb;

    let mut suite = Suite::builder()
        .env(
            Service::Identity,
            &[("CQRS_SECOND_FACTOR_ROLES", "SERVICE_DESK")],
        )
        .start()
        .await;
    suite.register_desk().await;
    let user_id = suite.desk_user_id().to_owned();
    let signed = suite.sign_in(&user_id, DESK_PASSWORD).await.unwrap();
    let secret = suite
        .identity()
        .start_totp_enrolment(cqrs_suite::with_token(
            id_pb::StartTotpEnrolmentRequest {},
            &signed.access_token,
        ))
        .await
        .unwrap()
        .into_inner()
        .secret;
    let recovery = suite
        .identity()
        .confirm_totp_enrolment(cqrs_suite::with_token(
            id_pb::ConfirmTotpEnrolmentRequest {
                code: suite.totp_code(&secret),
            },
            &signed.access_token,
        ))
        .await
        .unwrap()
        .into_inner()
        .recovery_codes;

    let cli = Cli::new(&suite);
    let login = ["login", "--user-id", user_id.as_str(), "--password-stdin"];
    let password = format!("{DESK_PASSWORD}\n");
    let out = cli.run(&login, Some(&password)).await;
    assert_eq!(out.code, 2, "{out:?}");
    assert!(out.stderr.contains("--code"), "{out:?}");
    assert!(!cli.home.path().join("cqrsctl/default.json").exists());

    suite.advance_clock(chrono::TimeDelta::seconds(30));
    let code = suite.totp_code(&secret);
    let mut with_code = login.to_vec();
    with_code.extend(["--code", code.as_str(), "--output", "json"]);
    let out = cli.run(&with_code, Some(&password)).await;
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(out.json()["active_role"], "SERVICE_DESK");

    let mut with_recovery = login.to_vec();
    with_recovery.extend(["--code", recovery[0].as_str()]);
    let out = cli.run(&with_recovery, Some(&password)).await;
    assert_eq!(out.code, 0, "{out:?}");
    assert!(out.stderr.contains("9 left"), "{out:?}");

    let out = cli
        .run(&["account", "get", &user_id, "--output", "json"], None)
        .await;
    assert_eq!(out.json()["second_factor"], true, "{out:?}");
    let out = cli
        .run(&["account", "remove-second-factor", &user_id], None)
        .await;
    assert_eq!(out.code, 0, "{out:?}");
    // The desk's own: its session ended with the app.
    let out = cli.run(&["whoami"], None).await;
    assert_ne!(out.code, 0, "{out:?}");
}

/// A suite whose services sign a checkpoint after every event (checked every 0.1 s), signed in
/// as the desk through the CLI.
async fn audited_suite(extra: &[(Service, &str, &str)]) -> (Suite, Cli) {
    let mut builder = Suite::builder();
    for service in Service::ALL {
        builder = builder.env(
            service,
            &[
                ("CQRS_AUDIT_CHECKPOINT_EVERY", "1"),
                ("CQRS_AUDIT_CHECKPOINT_SECS", "0.2"),
            ],
        );
    }
    for (service, name, value) in extra {
        builder = builder.env(*service, &[(name, value)]);
    }
    let mut suite = builder.start().await;
    suite.register_desk().await;
    let cli = Cli::new(&suite);
    let user_id = suite.desk_user_id().to_owned();
    let out = cli
        .run(
            &["login", "--user-id", &user_id, "--password-stdin"],
            Some(&format!("{DESK_PASSWORD}\n")),
        )
        .await;
    assert_eq!(out.code, 0, "{out:?}");
    (suite, cli)
}

async fn create_org(cli: &Cli, ods: &str) {
    let out = cli
        .run(
            &[
                "org", "create", "--kind", "region", "--ods", ods, "--name", ods, "--output",
                "json",
            ],
            None,
        )
        .await;
    assert_eq!(out.code, 0, "{out:?}");
}

/// `audit verify` of one service: the exit code and its report.
async fn verify(cli: &Cli, service: &str) -> (i32, serde_json::Value) {
    let out = cli
        .run(
            &["audit", "verify", "--service", service, "--output", "json"],
            None,
        )
        .await;
    assert!(out.code == 0 || out.code == 9, "{out:?}");
    (out.code, out.json()[0].clone())
}

/// Runs `sql` on `service`'s database as an intruder with the database's keys would: with
/// triggers off.
async fn tamper(suite: &Suite, service: Service, sql: &str) {
    let mut tx = suite.pool(service).begin().await.unwrap();
    sqlx::query("SET LOCAL session_replication_role = replica")
        .execute(&mut *tx)
        .await
        .unwrap();
    sqlx::raw_sql(sqlx::AssertSqlSafe(sql.to_owned()))
        .execute(&mut *tx)
        .await
        .unwrap();
    tx.commit().await.unwrap();
}

/// The last event of `of`'s chain, once `holder` keeps a checkpoint of it.
async fn witnessed_head(suite: &Suite, of: Service, holder: Service) -> i64 {
    let (head,): (i64,) = sqlx::query_as("SELECT max(sequence) FROM audit_events")
        .fetch_one(suite.pool(of))
        .await
        .unwrap();
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let (held,): (Option<i64>,) = sqlx::query_as(
            "SELECT max(sequence) FROM audit_checkpoints WHERE service = $1 AND NOT own",
        )
        .bind(of.name())
        .fetch_one(suite.pool(holder))
        .await
        .unwrap();
        if held >= Some(head) {
            return head;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{holder:?} never kept {of:?}'s checkpoint at {head}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn audit_verify_names_the_first_tampered_event() {
    let (suite, cli) = audited_suite(&[]).await;
    create_org(&cli, "Y61").await;

    let out = cli
        .run(&["audit", "verify", "--output", "json"], None)
        .await;
    assert_eq!(out.code, 0, "{out:?}");
    let reports = out.json();
    assert_eq!(reports.as_array().unwrap().len(), 4, "{out:?}");
    for report in reports.as_array().unwrap() {
        assert_eq!(report["intact"], true, "{report}");
    }
    let (_, identity) = verify(&cli, "identity").await;
    assert!(identity["verified"].as_u64().unwrap() >= 3, "{identity}");

    // One search across the four trails, newest first, a page at a time.
    let search = |args: &[&str]| {
        let mut all = vec!["audit", "search", "--output", "json"];
        all.extend_from_slice(args);
        let all: Vec<String> = all.iter().map(|s| (*s).to_owned()).collect();
        let cli = &cli;
        async move {
            let args: Vec<&str> = all.iter().map(String::as_str).collect();
            let out = cli.run(&args, None).await;
            assert_eq!(out.code, 0, "{out:?}");
            out.json().as_array().unwrap().clone()
        }
    };
    let page = search(&["--limit", "4"]).await;
    assert_eq!(page.len(), 4);
    let times: Vec<&str> = page
        .iter()
        .map(|e| e["create_time"].as_str().unwrap())
        .collect();
    assert!(times.windows(2).all(|w| w[0] >= w[1]), "{times:?}");
    let older = search(&["--limit", "500", "--before", times[3]]).await;
    assert!(
        older
            .iter()
            .all(|e| e["create_time"].as_str().unwrap() < times[3])
    );
    let services: std::collections::BTreeSet<&str> = older
        .iter()
        .map(|e| e["service"].as_str().unwrap())
        .collect();
    assert!(
        services.contains("identity") && services.contains("directory"),
        "{services:?}"
    );
    let orgs = search(&["--action", "CREATE_ORGANISATION"]).await;
    assert!(!orgs.is_empty() && orgs.iter().all(|e| e["service"] == "directory"));
    let created = &orgs[0];
    assert_eq!(created["actor_role"], "SERVICE_DESK", "{created}");
    assert!(
        created["changes"]["organisations.ods_code"].is_array(),
        "{created}"
    );
    let about = search(&["--target", created["target_id"].as_str().unwrap()]).await;
    assert!(about.iter().any(|e| e["id"] == created["id"]));

    // An edited event breaks its own link; put back, the chain is whole again.
    tamper(
        &suite,
        Service::Identity,
        "CREATE TABLE original AS SELECT outcome FROM audit_events WHERE sequence = 2; \
         UPDATE audit_events SET outcome = 'denied' WHERE sequence = 2",
    )
    .await;
    let (code, report) = verify(&cli, "identity").await;
    assert_eq!(
        (code, report["break_at"].as_i64()),
        (9, Some(2)),
        "{report}"
    );
    assert!(
        report["problem"]
            .as_str()
            .unwrap()
            .contains("does not match its hash"),
        "{report}"
    );
    tamper(
        &suite,
        Service::Identity,
        "UPDATE audit_events SET outcome = (SELECT outcome FROM original) WHERE sequence = 2",
    )
    .await;
    assert_eq!(verify(&cli, "identity").await.0, 0);

    // A removed event leaves a gap.
    tamper(
        &suite,
        Service::Identity,
        "CREATE TABLE removed AS SELECT * FROM audit_events WHERE sequence = 3; \
         DELETE FROM audit_events WHERE sequence = 3",
    )
    .await;
    let (code, report) = verify(&cli, "identity").await;
    assert_eq!(
        (code, report["break_at"].as_i64()),
        (9, Some(3)),
        "{report}"
    );
    assert!(
        report["problem"].as_str().unwrap().contains("missing"),
        "{report}"
    );
    tamper(
        &suite,
        Service::Identity,
        "INSERT INTO audit_events SELECT * FROM removed",
    )
    .await;
    assert_eq!(verify(&cli, "identity").await.0, 0);

    // Two events swapped.
    tamper(
        &suite,
        Service::Identity,
        "UPDATE audit_events SET sequence = -2 WHERE sequence = 2; \
         UPDATE audit_events SET sequence = 2 WHERE sequence = 3; \
         UPDATE audit_events SET sequence = 3 WHERE sequence = -2",
    )
    .await;
    let (code, report) = verify(&cli, "identity").await;
    assert_eq!(
        (code, report["break_at"].as_i64()),
        (9, Some(2)),
        "{report}"
    );

    // The other services' chains are untouched, and the whole run says which one broke.
    let out = cli.run(&["audit", "verify"], None).await;
    assert_eq!(out.code, 9, "{out:?}");
    assert!(out.stdout.contains("BROKEN"), "{out:?}");
    assert!(out.stderr.contains("identity"), "{out:?}");
    assert_eq!(verify(&cli, "directory").await.0, 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_restored_older_backup_is_caught_by_the_checkpoints_other_services_keep() {
    let (suite, cli) = audited_suite(&[]).await;
    create_org(&cli, "Y62").await;
    let backed_up = witnessed_head(&suite, Service::Directory, Service::Access).await;
    // A backup of the directory's database, trail and checkpoints alike.
    tamper(
        &suite,
        Service::Directory,
        "CREATE TABLE backup_events AS SELECT * FROM audit_events; \
         CREATE TABLE backup_checkpoints AS SELECT * FROM audit_checkpoints",
    )
    .await;
    create_org(&cli, "Y63").await;
    let later = witnessed_head(&suite, Service::Directory, Service::Identity).await;
    witnessed_head(&suite, Service::Directory, Service::Access).await;
    assert!(later > backed_up);
    assert_eq!(verify(&cli, "directory").await.0, 0);

    // The backup is restored over the directory's trail: consistent in itself.
    tamper(
        &suite,
        Service::Directory,
        "DELETE FROM audit_events; INSERT INTO audit_events SELECT * FROM backup_events; \
         DELETE FROM audit_checkpoints WHERE own; \
         INSERT INTO audit_checkpoints SELECT * FROM backup_checkpoints WHERE own",
    )
    .await;
    let (code, report) = verify(&cli, "directory").await;
    assert_eq!(code, 9, "{report}");
    assert_eq!(report["break_at"].as_i64(), Some(backed_up + 1), "{report}");
    let problem = report["problem"].as_str().unwrap();
    assert!(
        problem.contains("older backup")
            && (problem.contains("identity") || problem.contains("access")),
        "{report}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn retention_purges_old_events_and_the_chain_still_verifies() {
    let (suite, cli) =
        audited_suite(&[(Service::Directory, "CQRS_AUDIT_RETENTION_DAYS", "30")]).await;
    create_org(&cli, "Y64").await;
    create_org(&cli, "Y65").await;
    let (old,): (i64,) = sqlx::query_as("SELECT count(*) FROM audit_events")
        .fetch_one(suite.pool(Service::Directory))
        .await
        .unwrap();

    // The application cannot remove or change events itself.
    for sql in [
        "DELETE FROM audit_events",
        "UPDATE audit_events SET outcome = 'failure'",
        "TRUNCATE audit_events",
        "DELETE FROM audit_checkpoints",
        "SELECT audit_purge((SELECT max(sequence) FROM audit_events))",
    ] {
        let refused = sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
            .execute(suite.pool(Service::Directory))
            .await;
        assert!(refused.is_err(), "{sql} was allowed");
    }

    // A month later, one more event; the job purges everything older than 30 days (the last
    // event is always kept, so a purge that runs before the new event leaves the last old one
    // for the next).
    suite.advance_clock(chrono::TimeDelta::days(31));
    create_org(&cli, "Y66").await;
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let (first,): (i64,) = sqlx::query_as("SELECT min(sequence) FROM audit_events")
            .fetch_one(suite.pool(Service::Directory))
            .await
            .unwrap();
        if first > old {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "old events kept from {first}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let purges = suite
        .audit(
            Service::Directory,
            cqrs_suite::AuditQuery::action("PURGE_AUDIT_EVENTS"),
        )
        .await;
    assert!(!purges.is_empty());
    assert!(
        purges.iter().all(|p| p.actor_kind == "SYSTEM"),
        "{purges:?}"
    );
    let purged: i64 = purges
        .iter()
        .map(|p| p.detail("purged").unwrap().parse::<i64>().unwrap())
        .sum();
    assert_eq!(purged, old, "{purges:?}");

    // The first kept event is anchored by the checkpoint the purge signed.
    let (code, report) = verify(&cli, "directory").await;
    assert_eq!(code, 0, "{report}");
    assert!(report["verified"].as_u64().unwrap() >= 2, "{report}");
}
