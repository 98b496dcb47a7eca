//! The gRPC server: `RecoveryService`, `grpc.health.v1.Health` and server reflection (v1 and
//! v1alpha) on one port. [`run`] takes an already-bound listener and a shutdown future, so
//! tests bind `127.0.0.1:0` and production drains on SIGTERM: health turns NOT_SERVING first,
//! then in-flight calls finish within the grace period.

use std::{future::Future, time::Duration};

use recovery_proto::v1::recovery_service_server::{RecoveryServiceServer, SERVICE_NAME};
use tokio::{net::TcpListener, sync::watch};
use tonic::transport::{Server, ServerTlsConfig, server::TcpIncoming};
use tonic_health::{ServingStatus, server::HealthReporter};

use crate::{
    domain::Recovery,
    grpc::{RecoveryApi, auth::Callers, layer::RpcTelemetryLayer},
};

/// The health service name that answers SERVING while the process runs, for liveness probes.
pub const LIVENESS: &str = "liveness";

/// Transport limits: a message is small (the largest request is a few hundred bytes), a
/// connection multiplexes at most this many calls, headers stay small, a call that runs longer
/// than the request timeout is cut, idle connections are probed.
pub const MAX_MESSAGE_BYTES: usize = 64 * 1024;
const MAX_CONCURRENT_STREAMS: u32 = 128;
const MAX_HEADER_LIST_BYTES: u32 = 16 * 1024;
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Calls in progress across all connections; more wait for a slot.
const GLOBAL_CONCURRENCY: usize = 4096;
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(30);
const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(10);
/// Rapid-reset protection (CVE-2023-44487): streams a client resets before the server took
/// them up, per connection, before GOAWAY. h2's default of 20 cuts off a legitimate caller
/// whose deadlines expire in a burst (each expiry is a RST_STREAM); a flood of thousands of
/// HEADERS+RST_STREAM still reaches this within one read.
const MAX_PENDING_ACCEPT_RESETS: usize = 512;

/// How often the database is pinged to keep the health status true.
const DB_PROBE_INTERVAL: Duration = Duration::from_secs(1);
/// A readiness probe that takes longer than this counts as a database that does not answer.
const DB_PROBE_TIMEOUT: Duration = Duration::from_secs(1);

/// What the server needs besides its listener.
#[derive(Debug)]
pub struct ServeOptions {
    /// The recovery domain, over an already migrated database.
    pub recovery: Recovery,
    /// Server TLS (mutual with a client CA); `None` for plaintext.
    pub tls: Option<ServerTlsConfig>,
    /// Caller roles under mutual TLS; `None` trusts every caller.
    pub callers: Option<Callers>,
    /// How long in-flight calls may take to finish after shutdown starts.
    pub shutdown_grace: Duration,
    /// A plaintext listener serving only `grpc.health.v1.Health` (Kubernetes' native gRPC
    /// probes cannot present a client certificate); `None` for none.
    pub health_listener: Option<TcpListener>,
}

/// Why serving stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("invalid TLS configuration: {0}")]
    Tls(#[source] tonic::transport::Error),
    #[error("gRPC transport failed: {0}")]
    Transport(#[source] tonic::transport::Error),
    #[error("reflection descriptors are invalid: {0}")]
    Reflection(#[from] tonic_reflection::server::Error),
    #[error("listener: {0}")]
    Io(#[from] std::io::Error),
}

/// Serves until `shutdown` completes, then drains: health goes NOT_SERVING, the listener
/// closes, and in-flight calls get `shutdown_grace` to finish before connections are dropped.
pub async fn run(
    listener: TcpListener,
    options: ServeOptions,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), ServeError> {
    let addr = listener.local_addr()?;
    let (reporter, health_service) = tonic_health::server::health_reporter();
    set_status(&reporter, ServingStatus::NotServing).await;
    // `liveness`: the process answers, whatever the database does (a liveness probe on the
    // database-following status would restart every replica during a database failover).
    reporter
        .set_service_status(LIVENESS, ServingStatus::Serving)
        .await;

    let reflection_v1 = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(recovery_proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_types::pb::FILE_DESCRIPTOR_SET)
        .build_v1()?;
    let reflection_v1alpha = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(recovery_proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_types::pb::FILE_DESCRIPTOR_SET)
        .build_v1alpha()?;

    let mut builder = Server::builder()
        .max_concurrent_streams(MAX_CONCURRENT_STREAMS)
        .http2_max_header_list_size(MAX_HEADER_LIST_BYTES)
        .http2_max_pending_accept_reset_streams(Some(MAX_PENDING_ACCEPT_RESETS))
        .http2_keepalive_interval(Some(KEEPALIVE_INTERVAL))
        .http2_keepalive_timeout(Some(KEEPALIVE_TIMEOUT))
        .timeout(REQUEST_TIMEOUT);
    if let Some(tls) = options.tls {
        builder = builder.tls_config(tls).map_err(ServeError::Tls)?;
    }
    let (drain_tx, mut drain_rx) = watch::channel(false);
    let mut stop_probe = drain_rx.clone();
    let health_only = options.health_listener.map(|listener| {
        if let Ok(health_addr) = listener.local_addr() {
            tracing::info!(%health_addr, "serving grpc.health.v1.Health alone, in plaintext");
        }
        let mut drain = drain_rx.clone();
        tokio::spawn(
            Server::builder()
                .max_concurrent_streams(MAX_CONCURRENT_STREAMS)
                .http2_max_header_list_size(MAX_HEADER_LIST_BYTES)
                .timeout(REQUEST_TIMEOUT)
                .add_service(health_service.clone())
                .serve_with_incoming_shutdown(
                    TcpIncoming::from(listener).with_nodelay(Some(true)),
                    async move {
                        let _ = drain.wait_for(|drain| *drain).await;
                    },
                ),
        )
    });
    let server = builder
        .layer(tower::limit::GlobalConcurrencyLimitLayer::new(
            GLOBAL_CONCURRENCY,
        ))
        .layer(RpcTelemetryLayer)
        .add_service(health_service)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .add_service(
            RecoveryServiceServer::new(RecoveryApi::new(options.recovery.clone(), options.callers))
                .max_decoding_message_size(MAX_MESSAGE_BYTES)
                .max_encoding_message_size(MAX_MESSAGE_BYTES),
        )
        .serve_with_incoming_shutdown(
            TcpIncoming::from(listener).with_nodelay(Some(true)),
            async move {
                // Resolves when `drain_tx` sends (or is dropped).
                let _ = drain_rx.wait_for(|drain| *drain).await;
            },
        );
    tokio::pin!(server);

    // Health follows the database: SERVING while it answers.
    let probe = {
        let reporter = reporter.clone();
        let recovery = options.recovery.clone();
        tokio::spawn(async move {
            let mut serving = None;
            loop {
                let now_serving = tokio::time::timeout(DB_PROBE_TIMEOUT, recovery.ready())
                    .await
                    .unwrap_or(false);
                if !now_serving && serving != Some(false) {
                    tracing::warn!("database unreachable: health NOT_SERVING");
                }
                if serving != Some(now_serving) {
                    let status = if now_serving {
                        ServingStatus::Serving
                    } else {
                        ServingStatus::NotServing
                    };
                    set_status(&reporter, status).await;
                    serving = Some(now_serving);
                }
                tokio::select! {
                    () = tokio::time::sleep(DB_PROBE_INTERVAL) => {}
                    _ = stop_probe.wait_for(|drain| *drain) => break,
                }
            }
        })
    };

    tracing::info!(%addr, "serving identity.recovery.v1.RecoveryService, grpc.health.v1.Health and reflection");
    let result = tokio::select! {
        result = &mut server => Some(result),
        () = shutdown => None,
    };
    if let Some(result) = result {
        // The transport stopped on its own: report it as it is.
        probe.abort();
        if let Some(health_only) = &health_only {
            health_only.abort();
        }
        return result.map_err(ServeError::Transport);
    }

    tracing::info!(
        grace = ?options.shutdown_grace,
        "shutting down: health NOT_SERVING, draining in-flight calls"
    );
    let _ = drain_tx.send(true);
    let _ = probe.await;
    set_status(&reporter, ServingStatus::NotServing).await;
    reporter
        .set_service_status(LIVENESS, ServingStatus::NotServing)
        .await;
    if let Some(health_only) = health_only {
        // Health calls are instant; the probe port closes with the main one.
        health_only.abort();
    }
    match tokio::time::timeout(options.shutdown_grace, &mut server).await {
        Ok(result) => result.map_err(ServeError::Transport)?,
        Err(_) => tracing::warn!(
            grace = ?options.shutdown_grace,
            "grace period over: dropping the connections still open"
        ),
    }
    tracing::info!("stopped");
    Ok(())
}

async fn set_status(reporter: &HealthReporter, status: ServingStatus) {
    reporter.set_service_status("", status).await;
    reporter.set_service_status(SERVICE_NAME, status).await;
}

/// Resolves on SIGTERM or SIGINT (Ctrl-C). The handlers are installed when this is called,
/// not when the future is first polled, so a signal that arrives as soon as health says
/// SERVING already drains instead of killing the process.
pub fn shutdown_signal() -> impl Future<Output = ()> + Send {
    #[cfg(unix)]
    let handlers = {
        use tokio::signal::unix::{SignalKind, signal};
        (
            signal(SignalKind::interrupt()),
            signal(SignalKind::terminate()),
        )
    };
    async move {
        #[cfg(unix)]
        {
            let (interrupt, terminate) = handlers;
            match (interrupt, terminate) {
                (Ok(mut interrupt), Ok(mut terminate)) => {
                    tokio::select! {
                        _ = interrupt.recv() => tracing::info!(signal = "SIGINT", "shutdown requested"),
                        _ = terminate.recv() => tracing::info!(signal = "SIGTERM", "shutdown requested"),
                    }
                }
                (Err(err), _) | (_, Err(err)) => {
                    tracing::error!(error = %err, "cannot listen for SIGINT/SIGTERM");
                    std::future::pending::<()>().await;
                }
            }
        }
        #[cfg(not(unix))]
        {
            if let Err(err) = tokio::signal::ctrl_c().await {
                tracing::error!(error = %err, "cannot listen for Ctrl-C");
                std::future::pending::<()>().await;
            }
            tracing::info!(signal = "Ctrl-C", "shutdown requested");
        }
    }
}
