use std::process::ExitCode;

#[tokio::main]
async fn main() -> ExitCode {
    match cqrs_identity::run(cqrs_runtime::config::Env::from_process()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("cqrs-identity: {err}");
            ExitCode::FAILURE
        }
    }
}
