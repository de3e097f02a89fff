use std::process::ExitCode;

use cqrs_runtime::cli::{self, Command};
use cqrs_runtime::config::Env;

const BINARY: &str = "cqrs-identity";

#[tokio::main]
async fn main() -> ExitCode {
    let env = Env::from_process();
    let result = match cli::command(BINARY) {
        Ok(Command::Serve) => cqrs_identity::run(env).await,
        Ok(Command::Migrate) => cqrs_identity::migrate(env).await,
        Err(code) => return code,
    };
    cli::exit(BINARY, result)
}
