//! The harness's integration tests, one binary (each file a module): the shipped topologies run
//! for real, every NAT profile measured, the CLI, compose, the image, impairments, UPnP, the
//! benchmark groups. The Docker tests need an engine (`P2PLAB_SKIP_DOCKER=1` skips them) and
//! share the machine through [`p2plab::testing::lab_slot`] and
//! [`p2plab::testing::whole_machine`]: two small labs at a time at most, and a test that
//! measures timing or builds images has it to itself.

mod bench;
mod cli;
mod compose;
mod compose_gen;
mod identity;
mod image;
mod impair;
mod profiles;
mod topologies;
mod upnp;
