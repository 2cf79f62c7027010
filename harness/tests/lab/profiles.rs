//! Every NAT profile, measured: a LAN host runs `probe measure` against two reflectors on the
//! lab's internet, for UDP and TCP, and what it measures must be what the profile declares
//! (RFC 4787 mapping and filtering, and hairpinning). Needs a Docker engine (`P2PLAB_SKIP_DOCKER=1` skips).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use ipnet::Ipv4Net;
use p2plab::{
    plan,
    testing::{engine_or_skip, image, ip, strings, Watch},
    Attach, ContainerSpec, Lab,
};
use p2plab_contract::{
    host::{routes_env, Route6, Routing},
    nat::{Forward, Ipv6Policy, Profile, Proto},
    parse_line,
    probe::{expected_hairpin, NatProbe, Verdict, REFLECTOR_PORT},
    router::{Ipv6Side, Prefix, RouterEnv, LAB_RANGE6},
};

/// Each case: a name, the router of its LAN, whether that router sits behind a carrier's `home`
/// router (CGNAT: two NATs stacked; it must measure as its inner router does), and whether it
/// hairpins. `corporate` is `udp-blocked` with a TCP allow list of the reflectors' two ports
/// ([`ALLOWED`]): it measures as `udp-blocked`, and TCP to any other port is dropped.
const CASES: [(&str, Profile, bool, bool); 10] = [
    ("open", Profile::Open, false, false),
    ("home", Profile::Home, false, false),
    ("strict", Profile::Strict, false, false),
    ("port-forward", Profile::PortForward, false, false),
    ("routed", Profile::Routed, false, false),
    ("cgnat", Profile::Home, true, false),
    ("upnp", Profile::Upnp, false, false),
    ("udp-blocked", Profile::UdpBlocked, false, false),
    ("home-hairpin", Profile::Home, false, true),
    ("corporate", Profile::UdpBlocked, false, false),
];

/// The `corporate` router's TCP allow list: the reflectors' main and alt ports.
const ALLOWED: [u16; 2] = [REFLECTOR_PORT, REFLECTOR_PORT + 1];

#[tokio::test(flavor = "multi_thread")]
async fn every_nat_profile_measures_as_declared() {
    let _machine = p2plab::testing::whole_machine().await;
    let Some(engine) = engine_or_skip("nat_profiles").await else {
        return;
    };
    let image = image().await;
    let mut lab = Lab::new(engine, "nat-profiles");
    let internet = lab
        .allocate_network("internet", plan::internet_pool())
        .await
        .unwrap();
    let mut lans = Vec::new();
    for (p, ..) in CASES {
        lans.push(
            lab.allocate_network(&format!("lan-{p}"), plan::lan_pool())
                .await
                .unwrap(),
        );
    }
    let carrier = lab
        .allocate_network("carrier", plan::shared_pool())
        .await
        .unwrap();
    let prefix = |n: &Ipv4Net| Prefix {
        net: n.network(),
        len: n.prefix_len(),
    };

    // Routers: one per case (name, WAN network, LAN network, its env), then the carrier's.
    let mut routers: Vec<(String, &str, String, RouterEnv)> = Vec::new();
    for (i, ((p, profile, behind_carrier, hairpin), lan)) in
        CASES.into_iter().zip(&lans).enumerate()
    {
        let (wan_net, wan_ip) = if behind_carrier {
            ("carrier", ip(&carrier, 2))
        } else {
            ("internet", ip(&internet, 2 + i as u32))
        };
        let mut env = RouterEnv::new(profile, prefix(lan), wan_ip);
        env.hairpin = hairpin;
        if p == "corporate" {
            env.tcp_ports = ALLOWED.to_vec();
        }
        if behind_carrier {
            env.uplink_gw = Some(ip(&carrier, 254));
        }
        if profile == Profile::PortForward {
            let h = ip(lan, 10);
            env.forwards = [Proto::Tcp, Proto::Udp]
                .map(|proto| Forward {
                    proto,
                    ext_port: 4001,
                    lan_ip: h,
                    lan_port: 4001,
                })
                .to_vec();
        }
        routers.push((format!("router-{p}"), wan_net, format!("lan-{p}"), env));
    }
    routers.push((
        "router-carrier".into(),
        "internet",
        "carrier".into(),
        RouterEnv::new(Profile::Home, prefix(&carrier), ip(&internet, 50)),
    ));

    let (mut timeline, tx) = Watch::new();
    for (name, wan_net, lan_net, env) in &routers {
        let lan = Ipv4Net::new(env.lan.net, env.lan.len).unwrap();
        lab.start(ContainerSpec {
            name: name.clone(),
            image: image.clone(),
            cmd: strings(&["p2plab-router"]),
            env: env.to_env(),
            attach: vec![
                Attach {
                    network: wan_net.to_string(),
                    ip: env.wan_ip,
                },
                Attach {
                    network: lan_net.clone(),
                    ip: ip(&lan, 254),
                },
            ],
            net_admin: true,
            sysctls: vec![("net.ipv4.ip_forward".into(), "1".into())],
            tun: false,
            engine: 0,
        })
        .await
        .unwrap();
        lab.follow(name, tx.clone()).unwrap();
    }
    for (name, ..) in &routers {
        if let Err(e) = timeline
            .wait_line(name, "router_ready", Duration::from_secs(30))
            .await
        {
            let err = lab.stderr_tail(name, 20).await;
            lab.teardown().await.ok();
            panic!("{e}\n{err}");
        }
    }

    // Two reflectors on the internet; they reach the routed LAN through its router.
    let routed = CASES.iter().position(|c| c.1 == Profile::Routed).unwrap();
    let routed_route = format!("{} via {}", lans[routed], ip(&internet, 2 + routed as u32));
    for (name, n) in [("reflector-1", 20), ("reflector-2", 21)] {
        lab.start(ContainerSpec {
            name: name.into(),
            image: image.clone(),
            cmd: strings(&["probe", "reflect"]),
            env: vec![
                ("P2PLAB_NO_DEFAULT_ROUTE".into(), "1".into()),
                ("P2PLAB_ROUTES".into(), routed_route.clone()),
            ],
            attach: vec![Attach {
                network: "internet".into(),
                ip: ip(&internet, n),
            }],
            net_admin: true,
            ..Default::default()
        })
        .await
        .unwrap();
        lab.follow(name, tx.clone()).unwrap();
        timeline
            .wait_line(name, "reflector_ready", Duration::from_secs(30))
            .await
            .unwrap();
    }

    // A host on every LAN; the port-forward host serves a reflector on the forwarded port.
    for ((p, profile, ..), lan) in CASES.iter().zip(&lans) {
        let cmd = if *profile == Profile::PortForward {
            strings(&["probe", "reflect", "--port", "4001", "--alt-port", "4002"])
        } else {
            strings(&["sleep", "infinity"])
        };
        lab.start(ContainerSpec {
            name: format!("host-{p}"),
            image: image.clone(),
            cmd,
            env: vec![("P2PLAB_GATEWAY".into(), ip(lan, 254).to_string())],
            attach: vec![Attach {
                network: format!("lan-{p}"),
                ip: ip(lan, 10),
            }],
            net_admin: true,
            ..Default::default()
        })
        .await
        .unwrap();
    }

    let r1 = ip(&internet, 20).to_string();
    let r2 = ip(&internet, 21).to_string();
    let mut failures = Vec::new();
    for (p, profile, _, hairpin) in CASES {
        let host = format!("host-{p}");
        let out = lab
            .exec(
                &host,
                &["probe", "measure", "--reflector", &r1, "--reflector", &r2],
            )
            .await
            .unwrap();
        let mut seen = 0;
        for (line, probe) in out
            .stdout
            .lines()
            .filter_map(|l| Some((l, parse_line::<NatProbe>(l)?)))
        {
            seen += 1;
            let want = Verdict::expected(profile, probe.proto);
            if probe.verdict != want {
                failures.push(format!(
                    "{p}/{}: measured {:?}, declared {want:?}: {line}",
                    probe.proto, probe.verdict
                ));
            }
            let want = expected_hairpin(profile, hairpin, probe.proto);
            if probe.hairpin != want {
                failures.push(format!(
                    "{p}/{}: hairpin measured {:?}, declared {want:?}: {line}",
                    probe.proto, probe.hairpin
                ));
            }
        }
        if out.code != 0 || seen != 2 {
            failures.push(format!(
                "{p}: probe exit {} with {seen} reports\n{}{}",
                out.code, out.stdout, out.stderr
            ));
        }
    }

    // port-forward: an unsolicited connection from the internet to the forwarded port reaches
    // the LAN host, which sees the caller's own address.
    let pf = CASES
        .iter()
        .position(|c| c.1 == Profile::PortForward)
        .unwrap();
    let wan = ip(&internet, 2 + pf as u32);
    let script = format!(
        "import socket\ns=socket.create_connection(('{wan}',4001),3)\ns.sendall(b'whoami\\n')\nprint(s.recv(200).decode().strip())"
    );
    let out = lab
        .exec("reflector-1", &["python3", "-c", &script])
        .await
        .unwrap();
    if !out.stdout.contains(&format!("addr {r1}:")) {
        failures.push(format!(
            "port-forward: inbound TCP to {wan}:4001 got {:?} {:?}",
            out.stdout, out.stderr
        ));
    }

    // corporate: TCP to a port off its allow list never leaves the LAN (the connection times out
    // at the router), while from an unrestricted LAN the same connection reaches the reflector's
    // host, which refuses it (nothing listens there).
    let off_list = 4001;
    assert!(!ALLOWED.contains(&off_list));
    let script = format!(
        "import socket\ntry:\n socket.create_connection(('{r1}',{off_list}),3)\n print('connected')\nexcept ConnectionRefusedError:\n print('refused')\nexcept OSError as e:\n print('dropped', e)"
    );
    for (host, want) in [
        ("host-corporate", "dropped"),
        ("host-udp-blocked", "refused"),
    ] {
        let out = lab.exec(host, &["python3", "-c", &script]).await.unwrap();
        if !out.stdout.starts_with(want) {
            failures.push(format!(
                "{host}: TCP to {r1}:{off_list}: want {want}, got {:?} {:?}",
                out.stdout, out.stderr
            ));
        }
    }

    // No container has a route out of the lab.
    let mut nodes: Vec<String> = routers.iter().map(|r| r.0.clone()).collect();
    nodes.extend(CASES.iter().map(|c| format!("host-{}", c.0)));
    nodes.extend(["reflector-1".to_string(), "reflector-2".to_string()]);
    for n in &nodes {
        let out = lab
            .exec(n, &["ip", "route", "get", "1.1.1.1"])
            .await
            .unwrap();
        if out.code == 0 {
            failures.push(format!(
                "{n} has a route out of the lab: {}",
                out.stdout.trim()
            ));
        }
    }

    lab.teardown().await.unwrap();
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// Each IPv6 case: a name, the router's IPv4 profile (which says what it blocks) and its IPv6
/// policy.
const CASES_V6: [(&str, Profile, Ipv6Policy); 3] = [
    ("fw6", Profile::Home, Ipv6Policy::Firewall),
    ("routed6", Profile::Home, Ipv6Policy::Routed),
    ("udp-blocked6", Profile::UdpBlocked, Ipv6Policy::Firewall),
];

/// Every IPv6 router policy, measured over IPv6: a LAN host probes two reflectors on a
/// dual-stack internet, for UDP and TCP; what it measures must be what the policy declares (no
/// translation; the firewall filters by address and port, routed does not filter; UDP blocked
/// behind `udp-blocked` over IPv6 too). No container has a route out over either family.
#[tokio::test(flavor = "multi_thread")]
async fn every_ipv6_policy_measures_as_declared() {
    let _slot = p2plab::testing::lab_slot().await;
    let Some(engine) = engine_or_skip("ipv6_policies").await else {
        return;
    };
    let image = image().await;
    let mut lab = Lab::new(engine, "ipv6-policies");
    let internet = lab
        .allocate_network_with("internet", plan::internet_pool(), true)
        .await
        .unwrap();
    let mut lans = Vec::new();
    for (p, ..) in CASES_V6 {
        lans.push(
            lab.allocate_network_with(&format!("lan-{p}"), plan::lan_pool(), true)
                .await
                .unwrap(),
        );
    }
    let v6 = |net: &Ipv4Net, n: u32| plan::v6_addr(*net, ip(net, n));
    let (mut timeline, tx) = Watch::new();
    let mut reflector_routes = Vec::new();
    for (i, ((p, profile, policy), lan)) in CASES_V6.into_iter().zip(&lans).enumerate() {
        let wan = 2 + i as u32;
        let mut env = RouterEnv::new(
            profile,
            Prefix {
                net: lan.network(),
                len: lan.prefix_len(),
            },
            ip(&internet, wan),
        );
        env.ipv6 = Some(Ipv6Side {
            policy,
            lan: plan::v6_net(*lan),
            wan_ip: v6(&internet, wan),
        });
        reflector_routes.push(Route6 {
            to: plan::v6_net(*lan),
            via: v6(&internet, wan),
        });
        let name = format!("router-{p}");
        lab.start(ContainerSpec {
            name: name.clone(),
            image: image.clone(),
            cmd: strings(&["p2plab-router"]),
            env: env.to_env(),
            attach: vec![
                Attach {
                    network: "internet".into(),
                    ip: env.wan_ip,
                },
                Attach {
                    network: format!("lan-{p}"),
                    ip: ip(lan, 254),
                },
            ],
            net_admin: true,
            sysctls: vec![
                ("net.ipv4.ip_forward".into(), "1".into()),
                ("net.ipv6.conf.all.forwarding".into(), "1".into()),
            ],
            tun: false,
            engine: 0,
        })
        .await
        .unwrap();
        lab.follow(&name, tx.clone()).unwrap();
    }
    for (p, ..) in CASES_V6 {
        let name = format!("router-{p}");
        if let Err(e) = timeline
            .wait_line(&name, "router_ready", Duration::from_secs(30))
            .await
        {
            let err = lab.stderr_tail(&name, 20).await;
            lab.teardown().await.ok();
            panic!("{e}\n{err}");
        }
    }
    for (name, n) in [("reflector-1", 20), ("reflector-2", 21)] {
        let mut env = Routing::Isolated.to_env();
        env.extend(routes_env(&reflector_routes));
        lab.start(ContainerSpec {
            name: name.into(),
            image: image.clone(),
            cmd: strings(&["probe", "reflect", "--listen", "::"]),
            env,
            attach: vec![Attach {
                network: "internet".into(),
                ip: ip(&internet, n),
            }],
            net_admin: true,
            ..Default::default()
        })
        .await
        .unwrap();
        lab.follow(name, tx.clone()).unwrap();
        timeline
            .wait_line(name, "reflector_ready", Duration::from_secs(30))
            .await
            .unwrap();
    }
    for ((p, ..), lan) in CASES_V6.iter().zip(&lans) {
        let mut env = Routing::Isolated.to_env();
        env.extend(routes_env(&[Route6 {
            to: LAB_RANGE6,
            via: v6(lan, 254),
        }]));
        lab.start(ContainerSpec {
            name: format!("host-{p}"),
            image: image.clone(),
            cmd: strings(&["sleep", "infinity"]),
            env,
            attach: vec![Attach {
                network: format!("lan-{p}"),
                ip: ip(lan, 10),
            }],
            net_admin: true,
            ..Default::default()
        })
        .await
        .unwrap();
    }

    let r1 = v6(&internet, 20).to_string();
    let r2 = v6(&internet, 21).to_string();
    let mut failures = Vec::new();
    for ((p, profile, policy), lan) in CASES_V6.into_iter().zip(&lans) {
        let host = format!("host-{p}");
        let out = lab
            .exec(
                &host,
                &["probe", "measure", "--reflector", &r1, "--reflector", &r2],
            )
            .await
            .unwrap();
        let mut seen = 0;
        for (line, probe) in out
            .stdout
            .lines()
            .filter_map(|l| Some((l, parse_line::<NatProbe>(l)?)))
        {
            seen += 1;
            if probe.local.ip() != std::net::IpAddr::V6(v6(lan, 10)) {
                failures.push(format!(
                    "{p}/{}: measured from {}, not over IPv6: {line}",
                    probe.proto, probe.local
                ));
            }
            let want = Verdict::expected_ipv6(policy, profile, probe.proto);
            if probe.verdict != want {
                failures.push(format!(
                    "{p}/{}: measured {:?}, declared {want:?}: {line}",
                    probe.proto, probe.verdict
                ));
            }
        }
        if out.code != 0 || seen != 2 {
            failures.push(format!(
                "{p}: probe exit {} with {seen} reports\n{}{}",
                out.code, out.stdout, out.stderr
            ));
        }
    }

    // No container has a route out of the lab, over IPv4 or IPv6 (nor to the host's fd00::/64).
    let mut nodes: Vec<String> = Vec::new();
    for (p, ..) in CASES_V6 {
        nodes.extend([format!("router-{p}"), format!("host-{p}")]);
    }
    nodes.extend(["reflector-1".to_string(), "reflector-2".to_string()]);
    for n in &nodes {
        for dest in p2plab::engine::run::OUTSIDE {
            let out = lab.exec(n, &["ip", "route", "get", dest]).await.unwrap();
            if out.code == 0 {
                failures.push(format!(
                    "{n} has a route out of the lab to {dest}: {}",
                    out.stdout.trim()
                ));
            }
        }
    }

    lab.teardown().await.unwrap();
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
