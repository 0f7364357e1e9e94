//! `corral dev`: a server and an agent in one process, for one machine. It
//! uses the machine's containerd when one answers, or starts a private one
//! under the data dir, and stops it on exit. A private containerd still
//! running from a `corral dev` that was killed is adopted (its containers
//! live on), and stopped on exit like one started here: waited for, and
//! its pod bridge removed.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use corral_agent::config::DEFAULT_CRI_SOCKET;
use corral_agent::containerd::{self, ContainerdConfig, PrivateContainerd, RunningContainerd};
use corral_agent::image;
use corral_agent::{Agent, AgentConfig};
use corral_server::Server;

use crate::args::DevArgs;
use tokio_util::sync::CancellationToken;

/// The pod network of a private containerd unless told otherwise.
pub const DEFAULT_POD_BRIDGE: &str = "corral-dev0";
pub const DEFAULT_POD_SUBNET: &str = "10.89.0.0/24";
/// The built-in router (`--router-addr`): next to the API's 7070.
pub const DEFAULT_ROUTER_ADDR: &str = "127.0.0.1:7080";

pub async fn run(a: DevArgs, shutdown: CancellationToken) -> Result<()> {
    let data_dir = &a.data_dir.clone().unwrap_or_else(default_data_dir);
    let file = crate::config::load(a.config.as_deref())?.server;
    if let Some(d) = &file.data_dir {
        bail!(
            "config key data_dir ({}) is `corral server`'s; corral dev keeps its server's state in DATA_DIR/server: give --data-dir instead",
            d.display()
        );
    }
    let listen = a
        .listen
        .or(file.addr)
        .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], crate::conn::DEFAULT_PORT)));
    let mut server_config = crate::config::server_config(&file, data_dir.join("server"))?;
    server_config.api_token = a.api_token.clone().or(file.api_token);
    // Before containerd is started: a refused token or config must leave
    // nothing behind.
    server_config.validate()?;
    // The data dirs first (its own, its server's and its agent's: a
    // `corral server` or `corral agent` on them is refused too), the port
    // next: a second `corral dev` touches nothing.
    let _locks = [
        crate::datadir::lock(data_dir, "corral dev")?,
        crate::datadir::lock(&data_dir.join("server"), "corral dev")?,
        crate::datadir::lock(&data_dir.join("agent"), "corral dev")?,
    ];
    let listener = tokio::net::TcpListener::bind(listen).await.with_context(|| {
        format!("cannot listen on {listen}: is another `corral dev` running? stop it or pick another --addr")
    })?;
    // The router's port too, before anything is started.
    let router = if a.no_router {
        None
    } else {
        let (tx, rx) = corral_router::catalog_channel();
        let metrics = Arc::new(corral_router::Metrics::new());
        let config = corral_router::RouterConfig::new(a.router_addr);
        let r = corral_router::Router::start(config, rx, metrics, shutdown.clone())
            .await
            .context(
                "is another `corral dev` running? stop it, pick another --router-addr, or give --no-router",
            )?;
        Some((r, tx))
    };
    if a.fresh {
        forget_server_state(&data_dir.join("server"))?;
    }
    // containerd next: a missing one is the likeliest failure, and it
    // should come before anything else is started.
    let mut private = None;
    let mut drivers = vec!["exec".to_string()];
    let mut socket = a
        .cri_socket
        .clone()
        .unwrap_or_else(|| PathBuf::from(DEFAULT_CRI_SOCKET));
    if !a.no_containers {
        if !containerd::probe(&socket).await {
            if a.cri_socket.is_some() {
                bail!(
                    "no CRI runtime answers at {}: start containerd there, or leave out --cri-socket to let corral dev start its own",
                    socket.display()
                );
            }
            let pd = start_private(data_dir, &a.pod_bridge, &a.pod_subnet).await?;
            socket = pd.socket_path();
            private = Some(pd);
        }
        import_demo_image(&socket, data_dir).await;
        drivers.push("container".into());
    }

    let api_token = server_config.api_token.clone();
    // The server outlives the agent: the agent's last reports (its tasks
    // stopped) must reach it, or a restarted dev would find them running.
    let server_shutdown = CancellationToken::new();
    let server = Server::start(server_config, server_shutdown.clone())
        .await
        .context("cannot start the server")?;
    let bound = listener.local_addr()?;
    let core = server.core.clone();
    let server_task = tokio::spawn(server.serve(listener));

    let mut config = AgentConfig::new(&format!("http://{bound}"), data_dir.join("agent"));
    config.name = Some("dev".into());
    let api_token_for_router = api_token.clone();
    config.token = api_token;
    config.drivers = drivers;
    config.cri_socket = socket;
    config.capture_exe = crate::capture_exe();
    // The node DNS on the pod network's gateway: the private containerd's
    // network, or the machine's.
    let cni_dir = (!a.no_containers).then(|| match &private {
        Some(p) => p.cni_conf_dir(),
        None => PathBuf::from(containerd::DEFAULT_CNI_CONF_DIR),
    });
    config.dns = crate::nodedns::config(&a.dns, None, None, cni_dir.as_deref())?;
    config.volumes = crate::volumes::config(
        &a.volumes,
        crate::volumes::FileKeys {
            dir: None,
            provider: None,
            reserved: None,
            on: None,
        },
        &config.data_dir,
    )?;
    // One machine, one user: Ctrl-C takes the tasks down with it.
    config.stop_on_shutdown = true;
    let agent = Agent::start(config, shutdown.clone())
        .await
        .context("cannot start the agent")?;
    // One `/metrics` on the API address: the server's, then the agent's.
    let agent_metrics = agent.metrics.clone();
    core.metrics.add_source(move || {
        let m = agent_metrics.clone();
        async move { m.encode().await }
    });
    eprintln!(
        "corral dev: API on http://{bound}, data in {}",
        data_dir.display()
    );
    let router = router.map(|(r, catalogs)| {
        let client = corral_client::Client::new(&format!("http://{bound}"), api_token_for_router)
            .with_addr_setting("corral dev's own API");
        let metrics = r.metrics().clone();
        tokio::spawn(corral_router::follow(
            client,
            catalogs,
            metrics.clone(),
            shutdown.clone(),
        ));
        // One `/metrics` on the API address: the router's too.
        core.metrics.add_source(move || {
            let m = metrics.clone();
            async move { m.encode() }
        });
        let addr = r.http_addr();
        eprintln!(
            "corral dev: router on http://{addr}: a service answers at http://<service>.localhost:{}/",
            addr.port()
        );
        r
    });
    if bound.to_string() != crate::conn::DEFAULT_API.trim_start_matches("http://") {
        eprintln!("corral dev: for the CLI: export CORRAL_ADDR=http://{bound}");
    }
    // Jobs still meant to run (a stopped one is history, not a restore).
    let restored: Vec<String> = core
        .store
        .snapshot()
        .jobs()
        .filter(|j| !j.stopped)
        .map(|j| j.spec.name.clone())
        .collect();
    if !restored.is_empty() {
        eprintln!(
            "corral dev: restored {} job{} from {} ({}); `corral dev --fresh` starts empty",
            restored.len(),
            if restored.len() == 1 { "" } else { "s" },
            data_dir.display(),
            restored.join(", ")
        );
    }
    if let Some(d) = agent.dns_addr {
        eprintln!("corral dev: node DNS on {d} (pods resolve <service>.service.corral)");
    }
    eprintln!(
        "corral dev: node {} ready; submit a job with `corral run FILE`",
        agent.node_id
    );
    agent.wait().await;
    // In-flight requests finish before the server goes.
    if let Some(r) = router {
        r.wait().await;
    }
    server_shutdown.cancel();
    server_task.await.context("server task")??;
    if let Some(pd) = private {
        pd.stop().await;
    }
    Ok(())
}

/// `--fresh`: the server's store goes (jobs, allocations, events); its
/// lock stays, held by this process. The agent's state stays: it stops
/// what the new, empty server does not know.
fn forget_server_state(dir: &Path) -> Result<()> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", dir.display())),
    };
    for e in entries {
        let e = e.with_context(|| format!("cannot read {}", dir.display()))?;
        if e.file_name() == crate::datadir::LOCK_FILE {
            continue;
        }
        let path = e.path();
        let r = if e.file_type().is_ok_and(|t| t.is_dir()) {
            std::fs::remove_dir_all(&path)
        } else {
            std::fs::remove_file(&path)
        };
        r.with_context(|| format!("--fresh: cannot remove {}", path.display()))?;
    }
    eprintln!("corral dev: --fresh: forgot the jobs in {}", dir.display());
    Ok(())
}

/// The private containerd of this data dir: started by us, or still
/// running from a `corral dev` that was killed (its containers live on and
/// are adopted, so it must not be restarted under them).
enum Private {
    Started(Box<PrivateContainerd>),
    Adopted(Box<RunningContainerd>),
}

/// How long an adopted containerd gets to exit after SIGTERM (as long as
/// one started here gets).
const ADOPTED_STOP_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

impl Private {
    fn cni_conf_dir(&self) -> PathBuf {
        match self {
            Private::Started(pd) => pd.paths().cni_conf_dir.clone(),
            Private::Adopted(rc) => rc.paths.cni_conf_dir.clone(),
        }
    }

    fn socket_path(&self) -> PathBuf {
        match self {
            Private::Started(pd) => pd.socket_path().to_path_buf(),
            Private::Adopted(rc) => rc.paths.socket.clone(),
        }
    }

    /// Stops containerd, waits for it, then removes the pod bridge (the
    /// CNI plugins never do; it is ours). An adopted one was only sent
    /// SIGTERM before: the process exited while containerd was still
    /// going, and the bridge stayed.
    async fn stop(self) {
        let bridge = match self {
            Private::Started(mut pd) => {
                if let Err(e) = pd.stop().await {
                    eprintln!("corral dev: stopping the private containerd: {e}");
                }
                Some(pd.config().bridge_name.clone())
            }
            Private::Adopted(rc) => {
                rc.stop(ADOPTED_STOP_TIMEOUT).await;
                rc.bridge
            }
        };
        if let Some(b) = bridge
            && let Err(e) = containerd::remove_bridge(&b)
        {
            eprintln!("corral dev: removing the pod bridge: {e}");
        }
    }
}

fn private_root(data_dir: &Path) -> PathBuf {
    // Socket paths are limited to ~100 bytes: keep the root short.
    data_dir.join("ctrd")
}

async fn start_private(data_dir: &Path, bridge: &str, subnet: &str) -> Result<Private> {
    let root = private_root(data_dir);
    let pidfile = root.join("corral-dev.pid");
    if containerd::probe(&root.join("containerd.sock")).await {
        // Found by its command line: a pid file can name a reused pid.
        let Some(rc) = RunningContainerd::find(&root) else {
            bail!(
                "a CRI runtime answers on {} but no containerd runs with {}: stop it first",
                root.join("containerd.sock").display(),
                root.join("config.toml").display()
            );
        };
        eprintln!(
            "corral dev: reusing the private containerd still running from the last run (pid {})",
            rc.pid
        );
        return Ok(Private::Adopted(Box::new(rc)));
    }
    if containerd::find_containerd_binary().is_none() {
        bail!(
            "containerd is not installed: install it with `apt-get install containerd runc containernetworking-plugins`, or run `corral dev --no-containers` for exec tasks only"
        );
    }
    let cfg = ContainerdConfig::new(&root, bridge, subnet, image::PAUSE_IMAGE);
    let pd = PrivateContainerd::start(cfg)
        .await
        .with_context(|| format!("cannot start a private containerd under {}", root.display()))?;
    let _ = std::fs::write(&pidfile, pd.pid().to_string());
    eprintln!(
        "corral dev: started a private containerd ({})",
        pd.socket_path().display()
    );
    Ok(Private::Started(Box::new(pd)))
}

/// The README's demo image, built from busybox-static and imported, so
/// the demo runs offline. A failure only costs the demo.
async fn import_demo_image(socket: &Path, data_dir: &Path) {
    let busybox = Path::new(image::BUSYBOX);
    if !busybox.exists() {
        return;
    }
    let r = async {
        let tar = image::build_into(&image::demo_image(busybox), &data_dir.join("images"))?;
        containerd::import_image(socket, &tar).await?;
        Ok::<_, anyhow::Error>(())
    }
    .await;
    match r {
        Ok(()) => eprintln!("corral dev: demo image {} ready", image::DEMO_IMAGE),
        Err(e) => eprintln!("corral dev: cannot prepare the demo image: {e:#}"),
    }
}

/// `/var/lib/corral/dev` as root, else under `$HOME/.local/share/corral`.
pub fn default_data_dir() -> PathBuf {
    if rustix::process::geteuid().is_root() {
        return PathBuf::from("/var/lib/corral/dev");
    }
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("."));
    home.join(".local/share/corral/dev")
}
