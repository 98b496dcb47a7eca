//! The load tool as users run it: the real `recovery-bench` binary against the real service,
//! spawned by the tool (SQLite, mail to the tool's own SMTP sink) and started separately over
//! mutual TLS. Each run drives every RPC for a second and is read back
//! from its `--json` report: every phase made calls and every answer was OK (a tool that
//! prepared its inputs wrongly would see FLOW_EXPIRED, EMAIL_NOT_VERIFIED, RATE_LIMITED, ...).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests fail loudly

use std::{process::Stdio, time::Duration};

use rcgen::SanType;
use recovery_e2e::{
    Options, Server,
    pki::{Pki, dns},
};
use serde_json::Value;

const KEY: &str = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";
const EVERY_RPC: &str = "create-recovery-code,begin-recovery,verify-email,recover-account,\
get-recovery-status,list-audit-events,health";
const PHASES: [&str; 7] = [
    "CreateRecoveryCode",
    "BeginRecovery",
    "VerifyEmail",
    "RecoverAccount",
    "GetRecoveryStatus",
    "ListAuditEvents",
    "Health/Check",
];

/// Runs the tool with `args`, one second per RPC, at the service's default argon2id cost (the
/// tool prepares RecoverAccount's flows for the raw argon2id rate: a cheap cost would have it
/// prepare thousands); its `--json` report.
async fn run_tool(args: &[&str]) -> Value {
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_recovery-bench"));
    command
        .args(args)
        .args([
            "--json",
            "--rpc",
            EVERY_RPC,
            "--duration",
            "1s",
            "--concurrency",
            "2",
            "--hash-window",
            "200ms",
        ])
        .stdin(Stdio::null())
        .kill_on_drop(true);
    let output = tokio::time::timeout(Duration::from_secs(240), command.output())
        .await
        .expect("the tool finished within 4 minutes")
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{}\n{stderr}", output.status);
    serde_json::from_slice(&output.stdout).unwrap_or_else(|e| {
        panic!(
            "not JSON ({e}): {}",
            String::from_utf8_lossy(&output.stdout)
        )
    })
}

/// Every RPC was driven, in order, and answered OK only.
fn assert_every_phase_ok(report: &Value) {
    let phases = report["phases"].as_array().expect("phases");
    let names: Vec<&str> = phases.iter().map(|p| p["rpc"].as_str().unwrap()).collect();
    assert_eq!(names, PHASES);
    for phase in phases {
        let rpc = phase["rpc"].as_str().unwrap();
        let calls = phase["calls"].as_u64().unwrap();
        assert!(calls > 0, "{rpc}: no calls");
        let outcomes = phase["outcomes"].as_object().unwrap();
        assert_eq!(
            outcomes.keys().collect::<Vec<_>>(),
            ["OK"],
            "{rpc}: {outcomes:?}"
        );
        assert_eq!(outcomes["OK"]["count"].as_u64(), Some(calls), "{rpc}");
        let p50 = phase["latency"]["p50_ms"].as_f64().unwrap();
        let p99 = phase["latency"]["p99_ms"].as_f64().unwrap();
        assert!(p50 > 0.0 && p50 <= p99, "{rpc}: p50 {p50}, p99 {p99}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spawned_the_tool_drives_every_rpc_and_reports_its_figures() {
    let service = recovery_e2e::binary();
    let report = run_tool(&["--spawn", "--service-bin", service.to_str().unwrap()]).await;
    assert_every_phase_ok(&report);
    // The same run measured raw argon2id and took the ratios against it.
    assert!(
        report["raw_argon2_before"]["hashes_per_s"]
            .as_f64()
            .unwrap()
            > 0.0
    );
    assert!(report["raw_argon2_after"]["hashes_per_s"].as_f64().unwrap() > 0.0);
    let ratios = &report["ratios"];
    for figure in [
        "create_recovery_code_vs_raw_argon2",
        "recover_account_vs_raw_argon2",
        "get_recovery_status_vs_health",
    ] {
        let ratio = ratios[figure].as_f64().unwrap_or_default();
        assert!(ratio > 0.0, "{figure}: {ratios}");
    }
    // The spawned service's start-up and memory.
    let spawned = &report["spawned"];
    assert!(
        spawned["spawn_to_serving_ms"].as_f64().unwrap() > 0.0,
        "{spawned}"
    );
    let idle = spawned["idle_rss_kib"].as_u64().unwrap();
    let peak = spawned["peak_rss_kib"].as_u64().unwrap();
    assert!(idle > 0 && peak >= idle, "{spawned}");
    // Its CPU per call is reported for each phase.
    for phase in report["phases"].as_array().unwrap() {
        assert!(phase["server_cpu_ms_per_call"].as_f64().unwrap() > 0.0);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn against_a_running_service_over_mutual_tls() {
    let pki = Pki::new();
    let (server_cert, server_key) = pki.issue(vec![
        dns("localhost"),
        SanType::IpAddress("127.0.0.1".parse().unwrap()),
    ]);
    let (bench_cert, bench_key) = pki.issue(vec![dns("bench.ops.internal")]);
    // The tool's own SMTP sink, on a port the service is told before it starts.
    let sink = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let sink_addr = sink.local_addr().unwrap();
    drop(sink);
    let server = Server::start_with(
        Options::default()
            .env("RECOVERY_SECRET_KEY", KEY)
            .env("RECOVERY_SMTP_URL", format!("smtp://{sink_addr}"))
            .env("RECOVERY_TLS_CERT", pki.write("server.pem", &server_cert))
            .env("RECOVERY_TLS_KEY", pki.write("server.key", &server_key))
            .env("RECOVERY_TLS_CLIENT_CA", pki.write("ca.pem", &pki.ca_pem))
            .env(
                "RECOVERY_CALLERS",
                "dns:bench.ops.internal=auth,dns:bench.ops.internal=operator",
            ),
    )
    .unwrap();
    let addr = server.addr.to_string();
    let report = run_tool(&[
        "--addr",
        &addr,
        "--tls-ca",
        &pki.write("ca.pem", &pki.ca_pem),
        "--tls-cert",
        &pki.write("bench.pem", &bench_cert),
        "--tls-key",
        &pki.write("bench.key", &bench_key),
        "--tls-domain",
        "localhost",
        "--smtp-listen",
        &sink_addr.to_string(),
    ])
    .await;
    assert_every_phase_ok(&report);
    assert!(report["spawned"].is_null(), "nothing spawned: {report}");
}
