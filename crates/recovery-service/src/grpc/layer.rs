//! One SERVER span per RPC, named `package.Service/Method`, with the OpenTelemetry RPC
//! attributes, a child of the caller's W3C `traceparent`; and the RPC duration metric.

use std::{
    future::Future,
    pin::Pin,
    task::{Context, Poll},
    time::Instant,
};

use opentelemetry::{propagation::Extractor, trace::TraceContextExt as _};
use tracing::Instrument as _;
use tracing_opentelemetry::OpenTelemetrySpanExt as _;

/// A random W3C trace id (32 lower-case hex digits), for logs without an exported trace.
fn fresh_trace_id() -> String {
    crate::crypto::random_bytes::<16>().map_or_else(|_| "0".repeat(32), hex::encode)
}

/// A request body that is not the RPC's protobuf message is the caller's fault: tonic's codec
/// answers INTERNAL ("failed to decode Protobuf message"), re-labelled INVALID_ARGUMENT here,
/// message kept (the transport's own answer, so without ErrorInfo, as the contract says).
fn undecodable_is_invalid_argument(headers: &mut http::HeaderMap) {
    let internal = headers
        .get("grpc-status")
        .is_some_and(|v| v.as_bytes() == b"13");
    let decode = headers.get("grpc-message").is_some_and(|v| {
        let text = String::from_utf8_lossy(v.as_bytes()).to_ascii_lowercase();
        text.contains("failed%20to%20decode") || text.contains("failed to decode")
    });
    if internal && decode {
        headers.insert("grpc-status", http::HeaderValue::from_static("3"));
    }
}

/// Whether `service/method` is one the server serves (the contract, health, reflection).
fn known_rpc(service: &str, method: &str) -> bool {
    static KNOWN: std::sync::OnceLock<std::collections::HashSet<String>> =
        std::sync::OnceLock::new();
    KNOWN
        .get_or_init(|| {
            use prost::Message as _;
            let mut known: std::collections::HashSet<String> = [
                "grpc.health.v1.Health/Check",
                "grpc.health.v1.Health/Watch",
                "grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
                "grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
            ]
            .into_iter()
            .map(str::to_owned)
            .collect();
            if let Ok(set) =
                prost_types::FileDescriptorSet::decode(recovery_proto::FILE_DESCRIPTOR_SET)
            {
                for file in &set.file {
                    for svc in &file.service {
                        for m in &svc.method {
                            known.insert(format!("{}.{}/{}", file.package(), svc.name(), m.name()));
                        }
                    }
                }
            }
            known
        })
        .contains(&format!("{service}/{method}"))
}

/// The tower layer.
#[derive(Debug, Clone, Copy, Default)]
pub struct RpcTelemetryLayer;

impl<S> tower::Layer<S> for RpcTelemetryLayer {
    type Service = RpcTelemetry<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RpcTelemetry { inner }
    }
}

/// The service the layer wraps around the router.
#[derive(Debug, Clone)]
pub struct RpcTelemetry<S> {
    inner: S,
}

struct Headers<'a>(&'a http::HeaderMap);

impl Extractor for Headers<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(http::HeaderName::as_str).collect()
    }
}

impl<S, B, R> tower::Service<http::Request<B>> for RpcTelemetry<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<R>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    B: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let path = request.uri().path().trim_start_matches('/').to_owned();
        let (service, method) = path.split_once('/').unwrap_or((path.as_str(), ""));
        let (service, method) = (service.to_owned(), method.to_owned());
        let span = tracing::info_span!(
            "grpc.server",
            otel.name = %path,
            otel.kind = "server",
            rpc.system = "grpc",
            rpc.service = %service,
            rpc.method = %method,
            rpc.grpc.status_code = tracing::field::Empty,
            rpc.error_reason = tracing::field::Empty,
            otel.status_code = tracing::field::Empty,
            trace_id = tracing::field::Empty,
        );
        let parent = opentelemetry::global::get_text_map_propagator(|propagator| {
            propagator.extract(&Headers(request.headers()))
        });
        let caller_trace = parent.span().span_context().trace_id();
        let _ = span.set_parent(parent);
        // Every request's log lines carry a trace id: the exported span's, else the caller's
        // `traceparent`, else a fresh one (no collector and no caller trace).
        let trace_id = [
            span.context().span().span_context().trace_id(),
            caller_trace,
        ]
        .into_iter()
        .find(|id| *id != opentelemetry::trace::TraceId::INVALID)
        .map_or_else(fresh_trace_id, |id| id.to_string());
        span.record("trace_id", tracing::field::display(trace_id));
        // Take the service that was made ready; leave a clone for the next call.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let started = Instant::now();
        Box::pin(async move {
            let mut result = inner.call(request).instrument(span.clone()).await;
            if let Ok(response) = &mut result {
                undecodable_is_invalid_argument(response.headers_mut());
            }
            let code = match &result {
                Ok(response) => response
                    .headers()
                    .get("grpc-status")
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.parse::<i64>().ok())
                    .unwrap_or(0),
                Err(_) => 2,
            };
            span.record("rpc.grpc.status_code", code);
            if code != 0 {
                span.record("otel.status_code", "ERROR");
            }
            // Only the contract's methods become metric labels: any other path is `unknown`,
            // so a caller cannot grow the label set.
            let (service, method) = if known_rpc(&service, &method) {
                (service.as_str(), method.as_str())
            } else {
                ("unknown", "unknown")
            };
            crate::metrics::get().rpc(service, method, code, started.elapsed());
            result
        })
    }
}

#[cfg(test)]
mod tests {
    use super::known_rpc;

    /// A caller cannot grow the metric label set: only served methods are labels.
    #[test]
    fn undecodable_requests_are_the_callers_fault() {
        let mut headers = http::HeaderMap::new();
        headers.insert("grpc-status", http::HeaderValue::from_static("13"));
        headers.insert(
            "grpc-message",
            http::HeaderValue::from_static("failed%20to%20decode%20Protobuf%20message"),
        );
        super::undecodable_is_invalid_argument(&mut headers);
        assert_eq!(headers["grpc-status"], "3");
        // Any other INTERNAL stays INTERNAL.
        let mut headers = http::HeaderMap::new();
        headers.insert("grpc-status", http::HeaderValue::from_static("13"));
        headers.insert(
            "grpc-message",
            http::HeaderValue::from_static("internal%20error"),
        );
        super::undecodable_is_invalid_argument(&mut headers);
        assert_eq!(headers["grpc-status"], "13");
    }

    #[test]
    fn only_served_methods_become_metric_labels() {
        assert!(known_rpc(
            "identity.recovery.v1.RecoveryService",
            "RecoverAccount"
        ));
        assert!(known_rpc("grpc.health.v1.Health", "Check"));
        assert!(known_rpc(
            "grpc.reflection.v1alpha.ServerReflection",
            "ServerReflectionInfo"
        ));
        for (service, method) in [
            ("identity.recovery.v1.RecoveryService", "DropTables"),
            ("identity.recovery.v1.RecoveryServic", "RecoverAccount"),
            ("x".repeat(10_000).as_str(), "y"),
            ("", ""),
        ] {
            assert!(!known_rpc(service, method), "{service}/{method}");
        }
    }
}
