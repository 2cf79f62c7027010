//! `dialer`: see `dialer --help` and the README.
use clap::Parser;
use p2plab_node::cli::DialerCli;

fn main() {
    p2plab_node::main_for(DialerCli::parse().into())
}
