use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use corral_types::{Alert, AlertRule, AlertStatus, Event, EventType};

use crate::changes::{Change, Diff};
use crate::{MemoryStore, SqliteStore, StateStore, Store, Write};

fn alert(id: &str) -> Alert {
    Alert {
        id: id.into(),
        rule: AlertRule::NodeDown,
        subject: id.into(),
        status: AlertStatus::Firing,
        summary: format!("{id} is down"),
        job: None,
        alloc: None,
        node: Some(id.into()),
        deployment: None,
        task: None,
        job_version: None,
        count: 1,
        fired_at: 1,
        last_seen_at: 1,
        last_event_index: 0,
        resolved_at: None,
        resolution: String::new(),
        create_index: 0,
        modify_index: 0,
    }
}

/// One event per alert added or changed; the time is the alert's.
fn hook() -> crate::EventHook {
    Arc::new(|d: &Diff<'_>| {
        d.alerts()
            .filter_map(|c| match c {
                Change::Added(a) | Change::Updated { new: a, .. } => Some(
                    Event::new(EventType::AlertFiring, a.last_seen_at, a.summary.clone())
                        .alert(&a.id),
                ),
                Change::Removed(_) => None,
            })
            .collect()
    })
}

fn sqlite(dir: &tempfile::TempDir) -> StateStore {
    let s = StateStore::open(Box::new(
        SqliteStore::open(&dir.path().join("state.db")).unwrap(),
    ))
    .unwrap();
    s.set_event_hook(hook());
    s
}

fn indexes(events: &[Arc<Event>]) -> Vec<u64> {
    events.iter().map(|e| e.index).collect()
}

#[test]
fn events_commit_in_the_same_transaction_as_their_change() {
    let dir = tempfile::tempdir().unwrap();
    let s = sqlite(&dir);
    let i = s
        .commit(vec![Write::Alert(alert("a")), Write::Alert(alert("b"))])
        .unwrap();
    let kv_a = s.backend().get("alerts/a").unwrap().unwrap();
    assert_eq!(kv_a.mod_revision, i, "same transaction");
    // One log record for the commit, keyed by its last event.
    assert_eq!(s.backend().log_bounds().unwrap(), Some((2, 2)));
    let events = s.events_after(0, 10).unwrap();
    assert_eq!(indexes(&events), vec![1, 2]);
    assert!(events.iter().all(|e| e.state_index == i));
    assert_eq!(events[0].alert.as_deref(), Some("a"));
    assert_eq!(
        s.snapshot().event_span(),
        crate::EventSpan { first: 1, last: 2 }
    );
}

#[test]
fn a_refused_or_empty_write_makes_no_event() {
    let s = StateStore::open(Box::new(MemoryStore::new())).unwrap();
    s.set_event_hook(hook());
    let r = s.write(|_, _| Err::<(Vec<Write>, ()), _>("no")).unwrap();
    assert_eq!(r, Err("no"));
    s.commit(vec![]).unwrap();
    assert!(s.events_after(0, 10).unwrap().is_empty());
    assert_eq!(s.backend().log_bounds().unwrap(), None);
    // A write that changes nothing the hook looks at: no event either,
    // but the sequence stays where it was.
    s.commit(vec![Write::Alert(alert("a"))]).unwrap();
    s.commit(vec![Write::DeleteAlert("a".into())]).unwrap();
    assert_eq!(indexes(&s.events_after(0, 10).unwrap()), vec![1]);
}

#[test]
fn the_sequence_is_gapless_across_batches_and_restarts() {
    let dir = tempfile::tempdir().unwrap();
    {
        let s = Arc::new(sqlite(&dir));
        // Concurrent writers share commits; the numbering stays gapless.
        let threads: Vec<_> = (0..4)
            .map(|t| {
                let s = s.clone();
                std::thread::spawn(move || {
                    for i in 0..25 {
                        s.commit(vec![Write::Alert(alert(&format!("t{t}-{i}")))])
                            .unwrap();
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let all = s.events_after(0, 1000).unwrap();
        assert_eq!(indexes(&all), (1..=100).collect::<Vec<_>>());
    }
    // Reopened: memory is empty, the backend answers, and the sequence
    // continues.
    let s = sqlite(&dir);
    assert_eq!(s.snapshot().event_span().last, 100);
    assert!(!s.events_in_memory(50));
    assert_eq!(indexes(&s.events_after(97, 10).unwrap()), vec![98, 99, 100]);
    s.commit(vec![Write::Alert(alert("after-restart"))])
        .unwrap();
    assert!(s.events_in_memory(100));
    let tail = s.events_after(99, 10).unwrap();
    assert_eq!(indexes(&tail), vec![100, 101]);
    assert_eq!(tail[1].alert.as_deref(), Some("after-restart"));
    assert_eq!(indexes(&s.recent_events(3).unwrap()), vec![99, 100, 101]);
}

#[test]
fn memory_holds_the_newest_and_the_backend_the_rest() {
    let s = StateStore::open(Box::new(MemoryStore::new())).unwrap();
    s.set_event_hook(hook());
    let total = crate::events::RECENT_EVENTS + 500;
    for chunk in (0..total).collect::<Vec<_>>().chunks(1000) {
        s.commit(
            chunk
                .iter()
                .map(|i| Write::Alert(alert(&format!("a{i:06}"))))
                .collect(),
        )
        .unwrap();
    }
    assert!(!s.events_in_memory(0));
    assert!(s.events_in_memory(600));
    // Reading across the boundary gives every index once, in order.
    let mut after = 0;
    let mut seen = Vec::new();
    loop {
        let page = s.events_after(after, 700).unwrap();
        let Some(last) = page.last() else { break };
        after = last.index;
        seen.extend(indexes(&page));
    }
    assert_eq!(seen, (1..=total as u64).collect::<Vec<_>>());
}

#[test]
fn pruning_keeps_the_newest_and_survives_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    {
        let s = sqlite(&dir);
        for i in 0..10u64 {
            let mut a = alert(&format!("a{i}"));
            a.last_seen_at = 1000 * (i + 1);
            s.commit(vec![Write::Alert(a)]).unwrap();
        }
        // Time 4500 falls between events 4 (4000) and 5 (5000).
        assert_eq!(s.event_index_at(4500).unwrap(), 5);
        assert_eq!(s.event_index_at(0).unwrap(), 1);
        assert_eq!(s.event_index_at(99_999).unwrap(), 11);
        s.commit(vec![Write::PruneEvents { through: 4 }]).unwrap();
        assert_eq!(
            s.snapshot().event_span(),
            crate::EventSpan { first: 5, last: 10 }
        );
        // A reader behind the pruned part starts at the oldest left.
        assert_eq!(s.events_after(0, 100).unwrap()[0].index, 5);
        assert_eq!(s.backend().log_bounds().unwrap(), Some((5, 10)));
        // Everything: the newest stays, so the sequence goes on.
        s.commit(vec![Write::PruneEvents { through: u64::MAX }])
            .unwrap();
        assert_eq!(indexes(&s.events_after(0, 100).unwrap()), vec![10]);
    }
    let s = sqlite(&dir);
    assert_eq!(
        s.snapshot().event_span(),
        crate::EventSpan {
            first: 10,
            last: 10
        }
    );
    s.commit(vec![Write::Alert(alert("z"))]).unwrap();
    assert_eq!(indexes(&s.events_after(0, 100).unwrap()), vec![10, 11]);
}

#[test]
fn alerts_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    {
        let s = sqlite(&dir);
        s.commit(vec![Write::Alert(alert("a"))]).unwrap();
        let mut r = alert("a");
        r.status = AlertStatus::Resolved;
        r.resolved_at = Some(5);
        s.commit(vec![Write::Alert(r)]).unwrap();
    }
    let s = sqlite(&dir);
    let a = s.snapshot().alert("a").cloned().unwrap();
    assert_eq!(a.status, AlertStatus::Resolved);
    assert_eq!((a.create_index, a.modify_index), (1, 2));
}

#[test]
fn every_write_of_a_big_batch_is_seen() {
    // imbl 6.1.0's OrdMap::diff misses the first entry of a leaf after a
    // shared one; the writer's own record of what it wrote does not.
    let s = StateStore::open(Box::new(MemoryStore::new())).unwrap();
    s.set_event_hook(hook());
    let ids: Vec<String> = (0..5000).map(|i| format!("a{i:05}")).collect();
    s.commit(ids.iter().map(|id| Write::Alert(alert(id))).collect())
        .unwrap();
    for chunk in ids.chunks(250) {
        s.commit(
            chunk
                .iter()
                .map(|id| {
                    let mut a = alert(id);
                    a.count = 2;
                    Write::Alert(a)
                })
                .collect(),
        )
        .unwrap();
    }
    // Single updates scattered over the map.
    for id in ids.iter().step_by(97) {
        let mut a = alert(id);
        a.count = 3;
        s.commit(vec![Write::Alert(a)]).unwrap();
    }
    let expected = 5000 + 5000 + ids.iter().step_by(97).count() as u64;
    assert_eq!(s.snapshot().event_span().last, expected);
}

#[test]
fn a_failed_transaction_loses_the_change_and_its_events_together() {
    let inner = Arc::new(MemoryStore::new());
    let fail = Arc::new(AtomicBool::new(false));
    let s = StateStore::open(Box::new(crate::flaky::Flaky {
        inner: inner.clone(),
        fail: fail.clone(),
        ..Default::default()
    }))
    .unwrap();
    s.set_event_hook(hook());
    s.commit(vec![Write::Alert(alert("a"))]).unwrap();
    fail.store(true, Ordering::SeqCst);
    assert!(s.commit(vec![Write::Alert(alert("b"))]).is_err());
    fail.store(false, Ordering::SeqCst);
    // Neither the alert nor its event exists, and the sequence did not
    // move: the next event is number 2.
    assert!(s.snapshot().alert("b").is_none());
    assert_eq!(indexes(&s.events_after(0, 10).unwrap()), vec![1]);
    s.commit(vec![Write::Alert(alert("c"))]).unwrap();
    let all = s.events_after(0, 10).unwrap();
    assert_eq!(indexes(&all), vec![1, 2]);
    assert_eq!(all[1].alert.as_deref(), Some("c"));
    assert_eq!(inner.log_bounds().unwrap(), Some((1, 2)));
}
