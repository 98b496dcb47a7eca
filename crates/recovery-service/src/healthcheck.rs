//! `recovery-service healthcheck`: asks a running server's `grpc.health.v1.Health`, for
//! Kubernetes exec probes and Docker HEALTHCHECK. Exit 0 only when the answer is SERVING.

use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    time::Duration,
};

use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};

/// Why the check did not get SERVING.
#[derive(Debug, thiserror::Error)]
pub enum HealthcheckError {
    #[error("cannot connect to {addr}: {source}")]
    Connect {
        addr: SocketAddr,
        #[source]
        source: tonic::transport::Error,
    },
    #[error("no answer from {addr} within {timeout:?}")]
    Timeout { addr: SocketAddr, timeout: Duration },
    #[error("health check of {addr} failed: {status}")]
    Rpc {
        addr: SocketAddr,
        status: tonic::Status,
    },
    #[error("{addr} answered {status}")]
    NotServing { addr: SocketAddr, status: String },
    #[error("TLS: {0}")]
    Tls(String),
}

/// A server listening on an unspecified address (`0.0.0.0`, `[::]`) is reached on loopback.
pub fn dialable(addr: SocketAddr) -> SocketAddr {
    match addr.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => {
            SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), addr.port())
        }
        IpAddr::V6(ip) if ip.is_unspecified() => {
            SocketAddr::new(IpAddr::V6(Ipv6Addr::LOCALHOST), addr.port())
        }
        _ => addr,
    }
}

/// TLS for the check: the CA that signed the server's certificate, and optionally a client
/// certificate and key (for a server with mutual TLS).
#[derive(Debug, Clone, Default)]
pub struct ClientTls {
    pub ca: Option<std::path::PathBuf>,
    pub cert: Option<std::path::PathBuf>,
    pub key: Option<std::path::PathBuf>,
    /// The name to expect in the server certificate (default: `localhost`).
    pub domain: Option<String>,
}

/// Checks `service` ("" for the whole server) at `addr`, over TLS when `tls` names a CA.
pub async fn check(
    addr: SocketAddr,
    service: &str,
    timeout: Duration,
    tls: &ClientTls,
) -> Result<(), HealthcheckError> {
    let addr = dialable(addr);
    let attempt = async {
        let scheme = if tls.ca.is_some() { "https" } else { "http" };
        let mut endpoint = tonic::transport::Endpoint::from_shared(format!("{scheme}://{addr}"))
            .map_err(|source| HealthcheckError::Connect { addr, source })?;
        if let Some(ca) = &tls.ca {
            let read = |path: &std::path::Path| {
                std::fs::read(path).map_err(|e| {
                    HealthcheckError::Tls(format!("cannot read {}: {e}", path.display()))
                })
            };
            let mut config = tonic::transport::ClientTlsConfig::new()
                .ca_certificate(tonic::transport::Certificate::from_pem(read(ca)?))
                .domain_name(tls.domain.clone().unwrap_or_else(|| "localhost".to_owned()));
            if let (Some(cert), Some(key)) = (&tls.cert, &tls.key) {
                config = config.identity(tonic::transport::Identity::from_pem(
                    read(cert)?,
                    read(key)?,
                ));
            }
            endpoint = endpoint
                .tls_config(config)
                .map_err(|source| HealthcheckError::Connect { addr, source })?;
        }
        let channel = endpoint
            .connect_timeout(timeout)
            .connect()
            .await
            .map_err(|source| HealthcheckError::Connect { addr, source })?;
        let response = HealthClient::new(channel)
            .check(HealthCheckRequest {
                service: service.to_owned(),
            })
            .await
            .map_err(|status| HealthcheckError::Rpc { addr, status })?;
        let status = response.into_inner().status();
        if status == ServingStatus::Serving {
            Ok(())
        } else {
            Err(HealthcheckError::NotServing {
                addr,
                status: status.as_str_name().to_owned(),
            })
        }
    };
    tokio::time::timeout(timeout, attempt)
        .await
        .map_err(|_| HealthcheckError::Timeout { addr, timeout })?
}
