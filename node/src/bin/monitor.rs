//! `monitor`: see `monitor --help` and the README.
use clap::Parser;
use p2plab_node::cli::MonitorCli;

fn main() {
    p2plab_node::main_for(MonitorCli::parse().into())
}
