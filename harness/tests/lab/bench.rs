//! `p2plab bench` works end to end on a real lab: the round-trip and throughput groups (the
//! quick settings) measure every figure with all its samples, each on the path it claims, next
//! to its raw TCP baseline. No timing is asserted here: speed lives in `p2plab bench` and
//! docs/benchmarks.json and .md. Needs a Docker engine (`P2PLAB_SKIP_DOCKER=1` skips).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use p2plab::{
    bench::lab::{self, BenchOptions},
    bench::Report,
    testing::{engine_or_skip, image},
};

#[tokio::test(flavor = "multi_thread")]
async fn bench_measures_round_trips_and_throughput_against_raw_tcp() {
    let _machine = p2plab::testing::whole_machine().await;
    let Some(engine) = engine_or_skip("bench").await else {
        return;
    };
    let opts = BenchOptions {
        image: image().await,
        only: vec!["rtt".into(), "throughput".into()],
        quick: true,
        direct_repeats: 1,
        swarm: None,
    };
    let (figures, errors) = lab::run_all(&engine, &opts, &|s| eprintln!("bench: {s}"))
        .await
        .unwrap();
    assert!(errors.is_empty(), "{errors:?}");
    let ids: Vec<&str> = figures.iter().map(|f| f.id.as_str()).collect();
    for size in ["64B", "4KiB", "64KiB"] {
        for kind in ["raw_tcp", "libp2p_direct", "libp2p_relayed"] {
            let id = format!("rtt.{kind}.{size}");
            let f = figures
                .iter()
                .find(|f| f.id == id)
                .unwrap_or_else(|| panic!("no {id} in {ids:?}"));
            // every round trip counted, all on the path the figure names (else a note says so)
            assert_eq!(f.samples.len(), 50, "{id}");
            assert!(f.samples.iter().all(|s| *s > 0.0), "{id}: {:?}", f.samples);
            assert!(f.note.is_none(), "{id}: {:?}", f.note);
            if kind != "raw_tcp" {
                assert_eq!(
                    f.baseline.as_deref(),
                    Some(format!("rtt.raw_tcp.{size}").as_str())
                );
            }
        }
    }
    for id in [
        "throughput.raw_tcp",
        "throughput.libp2p_tcp",
        "throughput.libp2p_quic",
    ] {
        let f = figures
            .iter()
            .find(|f| f.id == id)
            .unwrap_or_else(|| panic!("no {id} in {ids:?}"));
        assert_eq!(f.samples.len(), 3, "{id}");
        assert!(f.samples.iter().all(|s| *s > 0.0), "{id}: {:?}", f.samples);
    }
    // the report renders and reads back
    let report = Report {
        format: p2plab::bench::FORMAT,
        date: "2026-01-01T00:00:00Z".into(),
        command: "test".into(),
        machine: p2plab::bench::Machine::detect("test".into()),
        groups: lab::groups(&opts),
        figures,
    };
    // the data file reads back exactly, and the document rendered from it names it
    assert_eq!(Report::from_json(&report.to_json()).unwrap(), report);
    assert!(report
        .markdown(None, "benchmarks.json")
        .contains("(benchmarks.json)"));
}
