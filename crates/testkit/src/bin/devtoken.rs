//! `cqrs-devtoken`: development helper for `make run`.
//!
//! - `keys`: prints a fresh `CQRS_TOKEN_SIGNING_KEY` and the matching `CQRS_TOKEN_VERIFY_KEYS`
//!   as env-file lines (for a local suite only; production keys come from a secret store).
//! - `service <client_id>`: prints a service token signed with `CQRS_TOKEN_SIGNING_KEY`.
//! - `health <host:port>`: prints the overall grpc.health.v1 status of a server; exits
//!   non-zero unless it is SERVING.
//! - `totp <secret>`: prints the code an authenticator app shows now for the base32 secret
//!   the "Add an authenticator app" page gives (SHA-1, 6 digits, 30 s), for trying the suite
//!   without a phone.

use std::process::ExitCode;
use std::time::Duration;

use cqrs_auth::{SigningKey, TokenIssuer};
use cqrs_runtime::clock::{Clock, SystemClock};
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>()
        .as_slice()
    {
        ["keys"] => Ok(keys()),
        ["audit-keys"] => Ok(audit_keys()),
        ["service", client_id] => service(client_id),
        ["health", addr] => health(addr).await,
        ["totp", secret @ ..] if !secret.is_empty() => totp(&secret.concat()),
        _ => Err(
            "usage: cqrs-devtoken keys | audit-keys | service <client_id> | health <host:port> | \
             totp <secret>"
                .to_owned(),
        ),
    };
    match result {
        Ok(output) => {
            println!("{output}");
            ExitCode::SUCCESS
        }
        Err(message) => {
            eprintln!("cqrs-devtoken: {message}");
            ExitCode::FAILURE
        }
    }
}

fn keys() -> String {
    let key = SigningKey::generate(&format!("dev-{}", SystemClock.now().format("%Y%m%d%H%M%S")));
    format!(
        "CQRS_TOKEN_SIGNING_KEY={}\nCQRS_TOKEN_VERIFY_KEYS={}",
        key.to_env_value(),
        key.verifying_key().to_env_value()
    )
}

/// One audit checkpoint key per service, each in its own variable.
fn audit_keys() -> String {
    let stamp = SystemClock.now().format("%Y%m%d%H%M%S");
    ["IDENTITY", "DIRECTORY", "ACCESS", "NOTIFICATIONS"]
        .map(|service| {
            let kid = format!("{}-audit-{stamp}", service.to_ascii_lowercase());
            format!(
                "{service}_AUDIT_SIGNING_KEY={}",
                cqrs_audit_chain::CheckpointKey::generate(&kid).to_env_value()
            )
        })
        .join("\n")
}

fn totp(secret: &str) -> Result<String, String> {
    let text = secret.replace(' ', "").to_ascii_uppercase();
    let bytes = totp_rs::Secret::Encoded(text)
        .to_bytes()
        .map_err(|_| "the secret is not base32 (letters A-Z and digits 2-7)".to_owned())?;
    let generator = totp_rs::TOTP::new(
        totp_rs::Algorithm::SHA1,
        6,
        0,
        30,
        bytes,
        None,
        String::new(),
    )
    .map_err(|e| e.to_string())?;
    let now = u64::try_from(SystemClock.now().timestamp()).map_err(|e| e.to_string())?;
    Ok(generator.generate(now))
}

fn service(client_id: &str) -> Result<String, String> {
    let value = std::env::var("CQRS_TOKEN_SIGNING_KEY")
        .map_err(|_| "CQRS_TOKEN_SIGNING_KEY is not set".to_owned())?;
    let key =
        SigningKey::from_env_value(&value).map_err(|e| format!("CQRS_TOKEN_SIGNING_KEY: {e}"))?;
    TokenIssuer::new(key, Duration::from_secs(15 * 60))
        .issue_service(client_id, SystemClock.now())
        .map(|issued| issued.token)
        .map_err(|e| e.to_string())
}

async fn health(addr: &str) -> Result<String, String> {
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .map_err(|e| e.to_string())?
        .connect_timeout(Duration::from_secs(2))
        .connect()
        .await
        .map_err(|e| format!("{addr}: {e}"))?;
    let status = HealthClient::new(channel)
        .check(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .map_err(|e| format!("{addr}: {}", e.message()))?
        .into_inner()
        .status();
    match status {
        ServingStatus::Serving => Ok("SERVING".to_owned()),
        other => Err(format!("{addr}: {}", other.as_str_name())),
    }
}
