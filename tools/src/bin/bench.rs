//! `bench`: the measuring end of `p2plab bench`, in the node image. See `bench --help`, and the
//! `p2plab_tools::perf` and `p2plab_tools::load` module documentation for the wire protocols and
//! the JSON lines printed.
use clap::{Parser, Subcommand};
use p2plab_node::{RunError, Threads};
use p2plab_tools::{
    flood::{self, FloodArgs},
    load::{self, P2pRttArgs, SwarmArgs},
    perf::{self, PerfCommand},
};

#[derive(Debug, Parser)]
#[command(
    name = "bench",
    version,
    about = "p2plab benchmarks: raw TCP baselines, libp2p streams, the node's round trip, many nodes in one process"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    #[command(flatten)]
    Perf(PerfCommand),
    /// Round trips of the node's own acked messages (a dialer in this process) to the one
    /// listener of a namespace, on the path asked for.
    P2pRtt(P2pRttArgs),
    /// Many nodes in one process: discovery time and memory per node, or a held load on a monitor.
    Swarm(SwarmArgs),
    /// One hostile host against a node: made-up identities, reservations, circuits and
    /// malformed, oversized and endless streams, all from one IP address.
    Flood(FloodArgs),
}

fn main() {
    let cli = Cli::parse();
    let threads = match &cli.cmd {
        // Round trips and one stream at a time: on one thread, like the peer it is compared with,
        // so that neither side of a comparison pays cross-thread wake-ups the other does not.
        Cmd::Perf(_) | Cmd::P2pRtt(_) => Threads::One,
        // Many nodes in one process.
        Cmd::Swarm(_) | Cmd::Flood(_) => Threads::Many,
    };
    p2plab_node::block_on_and_exit(threads, run(cli))
}

fn print(v: &impl serde::Serialize) -> Result<(), RunError> {
    let line = serde_json::to_string(v).map_err(|e| RunError::Runtime(e.to_string()))?;
    println!("{line}");
    Ok(())
}

async fn run(cli: Cli) -> Result<(), RunError> {
    match cli.cmd {
        Cmd::Perf(c) => perf::run(c).await,
        Cmd::P2pRtt(a) => print(&load::p2p_rtt(a).await?),
        Cmd::Swarm(a) => print(&load::swarm(a).await?),
        Cmd::Flood(a) => print(&flood::run(a).await?),
    }
}
