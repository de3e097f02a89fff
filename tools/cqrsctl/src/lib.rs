//! `cqrsctl`: the command-line client of the CQRS Identity Suite for operations and the
//! service desk. See README.md for the commands, the session cache and the exit codes.

pub mod cli;
pub mod client;
pub mod commands;
pub mod duration;
pub mod enums;
pub mod errors;
pub mod import;
pub mod output;
pub mod profile;
pub mod views;

use std::process::ExitCode;

use clap::Parser;

/// Parses the command line, runs the command and turns the outcome into the exit code.
pub fn main_entry() -> ExitCode {
    let cli = match cli::Cli::try_parse() {
        Ok(cli) => cli,
        Err(err) => {
            // --help and --version exit 0, usage errors 2.
            let code = u8::try_from(err.exit_code()).unwrap_or(errors::exit::USAGE);
            let _ = err.print();
            return ExitCode::from(code);
        }
    };
    let format = cli.output;
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            let err = errors::CliError::Other(format!("cannot start the async runtime: {e}"));
            errors::print_error(&err, format);
            return ExitCode::from(err.exit_code());
        }
    };
    match runtime.block_on(commands::run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            errors::print_error(&err, format);
            ExitCode::from(err.exit_code())
        }
    }
}
