//! Link impairments of a p2plab router (`p2plab-impair`, docker/impair.sh, with the `delayline`
//! NFQUEUE daemon): delay, loss and rate on the WAN interface, one direction (LAN -> internet).
//!
//! Lab: internet segment with host X (.10, no default route) and a `home` router (.2); the
//! router's LAN with host Y (.10, default route via the router's .254). The router starts with
//! `P2PLAB_RATE=1gbit` (the router.sh environment path: a tbf qdisc on the WAN interface).
//!
//! 1. delay: median `ping` RTT from Y to X, before and after `p2plab-impair <wan> --delay 50`;
//!    the increase must be 50 ms +- 5 ms (one-way delay: a round trip grows by it once).
//! 2. loss: `--delay 0 --loss 10`, 1,000 pings 2 ms apart; 10% +- 3% of them must be lost.
//! 3. bad values are refused with one line and exit 1; `--clear` removes everything.
//!
//! Needs a Docker engine (`P2PLAB_SKIP_DOCKER=1` skips). The figures are printed with eprintln.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{
    net::Ipv4Addr,
    time::{Duration, Instant},
};

use p2plab::{
    plan,
    testing::{engine_or_skip, image, ip, strings, Watch},
    Attach, ContainerSpec, Lab,
};

const SECS: fn(u64) -> Duration = Duration::from_secs;

/// RTTs in ms of the `time=... ms` lines of ping's output.
fn rtts(out: &str) -> Vec<f64> {
    out.lines()
        .filter_map(|l| l.split("time=").nth(1))
        .filter_map(|t| t.split_whitespace().next())
        .filter_map(|t| t.parse::<f64>().ok())
        .collect()
}

fn median(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    if v.is_empty() {
        return f64::NAN;
    }
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// (transmitted, received) from ping's summary line.
fn ping_counts(out: &str) -> Option<(u64, u64)> {
    let line = out.lines().find(|l| l.contains("packets transmitted"))?;
    let mut nums = line.split(',').map(|p| {
        p.split_whitespace()
            .next()
            .and_then(|n| n.parse::<u64>().ok())
    });
    Some((nums.next()??, nums.next()??))
}

struct Impair {
    lab: Lab,
    timeline: Watch,
    wan: String,
    x: Ipv4Addr,
}

impl Impair {
    async fn fail(&mut self, why: String) -> ! {
        let mut report = why;
        for n in ["router", "x", "y"] {
            report.push_str(&format!(
                "\n--- {n} stderr ---\n{}",
                self.lab.stderr_tail(n, 15).await
            ));
        }
        if let Ok(o) = self.lab.exec("router", &["sh", "-c", "nft list table inet p2plab_impair; tc qdisc show; cat /run/p2plab-delayline.*.log"]).await {
            report.push_str(&format!("\n--- router impairments ---\n{}{}", o.stdout, o.stderr));
        }
        for l in &self.timeline.other {
            report.push_str(&format!("\n{}: {}", l.node, l.line));
        }
        self.lab.teardown().await.ok();
        panic!("{report}");
    }

    /// Runs `cmd` in `node` within `within`; fails the test on a timeout or an engine error.
    async fn exec(
        &mut self,
        node: &str,
        cmd: &[&str],
        within: Duration,
    ) -> p2plab::engine::docker::ExecOutput {
        match tokio::time::timeout(within, self.lab.exec(node, cmd)).await {
            Ok(Ok(o)) => o,
            Ok(Err(e)) => self.fail(format!("exec {cmd:?} in {node}: {e}")).await,
            Err(_) => {
                self.fail(format!(
                    "exec {cmd:?} in {node}: no answer within {within:?}"
                ))
                .await
            }
        }
    }

    async fn impair(&mut self, args: &[&str]) {
        let wan = self.wan.clone();
        let mut cmd = vec!["p2plab-impair", wan.as_str()];
        cmd.extend_from_slice(args);
        let o = self.exec("router", &cmd, SECS(20)).await;
        if o.code != 0 || !o.stdout.contains("impair_applied") {
            self.fail(format!(
                "{cmd:?}: exit {}, stdout {:?}, stderr {:?}",
                o.code, o.stdout, o.stderr
            ))
            .await;
        }
    }

    /// Median RTT (ms) of 20 pings from Y to X, 50 ms apart.
    async fn median_rtt(&mut self) -> (f64, usize) {
        let x = self.x.to_string();
        let o = self
            .exec(
                "y",
                &["ping", "-n", "-c", "20", "-i", "0.05", "-W", "2", &x],
                SECS(30),
            )
            .await;
        let r = rtts(&o.stdout);
        if r.len() < 15 {
            self.fail(format!(
                "ping Y -> X: only {} replies of 20:\n{}{}",
                r.len(),
                o.stdout,
                o.stderr
            ))
            .await;
        }
        (median(&r), r.len())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn impairments_delay_and_loss() {
    let _machine = p2plab::testing::whole_machine().await;
    let test = "impair";
    let Some(engine) = engine_or_skip(test).await else {
        return;
    };
    let started = Instant::now();
    let image = image().await;
    eprintln!(
        "impair: image ready after {:.1} s",
        started.elapsed().as_secs_f64()
    );
    let mut lab = Lab::new(engine, test);
    let internet = lab
        .allocate_network("internet", plan::internet_pool())
        .await
        .unwrap();
    let lan = lab.allocate_network("lan", plan::lan_pool()).await.unwrap();
    let (timeline, tx) = Watch::new();

    lab.start(ContainerSpec {
        name: "router".into(),
        image: image.clone(),
        cmd: strings(&["p2plab-router"]),
        env: vec![
            ("P2PLAB_NAT".into(), "home".into()),
            ("P2PLAB_LAN_SUBNET".into(), lan.to_string()),
            ("P2PLAB_WAN_IP".into(), ip(&internet, 2).to_string()),
            ("P2PLAB_RATE".into(), "1gbit".into()),
        ],
        attach: vec![
            Attach {
                network: "internet".into(),
                ip: ip(&internet, 2),
            },
            Attach {
                network: "lan".into(),
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
    lab.follow("router", tx.clone()).unwrap();
    for (node, net, n, env) in [
        (
            "x",
            "internet",
            ip(&internet, 10),
            ("P2PLAB_NO_DEFAULT_ROUTE", "1".to_string()),
        ),
        (
            "y",
            "lan",
            ip(&lan, 10),
            ("P2PLAB_GATEWAY", ip(&lan, 254).to_string()),
        ),
    ] {
        lab.start(ContainerSpec {
            name: node.into(),
            image: image.clone(),
            cmd: strings(&["probe", "reflect"]),
            env: vec![(env.0.into(), env.1)],
            attach: vec![Attach {
                network: net.into(),
                ip: n,
            }],
            net_admin: true,
            ..Default::default()
        })
        .await
        .unwrap();
        lab.follow(node, tx.clone()).unwrap();
    }
    let mut t = Impair {
        lab,
        timeline,
        wan: String::new(),
        x: ip(&internet, 10),
    };
    let ready = match t
        .timeline
        .wait_line("router", "router_ready", SECS(30))
        .await
    {
        Ok(l) => l,
        Err(e) => t.fail(e).await,
    };
    let v: serde_json::Value = serde_json::from_str(&ready).unwrap();
    t.wan = v["wan"].as_str().unwrap().to_string();
    for node in ["x", "y"] {
        if let Err(e) = t.timeline.wait_line(node, "ready", SECS(30)).await {
            t.fail(e).await;
        }
    }

    eprintln!(
        "impair: lab ready after {:.1} s",
        started.elapsed().as_secs_f64()
    );
    // P2PLAB_RATE from the router's environment: a tbf root qdisc on the WAN interface
    let wan = t.wan.clone();
    let q = t
        .exec(
            "router",
            &["tc", "qdisc", "show", "dev", &wan, "root"],
            SECS(10),
        )
        .await;
    if !q.stdout.contains("tbf") || !q.stdout.contains("1Gbit") {
        t.fail(format!(
            "P2PLAB_RATE=1gbit: no 1Gbit tbf on {wan}: {}",
            q.stdout
        ))
        .await;
    }

    // 1. delay
    let (base, base_n) = t.median_rtt().await;
    t.impair(&["--delay", "50"]).await;
    let (delayed, delayed_n) = t.median_rtt().await;
    let increase = delayed - base;
    eprintln!(
        "impair: delay 50 ms on {wan}: baseline median RTT {base:.3} ms ({base_n}/20 replies), impaired median {delayed:.3} ms ({delayed_n}/20), increase {increase:.3} ms"
    );
    if (increase - 50.0).abs() > 5.0 {
        t.fail(format!("delay 50 ms: RTT grew by {increase:.3} ms (baseline {base:.3}, impaired {delayed:.3}), want 50 +- 5")).await;
    }

    eprintln!(
        "impair: delay step done after {:.1} s",
        started.elapsed().as_secs_f64()
    );
    // 2. loss (the delay removed in the same call)
    t.impair(&["--delay", "0", "--loss", "10"]).await;
    let x = t.x.to_string();
    let o = t
        .exec(
            "y",
            &[
                "ping", "-n", "-q", "-c", "1000", "-i", "0.002", "-W", "1", &x,
            ],
            SECS(60),
        )
        .await;
    let Some((sent, received)) = ping_counts(&o.stdout) else {
        t.fail(format!("ping summary missing:\n{}{}", o.stdout, o.stderr))
            .await
    };
    let lost = sent.saturating_sub(received);
    let pct = 100.0 * lost as f64 / sent.max(1) as f64;
    eprintln!("impair: loss 10% on {wan}: sent {sent}, lost {lost}, {pct:.1}% lost");
    if sent != 1000 || !(7.0..=13.0).contains(&pct) {
        t.fail(format!(
            "loss 10%: {lost} of {sent} probes lost ({pct:.1}%), want 10 +- 3"
        ))
        .await;
    }
    eprintln!(
        "impair: loss step done after {:.1} s",
        started.elapsed().as_secs_f64()
    );
    // no delayline left from step 1 (--delay 0 stops it)
    let p = t
        .exec(
            "router",
            &["sh", "-c", "pgrep -x delayline || true"],
            SECS(10),
        )
        .await;
    if !p.stdout.trim().is_empty() {
        t.fail(format!(
            "delayline still running after --delay 0: pids {}",
            p.stdout.trim()
        ))
        .await;
    }

    // 3. bad values: one line on stderr, exit 1; --clear removes the table and the qdisc
    for bad in [["--loss", "101"], ["--delay", "-5"], ["--rate", "fast"]] {
        let o = t
            .exec("router", &["p2plab-impair", &wan, bad[0], bad[1]], SECS(10))
            .await;
        if o.code != 1 || o.stderr.trim().lines().count() != 1 {
            t.fail(format!(
                "p2plab-impair {wan} {bad:?}: exit {}, stderr {:?}",
                o.code, o.stderr
            ))
            .await;
        }
    }
    t.impair(&["--clear"]).await;
    let o = t
        .exec(
            "router",
            &[
                "sh",
                "-c",
                "nft list table inet p2plab_impair; tc qdisc show dev $0 root",
                &wan,
            ],
            SECS(10),
        )
        .await;
    if o.stdout.contains("p2plab_impair") || o.stdout.contains("tbf") {
        t.fail(format!("--clear left impairments: {}", o.stdout))
            .await;
    }
    // the router's own ruleset is intact: Y still reaches X, unimpaired
    let (after, _) = t.median_rtt().await;
    if after > base + 5.0 {
        t.fail(format!(
            "after --clear the median RTT is {after:.3} ms (baseline {base:.3})"
        ))
        .await;
    }

    t.lab.teardown().await.unwrap();
    eprintln!("impair: test took {:.1} s", started.elapsed().as_secs_f64());
}
