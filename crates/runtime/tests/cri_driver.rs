//! The `container` driver against a real private containerd (root only):
//! each test starts its own containerd with its own bridge and subnet,
//! imports a busybox image built on the spot and stops everything at the
//! end, checking that no sandbox, container, netns or veth is left.

#![allow(clippy::unwrap_used)]

mod cri_support;

use std::io::{Read, Write};
use std::time::{Duration, Instant};

use corral_runtime::driver::cri::pod::PodOptions;
use corral_runtime::driver::cri::sandbox::log_file;
use corral_runtime::driver::cri::{CriConfig, CriDriver};
use corral_runtime::driver::{Driver, DriverError};
use corral_types::units::{Bytes, MilliCpu};
use corral_types::{PullPolicy, Resources};
use cri_support::*;

const PATIENCE: Duration = Duration::from_secs(30);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runs_a_task_with_env_and_reports_its_exit() {
    if !can_run() {
        return;
    }
    let env = Env::start("exit").await;
    let alloc = env.alloc("exit1", &[]);
    let t0 = Instant::now();
    env.driver.prepare_alloc(&alloc).await.unwrap();
    let sandbox_ms = t0.elapsed().as_millis();
    // Preparing again reuses the ready sandbox.
    let listed = env.driver.list_node_sandboxes(&env.node_id).await.unwrap();
    assert_eq!(listed.len(), 1);
    let again = env
        .driver
        .prepare_pod(&alloc, &PodOptions::default())
        .await
        .unwrap();
    assert_eq!(again, listed[0].id);

    let mut spec = task(
        "app",
        "echo \"FOO=$FOO task=$CORRAL_TASK\"; echo oops >&2; exit 3",
    );
    spec.env.insert("FOO".into(), "bar".into());
    let ctx = task_ctx(&alloc, spec);
    let t1 = Instant::now();
    let h = env.driver.start(&ctx).await.unwrap();
    let start_ms = t1.elapsed().as_millis();
    let log = log_file(&alloc.alloc_dir, "app");
    let first_line = eventually("the first log line", PATIENCE, || {
        !log_messages(&log).is_empty()
    })
    .await;
    eprintln!(
        "[exit] RunPodSandbox {sandbox_ms} ms, start() {start_ms} ms, first log line {} ms after start()",
        start_ms + first_line.as_millis()
    );

    let exit = tokio::time::timeout(PATIENCE, env.driver.wait(&h))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(exit.exit_code, Some(3), "{exit:?}");
    assert!(!exit.oom_killed);
    assert_eq!(exit.message, "exited with code 3");
    // Cached: the same answer again, at once.
    let again = tokio::time::timeout(Duration::from_millis(100), env.driver.wait(&h))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(again, exit);

    let msgs = log_messages(&log);
    assert!(
        msgs.contains(&("stdout".into(), "FOO=bar task=app".into())),
        "{msgs:?}"
    );
    assert!(msgs.contains(&("stderr".into(), "oops".into())), "{msgs:?}");

    let st = CriDriver::state_of(&h).unwrap();
    assert_eq!(st.attempt, 0);
    // A second run of the task gets the next attempt (the first is removed).
    let h2 = env.driver.start(&ctx).await.unwrap();
    let st2 = CriDriver::state_of(&h2).unwrap();
    assert_eq!(st2.attempt, 1);
    assert_ne!(st2.container_id, st.container_id);
    assert_eq!(st2.sandbox_id, st.sandbox_id);
    env.driver.wait(&h2).await.unwrap();
    // Both runs appended to the same log file.
    let lines = log_messages(&log)
        .into_iter()
        .filter(|(_, m)| m == "FOO=bar task=app")
        .count();
    assert_eq!(lines, 2);

    env.driver.destroy(&h2).await.unwrap();
    env.driver.destroy(&h2).await.unwrap();
    env.driver.destroy(&h).await.unwrap();
    env.driver.cleanup_alloc(&alloc).await.unwrap();
    assert!(
        !std::path::Path::new("/sys/fs/cgroup/memory/corral/podexit1").exists(),
        "pod cgroup left"
    );
    env.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oom_kill_is_reported() {
    if !can_run() {
        return;
    }
    let env = Env::start("oom").await;
    let alloc = env.alloc("oom1", &[]);
    env.driver.prepare_alloc(&alloc).await.unwrap();
    let mut spec = task(
        "hog",
        "x=$(head -c 200000000 /dev/zero | tr '\\0' a); echo survived",
    );
    spec.resources = Resources {
        disk: Default::default(),
        cpu: MilliCpu(500),
        memory: Bytes(24 << 20),
    };
    let h = env.driver.start(&task_ctx(&alloc, spec)).await.unwrap();
    let exit = tokio::time::timeout(PATIENCE, env.driver.wait(&h))
        .await
        .unwrap()
        .unwrap();
    assert!(exit.oom_killed, "{exit:?}");
    assert!(!exit.success());
    assert!(exit.message.starts_with("oom killed"), "{}", exit.message);
    env.driver.destroy(&h).await.unwrap();
    env.driver.cleanup_alloc(&alloc).await.unwrap();
    env.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cpu_and_memory_limits_hold_once_the_container_runs() {
    if !can_run() {
        return;
    }
    let env = Env::start("lim").await;
    let alloc = env.alloc("lim1", &[]);
    env.driver.prepare_alloc(&alloc).await.unwrap();
    // The CPU quota is applied right after start (setup is not throttled):
    // what the task sees a moment later is the limit.
    let mut spec = task(
        "probe",
        "sleep 1; cat /sys/fs/cgroup/cpu/cpu.cfs_quota_us /sys/fs/cgroup/cpu/cpu.cfs_period_us \
         /sys/fs/cgroup/cpu/cpu.shares /sys/fs/cgroup/memory/memory.limit_in_bytes",
    );
    spec.resources = Resources {
        disk: Default::default(),
        cpu: MilliCpu(250),
        memory: Bytes(48 << 20),
    };
    let h = env.driver.start(&task_ctx(&alloc, spec)).await.unwrap();
    assert!(env.driver.wait(&h).await.unwrap().success());
    let out: Vec<String> = log_messages(&log_file(&alloc.alloc_dir, "probe"))
        .into_iter()
        .map(|(_, m)| m.trim().to_string())
        .collect();
    assert_eq!(
        out,
        vec!["25000", "100000", "256", &(48u64 << 20).to_string()],
        "{out:?}"
    );
    env.driver.destroy(&h).await.unwrap();
    env.driver.cleanup_alloc(&alloc).await.unwrap();
    env.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn security_defaults_hold_inside_the_container() {
    if !can_run() {
        return;
    }
    let env = Env::start("sec").await;
    let alloc = env.alloc("sec1", &[]);
    env.driver.prepare_alloc(&alloc).await.unwrap();
    let h = env
        .driver
        .start(&task_ctx(
            &alloc,
            task(
                "probe",
                "grep -E 'CapEff|NoNewPrivs|Seccomp' /proc/self/status; id -u",
            ),
        ))
        .await
        .unwrap();
    assert!(env.driver.wait(&h).await.unwrap().success());
    let out: Vec<String> = log_messages(&log_file(&alloc.alloc_dir, "probe"))
        .into_iter()
        .map(|(_, m)| m)
        .collect();
    let field = |name: &str| {
        out.iter()
            .find_map(|l| {
                l.strip_prefix(&format!("{name}:"))
                    .map(|v| v.trim().to_string())
            })
            .unwrap_or_else(|| panic!("no {name} in {out:?}"))
    };
    assert_eq!(field("NoNewPrivs"), "1");
    assert_eq!(field("Seccomp"), "2");
    let cap_eff = u64::from_str_radix(&field("CapEff"), 16).unwrap();
    assert_ne!(cap_eff, 0);
    // The runtime's default set: far from everything (no CAP_SYS_ADMIN).
    assert_eq!(cap_eff & (1 << 21), 0, "CAP_SYS_ADMIN in {cap_eff:x}");
    assert!(cap_eff.count_ones() < 20, "{cap_eff:x}");
    env.driver.destroy(&h).await.unwrap();

    // Dropped capabilities, another user, a read-only root.
    let mut spec = task(
        "locked",
        "grep CapEff /proc/self/status; id -u; touch /x 2>/dev/null && echo writable || echo read-only",
    );
    spec.security.cap_drop = vec!["ALL".into()];
    spec.security.user = Some("65534".into());
    spec.security.read_only_rootfs = true;
    let h = env.driver.start(&task_ctx(&alloc, spec)).await.unwrap();
    assert!(env.driver.wait(&h).await.unwrap().success());
    let out: Vec<String> = log_messages(&log_file(&alloc.alloc_dir, "locked"))
        .into_iter()
        .map(|(_, m)| m)
        .collect();
    assert!(
        out.contains(&"CapEff:\t0000000000000000".to_string()),
        "{out:?}"
    );
    assert!(out.contains(&"65534".to_string()), "{out:?}");
    assert!(out.contains(&"read-only".to_string()), "{out:?}");
    env.driver.destroy(&h).await.unwrap();
    env.driver.cleanup_alloc(&alloc).await.unwrap();
    env.finish().await;
}

fn http_get(port: u16, path: &str) -> std::io::Result<String> {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(
        s,
        "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )?;
    let mut out = String::new();
    s.read_to_string(&mut out)?;
    Ok(out)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_port_answers_http_on_loopback() {
    if !can_run() {
        return;
    }
    let env = Env::start("port").await;
    let rules_before = cni_nat_rules();
    let host_port = free_port();
    let mut alloc = env.alloc("port1", &[("web.http", host_port)]);
    // What the alloc runner passes to prepare_alloc: the group's ports.
    let group: corral_types::GroupSpec = serde_json::from_value(serde_json::json!({
        "name": "web", "count": 1,
        "tasks": [serde_json::to_value({
            let mut t = task("web", "");
            t.ports.insert("http".into(), 8080);
            t
        }).unwrap()]
    }))
    .unwrap();
    alloc.pod = PodOptions::from_group(&group);
    assert_eq!(alloc.pod.group_ports.get("web.http"), Some(&8080));
    let t0 = Instant::now();
    env.driver.prepare_alloc(&alloc).await.unwrap();
    let sandbox_ms = t0.elapsed().as_millis();
    let h = env
        .driver
        .start(&task_ctx(
            &alloc,
            task(
                "web",
                "echo hello-from-the-pod > /www/index.html; httpd -f -p 8080 -h /www & trap 'kill $!; exit 0' TERM; wait",
            ),
        ))
        .await
        .unwrap();
    let t1 = Instant::now();
    let answered = loop {
        let last = match http_get(host_port, "/index.html") {
            Ok(body) if body.contains("hello-from-the-pod") => break t1.elapsed(),
            Ok(body) => body,
            Err(e) => e.to_string(),
        };
        assert!(
            t1.elapsed() < PATIENCE,
            "no answer on 127.0.0.1:{host_port}: {last}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    eprintln!(
        "[port] RunPodSandbox with a host port {sandbox_ms} ms; HTTP answered {} ms after start()",
        answered.as_millis()
    );
    assert_eq!(env.bridge_ports(), 1, "one veth on the bridge");

    let stats = env.driver.stats(&h).await.unwrap();
    assert!(stats.memory_bytes > 0, "{stats:?}");
    assert!(stats.cpu_usage_ns > 0, "{stats:?}");

    // The shell traps SIGTERM (PID 1 ignores it otherwise).
    let t = Instant::now();
    env.driver.stop(&h, Duration::from_secs(10)).await.unwrap();
    assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
    let exit = tokio::time::timeout(Duration::from_secs(2), env.driver.wait(&h))
        .await
        .unwrap()
        .unwrap();
    assert!(exit.success(), "{exit:?}");
    env.driver.destroy(&h).await.unwrap();
    env.driver.cleanup_alloc(&alloc).await.unwrap();
    assert!(http_get(host_port, "/").is_err(), "port still mapped");
    // The pod's own nat chains are gone (portmap keeps its shared ones).
    let rules_after = cni_nat_rules();
    let added: Vec<_> = rules_after
        .iter()
        .filter(|r| !rules_before.contains(r))
        .filter(|r| r.contains(&host_port.to_string()))
        .collect();
    assert!(added.is_empty(), "{added:?}");
    if !rules_before.iter().any(|r| r.contains("CNI-HOSTPORT")) {
        remove_portmap_chains();
        assert!(
            !cni_nat_rules().iter().any(|r| r.contains("CNI-HOSTPORT")),
            "{:?}",
            cni_nat_rules()
        );
    }
    env.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_honours_the_timeout_and_cleanup_leaves_nothing() {
    if !can_run() {
        return;
    }
    let env = Env::start("stop").await;
    let alloc = env.alloc("stop1", &[]);
    env.driver.prepare_alloc(&alloc).await.unwrap();
    // busybox sh as PID 1 ignores SIGTERM: only the SIGKILL after the
    // timeout ends it.
    let stubborn = env
        .driver
        .start(&task_ctx(&alloc, task("stubborn", "echo up; sleep 1000")))
        .await
        .unwrap();
    // A task that traps SIGTERM ends at once.
    let polite = env
        .driver
        .start(&task_ctx(
            &alloc,
            task(
                "polite",
                "trap 'echo bye; exit 0' TERM; echo up; while true; do sleep 0.1; done",
            ),
        ))
        .await
        .unwrap();
    for t in ["stubborn", "polite"] {
        let log = log_file(&alloc.alloc_dir, t);
        eventually("the task to run", PATIENCE, || {
            log_messages(&log).iter().any(|(_, m)| m == "up")
        })
        .await;
    }
    assert_eq!(env.bridge_ports(), 1);
    assert_eq!(env.netns_left().len(), 1, "{:?}", env.netns_left());

    let t = Instant::now();
    env.driver
        .stop(&polite, Duration::from_secs(10))
        .await
        .unwrap();
    let polite_ms = t.elapsed().as_millis();
    let exit = tokio::time::timeout(Duration::from_secs(2), env.driver.wait(&polite))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(exit.exit_code, Some(0), "{exit:?}");
    assert!(polite_ms < 2000, "{polite_ms} ms");

    let t = Instant::now();
    env.driver
        .stop(&stubborn, Duration::from_millis(1500))
        .await
        .unwrap();
    let stubborn_ms = t.elapsed().as_millis();
    // Rounded up to 2 s.
    assert!(
        (1900..6000).contains(&stubborn_ms),
        "stop took {stubborn_ms} ms"
    );
    let exit = tokio::time::timeout(Duration::from_secs(2), env.driver.wait(&stubborn))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(exit.exit_code, Some(137), "{exit:?}");
    eprintln!(
        "[stop] trapped SIGTERM: {polite_ms} ms; ignored SIGTERM, 2 s timeout: {stubborn_ms} ms"
    );
    // Stopping again is fine.
    env.driver
        .stop(&stubborn, Duration::from_secs(1))
        .await
        .unwrap();

    for h in [&stubborn, &polite] {
        env.driver.destroy(h).await.unwrap();
    }
    let t = Instant::now();
    env.driver.cleanup_alloc(&alloc).await.unwrap();
    eprintln!("[stop] cleanup_alloc {} ms", t.elapsed().as_millis());
    // Twice is fine too.
    env.driver.cleanup_alloc(&alloc).await.unwrap();
    assert!(
        env.driver
            .stop(&stubborn, Duration::from_secs(1))
            .await
            .is_ok()
    );
    for h in ["memory", "cpu", "pids", "unified", "systemd"] {
        let d = std::path::Path::new("/sys/fs/cgroup")
            .join(h)
            .join("corral/podstop1");
        assert!(!d.exists(), "{} left", d.display());
    }
    env.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_driver_recovers_a_running_container() {
    if !can_run() {
        return;
    }
    let env = Env::start("recover").await;
    let alloc = env.alloc("rec1", &[]);
    env.driver.prepare_alloc(&alloc).await.unwrap();
    let h = env
        .driver
        .start(&task_ctx(
            &alloc,
            task("app", "trap 'exit 7' TERM; while true; do sleep 0.1; done"),
        ))
        .await
        .unwrap();
    let done = env
        .driver
        .start(&task_ctx(&alloc, task("once", "exit 0")))
        .await
        .unwrap();
    env.driver.wait(&done).await.unwrap();

    // The agent restarts: a new driver, the persisted handles.
    let persisted: corral_runtime::driver::TaskHandle =
        serde_json::from_str(&serde_json::to_string(&h).unwrap()).unwrap();
    let mut cc = CriConfig::new(env.containerd.socket_path());
    cc.sandbox_image = Some(IMAGE.to_string());
    let fresh = CriDriver::connect(cc).await.unwrap();
    fresh.fingerprint().await.unwrap();
    assert!(fresh.recover(&persisted).await.unwrap());
    // An exited task is taken back with its exit (issue 13, case 11).
    assert!(fresh.recover(&done).await.unwrap());
    assert!(fresh.wait(&done).await.unwrap().success());
    assert_eq!(
        CriDriver::state_of(&persisted).unwrap().container_id,
        CriDriver::state_of(&h).unwrap().container_id
    );
    // wait on the recovered task is pending until it is stopped.
    assert!(
        tokio::time::timeout(Duration::from_millis(500), fresh.wait(&persisted))
            .await
            .is_err()
    );
    // The new driver finds the sandbox by its labels for new tasks.
    let h2 = fresh
        .start(&task_ctx(&alloc, task("later", "exit 0")))
        .await
        .unwrap();
    assert_eq!(
        CriDriver::state_of(&h2).unwrap().sandbox_id,
        CriDriver::state_of(&h).unwrap().sandbox_id
    );
    fresh.wait(&h2).await.unwrap();
    fresh
        .stop(&persisted, Duration::from_secs(5))
        .await
        .unwrap();
    let exit = tokio::time::timeout(Duration::from_secs(2), fresh.wait(&persisted))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(exit.exit_code, Some(7));

    // Orphans of this node are listed and removed by id.
    let listed = fresh.list_node_sandboxes(&env.node_id).await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].alloc_id, "rec1");
    assert!(listed[0].ready);
    assert!(
        fresh
            .list_node_sandboxes("other-node")
            .await
            .unwrap()
            .is_empty()
    );
    fresh.remove_sandbox(&listed[0].id).await.unwrap();
    assert!(
        fresh
            .list_node_sandboxes(&env.node_id)
            .await
            .unwrap()
            .is_empty()
    );
    // Destroying what the sandbox took along is fine.
    for x in [&persisted, &done, &h2] {
        fresh.destroy(x).await.unwrap();
    }
    assert!(!fresh.recover(&persisted).await.unwrap());
    env.driver.cleanup_alloc(&alloc).await.unwrap();
    env.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_images_fail_with_clear_errors() {
    if !can_run() {
        return;
    }
    let env = Env::start("img").await;
    let alloc = env.alloc("img1", &[]);
    env.driver.prepare_alloc(&alloc).await.unwrap();
    assert!(env.driver.ensure_image_present(IMAGE).await.unwrap());
    assert!(
        !env.driver
            .ensure_image_present("corral.local/nope:1")
            .await
            .unwrap()
    );

    // A registry that knows no image.
    let registry = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let reg_port = registry.local_addr().unwrap().port();
    tokio::spawn(async move {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        while let Ok((mut s, _)) = registry.accept().await {
            tokio::spawn(async move {
                let mut buf = vec![0u8; 4096];
                let _ = s.read(&mut buf).await;
                let body =
                    r#"{"errors":[{"code":"MANIFEST_UNKNOWN","message":"manifest unknown"}]}"#;
                let resp = format!(
                    "HTTP/1.1 404 Not Found\r\nContent-Type: application/json\r\nDocker-Distribution-Api-Version: registry/2.0\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = s.write_all(resp.as_bytes()).await;
            });
        }
    });
    let image = format!("127.0.0.1:{reg_port}/x:1");
    let mut spec = task("app", "exit 0");
    spec.image = Some(image.clone());
    let err = env.driver.start(&task_ctx(&alloc, spec)).await.unwrap_err();
    assert!(matches!(err, DriverError::Failed { .. }), "{err:?}");
    assert_eq!(
        err.to_string(),
        format!("task app of alloc img1: image not found: {image}")
    );

    // Nothing listens there.
    let dead = free_port();
    let mut spec = task("app", "exit 0");
    spec.image = Some(format!("127.0.0.1:{dead}/x:1"));
    spec.pull_policy = PullPolicy::Always;
    let err = env
        .driver
        .start(&task_ctx(&alloc, spec))
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.starts_with("task app of alloc img1: registry unreachable: ")
            && err.contains("connection refused"),
        "{err}"
    );

    // No image at all.
    let mut spec = task("app", "exit 0");
    spec.image = None;
    let err = env.driver.start(&task_ctx(&alloc, spec)).await.unwrap_err();
    assert!(matches!(err, DriverError::InvalidTask { .. }), "{err:?}");
    env.driver.cleanup_alloc(&alloc).await.unwrap();
    env.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pulls_from_a_local_registry() {
    if !can_run() {
        return;
    }
    let (registry, skopeo) = (
        std::path::Path::new("/usr/bin/docker-registry"),
        std::path::Path::new("/usr/bin/skopeo"),
    );
    if !registry.exists() || !skopeo.exists() {
        eprintln!("skipping: needs docker-registry and skopeo");
        return;
    }
    let env = Env::start("pull").await;
    let reg = LocalRegistry::start(env.dir.path()).await;
    let tar = build_busybox_image(env.dir.path(), IMAGE);
    let image = format!("127.0.0.1:{}/corral/busybox:pull", reg.port);
    let out = std::process::Command::new(skopeo)
        .args(["copy", "--dest-tls-verify=false"])
        .arg(format!("oci-archive:{}", tar.display()))
        .arg(format!("docker://{image}"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let alloc = env.alloc("pull1", &[]);
    env.driver.prepare_alloc(&alloc).await.unwrap();
    assert!(!env.driver.ensure_image_present(&image).await.unwrap());
    let mut spec = task("app", "echo pulled-and-ran");
    spec.image = Some(image.clone());
    let t = Instant::now();
    let h = env
        .driver
        .start(&task_ctx(&alloc, spec.clone()))
        .await
        .unwrap();
    let first_ms = t.elapsed().as_millis();
    assert!(env.driver.wait(&h).await.unwrap().success());
    assert!(env.driver.ensure_image_present(&image).await.unwrap());
    let msgs = log_messages(&log_file(&alloc.alloc_dir, "app"));
    assert!(
        msgs.contains(&("stdout".into(), "pulled-and-ran".into())),
        "{msgs:?}"
    );
    env.driver.destroy(&h).await.unwrap();

    // `always` pulls again (the layers are there: only the manifest moves).
    spec.pull_policy = PullPolicy::Always;
    let t = Instant::now();
    let h = env
        .driver
        .start(&task_ctx(&alloc, spec.clone()))
        .await
        .unwrap();
    let again_ms = t.elapsed().as_millis();
    assert!(env.driver.wait(&h).await.unwrap().success());
    env.driver.destroy(&h).await.unwrap();
    eprintln!("[pull] start() with a pull: {first_ms} ms; with pull policy always: {again_ms} ms");

    // A tag the registry does not have.
    spec.image = Some(format!("127.0.0.1:{}/corral/busybox:nope", reg.port));
    let err = env
        .driver
        .start(&task_ctx(&alloc, spec))
        .await
        .unwrap_err()
        .to_string();
    assert_eq!(
        err,
        format!(
            "task app of alloc pull1: image not found: 127.0.0.1:{}/corral/busybox:nope",
            reg.port
        )
    );
    env.driver.cleanup_alloc(&alloc).await.unwrap();
    env.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_network_uses_the_node_namespace() {
    if !can_run() {
        return;
    }
    let env = Env::start("hostnet").await;
    let alloc = env.alloc("hostnet1", &[("app.http", 18080)]);
    let opts = PodOptions {
        network_host: true,
        ..PodOptions::default()
    };
    env.driver.prepare_pod(&alloc, &opts).await.unwrap();
    assert!(env.netns_left().is_empty(), "{:?}", env.netns_left());
    let h = env
        .driver
        .start(&task_ctx(&alloc, task("app", "ls /sys/class/net")))
        .await
        .unwrap();
    assert!(env.driver.wait(&h).await.unwrap().success());
    let seen: Vec<String> = log_messages(&log_file(&alloc.alloc_dir, "app"))
        .into_iter()
        .map(|(_, m)| m)
        .collect();
    let host: Vec<String> = std::fs::read_dir("/sys/class/net")
        .unwrap()
        .filter_map(Result::ok)
        .map(|e| e.file_name().to_string_lossy().to_string())
        .filter(|n| n != "lo")
        .collect();
    assert!(
        host.iter().any(|n| seen.contains(n)),
        "host interfaces {host:?}, container saw {seen:?}"
    );
    env.driver.destroy(&h).await.unwrap();
    env.driver.cleanup_alloc(&alloc).await.unwrap();
    env.finish().await;
}

/// What health checks use: `exec` through CRI ExecSync (inside the
/// container, with its environment; exit code and output; the timeout),
/// and `task_ip`, the pod IP from PodSandboxStatus (`None` on the node's
/// network).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exec_sync_and_the_pod_ip() {
    if !can_run() {
        return;
    }
    let env = Env::start("execsync").await;
    let alloc = env.alloc("execsync1", &[]);
    env.driver.prepare_alloc(&alloc).await.unwrap();
    let mut spec = task("app", "trap 'exit 0' TERM; while true; do sleep 1; done");
    spec.env.insert("FOO".into(), "inside".into());
    let h = env.driver.start(&task_ctx(&alloc, spec)).await.unwrap();
    let sh = |s: &str| vec!["/bin/sh".to_string(), "-c".to_string(), s.to_string()];

    let t = Instant::now();
    let out = env
        .driver
        .exec(
            &h,
            &sh("echo \"$FOO\"; cat /proc/1/cmdline | tr '\\0' ' '; echo e >&2; exit 4"),
            Duration::from_secs(5),
        )
        .await
        .unwrap();
    eprintln!("[execsync] ExecSync took {} ms", t.elapsed().as_millis());
    assert_eq!(out.exit_code, 4, "{out:?}");
    let lines: Vec<&str> = out.output.lines().collect();
    assert_eq!(lines[0], "inside", "{out:?}");
    // PID 1 of the container's own pid namespace is the task.
    assert!(lines[1].starts_with("/bin/sh -c trap"), "{out:?}");
    assert_eq!(lines.last(), Some(&"e"));

    let t = Instant::now();
    let e = env
        .driver
        .exec(&h, &sh("sleep 30"), Duration::from_secs(1))
        .await
        .expect_err("times out");
    assert!(t.elapsed() < Duration::from_secs(10), "{:?}", t.elapsed());
    eprintln!("[execsync] timeout: {e}");
    let missing = env
        .driver
        .exec(&h, &["/no/such/check".to_string()], Duration::from_secs(2))
        .await;
    assert!(
        missing.as_ref().map_or(true, |o| o.exit_code != 0),
        "{missing:?}"
    );

    let ip = env.driver.task_ip(&h).await.unwrap().expect("a pod IP");
    let subnet = env.containerd.config().subnet.clone();
    let prefix = subnet.rsplit_once('.').map(|(n, _)| n).unwrap();
    assert!(
        ip.to_string().starts_with(&format!("{prefix}.")),
        "{ip} not in {subnet}"
    );

    env.driver.stop(&h, Duration::from_secs(5)).await.unwrap();
    env.driver.destroy(&h).await.unwrap();
    env.driver.cleanup_alloc(&alloc).await.unwrap();

    // On the node's network there is no pod IP: ports are the node's.
    let alloc = env.alloc("execsync2", &[]);
    let opts = PodOptions {
        network_host: true,
        ..PodOptions::default()
    };
    env.driver.prepare_pod(&alloc, &opts).await.unwrap();
    let h = env
        .driver
        .start(&task_ctx(
            &alloc,
            task("app", "trap 'exit 0' TERM; sleep 30 & wait"),
        ))
        .await
        .unwrap();
    assert_eq!(env.driver.task_ip(&h).await.unwrap(), None);
    env.driver.stop(&h, Duration::from_secs(5)).await.unwrap();
    env.driver.destroy(&h).await.unwrap();
    env.driver.cleanup_alloc(&alloc).await.unwrap();
    env.finish().await;
}
