//! Real nodes as real processes over loopback sockets: discovery, messaging, loss of the
//! bootstrap node, several bootstrap addresses, relay-only peers and private networks.
//! Every wait has a deadline and waits on events, never on sleeps.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashSet;

use crate::support::*;
use p2plab_node::{Event, Path};

fn monitor(name: &str, extra: &[&str]) -> (NodeProc, String) {
    let mut m = NodeProc::spawn("monitor", name, &[&["--port", "0"], extra].concat());
    let addr = m.tcp_addr().to_string();
    (m, addr)
}

#[test]
fn dialer_discovers_its_namespace_and_gets_every_ack() {
    let (mut boot, b) = monitor("boot", &[]);
    let mut alice = NodeProc::spawn(
        "listener",
        "alice",
        &["--bootstrap", &b, "--namespace", "demo"],
    );
    let mut carol = NodeProc::spawn(
        "listener",
        "carol",
        &["--bootstrap", &b, "--namespace", "demo"],
    );
    let mut other = NodeProc::spawn(
        "listener",
        "other",
        &["--bootstrap", &b, "--namespace", "elsewhere"],
    );
    let (a, c, o) = (alice.peer_id(), carol.peer_id(), other.peer_id());
    for l in [&mut alice, &mut carol, &mut other] {
        l.wait_event("announced", SECS(30), |e| {
            matches!(e, Event::Announced { .. })
        });
    }
    let n = 5;
    let mut bob = NodeProc::spawn(
        "dialer",
        "bob",
        &[
            "--bootstrap",
            &b,
            "--namespace",
            "demo",
            "--count",
            "5",
            "--interval",
            "100",
        ],
    );
    bob.wait_for("5 acks from alice and carol", SECS(60), |evs| {
        let ids_a: HashSet<u64> = acks_to(evs, &a).into_iter().map(|x| x.0).collect();
        let ids_c: HashSet<u64> = acks_to(evs, &c).into_iter().map(|x| x.0).collect();
        (ids_a.len() == n && ids_c.len() == n).then_some(())
    });
    let seen = bob.seen();
    assert!(
        !seen
            .iter()
            .any(|e| matches!(e, Event::Discovered { peer, .. } if *peer == o)),
        "a listener of another namespace was discovered"
    );
    assert!(failures(&seen).is_empty(), "{:?}", failures(&seen));
    assert!(
        !other
            .seen()
            .iter()
            .any(|e| matches!(e, Event::MessageReceived { .. })),
        "the other namespace got messages"
    );

    // Each listener counted exactly n distinct messages; SIGTERM gives `stopped` within 2 s.
    for l in [&mut alice, &mut carol] {
        let totals = l.terminate(SECS(2));
        assert_eq!(totals.messages_received, n as u64, "{}", l.name);
    }
    let totals = bob.terminate(SECS(2));
    assert_eq!(totals.messages_acked, 2 * n as u64);
    assert_eq!(totals.messages_failed, 0);
    boot.terminate(SECS(2));
}

#[test]
fn messaging_goes_on_after_the_bootstrap_node_dies() {
    let (mut boot, b) = monitor("boot", &[]);
    let mut alice = NodeProc::spawn(
        "listener",
        "alice",
        &["--bootstrap", &b, "--namespace", "survive"],
    );
    let a = alice.peer_id();
    alice.wait_event("announced", SECS(30), |e| {
        matches!(e, Event::Announced { .. })
    });
    let mut bob = NodeProc::spawn(
        "dialer",
        "bob",
        &[
            "--bootstrap",
            &b,
            "--namespace",
            "survive",
            "--count",
            "30",
            "--interval",
            "100",
        ],
    );
    bob.wait_for("a first ack", SECS(60), |evs| {
        (!acks_to(evs, &a).is_empty()).then_some(())
    });
    boot.kill();
    let acked = bob.wait_for("30 acks after the bootstrap died", SECS(60), |evs| {
        let ids: HashSet<u64> = acks_to(evs, &a).into_iter().map(|x| x.0).collect();
        (ids.len() == 30).then_some(ids)
    });
    assert_eq!(acked.len(), 30);
    let seen = bob.seen();
    assert!(
        failures(&seen).is_empty(),
        "lost messages: {:?}",
        failures(&seen)
    );
    // The loss of the bootstrap node was noticed and is being retried, not fatal.
    assert!(seen
        .iter()
        .any(|e| matches!(e, Event::BootstrapRetry { .. })));
    let totals = alice.terminate(SECS(2));
    assert_eq!(totals.messages_received, 30);
}

#[test]
fn a_dead_bootstrap_address_does_not_stop_the_join() {
    // A port that was just free: nobody listens there.
    let dead_port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let dead = format!("/ip4/127.0.0.1/tcp/{dead_port}");
    let (_boot, b) = monitor("boot", &[]);
    let mut alice = NodeProc::spawn(
        "listener",
        "alice",
        &[
            "--bootstrap",
            &dead,
            "--bootstrap",
            &b,
            "--namespace",
            "two-boots",
        ],
    );
    let a = alice.peer_id();
    alice.wait_event("bootstrapped", SECS(30), |e| {
        matches!(e, Event::Bootstrapped { .. })
    });
    alice.wait_event(
        "retry of the dead address",
        SECS(30),
        |e| matches!(e, Event::BootstrapRetry { addr, .. } if addr.to_string() == dead),
    );
    let mut bob = NodeProc::spawn(
        "dialer",
        "bob",
        &[
            "--bootstrap",
            &dead,
            "--bootstrap",
            &b,
            "--namespace",
            "two-boots",
            "--count",
            "3",
            "--interval",
            "100",
        ],
    );
    bob.wait_for("3 acks", SECS(60), |evs| {
        (acks_to(evs, &a).len() >= 3).then_some(())
    });
}

#[test]
fn a_peer_reachable_only_through_the_relay_gets_relayed_messages() {
    let (_boot, b) = monitor("relay", &[]);
    let mut alice = NodeProc::spawn(
        "listener",
        "alice",
        &["--bootstrap", &b, "--namespace", "hidden", "--no-direct"],
    );
    let a = alice.peer_id();
    alice.wait_event("reservation", SECS(30), |e| {
        matches!(
            e,
            Event::Reservation {
                status: p2plab_node::events::ReservationStatus::Accepted,
                ..
            }
        )
    });
    let announced = alice.wait_event("announced", SECS(30), |e| {
        matches!(e, Event::Announced { .. })
    });
    match announced {
        Event::Announced { addrs, .. } => {
            assert!(
                !addrs.is_empty() && addrs.iter().all(|x| Path::of([x]) == Path::Relayed),
                "{addrs:?}"
            )
        }
        _ => unreachable!(),
    }
    let mut bob = NodeProc::spawn(
        "dialer",
        "bob",
        &[
            "--bootstrap",
            &b,
            "--namespace",
            "hidden",
            "--no-direct",
            "--count",
            "5",
            "--interval",
            "100",
        ],
    );
    let acks = bob.wait_for("5 acks", SECS(60), |evs| {
        let acks = acks_to(evs, &a);
        (acks.len() >= 5).then_some(acks)
    });
    assert!(acks.iter().all(|(_, p)| *p == Path::Relayed), "{acks:?}");
    alice.wait_for("5 relayed receipts", SECS(10), |evs| {
        let n = evs
            .iter()
            .filter(|l| {
                matches!(
                    l.event,
                    Event::MessageReceived {
                        path: Path::Relayed,
                        duplicate: false,
                        ..
                    }
                )
            })
            .count();
        (n >= 5).then_some(())
    });
}

#[test]
fn a_peer_with_another_psk_is_refused_and_the_node_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let key = |name: &str, hex: char| {
        let p = dir.path().join(name);
        std::fs::write(
            &p,
            format!(
                "/key/swarm/psk/1.0.0/\n/base16/\n{}\n",
                hex.to_string().repeat(64)
            ),
        )
        .unwrap();
        p.to_string_lossy().into_owned()
    };
    let (k1, k2) = (key("one.key", 'a'), key("two.key", 'b'));
    let (mut boot, b) = monitor("boot", &["--psk-file", &k1]);
    let boot_id = boot.peer_id();
    let mut stranger = NodeProc::spawn(
        "listener",
        "stranger",
        &["--bootstrap", &b, "--psk-file", &k2],
    );
    stranger.wait_event("refused dial", SECS(30), |e| {
        matches!(e, Event::BootstrapRetry { .. })
    });
    boot.wait_event("refused inbound", SECS(30), |e| {
        matches!(
            e,
            Event::ConnectionError {
                direction: p2plab_node::events::Direction::Inbound,
                ..
            }
        )
    });
    // The monitor goes on and admits a peer with the right key.
    let mut friend = NodeProc::spawn(
        "listener",
        "friend",
        &["--bootstrap", &b, "--psk-file", &k1],
    );
    friend.wait_event(
        "connected to boot",
        SECS(30),
        |e| matches!(e, Event::Connected { peer, .. } if *peer == boot_id),
    );
    assert!(
        !stranger
            .seen()
            .iter()
            .any(|e| matches!(e, Event::Connected { .. })),
        "a peer with another PSK got a connection"
    );
}

/// One namespace, one transport, one address family: discovery and every ack.
fn single_transport(ip: &str, transport: &str) {
    let mut boot = NodeProc::spawn_on(
        ip,
        "monitor",
        "boot",
        &["--port", "0", "--transport", transport],
    );
    let b = boot.listen_addr(|_| true).to_string();
    let t = [
        "--transport",
        transport,
        "--bootstrap",
        &b,
        "--namespace",
        "one",
    ];
    let mut alice = NodeProc::spawn_on(ip, "listener", "alice", &t);
    let a = alice.peer_id();
    alice.wait_event("announced", SECS(30), |e| {
        matches!(e, Event::Announced { .. })
    });
    let mut bob = NodeProc::spawn_on(
        ip,
        "dialer",
        "bob",
        &[&t[..], &["--count", "3", "--interval", "100"]].concat(),
    );
    let acks = bob.wait_for("3 acks", SECS(60), |evs| {
        let acks = acks_to(evs, &a);
        (acks.len() >= 3).then_some(acks)
    });
    assert!(acks.iter().all(|(_, p)| *p == Path::Direct), "{acks:?}");
    let wanted = if transport == "quic" {
        "quic-v1"
    } else {
        "/tcp/"
    };
    for e in bob.seen() {
        if let Event::Connected { remote_addr, .. } = e {
            assert!(
                remote_addr.to_string().contains(wanted),
                "{remote_addr} over {transport}"
            );
            assert!(remote_addr.to_string().starts_with(if ip.contains(':') {
                "/ip6/"
            } else {
                "/ip4/"
            }));
        }
    }
}

#[test]
fn ipv6_over_quic_only() {
    single_transport("::1", "quic");
}

#[test]
fn ipv4_over_tcp_only() {
    single_transport("127.0.0.1", "tcp");
}

fn http_get(addr: std::net::SocketAddr, path: &str) -> (u16, String) {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(SECS(10))).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    let code = out
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = out
        .split_once("\r\n\r\n")
        .map(|x| x.1.to_string())
        .unwrap_or_default();
    (code, body)
}

#[test]
fn metrics_health_and_status_over_http() {
    let (_boot, b) = monitor("boot", &[]);
    let mut alice = NodeProc::spawn(
        "listener",
        "alice",
        &[
            "--bootstrap",
            &b,
            "--namespace",
            "web",
            "--metrics-addr",
            "127.0.0.1:0",
        ],
    );
    let a = alice.peer_id();
    let http = match alice.wait_event("http_listening", SECS(20), |e| {
        matches!(e, Event::HttpListening { .. })
    }) {
        Event::HttpListening { addr } => addr,
        _ => unreachable!(),
    };
    alice.wait_event("announced", SECS(30), |e| {
        matches!(e, Event::Announced { .. })
    });
    let mut bob = NodeProc::spawn(
        "dialer",
        "bob",
        &[
            "--bootstrap",
            &b,
            "--namespace",
            "web",
            "--count",
            "3",
            "--interval",
            "100",
        ],
    );
    bob.wait_for("3 acks", SECS(60), |evs| {
        (acks_to(evs, &a).len() >= 3).then_some(())
    });
    alice.wait_for("3 receipts", SECS(10), |evs| {
        (evs.iter()
            .filter(|l| matches!(l.event, Event::MessageReceived { .. }))
            .count()
            >= 3)
            .then_some(())
    });

    let (code, body) = http_get(http, "/health");
    assert_eq!((code, body.trim()), (200, "ok"));
    let (code, metrics) = http_get(http, "/metrics");
    assert_eq!(code, 200);
    for name in [
        "p2plab_messages_received_total 3",
        "p2plab_routing_table_size",
        "p2plab_connected_peers",
        "libp2p_",
    ] {
        assert!(metrics.contains(name), "no {name} in /metrics:\n{metrics}");
    }
    // The status document is published every 500 ms: wait for it to catch up, on a deadline.
    let deadline = std::time::Instant::now() + SECS(10);
    loop {
        let (code, body) = http_get(http, "/status");
        assert_eq!(code, 200);
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["peer_id"], a.to_string());
        if v["totals"]["messages_received"] == 3 {
            assert_eq!(v["bootstrapped"], true);
            assert!(v["connections"].as_array().is_some_and(|c| !c.is_empty()));
            break;
        }
        // The endpoint is the thing waited on: poll it until the deadline.
        assert!(
            std::time::Instant::now() < deadline,
            "status never showed 3 messages: {body}"
        );
    }
}

/// Polls `/health` until it answers `code`, on a deadline.
fn health_becomes(http: std::net::SocketAddr, code: u16, within: std::time::Duration) {
    let deadline = std::time::Instant::now() + within;
    loop {
        let (got, _) = http_get(http, "/health");
        if got == code {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "/health stayed {got}, never {code}"
        );
        // The endpoint is the thing waited on: poll it until the deadline.
    }
}

/// The only bootstrap node dies and is redeployed at the same address with a new identity: a
/// listener that knew the old one joins the new one (`bootstrap_changed`, no "Unexpected peer
/// ID" forever), re-announces, and a dialer that starts afterwards finds it. `/health` is 503 while
/// the bootstrap node is gone and 200 again once the listener has re-announced.
#[test]
fn a_bootstrap_node_redeployed_with_a_new_identity_is_joined_again() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
        .to_string();
    let flags = [
        "--port",
        port.as_str(),
        "--transport",
        "tcp",
        "--metrics-addr",
        "off",
    ];
    let mut boot = NodeProc::spawn("monitor", "boot", &flags);
    let old = boot.peer_id();
    let b = format!("/ip4/127.0.0.1/tcp/{port}");
    let mut alice = NodeProc::spawn(
        "listener",
        "alice",
        &[
            "--bootstrap",
            &b,
            "--namespace",
            "redeploy",
            "--transport",
            "tcp",
            "--metrics-addr",
            "127.0.0.1:0",
        ],
    );
    let a = alice.peer_id();
    let http = match alice.wait_event("http_listening", SECS(20), |e| {
        matches!(e, Event::HttpListening { .. })
    }) {
        Event::HttpListening { addr } => addr,
        _ => unreachable!(),
    };
    alice.wait_event("announced", SECS(30), |e| {
        matches!(e, Event::Announced { .. })
    });
    health_becomes(http, 200, SECS(10));

    boot.kill();
    health_becomes(http, 503, SECS(20));

    let mut boot2 = NodeProc::spawn("monitor", "boot2", &flags);
    let new = boot2.peer_id();
    assert_ne!(old, new);
    alice.wait_event(
        "bootstrap_changed",
        SECS(40),
        |e| matches!(e, Event::BootstrapChanged { old: o, new: n, .. } if *o == old && *n == new),
    );
    alice.wait_for("a second announcement", SECS(30), |evs| {
        (evs.iter()
            .filter(|l| matches!(l.event, Event::Announced { .. }))
            .count()
            >= 2)
            .then_some(())
    });
    health_becomes(http, 200, SECS(10));

    let mut bob = NodeProc::spawn(
        "dialer",
        "bob",
        &[
            "--bootstrap",
            &b,
            "--namespace",
            "redeploy",
            "--transport",
            "tcp",
            "--count",
            "3",
            "--interval",
            "100",
        ],
    );
    bob.wait_for("3 acks from alice", SECS(30), |evs| {
        (acks_to(evs, &a).len() >= 3).then_some(())
    });
    assert!(failures(&bob.seen()).is_empty());
    let unexpected = alice
        .seen()
        .iter()
        .filter(|e| matches!(e, Event::BootstrapRetry { error, .. } if error.contains("Unexpected peer ID")))
        .count();
    assert_eq!(unexpected, 0, "the old identity locked the listener out");
    boot2.terminate(SECS(2));
}
