//! Logs, traces and metrics, set up in one place. [`init`] returns a guard; call
//! [`TelemetryGuard::shutdown`] before exit to flush what is buffered.
//!
//! - Logs: `tracing-subscriber`, human lines or JSON (`RECOVERY_LOG_FORMAT=json`), filtered by
//!   `RUST_LOG` (default `info`), to standard error. Each RPC's log lines carry its `trace_id`.
//! - Traces and metrics: OTLP over gRPC when `OTEL_EXPORTER_OTLP_ENDPOINT` (or the per-signal
//!   `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` / `OTEL_EXPORTER_OTLP_METRICS_ENDPOINT`) is set; the
//!   standard `OTEL_SERVICE_NAME` (default `recovery-service`), `OTEL_RESOURCE_ATTRIBUTES` and
//!   `OTEL_TRACES_SAMPLER(_ARG)` apply. Exports run in the background with a timeout, so an
//!   unreachable collector never slows an RPC or holds shutdown past the export timeout.

use std::{io::IsTerminal as _, time::Duration};

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::WithExportConfig as _;
use opentelemetry_sdk::{Resource, metrics::SdkMeterProvider, trace::SdkTracerProvider};
use tracing_subscriber::{
    EnvFilter, Layer as _, fmt, layer::SubscriberExt as _, util::SubscriberInitExt as _,
};

use crate::config::LogFormat;

/// How long one export may take before it is abandoned.
const EXPORT_TIMEOUT: Duration = Duration::from_secs(3);

/// Keeps telemetry alive until [`TelemetryGuard::shutdown`].
#[derive(Debug)]
#[must_use = "telemetry stops when the guard is dropped"]
pub struct TelemetryGuard {
    tracer: Option<SdkTracerProvider>,
    meter: Option<SdkMeterProvider>,
}

fn env_set(name: &str) -> bool {
    std::env::var(name).is_ok_and(|v| !v.trim().is_empty())
}

fn resource() -> Resource {
    let named = env_set("OTEL_SERVICE_NAME")
        || std::env::var("OTEL_RESOURCE_ATTRIBUTES").is_ok_and(|a| a.contains("service.name="));
    let builder = Resource::builder();
    let builder = if named {
        builder
    } else {
        builder.with_service_name("recovery-service")
    };
    builder
        .with_attribute(opentelemetry::KeyValue::new(
            "service.version",
            env!("CARGO_PKG_VERSION"),
        ))
        .build()
}

/// The span batching: the standard `OTEL_BSP_*` variables where set; otherwise batches of
/// 2,048 spans (the SDK's 512 meant ~80 exports a second at 20k calls/s) and room for 16,384
/// spans in the queue (the SDK's 2,048 filled in 50 ms at that rate and dropped spans while an
/// export was in flight).
fn batch_config() -> opentelemetry_sdk::trace::BatchConfig {
    let mut config = opentelemetry_sdk::trace::BatchConfigBuilder::default();
    if !env_set("OTEL_BSP_MAX_QUEUE_SIZE") {
        config = config.with_max_queue_size(16_384);
    }
    if !env_set("OTEL_BSP_MAX_EXPORT_BATCH_SIZE") {
        config = config.with_max_export_batch_size(2_048);
    }
    config.build()
}

/// Installs logging, and OTLP export when configured. Call inside the Tokio runtime: the
/// exporters' gRPC channels live on it.
pub fn init(format: LogFormat) -> TelemetryGuard {
    let traces =
        env_set("OTEL_EXPORTER_OTLP_ENDPOINT") || env_set("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT");
    let metrics =
        env_set("OTEL_EXPORTER_OTLP_ENDPOINT") || env_set("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT");
    let mut problems = Vec::new();

    let tracer = if traces {
        match opentelemetry_otlp::SpanExporter::builder()
            .with_tonic()
            .with_timeout(EXPORT_TIMEOUT)
            .build()
        {
            Ok(exporter) => Some(
                SdkTracerProvider::builder()
                    .with_span_processor(
                        opentelemetry_sdk::trace::BatchSpanProcessor::builder(exporter)
                            .with_batch_config(batch_config())
                            .build(),
                    )
                    .with_resource(resource())
                    .build(),
            ),
            Err(err) => {
                problems.push(format!("trace export disabled: {err}"));
                None
            }
        }
    } else {
        None
    };
    let meter = if metrics {
        match opentelemetry_otlp::MetricExporter::builder()
            .with_tonic()
            .with_timeout(EXPORT_TIMEOUT)
            .build()
        {
            Ok(exporter) => {
                let provider = SdkMeterProvider::builder()
                    .with_periodic_exporter(exporter)
                    .with_resource(resource())
                    .build();
                opentelemetry::global::set_meter_provider(provider.clone());
                Some(provider)
            }
            Err(err) => {
                problems.push(format!("metric export disabled: {err}"));
                None
            }
        }
    } else {
        None
    };
    opentelemetry::global::set_text_map_propagator(
        opentelemetry_sdk::propagation::TraceContextPropagator::new(),
    );

    // RUST_LOG filters the log lines only: traces keep every span of this service whatever
    // the log level (sampling is OTEL_TRACES_SAMPLER's job).
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let fmt_layer = match format {
        LogFormat::Text => fmt::layer()
            .fmt_fields(TextFields)
            .with_writer(std::io::stderr)
            .with_ansi(std::io::stderr().is_terminal())
            .boxed(),
        LogFormat::Json => fmt::layer()
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(true)
            .with_writer(std::io::stderr)
            .boxed(),
    }
    .with_filter(filter);
    let otel_layer = tracer.as_ref().map(|provider| {
        // Each span carries what its name and attributes say, nothing per span besides: the
        // layer's defaults would add source file and line, thread name and id and the module
        // path to every span (six attributes), and switch the OpenTelemetry context on every
        // poll. Together they cost more than the span itself (GetRecoveryStatus with export
        // on: 0.71–0.83 of off with them, see `benches/telemetry.rs`).
        tracing_opentelemetry::layer()
            .with_tracer(provider.tracer("recovery-service"))
            .with_tracked_inactivity(false)
            .with_location(false)
            .with_threads(false)
            .with_target(false)
            .with_context_activation(false)
            .with_filter(
                tracing_subscriber::filter::Targets::new()
                    .with_target("recovery_service", tracing::Level::INFO)
                    .with_target("recovery_storage", tracing::Level::INFO),
            )
    });
    // A second init (in tests) keeps the first subscriber.
    let _ = tracing_subscriber::registry()
        .with(fmt_layer)
        .with(otel_layer)
        .try_init();
    for problem in problems {
        tracing::warn!(%problem, "OpenTelemetry");
    }
    if tracer.is_some() || meter.is_some() {
        tracing::info!(
            traces = tracer.is_some(),
            metrics = meter.is_some(),
            "exporting OpenTelemetry over OTLP/gRPC"
        );
    }
    TelemetryGuard { tracer, meter }
}

/// Span fields in text logs: the RPC once (`rpc=package.Service/Method`) and the `trace_id`;
/// the other OpenTelemetry attributes (`otel.*`, `rpc.*`) are for traces, not for people.
#[derive(Debug, Clone, Copy, Default)]
struct TextFields;

impl<'writer> fmt::FormatFields<'writer> for TextFields {
    fn format_fields<R: tracing_subscriber::field::RecordFields>(
        &self,
        writer: fmt::format::Writer<'writer>,
        fields: R,
    ) -> std::fmt::Result {
        let mut visitor = TextVisitor {
            writer,
            first: true,
            result: Ok(()),
        };
        fields.record(&mut visitor);
        visitor.result
    }

    fn add_fields(
        &self,
        current: &'writer mut fmt::FormattedFields<Self>,
        fields: &tracing::span::Record<'_>,
    ) -> std::fmt::Result {
        let mut visitor = TextVisitor {
            first: current.fields.is_empty(),
            writer: current.as_writer(),
            result: Ok(()),
        };
        fields.record(&mut visitor);
        visitor.result
    }
}

struct TextVisitor<'writer> {
    writer: fmt::format::Writer<'writer>,
    first: bool,
    result: std::fmt::Result,
}

impl tracing::field::Visit for TextVisitor<'_> {
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        let name = match field.name() {
            "otel.name" => "rpc",
            name if name.starts_with("otel.") || name.starts_with("rpc.") => return,
            name => name,
        };
        if self.result.is_err() {
            return;
        }
        let separator = if self.first { "" } else { " " };
        self.first = false;
        self.result = if name == "message" {
            write!(self.writer, "{separator}{value:?}")
        } else {
            write!(self.writer, "{separator}{name}={value:?}")
        };
    }

    fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
        // Strings without quotes, as the default formatter's `%` fields read.
        self.record_debug(field, &format_args!("{value}"));
    }
}

impl TelemetryGuard {
    /// Flushes and stops the exporters, off the async workers (an export needs them to make
    /// progress) and bounded by the export timeout.
    pub async fn shutdown(mut self) {
        let tracer = self.tracer.take();
        let meter = self.meter.take();
        if tracer.is_none() && meter.is_none() {
            return;
        }
        let flush = tokio::task::spawn_blocking(move || {
            if let Some(tracer) = tracer {
                let _ = tracer.shutdown_with_timeout(EXPORT_TIMEOUT);
            }
            if let Some(meter) = meter {
                let _ = meter.shutdown_with_timeout(EXPORT_TIMEOUT);
            }
        });
        let _ = tokio::time::timeout(EXPORT_TIMEOUT * 2, flush).await;
    }
}
