//! Logging and tracing setup shared by every subcommand: human-readable or JSON logs on stderr,
//! filtered by `RUST_LOG` (default `info`), and — behind `--otlp-endpoint` — the same spans
//! exported as OpenTelemetry traces over OTLP/HTTP. Stdout stays free for command output such as
//! `crds`. Export is off unless asked for: an operator must not need a collector to start.

use clap::{Args, ValueEnum};
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

#[derive(Debug, Clone, Copy, Default, ValueEnum)]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

#[derive(Debug, Args)]
pub struct TelemetryArgs {
    /// Log format on stderr.
    #[arg(long, global = true, env = "EG_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// Export traces to this OTLP/HTTP collector (e.g. `http://otel-collector:4318`; the
    /// `/v1/traces` path is added). Off when unset.
    #[arg(long, global = true, env = "EG_OTLP_ENDPOINT")]
    pub otlp_endpoint: Option<String>,
    /// `service.name` of exported traces.
    #[arg(
        long,
        global = true,
        env = "OTEL_SERVICE_NAME",
        default_value = "eg-operator"
    )]
    pub otlp_service_name: String,
}

/// Why tracing export could not start (logging still works).
#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    #[error("OTLP exporter for {endpoint}: {source}")]
    Exporter {
        endpoint: String,
        #[source]
        source: opentelemetry_otlp::ExporterBuildError,
    },
}

impl TelemetryError {
    pub fn category(&self) -> &'static str {
        match self {
            TelemetryError::Exporter { .. } => "otlp_exporter",
        }
    }
}

/// Keeps trace export alive; dropping it flushes the spans not yet sent.
#[derive(Debug, Default)]
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

impl Drop for Telemetry {
    fn drop(&mut self) {
        if let Some(provider) = self.provider.take()
            && let Err(e) = provider.shutdown()
        {
            eprintln!("eg-operator: flushing traces: {e}");
        }
    }
}

fn provider(args: &TelemetryArgs, endpoint: &str) -> Result<SdkTracerProvider, TelemetryError> {
    let traces = format!("{}/v1/traces", endpoint.trim_end_matches('/'));
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_endpoint(traces)
        .build()
        .map_err(|source| TelemetryError::Exporter {
            endpoint: endpoint.to_owned(),
            source,
        })?;
    let resource = opentelemetry_sdk::Resource::builder()
        .with_service_name(args.otlp_service_name.clone())
        .build();
    Ok(SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(resource)
        .build())
}

/// Installs logging (and trace export when configured). Keep the returned guard until exit.
pub fn init(args: &TelemetryArgs) -> Telemetry {
    let filter = || EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let fmt = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    let logs = match args.log_format {
        LogFormat::Text => fmt.boxed(),
        LogFormat::Json => fmt.json().boxed(),
    };
    let (provider, problem) = match args.otlp_endpoint.as_deref() {
        Some(endpoint) => match provider(args, endpoint) {
            Ok(p) => (Some(p), None),
            Err(e) => (None, Some(e)),
        },
        None => (None, None),
    };
    let traces = provider.as_ref().map(|p| {
        tracing_opentelemetry::layer()
            .with_tracer(p.tracer("eg-operator"))
            .with_filter(filter())
    });
    tracing_subscriber::registry()
        .with(logs.with_filter(filter()))
        .with(traces)
        .init();
    if let Some(e) = problem {
        tracing::error!(error = %e, category = e.category(), "trace export disabled");
    }
    Telemetry { provider }
}
