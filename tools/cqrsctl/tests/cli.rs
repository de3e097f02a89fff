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
