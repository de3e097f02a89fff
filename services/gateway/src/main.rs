use std::process::ExitCode;

use cqrs_runtime::cli::{self, Command};
use cqrs_runtime::config::Env;

const BINARY: &str = "cqrs-gateway";

#[tokio::main]
async fn main() -> ExitCode {
    let env = Env::from_process();
    let result = match cli::command(BINARY) {
        Ok(Command::Serve) => cqrs_gateway::run(env).await,
        // The gateway owns no records: there is nothing to migrate.
        Ok(Command::Migrate) => Ok(()),
        Err(code) => return code,
    };
    cli::exit(BINARY, result)
}
