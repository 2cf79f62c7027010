//! Identities across faults, for real through the runner: a monitor keeps its identity (its key
//! file) across restart, stop/start and kill/start; `new_identity: true` gives it a new one,
//! also when it is written into a stopped (killed) container; a `start: false` node starts only
//! when its fault fires. Needs a Docker engine (`P2PLAB_SKIP_DOCKER=1` skips).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use p2plab::{
    engine::run::{run, Options},
    model as topology,
    testing::{engine_or_skip, image},
};
use p2plab_contract::Event;

const T: &str = r#"
name: identity
timeout: 90s
segments: { internet: {} }
nodes:
  boot: { role: monitor, segment: internet }
  late: { role: listener, segment: internet, start: false }
faults:
  - { at: 1s, restart: boot }
  - { at: 6s, restart: boot, new_identity: true }
  - { at: 11s, stop: boot }
  - { at: 14s, start: boot }
  - { at: 18s, kill: boot }
  - { at: 20s, start: boot, new_identity: true }
  - { at: 24s, start: late }
expect:
  - { event: { node: boot, kind: started, min: 5 } }
  - { started: late }
"#;

#[tokio::test(flavor = "multi_thread")]
async fn a_monitor_keeps_its_key_file_until_a_fault_asks_for_a_new_identity() {
    let _machine = p2plab::testing::whole_machine().await;
    let topo = topology::parse("identity.yaml", T).unwrap_or_else(|e| panic!("{}", e.render()));
    let Some(engine) = engine_or_skip("identity").await else {
        return;
    };
    let result = run(
        engine,
        &topo,
        Options::new(image().await),
        None,
        std::future::pending(),
    )
    .await
    .unwrap();
    let summary = p2plab::report::summary_text(&result);
    assert!(result.ok, "{summary}\n{:#?}", result.stderr);
    for f in &result.faults {
        assert!(f.ok, "fault {} failed: {}", f.action, f.error);
    }
    let ids: Vec<String> = result
        .timeline
        .events
        .iter()
        .filter(|l| l.node == "boot")
        .filter_map(|l| match &l.event {
            Event::Started { peer_id, .. } => Some(peer_id.to_string()),
            _ => None,
        })
        .collect();
    eprintln!("boot's peer ids, start after start: {ids:?}");
    assert_eq!(
        ids.len(),
        5,
        "boot started {} times: {ids:?}\n{summary}",
        ids.len()
    );
    assert_eq!(
        ids[1], ids[0],
        "a plain restart keeps the identity: {ids:?}"
    );
    assert_ne!(ids[2], ids[1], "restart with new_identity: {ids:?}");
    assert_eq!(
        ids[3], ids[2],
        "stop then start keeps the (new) identity: {ids:?}"
    );
    assert_ne!(
        ids[4], ids[3],
        "kill, then start with new_identity: {ids:?}"
    );
    assert_ne!(ids[4], ids[0]);

    // the `start: false` listener said nothing before its fault started it
    let start_late = result
        .faults
        .iter()
        .find(|f| f.action == "start late")
        .expect("the fault that starts late");
    let first = result
        .timeline
        .events
        .iter()
        .find(|l| l.node == "late")
        .expect("late's events");
    assert!(
        first.ts >= start_late.at,
        "late spoke at {} before it was started at {}",
        first.ts,
        start_late.at
    );
    assert!(result.t0 < start_late.at);
}
