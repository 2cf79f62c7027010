//! The YAML as serde-saphyr reads it: unknown keys, duplicate keys and wrong types fail here,
//! with their location; [`super::validate`] checks the rest.

use std::collections::BTreeMap;

use indexmap::IndexMap;
use serde::Deserialize;
use serde_saphyr::Spanned;

pub(super) type S<T> = Spanned<T>;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawTopology {
    pub(super) name: S<String>,
    #[serde(default)]
    pub(super) description: Option<String>,
    #[serde(default)]
    pub(super) timeout: Option<S<RawDuration>>,
    #[serde(default)]
    pub(super) transport: Option<S<String>>,
    #[serde(default)]
    pub(super) resources: Option<S<RawDuration>>,
    pub(super) segments: S<IndexMap<S<String>, S<RawSegment>>>,
    pub(super) nodes: S<IndexMap<S<String>, S<RawNode>>>,
    #[serde(default)]
    pub(super) faults: Vec<S<RawFault>>,
    #[serde(default)]
    pub(super) expect: Vec<S<RawExpect>>,
}

/// A duration: `500ms`, `10s`, `2m`, or a number of seconds.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub(super) enum RawDuration {
    Secs(u64),
    Text(String),
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawSegment {
    #[serde(default)]
    pub(super) nat: Option<S<String>>,
    #[serde(default)]
    pub(super) uplink: Option<S<String>>,
    #[serde(default)]
    pub(super) subnet: Option<S<String>>,
    #[serde(default)]
    pub(super) forward: Vec<S<RawForward>>,
    #[serde(default)]
    pub(super) impair: Option<S<RawImpair>>,
    #[serde(default)]
    pub(super) mapping_timeout: Option<S<RawDuration>>,
    #[serde(default)]
    pub(super) hairpin: Option<S<bool>>,
    #[serde(default)]
    pub(super) tcp_ports: Option<S<Vec<u16>>>,
    #[serde(default)]
    pub(super) family: Option<S<String>>,
    #[serde(default)]
    pub(super) ipv6: Option<S<String>>,
    /// On a swarm (`--engines`): the engine of the segment's router, from 1.
    #[serde(default)]
    pub(super) engine: Option<S<u32>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawForward {
    pub(super) port: S<u16>,
    pub(super) to: S<String>,
    #[serde(default)]
    pub(super) proto: Option<S<String>>,
    #[serde(default)]
    pub(super) to_port: Option<u16>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawImpair {
    #[serde(default)]
    pub(super) delay: Option<S<RawDuration>>,
    #[serde(default)]
    pub(super) jitter: Option<S<RawDuration>>,
    #[serde(default)]
    pub(super) loss: Option<S<String>>,
    #[serde(default)]
    pub(super) rate: Option<S<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawNode {
    pub(super) role: S<String>,
    pub(super) segment: S<String>,
    #[serde(default)]
    pub(super) namespace: Option<String>,
    #[serde(default)]
    pub(super) transport: Option<S<String>>,
    #[serde(default)]
    pub(super) replicas: Option<S<u32>>,
    #[serde(default)]
    pub(super) count: Option<u64>,
    #[serde(default)]
    pub(super) interval: Option<S<RawDuration>>,
    #[serde(default)]
    pub(super) size: Option<u64>,
    #[serde(default)]
    pub(super) deadline: Option<S<RawDuration>>,
    #[serde(default)]
    pub(super) relay: Option<S<String>>,
    #[serde(default)]
    pub(super) vpn: bool,
    #[serde(default)]
    pub(super) upnp: bool,
    #[serde(default)]
    pub(super) seed: Option<u64>,
    #[serde(default)]
    pub(super) args: Vec<String>,
    #[serde(default)]
    pub(super) start: Option<S<bool>>,
    /// On a swarm (`--engines`): the node's engine, from 1.
    #[serde(default)]
    pub(super) engine: Option<S<u32>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawFault {
    #[serde(default)]
    pub(super) at: Option<S<RawDuration>>,
    #[serde(default)]
    pub(super) after: Option<S<RawExpect>>,
    #[serde(default)]
    pub(super) delay: Option<S<RawDuration>>,
    #[serde(default)]
    pub(super) every: Option<S<RawDuration>>,
    #[serde(default)]
    pub(super) until: Option<S<RawDuration>>,
    #[serde(default, rename = "for")]
    pub(super) for_: Option<S<RawDuration>>,
    #[serde(default)]
    pub(super) kill: Option<S<String>>,
    #[serde(default)]
    pub(super) stop: Option<S<String>>,
    #[serde(default)]
    pub(super) start: Option<S<String>>,
    #[serde(default)]
    pub(super) restart: Option<S<String>>,
    #[serde(default)]
    pub(super) pause: Option<S<String>>,
    #[serde(default)]
    pub(super) unpause: Option<S<String>>,
    #[serde(default)]
    pub(super) partition: Option<S<RawPartition>>,
    #[serde(default)]
    pub(super) heal: Option<S<String>>,
    #[serde(default)]
    pub(super) flush_nat: Option<S<String>>,
    #[serde(default)]
    pub(super) impair: Option<S<RawImpairFault>>,
    #[serde(default)]
    pub(super) new_identity: Option<S<bool>>,
    #[serde(default)]
    pub(super) exec: Option<S<RawExec>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawExec {
    pub(super) node: S<String>,
    pub(super) cmd: S<Vec<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub(super) enum RawPartition {
    One(String),
    Groups(Vec<Vec<String>>),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawImpairFault {
    pub(super) segment: S<String>,
    #[serde(default)]
    pub(super) delay: Option<S<RawDuration>>,
    #[serde(default)]
    pub(super) jitter: Option<S<RawDuration>>,
    #[serde(default)]
    pub(super) loss: Option<S<String>>,
    #[serde(default)]
    pub(super) rate: Option<S<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawExpect {
    #[serde(default)]
    pub(super) name: Option<String>,
    #[serde(default)]
    pub(super) within: Option<S<RawDuration>>,
    #[serde(default)]
    pub(super) started: Option<S<String>>,
    #[serde(default)]
    pub(super) discovered: Option<S<Vec<S<String>>>>,
    #[serde(default)]
    pub(super) reservation: Option<S<String>>,
    #[serde(default)]
    pub(super) relayed: Option<S<Vec<S<String>>>>,
    #[serde(default)]
    pub(super) direct: Option<S<Vec<S<String>>>>,
    #[serde(default)]
    pub(super) hole_punch_fails: Option<S<Vec<S<String>>>>,
    #[serde(default)]
    pub(super) delivered: Option<S<RawDelivered>>,
    #[serde(default)]
    pub(super) path: Option<S<RawPathExpect>>,
    #[serde(default)]
    pub(super) event: Option<S<RawEventExpect>>,
    #[serde(default)]
    pub(super) flat: Option<S<RawFlat>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawFlat {
    pub(super) node: S<String>,
    pub(super) metric: S<String>,
    pub(super) after: S<RawDuration>,
    pub(super) growth: S<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawDelivered {
    pub(super) from: S<String>,
    pub(super) to: S<String>,
    pub(super) count: u64,
    #[serde(default)]
    pub(super) lost: Option<u64>,
    #[serde(default)]
    pub(super) duplicates: Option<u64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawPathExpect {
    pub(super) from: S<String>,
    pub(super) to: S<String>,
    #[serde(default)]
    pub(super) all: Option<S<String>>,
    #[serde(default)]
    pub(super) last: Option<S<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawEventExpect {
    #[serde(default)]
    pub(super) node: Option<S<String>>,
    pub(super) kind: S<String>,
    #[serde(default, rename = "where")]
    pub(super) where_: BTreeMap<String, serde_json::Value>,
    #[serde(default)]
    pub(super) min: Option<u64>,
    #[serde(default)]
    pub(super) max: Option<u64>,
}
