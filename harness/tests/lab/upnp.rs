//! The `upnp` router profile and the node's `--upnp`: a listener behind a UPnP IGD (miniupnpd)
//! maps its own ports, AutoNAT confirms it public, it announces the router's WAN address, and a
//! dialer behind a `home` NAT reaches it with a plain direct dial: no relay, no hole punch. A
//! `upnp` router whose listener runs without `--upnp` is a `home` NAT: relayed announcement,
//! DCUtR. A listener with `--upnp` behind a `home` router finds no gateway and falls back to the
//! relay.
//! Needs a Docker engine (`P2PLAB_SKIP_DOCKER=1` skips).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{net::Ipv4Addr, time::Duration};

use p2plab::{
    plan,
    testing::{engine_or_skip, image, ip, strings, Watch},
    Attach, ContainerSpec, Lab,
};
use p2plab_contract::{
    events::{Direction, Reachability, ReachabilitySource, UpnpStatus},
    multiaddr::Protocol,
    Event, EventLine, Multiaddr, Path, PeerId,
};

const SECS: fn(u64) -> Duration = Duration::from_secs;
const COUNT: usize = 20;

struct UpnpLab {
    lab: Lab,
    timeline: Watch,
    nodes: Vec<&'static str>,
}

impl UpnpLab {
    /// Fails the test with the timeline, every node's stderr tail and the UPnP router's
    /// miniupnpd log.
    async fn fail(&mut self, why: String) -> ! {
        let mut report = why;
        for n in &self.nodes {
            report.push_str(&format!(
                "\n--- {n} stderr ---\n{}",
                self.lab.stderr_tail(n, 15).await
            ));
        }
        if let Ok(out) = self
            .lab
            .exec(
                "router-u",
                &["tail", "-n", "30", "/run/p2plab-miniupnpd.log"],
            )
            .await
        {
            report.push_str(&format!("\n--- router-u miniupnpd log ---\n{}", out.stdout));
        }
        for l in &self.timeline.other {
            report.push_str(&format!("\n{}: {}", l.node, l.line));
        }
        report.push_str(&format!(
            "\n--- timeline tail ---\n{}",
            self.timeline.tail(60)
        ));
        self.lab.teardown().await.ok();
        panic!("{report}");
    }

    async fn ok<T>(&mut self, r: Result<T, String>) -> T {
        match r {
            Ok(v) => v,
            Err(e) => self.fail(e).await,
        }
    }

    fn peer_of(&self, node: &str) -> Option<PeerId> {
        self.timeline.of(node).into_iter().find_map(|e| match e {
            Event::Started { peer_id, .. } => Some(peer_id),
            _ => None,
        })
    }
}

fn ip_of(a: &Multiaddr) -> Option<Ipv4Addr> {
    a.iter().find_map(|p| match p {
        Protocol::Ip4(ip) => Some(ip),
        _ => None,
    })
}

/// Bob's acks to `to`, in order: (id, path).
fn acks_to(evs: &[EventLine], to: PeerId) -> Vec<(u64, Path)> {
    evs.iter()
        .filter(|l| l.node == "bob")
        .filter_map(|l| match &l.event {
            Event::MessageAcked {
                to: t, id, path, ..
            } if *t == to => Some((*id, *path)),
            _ => None,
        })
        .collect()
}

/// internet: boot (.10), router-u (.2, `upnp`), router-h (.3, `home`), router-c (.4, `upnp`);
/// lan-u: router-u (.254), alice (.10, listener `--upnp`);
/// lan-c: router-c (.254), carol (.10, the same listener without `--upnp`);
/// lan-h: router-h (.254), bob (.10, dialer, `COUNT` messages to each listener);
/// lan-d: router-d (.254, `home`, internet .5), dave (.10, listener `--upnp`, namespace of his
/// own: bob does not message him).
/// (Carol has a LAN of her own: on alice's, alice's AutoNAT server could confirm carol's LAN
/// address, which says nothing about the router.)
#[tokio::test(flavor = "multi_thread")]
async fn upnp_listener_maps_its_port_and_is_dialed_directly_without_hole_punching() {
    let _machine = p2plab::testing::whole_machine().await;
    let Some(engine) = engine_or_skip("upnp").await else {
        return;
    };
    let image = image().await;
    let t0 = std::time::Instant::now();
    let mut lab = Lab::new(engine, "upnp");
    let internet = lab
        .allocate_network("internet", plan::internet_pool())
        .await
        .unwrap();
    let lan_u = lab
        .allocate_network("lan-u", plan::lan_pool())
        .await
        .unwrap();
    let lan_h = lab
        .allocate_network("lan-h", plan::lan_pool())
        .await
        .unwrap();
    let lan_c = lab
        .allocate_network("lan-c", plan::lan_pool())
        .await
        .unwrap();
    let lan_d = lab
        .allocate_network("lan-d", plan::lan_pool())
        .await
        .unwrap();
    let (timeline, tx) = Watch::new();
    let mut t = UpnpLab {
        lab,
        timeline,
        nodes: vec![
            "router-u", "router-c", "router-h", "router-d", "boot", "alice", "carol", "bob", "dave",
        ],
    };
    let wan_u = ip(&internet, 2);

    for (router, lan, lan_name, wan_host, nat) in [
        ("router-u", lan_u, "lan-u", 2, "upnp"),
        ("router-h", lan_h, "lan-h", 3, "home"),
        ("router-c", lan_c, "lan-c", 4, "upnp"),
        ("router-d", lan_d, "lan-d", 5, "home"),
    ] {
        t.lab
            .start(ContainerSpec {
                name: router.into(),
                image: image.clone(),
                cmd: strings(&["p2plab-router"]),
                env: vec![
                    ("P2PLAB_NAT".into(), nat.into()),
                    ("P2PLAB_LAN_SUBNET".into(), lan.to_string()),
                    ("P2PLAB_WAN_IP".into(), ip(&internet, wan_host).to_string()),
                ],
                attach: vec![
                    Attach {
                        network: "internet".into(),
                        ip: ip(&internet, wan_host),
                    },
                    Attach {
                        network: lan_name.into(),
                        ip: ip(&lan, 254),
                    },
                ],
                net_admin: true,
                sysctls: vec![("net.ipv4.ip_forward".into(), "1".into())],
                ..Default::default()
            })
            .await
            .unwrap();
        t.lab.follow(router, tx.clone()).unwrap();
    }
    let mut ready_u = String::new();
    for router in ["router-u", "router-h", "router-c", "router-d"] {
        match t.timeline.wait_line(router, "router_ready", SECS(30)).await {
            Ok(line) if router == "router-u" => ready_u = line,
            Ok(_) => {}
            Err(e) => t.fail(e).await,
        }
    }
    let ready: serde_json::Value = serde_json::from_str(&ready_u).unwrap();
    if ready["nat"] != "upnp"
        || ready["upnp"]["ext_ip"] != wan_u.to_string()
        || ready["upnp"]["daemon"] != "miniupnpd"
    {
        t.fail(format!(
            "router-u is not a upnp router with external address {wan_u}: {ready_u}"
        ))
        .await;
    }
    let t_routers = t0.elapsed();

    let boot_ip = ip(&internet, 10);
    t.lab
        .start(ContainerSpec {
            name: "boot".into(),
            image: image.clone(),
            cmd: strings(&[
                "monitor",
                "--name",
                "boot",
                "--listen-addr",
                "0.0.0.0",
                "--port",
                "51820",
                "--external-addr",
                &format!("/ip4/{boot_ip}/tcp/51820"),
                "--external-addr",
                &format!("/ip4/{boot_ip}/udp/51820/quic-v1"),
                "--metrics-addr",
                "off",
            ]),
            env: vec![("P2PLAB_NO_DEFAULT_ROUTE".into(), "1".into())],
            attach: vec![Attach {
                network: "internet".into(),
                ip: boot_ip,
            }],
            net_admin: true,
            ..Default::default()
        })
        .await
        .unwrap();
    t.lab.follow("boot", tx.clone()).unwrap();
    let r = t
        .timeline
        .wait_event("boot", "started", SECS(30), |e| {
            matches!(e, Event::Started { .. })
        })
        .await;
    let boot_id = match t.ok(r).await {
        Event::Started { peer_id, .. } => peer_id,
        _ => unreachable!(),
    };
    let boot_addr = format!("/ip4/{boot_ip}/tcp/51820/p2p/{boot_id}");

    let count = COUNT.to_string();
    for (node, role, lan, lan_name, ns, extra) in [
        (
            "alice",
            "listener",
            lan_u,
            "lan-u",
            "lab",
            vec!["--port", "4001", "--upnp"],
        ),
        (
            "carol",
            "listener",
            lan_c,
            "lan-c",
            "lab",
            vec!["--port", "4001"],
        ),
        (
            "bob",
            "dialer",
            lan_h,
            "lan-h",
            "lab",
            vec![
                "--port",
                "4001",
                "--count",
                count.as_str(),
                "--interval",
                "250",
            ],
        ),
        (
            "dave",
            "listener",
            lan_d,
            "lan-d",
            "lab-d",
            vec!["--port", "4001", "--upnp"],
        ),
    ] {
        let mut cmd = vec![
            role,
            "--name",
            node,
            "--bootstrap",
            &boot_addr,
            "--namespace",
            ns,
            "--transport",
            "both",
        ];
        cmd.extend(extra);
        t.lab
            .start(ContainerSpec {
                name: node.into(),
                image: image.clone(),
                cmd: strings(&cmd),
                env: vec![("P2PLAB_GATEWAY".into(), ip(&lan, 254).to_string())],
                attach: vec![Attach {
                    network: lan_name.into(),
                    ip: ip(&lan, 10),
                }],
                net_admin: true,
                ..Default::default()
            })
            .await
            .unwrap();
        t.lab.follow(node, tx.clone()).unwrap();
    }
    let t_nodes = t0.elapsed();

    // 1. Alice's UPnP: a gateway with the router's WAN address, then both ports mapped on it.
    let r = t
        .timeline
        .wait_event("alice", "upnp gateway_found", SECS(30), |e| {
            matches!(
                e,
                Event::Upnp {
                    status: UpnpStatus::GatewayFound
                        | UpnpStatus::GatewayNotFound
                        | UpnpStatus::NonRoutableGateway,
                    ..
                }
            )
        })
        .await;
    match t.ok(r).await {
        Event::Upnp {
            status: UpnpStatus::GatewayFound,
            external_ip: Some(e),
            ..
        } if e == std::net::IpAddr::V4(wan_u) => {}
        other => {
            t.fail(format!(
                "alice: expected a gateway with external IP {wan_u}, got {other:?}"
            ))
            .await
        }
    }
    let r = t
        .timeline
        .wait_for("alice's tcp and udp mappings", SECS(30), |evs| {
            let mapped: Vec<Multiaddr> = evs
                .iter()
                .filter(|l| l.node == "alice")
                .filter_map(|l| match &l.event {
                    Event::Upnp {
                        status: UpnpStatus::Mapped,
                        addr: Some(a),
                        ..
                    } => Some(a.clone()),
                    _ => None,
                })
                .collect();
            (mapped.len() >= 2).then_some(mapped)
        })
        .await;
    let mapped = t.ok(r).await;
    let want: [Multiaddr; 2] = [
        format!("/ip4/{wan_u}/tcp/4001").parse().unwrap(),
        format!("/ip4/{wan_u}/udp/4001/quic-v1").parse().unwrap(),
    ];
    for w in &want {
        if !mapped.contains(w) {
            t.fail(format!("alice: no mapping {w}; mapped {mapped:?}"))
                .await;
        }
    }
    if let Some(e) = t.timeline.of("alice").into_iter().find(|e| {
        matches!(
            e,
            Event::Upnp {
                status: UpnpStatus::Failed,
                ..
            }
        )
    }) {
        t.fail(format!("alice: a UPnP mapping attempt failed: {e:?}"))
            .await;
    }
    let t_mapped = t0.elapsed();
    // The router holds them: miniupnpd's DNATs to alice's ports.
    let alice_ip = ip(&lan_u, 10);
    let out = t
        .lab
        .exec(
            "router-u",
            &[
                "nft",
                "list",
                "chain",
                "inet",
                "p2plab_upnp",
                "prerouting_miniupnpd",
            ],
        )
        .await
        .unwrap();
    let dnats = out
        .stdout
        .matches(&format!("dnat ip to {alice_ip}:4001"))
        .count();
    if dnats != 2 {
        t.fail(format!(
            "router-u: expected 2 DNATs to {alice_ip}:4001 (tcp, udp), found {dnats}:\n{}{}",
            out.stdout, out.stderr
        ))
        .await;
    }

    // 2. AutoNAT confirms alice public on the WAN address; she announces direct addresses only.
    let r = t
        .timeline
        .wait_event("alice", "reachability", SECS(60), |e| {
            matches!(
                e,
                Event::Reachability {
                    source: ReachabilitySource::Autonat | ReachabilitySource::Timeout,
                    ..
                }
            )
        })
        .await;
    let first_verdict = t.ok(r).await;
    let r = t
        .timeline
        .wait_event("alice", "public reachability", SECS(60), |e| {
            matches!(
                e,
                Event::Reachability {
                    status: Reachability::Public,
                    ..
                }
            )
        })
        .await;
    match t.ok(r).await {
        Event::Reachability { source: ReachabilitySource::Autonat, addr: Some(a), .. } if ip_of(&a) == Some(wan_u) => {}
        other => t.fail(format!("alice: expected AutoNAT to confirm {wan_u}, got {other:?} (first verdict {first_verdict:?})")).await,
    }
    let r = t
        .timeline
        .wait_event("alice", "announced", SECS(60), |e| {
            matches!(e, Event::Announced { .. })
        })
        .await;
    if let Event::Announced { addrs, .. } = t.ok(r).await {
        let direct_on_wan = addrs
            .iter()
            .all(|a| Path::of([a]) == Path::Direct && ip_of(a) == Some(wan_u));
        if addrs.is_empty() || !direct_on_wan {
            t.fail(format!(
                "alice's first announcement is not {wan_u} direct only: {addrs:?}"
            ))
            .await;
        }
    }
    if let Some(e) = t
        .timeline
        .of("alice")
        .into_iter()
        .find(|e| matches!(e, Event::Reservation { .. }))
    {
        t.fail(format!(
            "alice reserved a relay slot although UPnP made her reachable: {e:?}"
        ))
        .await;
    }

    // 3. Carol, behind the same router without --upnp: a home NAT. No UPnP, relayed only.
    let r = t
        .timeline
        .wait_event("carol", "announced", SECS(60), |e| {
            matches!(e, Event::Announced { .. })
        })
        .await;
    if let Event::Announced { addrs, .. } = t.ok(r).await {
        if addrs.is_empty() || !addrs.iter().all(|a| Path::of([a]) == Path::Relayed) {
            t.fail(format!(
                "carol (no --upnp) announced a direct address: {addrs:?}"
            ))
            .await;
        }
    }

    // 4. Bob delivers everything to both; to alice over a direct dial of the mapped address.
    let (Some(alice), Some(carol)) = (t.peer_of("alice"), t.peer_of("carol")) else {
        t.fail("no started event from alice or carol".into()).await
    };
    let r = t
        .timeline
        .wait_for("every ack from alice and carol", SECS(120), |evs| {
            (acks_to(evs, alice).len() >= COUNT && acks_to(evs, carol).len() >= COUNT).then_some(())
        })
        .await;
    t.ok(r).await;
    let t_acked = t0.elapsed();
    let bob = t.timeline.of("bob");
    let failed: Vec<&Event> = bob
        .iter()
        .filter(|e| matches!(e, Event::MessageFailed { .. }))
        .collect();
    if !failed.is_empty() {
        t.fail(format!("bob lost messages: {failed:?}")).await;
    }
    let to_alice = acks_to(&t.timeline.events, alice);
    if let Some(bad) = to_alice.iter().find(|(_, p)| *p != Path::Direct) {
        t.fail(format!(
            "an ack from alice took a {:?} path: {bad:?} of {to_alice:?}",
            bad.1
        ))
        .await;
    }
    let first_conn = bob.iter().find_map(|e| match e {
        Event::Connected {
            peer,
            path,
            remote_addr,
            direction,
            ..
        } if *peer == alice => Some((*path, remote_addr.clone(), *direction)),
        _ => None,
    });
    match &first_conn {
        Some((Path::Direct, addr, Direction::Outbound)) if ip_of(addr) == Some(wan_u) && want.iter().any(|w| addr.to_string().starts_with(&w.to_string())) => {}
        other => t.fail(format!("bob's first connection to alice is not a direct dial of a mapped address: {other:?}")).await,
    }
    let punches_alice = t.timeline.events.iter().filter(|l| match &l.event {
        Event::HolePunch { peer, .. } => *peer == alice || (l.node == "alice"),
        _ => false,
    });
    if let Some(p) = punches_alice.clone().next() {
        t.fail(format!(
            "a hole punch involving alice (none is needed with UPnP): {}",
            p.to_json()
        ))
        .await;
    }
    // Carol is a home NAT case: DCUtR punched a direct path to her.
    let punched_carol = t
        .timeline
        .events
        .iter()
        .any(|l| matches!(&l.event, Event::HolePunch { peer, ok: true, .. } if *peer == carol));
    if !punched_carol {
        t.fail("no successful hole punch between bob and carol (home NAT behaviour)".into())
            .await;
    }
    if t.timeline
        .of("carol")
        .iter()
        .any(|e| matches!(e, Event::Upnp { .. }))
    {
        t.fail("carol (no --upnp) wrote upnp events".into()).await;
    }
    let to_carol = acks_to(&t.timeline.events, carol);
    let relayed_carol = to_carol.iter().filter(|(_, p)| *p == Path::Relayed).count();
    // Milliseconds from alice's `started` to her first event matching `f`.
    let since_start = |f: &dyn Fn(&Event) -> bool| {
        let of = |g: &dyn Fn(&Event) -> bool| {
            t.timeline
                .events
                .iter()
                .find(|l| l.node == "alice" && g(&l.event))
                .map(|l| l.ts)
        };
        match (of(&|e| matches!(e, Event::Started { .. })), of(f)) {
            (Some(a), Some(b)) => (b - a).num_milliseconds(),
            _ => -1,
        }
    };
    let ms_mapped = since_start(&|e| {
        matches!(
            e,
            Event::Upnp {
                status: UpnpStatus::Mapped,
                ..
            }
        )
    });
    let ms_public = since_start(&|e| {
        matches!(
            e,
            Event::Reachability {
                status: Reachability::Public,
                ..
            }
        )
    });
    let ms_announced = since_start(&|e| matches!(e, Event::Announced { .. }));

    // 5. Dave (--upnp behind a home router): no gateway; once UPnP is out, he reserves a relay
    // slot and announces relayed addresses only, like any home listener.
    let r = t
        .timeline
        .wait_event("dave", "upnp outcome", SECS(60), |e| {
            matches!(
                e,
                Event::Upnp {
                    status: UpnpStatus::GatewayNotFound
                        | UpnpStatus::GatewayFound
                        | UpnpStatus::Mapped,
                    ..
                }
            )
        })
        .await;
    match t.ok(r).await {
        Event::Upnp {
            status: UpnpStatus::GatewayNotFound,
            ..
        } => {}
        other => {
            t.fail(format!(
                "dave (behind a home router) found a UPnP gateway: {other:?}"
            ))
            .await
        }
    }
    let r = t
        .timeline
        .wait_event("dave", "announced", SECS(60), |e| {
            matches!(e, Event::Announced { .. })
        })
        .await;
    if let Event::Announced { addrs, .. } = t.ok(r).await {
        if addrs.is_empty() || !addrs.iter().all(|a| Path::of([a]) == Path::Relayed) {
            t.fail(format!(
                "dave (no gateway) announced a direct address: {addrs:?}"
            ))
            .await;
        }
    }
    let dave_since = |f: &dyn Fn(&Event) -> bool| {
        let of = |g: &dyn Fn(&Event) -> bool| {
            t.timeline
                .events
                .iter()
                .find(|l| l.node == "dave" && g(&l.event))
                .map(|l| l.ts)
        };
        match (of(&|e| matches!(e, Event::Started { .. })), of(f)) {
            (Some(a), Some(b)) => (b - a).num_milliseconds(),
            _ => -1,
        }
    };
    let dave_private = dave_since(&|e| {
        matches!(
            e,
            Event::Reachability {
                status: Reachability::Private,
                ..
            }
        )
    });
    let dave_reserved = dave_since(&|e| {
        matches!(
            e,
            Event::Reservation {
                status: p2plab_contract::events::ReservationStatus::Accepted,
                ..
            }
        )
    });
    let dave_not_found = dave_since(&|e| {
        matches!(
            e,
            Event::Upnp {
                status: UpnpStatus::GatewayNotFound,
                ..
            }
        )
    });

    // 6. No container has a route out of the lab.
    for n in t.nodes.clone() {
        let out = t
            .lab
            .exec(n, &["ip", "route", "get", "1.1.1.1"])
            .await
            .unwrap();
        if out.code == 0 {
            t.fail(format!("{n} has a route out of the lab: {}", out.stdout))
                .await;
        }
    }
    eprintln!(
        "upnp: routers ready {:.1}s, nodes started {:.1}s, alice's mappings seen {:.1}s, {} acks each {:.1}s; \
         alice from start: first mapping {ms_mapped} ms, AutoNAT public {ms_public} ms, announced {ms_announced} ms, \
         {} direct acks, first verdict {:?}; carol: {} relayed + {} direct acks; \
         dave from start: private {dave_private} ms, relay reserved {dave_reserved} ms, gateway_not_found {dave_not_found} ms",
        t_routers.as_secs_f64(),
        t_nodes.as_secs_f64(),
        t_mapped.as_secs_f64(),
        COUNT,
        t_acked.as_secs_f64(),
        to_alice.len(),
        first_verdict,
        relayed_carol,
        to_carol.len() - relayed_carol,
    );
    t.lab.teardown().await.unwrap();
}
