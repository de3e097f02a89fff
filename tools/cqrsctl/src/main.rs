//! The `cqrsctl` binary; everything lives in the library.

fn main() -> std::process::ExitCode {
    cqrsctl::main_entry()
}
