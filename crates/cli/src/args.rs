//! The command line: every command with its flags, help and an example.
//! Client commands take [`Conn`] and [`OutputArgs`]; the roles (`dev`,
//! `server`, `agent`) take their own settings.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::cmd;
use crate::conn::Conn;
use crate::output::OutputArgs;

#[derive(Parser)]
#[command(
    name = "corral",
    version,
    about = "container scheduling without the hype",
    after_help = "\
Examples:
  corral dev                      # a one-node cluster on this machine
  corral run examples/demo.yaml   # submit a job and watch it come up
  corral status demo              # the job, its allocations and their addresses
  corral logs demo -f             # follow its output

Client commands talk to $CORRAL_ADDR (default http://127.0.0.1:7070).

Exit codes: 0 success; 1 failure (a rollout that failed or was paused, a server error);
2 a usage error (unknown flag, bad value, missing choice); 3 `plan`: something cannot
be placed; 141 the output pipe closed."
)]
pub struct Cli {
    /// `corral --api URL status`, the order of earlier versions: still
    /// honoured, not shown (the flags belong to client commands).
    #[arg(long = "api", hide = true, value_name = "URL")]
    pub api_before: Option<String>,
    #[arg(long = "token", hide = true)]
    pub token_before: Option<String>,
    #[command(subcommand)]
    pub cmd: Cmd,
}

impl Cli {
    /// Client flags given before the command apply to it. Before a role
    /// (`server`, `agent`, `dev`) they are refused: `corral --token T
    /// server` once made the server require T, and silently running it
    /// open now would be worse than an error.
    pub fn apply_leading_flags(&mut self) -> Result<(), String> {
        let (api, token) = (self.api_before.take(), self.token_before.take());
        let Some(conn) = self.cmd.conn_mut() else {
            return match (api, token) {
                (None, None) => Ok(()),
                _ => Err(
                    "--api and --token are the CLI's; a server or dev requires a token with --api-token (or CORRAL_API_TOKEN), an agent sends one with --token after `agent`, and an agent names its server with --server"
                        .into(),
                ),
            };
        };
        if let Some(a) = api {
            conn.addr = a;
        }
        if let Some(t) = token {
            conn.token = Some(t);
        }
        Ok(())
    }
}

impl Cmd {
    fn conn_mut(&mut self) -> Option<&mut Conn> {
        Some(match self {
            Cmd::Dev(_)
            | Cmd::Server(_)
            | Cmd::Agent(_)
            | Cmd::Router(_)
            | Cmd::Bench(_)
            | Cmd::Completion { .. }
            | Cmd::Job(JobCmd::Init { .. })
            | Cmd::Logmon { .. } => {
                return None;
            }
            Cmd::Run { conn, .. }
            | Cmd::Plan { conn, .. }
            | Cmd::Status { conn, .. }
            | Cmd::Stop { conn, .. }
            | Cmd::Logs { conn, .. }
            | Cmd::Events { conn, .. }
            | Cmd::Alerts { conn, .. } => conn,
            Cmd::Alloc(
                AllocCmd::Ls { conn, .. }
                | AllocCmd::Status { conn, .. }
                | AllocCmd::Stop { conn, .. }
                | AllocCmd::Restart { conn, .. },
            ) => conn,
            Cmd::Service(ServiceCmd::Ls { conn, .. } | ServiceCmd::Status { conn, .. }) => conn,
            Cmd::Volume(
                VolumeCmd::Ls { conn, .. }
                | VolumeCmd::Status { conn, .. }
                | VolumeCmd::Snapshot { conn, .. }
                | VolumeCmd::Snapshots { conn, .. }
                | VolumeCmd::Backup { conn, .. }
                | VolumeCmd::Restore { conn, .. }
                | VolumeCmd::Delete { conn, .. },
            ) => conn,
            Cmd::Node(
                NodeCmd::Ls { conn, .. }
                | NodeCmd::Status { conn, .. }
                | NodeCmd::Drain { conn, .. }
                | NodeCmd::Eligibility { conn, .. },
            ) => conn,
            Cmd::Deploy(
                DeployCmd::Status { conn, .. }
                | DeployCmd::List { conn, .. }
                | DeployCmd::Promote { conn, .. }
                | DeployCmd::Fail { conn, .. }
                | DeployCmd::Pause { conn, .. }
                | DeployCmd::Resume { conn, .. }
                | DeployCmd::Health { conn, .. },
            ) => conn,
            Cmd::Job(
                JobCmd::History { conn, .. }
                | JobCmd::Inspect { conn, .. }
                | JobCmd::Revert { conn, .. }
                | JobCmd::Scale { conn, .. },
            ) => conn,
            Cmd::System(SystemCmd::Gc { conn, .. }) => conn,
        })
    }
}

/// A job file, or `-` for standard input.
#[derive(Debug, Clone, Args)]
pub struct JobFile {
    /// The job file (YAML or JSON); `-` reads standard input. The job is
    /// named after the file unless it names itself.
    #[arg(value_name = "FILE")]
    pub file: PathBuf,
}

#[derive(Subcommand)]
pub enum Cmd {
    /// Run a server and an agent in one process (one machine).
    #[command(after_help = "\
Examples:
  corral dev
  corral dev --data-dir /tmp/corral --addr 127.0.0.1:7401 --no-containers
  corral dev --fresh              # forget the jobs of an earlier run")]
    Dev(DevArgs),
    /// Run the control plane.
    #[command(after_help = "\
Examples:
  corral server --data-dir /var/lib/corral/server --addr 0.0.0.0:7070
  corral server --config /etc/corral/server.toml")]
    Server(ServerArgs),
    /// Run a node agent.
    #[command(after_help = "\
Examples:
  corral agent --server http://10.0.0.1:7070 --label zone=a
  corral agent --config /etc/corral/agent.toml")]
    Agent(AgentArgs),
    /// Run a router: HTTP by host and path (and TCP by port) to the
    /// healthy endpoints of the server's service catalog.
    #[command(after_help = "\
Examples:
  corral router --server http://10.0.0.1:7070 --http-addr 0.0.0.0:80
  corral router --server http://10.0.0.1:7070 --http-addr 0.0.0.0:8080 --balance round-robin
  curl -H 'Host: web.example.com' http://ROUTER/   # a service's automatic host

Several routers may follow one server. /metrics is served on --metrics-addr.")]
    Router(RouterArgs),
    /// Submit a job file and wait until it runs.
    #[command(after_help = "\
Examples:
  corral run web.yaml
  corral run web.yaml --detach
  corral job inspect web | corral run -")]
    Run {
        #[command(flatten)]
        file: JobFile,
        /// Return once submitted, without following the rollout.
        #[arg(long)]
        detach: bool,
        /// Give up waiting after this long (e.g. 5m). Default: 5m for the
        /// allocations; a deployment is followed until it ends.
        #[arg(long, value_parser = duration, value_name = "DURATION")]
        timeout: Option<std::time::Duration>,
        #[command(flatten)]
        out: OutputArgs,
        #[command(flatten)]
        conn: Conn,
    },
    /// Show what a job file would change, storing nothing. Exits 3 when
    /// something cannot be placed.
    #[command(after_help = "\
Examples:
  corral plan web.yaml
  corral plan - < web.yaml")]
    Plan {
        #[command(flatten)]
        file: JobFile,
        #[command(flatten)]
        out: OutputArgs,
        #[command(flatten)]
        conn: Conn,
    },
    /// List jobs, or show one with its allocations and their addresses.
    #[command(after_help = "\
Examples:
  corral status
  corral status web
  corral status web -o wide")]
    Status {
        /// The job to show (all jobs when left out).
        #[arg(value_name = "JOB")]
        job: Option<String>,
        #[command(flatten)]
        out: OutputArgs,
        #[command(flatten)]
        conn: Conn,
    },
    /// Stop a job and wait until its allocations have stopped (and with
    /// --purge forget it).
    #[command(after_help = "\
Examples:
  corral stop web
  corral stop web --purge --detach
  corral stop db --purge --delete-volumes   # and its volumes' data, for good")]
    Stop {
        /// The job to stop.
        #[arg(value_name = "JOB")]
        job: String,
        /// Also forget the job and its versions (it can be run again from
        /// scratch). Its volumes are kept unless --delete-volumes.
        #[arg(long)]
        purge: bool,
        /// With --purge: also delete the job's volumes and their data, once
        /// its allocations have stopped (not undone).
        #[arg(long, requires = "purge", conflicts_with = "detach")]
        delete_volumes: bool,
        /// Return once the stop is stored, without waiting for the
        /// allocations to stop.
        #[arg(long)]
        detach: bool,
        #[command(flatten)]
        out: OutputArgs,
        #[command(flatten)]
        conn: Conn,
    },
    /// Show a job's (or an allocation's) task output.
    #[command(after_help = "\
Examples:
  corral logs web
  corral logs web -f --tail 20
  corral logs web --task app --stderr --since 10m")]
    Logs {
        #[command(flatten)]
        args: cmd::logs::LogsArgs,
        #[command(flatten)]
        conn: Conn,
    },
    /// Allocations.
    #[command(subcommand)]
    Alloc(AllocCmd),
    /// Nodes.
    #[command(subcommand)]
    Node(NodeCmd),
    /// Services: the catalog of endpoints routers and node DNS follow.
    #[command(subcommand)]
    Service(ServiceCmd),
    /// Volumes: where each lives, its snapshots; restore and delete.
    #[command(subcommand)]
    Volume(VolumeCmd),
    /// Benchmarks (build with --release).
    #[command(subcommand)]
    Bench(BenchCmd),
    /// A job's rollouts: status, promote canaries, fail, pause, resume.
    #[command(subcommand)]
    Deploy(DeployCmd),
    /// A job's versions: history with diffs, inspect, revert.
    #[command(subcommand)]
    Job(JobCmd),
    /// What happened: recent events, or with -f the live stream.
    #[command(after_help = "\
Examples:
  corral events
  corral events -f --topic alert,deployment
  corral events --job web --since-index 120 -o json")]
    Events {
        /// Keep streaming new events.
        #[arg(short, long)]
        follow: bool,
        /// job, allocation, node, deployment, check, alert, volume
        /// (repeat or separate with commas).
        #[arg(long = "topic", value_name = "TOPIC")]
        topics: Vec<String>,
        /// Only events about this job (repeat for more).
        #[arg(long = "job", value_name = "JOB")]
        jobs: Vec<String>,
        /// Events after this index (resume where you stopped).
        #[arg(long, value_name = "INDEX")]
        since_index: Option<u64>,
        /// How many recent events to show.
        #[arg(short = 'n', long, default_value_t = 50)]
        limit: usize,
        #[command(flatten)]
        out: OutputArgs,
        #[command(flatten)]
        conn: Conn,
    },
    /// Cluster upkeep.
    #[command(subcommand)]
    System(SystemCmd),
    /// Firing alerts (and with --all the recently resolved).
    #[command(after_help = "\
Examples:
  corral alerts
  corral alerts --all -o json")]
    Alerts {
        /// Also the alerts resolved recently.
        #[arg(long)]
        all: bool,
        #[command(flatten)]
        out: OutputArgs,
        #[command(flatten)]
        conn: Conn,
    },
    /// Shell completion: prints the script for bash, zsh or fish.
    #[command(after_help = "\
Examples:
  corral completion bash > /etc/bash_completion.d/corral
  corral completion zsh > \"${fpath[1]}/_corral\"
  corral completion fish > ~/.config/fish/completions/corral.fish")]
    Completion {
        /// The shell: bash, zsh, fish, elvish or powershell.
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// The capture process of an exec task's run, started by the agent.
    #[command(name = corral_agent::logs::capture::SUBCOMMAND, hide = true)]
    Logmon {
        /// The run's capture spec (JSON).
        spec: String,
    },
}

#[derive(Debug, Args)]
pub struct DevArgs {
    /// Where the server's and the agent's state lives [default:
    /// /var/lib/corral/dev as root, else ~/.local/share/corral/dev].
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Where the API listens [default: the config's `addr`, else
    /// 127.0.0.1:7070].
    #[arg(long = "addr")]
    pub listen: Option<SocketAddr>,
    /// TOML config file (`[server]` table: addr, alerts, webhooks, events,
    /// gc).
    #[arg(
        long,
        env = "CORRAL_CONFIG",
        hide_env_values = true,
        value_name = "FILE"
    )]
    pub config: Option<PathBuf>,
    /// Start empty: remove the jobs and state an earlier run left in the
    /// data dir.
    #[arg(long)]
    pub fresh: bool,
    /// Require this token on the API (the CLI sends it from
    /// CORRAL_TOKEN).
    #[arg(long, env = "CORRAL_API_TOKEN", hide_env_values = true)]
    pub api_token: Option<String>,
    /// containerd's CRI socket (default: the machine's if it answers,
    /// else a private containerd under the data dir).
    #[arg(long, value_name = "SOCKET")]
    pub cri_socket: Option<PathBuf>,
    /// Run exec tasks only, without containerd.
    #[arg(long)]
    pub no_containers: bool,
    /// The private containerd's pod bridge (at most 15 characters);
    /// two `corral dev` on one machine need different ones.
    #[arg(long, default_value = cmd::dev::DEFAULT_POD_BRIDGE)]
    pub pod_bridge: String,
    /// The private containerd's pod subnet (IPv4 CIDR).
    #[arg(long, default_value = cmd::dev::DEFAULT_POD_SUBNET)]
    pub pod_subnet: String,
    #[command(flatten)]
    pub dns: DnsArgs,
    #[command(flatten)]
    pub volumes: VolumeArgs,
    /// Where the built-in router serves HTTP: services answer at
    /// http://<service>.localhost:<port>/.
    #[arg(long, value_name = "ADDR", default_value = cmd::dev::DEFAULT_ROUTER_ADDR)]
    pub router_addr: SocketAddr,
    /// Run without the built-in router.
    #[arg(long, conflicts_with = "router_addr")]
    pub no_router: bool,
}

/// The node's volumes (`corral dev` and `corral agent`).
#[derive(Debug, Args)]
pub struct VolumeArgs {
    /// Where volumes live on this node [default: <data dir>/volumes].
    #[arg(long, value_name = "DIR", conflicts_with = "no_volumes")]
    pub volumes_dir: Option<PathBuf>,
    /// btrfs-image, ext4-image or host [default: btrfs-image when the
    /// kernel has btrfs and mkfs.btrfs is installed, else ext4-image].
    #[arg(long, value_name = "PROVIDER", conflicts_with = "no_volumes")]
    pub volume_provider: Option<String>,
    /// No volumes on this node: groups with a volume are not placed here.
    #[arg(long)]
    pub no_volumes: bool,
}

/// The node DNS (`<service>.service.corral`) of `corral dev` and `corral
/// agent`.
#[derive(Debug, Args)]
pub struct DnsArgs {
    /// Where the node DNS listens (UDP and TCP), IP or IP:PORT; pods get
    /// it as their nameserver [default: the pod bridge's gateway, port 53].
    #[arg(long, value_name = "ADDR", conflicts_with = "no_dns")]
    pub dns_addr: Option<String>,
    /// No node DNS: pods keep the runtime's default resolver (a copy of
    /// the host's).
    #[arg(long)]
    pub no_dns: bool,
}

#[derive(Debug, Args)]
pub struct RouterArgs {
    /// The server's address [default: http://127.0.0.1:7070].
    #[arg(
        long,
        env = "CORRAL_SERVER",
        hide_env_values = true,
        value_name = "URL"
    )]
    pub server: Option<String>,
    /// The token the server requires.
    #[arg(long, env = "CORRAL_SERVER_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Where HTTP/1.1 and HTTP/2 (h2c) are served; TCP routes listen on
    /// the same IP address.
    #[arg(long, value_name = "ADDR", default_value = "0.0.0.0:80")]
    pub http_addr: SocketAddr,
    /// Where Prometheus metrics are served (loopback by default: the
    /// router faces clients, its metrics name every service).
    #[arg(long, value_name = "ADDR", default_value = cmd::router::DEFAULT_METRICS_ADDR)]
    pub metrics_addr: SocketAddr,
    /// How a service's endpoints share requests: p2c (two at random, the
    /// one with fewer requests in flight) or round-robin.
    #[arg(long, value_name = "HOW", default_value = "p2c")]
    pub balance: corral_router::Balance,
    /// On shutdown, how long in-flight requests get to finish.
    #[arg(long, value_parser = duration, value_name = "DURATION", default_value = "10s")]
    pub drain_timeout: std::time::Duration,
    /// How long an endpoint gets to accept a connection (then 504, and
    /// the endpoint is ejected for a while).
    #[arg(long, value_parser = duration, value_name = "DURATION", default_value = "3s")]
    pub connect_timeout: std::time::Duration,
    /// How long an endpoint gets to send its response head (then 504, and
    /// the endpoint is ejected for a while); bodies stream without one.
    #[arg(long, value_parser = duration, value_name = "DURATION", default_value = "60s")]
    pub upstream_timeout: std::time::Duration,
    /// Threads serving connections, each with its own event loop and
    /// upstream connection pool [default: one per core].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..=1024))]
    pub workers: Option<u16>,
}

#[derive(Debug, Args)]
pub struct ServerArgs {
    /// TOML config file (`[server]` table); flags and env win over it.
    #[arg(
        long,
        env = "CORRAL_CONFIG",
        hide_env_values = true,
        value_name = "FILE"
    )]
    pub config: Option<PathBuf>,
    /// Where the server's state lives [default: /var/lib/corral/server].
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Where the API listens [default: 127.0.0.1:7070].
    #[arg(long = "addr")]
    pub listen: Option<SocketAddr>,
    /// Require this token on the API (also `api_token` in the config).
    #[arg(long, env = "CORRAL_API_TOKEN", hide_env_values = true)]
    pub api_token: Option<String>,
}

#[derive(Debug, Args)]
pub struct AgentArgs {
    /// TOML config file (`[agent]` table); flags and env win over it.
    #[arg(
        long,
        env = "CORRAL_CONFIG",
        hide_env_values = true,
        value_name = "FILE"
    )]
    pub config: Option<PathBuf>,
    /// The server's address [default: http://127.0.0.1:7070].
    #[arg(
        long,
        env = "CORRAL_SERVER",
        hide_env_values = true,
        value_name = "URL"
    )]
    pub server: Option<String>,
    /// The token the server requires (also `token` in the config).
    #[arg(long, env = "CORRAL_SERVER_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Where the agent's state and task logs live [default:
    /// /var/lib/corral/agent].
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// The node's name [default: the hostname].
    #[arg(long)]
    pub name: Option<String>,
    /// Node label, `key=value`; repeat for more (added to the file's).
    #[arg(long = "label", value_name = "KEY=VALUE")]
    pub labels: Vec<String>,
    /// Where the agent's HTTP endpoint (logs) listens [default:
    /// 127.0.0.1:0].
    #[arg(long, value_name = "ADDR")]
    pub http_addr: Option<SocketAddr>,
    /// The address the server reaches this agent at [default:
    /// http://<http-addr>].
    #[arg(long, value_name = "URL")]
    pub advertise: Option<String>,
    /// containerd's CRI socket [default: /run/containerd/containerd.sock].
    #[arg(long, value_name = "SOCKET")]
    pub cri_socket: Option<PathBuf>,
    #[command(flatten)]
    pub dns: DnsArgs,
    #[command(flatten)]
    pub volumes: VolumeArgs,
}

#[derive(Subcommand)]
pub enum DeployCmd {
    /// The job's newest deployment: per group desired, placed, healthy,
    /// unhealthy, canaries, promoted, time left to the progress deadline.
    #[command(after_help = "Example:\n  corral deploy status web")]
    Status {
        /// The job (its name).
        #[arg(value_name = "JOB")]
        job: String,
        #[command(flatten)]
        out: OutputArgs,
        #[command(flatten)]
        conn: Conn,
    },
    /// Every deployment of the job, newest first.
    #[command(alias = "ls", after_help = "Example:\n  corral deploy list web")]
    List {
        /// The job (its name).
        #[arg(value_name = "JOB")]
        job: String,
        #[command(flatten)]
        out: OutputArgs,
        #[command(flatten)]
        conn: Conn,
    },
    /// Promote the canaries and follow the rest of the rollout.
    #[command(after_help = "\
Examples:
  corral deploy promote web
  corral deploy promote web --detach")]
    Promote {
        /// The job (its name).
        #[arg(value_name = "JOB")]
        job: String,
        /// Return once promoted, without following the rollout.
        #[arg(long)]
        detach: bool,
        #[command(flatten)]
        out: OutputArgs,
        #[command(flatten)]
        conn: Conn,
    },
    /// Fail the active deployment (an auto_revert job rolls back).
    #[command(after_help = "Example:\n  corral deploy fail web")]
    Fail {
        /// The job (its name).
        #[arg(value_name = "JOB")]
        job: String,
        #[command(flatten)]
        out: OutputArgs,
        #[command(flatten)]
        conn: Conn,
    },
    /// Pause the active deployment: nothing new is placed.
    #[command(after_help = "Example:\n  corral deploy pause web")]
    Pause {
        /// The job (its name).
        #[arg(value_name = "JOB")]
        job: String,
        #[command(flatten)]
        out: OutputArgs,
        #[command(flatten)]
        conn: Conn,
    },
    /// Resume a paused deployment.
    #[command(after_help = "Example:\n  corral deploy resume web")]
    Resume {
        /// The job (its name).
        #[arg(value_name = "JOB")]
        job: String,
        #[command(flatten)]
        out: OutputArgs,
        #[command(flatten)]
        conn: Conn,
    },
    /// Mark an allocation of a deployment healthy or unhealthy by hand
    /// (`health_check: manual`).
    #[command(after_help = "Example:\n  corral deploy health 3f2a9c1e --healthy")]
    Health {
        /// The allocation (its id or an id prefix).
        #[arg(value_name = "ALLOC")]
        alloc: String,
        /// Mark it healthy.
        #[arg(
            long,
            conflicts_with = "unhealthy",
            required_unless_present = "unhealthy"
        )]
        healthy: bool,
        /// Mark it unhealthy.
        #[arg(long)]
        unhealthy: bool,
        #[command(flatten)]
        out: OutputArgs,
        #[command(flatten)]
        conn: Conn,
    },
}

#[derive(Subcommand)]
pub enum JobCmd {
    /// Every version, newest first, with what changed against the one
    /// before.
    #[command(after_help = "Example:\n  corral job history web")]
    History {
        /// The job (its name).
        #[arg(value_name = "JOB")]
        job: String,
        #[command(flatten)]
        out: OutputArgs,
        #[command(flatten)]
        conn: Conn,
    },
    /// A version's spec as a job file (YAML, or JSON with -o json) that
    /// `corral run` takes back as it is.
    #[command(after_help = "\
Examples:
  corral job inspect web > web.yaml
  corral job inspect web --version 3 | corral plan -")]
    Inspect {
        /// The job (its name).
        #[arg(value_name = "JOB")]
        job: String,
        /// The version to show [default: the current one].
        #[arg(long)]
        version: Option<u64>,
        /// json or yaml [default: yaml].
        #[arg(short = 'o', long, value_enum, value_name = "FORMAT")]
        output: Option<crate::output::SpecFormat>,
        #[command(flatten)]
        conn: Conn,
    },
    /// Store an earlier version's spec as the next version and follow its
    /// rollout.
    #[command(after_help = "\
Examples:
  corral job revert web 2
  corral job revert web 2 --detach")]
    Revert {
        /// The job (its name).
        #[arg(value_name = "JOB")]
        job: String,
        /// The version to go back to (`corral job history JOB` lists them).
        version: u64,
        /// Return once stored, without following the rollout.
        #[arg(long)]
        detach: bool,
        /// Give up waiting after this long (e.g. 5m). Default: 5m for the
        /// allocations; a deployment is followed until it ends.
        #[arg(long, value_parser = duration, value_name = "DURATION")]
        timeout: Option<std::time::Duration>,
        #[command(flatten)]
        out: OutputArgs,
        #[command(flatten)]
        conn: Conn,
    },
    /// Change a group's count: the current spec with only `count` changed,
    /// stored as the next version (running allocations are kept, nothing
    /// restarts), and follow it as `corral run` does.
    #[command(
        after_help = "\
Examples:
  corral job scale web 5
  corral job scale shop api 3      # a job with several groups names one
  corral job scale web 0 --detach",
        override_usage = "corral job scale [OPTIONS] <JOB> [GROUP] <COUNT>"
    )]
    Scale {
        /// The job (its name).
        #[arg(value_name = "JOB")]
        job: String,
        /// `[GROUP] COUNT`: the group may be left out when the job has one.
        #[arg(value_name = "COUNT", num_args = 1..=2, required = true)]
        rest: Vec<String>,
        /// Return once stored, without following the rollout.
        #[arg(long)]
        detach: bool,
        /// Give up waiting after this long (e.g. 5m).
        #[arg(long, value_parser = duration, value_name = "DURATION")]
        timeout: Option<std::time::Duration>,
        #[command(flatten)]
        out: OutputArgs,
        #[command(flatten)]
        conn: Conn,
    },
    /// Write an example job file, every field commented (`--short`: the
    /// three-line seed form).
    #[command(after_help = "\
Examples:
  corral job init                 # writes job.yaml
  corral job init web.yaml --short
  corral job init - | less")]
    Init {
        /// Where to write it (`-`: standard output).
        #[arg(value_name = "FILE", default_value = "job.yaml")]
        file: PathBuf,
        /// The smallest job: image, env, count.
        #[arg(long)]
        short: bool,
        /// Replace the file if it exists.
        #[arg(long)]
        force: bool,
    },
}

#[derive(Subcommand)]
pub enum BenchCmd {
    /// The scheduler simulator: SQLite (synchronous=FULL) against an
    /// in-memory store, same scenario, same run.
    #[command(after_help = "Example:\n  corral bench scheduler --nodes 1000 --jobs 100")]
    Scheduler {
        /// Simulated nodes.
        #[arg(long, default_value_t = 10_000)]
        nodes: usize,
        /// Jobs submitted.
        #[arg(long, default_value_t = 1_000)]
        jobs: usize,
        /// Allocations per job.
        #[arg(long, default_value_t = 100)]
        allocs: u32,
        /// Scheduler workers.
        #[arg(long, default_value_t = 2)]
        workers: usize,
        /// Skip the in-memory baseline.
        #[arg(long)]
        sqlite_only: bool,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Server CPU for a fleet heartbeating at the default interval.
    #[command(after_help = "Example:\n  corral bench heartbeats --nodes 1000 --window 10s")]
    Heartbeats {
        /// Simulated nodes.
        #[arg(long, default_value_t = 10_000)]
        nodes: usize,
        /// How long to measure.
        #[arg(long, default_value = "30s")]
        window: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Real containers on this node (root): corral against bare CRI and,
    /// with --docker-socket, Docker Swarm. See scripts/bench-node.
    #[command(after_help = "Example:\n  corral bench node --rounds 1")]
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
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
pub enum AllocCmd {
    /// List allocations.
    #[command(after_help = "\
Examples:
  corral alloc ls
  corral alloc ls --job web -o wide")]
    Ls {
        /// Only this job's allocations.
        #[arg(long, value_name = "JOB")]
        job: Option<String>,
        #[command(flatten)]
        out: OutputArgs,
        #[command(flatten)]
        conn: Conn,
    },
    /// Show one allocation: tasks, checks, ports and addresses.
    #[command(after_help = "Example:\n  corral alloc status 3f2a9c1e")]
    Status {
        /// The allocation's id or an id prefix.
        #[arg(value_name = "ALLOC")]
        id: String,
        #[command(flatten)]
        out: OutputArgs,
        #[command(flatten)]
        conn: Conn,
    },
    /// Restart a running allocation's tasks in place, at once (counted in
    /// the task's restarts, not against its restart policy). Waits until
    /// they run again.
    #[command(after_help = "\
Examples:
  corral alloc restart 3f2a9c1e
  corral alloc restart 3f2a9c1e --task app")]
    Restart {
        /// The allocation's id or an id prefix.
        #[arg(value_name = "ALLOC")]
        id: String,
        /// Only this task.
        #[arg(long, value_name = "TASK")]
        task: Option<String>,
        #[command(flatten)]
        out: OutputArgs,
        #[command(flatten)]
        conn: Conn,
    },
    /// Stop one allocation; the scheduler places a new one for its slot
    /// (on any node that fits). Waits until the replacement runs.
    #[command(after_help = "\
Examples:
  corral alloc stop 3f2a9c1e
  corral alloc stop 3f2a9c1e --detach")]
    Stop {
        /// The allocation's id or an id prefix.
        #[arg(value_name = "ALLOC")]
        id: String,
        /// Return once the stop is stored.
        #[arg(long)]
        detach: bool,
        #[command(flatten)]
        out: OutputArgs,
        #[command(flatten)]
        conn: Conn,
    },
}

#[derive(Subcommand)]
pub enum SystemCmd {
    /// Garbage-collect finished allocations, evaluations and deployments
    /// and down nodes now, whatever their age (the server does it on its
    /// own past the `*_gc_threshold`s). Each job slot's newest allocation,
    /// each job's newest evaluation and deployment stay: `corral logs`,
    /// `corral status` and the scheduler read them (docs/CONFIG.md).
    #[command(after_help = "Example:\n  corral system gc")]
    Gc {
        #[command(flatten)]
        out: OutputArgs,
        #[command(flatten)]
        conn: Conn,
    },
}

#[derive(Subcommand)]
pub enum ServiceCmd {
    /// List services with their healthy endpoints and routes.
    #[command(after_help = "\
Examples:
  corral service ls
  corral service ls --json")]
    Ls {
        #[command(flatten)]
        out: OutputArgs,
        #[command(flatten)]
        conn: Conn,
    },
    /// Show one service: routes, and every endpoint with its health and node.
    #[command(after_help = "\
Examples:
  corral service status web
  corral service status web -o json")]
    Status {
        /// The service's name.
        #[arg(value_name = "NAME")]
        name: String,
        #[command(flatten)]
        out: OutputArgs,
        #[command(flatten)]
        conn: Conn,
    },
}

#[derive(Subcommand)]
pub enum VolumeCmd {
    /// List volumes: node, size, use, generation, snapshots.
    #[command(after_help = "\
Examples:
  corral volume ls
  corral volume ls --job shop --json
  corral volume ls --quarantined")]
    Ls {
        /// Only the volumes of this job.
        #[arg(long)]
        job: Option<String>,
        /// The stale copies nodes set aside instead (a node back after
        /// its volume was moved or restored elsewhere).
        #[arg(long, conflicts_with = "job")]
        quarantined: bool,
        #[command(flatten)]
        out: OutputArgs,
        #[command(flatten)]
        conn: Conn,
    },
    /// Show one volume: its node, generation, last move, snapshots.
    #[command(after_help = "\
Examples:
  corral volume status shop.data
  corral volume status shop.data.0 -o json")]
    Status {
        /// The volume's id (`<job>.<name>`, `<job>.<name>.<index>` with per_alloc).
        #[arg(value_name = "VOLUME")]
        id: String,
        #[command(flatten)]
        out: OutputArgs,
        #[command(flatten)]
        conn: Conn,
    },
    /// Take a snapshot now, on the volume's node.
    #[command(after_help = "\
Examples:
  corral volume snapshot shop.data")]
    Snapshot {
        /// The volume's id (`corral volume ls`).
        #[arg(value_name = "VOLUME")]
        id: String,
        #[command(flatten)]
        out: OutputArgs,
        #[command(flatten)]
        conn: Conn,
    },
    /// Back a volume up now, to the target its spec's `backup.to` names.
    #[command(after_help = "\
Examples:
  corral volume backup shop.data")]
    Backup {
        /// The volume's id (`corral volume ls`).
        #[arg(value_name = "VOLUME")]
        id: String,
        #[command(flatten)]
        out: OutputArgs,
        #[command(flatten)]
        conn: Conn,
    },
    /// List a volume's snapshots, oldest first.
    #[command(after_help = "\
Examples:
  corral volume snapshots shop.data
  corral volume snapshots shop.data --json")]
    Snapshots {
        /// The volume's id (`corral volume ls`).
        #[arg(value_name = "VOLUME")]
        id: String,
        #[command(flatten)]
        out: OutputArgs,
        #[command(flatten)]
        conn: Conn,
    },
    /// Put a volume's data back as it was at a snapshot, or at a backup
    /// (its id, at least 8 digits). The volume must not be in use: stop its
    /// job first. With --as, make a new volume from it instead, beside the
    /// one in use.
    #[command(after_help = "\
Examples:
  corral stop shop && corral volume restore shop.data auto-1765100000000 && corral run shop.yaml
  corral volume restore shop.data auto-1765100000000 --as shop-copy.data   # a job `shop-copy` with volume `data` then uses it")]
    Restore {
        /// The volume's id (`corral volume ls`).
        #[arg(value_name = "VOLUME")]
        id: String,
        /// The snapshot's name (`corral volume snapshots VOLUME`) or a
        /// backup's id (`corral volume status VOLUME -o json`).
        #[arg(value_name = "SNAPSHOT|BACKUP")]
        snapshot: String,
        /// Make a new volume of this id (`<job>.<volume>`, or
        /// `<job>.<volume>.<index>` for a per_alloc volume) instead: the
        /// volume itself is left alone and may stay in use.
        #[arg(long = "as", value_name = "NEW_VOLUME")]
        as_volume: Option<String>,
        #[command(flatten)]
        out: OutputArgs,
        #[command(flatten)]
        conn: Conn,
    },
    /// Delete a volume and its data on its node. Not undone.
    #[command(after_help = "\
Examples:
  corral volume delete shop.data --yes")]
    Delete {
        /// The volume's id (`corral volume ls`).
        #[arg(value_name = "VOLUME")]
        id: String,
        /// Confirm: the data is gone for good.
        #[arg(long)]
        yes: bool,
        /// Forget the volume even when its node is down (its copy there is
        /// set aside, never used, if the node comes back).
        #[arg(long)]
        force: bool,
        #[command(flatten)]
        out: OutputArgs,
        #[command(flatten)]
        conn: Conn,
    },
}

#[derive(Subcommand)]
pub enum NodeCmd {
    /// List nodes.
    #[command(after_help = "\
Examples:
  corral node ls
  corral node ls -o name")]
    Ls {
        #[command(flatten)]
        out: OutputArgs,
        #[command(flatten)]
        conn: Conn,
    },
    /// Show one node.
    #[command(after_help = "Example:\n  corral node status node-1")]
    Status {
        /// The node's id, an id prefix or its name.
        #[arg(value_name = "NODE")]
        id: String,
        #[command(flatten)]
        out: OutputArgs,
        #[command(flatten)]
        conn: Conn,
    },
    /// Move every allocation off a node (replacement first, at most
    /// max_parallel per group at a time), then leave it ineligible.
    #[command(after_help = "\
Examples:
  corral node drain node-1 --deadline 10m
  corral node drain node-1 --disable")]
    Drain {
        /// The node's id, an id prefix or its name.
        #[arg(value_name = "NODE")]
        id: String,
        /// Stop what is left after this long.
        #[arg(long, default_value = "1h", value_parser = valid_duration)]
        deadline: String,
        /// Accepted for Nomad compatibility; corral has no system jobs yet.
        #[arg(long)]
        ignore_system: bool,
        /// End a drain and make the node eligible again.
        #[arg(long)]
        disable: bool,
        #[command(flatten)]
        out: OutputArgs,
        #[command(flatten)]
        conn: Conn,
    },
    /// Allow or forbid new placements on a node.
    #[command(
        group(clap::ArgGroup::new("mode").required(true).args(["enable", "disable"])),
        after_help = "\
Examples:
  corral node eligibility node-1 --disable
  corral node eligibility node-1 --enable"
    )]
    Eligibility {
        /// The node's id, an id prefix or its name.
        #[arg(value_name = "NODE")]
        id: String,
        /// New allocations may be placed on it.
        #[arg(long, conflicts_with = "disable")]
        enable: bool,
        /// No new allocations are placed on it (running ones stay).
        #[arg(long)]
        disable: bool,
        #[command(flatten)]
        out: OutputArgs,
        #[command(flatten)]
        conn: Conn,
    },
}

/// A duration flag, parsed with the command line: a bad one is a usage
/// error (exit 2), like any other bad flag.
pub fn duration(t: &str) -> Result<std::time::Duration, String> {
    corral_types::units::parse_duration(t)
        .map(|d| d.as_std())
        .map_err(|e| e.to_string())
}

/// A duration flag the server parses, checked while the command line is parsed: a bad one
/// is a usage error (exit 2), like any other bad flag.
pub fn valid_duration(t: &str) -> Result<String, String> {
    corral_types::units::parse_duration(t)
        .map(|_| t.to_string())
        .map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::Cli;

    /// Every visible command, with its path (`corral node drain`).
    fn commands() -> Vec<(String, clap::Command)> {
        fn walk(prefix: &str, c: &clap::Command, out: &mut Vec<(String, clap::Command)>) {
            for sub in c
                .get_subcommands()
                .filter(|s| !s.is_hide_set() && s.get_name() != "help")
            {
                let path = format!("{prefix} {}", sub.get_name());
                out.push((path.clone(), sub.clone()));
                walk(&path, sub, out);
            }
        }
        let mut cmd = Cli::command();
        cmd.build();
        let mut out = Vec::new();
        walk("corral", &cmd, &mut out);
        out
    }

    #[test]
    fn every_command_has_an_example_and_every_flag_a_description() {
        let all = commands();
        assert!(all.len() > 25, "only {} commands found", all.len());
        for (path, c) in &all {
            let groups = c.get_subcommands().next().is_some();
            if !groups {
                let after = c
                    .get_after_help()
                    .map(|h| h.to_string())
                    .unwrap_or_default();
                assert!(
                    after.contains("Example"),
                    "`{path}` has no example in its help"
                );
            }
            assert!(c.get_about().is_some(), "`{path}` has no description");
            for a in c.get_arguments() {
                let id = a.get_id().as_str();
                if a.is_hide_set() || id == "help" || id == "version" {
                    continue;
                }
                assert!(
                    a.get_help().is_some(),
                    "`{path}`: argument `{id}` has no description"
                );
            }
        }
    }

    #[test]
    fn client_flags_only_on_client_commands() {
        for (path, c) in commands() {
            let has = |id: &str| {
                c.get_arguments()
                    .any(|a| a.get_id() == id && !a.is_hide_set())
            };
            let role = [
                "corral dev",
                "corral server",
                "corral agent",
                "corral router",
            ]
            .contains(&path.as_str())
                || path.starts_with("corral bench");
            if role {
                assert!(!has("addr"), "`{path}` shows the client's --api");
                assert!(
                    !has("token") || path == "corral agent" || path == "corral router",
                    "`{path}` shows --token"
                );
            }
        }
    }

    #[test]
    fn help_shows_no_empty_env_values() {
        for (path, mut c) in commands() {
            let help = c.render_long_help().to_string();
            assert!(
                !help.contains("=]"),
                "`{path} --help` shows an empty env value:\n{help}"
            );
        }
    }
}
