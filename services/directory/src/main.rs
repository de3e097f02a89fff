use std::process::ExitCode;

#[tokio::main]
async fn main() -> ExitCode {
    match cqrs_directory::run(cqrs_runtime::config::Env::from_process()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("cqrs-directory: {err}");
            ExitCode::FAILURE
        }
    }
}
