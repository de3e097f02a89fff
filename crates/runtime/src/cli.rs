//! The command line every service binary shares: no argument serves; `migrate` applies the
//! service's migrations and exits (the Kubernetes migration Job, or an operator before a
//! rolling upgrade). Anything else is a usage error with exit code 2, so scripts can tell it
//! from a failure to run (1).

use std::process::ExitCode;

/// What the binary was asked to do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Command {
    Serve,
    Migrate,
}

/// Exit code for a command line the binary does not understand.
const USAGE: u8 = 2;

/// The command in `args` (without the program name).
pub fn parse(mut args: impl Iterator<Item = String>) -> Result<Command, String> {
    let command = match args.next().as_deref() {
        None | Some("serve") => Command::Serve,
        Some("migrate") => Command::Migrate,
        Some(other) => return Err(format!("unknown command {other:?}")),
    };
    match args.next() {
        None => Ok(command),
        Some(extra) => Err(format!("unexpected argument {extra:?}")),
    }
}

/// The command of this process, or the exit code after printing usage.
pub fn command(binary: &str) -> Result<Command, ExitCode> {
    parse(std::env::args().skip(1)).map_err(|e| {
        eprintln!("{binary}: {e}\nusage: {binary} [serve | migrate]");
        ExitCode::from(USAGE)
    })
}

/// The exit code for how the command ended, printing the error.
pub fn exit<E: std::fmt::Display>(binary: &str, result: Result<(), E>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprint!("{}", report(binary, &err));
            ExitCode::FAILURE
        }
    }
}

/// `err` as printed: each of its lines prefixed with the binary's name, so every problem of a
/// configuration ([`crate::config::ConfigErrors`], one per line) reads on its own in a log.
fn report(binary: &str, err: &dyn std::fmt::Display) -> String {
    let text = err.to_string();
    let mut out = String::new();
    for line in text.lines() {
        out.push_str(binary);
        out.push_str(": ");
        out.push_str(line);
        out.push('\n');
    }
    if out.is_empty() {
        out = format!("{binary}: failed\n");
    }
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    fn args(list: &[&str]) -> impl Iterator<Item = String> {
        list.iter()
            .map(|s| (*s).to_owned())
            .collect::<Vec<_>>()
            .into_iter()
    }

    #[test]
    fn commands() {
        assert_eq!(parse(args(&[])), Ok(Command::Serve));
        assert_eq!(parse(args(&["serve"])), Ok(Command::Serve));
        assert_eq!(parse(args(&["migrate"])), Ok(Command::Migrate));
        assert!(parse(args(&["migrat"])).is_err());
        assert!(parse(args(&["migrate", "now"])).is_err());
    }

    #[test]
    fn every_configuration_problem_is_printed_on_its_own_line() {
        use crate::config::{ConfigError, ConfigErrors};
        let mut errs = ConfigErrors::default();
        errs.push(ConfigError::new("A_PORT", "invalid value \"x\": bad"));
        errs.push(ConfigError::new("B_URL", "is required but not set"));
        assert_eq!(
            report("cqrs-x", &errs),
            "cqrs-x: A_PORT: invalid value \"x\": bad\ncqrs-x: B_URL: is required but not set\n"
        );
        assert_eq!(report("cqrs-x", &"boom"), "cqrs-x: boom\n");
    }
}
