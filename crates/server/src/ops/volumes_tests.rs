//! Volume claims are decided inside the store's write: created once,
//! taken over only when the allocation holding it has stopped, moved by
//! compare-and-set on the generation, restored from a backup only for a
//! lost node past its grace; a job that shrinks a volume or names an
//! unknown backup target is refused.

use corral_scheduler::testing::{alloc, group, job, node};
use corral_store::Write;
use corral_types::api::VolumeClaim;
use corral_types::{ClientStatus, Job, NodeStatus, VolumeBackup};

use super::volumes::{check, claim, recovery};
use crate::ServerError;
use crate::test_server::TestServer;

fn db(version: u64, mb: u64) -> Job {
    job(
        "db",
        version,
        vec![group("db", 1).volume("data", mb, false).build()],
    )
}

fn ask(node: &str, alloc: &str, generation: Option<u64>) -> VolumeClaim {
    VolumeClaim {
        node: node.into(),
        alloc: alloc.into(),
        generation,
        provider: "btrfs-image".into(),
        downtime_ms: None,
        restored_from: None,
    }
}

fn conflict(r: Result<corral_types::Volume, ServerError>) -> String {
    match r {
        Err(ServerError::Conflict(m)) => m,
        other => panic!("expected a conflict, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn claims_never_give_a_volume_two_writers() {
    let server = TestServer::start().await;
    let core = server.core.clone();
    let v1 = db(1, 200);
    let a = alloc("a", &v1, "db", 0, "n1");
    let b = alloc("b", &v1, "db", 0, "n2");
    core.commit(vec![
        Write::Node(node("n1").build()),
        Write::Node(node("n2").build()),
        Write::Job(v1.clone()),
        Write::Alloc(a.clone()),
        Write::Alloc(b.clone()),
    ])
    .await
    .unwrap();

    // Created once: a second creation (another node raced) is refused.
    let v = claim(&core, "db.data", ask("n1", "a", None)).await.unwrap();
    assert_eq!((v.generation, v.node_id.as_str()), (1, "n1"));
    assert!(conflict(claim(&core, "db.data", ask("n2", "b", None)).await).contains("generation 1"));
    // A claim for another allocation while `a` may run is refused...
    let m = conflict(claim(&core, "db.data", ask("n2", "b", Some(1))).await);
    assert!(m.contains("still in use by allocation a"), "{m}");
    // ...and passes once it stopped: a move, the generation goes up.
    let mut stopped = a.clone();
    stopped.client = ClientStatus::Complete;
    core.commit(vec![Write::Alloc(stopped)]).await.unwrap();
    let mut c = ask("n2", "b", Some(1));
    c.downtime_ms = Some(40);
    let v = claim(&core, "db.data", c).await.unwrap();
    assert_eq!(v.generation, 2);
    assert_eq!(v.node_id, "n2");
    assert_eq!(v.moved_from.as_deref(), Some("n1"));
    assert_eq!(v.last_move_downtime_ms, Some(40));
    // A stale claim (the generation it saw is gone) is refused.
    assert!(
        conflict(claim(&core, "db.data", ask("n2", "b", Some(1))).await).contains("generation 2")
    );
    // An allocation on another node than it says, or with no such volume.
    assert!(
        claim(&core, "db.data", ask("n1", "b", Some(2)))
            .await
            .is_err()
    );
    assert!(matches!(
        claim(&core, "other.data", ask("n2", "b", None)).await,
        Err(ServerError::BadRequest(_))
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_is_restored_only_for_a_lost_node_past_its_grace() {
    let server = TestServer::start_with(|c| {
        c.backup_targets = serde_json::from_value(serde_json::json!({
            "nas": {"kind": "dir", "path": "/srv/backups", "password": "pw"}
        }))
        .unwrap();
    })
    .await;
    let core = server.core.clone();
    let v1 = db(1, 200);
    let a = alloc("a", &v1, "db", 0, "n1");
    let b = alloc("b", &v1, "db", 0, "n2");
    core.commit(vec![
        Write::Node(node("n1").build()),
        Write::Node(node("n2").build()),
        Write::Job(v1.clone()),
        Write::Alloc(a.clone()),
        Write::Alloc(b.clone()),
    ])
    .await
    .unwrap();
    claim(&core, "db.data", ask("n1", "a", None)).await.unwrap();
    let r = corral_types::api::VolumeRecover {
        node: "n2".into(),
        alloc: "b".into(),
    };
    let why = |r: Result<_, ServerError>| match r {
        Err(ServerError::Conflict(m)) => m,
        other => panic!("expected a refusal, got {other:?}"),
    };
    // Its node is up: moved, not restored.
    assert!(why(recovery(&core, "db.data", &r)).contains("which is up"));
    // Down, but no backup: wait.
    let mut down = node("n1").status(NodeStatus::Down).build();
    down.down_since = Some(corral_types::now_ms());
    core.commit(vec![Write::Node(down.clone())]).await.unwrap();
    assert!(why(recovery(&core, "db.data", &r)).contains("no backup"));
    // With a backup, within the grace (10m): it says when.
    let mut v = (**core.store.snapshot().volume("db.data").unwrap()).clone();
    let backup = VolumeBackup {
        id: "0123456789abcdef".into(),
        target: "nas".into(),
        taken_at: 1_000,
        took_ms: 5,
        bytes_added: 10,
    };
    v.backups.push(backup.clone());
    core.commit(vec![Write::Volume(v)]).await.unwrap();
    assert!(why(recovery(&core, "db.data", &r)).contains("unless the node is back"));
    // Past the grace: the newest backup and its target's config.
    down.down_since = Some(1);
    core.commit(vec![Write::Node(down)]).await.unwrap();
    let rec = recovery(&core, "db.data", &r).unwrap();
    assert_eq!(rec.backup, backup);
    assert_eq!(rec.generation, 1);
    assert_eq!(rec.target["password"], "pw");
    // The holder allocation is lost: the restore's claim moves it past
    // the lost copy, marked restored.
    let mut lost = a.clone();
    lost.client = ClientStatus::Lost;
    core.commit(vec![Write::Alloc(lost)]).await.unwrap();
    let mut c = ask("n2", "b", Some(1));
    c.restored_from = Some(backup.clone());
    let v = claim(&core, "db.data", c).await.unwrap();
    assert_eq!(v.generation, 2);
    assert_eq!(v.restored_from, Some(backup));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_may_not_shrink_a_volume_or_back_up_to_an_unknown_target() {
    let server = TestServer::start().await;
    let core = server.core.clone();
    let v1 = db(1, 200);
    let a = alloc("a", &v1, "db", 0, "n1");
    core.commit(vec![
        Write::Node(node("n1").build()),
        Write::Job(v1.clone()),
        Write::Alloc(a),
    ])
    .await
    .unwrap();
    claim(&core, "db.data", ask("n1", "a", None)).await.unwrap();
    let state = core.store.snapshot();
    let located = |j: Job| corral_types::spec::LocatedJob {
        spec: j.spec,
        claims: Vec::new(),
    };
    let targets = Default::default();
    match check(&state, &[located(db(2, 100))], &targets) {
        Err(ServerError::BadRequest(m)) => {
            assert!(
                m.contains("groups[0].volumes[0].size") && m.contains("cannot shrink"),
                "{m}"
            )
        }
        other => panic!("{other:?}"),
    }
    check(&state, &[located(db(2, 300))], &targets).unwrap();
    let mut with_backup = db(2, 300);
    with_backup.spec.groups[0].volumes[0].backup = Some(corral_types::BackupPolicy {
        every: corral_types::units::Millis(3_600_000),
        keep: Default::default(),
        to: "nas".into(),
    });
    match check(&state, &[located(with_backup)], &targets) {
        Err(ServerError::BadRequest(m)) => assert!(m.contains("no backup target `nas`"), "{m}"),
        other => panic!("{other:?}"),
    }
}

/// `corral volume restore VOL SNAP --as NEW`: the new record exists while
/// its agent fills it, but no allocation may claim it until its first
/// report; a restore whose agent fails takes its record back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_volume_restored_under_a_new_id_is_claimed_only_once_whole() {
    use super::volume_restore::{restore_as, source};
    let server = TestServer::start().await;
    let core = server.core.clone();
    let mut n1 = node("n1").build();
    // Nothing listens there: the agent call fails at once.
    n1.address = "http://127.0.0.1:1".into();
    let v1 = db(1, 200);
    let a = alloc("a", &v1, "db", 0, "n1");
    let copy = job(
        "copy",
        1,
        vec![group("web", 1).volume("data", 100, false).build()],
    );
    let c = alloc("c", &copy, "web", 0, "n1");
    core.commit(vec![
        Write::Node(n1),
        Write::Job(v1.clone()),
        Write::Alloc(a),
    ])
    .await
    .unwrap();
    let mut src = claim(&core, "db.data", ask("n1", "a", None)).await.unwrap();
    src.snapshots.push(corral_types::VolumeSnapshot {
        name: "auto-1".into(),
        created_at: 1,
        scheduled: true,
        took_ms: 1,
    });
    core.commit(vec![Write::Volume(src.clone())]).await.unwrap();

    // Bad ids and names are refused before anything is stored.
    for bad in ["copy", "copy.Data", "copy.data.x", "a.b.c.d"] {
        let from = source(&core, &src, "auto-1").unwrap();
        match restore_as(&core, &src, from, bad).await {
            Err(ServerError::BadRequest(m)) => assert!(m.contains(bad), "{m}"),
            other => panic!("{bad}: {other:?}"),
        }
    }
    assert!(matches!(
        source(&core, &src, "auto-2"),
        Err(ServerError::BadRequest(_))
    ));
    // An id that exists is refused.
    let from = source(&core, &src, "auto-1").unwrap();
    match restore_as(&core, &src, from, "db.data").await {
        Err(ServerError::Conflict(m)) => assert!(m.contains("exists"), "{m}"),
        other => panic!("{other:?}"),
    }
    // The agent cannot be reached: an error, and no record left behind.
    let from = source(&core, &src, "auto-1").unwrap();
    let e = restore_as(&core, &src, from, "copy.data")
        .await
        .unwrap_err();
    assert!(matches!(e, ServerError::Agent { .. }), "{e:?}");
    assert!(core.store.snapshot().volume("copy.data").is_none());

    // With an allocation waiting for it, a failed restore keeps the record
    // (restoring, with the error), so that allocation does not start on an
    // empty volume; the same command may restore it again.
    core.commit(vec![Write::Job(copy.clone()), Write::Alloc(c.clone())])
        .await
        .unwrap();
    for _ in 0..2 {
        let from = source(&core, &src, "auto-1").unwrap();
        let e = restore_as(&core, &src, from, "copy.data")
            .await
            .unwrap_err();
        assert!(matches!(e, ServerError::Agent { .. }), "{e:?}");
        let v = core.store.snapshot().volume("copy.data").cloned().unwrap();
        assert!(v.restoring(), "{v:?}");
        let o = v.origin.clone().unwrap();
        assert!(
            o.error
                .as_deref()
                .is_some_and(|e| e.contains("cannot reach")),
            "{o:?}"
        );
    }
    assert_eq!(
        super::volume_restore::awaited_by(&core.store.snapshot(), "copy.data").as_deref(),
        Some("copy.web[0]")
    );

    // As the restore stores it while the agent works.
    let mut made = src.clone();
    made.id = "copy.data".into();
    made.job = "copy".into();
    made.group = String::new();
    made.alloc_id = None;
    made.snapshots.clear();
    made.origin = Some(corral_types::VolumeOrigin {
        volume: "db.data".into(),
        snapshot: Some("auto-1".into()),
        backup: None,
        done: false,
        error: None,
    });
    core.commit(vec![Write::Volume(made)]).await.unwrap();
    let m = conflict(claim(&core, "copy.data", ask("n1", "c", Some(1))).await);
    assert!(
        m.contains("still being restored from volume db.data"),
        "{m}"
    );
    // A smaller size in the job that will use it is a shrink.
    let state = core.store.snapshot();
    let located = corral_types::spec::LocatedJob {
        spec: copy.spec.clone(),
        claims: Vec::new(),
    };
    match check(&state, &[located], &Default::default()) {
        Err(ServerError::BadRequest(m)) => assert!(m.contains("cannot shrink"), "{m}"),
        other => panic!("{other:?}"),
    }
    // Its agent's report: whole.
    let r = corral_types::api::VolumeReport {
        node: "n1".into(),
        generation: 1,
        snapshots: Vec::new(),
        used: None,
        size: None,
    };
    let v = super::volumes::report(&core, "copy.data", r).await.unwrap();
    assert!(!v.restoring());
    let v = claim(&core, "copy.data", ask("n1", "c", Some(1)))
        .await
        .unwrap();
    assert_eq!(v.alloc_id.as_deref(), Some("c"));
    assert_eq!(v.group, "web");
    assert_eq!(v.generation, 1);
}
