//! `corral`: the one binary. Server, agent, router and `dev` roles, and the CLI
//! client that talks to `$CORRAL_ADDR`.

mod args;
mod cmd;
mod config;
mod conn;
mod datadir;
mod nodedns;
mod output;
mod rollout;
mod shutdown;
mod specdiff;
mod volumes;

use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use clap::Parser;

use args::{AllocCmd, BenchCmd, Cli, Cmd, DeployCmd, JobCmd, NodeCmd, ServiceCmd, SystemCmd};

fn main() -> ExitCode {
    quiet_on_closed_stdout();
    let mut cli = Cli::parse();
    if let Err(e) = cli.apply_leading_flags() {
        eprintln!("error: {e}");
        return ExitCode::from(2);
    }
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
        Err(e) => match e.downcast_ref::<Exit>() {
            // The command said what happened; only the code is left.
            Some(Exit(code)) => ExitCode::from(*code),
            // Writers that return errors (events -f, logs) end the same way.
            None if broken_pipe(&e) => ExitCode::from(141),
            None => {
                eprintln!("error: {e:#}");
                ExitCode::FAILURE
            }
        },
    }
}

/// An exit code of its own (e.g. `plan`'s 3), after the command printed
/// what it had to say.
#[derive(Debug)]
pub struct Exit(pub u8);

impl std::fmt::Display for Exit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "exit {}", self.0)
    }
}

impl std::error::Error for Exit {}

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
        // Colour codes only for a person at a terminal, not in journald
        // or a file.
        .with_ansi(std::io::stderr().is_terminal())
        .try_init();
}

async fn dispatch(cli: Cli) -> Result<()> {
    match cli.cmd {
        Cmd::Dev(a) => {
            init_logging();
            cmd::dev::run(a, shutdown::on_signals()).await
        }
        Cmd::Server(a) => {
            init_logging();
            let file = config::load(a.config.as_deref())?.server;
            let data_dir = a
                .data_dir
                .or(file.data_dir.clone())
                .unwrap_or_else(|| PathBuf::from("/var/lib/corral/server"));
            let mut sc = config::server_config(&file, data_dir)?;
            sc.api_token = a.api_token.or(file.api_token);
            let addr = a
                .listen
                .or(file.addr)
                .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], conn::DEFAULT_PORT)));
            cmd::server::run(sc, addr, shutdown::on_signals()).await
        }
        Cmd::Agent(a) => {
            init_logging();
            let config = agent_config(a)?;
            cmd::agent::run(config, shutdown::on_signals()).await
        }
        Cmd::Router(a) => {
            init_logging();
            cmd::router::run(a, shutdown::on_signals()).await
        }
        Cmd::Run {
            file,
            detach,
            timeout,
            out,
            conn,
        } => cmd::run::run(&conn.client()?, &file.file, detach, out.out(), timeout).await,
        Cmd::Plan { file, out, conn } => {
            cmd::run::plan(&conn.client()?, &file.file, out.out()).await
        }
        Cmd::Deploy(d) => deploy(d).await,
        Cmd::Job(JobCmd::History { job, out, conn }) => {
            cmd::job::history(&conn.client()?, &job, out.out()).await
        }
        Cmd::Job(JobCmd::Inspect {
            job,
            version,
            output,
            conn,
        }) => cmd::job::inspect(&conn.client()?, &job, version, output).await,
        Cmd::Job(JobCmd::Revert {
            job,
            version,
            detach,
            timeout,
            out,
            conn,
        }) => cmd::job::revert(&conn.client()?, &job, version, detach, out.out(), timeout).await,
        Cmd::Job(JobCmd::Scale {
            job,
            rest,
            detach,
            timeout,
            out,
            conn,
        }) => cmd::job::scale(&conn.client()?, &job, &rest, detach, out.out(), timeout).await,
        Cmd::Job(JobCmd::Init { file, short, force }) => cmd::job_init::run(&file, short, force),
        Cmd::Completion { shell } => {
            use clap::CommandFactory;
            let mut command = args::Cli::command();
            clap_complete::generate(shell, &mut command, "corral", &mut std::io::stdout());
            Ok(())
        }
        Cmd::Events {
            follow,
            topics,
            jobs,
            since_index,
            limit,
            out,
            conn,
        } => {
            let a = cmd::events::EventsArgs {
                follow,
                topics,
                jobs,
                out: out.out(),
                since_index,
                limit,
            };
            cmd::events::events(&conn.client()?, a).await
        }
        Cmd::Alerts { all, out, conn } => cmd::alerts::list(&conn.client()?, all, out.out()).await,
        Cmd::Logmon { spec } => {
            init_logging();
            corral_agent::logs::capture::process::run(&spec)
                .await
                .context("capture process")
        }
        Cmd::System(SystemCmd::Gc { out, conn }) => {
            let r = conn.client()?.system_gc().await?;
            if out.out().data(&r, Vec::new)? {
                return Ok(());
            }
            println!(
                "garbage collected: {} allocations, {} evaluations, {} deployments, {} nodes",
                r.allocations, r.evaluations, r.deployments, r.nodes
            );
            Ok(())
        }
        Cmd::Status {
            job: None,
            out,
            conn,
        } => cmd::status::list(&conn.client()?, out.out()).await,
        Cmd::Status {
            job: Some(j),
            out,
            conn,
        } => cmd::status::job(&conn.client()?, &j, out.out()).await,
        Cmd::Stop {
            job,
            purge,
            delete_volumes,
            detach,
            out,
            conn,
        } => {
            cmd::job::stop(
                &conn.client()?,
                &job,
                cmd::job::StopHow {
                    purge,
                    delete_volumes,
                    detach,
                },
                out.out(),
            )
            .await
        }
        Cmd::Logs { args, conn } => cmd::logs::logs(&conn.client()?, args).await,
        Cmd::Alloc(AllocCmd::Ls { job, out, conn }) => {
            cmd::alloc::list(&conn.client()?, job.as_deref(), out.out()).await
        }
        Cmd::Alloc(AllocCmd::Status { id, out, conn }) => {
            cmd::alloc::status(&conn.client()?, &id, out.out()).await
        }
        Cmd::Alloc(AllocCmd::Restart {
            id,
            task,
            out,
            conn,
        }) => cmd::alloc::restart(&conn.client()?, &id, task.as_deref(), out.out()).await,
        Cmd::Alloc(AllocCmd::Stop {
            id,
            detach,
            out,
            conn,
        }) => cmd::alloc::stop(&conn.client()?, &id, detach, out.out()).await,
        Cmd::Bench(b) => bench(b).await,
        Cmd::Service(ServiceCmd::Ls { out, conn }) => {
            cmd::service::list(&conn.client()?, out.out()).await
        }
        Cmd::Service(ServiceCmd::Status { name, out, conn }) => {
            cmd::service::status(&conn.client()?, &name, out.out()).await
        }
        Cmd::Volume(v) => cmd::volume::run(v).await,
        Cmd::Node(NodeCmd::Ls { out, conn }) => cmd::node::list(&conn.client()?, out.out()).await,
        Cmd::Node(NodeCmd::Status { id, out, conn }) => {
            cmd::node::status(&conn.client()?, &id, out.out()).await
        }
        Cmd::Node(NodeCmd::Drain {
            id,
            deadline,
            ignore_system: _,
            disable,
            out,
            conn,
        }) => cmd::node::drain(&conn.client()?, &id, &deadline, disable, out.out()).await,
        Cmd::Node(NodeCmd::Eligibility {
            id,
            enable,
            disable,
            out,
            conn,
        }) => {
            // clap requires exactly one of them.
            let _ = disable;
            cmd::node::eligibility(&conn.client()?, &id, enable, out.out()).await
        }
    }
}

async fn deploy(d: DeployCmd) -> Result<()> {
    use corral_types::api::DeploymentAction as A;
    match d {
        DeployCmd::Status { job, out, conn } => {
            cmd::deploy::status(&conn.client()?, &job, out.out()).await
        }
        DeployCmd::List { job, out, conn } => {
            cmd::deploy::list(&conn.client()?, &job, out.out()).await
        }
        DeployCmd::Promote {
            job,
            detach,
            out,
            conn,
        } => cmd::deploy::promote(&conn.client()?, &job, detach, out.out()).await,
        DeployCmd::Fail { job, out, conn } => {
            cmd::deploy::action(&conn.client()?, &job, A::Fail, out.out()).await
        }
        DeployCmd::Pause { job, out, conn } => {
            cmd::deploy::action(&conn.client()?, &job, A::Pause, out.out()).await
        }
        DeployCmd::Resume { job, out, conn } => {
            cmd::deploy::action(&conn.client()?, &job, A::Resume, out.out()).await
        }
        DeployCmd::Health {
            alloc,
            healthy,
            unhealthy: _,
            out,
            conn,
        } => cmd::deploy::health(&conn.client()?, &alloc, healthy, out.out()).await,
    }
}

async fn bench(b: BenchCmd) -> Result<()> {
    match b {
        BenchCmd::Scheduler {
            nodes,
            jobs,
            allocs,
            workers,
            sqlite_only,
            json,
        } => {
            let s = corral_bench::scheduler::Scenario {
                nodes,
                jobs,
                allocs_per_job: allocs,
                workers,
                ..Default::default()
            };
            cmd::bench::scheduler(s, !sqlite_only, json).await
        }
        BenchCmd::Heartbeats {
            nodes,
            window,
            json,
        } => {
            let w = corral_types::units::parse_duration(&window)
                .map_err(|e| anyhow::anyhow!("--window: {e}"))?;
            cmd::bench::heartbeats(nodes, w.as_std(), json).await
        }
        BenchCmd::Node {
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
        } => {
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
    }
}

/// The agent's settings: flags and env over its config file's `[agent]`.
fn agent_config(a: args::AgentArgs) -> Result<corral_agent::AgentConfig> {
    let file = config::load(a.config.as_deref())?.agent;
    let server = a
        .server
        .or(file.server)
        .unwrap_or_else(|| "http://127.0.0.1:7070".into());
    let server = corral_client::normalize_addr(&server, corral_agent::agent::SERVER_ADDR_SETTING)?;
    let data_dir = a
        .data_dir
        .or(file.data_dir)
        .unwrap_or_else(|| PathBuf::from("/var/lib/corral/agent"));
    let mut config = corral_agent::AgentConfig::new(&server, data_dir);
    config.token = a.token.or(file.token);
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
    let cni_dir = config
        .drivers
        .iter()
        .any(|d| d == "container")
        .then(|| Path::new(corral_agent::containerd::DEFAULT_CNI_CONF_DIR));
    config.dns = nodedns::config(&a.dns, file.dns_addr.as_deref(), file.dns, cni_dir)?;
    config.volumes = volumes::config(
        &a.volumes,
        volumes::FileKeys {
            dir: file.volumes_dir.as_deref(),
            provider: file.volume_provider.as_deref(),
            reserved: file.volumes_reserved.as_deref(),
            on: file.volumes,
        },
        &config.data_dir,
    )?;
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
    Ok(config)
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
