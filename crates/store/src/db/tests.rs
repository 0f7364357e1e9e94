use std::collections::BTreeMap;

use corral_scheduler::StateView;
use corral_types::*;

use super::*;
use crate::SqliteStore;

fn job(name: &str, version: u64, count: u32) -> Job {
    Job {
        name: name.into(),
        version,
        spec: JobSpec {
            name: name.into(),
            groups: vec![GroupSpec {
                reschedule: Default::default(),
                volumes: Default::default(),
                name: name.into(),
                count,
                restart: RestartPolicy::default(),
                constraints: vec![],
                spread: None,
                update: UpdatePolicy::default(),
                network: NetworkMode::Bridge,
                services: vec![],
                tasks: vec![],
            }],
            update: UpdatePolicy::default(),
        },
        stopped: false,
        stable: false,
        reverts_to: None,
        submitted_at: 1000,
        claims: Vec::new(),
        create_index: 0,
        modify_index: 0,
    }
}

fn alloc(id: &str, job: &str, node: &str) -> Allocation {
    Allocation {
        volume_sync: Default::default(),
        reschedules: Default::default(),
        id: id.into(),
        job: job.into(),
        job_version: 1,
        group: job.into(),
        index: 0,
        node_id: node.into(),
        resources: Resources::default(),
        ports: BTreeMap::new(),
        previous: None,
        deployment_id: None,
        canary: false,
        desired: DesiredStatus::Run,
        desired_reason: String::new(),
        client: ClientStatus::Pending,
        tasks: BTreeMap::new(),
        client_message: String::new(),
        checks: BTreeMap::new(),
        health: None,
        created_at: 1,
        modified_at: 1,
        create_index: 0,
        modify_index: 0,
    }
}

#[test]
fn writes_survive_reopen_with_indexes() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.db");
    {
        let s = StateStore::open(Box::new(SqliteStore::open(&path).unwrap())).unwrap();
        let i1 = s.commit(vec![Write::Job(job("web", 1, 3))]).unwrap();
        let i2 = s
            .commit(vec![
                Write::Job(job("web", 2, 5)),
                Write::Alloc(alloc("a1", "web", "n1")),
            ])
            .unwrap();
        assert_eq!((i1, i2), (1, 2));
    }
    let s = StateStore::open(Box::new(SqliteStore::open(&path).unwrap())).unwrap();
    let snap = s.snapshot();
    assert_eq!(snap.index(), 2);
    let web = snap.job("web").unwrap();
    assert_eq!(web.version, 2, "latest version is the current one");
    assert_eq!(web.create_index, 2);
    assert_eq!(snap.job_versions("web").len(), 2, "every version is kept");
    assert_eq!(snap.job_version("web", 1).unwrap().spec.groups[0].count, 3);
    let a = snap.alloc("a1").unwrap();
    assert_eq!((a.create_index, a.modify_index), (2, 2));
    assert_eq!(StateView::allocs_by_node(&*snap, "n1").len(), 1);
}

#[test]
fn snapshots_do_not_change_under_readers() {
    let s = StateStore::open(Box::new(crate::MemoryStore::new())).unwrap();
    s.commit(vec![Write::Alloc(alloc("a1", "web", "n1"))])
        .unwrap();
    let before = s.snapshot();
    let mut moved = alloc("a1", "web", "n2");
    moved.client = ClientStatus::Running;
    s.commit(vec![Write::Alloc(moved)]).unwrap();
    assert_eq!(before.alloc("a1").unwrap().node_id, "n1");
    let after = s.snapshot();
    assert_eq!(after.alloc("a1").unwrap().node_id, "n2");
    assert!(StateView::allocs_by_node(&*after, "n1").is_empty());
    assert_eq!(after.alloc("a1").unwrap().create_index, 1);
    assert_eq!(after.alloc("a1").unwrap().modify_index, 2);
}

#[test]
fn a_refused_build_writes_nothing() {
    let s = StateStore::open(Box::new(crate::MemoryStore::new())).unwrap();
    let r = s.write(|_, _| Err::<(Vec<Write>, ()), _>("no")).unwrap();
    assert_eq!(r, Err("no"));
    assert_eq!(s.snapshot().index(), 0);
    assert_eq!(s.backend().revision().unwrap(), 0);
}

#[test]
fn purge_removes_every_version() {
    let s = StateStore::open(Box::new(crate::MemoryStore::new())).unwrap();
    s.commit(vec![
        Write::Job(job("web", 1, 1)),
        Write::Job(job("web", 2, 1)),
    ])
    .unwrap();
    s.commit(vec![Write::PurgeJob("web".into())]).unwrap();
    let snap = s.snapshot();
    assert!(snap.job("web").is_none());
    assert!(snap.job_versions("web").is_empty());
    assert!(s.backend().range("jobs/").unwrap().is_empty());
}

fn deployment(id: &str, job: &str) -> Deployment {
    Deployment {
        id: id.into(),
        job: job.into(),
        job_version: 1,
        status: DeploymentStatus::Successful,
        description: String::new(),
        groups: BTreeMap::new(),
        reverts_to: None,
        created_at: 1,
        modified_at: 1,
        create_index: 0,
        modify_index: 0,
    }
}

#[test]
fn purge_removes_the_jobs_deployments() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.db");
    let s = StateStore::open(Box::new(SqliteStore::open(&path).unwrap())).unwrap();
    let mut web = deployment("d-web", "web");
    web.job_version = 2;
    s.commit(vec![
        Write::Job(job("web", 1, 1)),
        Write::Job(job("web", 2, 1)),
        Write::Deployment(deployment("d-web-1", "web")),
        Write::Deployment(web),
        Write::Deployment(deployment("d-db", "db")),
    ])
    .unwrap();
    s.commit(vec![Write::PurgeJob("web".into())]).unwrap();
    let check = |snap: &State| {
        assert!(snap.latest_deployment("web").is_none());
        assert!(snap.deployment("d-web").is_none());
        assert!(snap.deployment("d-db").is_some());
    };
    check(&s.snapshot());
    drop(s);
    let again = StateStore::open(Box::new(SqliteStore::open(&path).unwrap())).unwrap();
    check(&again.snapshot());
    assert_eq!(again.backend().range("deployments/").unwrap().len(), 1);
}

#[test]
fn concurrent_writers_share_commits_and_see_each_other() {
    let dir = tempfile::tempdir().unwrap();
    let s = std::sync::Arc::new(
        StateStore::open(Box::new(
            SqliteStore::open(&dir.path().join("s.db")).unwrap(),
        ))
        .unwrap(),
    );
    let threads: Vec<_> = (0..8)
        .map(|t| {
            let s = s.clone();
            std::thread::spawn(move || {
                let mut seen = Vec::new();
                for i in 0..50 {
                    let id = format!("a-{t}-{i}");
                    let idx = s
                        .commit(vec![Write::Alloc(alloc(&id, "web", "n1"))])
                        .unwrap();
                    // Acknowledged means visible at that index or later.
                    let snap = s.snapshot();
                    assert!(snap.index() >= idx);
                    assert_eq!(snap.alloc(&id).unwrap().create_index, idx);
                    seen.push(idx);
                }
                seen
            })
        })
        .collect();
    for t in threads {
        let seen = t.join().unwrap();
        assert!(
            seen.windows(2).all(|w| w[0] < w[1]),
            "one writer's indexes only grow"
        );
    }
    let snap = s.snapshot();
    assert_eq!(snap.allocs().count(), 400);
    // Reopening finds every acknowledged write.
    drop(snap);
    let s = match std::sync::Arc::try_unwrap(s) {
        Ok(s) => s,
        Err(_) => panic!("still shared"),
    };
    drop(s);
    let s = StateStore::open(Box::new(
        SqliteStore::open(&dir.path().join("s.db")).unwrap(),
    ))
    .unwrap();
    assert_eq!(s.snapshot().allocs().count(), 400);
}

#[test]
fn a_failing_request_does_not_hide_others_in_its_batch() {
    let s = StateStore::open(Box::new(crate::MemoryStore::new())).unwrap();
    let ok = s
        .write(|_, _| Ok::<_, ()>((vec![Write::Alloc(alloc("a", "web", "n1"))], 7)))
        .unwrap();
    assert_eq!(ok, Ok((1, 7)));
    let err = s.write(|state, _| {
        // The builder sees the latest committed state.
        assert!(state.alloc("a").is_some());
        Err::<(Vec<Write>, ()), _>("refused")
    });
    assert_eq!(err.unwrap(), Err("refused"));
    assert_eq!(s.snapshot().index(), 1);
}

#[test]
fn deployments_survive_reopen_and_the_latest_per_job_is_found() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.db");
    let d = |id: &str, version: u64, status: DeploymentStatus| Deployment {
        job_version: version,
        status,
        ..deployment(id, "web")
    };
    {
        let s = StateStore::open(Box::new(SqliteStore::open(&path).unwrap())).unwrap();
        s.commit(vec![Write::Deployment(d(
            "d1",
            1,
            DeploymentStatus::Successful,
        ))])
        .unwrap();
        s.commit(vec![Write::Deployment(d(
            "d2",
            2,
            DeploymentStatus::Running,
        ))])
        .unwrap();
        // An update keeps its place in creation order.
        s.commit(vec![Write::Deployment(d(
            "d1",
            1,
            DeploymentStatus::Successful,
        ))])
        .unwrap();
    }
    let s = StateStore::open(Box::new(SqliteStore::open(&path).unwrap())).unwrap();
    let snap = s.snapshot();
    assert_eq!(snap.latest_deployment("web").unwrap().id, "d2");
    assert_eq!(
        StateView::latest_deployment(snap.as_ref(), "web")
            .unwrap()
            .job_version,
        2
    );
    let ids: Vec<&str> = snap
        .job_deployments("web")
        .iter()
        .map(|d| d.id.as_str())
        .collect();
    assert_eq!(ids, vec!["d1", "d2"]);
    s.commit(vec![Write::DeleteDeployment("d2".into())])
        .unwrap();
    assert_eq!(s.snapshot().latest_deployment("web").unwrap().id, "d1");
}

/// Records of a store written before keys were ordered by creation move to
/// their new keys when it opens; deletes then find them, and nothing is
/// left under the old key.
#[test]
fn old_format_keys_move_to_ordered_keys_on_open() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.db");
    {
        let raw = SqliteStore::open(&path).unwrap();
        let mut a = alloc("a1", "web", "n1");
        (a.create_index, a.modify_index) = (7, 7);
        let e = Evaluation {
            wait_until: None,
            id: "e1".into(),
            job: "web".into(),
            trigger: EvalTrigger::JobRegister,
            status: EvalStatus::Complete,
            status_description: String::new(),
            failed_placements: vec![],
            snapshot_index: 0,
            created_at: 1,
            modified_at: 1,
            create_index: 7,
            modify_index: 7,
        };
        let ops = vec![
            Op::Put {
                key: "allocs/a1".into(),
                value: encode("allocs/a1", &a).unwrap(),
            },
            Op::Put {
                key: "evals/e1".into(),
                value: encode("evals/e1", &e).unwrap(),
            },
        ];
        raw.txn(&Txn {
            compares: vec![],
            ops,
        })
        .unwrap();
    }
    let s = StateStore::open(Box::new(SqliteStore::open(&path).unwrap())).unwrap();
    assert_eq!(s.snapshot().alloc("a1").unwrap().node_id, "n1");
    let keys: Vec<String> = ["allocs/", "evals/"]
        .iter()
        .flat_map(|p| s.backend().range(p).unwrap())
        .map(|kv| kv.key)
        .collect();
    assert_eq!(
        keys,
        vec![
            "allocs/00000000000000000007/a1".to_string(),
            "evals/00000000000000000007/e1".to_string()
        ]
    );
    s.commit(vec![Write::DeleteAlloc("a1".into())]).unwrap();
    assert!(s.backend().range("allocs/").unwrap().is_empty());
    drop(s);
    let again = StateStore::open(Box::new(SqliteStore::open(&path).unwrap())).unwrap();
    assert!(again.snapshot().alloc("a1").is_none());
    assert_eq!(again.snapshot().evals().count(), 1);
}

/// The next batch is built while the previous one is written; when that
/// write fails, the batch built on it fails too (it saw writes that never
/// happened), and the one after starts again from the durable state.
#[test]
fn a_failed_commit_fails_the_batch_built_on_it() {
    use std::sync::mpsc::channel;
    let (entered_tx, entered_rx) = channel();
    let (release_tx, release_rx) = channel();
    let s = Arc::new(
        StateStore::open(Box::new(crate::flaky::Flaky {
            gate: Mutex::new(Some((entered_tx, release_rx))),
            ..Default::default()
        }))
        .unwrap(),
    );
    let first = {
        let s = s.clone();
        std::thread::spawn(move || s.commit(vec![Write::Alloc(alloc("a1", "web", "n1"))]))
    };
    entered_rx.recv().unwrap();
    // The first batch is at the disk: the second is built on it.
    let (built_tx, built_rx) = channel();
    let second = {
        let s = s.clone();
        std::thread::spawn(move || {
            s.write(move |state, index| {
                built_tx.send((state.alloc("a1").is_some(), index)).unwrap();
                Ok::<_, ()>((vec![Write::Alloc(alloc("a2", "web", "n1"))], ()))
            })
        })
    };
    let (saw_first, index) = built_rx.recv().unwrap();
    assert!(saw_first, "built on the pending state");
    assert_eq!(index, 2);
    release_tx.send(()).unwrap();
    // The first failed at the disk, the second was refused before it:
    // nothing of either landed, both may be tried again.
    let first = first.join().unwrap().unwrap_err();
    assert!(matches!(first, StoreError::Failed { .. }), "{first}");
    assert!(first.retryable());
    match second.join().unwrap() {
        Err(e) => {
            assert!(matches!(e, StoreError::Refused { .. }), "{e}");
            assert!(e.retryable());
        }
        other => panic!("{other:?}"),
    }
    // Nothing of either is visible, and the next write starts over.
    assert!(s.snapshot().alloc("a1").is_none());
    let i = s
        .commit(vec![Write::Alloc(alloc("a3", "web", "n1"))])
        .unwrap();
    assert_eq!(i, 1);
    let snap = s.snapshot();
    assert!(snap.alloc("a1").is_none() && snap.alloc("a2").is_none());
    assert_eq!(snap.alloc("a3").unwrap().create_index, 1);
}

/// The usage kept per node as allocations change equals the sum over the
/// node's live allocations, through placements, moves, ports, status
/// changes, stops and deletes (and across a reopen).
#[test]
fn node_usage_is_kept_as_allocations_change() {
    use corral_scheduler::usage::NodeUsage;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.db");
    let s = StateStore::open(Box::new(SqliteStore::open(&path).unwrap())).unwrap();
    let mut seed = 7u64;
    let mut next = move |n: u64| {
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (seed >> 33) % n
    };
    for _ in 0..600 {
        let id = format!("a{}", next(40));
        let node = format!("n{}", next(4));
        let w = match next(6) {
            0 => Write::DeleteAlloc(id),
            k => {
                let mut a = alloc(&id, if k % 2 == 0 { "web" } else { "db" }, &node);
                // Few sizes, so that many writes change only the status
                // (the store then leaves the node's usage as it is).
                a.resources.cpu.0 = 10 + 10 * next(2);
                a.resources.memory.0 = 1 << (20 + next(2));
                if next(3) == 0 {
                    a.ports.insert("http".into(), 20000 + next(3) as u16);
                }
                a.client = [
                    ClientStatus::Pending,
                    ClientStatus::Running,
                    ClientStatus::Complete,
                    ClientStatus::Failed,
                ][next(4) as usize];
                if next(5) == 0 {
                    a.desired = DesiredStatus::Stop;
                }
                Write::Alloc(a)
            }
        };
        s.commit(vec![w]).unwrap();
    }
    let check = |snap: &State| {
        for n in ["n0", "n1", "n2", "n3"] {
            let summed = NodeUsage::from_allocs(StateView::allocs_by_node(snap, n), "", |_| false);
            assert_eq!(StateView::node_usage(snap, n), summed, "node {n}");
        }
    };
    check(&s.snapshot());
    assert!(StateView::node_usage(&*s.snapshot(), "n1").cpu > 0);
    drop(s);
    let again = StateStore::open(Box::new(SqliteStore::open(&path).unwrap())).unwrap();
    check(&again.snapshot());
}

/// A panicking completion callback or event hook costs its own write, not
/// the store's threads: later writes still commit.
#[test]
fn panics_in_a_callback_or_the_event_hook_do_not_stop_the_store() {
    use std::sync::atomic::{AtomicBool, Ordering};
    let s = StateStore::open(Box::new(crate::MemoryStore::new())).unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    s.submit(
        |_, _| Ok::<_, ()>((vec![Write::Alloc(alloc("a1", "web", "n1"))], ())),
        move |r| {
            tx.send(r.is_ok()).unwrap();
            panic!("a caller's callback panics");
        },
    );
    assert!(rx.recv().unwrap());
    assert!(
        s.commit(vec![Write::Alloc(alloc("a2", "web", "n1"))])
            .is_ok()
    );

    let once = Arc::new(AtomicBool::new(true));
    s.set_event_hook(Arc::new(move |_: &crate::changes::Diff<'_>| {
        if once.swap(false, Ordering::SeqCst) {
            panic!("the hook panics once");
        }
        Vec::new()
    }));
    assert!(
        s.commit(vec![Write::Alloc(alloc("a3", "web", "n1"))])
            .is_err()
    );
    assert!(s.snapshot().alloc("a3").is_none());
    assert!(
        s.commit(vec![Write::Alloc(alloc("a4", "web", "n1"))])
            .is_ok()
    );
    assert!(s.snapshot().alloc("a4").is_some());
}

/// A commit reported as failed that landed anyway, or a backend that
/// panics mid-commit, leaves memory possibly behind the backend: that write
/// fails, and the store refuses every later one (saying what to do) rather
/// than numbering records with revisions the backend may have used; nobody
/// waits forever.
#[test]
fn an_unknown_commit_outcome_stops_writes() {
    use std::sync::atomic::{AtomicBool, Ordering};
    for panics in [false, true] {
        let flag = Arc::new(AtomicBool::new(false));
        let flaky = if panics {
            crate::flaky::Flaky {
                panic_next: flag.clone(),
                ..Default::default()
            }
        } else {
            crate::flaky::Flaky {
                land_then_fail: flag.clone(),
                ..Default::default()
            }
        };
        let s = StateStore::open(Box::new(flaky)).unwrap();
        s.commit(vec![Write::Alloc(alloc("a1", "web", "n1"))])
            .unwrap();
        flag.store(true, Ordering::SeqCst);
        assert!(
            s.commit(vec![Write::Alloc(alloc("a2", "web", "n1"))])
                .is_err()
        );
        let err = s
            .commit(vec![Write::Alloc(alloc("a3", "web", "n1"))])
            .unwrap_err();
        assert!(matches!(err, StoreError::Fatal), "panics {panics}: {err}");
        assert!(!err.retryable());
        assert!(err.to_string().contains("restart the server"), "{err}");
        assert!(s.snapshot().alloc("a3").is_none());
        assert!(s.snapshot().alloc("a1").is_some());
    }
}

fn eval(id: &str, job: &str) -> Evaluation {
    Evaluation {
        wait_until: None,
        id: id.into(),
        job: job.into(),
        trigger: EvalTrigger::JobRegister,
        status: EvalStatus::Pending,
        status_description: String::new(),
        failed_placements: vec![],
        snapshot_index: 0,
        created_at: 1,
        modified_at: 1,
        create_index: 0,
        modify_index: 0,
    }
}

/// A job's evaluations are indexed by job (a job's blocking query reads
/// its own, not every one in the store), through updates, deletes and a
/// reopen.
#[test]
fn evaluations_are_indexed_by_job() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.db");
    let s = StateStore::open(Box::new(SqliteStore::open(&path).unwrap())).unwrap();
    s.commit(vec![
        Write::Eval(eval("e1", "web")),
        Write::Eval(eval("e2", "db")),
        Write::Eval(eval("e3", "web")),
    ])
    .unwrap();
    let ids = |s: &StateStore, job: &str| -> Vec<String> {
        s.snapshot()
            .job_evals(job)
            .iter()
            .map(|e| e.id.clone())
            .collect()
    };
    assert_eq!(ids(&s, "web"), ["e1", "e3"]);
    let mut done = eval("e1", "web");
    done.status = EvalStatus::Complete;
    s.commit(vec![Write::Eval(done), Write::DeleteEval("e2".into())])
        .unwrap();
    assert_eq!(
        s.snapshot().job_evals("web")[0].status,
        EvalStatus::Complete
    );
    assert!(ids(&s, "db").is_empty());
    drop(s);
    let again = StateStore::open(Box::new(SqliteStore::open(&path).unwrap())).unwrap();
    assert_eq!(ids(&again, "web"), ["e1", "e3"]);
}
