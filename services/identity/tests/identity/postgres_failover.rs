//! A Postgres primary switch, as an operator-managed cluster does it (CloudNativePG's
//! failover behind its read-write Service): a primary with a synchronous standby; the primary
//! goes down hard; the standby is promoted and takes over the same address. Identity, not
//! restarted, answers UNAVAILABLE in between and then works again, and every write it
//! acknowledged before the switch is there.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use cqrs_proto::identity::v1 as pb;
use cqrs_testkit::{free_port, with_token};
use tonic::Code;
use uuid::Uuid;

use crate::calls::start;

/// Postgres's own programs (Debian's layout), run as the `postgres` user when we are root
/// (initdb refuses root).
fn pg(program: &str) -> Command {
    let bin = std::fs::read_dir("/usr/lib/postgresql")
        .expect("Postgres server binaries under /usr/lib/postgresql")
        .filter_map(Result::ok)
        .map(|e| e.path().join("bin").join(program))
        .find(|p| p.exists())
        .unwrap_or_else(|| panic!("{program} not found under /usr/lib/postgresql"));
    let root = std::process::Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| o.stdout.starts_with(b"0"));
    if root {
        let mut cmd = Command::new("runuser");
        cmd.args(["-u", "postgres", "--"]).arg(bin);
        cmd
    } else {
        Command::new(bin)
    }
}

/// A client program of Postgres's aimed at the server on `port`.
fn client(program: &str, port: u16) -> Command {
    let mut cmd = pg(program);
    cmd.args(["-h", "127.0.0.1", "-p", &port.to_string(), "-U", "postgres"]);
    cmd
}

fn run(mut cmd: Command) {
    let out = cmd.output().expect("run a Postgres program");
    assert!(
        out.status.success(),
        "{cmd:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Starts the server of `data` on `port`; extra settings as `-c` options.
fn start_server(data: &Path, port: u16, settings: &[&str]) {
    let mut options = format!(
        "-p {port} -c listen_addresses=127.0.0.1 -k {}",
        data.display()
    );
    for setting in settings {
        options.push_str(&format!(" -c {setting}"));
    }
    let mut cmd = pg("pg_ctl");
    cmd.arg("-D").arg(data).args(["-o", &options, "-w", "-l"]);
    cmd.arg(data.join("server.log")).arg("start");
    run(cmd);
}

fn stop_server(data: &Path, mode: &str) {
    let mut cmd = pg("pg_ctl");
    cmd.arg("-D").arg(data).args(["-m", mode, "-w", "stop"]);
    run(cmd);
}

struct Dirs(PathBuf);

impl Drop for Dirs {
    fn drop(&mut self) {
        for data in ["primary", "standby"] {
            let dir = self.0.join(data);
            if dir.join("postmaster.pid").exists() {
                let mut cmd = pg("pg_ctl");
                cmd.arg("-D").arg(&dir).args(["-m", "immediate", "stop"]);
                let _ = cmd.output();
            }
        }
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[tokio::test]
async fn a_primary_switch_is_survived_like_a_restart_and_loses_no_acknowledged_write() {
    let root = std::env::temp_dir().join(format!("cqrs-pg-switch-{}", Uuid::new_v4()));
    std::fs::create_dir_all(&root).unwrap();
    run({
        let mut chown = Command::new("chown");
        chown.args(["postgres:postgres"]).arg(&root);
        chown
    });
    let dirs = Dirs(root.clone());
    let (primary, standby) = (root.join("primary"), root.join("standby"));
    let (port, standby_port) = (free_port(), free_port());

    // A primary that acknowledges a commit only once the standby has it.
    run({
        let mut cmd = pg("initdb");
        cmd.args(["--auth=trust", "-U", "postgres", "-D"])
            .arg(&primary);
        cmd
    });
    start_server(
        &primary,
        port,
        &["wal_level=replica", "synchronous_standby_names='*'"],
    );
    run({
        let mut cmd = client("pg_basebackup", port);
        cmd.args(["-R", "-D"]).arg(&standby);
        cmd
    });
    start_server(&standby, standby_port, &[]);
    run({
        let mut cmd = client("createdb", port);
        cmd.arg("identity");
        cmd
    });

    // Identity over the primary's address (what the rw Service gives it).
    let h = start(&[]).await;
    let url = format!("postgres://postgres@127.0.0.1:{port}/identity");
    let pool = sqlx::postgres::PgPoolOptions::new()
        .acquire_timeout(Duration::from_secs(2))
        .connect(&url)
        .await
        .unwrap();
    cqrs_identity::MIGRATOR.run(&pool).await.unwrap();
    let config = h.identity_service().config.as_ref().clone();
    let redis = cqrs_identity::redis_connection(&config.redis_url).unwrap();
    let identity = cqrs_identity::Identity::new(
        config,
        cqrs_identity::Store::new(pool),
        redis,
        std::sync::Arc::new(cqrs_identity::SystemClock),
    )
    .unwrap();
    identity.store.ensure_outbox().await.unwrap();
    let server = h.serve_identity(&identity).await;
    let mut client = cqrs_proto::identity::v1::identity_service_client::IdentityServiceClient::new(
        server.channel.clone(),
    );
    let token = h.service_token_of(crate::calls::SERVICE_CLIENT);
    let create = |n: usize| {
        with_token(
            pb::CreateAccountRequest {
                request_id: Uuid::new_v4().to_string(),
                realm: pb::Realm::Local as i32,
                email: format!("person{n}@practice.org"),
                first_name: "Pat".into(),
                last_name: "Lee".into(),
            },
            &token,
        )
    };
    let mut acknowledged = Vec::new();
    for n in 0..20 {
        let account = client.create_account(create(n)).await.unwrap();
        acknowledged.push(account.into_inner().account.unwrap().id);
    }

    // The primary is lost; the standby is promoted and takes over its address.
    stop_server(&primary, "immediate");
    let err = client.create_account(create(100)).await.unwrap_err();
    assert_eq!(err.code(), Code::Unavailable, "{err:?}");
    run({
        let mut cmd = pg("pg_ctl");
        cmd.arg("-D").arg(&standby).args(["-w", "promote"]);
        cmd
    });
    stop_server(&standby, "fast");
    start_server(&standby, port, &[]);

    // The same identity, not restarted, works again: its pool reconnects.
    let mut recovered = None;
    for _ in 0..100 {
        match client.create_account(create(101)).await {
            Ok(account) => {
                recovered = Some(account);
                break;
            }
            Err(err) => {
                assert_eq!(err.code(), Code::Unavailable, "{err:?}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
    assert!(
        recovered.is_some(),
        "identity never recovered after the switch"
    );
    let listed = client
        .list_accounts(with_token(
            pb::ListAccountsRequest {
                account_ids: acknowledged.clone(),
                ..Default::default()
            },
            &token,
        ))
        .await
        .unwrap()
        .into_inner()
        .accounts;
    assert_eq!(listed.len(), acknowledged.len(), "acknowledged writes lost");
    drop(server);
    drop(h);
    drop(dirs);
}
