//! The binary's behaviour that needs no service: help, usage errors, not being signed in, an
//! unreachable service, and checking an import file.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::net::TcpListener;
use std::process::{Command, Output};

fn cqrsctl(home: &std::path::Path, args: &[&str]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_cqrsctl"));
    for var in [
        "CQRSCTL_PROFILE",
        "CQRSCTL_TIMEOUT",
        "CQRSCTL_IDENTITY_URL",
        "CQRSCTL_DIRECTORY_URL",
        "CQRSCTL_ACCESS_URL",
        "CQRSCTL_NOTIFICATIONS_URL",
    ] {
        cmd.env_remove(var);
    }
    cmd.args(args)
        .env("HOME", home)
        .env("XDG_CONFIG_HOME", home)
        .output()
        .unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8(bytes.to_vec()).unwrap()
}

/// A local URL where nothing listens.
fn closed_url() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    format!("http://{addr}")
}

#[test]
fn help_lists_commands_and_exit_codes() {
    let home = tempfile::tempdir().unwrap();
    let out = cqrsctl(home.path(), &["--help"]);
    assert_eq!(out.status.code(), Some(0));
    let help = text(&out.stdout);
    for word in [
        "login",
        "logout",
        "whoami",
        "use-role",
        "org",
        "invite",
        "invitations",
        "registrations",
        "access-requests",
        "account",
        "grants",
        "audit",
        "Exit codes:",
        "6  INVALID_ARGUMENT",
    ] {
        assert!(help.contains(word), "{word}: {help}");
    }
    let out = cqrsctl(home.path(), &["org", "import", "--help"]);
    assert_eq!(out.status.code(), Some(0));
    assert!(text(&out.stdout).contains("parent_ods"));
}

#[test]
fn usage_errors_exit_2() {
    let home = tempfile::tempdir().unwrap();
    for args in [
        &["frobnicate"][..],
        &["login"],
        &[
            "org", "create", "--kind", "moon", "--ods", "Y56", "--name", "x",
        ],
        &["--identity-url", "https://id.example:443", "whoami"],
    ] {
        let out = cqrsctl(home.path(), args);
        assert_eq!(
            out.status.code(),
            Some(2),
            "{args:?}: {}",
            text(&out.stderr)
        );
    }
}

#[test]
fn commands_need_a_session() {
    let home = tempfile::tempdir().unwrap();
    let out = cqrsctl(home.path(), &["account", "get", "JSM482"]);
    assert_eq!(out.status.code(), Some(3));
    let stderr = text(&out.stderr);
    assert_eq!(
        stderr,
        "error: UNAUTHENTICATED: not signed in (profile `default`); run `cqrsctl login`\n"
    );
    assert!(out.stdout.is_empty());

    let out = cqrsctl(
        home.path(),
        &["whoami", "--output", "json", "--profile", "ops"],
    );
    assert_eq!(out.status.code(), Some(3));
    let stderr = text(&out.stderr);
    let json: serde_json::Value = serde_json::from_str(stderr.lines().nth(1).unwrap()).unwrap();
    assert_eq!(json["error"]["code"], "UNAUTHENTICATED");
    assert_eq!(json["error"]["exit_code"], 3);
    assert!(json["error"]["message"].as_str().unwrap().contains("`ops`"));
}

#[test]
fn unreachable_services_exit_8_and_leave_no_cache() {
    let home = tempfile::tempdir().unwrap();
    let url = closed_url();
    // Public search needs no session.
    let out = cqrsctl(
        home.path(),
        &["--directory-url", &url, "org", "search", "London"],
    );
    assert_eq!(out.status.code(), Some(8), "{}", text(&out.stderr));
    assert!(text(&out.stderr).starts_with("error: UNAVAILABLE"));

    let mut child = Command::new(env!("CARGO_BIN_EXE_cqrsctl"))
        .args([
            "--identity-url",
            &url,
            "login",
            "--user-id",
            "JSM482",
            "--password-stdin",
        ])
        .env("HOME", home.path())
        .env("XDG_CONFIG_HOME", home.path())
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    {
        use std::io::Write;
        child
            .stdin
            .take()
            .unwrap()
            .write_all(b"Secret-Passw0rd\n")
            .unwrap();
    }
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(8), "{}", text(&out.stderr));
    assert!(!home.path().join("cqrsctl").join("default.json").exists());
}

#[test]
fn import_files_are_checked_before_anything_is_sent() {
    let home = tempfile::tempdir().unwrap();
    let csv = home.path().join("orgs.csv");
    std::fs::write(
        &csv,
        "ods_code,name,kind,parent_ods\nY56,London,region,\nY56,Again,region,\n",
    )
    .unwrap();
    let out = cqrsctl(home.path(), &["org", "import", csv.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(6));
    assert_eq!(
        text(&out.stderr),
        format!(
            "error: INVALID_ARGUMENT: {}: 1 problem; nothing was sent; line 3: ods_code: Y56 already appears on line 2\n",
            csv.display()
        )
    );

    std::fs::write(&csv, "ods_code,name,kind\nY56,London,region\n").unwrap();
    let out = cqrsctl(
        home.path(),
        &["org", "import", csv.to_str().unwrap(), "--dry-run"],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("planned"));

    let out = cqrsctl(home.path(), &["org", "import", "/nonexistent/orgs.csv"]);
    assert_eq!(out.status.code(), Some(2));
}
