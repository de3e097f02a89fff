use std::process::ExitCode;

use cqrs_runtime::cli::{self, Command};
use cqrs_runtime::config::Env;

const BINARY: &str = "cqrs-identity";

/// Each password hash uses ~19 MiB for tens of milliseconds on one of the hashing threads.
/// glibc's allocator keeps such memory in per-thread arenas once freed, so identity grew to
/// hundreds of MiB under load and did not give it back when idle; mimalloc returns freed
/// memory to the system.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

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
