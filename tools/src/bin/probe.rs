//! `probe`: the NAT probe, `probe reflect` and `probe measure`. See `probe --help` and the
//! `p2plab_tools::probe` module documentation for the wire protocol and the output.
use clap::Parser;
use p2plab_node::{RunError, Threads};
use p2plab_tools::probe::{self, ProbeCli, ProbeCommand};

fn main() {
    p2plab_node::block_on_and_exit(Threads::One, run(ProbeCli::parse()))
}

async fn run(cli: ProbeCli) -> Result<(), RunError> {
    match cli.command {
        ProbeCommand::Reflect(args) => {
            let reflector = probe::Reflector::bind(&args)?;
            println!("{}", reflector.ready_line());
            tokio::select! {
                served = reflector.run() => served,
                _ = p2plab_node::shutdown_signal() => Ok(()),
            }
        }
        ProbeCommand::Measure(args) => {
            let plan = args.plan()?;
            for &proto in &plan.protos {
                let report = probe::measure(proto, &plan).await?;
                let line =
                    serde_json::to_string(&report).map_err(|e| RunError::Runtime(e.to_string()))?;
                println!("{line}");
            }
            Ok(())
        }
    }
}
