//! `corral`: the one binary. Server, agent and `dev` roles, and the CLI
//! client that talks to `$CORRAL_ADDR`.

mod cmd;
mod config;
mod datadir;
mod output;
mod rollout;
mod shutdown;
mod specdiff;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::{Args, Parser, Subcommand};
use corral_client::Client;

#[derive(Parser)]
#[command(
    name = "corral",
    version,
    about = "container scheduling without the hype"
)]
struct Cli {
    /// The server's API address (client commands).
    #[arg(
        long = "api",
        global = true,
        env = "CORRAL_ADDR",
        default_value = "http://127.0.0.1:7070"
    )]
    addr: String,
    /// API token, when the server requires one.
    #[arg(long, global = true, env = "CORRAL_TOKEN", hide_env_values = true)]
    token: Option<String>,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run a server and an agent in one process (one machine).
    Dev {
        #[arg(long)]
        data_dir: Option<PathBuf>,
        /// Where the API listens.
        #[arg(long = "addr", default_value = "127.0.0.1:7070")]
        listen: SocketAddr,
        /// containerd's CRI socket (default: the machine's if it answers,
        /// else a private containerd under the data dir).
        #[arg(long)]
        cri_socket: Option<PathBuf>,
        /// Run exec tasks only, without containerd.
        #[arg(long)]
        no_containers: bool,
        /// The private containerd's pod bridge (at most 15 characters);
        /// two `corral dev` on one machine need different ones.
        #[arg(long, default_value = cmd::dev::DEFAULT_POD_BRIDGE)]
        pod_bridge: String,
        /// The private containerd's pod subnet (IPv4 CIDR).
        #[arg(long, default_value = cmd::dev::DEFAULT_POD_SUBNET)]
        pod_subnet: String,
    },
    /// Run the control plane.
    Server {
        /// TOML config file (`[server]` table); flags and env win over it.
        #[arg(long, env = "CORRAL_CONFIG")]
        config: Option<PathBuf>,
        /// Default /var/lib/corral/server.
        #[arg(long)]
        data_dir: Option<PathBuf>,
        /// Where the API listens (default 127.0.0.1:7070).
        #[arg(long = "addr")]
        listen: Option<SocketAddr>,
    },
    /// Run a node agent.
    Agent(AgentArgs),
    /// Submit a job file and wait until it runs.
    Run {
        file: PathBuf,
        /// Return once submitted.
        #[arg(long)]
        detach: bool,
        #[arg(long)]
        json: bool,
        /// Give up waiting after this long (e.g. 5m). Default: 5m for the
        /// allocations; a deployment is followed until it ends.
        #[arg(long, value_parser = valid_duration)]
        timeout: Option<String>,
    },
    /// Show what a job file would change, storing nothing.
    Plan {
        file: PathBuf,
        #[arg(long)]
        json: bool,
    },
    /// List jobs, or show one.
    Status {
        job: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Stop a job (and with --purge forget it).
    Stop {
        job: String,
        #[arg(long)]
        purge: bool,
        #[arg(long)]
        json: bool,
    },
    /// Show a job's (or an allocation's) task output.
    Logs(cmd::logs::LogsArgs),
    /// Allocations.
    #[command(subcommand)]
    Alloc(AllocCmd),
    /// Nodes.
    #[command(subcommand)]
    Node(NodeCmd),
    /// Benchmarks (build with --release).
    #[command(subcommand)]
    Bench(BenchCmd),
    /// A job's rollouts: status, promote canaries, fail, pause, resume.
    #[command(subcommand)]
    Deploy(DeployCmd),
    /// A job's versions: history with diffs, revert.
    #[command(subcommand)]
    Job(JobCmd),
    /// What happened: recent events, or with -f the live stream.
    Events {
        /// Keep streaming new events.
        #[arg(short, long)]
        follow: bool,
        /// job, allocation, node, deployment, check, alert (repeat or
        /// separate with commas).
        #[arg(long = "topic")]
        topics: Vec<String>,
        /// Only events about this job (repeat for more).
        #[arg(long = "job")]
        jobs: Vec<String>,
        /// Events after this index (resume where you stopped).
        #[arg(long)]
        since_index: Option<u64>,
        /// How many recent events to show.
        #[arg(short = 'n', long, default_value_t = 50)]
        limit: usize,
        /// JSON (with -f: one event per line).
        #[arg(long)]
        json: bool,
    },
    /// Cluster upkeep.
    #[command(subcommand)]
    System(SystemCmd),
    /// Firing alerts (and with --all the recently resolved).
    Alerts {
        #[arg(long)]
        all: bool,
        #[arg(long)]
        json: bool,
    },
    /// The capture process of an exec task's run, started by the agent.
    #[command(name = corral_agent::logs::capture::SUBCOMMAND, hide = true)]
    Logmon {
        /// The run's capture spec (JSON).
        spec: String,
    },
}

#[derive(Subcommand)]
enum DeployCmd {
    /// The job's newest deployment: per group desired, placed, healthy,
    /// unhealthy, canaries, promoted, time left to the progress deadline.
    Status {
        job: String,
        #[arg(long)]
        json: bool,
    },
    /// Every deployment of the job, newest first.
    #[command(alias = "ls")]
    List {
        job: String,
        #[arg(long)]
        json: bool,
    },
    /// Promote the canaries: roll the rest of the groups out.
    Promote {
        job: String,
        #[arg(long)]
        json: bool,
    },
    /// Fail the active deployment (an auto_revert job rolls back).
    Fail {
        job: String,
        #[arg(long)]
        json: bool,
    },
    /// Pause the active deployment: nothing new is placed.
    Pause {
        job: String,
        #[arg(long)]
        json: bool,
    },
    /// Resume a paused deployment.
    Resume {
        job: String,
        #[arg(long)]
        json: bool,
    },
    /// Mark an allocation of a deployment healthy or unhealthy by hand
    /// (`health_check: manual`).
    Health {
        alloc: String,
        #[arg(
            long,
            conflicts_with = "unhealthy",
            required_unless_present = "unhealthy"
        )]
        healthy: bool,
        #[arg(long)]
        unhealthy: bool,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
enum JobCmd {
    /// Every version, newest first, with what changed against the one
    /// before.
    History {
        job: String,
        #[arg(long)]
        json: bool,
    },
    /// Store an earlier version's spec as the next version and follow its
    /// rollout.
    Revert {
        job: String,
        version: u64,
        /// Return once stored.
        #[arg(long)]
        detach: bool,
        #[arg(long)]
        json: bool,
        /// Give up waiting after this long (e.g. 5m). Default: 5m for the
        /// allocations; a deployment is followed until it ends.
        #[arg(long, value_parser = valid_duration)]
        timeout: Option<String>,
    },
}

#[derive(Subcommand)]
enum BenchCmd {
    /// The scheduler simulator: SQLite (synchronous=FULL) against an
    /// in-memory store, same scenario, same run.
    Scheduler {
        #[arg(long, default_value_t = 10_000)]
        nodes: usize,
        #[arg(long, default_value_t = 1_000)]
        jobs: usize,
        #[arg(long, default_value_t = 100)]
        allocs: u32,
        #[arg(long, default_value_t = 2)]
        workers: usize,
        /// Skip the in-memory baseline.
        #[arg(long)]
        sqlite_only: bool,
        #[arg(long)]
        json: bool,
    },
    /// Server CPU for a fleet heartbeating at the default interval.
    Heartbeats {
        #[arg(long, default_value_t = 10_000)]
        nodes: usize,
        #[arg(long, default_value = "30s")]
        window: String,
        #[arg(long)]
        json: bool,
    },
    /// Real containers on this node (root): corral against bare CRI and,
    /// with --docker-socket, Docker Swarm. See scripts/bench-node.
    Node {
        /// A Swarm manager's socket with the demo image loaded.
        #[arg(long)]
        docker_socket: Option<PathBuf>,
        /// dockerd's and its containerd's pids, for their CPU use.
        #[arg(long, value_delimiter = ',')]
        docker_pids: Vec<u32>,
        /// Rounds of scaling and rolling update per system.
        #[arg(long, default_value_t = 2)]
        rounds: usize,
        /// Single-container samples per system.
        #[arg(long, default_value_t = 5)]
        single_reps: usize,
        /// How often the APIs are polled, in milliseconds.
        #[arg(long, default_value_t = 25)]
        poll_ms: u64,
        /// CPU of each replica in millicores (corral: reservation and
        /// quota; Swarm: the same limit and reservation).
        #[arg(long, default_value_t = 10)]
        cpu_millis: u64,
        /// Where corral dev and its containerd live (default /tmp/cbn-PID).
        #[arg(long)]
        work_dir: Option<PathBuf>,
        /// Also write the table (markdown) to this file.
        #[arg(long)]
        out: Option<PathBuf>,
        /// Only write the demo image as an OCI archive into this directory
        /// and print its path.
        #[arg(long)]
        write_image: Option<PathBuf>,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Args)]
struct AgentArgs {
    /// TOML config file (`[agent]` table); flags and env win over it.
    #[arg(long, env = "CORRAL_CONFIG")]
    config: Option<PathBuf>,
    /// The server's address (default http://127.0.0.1:7070).
    #[arg(long, env = "CORRAL_SERVER")]
    server: Option<String>,
    /// Default /var/lib/corral/agent.
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Default: the hostname.
    #[arg(long)]
    name: Option<String>,
    /// Node label, `key=value`; repeat for more (added to the file's).
    #[arg(long = "label")]
    labels: Vec<String>,
    /// Where the agent's HTTP endpoint (logs) listens (default 127.0.0.1:0).
    #[arg(long)]
    http_addr: Option<SocketAddr>,
    /// The address the server reaches this agent at (default: http://<http-addr>).
    #[arg(long)]
    advertise: Option<String>,
    /// containerd's CRI socket (default /run/containerd/containerd.sock).
    #[arg(long)]
    cri_socket: Option<PathBuf>,
}

#[derive(Subcommand)]
enum AllocCmd {
    /// List allocations.
    Ls {
        #[arg(long)]
        job: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Show one allocation.
    Status {
        id: String,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
enum SystemCmd {
    /// Garbage-collect every finished allocation, evaluation and
    /// deployment and every down node now, whatever their age (the server
    /// does it on its own past the `*_gc_threshold`s).
    Gc {
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
enum NodeCmd {
    /// List nodes.
    Ls {
        #[arg(long)]
        json: bool,
    },
    /// Show one node (id, id prefix or name).
    Status {
        id: String,
        #[arg(long)]
        json: bool,
    },
    /// Move every allocation off a node (replacement first, at most
    /// max_parallel per group at a time), then leave it ineligible.
    Drain {
        id: String,
        /// Stop what is left after this long.
        #[arg(long, default_value = "1h")]
        deadline: String,
        /// Accepted for Nomad compatibility; corral has no system jobs yet.
        #[arg(long)]
        ignore_system: bool,
        /// End a drain and make the node eligible again.
        #[arg(long)]
        disable: bool,
        #[arg(long)]
        json: bool,
    },
    /// Allow or forbid new placements on a node.
    #[command(group(clap::ArgGroup::new("mode").required(true).args(["enable", "disable"])))]
    Eligibility {
        id: String,
        #[arg(long, conflicts_with = "disable")]
        enable: bool,
        #[arg(long)]
        disable: bool,
        #[arg(long)]
        json: bool,
    },
}

fn main() -> ExitCode {
    quiet_on_closed_stdout();
    let cli = Cli::parse();
    // One per exec task runs: one thread each is plenty.
    let mut builder = if matches!(cli.cmd, Cmd::Logmon { .. }) {
        tokio::runtime::Builder::new_current_thread()
    } else {
        tokio::runtime::Builder::new_multi_thread()
    };
    let rt = match builder.enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(dispatch(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        // Writers that return errors (events -f, logs) end the same way.
        Err(e) if broken_pipe(&e) => ExitCode::from(141),
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// `corral events | head -1`: once the reader is gone, `println!` panics
/// with EPIPE (Rust ignores SIGPIPE, and resetting it needs `unsafe`).
/// Exit quietly with the status a process killed by SIGPIPE reports
/// (128 + 13), as `seq 1 100000 | head -1` does, instead of a panic
/// message and 101. Any other panic keeps the default report.
fn quiet_on_closed_stdout() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let message = info
            .payload()
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| info.payload().downcast_ref::<&str>().copied())
            .unwrap_or("");
        if is_closed_stdout(message) {
            std::process::exit(141);
        }
        default(info);
    }));
}

fn broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

/// Whether a panic message is std's "failed printing to stdout" for a
/// closed pipe (EPIPE is 32 on Linux).
fn is_closed_stdout(message: &str) -> bool {
    message.starts_with("failed printing to stdout")
        && (message.contains("Broken pipe") || message.contains("os error 32"))
}

/// This binary, for the exec driver's capture processes; `None` (the agent
/// copies task output itself) when the OS cannot tell, or when
/// `CORRAL_LOG_CAPTURE=agent` asks for that (no process per task; output
/// written while the agent is down can then be lost, see docs/LOGS.md).
pub(crate) fn capture_exe() -> Option<PathBuf> {
    if std::env::var("CORRAL_LOG_CAPTURE").is_ok_and(|v| v == "agent") {
        return None;
    }
    std::env::current_exe()
        .inspect_err(|e| {
            tracing::warn!(error = %e, "cannot find this binary; the agent copies task output itself")
        })
        .ok()
}

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("CORRAL_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

async fn dispatch(cli: Cli) -> Result<()> {
    let client = Client::new(&cli.addr, cli.token.clone());
    match cli.cmd {
        Cmd::Dev {
            data_dir,
            listen,
            cri_socket,
            no_containers,
            pod_bridge,
            pod_subnet,
        } => {
            init_logging();
            let args = cmd::dev::DevArgs {
                data_dir: data_dir.unwrap_or_else(cmd::dev::default_data_dir),
                addr: listen,
                cri_socket,
                no_containers,
                token: cli.token,
                pod_bridge,
                pod_subnet,
            };
            cmd::dev::run(args, shutdown::on_signals()).await
        }
        Cmd::Server {
            config,
            data_dir,
            listen,
        } => {
            init_logging();
            let file = config::load(config.as_deref())?.server;
            let data_dir = data_dir
                .or(file.data_dir.clone())
                .unwrap_or_else(|| PathBuf::from("/var/lib/corral/server"));
            let mut sc = corral_server::ServerConfig::new(data_dir);
            if let Some(w) = file.workers {
                sc.workers = w;
            }
            if let Some(d) = config::duration("heartbeat_min_ttl", &file.heartbeat_min_ttl)? {
                sc.heartbeat_min_ttl = d;
            }
            if let Some(d) = config::duration("heartbeat_grace", &file.heartbeat_grace)? {
                sc.heartbeat_grace = d;
            }
            if let Some(d) = config::duration("failover_grace", &file.failover_grace)? {
                sc.failover_grace = d;
            }
            if let Some(r) = file.max_heartbeats_per_second {
                sc.max_heartbeats_per_second = r;
            }
            config::apply_events_and_alerts(&file, &mut sc)?;
            sc.api_token = cli.token.or(file.api_token);
            let addr = listen
                .or(file.addr)
                .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 7070)));
            cmd::server::run(sc, addr, shutdown::on_signals()).await
        }
        Cmd::Agent(a) => {
            init_logging();
            let file = config::load(a.config.as_deref())?.agent;
            let server = a
                .server
                .or(file.server)
                .unwrap_or_else(|| "http://127.0.0.1:7070".into());
            let data_dir = a
                .data_dir
                .or(file.data_dir)
                .unwrap_or_else(|| PathBuf::from("/var/lib/corral/agent"));
            let mut config = corral_agent::AgentConfig::new(&server, data_dir);
            config.token = cli.token.or(file.token);
            config.name = a.name.or(file.name);
            if let Some(h) = a.http_addr.or(file.http_addr) {
                config.http_addr = h;
            }
            config.advertise = a.advertise.or(file.advertise);
            let mut labels = file.labels;
            labels.extend(parse_labels(&a.labels)?);
            config.labels = labels;
            if let Some(s) = a.cri_socket.or(file.cri_socket) {
                config.cri_socket = s;
            }
            if let Some(d) = file.drivers {
                config.drivers = d;
            }
            if let Some(r) = file.port_range {
                config.port_range = r;
            }
            if let Some(c) = &file.reserved_cpu {
                config.reserved_cpu_millis = corral_types::units::parse_cpu(c)
                    .map_err(|e| anyhow::anyhow!("config key reserved_cpu: {e}"))?
                    .0;
            }
            if let Some(m) = &file.reserved_memory {
                config.reserved_memory_bytes = corral_types::units::parse_size(m)
                    .map_err(|e| anyhow::anyhow!("config key reserved_memory: {e}"))?
                    .0;
            }
            if let Some(d) = config::duration("log_retention", &file.log_retention)? {
                config.log_retention = d;
            }
            config.capture_exe = capture_exe();
            cmd::agent::run(config, shutdown::on_signals()).await
        }
        Cmd::Run {
            file,
            detach,
            json,
            timeout,
        } => {
            let timeout = parse_timeout(timeout.as_deref())?;
            cmd::run::run(&client, &file, detach, json, timeout).await
        }
        Cmd::Deploy(d) => {
            use corral_types::api::DeploymentAction as A;
            match d {
                DeployCmd::Status { job, json } => cmd::deploy::status(&client, &job, json).await,
                DeployCmd::List { job, json } => cmd::deploy::list(&client, &job, json).await,
                DeployCmd::Promote { job, json } => {
                    cmd::deploy::action(&client, &job, A::Promote, json).await
                }
                DeployCmd::Fail { job, json } => {
                    cmd::deploy::action(&client, &job, A::Fail, json).await
                }
                DeployCmd::Pause { job, json } => {
                    cmd::deploy::action(&client, &job, A::Pause, json).await
                }
                DeployCmd::Resume { job, json } => {
                    cmd::deploy::action(&client, &job, A::Resume, json).await
                }
                DeployCmd::Health {
                    alloc,
                    healthy,
                    unhealthy: _,
                    json,
                } => cmd::deploy::health(&client, &alloc, healthy, json).await,
            }
        }
        Cmd::Job(JobCmd::History { job, json }) => cmd::job::history(&client, &job, json).await,
        Cmd::Job(JobCmd::Revert {
            job,
            version,
            detach,
            json,
            timeout,
        }) => {
            let timeout = parse_timeout(timeout.as_deref())?;
            cmd::job::revert(&client, &job, version, detach, json, timeout).await
        }
        Cmd::Events {
            follow,
            topics,
            jobs,
            since_index,
            limit,
            json,
        } => {
            let a = cmd::events::EventsArgs {
                follow,
                topics,
                jobs,
                json,
                since_index,
                limit,
            };
            cmd::events::events(&client, a).await
        }
        Cmd::Alerts { all, json } => cmd::alerts::list(&client, all, json).await,
        Cmd::Logmon { spec } => {
            init_logging();
            corral_agent::logs::capture::process::run(&spec)
                .await
                .context("capture process")
        }
        Cmd::System(SystemCmd::Gc { json }) => {
            let r = client.system_gc().await?;
            if json {
                return output::print_json(&r);
            }
            println!(
                "garbage collected: {} allocations, {} evaluations, {} deployments, {} nodes",
                r.allocations, r.evaluations, r.deployments, r.nodes
            );
            Ok(())
        }
        Cmd::Plan { file, json } => cmd::run::plan(&client, &file, json).await,
        Cmd::Status { job: None, json } => cmd::status::list(&client, json).await,
        Cmd::Status { job: Some(j), json } => cmd::status::job(&client, &j, json).await,
        Cmd::Stop { job, purge, json } => {
            let r = client.stop(&job, purge).await?;
            if json {
                return output::print_json(&r);
            }
            println!(
                "job {job} {}",
                if purge {
                    "stopped and purged"
                } else {
                    "stopped"
                }
            );
            Ok(())
        }
        Cmd::Logs(a) => cmd::logs::logs(&client, a).await,
        Cmd::Alloc(AllocCmd::Ls { job, json }) => {
            cmd::alloc::list(&client, job.as_deref(), json).await
        }
        Cmd::Alloc(AllocCmd::Status { id, json }) => cmd::alloc::status(&client, &id, json).await,
        Cmd::Bench(BenchCmd::Scheduler {
            nodes,
            jobs,
            allocs,
            workers,
            sqlite_only,
            json,
        }) => {
            let s = corral_bench::scheduler::Scenario {
                nodes,
                jobs,
                allocs_per_job: allocs,
                workers,
                ..Default::default()
            };
            cmd::bench::scheduler(s, !sqlite_only, json).await
        }
        Cmd::Bench(BenchCmd::Heartbeats {
            nodes,
            window,
            json,
        }) => {
            let w = corral_types::units::parse_duration(&window)
                .map_err(|e| anyhow::anyhow!("--window: {e}"))?;
            cmd::bench::heartbeats(nodes, w.as_std(), json).await
        }
        Cmd::Bench(BenchCmd::Node {
            docker_socket,
            docker_pids,
            rounds,
            single_reps,
            poll_ms,
            cpu_millis,
            work_dir,
            out,
            write_image,
            json,
        }) => {
            cmd::bench::node(cmd::bench::NodeArgs {
                docker_socket,
                docker_pids,
                rounds,
                single_reps,
                poll_ms,
                cpu_millis,
                work_dir,
                out,
                write_image,
                json,
            })
            .await
        }
        Cmd::Node(NodeCmd::Ls { json }) => cmd::node::list(&client, json).await,
        Cmd::Node(NodeCmd::Status { id, json }) => cmd::node::status(&client, &id, json).await,
        Cmd::Node(NodeCmd::Drain {
            id,
            deadline,
            ignore_system: _,
            disable,
            json,
        }) => cmd::node::drain(&client, &id, &deadline, disable, json).await,
        Cmd::Node(NodeCmd::Eligibility {
            id,
            enable,
            disable,
            json,
        }) => {
            // clap requires exactly one of them.
            let _ = disable;
            cmd::node::eligibility(&client, &id, enable, json).await
        }
    }
}

/// A duration flag checked while the command line is parsed: a bad one
/// is a usage error (exit 2), like any other bad flag.
fn valid_duration(t: &str) -> Result<String, String> {
    corral_types::units::parse_duration(t)
        .map(|_| t.to_string())
        .map_err(|e| e.to_string())
}

fn parse_timeout(t: Option<&str>) -> Result<Option<Duration>> {
    t.map(|t| {
        corral_types::units::parse_duration(t)
            .map(|d| d.as_std())
            .map_err(|e| anyhow::anyhow!("--timeout: {e}"))
    })
    .transpose()
}

fn parse_labels(labels: &[String]) -> Result<BTreeMap<String, String>> {
    let mut out = BTreeMap::new();
    for l in labels {
        let Some((k, v)) = l.split_once('=') else {
            bail!("--label {l:?}: write key=value");
        };
        out.insert(k.trim().to_string(), v.trim().to_string());
    }
    Ok(out)
}
