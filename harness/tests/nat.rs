//! Real NAT in real network namespaces: two LANs behind p2plab routers, a bootstrap node on the
//! lab's internet, a listener and a dialer. Asserts what the NAT profiles promise for libp2p:
//! behind two `home` NATs DCUtR punches a direct path; behind two `strict` NATs it cannot, and
//! the relay carries every message. Needs a Docker engine (`P2PLAB_SKIP_DOCKER=1` skips).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use p2plab::{
    plan,
    testing::{engine_or_skip, image, ip, strings, Timeline},
    Attach, ContainerSpec, Engine, Lab,
};
use p2plab_node::{Event, EventLine, Path};

const SECS: fn(u64) -> Duration = Duration::from_secs;

struct TwoLans {
    lab: Lab,
    timeline: Timeline,
    nodes: Vec<&'static str>,
}

/// internet: boot (.10), router-a (.2), router-b (.3); lan-a: router-a (.254), alice (.10);
/// lan-b: router-b (.254), bob (.10). Alice listens, Bob dials `count` messages.
async fn two_lans(engine: Engine, name: &str, nat_a: &str, nat_b: &str, transport: &str, count: u32) -> TwoLans {
    let image = image().await;
    let mut lab = Lab::new(engine, name);
    let internet = lab.allocate_network("internet", plan::internet_pool()).await.unwrap();
    let lan_a = lab.allocate_network("lan-a", plan::lan_pool()).await.unwrap();
    let lan_b = lab.allocate_network("lan-b", plan::lan_pool()).await.unwrap();
    let (timeline, tx) = Timeline::new();
    let mut timeline = timeline;

    for (router, lan, lan_name, wan_host, nat) in [
        ("router-a", lan_a, "lan-a", 2, nat_a),
        ("router-b", lan_b, "lan-b", 3, nat_b),
    ] {
        lab.start(ContainerSpec {
            name: router.into(),
            image: image.clone(),
            cmd: strings(&["p2plab-router"]),
            env: vec![
                ("P2PLAB_NAT".into(), nat.into()),
                ("P2PLAB_LAN_SUBNET".into(), lan.to_string()),
                ("P2PLAB_WAN_IP".into(), ip(&internet, wan_host).to_string()),
            ],
            attach: vec![
                Attach { network: "internet".into(), ip: ip(&internet, wan_host) },
                Attach { network: lan_name.into(), ip: ip(&lan, 254) },
            ],
            net_admin: true,
            sysctls: vec![("net.ipv4.ip_forward".into(), "1".into())],
            tun: false,
        })
        .await
        .unwrap();
        lab.follow(router, tx.clone()).unwrap();
    }
    for router in ["router-a", "router-b"] {
        if let Err(e) = timeline.wait_line(router, "router_ready", SECS(30)).await {
            let err = lab.stderr_tail(router, 20).await;
            lab.teardown().await.ok();
            panic!("{e}\n{router} stderr:\n{err}");
        }
    }

    let boot_ip = ip(&internet, 10);
    lab.start(ContainerSpec {
        name: "boot".into(),
        image: image.clone(),
        cmd: strings(&[
            "monitor", "--name", "boot", "--listen-addr", "0.0.0.0", "--port", "51820",
            "--external-addr", &format!("/ip4/{boot_ip}/tcp/51820"),
            "--external-addr", &format!("/ip4/{boot_ip}/udp/51820/quic-v1"),
            "--metrics-addr", "off",
        ]),
        env: vec![("P2PLAB_NO_DEFAULT_ROUTE".into(), "1".into())],
        attach: vec![Attach { network: "internet".into(), ip: boot_ip }],
        net_admin: true,
        ..Default::default()
    })
    .await
    .unwrap();
    lab.follow("boot", tx.clone()).unwrap();
    let boot_id = match timeline
        .wait_event("boot", "started", SECS(30), |e| matches!(e, Event::Started { .. }))
        .await
        .unwrap()
    {
        Event::Started { peer_id, .. } => peer_id,
        _ => unreachable!(),
    };
    let boot_addr = match transport {
        "quic" => format!("/ip4/{boot_ip}/udp/51820/quic-v1/p2p/{boot_id}"),
        _ => format!("/ip4/{boot_ip}/tcp/51820/p2p/{boot_id}"),
    };
    let count = count.to_string();
    for (node, role, lan, lan_name, extra) in [
        ("alice", "listener", lan_a, "lan-a", vec![]),
        ("bob", "dialer", lan_b, "lan-b", vec!["--count", count.as_str(), "--interval", "250"]),
    ] {
        let mut cmd = vec![role, "--name", node, "--bootstrap", &boot_addr, "--namespace", "lab", "--port", "4001", "--transport", transport];
        cmd.extend(extra);
        lab.start(ContainerSpec {
            name: node.into(),
            image: image.clone(),
            cmd: strings(&cmd),
            env: vec![("P2PLAB_GATEWAY".into(), ip(&lan, 254).to_string())],
            attach: vec![Attach { network: lan_name.into(), ip: ip(&lan, 10) }],
            net_admin: true,
            ..Default::default()
        })
        .await
        .unwrap();
        lab.follow(node, tx.clone()).unwrap();
    }
    TwoLans {
        lab,
        timeline,
        nodes: vec!["router-a", "router-b", "boot", "alice", "bob"],
    }
}

fn acks(evs: &[EventLine]) -> Vec<(u64, Path)> {
    evs.iter()
        .filter(|l| l.node == "bob")
        .filter_map(|l| match &l.event {
            Event::MessageAcked { id, path, .. } => Some((*id, *path)),
            _ => None,
        })
        .collect()
}

impl TwoLans {
    /// Fails the test with the timeline and every node's stderr tail.
    async fn fail(&mut self, why: String) -> ! {
        let mut report = why;
        for n in &self.nodes {
            report.push_str(&format!("\n--- {n} stderr ---\n{}", self.lab.stderr_tail(n, 15).await));
        }
        for l in &self.timeline.other {
            report.push_str(&format!("\n{}: {}", l.node, l.line));
        }
        self.lab.teardown().await.ok();
        panic!("{report}");
    }

    async fn ok<T>(&mut self, r: Result<T, String>) -> T {
        match r {
            Ok(v) => v,
            Err(e) => self.fail(e).await,
        }
    }

    /// No container has a route out of the lab: `ip route get` to an outside address fails
    /// (and sends no packet).
    async fn assert_isolated(&mut self) {
        for n in self.nodes.clone() {
            let out = self.lab.exec(n, &["ip", "route", "get", "1.1.1.1"]).await.unwrap();
            if out.code == 0 {
                self.fail(format!("{n} has a route out of the lab: {}", out.stdout)).await;
            }
        }
    }
}

async fn direct_then_bootstrap_dies(transport: &str) {
    let test = format!("home_nat_{transport}");
    let Some(engine) = engine_or_skip(&test).await else { return };
    let count = 40;
    let mut t = two_lans(engine, &test, "home", "home", transport, count).await;
    let r = t
        .timeline
        .wait_event("alice", "announced", SECS(60), |e| matches!(e, Event::Announced { .. }))
        .await;
    let announced = t.ok(r).await;
    // Behind a home NAT the listener is private: it announces only relayed addresses.
    if let Event::Announced { addrs, .. } = &announced {
        if !addrs.iter().all(|a| Path::of([a]) == Path::Relayed) {
            t.fail(format!("alice announced a direct address from behind NAT: {addrs:?}")).await;
        }
    }
    let r = t
        .timeline
        .wait_for("a direct ack", SECS(60), |evs| acks(evs).iter().any(|(_, p)| *p == Path::Direct).then_some(()))
        .await;
    t.ok(r).await;
    let punched = t
        .timeline
        .events
        .iter()
        .any(|l| matches!(l.event, Event::HolePunch { ok: true, .. }));
    if !punched {
        t.fail("a direct path without a successful hole punch".into()).await;
    }
    // The seed's central claim: the bootstrap node dies, the peers keep talking.
    t.lab.signal("boot", "SIGKILL").await.unwrap();
    let r = t
        .timeline
        .wait_for("every ack", SECS(90), |evs| (acks(evs).len() >= count as usize).then_some(()))
        .await;
    t.ok(r).await;
    let failed: Vec<_> = t.timeline.of("bob").into_iter().filter(|e| matches!(e, Event::MessageFailed { .. })).collect();
    if !failed.is_empty() {
        t.fail(format!("lost messages: {failed:?}")).await;
    }
    t.nodes.retain(|n| *n != "boot");
    t.assert_isolated().await;
    t.lab.teardown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn home_nats_punch_a_direct_path_over_tcp_and_survive_the_bootstrap() {
    direct_then_bootstrap_dies("tcp").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn home_nats_punch_a_direct_path_over_quic_and_survive_the_bootstrap() {
    direct_then_bootstrap_dies("quic").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn strict_nats_defeat_hole_punching_and_the_relay_carries_everything() {
    let Some(engine) = engine_or_skip("strict_nat").await else { return };
    let count = 20;
    let mut t = two_lans(engine, "strict-nat", "strict", "strict", "both", count).await;
    let r = t
        .timeline
        .wait_for("every ack", SECS(120), |evs| (acks(evs).len() >= count as usize).then_some(()))
        .await;
    t.ok(r).await;
    let all = acks(&t.timeline.events);
    if all.iter().any(|(_, p)| *p != Path::Relayed) {
        t.fail(format!("a message took a direct path through two strict NATs: {all:?}")).await;
    }
    if t.timeline.events.iter().any(|l| matches!(l.event, Event::HolePunch { ok: true, .. })) {
        t.fail("a hole punch succeeded through two strict NATs".into()).await;
    }
    // The failure is asserted, not assumed: DCUtR tried and reported it.
    let r = t
        .timeline
        .wait_for("a failed hole punch", SECS(60), |evs| {
            evs.iter().any(|l| matches!(l.event, Event::HolePunch { ok: false, .. })).then_some(())
        })
        .await;
    t.ok(r).await;
    t.assert_isolated().await;
    t.lab.teardown().await.unwrap();
}
