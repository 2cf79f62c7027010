//! The shipped topologies (`topologies/*.yaml`), each run for real and judged: the same path as
//! `p2plab run`. Needs a Docker engine (`P2PLAB_SKIP_DOCKER=1` skips); the image is built once.
//! A failed run prints its verdicts and every node's last stderr lines; its report (events,
//! results, junit, summary, html) is left in `target/p2plab-reports/<name>`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;

use p2plab::{model as topology, testing::image, topology_run, TopologyRun};

fn file(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../topologies")
        .join(name)
}

/// Runs one shipped topology the way a user's own test would ([`TopologyRun`]), with the image
/// `cargo test` has built.
async fn run_topology(name: &str) -> Option<TopologyRun> {
    // Two small labs at a time; the NAT matrix (43 containers) runs alone.
    let _slot = match name {
        "nat-matrix.yaml" => p2plab::testing::whole_machine().await,
        _ => p2plab::testing::lab_slot().await,
    };
    let builder = TopologyRun::builder(file(name));
    let builder = match std::env::var("P2PLAB_SKIP_DOCKER").is_ok_and(|v| v == "1") {
        true => builder,
        false => builder.image(image().await),
    };
    match builder.run().await {
        Ok(run) => {
            run.assert_passed();
            eprintln!("{}", run.summary());
            Some(run)
        }
        Err(topology_run::Error::Skipped) => {
            eprintln!("{name}: skipped (P2PLAB_SKIP_DOCKER=1)");
            None
        }
        Err(e) => panic!("{name}: {e}"),
    }
}

#[test]
fn every_shipped_topology_validates() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../topologies");
    let mut n = 0;
    for e in std::fs::read_dir(&dir).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_some_and(|x| x == "yaml") {
            topology::load(&p).unwrap_or_else(|e| panic!("{}", e.render()));
            n += 1;
        }
    }
    assert!(n >= 15, "expected the 15 shipped topologies, found {n}");
}

#[tokio::test(flavor = "multi_thread")]
async fn seed_local() {
    run_topology("seed-local.yaml").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn home_nat() {
    run_topology("home-nat.yaml").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn strict_nat() {
    run_topology("strict-nat.yaml").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn nat_matrix() {
    run_topology("nat-matrix.yaml").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn seed_production() {
    run_topology("seed-production.yaml").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn partition() {
    run_topology("partition.yaml").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn multi_bootstrap() {
    run_topology("multi-bootstrap.yaml").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn port_forward() {
    run_topology("port-forward.yaml").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn faults() {
    let Some(run) = run_topology("faults.yaml").await else {
        return;
    };
    // The report as a person sees it: loaded in a real browser, its scripts run.
    let page = run.report_dir().join("index.html");
    let Some(dom) = p2plab::testing::browser_dom(&page).unwrap_or_else(|e| panic!("{e}")) else {
        return;
    };
    let count = |needle: &str| dom.matches(needle).count();
    let pairs = run.result().metrics.len();
    assert!(pairs > 0, "no pair in {}", page.display());
    assert!(
        count(r#"<svg class="paths""#) == 1 && count(r#"class="lane""#) >= pairs,
        "no path lanes in {}",
        page.display()
    );
    assert!(
        count(r#"<svg class="rtt""#) == 1 && count(r#"<g class="rtt-pair""#) == pairs,
        "no RTT plot per pair in {}",
        page.display()
    );
    assert!(
        count("<circle") > pairs,
        "no round trips plotted in {}",
        page.display()
    );
    // a fault marker in the lanes and in every RTT panel
    assert!(
        count(r#"class="fault""#) >= run.result().faults.len() * (1 + pairs),
        "fault markers missing in {}",
        page.display()
    );
    // the timeline filter's script ran in the browser (it writes the row count)
    let written = std::fs::read_to_string(&page).unwrap();
    assert!(
        !written.contains(" rows</span>") && dom.contains(" rows</span>"),
        "the page's script did not run in {}",
        page.display()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn one_lan() {
    run_topology("one-lan.yaml").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn bootstrap_late() {
    run_topology("bootstrap-late.yaml").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn bootstrap_new_identity() {
    run_topology("bootstrap-new-identity.yaml").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn udp_blocked() {
    run_topology("udp-blocked.yaml").await;
}

/// Every connection of the IPv6-only lab is over IPv6, inside the lab's own prefix.
#[tokio::test(flavor = "multi_thread")]
async fn ipv6_only() {
    let Some(run) = run_topology("ipv6-only.yaml").await else {
        return;
    };
    let mut seen = 0;
    for l in run.events() {
        if let p2plab_contract::Event::Connected { remote_addr, .. } = &l.event {
            seen += 1;
            let addr = remote_addr.to_string();
            assert!(
                addr.starts_with("/ip6/fd70:"),
                "{}: a connection over {addr}",
                l.node
            );
        }
    }
    assert!(
        seen >= 8,
        "every peer connects to the monitor and each dialer to each listener: {seen} connections"
    );
}

/// Two peers behind dual-stack homes (IPv4 NAT + IPv6 firewall) go direct by a hole punch; every
/// ack names the IP family it came over, the report's pair figures say which family carried the
/// messages, and no container has a route out of the lab over either family.
#[tokio::test(flavor = "multi_thread")]
async fn dual_stack() {
    let Some(run) = run_topology("dual-stack.yaml").await else {
        return;
    };
    assert!(
        run.result().route_out.is_empty(),
        "{:?}",
        run.result().route_out
    );
    let mut direct_families = std::collections::BTreeSet::new();
    for l in run.events() {
        if let p2plab_contract::Event::MessageAcked { path, family, .. } = &l.event {
            let family = family.unwrap_or_else(|| panic!("{}: an ack without a family", l.node));
            if *path == p2plab_contract::Path::Direct {
                direct_families.insert(family);
            }
        }
    }
    assert!(
        !direct_families.is_empty(),
        "no ack came over a direct connection"
    );
    let summary = run.summary();
    eprintln!("direct acks over {direct_families:?}");
    let pair = std::fs::read_to_string(run.report_dir().join("summary.md")).unwrap();
    assert!(
        pair.contains("direct over ipv6") || pair.contains("direct over ipv4"),
        "the report names the family: {summary}\n{pair}"
    );
}

/// IPv6-only peers behind IPv6 firewalls: direct by an IPv6 hole punch; every peer connection is
/// over the lab's own IPv6 prefix and every ack came over IPv6.
#[tokio::test(flavor = "multi_thread")]
async fn ipv6_firewall() {
    let Some(run) = run_topology("ipv6-firewall.yaml").await else {
        return;
    };
    assert!(
        run.result().route_out.is_empty(),
        "{:?}",
        run.result().route_out
    );
    let (mut connections, mut acks) = (0, 0);
    for l in run.events() {
        match &l.event {
            p2plab_contract::Event::Connected { remote_addr, .. } if l.node != "boot" => {
                connections += 1;
                let addr = remote_addr.to_string();
                assert!(
                    addr.starts_with("/ip6/fd70:") || addr.starts_with("/p2p/"),
                    "{}: a connection over {addr}",
                    l.node
                );
            }
            p2plab_contract::Event::MessageAcked { family, .. } => {
                acks += 1;
                assert_eq!(*family, Some(p2plab_contract::IpFamily::Ipv6), "{}", l.node);
            }
            _ => {}
        }
    }
    assert!(
        connections >= 4 && acks == 60,
        "{connections} connections, {acks} acks"
    );
}
