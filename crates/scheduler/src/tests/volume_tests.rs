//! Volumes in placement: a group goes where its volume lives while that
//! node can take it; volume space is a resource; a drain migration of a
//! group with volumes stops the old allocation once the replacement has
//! copied the data (it cannot run before the old one stopped).

use corral_types::{ClientStatus, VolumePhase, VolumeSync};

use crate::testing::*;

fn nodes(n: usize) -> Vec<corral_types::Node> {
    (0..n)
        .map(|i| node(&format!("n{i}")).disk_mb(10_000).build())
        .collect()
}

#[test]
fn a_group_goes_where_its_volume_lives() {
    for holder in ["n3", "n7", "n0"] {
        for eval in ["e1", "e2", "e3", "e4"] {
            let mut s = MemState::with_nodes(nodes(8));
            s.add_job(job(
                "db",
                1,
                vec![group("db", 1).volume("data", 1000, false).build()],
            ));
            s.volumes.push(volume_on("db.data", holder));
            let plan = s.schedule(eval, "db");
            assert_eq!(plan.place.len(), 1, "{plan:?}");
            assert_eq!(plan.place[0].node_id, holder, "eval {eval}");
            assert_eq!(plan.place[0].resources.disk.0, 1000 * MB);
        }
    }
}

#[test]
fn per_alloc_volumes_follow_their_own_slot() {
    let mut s = MemState::with_nodes(nodes(6));
    s.add_job(job(
        "db",
        1,
        vec![group("db", 3).volume("data", 100, true).build()],
    ));
    s.volumes.push(volume_on("db.data.0", "n4"));
    s.volumes.push(volume_on("db.data.1", "n1"));
    s.volumes.push(volume_on("db.data.2", "n4"));
    let plan = s.schedule("e1", "db");
    let mut got: Vec<(u32, String)> = plan
        .place
        .iter()
        .map(|a| (a.index, a.node_id.clone()))
        .collect();
    got.sort();
    assert_eq!(got, [(0, "n4".into()), (1, "n1".into()), (2, "n4".into())]);
}

#[test]
fn a_volume_moves_when_its_node_cannot_take_the_group() {
    // Ineligible, draining, down, or full (cpu): placed elsewhere.
    type Change = Box<dyn Fn(&mut corral_types::Node)>;
    let cases: Vec<(&str, Change)> = vec![
        ("ineligible", Box::new(|n| n.eligible = false)),
        ("draining", Box::new(|n| n.draining = true)),
        (
            "down",
            Box::new(|n| n.status = corral_types::NodeStatus::Down),
        ),
        ("full", Box::new(|n| n.resources.cpu.0 = 10)),
    ];
    for (what, change) in cases {
        let mut s = MemState::with_nodes(nodes(3));
        change(s.node_mut("n1").unwrap());
        s.add_job(job(
            "db",
            1,
            vec![group("db", 1).volume("data", 100, false).build()],
        ));
        s.volumes.push(volume_on("db.data", "n1"));
        let plan = s.schedule("e1", "db");
        assert_eq!(plan.place.len(), 1, "{what}: {plan:?}");
        assert_ne!(plan.place[0].node_id, "n1", "{what}");
    }
}

#[test]
fn volume_space_is_a_resource() {
    // 10 GB of volume space per node: two 6 GB volumes need two nodes; a
    // node offering none takes no group with a volume.
    let mut s = MemState::with_nodes([
        node("n0").disk_mb(10_000).build(),
        node("n1").disk_mb(10_000).build(),
        node("n2").build(),
    ]);
    s.add_job(job(
        "db",
        1,
        vec![group("db", 3).volume("data", 6_000, true).build()],
    ));
    let plan = s.schedule("e1", "db");
    let mut placed: Vec<&str> = plan.place.iter().map(|a| a.node_id.as_str()).collect();
    placed.sort();
    assert_eq!(placed, ["n0", "n1"], "{plan:?}");
    assert_eq!(plan.failed.len(), 1, "{plan:?}");
    let reasons = format!("{:?}", plan.failed[0]);
    assert!(reasons.contains("volume space exhausted"), "{reasons}");
    // Groups without volumes still fit on a node that offers none.
    let mut s = MemState::with_nodes([node("n2").build()]);
    s.add_job(job("web", 1, vec![group("web", 2).build()]));
    assert_eq!(s.schedule("e1", "web").place.len(), 2);
}

#[test]
fn a_drain_stops_the_old_allocation_once_the_replacement_copied_the_volume() {
    let mut s = MemState::with_nodes([node("n1").disk_mb(10_000).build()]);
    s.add_job(job(
        "db",
        1,
        vec![group("db", 1).volume("data", 100, false).build()],
    ));
    let plan = s.schedule("e1", "db");
    s.apply(&plan, ClientStatus::Running);
    s.volumes.push(volume_on("db.data", "n1"));
    s.nodes.push(node("n2").disk_mb(10_000).build());
    s.node_mut("n1").unwrap().draining = true;

    let plan = s.schedule("e2", "db");
    assert_eq!(plan.place.len(), 1, "{plan:?}");
    assert_eq!(plan.place[0].node_id, "n2");
    assert!(plan.stop.is_empty(), "{plan:?}");
    s.apply(&plan, ClientStatus::Pending);
    let replacement = plan.place[0].id.clone();

    // Copying: the old one keeps running (and writing).
    let set = |s: &mut MemState, phase| {
        s.allocs
            .iter_mut()
            .find(|a| a.id == replacement)
            .unwrap()
            .volume_sync = Some(VolumeSync { phase, bytes: 0 });
    };
    set(&mut s, VolumePhase::Copying);
    assert!(s.schedule("e3", "db").is_noop());
    // Copied: the old one stops so the last changes can follow.
    set(&mut s, VolumePhase::Copied);
    let plan = s.schedule("e4", "db");
    assert_eq!(plan.stop.len(), 1, "{plan:?}");
    assert_eq!(plan.stop[0].reason, "node drained");
    assert!(plan.place.is_empty(), "{plan:?}");
}

#[test]
fn an_update_of_a_group_with_a_volume_stays_on_its_node() {
    let mut s = MemState::with_nodes(nodes(5));
    s.add_job(job(
        "db",
        1,
        vec![group("db", 1).volume("data", 100, false).build()],
    ));
    s.volumes.push(volume_on("db.data", "n2"));
    let plan = s.schedule("e1", "db");
    s.apply(&plan, ClientStatus::Running);
    assert_eq!(plan.place[0].node_id, "n2");
    s.add_job(job(
        "db",
        2,
        vec![
            group("db", 1)
                .volume("data", 100, false)
                .env("V", "2")
                .build(),
        ],
    ));
    let plan = s.schedule("e2", "db");
    assert_eq!(plan.place.len(), 1, "{plan:?}");
    assert_eq!(
        plan.place[0].node_id, "n2",
        "the new version goes where the data is"
    );
    assert_eq!(plan.stop.len(), 1);
}
