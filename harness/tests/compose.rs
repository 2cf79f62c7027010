//! The production picture in `compose/docker-compose.yml`, brought up with docker-compose (v1) or
//! `docker compose` (v2): a monitor, a public Peer C and a VPN exit on the lab's internet; Peer A
//! and Peer B behind home NATs; Peer D at a café behind a third home NAT, its lab traffic in a
//! WireGuard tunnel to the VPN exit. Asserts that A and B punch a direct path, that D's messages
//! are delivered through the VPN, that no container has a route out of the lab, and that `down`
//! leaves nothing. Needs a Docker engine (`P2PLAB_SKIP_DOCKER=1` skips).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{
    collections::HashMap,
    process::Command,
    time::{Duration, Instant},
};

use bollard::query_parameters::{ListContainersOptionsBuilder, ListNetworksOptionsBuilder};
use ipnet::Ipv4Net;
use p2plab::testing::compose_cmd;
use p2plab::{
    docker::new_run_id,
    image::repo_root,
    testing::{engine_or_skip, image, Timeline},
    Engine,
};
use p2plab_contract::{Event, EventLine, Path};

const SECS: fn(u64) -> Duration = Duration::from_secs;

/// The subnets `compose/docker-compose.yml` pins (its header lists them).
const SUBNETS: [&str; 4] = ["198.19.77.0/24", "10.77.1.0/24", "10.77.2.0/24", "10.77.4.0/24"];
const EXIT_IP: &str = "198.19.77.30";
const SERVICES: [&str; 9] = [
    "monitor", "peer-c", "vpn-exit", "router-a", "router-b", "router-d", "peer-a", "peer-b", "peer-d",
];

fn compose_file() -> String {
    repo_root()
        .join("compose")
        .join("docker-compose.yml")
        .display()
        .to_string()
}


/// Runs `down -v --remove-orphans` for the project when dropped (also while a panic unwinds).
struct Project {
    name: String,
    cmd: Vec<String>,
    down: bool,
}

impl Project {
    fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(&self.cmd[0]);
        c.args(&self.cmd[1..])
            .args(["-p", &self.name, "-f", &compose_file()])
            .args(args)
            .current_dir(repo_root());
        c
    }

    fn run(&self, args: &[&str]) -> Result<String, String> {
        let out = self
            .command(args)
            .output()
            .map_err(|e| format!("{}: {e}", self.cmd.join(" ")))?;
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        if out.status.success() {
            Ok(text)
        } else {
            Err(format!(
                "{} -p {} {}: {}\n{text}",
                self.cmd.join(" "),
                self.name,
                args.join(" "),
                out.status
            ))
        }
    }

    fn down(&mut self) -> Result<String, String> {
        self.down = true;
        self.run(&["down", "-v", "--remove-orphans", "-t", "5"])
    }
}

impl Drop for Project {
    fn drop(&mut self) {
        if !self.down && std::env::var("P2PLAB_KEEP").map_or(true, |v| v != "1") {
            if let Err(e) = self.down() {
                eprintln!("compose down failed: {e}");
            }
        }
    }
}

/// Fails with one clear message when a compose subnet overlaps an existing Docker network or a
/// host route.
async fn assert_subnets_free(engine: &Engine) {
    let nets = engine
        .api()
        .list_networks(None::<bollard::query_parameters::ListNetworksOptions>)
        .await
        .unwrap();
    let mut used: Vec<(String, Ipv4Net)> = Vec::new();
    for n in &nets {
        for c in n.ipam.as_ref().and_then(|i| i.config.as_ref()).into_iter().flatten() {
            if let Some(s) = c.subnet.as_ref().and_then(|s| s.parse().ok()) {
                used.push((format!("Docker network {:?}", n.name.clone().unwrap_or_default()), s));
            }
        }
    }
    if let Ok(text) = std::fs::read_to_string("/proc/net/route") {
        for r in p2plab::plan::parse_proc_routes(&text) {
            if r.prefix_len() > 0 {
                used.push((format!("host route {r}"), r));
            }
        }
    }
    for s in SUBNETS {
        let s: Ipv4Net = s.parse().unwrap();
        for (what, u) in &used {
            if s.contains(&u.network()) || u.contains(&s.network()) {
                panic!(
                    "compose/docker-compose.yml needs {s}, but it overlaps {what} ({u}); \
                     remove that network (is another compose project of this lab still up? \
                     `docker-compose -p <project> -f compose/docker-compose.yml down`) and retry"
                );
            }
        }
    }
}

/// The project's containers by service name.
async fn containers(engine: &Engine, project: &str) -> HashMap<String, String> {
    let opts = ListContainersOptionsBuilder::default()
        .all(true)
        .filters(&HashMap::from([(
            "label",
            vec![format!("com.docker.compose.project={project}")],
        )]))
        .build();
    let list = engine.api().list_containers(Some(opts)).await.unwrap();
    list.into_iter()
        .filter_map(|c| {
            let service = c.labels.as_ref()?.get("com.docker.compose.service")?.clone();
            Some((service, c.id?))
        })
        .collect()
}

async fn networks(engine: &Engine, project: &str) -> Vec<String> {
    let opts = ListNetworksOptionsBuilder::default()
        .filters(&HashMap::from([(
            "label",
            vec![format!("com.docker.compose.project={project}")],
        )]))
        .build();
    let list = engine.api().list_networks(Some(opts)).await.unwrap();
    list.into_iter().filter_map(|n| n.name).collect()
}

/// The last lines of every service's logs (stdout and stderr), then each container's state and,
/// for a container that is not running, its own last lines again: CI keeps the tail of a long
/// failure message, so what explains a dead service comes last.
async fn diagnosis(engine: &Engine, p: &Project, ids: &HashMap<String, String>) -> String {
    let mut out = p.run(&["logs", "--no-color", "--tail", "15"]).unwrap_or_else(|e| e);
    out.push_str("\n--- container states ---\n");
    let mut dead = Vec::new();
    for service in SERVICES {
        let Some(id) = ids.get(service) else {
            out.push_str(&format!("{service}: no container\n"));
            continue;
        };
        let state = engine
            .api()
            .inspect_container(id, None::<bollard::query_parameters::InspectContainerOptions>)
            .await
            .map(|c| c.state.unwrap_or_default());
        match state {
            Ok(s) if s.running == Some(true) => out.push_str(&format!("{service}: running\n")),
            Ok(s) => {
                out.push_str(&format!(
                    "{service}: NOT RUNNING: status {:?}, exit code {:?}, oom killed {:?}, error {:?}, \
                     started {:?}, finished {:?}\n",
                    s.status, s.exit_code, s.oom_killed, s.error, s.started_at, s.finished_at
                ));
                dead.push(service);
            }
            Err(e) => out.push_str(&format!("{service}: inspect failed: {e}\n")),
        }
    }
    for service in dead {
        out.push_str(&format!("--- {service}: last 40 lines ---\n"));
        out.push_str(&p.run(&["logs", "--no-color", "--tail", "40", service]).unwrap_or_else(|e| e));
    }
    out
}

fn peer_id(evs: &[EventLine], node: &str) -> Option<String> {
    evs.iter().find_map(|l| match &l.event {
        Event::Started { peer_id, .. } if l.node == node => Some(peer_id.to_string()),
        _ => None,
    })
}

/// Acks `from` got for messages to `to` (any peer when `None`), with their paths.
fn acks(evs: &[EventLine], from: &str, to: Option<&str>) -> Vec<Path> {
    evs.iter()
        .filter(|l| l.node == from)
        .filter_map(|l| match &l.event {
            Event::MessageAcked { to: t, path, .. } if to.is_none_or(|to| t.to_string() == to) => Some(*path),
            _ => None,
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn compose_production_topology_punches_direct_and_carries_the_vpn_peer() {
    let Some(engine) = engine_or_skip("compose").await else {
        return;
    };
    let image = image().await;
    assert_subnets_free(&engine).await;

    let mut project = Project {
        name: format!("p2plab-compose-{}", new_run_id()),
        cmd: compose_cmd(),
        down: false,
    };
    let t0 = Instant::now();
    let up = project
        .command(&["up", "-d"])
        .env("P2PLAB_IMAGE", &image)
        .output()
        .unwrap();
    assert!(
        up.status.success(),
        "{} up -d failed:\n{}{}",
        project.cmd.join(" "),
        String::from_utf8_lossy(&up.stdout),
        String::from_utf8_lossy(&up.stderr)
    );
    let up_s = t0.elapsed();

    let ids = containers(&engine, &project.name).await;
    for s in SERVICES {
        assert!(
            ids.contains_key(s),
            "service {s} has no container; have {:?}\n{}",
            ids.keys(),
            diagnosis(&engine, &project, &ids).await
        );
    }
    let (mut timeline, tx) = Timeline::new();
    for (service, id) in &ids {
        engine.follow(id, service, tx.clone());
    }
    drop(tx);

    macro_rules! ok {
        ($r:expr) => {
            match $r {
                Ok(v) => v,
                Err(e) => panic!(
                    "{e}\n--- other lines ---\n{}\n--- logs ---\n{}\n--- {e}",
                    timeline
                        .other
                        .iter()
                        .map(|l| format!("{}: {}", l.node, l.line))
                        .collect::<Vec<_>>()
                        .join("\n"),
                    diagnosis(&engine, &project, &ids).await
                ),
            }
        };
    }

    for r in ["router-a", "router-b", "router-d"] {
        ok!(timeline.wait_line(r, "router_ready", SECS(30)).await);
    }
    ok!(timeline.wait_line("vpn-exit", "vpn_ready", SECS(30)).await);
    let ids_of = ok!(timeline
        .wait_for("started from the monitor, peer-a, peer-b, peer-c and peer-d", SECS(30), |evs| {
            peer_id(evs, "monitor")?;
            Some((
                peer_id(evs, "peer-a")?,
                peer_id(evs, "peer-b")?,
                peer_id(evs, "peer-d")?,
                peer_id(evs, "peer-c")?,
            ))
        })
        .await);
    let (a, b, d, c) = ids_of;

    // A and B: a direct path, punched by DCUtR.
    ok!(timeline
        .wait_for("direct ack from peer-a to peer-b", SECS(90), |evs| {
            acks(evs, "peer-b", Some(&a)).contains(&Path::Direct).then_some(())
        })
        .await);
    let to_direct = t0.elapsed();
    ok!(timeline
        .wait_for("successful hole punch between peer-a and peer-b", SECS(30), |evs| {
            evs.iter()
                .any(|l| match &l.event {
                    Event::HolePunch { peer, ok: true, .. } => {
                        (l.node == "peer-a" && peer.to_string() == b) || (l.node == "peer-b" && peer.to_string() == a)
                    }
                    _ => false,
                })
                .then_some(())
        })
        .await);

    // D: messages to A and to C acked, and D reaches the lab only through the VPN exit.
    let want = 5;
    ok!(timeline
        .wait_for("peer-d's acks from peer-a and peer-c", SECS(90), |evs| {
            (acks(evs, "peer-d", Some(&a)).len() >= want && acks(evs, "peer-d", Some(&c)).len() >= want).then_some(())
        })
        .await);
    let to_d = t0.elapsed();
    ok!(timeline
        .wait_for(
            "the monitor's connection from peer-d via the VPN exit",
            SECS(10),
            |evs| {
                evs.iter()
                    .any(|l| match &l.event {
                        Event::Connected { peer, remote_addr, .. } => {
                            l.node == "monitor"
                                && peer.to_string() == d
                                && remote_addr.to_string().contains(&format!("/ip4/{EXIT_IP}/"))
                        }
                        _ => false,
                    })
                    .then_some(())
            }
        )
        .await);
    let failed: Vec<_> = timeline
        .events
        .iter()
        .filter(|l| matches!(l.event, Event::MessageFailed { .. }))
        .map(|l| l.to_json())
        .collect();
    assert!(failed.is_empty(), "lost messages: {failed:?}");

    // No container has a route out of the lab.
    for (service, id) in &ids {
        let out = engine.exec(id, service, &["ip", "route", "get", "1.1.1.1"]).await.unwrap();
        let (code, out) = (out.code, format!("{}{}", out.stdout, out.stderr));
        assert_ne!(code, 0, "{service} has a route out of the lab: {out}");
    }
    let d_acked = acks(&timeline.events, "peer-d", None).len();
    let d_direct = acks(&timeline.events, "peer-d", None)
        .iter()
        .filter(|p| **p == Path::Direct)
        .count();
    let b_acked = acks(&timeline.events, "peer-b", None).len();

    let t_down = Instant::now();
    let down = project.down();
    let down_s = t_down.elapsed();
    down.unwrap_or_else(|e| panic!("{e}"));
    let left = containers(&engine, &project.name).await;
    assert!(
        left.is_empty(),
        "containers of {} left after down: {left:?}",
        project.name
    );
    let left = networks(&engine, &project.name).await;
    assert!(
        left.is_empty(),
        "networks of {} left after down: {left:?}",
        project.name
    );

    eprintln!(
        "compose: {} up -d {:.1}s; first direct A<-B ack at {:.1}s; D had {want}+ acks from A and C at {:.1}s; \
         D acked {d_acked} ({d_direct} direct), B acked {b_acked}; down {:.1}s; total {:.1}s",
        project.cmd.join(" "),
        up_s.as_secs_f64(),
        to_direct.as_secs_f64(),
        to_d.as_secs_f64(),
        down_s.as_secs_f64(),
        t0.elapsed().as_secs_f64()
    );
}
