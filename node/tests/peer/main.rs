//! The peer's integration tests, one binary (each file a module): real nodes as real processes
//! over loopback sockets (`loopback`), and every bad flag and input refused with one clear
//! message (`bad_input`). `support` spawns nodes and waits on their events with deadlines.

mod bad_input;
mod loopback;
mod support;
