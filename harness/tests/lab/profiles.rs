//! Every NAT profile, measured: a LAN host runs `probe measure` against two reflectors on the
//! lab's internet, for UDP and TCP, and what it measures must be what the profile declares
//! (RFC 4787 mapping and filtering). Needs a Docker engine (`P2PLAB_SKIP_DOCKER=1` skips).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{net::Ipv4Addr, time::Duration};

use ipnet::Ipv4Net;
use p2plab::{
    plan,
    testing::{engine_or_skip, image, ip, strings, Watch},
    Attach, ContainerSpec, Lab,
};

/// What a profile declares, per protocol: (nat, mapping, filtering).
fn declared(profile: &str) -> (bool, &'static str, &'static str) {
    match profile {
        "open" => (true, "endpoint-independent", "endpoint-independent"),
        // upnp: a home NAT plus an IGD; the probe maps nothing, so it measures as home.
        "home" | "port-forward" | "upnp" | "cgnat" => (true, "endpoint-independent", "address-and-port-dependent"),
        "strict" => (true, "endpoint-dependent", "address-and-port-dependent"),
        "routed" => (false, "endpoint-independent", "endpoint-independent"),
        other => panic!("unknown profile {other}"),
    }
}

struct Router {
    name: String,
    nat: &'static str,
    wan: (String, Ipv4Addr),
    lan: (String, Ipv4Net),
    uplink_gw: Option<Ipv4Addr>,
    forward: Option<String>,
}

#[tokio::test(flavor = "multi_thread")]
async fn every_nat_profile_measures_as_declared() {
    let _machine = p2plab::testing::whole_machine().await;
    let Some(engine) = engine_or_skip("nat_profiles").await else { return };
    let image = image().await;
    let mut lab = Lab::new(engine, "nat-profiles");
    let internet = lab.allocate_network("internet", plan::internet_pool()).await.unwrap();
    let profiles = ["open", "home", "strict", "port-forward", "routed", "cgnat", "upnp"];
    let mut lans = Vec::new();
    for p in profiles {
        lans.push(lab.allocate_network(&format!("lan-{p}"), plan::lan_pool()).await.unwrap());
    }
    let carrier = lab.allocate_network("carrier", plan::shared_pool()).await.unwrap();

    // Routers: one per profile; cgnat is a home router whose uplink is a carrier's home NAT.
    let mut routers = Vec::new();
    for (i, (p, lan)) in profiles.iter().zip(&lans).enumerate() {
        let (nat, wan, uplink_gw) = match *p {
            "cgnat" => ("home", ("carrier".to_string(), ip(&carrier, 2)), Some(ip(&carrier, 254))),
            "port-forward" => ("port-forward", ("internet".to_string(), ip(&internet, 2 + i as u32)), None),
            other => (
                match other {
                    "open" => "open",
                    "home" => "home",
                    "strict" => "strict",
                    "upnp" => "upnp",
                    _ => "routed",
                },
                ("internet".to_string(), ip(&internet, 2 + i as u32)),
                None,
            ),
        };
        routers.push(Router {
            name: format!("router-{p}"),
            nat,
            wan,
            lan: (format!("lan-{p}"), *lan),
            uplink_gw,
            forward: (*p == "port-forward").then(|| {
                let h = ip(lan, 10);
                format!("tcp:4001:{h}:4001,udp:4001:{h}:4001")
            }),
        });
    }
    routers.push(Router {
        name: "router-carrier".into(),
        nat: "home",
        wan: ("internet".into(), ip(&internet, 50)),
        lan: ("carrier".into(), carrier),
        uplink_gw: None,
        forward: None,
    });

    let (mut timeline, tx) = Watch::new();
    for r in &routers {
        let mut env = vec![
            ("P2PLAB_NAT".to_string(), r.nat.to_string()),
            ("P2PLAB_LAN_SUBNET".to_string(), r.lan.1.to_string()),
            ("P2PLAB_WAN_IP".to_string(), r.wan.1.to_string()),
        ];
        if let Some(gw) = r.uplink_gw {
            env.push(("P2PLAB_UPLINK_GW".into(), gw.to_string()));
        }
        if let Some(f) = &r.forward {
            env.push(("P2PLAB_FORWARD".into(), f.clone()));
        }
        lab.start(ContainerSpec {
            name: r.name.clone(),
            image: image.clone(),
            cmd: strings(&["p2plab-router"]),
            env,
            attach: vec![
                Attach { network: r.wan.0.clone(), ip: r.wan.1 },
                Attach { network: r.lan.0.clone(), ip: ip(&r.lan.1, 254) },
            ],
            net_admin: true,
            sysctls: vec![("net.ipv4.ip_forward".into(), "1".into())],
            tun: false,
        })
        .await
        .unwrap();
        lab.follow(&r.name, tx.clone()).unwrap();
    }
    for r in &routers {
        if let Err(e) = timeline.wait_line(&r.name, "router_ready", Duration::from_secs(30)).await {
            let err = lab.stderr_tail(&r.name, 20).await;
            lab.teardown().await.ok();
            panic!("{e}\n{err}");
        }
    }

    // Two reflectors on the internet; they reach the routed LAN through its router.
    let routed = profiles.iter().position(|p| *p == "routed").unwrap();
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
            attach: vec![Attach { network: "internet".into(), ip: ip(&internet, n) }],
            net_admin: true,
            ..Default::default()
        })
        .await
        .unwrap();
        lab.follow(name, tx.clone()).unwrap();
        timeline.wait_line(name, "reflector_ready", Duration::from_secs(30)).await.unwrap();
    }

    // A host on every LAN; the port-forward host serves a reflector on the forwarded port.
    for (p, lan) in profiles.iter().zip(&lans) {
        let cmd = if *p == "port-forward" {
            strings(&["probe", "reflect", "--port", "4001", "--alt-port", "4002"])
        } else {
            strings(&["sleep", "infinity"])
        };
        lab.start(ContainerSpec {
            name: format!("host-{p}"),
            image: image.clone(),
            cmd,
            env: vec![("P2PLAB_GATEWAY".into(), ip(lan, 254).to_string())],
            attach: vec![Attach { network: format!("lan-{p}"), ip: ip(lan, 10) }],
            net_admin: true,
            ..Default::default()
        })
        .await
        .unwrap();
    }

    let r1 = ip(&internet, 20).to_string();
    let r2 = ip(&internet, 21).to_string();
    let mut failures = Vec::new();
    for p in profiles {
        let host = format!("host-{p}");
        let out = lab
            .exec(&host, &["probe", "measure", "--reflector", &r1, "--reflector", &r2])
            .await
            .unwrap();
        let (nat, mapping, filtering) = declared(p);
        let mut seen = 0;
        for line in out.stdout.lines() {
            let v: serde_json::Value = match serde_json::from_str(line) {
                Ok(v) => v,
                Err(_) => continue,
            };
            seen += 1;
            let got = (v["nat"].as_bool(), v["mapping"].as_str(), v["filtering"].as_str());
            if got != (Some(nat), Some(mapping), Some(filtering)) {
                failures.push(format!("{p}/{}: measured {got:?}, declared {:?}: {line}", v["proto"], (nat, mapping, filtering)));
            }
        }
        if out.code != 0 || seen != 2 {
            failures.push(format!("{p}: probe exit {} with {seen} reports\n{}{}", out.code, out.stdout, out.stderr));
        }
    }

    // port-forward: an unsolicited connection from the internet to the forwarded port reaches
    // the LAN host, which sees the caller's own address.
    let pf = profiles.iter().position(|p| *p == "port-forward").unwrap();
    let wan = ip(&internet, 2 + pf as u32);
    let script = format!(
        "import socket\ns=socket.create_connection(('{wan}',4001),3)\ns.sendall(b'whoami\\n')\nprint(s.recv(200).decode().strip())"
    );
    let out = lab.exec("reflector-1", &["python3", "-c", &script]).await.unwrap();
    if !out.stdout.contains(&format!("addr {r1}:")) {
        failures.push(format!("port-forward: inbound TCP to {wan}:4001 got {:?} {:?}", out.stdout, out.stderr));
    }

    // No container has a route out of the lab.
    let mut nodes: Vec<String> = routers.iter().map(|r| r.name.clone()).collect();
    nodes.extend(profiles.iter().map(|p| format!("host-{p}")));
    nodes.extend(["reflector-1".to_string(), "reflector-2".to_string()]);
    for n in &nodes {
        let out = lab.exec(n, &["ip", "route", "get", "1.1.1.1"]).await.unwrap();
        if out.code == 0 {
            failures.push(format!("{n} has a route out of the lab: {}", out.stdout.trim()));
        }
    }

    lab.teardown().await.unwrap();
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
