//! The binary's own command line, run as a user would. (Its presence also makes `cargo test`
//! build the `recovery-service` binary that the end-to-end tests in `tests/` start.)

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests fail loudly

use std::process::Command;

#[test]
fn version_prints_the_package_version() {
    let output = Command::new(env!("CARGO_BIN_EXE_recovery-service"))
        .arg("--version")
        .output()
        .unwrap();
    assert!(output.status.success());
    assert_eq!(
        String::from_utf8_lossy(&output.stdout).trim(),
        format!("recovery-service {}", env!("CARGO_PKG_VERSION"))
    );
}

#[test]
fn an_unknown_subcommand_is_a_usage_error() {
    let output = Command::new(env!("CARGO_BIN_EXE_recovery-service"))
        .arg("serv")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("serve"));
}

/// Documentation stays true: every setting the binary reads is in `--help` and in README.md.
#[test]
fn every_setting_is_documented_in_help_and_readme() {
    let readme = include_str!("../../../README.md");
    let output = Command::new(env!("CARGO_BIN_EXE_recovery-service"))
        .arg("--help")
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&output.stdout);
    for key in recovery_service::config::KEYS {
        let variable = recovery_service::config::env_name(key);
        assert!(help.contains(&variable), "--help lacks {variable}");
        assert!(readme.contains(&variable), "README.md lacks {variable}");
    }
}
