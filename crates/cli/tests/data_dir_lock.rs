//! One process per data dir (issue 14, case 1): a second `corral server`
//! or `corral agent` on a data dir in use is refused, naming the holder's
//! pid, before it touches the store or the tasks; the first one keeps
//! working.

#![allow(clippy::unwrap_used)]

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

mod common;
use common::free_port;

fn corral() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_corral"));
    c.env_remove("CORRAL_TOKEN").env("CORRAL_LOG", "warn");
    c
}

struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn answers(addr: &str) -> bool {
    corral()
        .args(["node", "ls"])
        .env("CORRAL_ADDR", addr)
        .output()
        .is_ok_and(|o| o.status.success())
}

fn wait_answers(addr: &str) {
    let t = Instant::now();
    while !answers(addr) {
        assert!(
            t.elapsed() < Duration::from_secs(30),
            "{addr} never answered"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn a_second_server_on_a_data_dir_in_use_is_refused_and_the_first_keeps_working() {
    let d = tempfile::tempdir().unwrap();
    let (p1, p2) = (free_port(), free_port());
    let first = Killed(
        corral()
            .args(["server", "--data-dir"])
            .arg(d.path())
            .args(["--addr", &format!("127.0.0.1:{p1}")])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let addr = format!("http://127.0.0.1:{p1}");
    wait_answers(&addr);
    let second = corral()
        .args(["server", "--data-dir"])
        .arg(d.path())
        .args(["--addr", &format!("127.0.0.1:{p2}")])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&second.stderr);
    assert_eq!(second.status.code(), Some(1), "{err}");
    assert!(
        err.contains(&format!(
            "is in use by process {} (corral server)",
            first.0.id()
        )),
        "{err}"
    );
    // It never listened, and the first still takes writes.
    assert!(!answers(&format!("http://127.0.0.1:{p2}")));
    let job = d.path().join("j.yaml");
    std::fs::write(&job, "name: j\ndriver: exec\ncommand: [/bin/true]\n").unwrap();
    let out = corral()
        .args(["run", "--detach"])
        .arg(&job)
        .env("CORRAL_ADDR", &addr)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn a_second_agent_on_a_data_dir_in_use_is_refused() {
    let d = tempfile::tempdir().unwrap();
    let server_port = free_port();
    let _server = Killed(
        corral()
            .args(["server", "--data-dir"])
            .arg(d.path().join("server"))
            .args(["--addr", &format!("127.0.0.1:{server_port}")])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let url = format!("http://127.0.0.1:{server_port}");
    wait_answers(&url);
    let agent = |port: u16| {
        let mut c = corral();
        c.args(["agent", "--server", &url, "--data-dir"])
            .arg(d.path().join("agent"))
            .args(["--http-addr", &format!("127.0.0.1:{port}")])
            .arg("--cri-socket")
            .arg(d.path().join("none.sock"));
        c
    };
    let first = Killed(
        agent(free_port())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let lock = d.path().join("agent").join("lock");
    let t = Instant::now();
    while !std::fs::read_to_string(&lock).is_ok_and(|s| s.contains("corral agent")) {
        assert!(
            t.elapsed() < Duration::from_secs(30),
            "the agent never locked"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let second = agent(free_port()).output().unwrap();
    let err = String::from_utf8_lossy(&second.stderr);
    assert_eq!(second.status.code(), Some(1), "{err}");
    assert!(
        err.contains(&format!(
            "is in use by process {} (corral agent)",
            first.0.id()
        )),
        "{err}"
    );
}
