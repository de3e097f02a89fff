//! `cqrs-mailsink`: a local SMTP server for development (`make run`). Every message is
//! accepted, summarised on stdout with its links (so a reset or invitation link can be
//! followed straight from the terminal) and saved as a `.eml` file.
//!
//! Environment: `MAILSINK_LISTEN` (default `127.0.0.1:2525`), `MAILSINK_DIR` (default
//! `.run/mail`).

use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};

use cqrs_testkit::{CapturedMail, SmtpSink};

const DEFAULT_LISTEN: &str = "127.0.0.1:2525";
const DEFAULT_DIR: &str = ".run/mail";

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    match run().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("cqrs-mailsink: {message}");
            ExitCode::FAILURE
        }
    }
}

async fn run() -> Result<(), String> {
    let listen = env_or("MAILSINK_LISTEN", DEFAULT_LISTEN);
    let listen: SocketAddr = listen
        .parse()
        .map_err(|e| format!("MAILSINK_LISTEN: {e} (expected host:port, got {listen:?})"))?;
    let dir = PathBuf::from(env_or("MAILSINK_DIR", DEFAULT_DIR));
    std::fs::create_dir_all(&dir)
        .map_err(|e| format!("MAILSINK_DIR: cannot create {}: {e}", dir.display()))?;

    // Continue numbering after files left by an earlier run instead of overwriting them.
    let counter = AtomicU64::new(highest_number(&dir));
    let sink = SmtpSink::start_with(listen, move |mail| {
        let n = counter.fetch_add(1, Ordering::Relaxed) + 1;
        report(&dir, n, mail);
    })
    .await
    .map_err(|e| format!("cannot listen on {listen}: {e}"))?;

    println!("cqrs-mailsink: listening on {}", sink.url());
    tokio::signal::ctrl_c()
        .await
        .map_err(|e| format!("cannot wait for Ctrl-C: {e}"))?;
    Ok(())
}

fn env_or(name: &str, default: &str) -> String {
    std::env::var(name)
        .ok()
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| default.to_owned())
}

fn report(dir: &Path, n: u64, mail: &CapturedMail) {
    let to = mail.to.join(",");
    let mut out = std::io::stdout().lock();
    // A closed stdout must not take the sink down; the .eml file is still written.
    let _ = writeln!(out, "mail to={to} subject={}", mail.subject);
    for link in mail.links() {
        let _ = writeln!(out, "  link: {link}");
    }
    let first = mail.to.first().map(String::as_str).unwrap_or("unknown");
    let path = dir.join(format!("{n}-{}.eml", file_safe(first)));
    if let Err(e) = std::fs::write(&path, mail.raw.as_bytes()) {
        let _ = writeln!(out, "  (could not write {}: {e})", path.display());
    }
    let _ = out.flush();
}

/// Recipient addresses come from the network; keep only characters that are safe in a file
/// name on every platform.
fn file_safe(address: &str) -> String {
    address
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '@' | '.' | '-' | '_' | '+') {
                c
            } else {
                '_'
            }
        })
        .take(100)
        .collect()
}

fn highest_number(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .filter_map(|entry| {
            let name = entry.ok()?.file_name().into_string().ok()?;
            if !name.ends_with(".eml") {
                return None;
            }
            name.split_once('-')?.0.parse::<u64>().ok()
        })
        .max()
        .unwrap_or(0)
}
