//! gRPC connections to the service: plaintext or (mutual) TLS, several HTTP/2 connections
//! shared round-robin by the clients.

use std::{
    net::SocketAddr,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use recovery_proto::v1::recovery_service_client::RecoveryServiceClient;

/// A client of the service.
pub type RecoveryClient = RecoveryServiceClient<Channel>;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};

use crate::cli::TlsArgs;

/// How to reach the service.
#[derive(Debug, Clone)]
pub struct Target {
    pub addr: SocketAddr,
    tls: Option<ClientTlsConfig>,
}

impl Target {
    /// Reads the TLS files, if any.
    pub fn new(addr: SocketAddr, args: &TlsArgs) -> anyhow::Result<Self> {
        let tls = match &args.tls_ca {
            None => None,
            Some(ca) => {
                let read = |path: &std::path::Path| {
                    std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))
                };
                let mut config = ClientTlsConfig::new()
                    .ca_certificate(Certificate::from_pem(read(ca)?))
                    .domain_name(args.tls_domain.clone());
                if let (Some(cert), Some(key)) = (&args.tls_cert, &args.tls_key) {
                    config = config.identity(Identity::from_pem(read(cert)?, read(key)?));
                }
                Some(config)
            }
        };
        Ok(Self { addr, tls })
    }

    /// The same TLS settings for another address.
    pub fn with_addr(&self, addr: SocketAddr) -> Self {
        Self {
            addr,
            tls: self.tls.clone(),
        }
    }

    /// One HTTP/2 connection.
    pub async fn connect(&self) -> anyhow::Result<Channel> {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        let mut endpoint = Endpoint::from_shared(format!("{scheme}://{}", self.addr))?
            .connect_timeout(Duration::from_secs(5))
            .tcp_nodelay(true);
        if let Some(tls) = &self.tls {
            endpoint = endpoint.tls_config(tls.clone())?;
        }
        endpoint
            .connect()
            .await
            .with_context(|| format!("cannot connect to {}", self.addr))
    }

    /// `n` connections.
    pub async fn connect_many(&self, n: usize) -> anyhow::Result<Clients> {
        let mut channels = Vec::with_capacity(n.max(1));
        for _ in 0..n.max(1) {
            channels.push(self.connect().await?);
        }
        Ok(Clients { channels })
    }

    /// Polls the health service (`""`) until it answers SERVING, for up to `timeout`.
    pub async fn wait_serving(&self, timeout: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + timeout;
        let mut last = String::from("no answer");
        loop {
            if let Ok(channel) = self.connect().await {
                let answer = HealthClient::new(channel)
                    .check(HealthCheckRequest {
                        service: String::new(),
                    })
                    .await;
                match answer.map(|r| r.into_inner().status()) {
                    Ok(ServingStatus::Serving) => return Ok(()),
                    Ok(other) => last = format!("{other:?}"),
                    Err(status) => last = status.to_string(),
                }
            }
            if Instant::now() > deadline {
                bail!("{} is not SERVING after {timeout:?}: {last}", self.addr);
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}

/// The connections the clients share.
#[derive(Debug, Clone)]
pub struct Clients {
    channels: Vec<Channel>,
}

impl Clients {
    /// The RecoveryService client of worker `n`.
    pub fn recovery(&self, n: usize) -> RecoveryServiceClient<Channel> {
        RecoveryServiceClient::new(self.channel(n))
    }

    /// The Health client of worker `n`.
    pub fn health(&self, n: usize) -> HealthClient<Channel> {
        HealthClient::new(self.channel(n))
    }

    fn channel(&self, n: usize) -> Channel {
        // `connect_many` makes at least one.
        self.channels[n % self.channels.len()].clone()
    }
}
