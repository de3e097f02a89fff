#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use lettre::message::header::ContentType;
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};

/// Kills the child on drop so a failing test leaves no process behind.
struct Child(std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test]
async fn mailsink_prints_links_and_writes_eml_files() {
    let dir = std::env::temp_dir().join(format!("cqrs-mailsink-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    // Numbering continues after files from an earlier run.
    std::fs::write(dir.join("7-old@example.test.eml"), "old").unwrap();
    let port = cqrs_testkit::free_port();

    let mut child = Child(
        Command::new(env!("CARGO_BIN_EXE_cqrs-mailsink"))
            .env("MAILSINK_LISTEN", format!("127.0.0.1:{port}"))
            .env("MAILSINK_DIR", &dir)
            .stdout(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let stdout = child.0.stdout.take().unwrap();
    let (lines_tx, lines) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            if lines_tx.send(line.unwrap()).is_err() {
                break;
            }
        }
    });
    let next = || lines.recv_timeout(Duration::from_secs(20)).unwrap();
    assert!(next().contains(&format!("listening on smtp://127.0.0.1:{port}")));

    let message = Message::builder()
        .from("no-reply@cqrs.test".parse().unwrap())
        .to("Ada <ada@example.test>".parse().unwrap())
        .subject("Set your password")
        .header(ContentType::TEXT_PLAIN)
        .body(
            "Go to https://id.cqrs.test/set?token=abc then https://id.cqrs.test/help\n".to_owned(),
        )
        .unwrap();
    AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous("127.0.0.1")
        .port(port)
        .build()
        .send(message)
        .await
        .unwrap();

    assert_eq!(next(), "mail to=ada@example.test subject=Set your password");
    assert_eq!(next(), "  link: https://id.cqrs.test/set?token=abc");
    assert_eq!(next(), "  link: https://id.cqrs.test/help");

    let eml = std::fs::read_to_string(dir.join("8-ada@example.test.eml")).unwrap();
    assert!(eml.contains("Subject: Set your password"), "{eml}");

    drop(child);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn mailsink_rejects_a_bad_listen_address() {
    let output = Command::new(env!("CARGO_BIN_EXE_cqrs-mailsink"))
        .env("MAILSINK_LISTEN", "not-an-address")
        .env(
            "MAILSINK_DIR",
            std::env::temp_dir().join("cqrs-mailsink-unused"),
        )
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("MAILSINK_LISTEN"), "{stderr}");
}
