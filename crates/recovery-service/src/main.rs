//! The `recovery-service` binary: see `recovery-service --help`.

fn main() -> std::process::ExitCode {
    recovery_service::cli::main()
}
