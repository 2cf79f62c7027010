//! The topology files' parser and validator, file by file and error by error.

#![allow(clippy::unwrap_used, clippy::expect_used)]
use super::*;

const HOME: &str = r#"
name: home-nat
segments: { internet: {}, lan-a: { nat: home }, lan-b: { nat: home } }
nodes:
  boot:  { role: monitor,  segment: internet }
  alice: { role: listener, segment: lan-a, namespace: demo }
  bob:   { role: dialer,   segment: lan-b, namespace: demo, count: 50 }
faults: [ { after: { direct: [bob, alice] }, kill: boot } ]
expect:
  - { discovered: [bob, alice], within: 10s }
  - { direct: [bob, alice], within: 15s }
  - { delivered: { from: bob, to: alice, count: 50, lost: 0 } }
"#;

fn err(yaml: &str) -> TopologyError {
    parse("t.yaml", yaml).expect_err("should fail")
}

#[test]
fn the_example_parses() {
    let t = parse("t.yaml", HOME).unwrap();
    assert_eq!(t.name, "home-nat");
    assert_eq!(t.nodes.len(), 3);
    assert_eq!(
        t.segment("lan-a").unwrap().nat.as_ref().unwrap().uplink,
        "internet"
    );
    assert_eq!(t.expect.len(), 3);
    assert_eq!(t.expect[1].within, Some(Duration::from_secs(15)));
    assert!(matches!(
        &t.faults[0].trigger,
        Trigger::After {
            check: Check::Connected {
                path: Path::Direct,
                ..
            },
            ..
        }
    ));
    assert_eq!(t.faults[0].action, Action::Kill("boot".into()));
}

#[test]
fn unknown_key_names_line_and_column() {
    let e = err("name: x\nsegments: { internet: {} }\nnodes:\n  boot: { role: monitor, segmnt: internet }\n");
    assert_eq!(e.line, 4, "{e}");
    assert!(e.message.contains("segmnt"), "{e}");
    assert!(e.to_string().starts_with("t.yaml:4:"), "{e}");
}

#[test]
fn missing_key_is_an_error() {
    let e = err("name: x\nsegments: { internet: {} }\nnodes:\n  boot: { role: monitor }\n");
    assert!(e.message.contains("segment"), "{e}");
    assert!(e.line >= 4, "{e}");
}

#[test]
fn unknown_segment_reference_points_at_it() {
    let e = err("name: x\nsegments: { internet: {} }\nnodes:\n  boot: { role: monitor, segment: internt }\n");
    assert_eq!((e.line, e.column), (4, 35), "{e}");
    assert!(e.message.contains("internt"));
    assert!(e.hint.as_deref().unwrap().contains("internet"));
}

#[test]
fn unknown_node_in_expectation() {
    let e = err(&HOME.replace("[bob, alice], within: 10s", "[bob, alcie], within: 10s"));
    assert_eq!(e.line, 10, "{e}");
    assert!(e.message.contains("alcie"));
}

#[test]
fn duplicate_name_is_an_error() {
    let e = err("name: x\nsegments: { internet: {} }\nnodes:\n  boot: { role: monitor, segment: internet }\n  boot: { role: monitor, segment: internet }\n");
    assert_eq!(e.line, 5, "{e}");
}

#[test]
fn overlapping_subnets() {
    let e = err("name: x\nsegments:\n  internet: { subnet: 198.18.0.0/16 }\n  lan: { nat: home, subnet: 198.18.5.0/24 }\nnodes:\n  boot: { role: monitor, segment: internet }\n");
    assert!(e.message.contains("overlaps"), "{e}");
    assert_eq!(e.line, 3);
}

#[test]
fn test_net_subnets_are_refused() {
    let e = err("name: x\nsegments:\n  internet: { subnet: 203.0.113.0/24 }\nnodes:\n  boot: { role: monitor, segment: internet }\n");
    assert!(e.message.contains("reserved"), "{e}");
}

#[test]
fn uplink_cycle() {
    let e = err("name: x\nsegments:\n  internet: {}\n  a: { nat: home, uplink: b }\n  b: { nat: home, uplink: a }\nnodes:\n  boot: { role: monitor, segment: internet }\n");
    assert!(e.message.contains("cycle"), "{e}");
    assert!(e.message.contains("a → b → a"), "{e}");
}

#[test]
fn cgnat_stacks_and_orders_uplinks_first() {
    let t = parse(
        "t.yaml",
        "name: x\nsegments:\n  lan: { nat: home, uplink: carrier }\n  carrier: { nat: home }\n  internet: {}\nnodes:\n  boot: { role: monitor, segment: internet }\n  p: { role: listener, segment: lan }\n",
    )
    .unwrap();
    let order: Vec<&str> = t
        .segments_uplink_first()
        .iter()
        .map(|s| s.name.as_str())
        .collect();
    let pos = |n: &str| order.iter().position(|x| *x == n).unwrap();
    assert!(pos("internet") < pos("carrier") && pos("carrier") < pos("lan"));
    assert_eq!(t.nat_chain("lan"), vec![NatProfile::Home, NatProfile::Home]);
    assert!(t.is_uplink_of_nat("carrier"));
}

#[test]
fn replicas_expand_and_expectations_multiply() {
    let t = parse(
        "t.yaml",
        "name: x\nsegments: { internet: {} }\nnodes:\n  boot: { role: monitor, segment: internet }\n  l: { role: listener, segment: internet, replicas: 2 }\n  d: { role: dialer, segment: internet, replicas: 3, count: 5 }\nexpect:\n  - { discovered: [d, l] }\n",
    )
    .unwrap();
    assert_eq!(t.groups["l"], vec!["l-1", "l-2"]);
    assert_eq!(t.expect.len(), 6);
}

#[test]
fn a_fault_does_one_thing() {
    let e = err(&HOME.replace("kill: boot }", "kill: boot, pause: alice }"));
    assert!(e.message.contains("exactly one thing"), "{e}");
    assert_eq!(e.line, 8);
}

#[test]
fn bad_duration() {
    let e = err(&HOME.replace("within: 10s", "within: 10 parsecs"));
    assert!(e.message.contains("not a duration"), "{e}");
    assert_eq!(e.line, 10);
}

#[test]
fn durations() {
    assert_eq!(parse_duration("500ms"), Some(Duration::from_millis(500)));
    assert_eq!(parse_duration("1.5s"), Some(Duration::from_millis(1500)));
    assert_eq!(parse_duration("2m"), Some(Duration::from_secs(120)));
    assert_eq!(parse_duration("5"), None);
    assert_eq!(parse_duration("-1s"), None);
    assert_eq!(parse_duration("s"), None);
}

#[test]
fn partition_groups_and_for() {
    let t = parse("t.yaml", &HOME.replace("faults: [ { after: { direct: [bob, alice] }, kill: boot } ]", "faults:\n  - { at: 10s, partition: lan-a, for: 20s }\n  - { at: 5s, partition: [[alice, boot], [boot, bob]] }")).unwrap();
    assert_eq!(
        t.faults[0].action,
        Action::Partition(Target::Segment("lan-a".into()))
    );
    assert_eq!(t.faults[0].duration, Some(Duration::from_secs(20)));
    assert!(matches!(&t.faults[1].action, Action::PartitionGroups(g) if g.len() == 2));
}

#[test]
fn port_forward_needs_a_node_on_its_lan() {
    let e = err("name: x\nsegments:\n  internet: {}\n  lan: { nat: port-forward, forward: [{ port: 4001, to: boot }] }\nnodes:\n  boot: { role: monitor, segment: internet }\n");
    assert!(e.message.contains("not on this router's LAN"), "{e}");
}

const IDENTITY: &str = "name: x\nsegments: { internet: {} }\nnodes:\n  boot: { role: monitor, segment: internet }\n  seeded: { role: monitor, segment: internet, seed: 3 }\n  alice: { role: listener, segment: internet }\nfaults:\n";

#[test]
fn new_identity_on_start_and_restart() {
    let t = parse("t.yaml", &format!("{IDENTITY}  - {{ at: 5s, restart: boot, new_identity: true }}\n  - {{ at: 9s, stop: boot }}\n  - {{ at: 12s, start: boot, new_identity: true }}\n  - {{ at: 15s, restart: boot, new_identity: false }}\n  - {{ at: 20s, kill: boot, for: 2s }}\n")).unwrap();
    assert_eq!(
        t.faults[0].action,
        Action::Restart {
            node: "boot".into(),
            new_identity: true
        }
    );
    assert_eq!(
        t.faults[2].action,
        Action::Start {
            node: "boot".into(),
            new_identity: true
        }
    );
    assert_eq!(
        t.faults[3].action,
        Action::Restart {
            node: "boot".into(),
            new_identity: false
        }
    );
    assert_eq!(
        t.faults[0].action.label(),
        "restart boot with a new identity"
    );
    assert_eq!(t.faults[3].action.label(), "restart boot");
    // a kill undone after a while comes back with the identity it had
    assert_eq!(
        t.faults[4].action.undo(),
        Some(Action::Start {
            node: "boot".into(),
            new_identity: false
        })
    );
    // the key file: unseeded monitors only
    assert_eq!(t.node("boot").unwrap().key_file(), Some(KEY_FILE));
    assert_eq!(t.node("seeded").unwrap().key_file(), None);
    assert_eq!(t.node("alice").unwrap().key_file(), None);
}

#[test]
fn new_identity_on_a_seeded_node_is_an_error_at_its_place() {
    let e = err(&format!(
        "{IDENTITY}  - {{ at: 5s, restart: seeded, new_identity: true }}\n"
    ));
    assert_eq!((e.line, e.column), (8, 46), "{e}");
    assert!(e.message.contains("`seeded` has a `seed`"), "{e}");
    assert!(
        e.to_string().starts_with("t.yaml:8:46: new_identity:"),
        "{e}"
    );
    assert!(e.hint.as_deref().unwrap().contains("drop `seed`"), "{e}");
}

#[test]
fn new_identity_needs_start_or_restart_of_a_monitor_with_a_key_file() {
    let e = err(&format!(
        "{IDENTITY}  - {{ at: 5s, kill: boot, new_identity: true }}\n"
    ));
    assert!(
        e.message.contains("only `start` and `restart`") && e.message.contains("kill boot"),
        "{e}"
    );
    assert_eq!(e.line, 8);
    let e = err(&format!(
        "{IDENTITY}  - {{ at: 5s, stop: boot, for: 3s, new_identity: true }}\n"
    ));
    assert!(e.message.contains("only `start` and `restart`"), "{e}");
    let e = err(&format!(
        "{IDENTITY}  - {{ at: 5s, restart: alice, new_identity: true }}\n"
    ));
    assert!(
        e.message.contains("`alice` is a listener")
            && e.message.contains("new identity on every start already"),
        "{e}"
    );
    let e = err(&(IDENTITY.replace(
        "boot: { role: monitor, segment: internet }",
        "boot: { role: monitor, segment: internet, args: [\"--seed=4\"] }",
    ) + "  - { at: 5s, restart: boot, new_identity: true }\n"));
    assert!(e.message.contains("in `args`"), "{e}");
    let e = err(&format!(
        "{IDENTITY}  - {{ at: 5s, restart: boot, new_identity: yes-please }}\n"
    ));
    assert_eq!(e.line, 8, "{e}");
}

#[test]
fn a_node_may_start_later_by_a_fault() {
    let t = parse(
        "t.yaml",
        "name: x\nsegments: { internet: {} }\nnodes:\n  boot: { role: monitor, segment: internet, start: false }\n  alice: { role: listener, segment: internet, start: true }\nfaults:\n  - { at: 10s, start: boot }\n",
    )
    .unwrap();
    assert!(!t.node("boot").unwrap().start_with_lab);
    assert!(t.node("alice").unwrap().start_with_lab);
    // a node that nothing starts
    let e = err("name: x\nsegments: { internet: {} }\nnodes:\n  boot: { role: monitor, segment: internet }\n  alice: { role: listener, segment: internet, start: false }\nfaults:\n  - { at: 10s, restart: alice }\n");
    assert_eq!((e.line, e.column), (5, 54), "{e}");
    assert!(
        e.message
            .contains("`alice` has `start: false` and no fault starts it"),
        "{e}"
    );
    assert!(e.hint.as_deref().unwrap().contains("start: alice"), "{e}");
    // replicas: each one needs its start
    let e = err("name: x\nsegments: { internet: {} }\nnodes:\n  boot: { role: monitor, segment: internet }\n  p: { role: listener, segment: internet, replicas: 2, start: false }\nfaults:\n  - { at: 10s, start: p-1 }\n");
    assert!(e.message.contains("`p-2`"), "{e}");
}

#[test]
fn garbage_does_not_panic() {
    for y in [
        "",
        ":",
        "- - -",
        "name: [",
        "{{{{",
        "name: x\nsegments: 5\n",
        "\u{0}",
        "name: x\nnodes: {a: {role: monitor, segment: [1]}}\n",
    ] {
        let _ = parse("t.yaml", y);
    }
}

#[test]
fn the_uplink_chain_is_walked_once_for_everyone() {
    let t = parse(
        "t.yaml",
        "name: t\nsegments:\n  internet: {}\n  carrier: { nat: home }\n  lan: { nat: strict, uplink: carrier }\nnodes:\n  boot: { role: monitor, segment: internet }\n  a: { role: listener, segment: lan }\n",
    )
    .unwrap();
    let names: Vec<&str> = t.uplinks("lan").iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["lan", "carrier", "internet"]);
    assert_eq!(
        t.public_of("lan").map(|s| s.name.as_str()),
        Some("internet")
    );
    assert_eq!(t.nat_chain("lan"), [NatProfile::Strict, NatProfile::Home]);
    assert_eq!(t.routers_up_from("lan"), ["router-lan", "router-carrier"]);
    assert!(t.routers_up_from("internet").is_empty());
    assert!(t.uplinks("nowhere").is_empty());
}

#[test]
fn hairpin_is_a_router_option_where_a_mapping_exists() {
    let t = parse(
        "t.yaml",
        &HOME.replace(
            "lan-a: { nat: home }",
            "lan-a: { nat: home, hairpin: true }",
        ),
    )
    .unwrap();
    assert!(t.segment("lan-a").unwrap().nat.as_ref().unwrap().hairpin);
    assert!(
        !t.segment("lan-b").unwrap().nat.as_ref().unwrap().hairpin,
        "off by default"
    );
    let e = err(&HOME.replace(
        "lan-a: { nat: home }",
        "lan-a: { nat: strict, hairpin: true }",
    ));
    assert!(
        e.message
            .contains("hairpin: a `strict` router has no endpoint-independent mapping"),
        "{e}"
    );
    assert_eq!((e.line, e.column), (3, 58), "at the value");
    let e = err(&HOME.replace("internet: {}", "internet: { hairpin: false }"));
    assert!(e.message.contains("`hairpin` needs a router"), "{e}");
    let e = err(&HOME.replace(
        "lan-a: { nat: home }",
        "lan-a: { nat: home, hairpin: yes please }",
    ));
    assert_eq!(e.line, 3, "{e}");
}

#[test]
fn a_tcp_allow_list_is_an_option_of_udp_blocked_with_each_port_once() {
    let with = |seg: &str| HOME.replace("lan-a: { nat: home }", seg);
    let t = parse(
        "t.yaml",
        &with("lan-a: { nat: udp-blocked, tcp_ports: [443, 51820] }"),
    )
    .unwrap();
    assert_eq!(
        t.segment("lan-a").unwrap().nat.as_ref().unwrap().tcp_ports,
        [443, 51820]
    );
    assert!(t
        .segment("lan-b")
        .unwrap()
        .nat
        .as_ref()
        .unwrap()
        .tcp_ports
        .is_empty());
    for (seg, want) in [
        (
            "lan-a: { nat: home, tcp_ports: [443] }",
            "tcp_ports: a `home` router lets TCP out to every port",
        ),
        (
            "lan-a: { nat: udp-blocked, tcp_ports: [] }",
            "tcp_ports: the list is empty",
        ),
        (
            "lan-a: { nat: udp-blocked, tcp_ports: [0] }",
            "tcp_ports: port 0 cannot be dialed",
        ),
        (
            "lan-a: { nat: udp-blocked, tcp_ports: [443, 80, 443] }",
            "tcp_ports: port 443 is listed twice",
        ),
    ] {
        let e = err(&with(seg));
        assert!(e.message.contains(want), "{seg}: {e}");
        assert_eq!(e.line, 3, "{seg}: {e}");
    }
    let e = err(&with("lan-a: { nat: udp-blocked, tcp_ports: [https] }"));
    assert_eq!(e.line, 3, "{e}");
    let e = err(&HOME.replace("internet: {}", "internet: { tcp_ports: [443] }"));
    assert!(e.message.contains("`tcp_ports` needs a router"), "{e}");
}

#[test]
fn a_segment_says_its_ip_families() {
    let t = parse(
        "t.yaml",
        &HOME.replace("internet: {}", "internet: { family: dual }"),
    )
    .unwrap();
    assert_eq!(t.segment("internet").unwrap().family, Family::Dual);
    assert_eq!(
        t.segment("lan-a").unwrap().family,
        Family::Ipv4,
        "IPv4 by default"
    );
    let e = err(&HOME.replace("internet: {}", "internet: { family: ip7 }"));
    assert!(
        e.message
            .contains("family: `ip7` is not ipv4, dual or ipv6"),
        "{e}"
    );
    // a LAN with IPv6: its router firewalls it by default, and its uplink must have IPv6
    let dual_lan = HOME.replace("lan-a: { nat: home }", "lan-a: { nat: home, family: dual }");
    let e = err(&dual_lan);
    assert!(
        e.message
            .contains("segment `lan-a` has IPv6, and its uplink `internet` carries none"),
        "{e}"
    );
    let both = dual_lan.replace("internet: {}", "internet: { family: dual }");
    // stacked: a LAN with IPv6 behind a carrier's LAN with IPv6, not behind one without
    let stacked = |carrier: &str| {
        both.replace(
            "lan-a: { nat: home, family: dual }",
            &format!("carrier: {carrier}, lan-a: {{ nat: home, family: dual, uplink: carrier }}"),
        )
    };
    parse("t.yaml", &stacked("{ nat: home, family: dual }")).unwrap();
    let e = err(&stacked("{ nat: home }"));
    assert!(
        e.message
            .contains("segment `lan-a` has IPv6, and its uplink `carrier` carries none"),
        "{e}"
    );
    let t = parse("t.yaml", &both).unwrap();
    let nat = t.segment("lan-a").unwrap().nat.clone().unwrap();
    assert_eq!(nat.ipv6, Some(Ipv6Policy::Firewall));
    let t = parse(
        "t.yaml",
        &both.replace("home, family: dual }", "home, family: dual, ipv6: routed }"),
    )
    .unwrap();
    assert_eq!(
        t.segment("lan-a").unwrap().nat.clone().unwrap().ipv6,
        Some(Ipv6Policy::Routed)
    );
    let e = err(&both.replace("home, family: dual }", "home, family: dual, ipv6: nat66 }"));
    assert!(
        e.message
            .contains("ipv6: `nat66` is not firewall or routed"),
        "{e}"
    );
    let e = err(&HOME.replace(
        "lan-a: { nat: home }",
        "lan-a: { nat: home, ipv6: firewall }",
    ));
    assert!(
        e.message.contains("ipv6: the LAN `lan-a` has no IPv6"),
        "{e}"
    );
    // a peer must share a family with a monitor
    let six = "name: t\nsegments: { v4: {}, v6: { family: ipv6 } }\nnodes:\n  boot: { role: monitor, segment: v4 }\n  a: { role: listener, segment: v6 }\n";
    let e = err(six);
    assert!(
        e.message
            .contains("listener `a` has only IPv6 and no monitor has it"),
        "{e}"
    );
    assert_eq!(e.line, 5);
    assert!(parse("t.yaml", &six.replace("segment: v4 }", "segment: v6 }")).is_ok());
}

#[test]
fn every_repeats_a_fault_until_its_end_or_the_timeout() {
    let base = "name: t\ntimeout: 5m\nsegments: { internet: {}, lan-a: { nat: home } }\nnodes:\n  boot: { role: monitor, segment: internet }\n  alice: { role: listener, segment: lan-a, seed: 1 }\nfaults:\n";
    let t = parse("t.yaml", &format!("{base}  - {{ at: 1m, every: 1m, restart: alice }}\n  - {{ at: 30s, every: 2m, until: 3m, flush_nat: lan-a }}\n")).unwrap();
    let at: Vec<u64> = t
        .faults
        .iter()
        .map(|f| match f.trigger {
            Trigger::At(d) => d.as_secs(),
            _ => panic!("{f:?}"),
        })
        .collect();
    // up to the last one before the timeout; then 30 s and 2 min 30 s
    assert_eq!(at, [60, 120, 180, 240, 30, 150]);
    let e = err(&format!(
        "{base}  - {{ at: 1m, every: 30s, partition: alice, for: 30s }}\n"
    ));
    assert!(e.to_string().contains("as long as its period"), "{e}");
    let e = err(&format!(
        "{base}  - {{ at: 1m, until: 2m, restart: alice }}\n"
    ));
    assert!(e.to_string().contains("until: only with `every`"), "{e}");
    let e = err(&format!(
        "{base}  - {{ after: {{ started: alice }}, every: 1m, restart: alice }}\n"
    ));
    assert!(e.to_string().contains("only with `at`"), "{e}");
    let e = err(&format!(
        "{base}  - {{ at: 1m, every: 1m, until: 5m, restart: alice }}\n"
    ));
    assert!(
        e.to_string().contains("until: at or after the timeout"),
        "{e}"
    );
}

#[test]
fn flat_needs_resources_and_a_known_metric() {
    let base = "name: t\nsegments: { internet: {} }\nnodes:\n  boot: { role: monitor, segment: internet }\nexpect:\n  - { flat: { node: boot, metric: M, after: 1m, growth: 10% } }\n";
    let e = err(&base.replace('M', "rss_kb"));
    assert!(e.to_string().contains("report no resources"), "{e}");
    let with = format!("resources: 10s\n{base}");
    let e = err(&with.replace("metric: M", "metric: heap"));
    assert!(e.to_string().contains("`heap` is not a figure"), "{e}");
    let t = parse("t.yaml", &with.replace("metric: M", "metric: fds")).unwrap();
    assert_eq!(t.resources, Some(Duration::from_secs(10)));
    assert!(matches!(
        t.expect[0].check,
        Check::Flat {
            metric: Metric::Fds,
            ..
        }
    ));
    let e = err(&with
        .replace("metric: M", "metric: fds")
        .replace("10%", "ten"));
    assert!(e.to_string().contains("not a percentage"), "{e}");
}

#[test]
fn exec_runs_a_program_beside_a_node_and_names_nodes_by_address() {
    let base = "name: t\nsegments: { internet: {} }\nnodes:\n  boot: { role: monitor, segment: internet }\n  eve: { role: listener, segment: internet }\nfaults:\n";
    let t = parse(
        "t.yaml",
        &format!("{base}  - {{ at: 5s, exec: {{ node: eve, cmd: [bench, flood, --target, \"/ip4/{{addr:boot}}/tcp/51820\"] }} }}\n"),
    )
    .unwrap();
    assert!(
        matches!(&t.faults[0].action, Action::Exec { node, cmd } if node == "eve" && cmd.len() == 4)
    );
    let e = err(&format!(
        "{base}  - {{ at: 5s, exec: {{ node: eve, cmd: [bench, \"{{addr:nobody}}\"] }} }}\n"
    ));
    assert!(
        e.to_string().contains("`{addr:nobody}` names no node"),
        "{e}"
    );
    let e = err(&format!(
        "{base}  - {{ at: 5s, exec: {{ node: eve, cmd: [] }} }}\n"
    ));
    assert!(e.to_string().contains("names no program"), "{e}");
    let e = err(&format!(
        "{base}  - {{ at: 5s, exec: {{ node: nobody, cmd: [ls] }} }}\n"
    ));
    assert!(e.to_string().contains("no node named `nobody`"), "{e}");
}

#[test]
fn engine_places_on_a_swarm_and_is_checked_here() {
    let t = parse(
        "t.yaml",
        &HOME
            .replace("lan-a: { nat: home }", "lan-a: { nat: home, engine: 2 }")
            .replace(
                "segment: lan-a, namespace",
                "segment: lan-a, engine: 3, namespace",
            ),
    )
    .unwrap();
    assert_eq!(t.node("alice").unwrap().engine, Some(3));
    assert_eq!(t.segment("lan-a").unwrap().engine, Some(2));
    assert_eq!(t.node("bob").unwrap().engine, None);
    let e = err(&HOME.replace(
        "segment: lan-a, namespace",
        "segment: lan-a, engine: 0, namespace",
    ));
    assert!(
        e.message.contains("engine: 0: engines are numbered from 1"),
        "{e}"
    );
    assert_eq!(e.line, 6, "{e}");
    let e = err(&HOME.replace("internet: {}", "internet: { engine: 1 }"));
    assert!(e.message.contains("`engine` needs a router"), "{e}");
    let e = err(&HOME.replace(
        "segment: lan-a, namespace",
        "segment: lan-a, engine: two, namespace",
    ));
    assert_eq!(e.line, 6, "{e}");
}
