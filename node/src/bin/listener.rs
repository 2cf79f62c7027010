//! `listener`: see `listener --help` and the README.
use clap::Parser;
use p2plab_node::cli::ListenerCli;

fn main() {
    p2plab_node::main_for(ListenerCli::parse().into())
}
