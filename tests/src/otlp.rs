//! An in-process OTLP/gRPC receiver (traces and metrics) for tests and benchmarks.

use std::{
    net::SocketAddr,
    sync::{Arc, Mutex},
};

use opentelemetry_proto::tonic::{
    collector::{
        metrics::v1::{
            ExportMetricsServiceRequest, ExportMetricsServiceResponse,
            metrics_service_server::{MetricsService, MetricsServiceServer},
        },
        trace::v1::{
            ExportTraceServiceRequest, ExportTraceServiceResponse,
            trace_service_server::{TraceService, TraceServiceServer},
        },
    },
    trace::v1::Span,
};
use tonic::{Request, Response, Status};

/// What the receiver got.
#[derive(Debug, Clone, Default)]
pub struct Collector {
    pub traces: Arc<Mutex<Vec<ExportTraceServiceRequest>>>,
    pub metrics: Arc<Mutex<Vec<ExportMetricsServiceRequest>>>,
}

#[tonic::async_trait]
impl TraceService for Collector {
    async fn export(
        &self,
        request: Request<ExportTraceServiceRequest>,
    ) -> Result<Response<ExportTraceServiceResponse>, Status> {
        self.traces
            .lock()
            .expect("collector")
            .push(request.into_inner());
        Ok(Response::new(ExportTraceServiceResponse {
            partial_success: None,
        }))
    }
}

#[tonic::async_trait]
impl MetricsService for Collector {
    async fn export(
        &self,
        request: Request<ExportMetricsServiceRequest>,
    ) -> Result<Response<ExportMetricsServiceResponse>, Status> {
        self.metrics
            .lock()
            .expect("collector")
            .push(request.into_inner());
        Ok(Response::new(ExportMetricsServiceResponse {
            partial_success: None,
        }))
    }
}

impl Collector {
    /// Listens on an ephemeral loopback port; answers its address.
    pub async fn start(&self) -> SocketAddr {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("collector");
        let addr = listener.local_addr().expect("collector");
        let router = tonic::transport::Server::builder()
            .add_service(TraceServiceServer::new(self.clone()))
            .add_service(MetricsServiceServer::new(self.clone()));
        tokio::spawn(
            router.serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener)),
        );
        addr
    }

    /// Every span received so far.
    pub fn spans(&self) -> Vec<Span> {
        self.traces
            .lock()
            .expect("collector")
            .iter()
            .flat_map(|r| r.resource_spans.iter())
            .flat_map(|r| r.scope_spans.iter())
            .flat_map(|s| s.spans.iter().cloned())
            .collect()
    }

    /// The latest value of the integer counter `name` (summed over its data points), if any
    /// export carried it.
    pub fn counter(&self, name: &str) -> Option<i64> {
        use opentelemetry_proto::tonic::metrics::v1::{metric::Data, number_data_point::Value};
        let metrics = self.metrics.lock().expect("collector");
        metrics
            .iter()
            .flat_map(|r| r.resource_metrics.iter())
            .flat_map(|r| r.scope_metrics.iter())
            .flat_map(|s| s.metrics.iter())
            .filter(|m| m.name == name)
            .filter_map(|m| match &m.data {
                Some(Data::Sum(sum)) => Some(
                    sum.data_points
                        .iter()
                        .map(|p| match p.value {
                            Some(Value::AsInt(v)) => v,
                            // Counters here are integers; a float point counts as read.
                            Some(Value::AsDouble(v)) => v as i64,
                            None => 0,
                        })
                        .sum(),
                ),
                _ => None,
            })
            .next_back()
    }

    /// Every value the integer gauge `name` was exported with, in the order of the exports.
    pub fn gauge_values(&self, name: &str) -> Vec<i64> {
        use opentelemetry_proto::tonic::metrics::v1::{metric::Data, number_data_point::Value};
        let metrics = self.metrics.lock().expect("collector");
        metrics
            .iter()
            .flat_map(|r| r.resource_metrics.iter())
            .flat_map(|r| r.scope_metrics.iter())
            .flat_map(|s| s.metrics.iter())
            .filter(|m| m.name == name)
            .filter_map(|m| match &m.data {
                Some(Data::Gauge(gauge)) => Some(gauge.data_points.iter().map(|p| match p.value {
                    Some(Value::AsInt(v)) => v,
                    Some(Value::AsDouble(v)) => v as i64,
                    None => 0,
                })),
                _ => None,
            })
            .flatten()
            .collect()
    }

    /// Everything received, as text.
    pub fn dump(&self) -> String {
        format!(
            "{:?}{:?}",
            self.traces.lock().expect("collector"),
            self.metrics.lock().expect("collector")
        )
    }
}
