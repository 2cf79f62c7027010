//! `p2plab::plan::compose` for real: a topology file (a monitor and a dialer on the internet, a
//! listener behind a `home` NAT) turned into a compose file with subnets chosen around the
//! engine's, brought up with docker-compose, until the dialer has 5 acks; `down -v` must leave
//! no container or network of the project. Needs a Docker engine (`P2PLAB_SKIP_DOCKER=1`
//! skips) and docker-compose (Debian's 1.29) or `docker compose` v2.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use p2plab::{
    engine::docker::new_run_id,
    model as topology,
    plan::{
        compose::{compose, subnets_for_compose},
        layout::layout,
    },
    testing::{engine_or_skip, image, ComposeProject},
};
use tokio::sync::mpsc;

const ACKS: usize = 5;

fn topology_yaml(name: &str) -> String {
    format!(
        "name: {name}\n\
         segments:\n  internet: {{}}\n  home: {{ nat: home }}\n\
         nodes:\n\
         \x20 monitor: {{ role: monitor, segment: internet }}\n\
         \x20 listener: {{ role: listener, segment: home }}\n\
         \x20 dialer: {{ role: dialer, segment: internet, count: {ACKS} }}\n"
    )
}

/// Stacked NATs, a port forward, impairments and a VPN peer: compose accepts the file as it is
/// (`config -q`: the schema, the sysctls, devices and depends_on forms), without running it.
#[tokio::test(flavor = "multi_thread")]
async fn generated_compose_file_of_a_cgnat_and_vpn_topology_is_valid() {
    let _machine = p2plab::testing::whole_machine().await;
    if engine_or_skip("compose_gen config").await.is_none() {
        return;
    }
    let yaml = "name: cg-config\n\
        segments:\n\
        \x20 internet: {}\n\
        \x20 carrier: { nat: home }\n\
        \x20 home: { nat: strict, uplink: carrier, impair: { delay: 20ms, loss: 1% } }\n\
        \x20 office: { nat: port-forward, forward: [{ port: 4001, to: fwd }] }\n\
        nodes:\n\
        \x20 boot: { role: monitor, segment: internet }\n\
        \x20 alice: { role: listener, segment: home, replicas: 2 }\n\
        \x20 fwd: { role: listener, segment: office }\n\
        \x20 bob: { role: dialer, segment: home, vpn: true, count: 3 }\n";
    let topo = topology::parse("t.yaml", yaml).unwrap_or_else(|e| panic!("{}", e.render()));
    let lay = layout(&topo, &subnets_for_compose(&topo, &[]).unwrap()).unwrap();
    let text = compose(&topo, &lay, "p2plab-node:latest");
    let run = new_run_id();
    let dir = std::env::temp_dir().join(format!("p2plab-compose-gen-{run}"));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("docker-compose.yml");
    std::fs::write(&file, &text).unwrap();
    let mut project = ComposeProject::new(
        format!("p2plab-cg-{run}"),
        file,
        dir,
        true,
        "p2plab-node:latest".into(),
    );
    project.down = true; // only `config`: nothing to take down
    let services = project
        .run(&["config", "--services"])
        .unwrap_or_else(|e| panic!("{e}\n{text}"));
    let mut got: Vec<&str> = services.lines().collect();
    got.sort_unstable();
    let mut want: Vec<&str> = lay.containers.iter().map(|c| c.name.as_str()).collect();
    want.sort_unstable();
    assert_eq!(got, want);
}

#[tokio::test(flavor = "multi_thread")]
async fn generated_compose_file_runs_a_nat_lab_and_leaves_nothing() {
    let _machine = p2plab::testing::whole_machine().await;
    let Some(engine) = engine_or_skip("compose_gen").await else {
        return;
    };
    let image = image().await;
    let run = new_run_id();
    let name = format!("cg-{run}");
    let topo = topology::parse("compose-gen.yaml", &topology_yaml(&name))
        .unwrap_or_else(|e| panic!("{}", e.render()));
    let used = engine.used_subnets().await.unwrap();
    let subnets = subnets_for_compose(&topo, &used).unwrap();
    let lay = layout(&topo, &subnets).unwrap();
    let text = compose(&topo, &lay, &image);
    // The monitor's metrics port on an ephemeral host port: 9090 may be another lab's right now.
    assert!(text.contains("\"127.0.0.1:9090:9090\""), "{text}");
    let text = text.replace("\"127.0.0.1:9090:9090\"", "\"127.0.0.1::9090\"");

    let dir = std::env::temp_dir().join(format!("p2plab-compose-gen-{run}"));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("docker-compose.yml");
    std::fs::write(&file, &text).unwrap();
    let mut project = ComposeProject::new(format!("p2plab-cg-{run}"), file, dir, true, image);

    project
        .run(&["config", "-q"])
        .unwrap_or_else(|e| panic!("{e}\n{text}"));
    let t0 = Instant::now();
    project
        .run(&["up", "-d"])
        .unwrap_or_else(|e| panic!("{e}\n{text}"));
    let up_s = t0.elapsed();

    let ids = project.containers(&engine).await;
    for c in &lay.containers {
        assert!(
            ids.contains_key(&c.name),
            "service {} has no container; have {:?}\n{}",
            c.name,
            ids.keys(),
            project.logs_tail(20)
        );
    }
    let nets = project.networks(&engine).await;
    assert_eq!(nets.len(), topo.segments.len(), "{nets:?}");
    for labels in nets.values() {
        assert_eq!(
            labels.get("org.p2plab.managed").map(String::as_str),
            Some("true")
        );
        assert_eq!(labels.get("org.p2plab.lab"), Some(&name));
    }
    let port = project.run(&["port", "monitor", "9090"]).unwrap();
    assert!(
        port.trim().starts_with("127.0.0.1:"),
        "the metrics port is published on loopback only: {port}"
    );

    // The dialer's stdout until it has ACKS acks.
    let (tx, mut rx) = mpsc::unbounded_channel();
    engine.follow(&ids["dialer"], "dialer", tx);
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut acked = 0;
    let mut seen: Vec<String> = Vec::new();
    while acked < ACKS {
        match tokio::time::timeout_at(deadline.into(), rx.recv()).await {
            Ok(Some(l)) => {
                if l.line.contains("\"event\":\"message_acked\"") {
                    acked += 1;
                }
                seen.push(l.line);
            }
            Ok(None) => panic!(
                "the dialer's log ended after {acked} acks:\n{}\n{}",
                seen.join("\n"),
                project.logs_tail(20)
            ),
            Err(_) => panic!(
                "{acked} of {ACKS} acks within 120 s:\n{}\n{}",
                seen.join("\n"),
                project.logs_tail(20)
            ),
        }
    }
    let acked_s = t0.elapsed();

    // No container has a route out of the lab.
    for (service, id) in &ids {
        let Ok(out) = engine
            .exec(id, service, &["ip", "route", "get", "1.1.1.1"])
            .await
        else {
            continue; // the dialer may have exited after its last message
        };
        assert_ne!(
            out.code, 0,
            "{service} has a route out of the lab: {}{}",
            out.stdout, out.stderr
        );
    }

    let td = Instant::now();
    project.down().unwrap_or_else(|e| panic!("{e}"));
    let down_s = td.elapsed();
    let left = project.containers(&engine).await;
    assert!(
        left.is_empty(),
        "containers of {} left after down: {left:?}",
        project.name
    );
    let left = project.networks(&engine).await;
    assert!(
        left.is_empty(),
        "networks of {} left after down: {left:?}",
        project.name
    );
    eprintln!(
        "compose_gen: {} up -d {:.1}s; {ACKS} acks at {:.1}s; down {:.1}s; subnets {subnets:?}",
        project.cmd.join(" "),
        up_s.as_secs_f64(),
        acked_s.as_secs_f64(),
        down_s.as_secs_f64()
    );
}
