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

/// Checks `service` ("" for the whole server) at `addr` over plaintext gRPC.
pub async fn check(
    addr: SocketAddr,
    service: &str,
    timeout: Duration,
) -> Result<(), HealthcheckError> {
    let addr = dialable(addr);
    let attempt = async {
        let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
            .map_err(|source| HealthcheckError::Connect { addr, source })?
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
