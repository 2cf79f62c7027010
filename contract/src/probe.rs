//! The NAT probe's lines (`probe reflect`, `probe measure`) and what it must measure behind each
//! router profile.
//!
//! The probe measures a router from a LAN host against two reflectors on the lab's internet, in
//! RFC 4787 terms. What it can tell apart is less than what a profile declares: two reflector
//! addresses cannot separate address-dependent from address-and-port-dependent *mapping*, and a
//! router that does not translate measures as endpoint-independent. [`Verdict::expected`] turns
//! a declared [`Profile`] into the verdict the probe must report, so the test that measures every
//! profile reads its expectations from the profile itself.

use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

pub use crate::nat::Proto;
use crate::nat::{self, Ipv6Policy, Profile};

/// Mapping as the probe measures it: the same observed address from both reflectors, or not.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Mapping {
    EndpointIndependent,
    /// Address- or address-and-port-dependent (two reflector IPs cannot tell them apart).
    EndpointDependent,
}

/// Filtering as the probe measures it: which unsolicited senders reach a mapping.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Filtering {
    /// Another IP reaches it.
    EndpointIndependent,
    /// Only the IP it sent to, from any port.
    AddressDependent,
    /// Only the IP and port it sent to.
    AddressAndPortDependent,
}

/// The classification of one protocol.
/// `probe reflect`'s default main port; its alt port is the next one.
pub const REFLECTOR_PORT: u16 = 3478;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Verdict {
    /// Whether the source address was translated.
    pub nat: bool,
    pub mapping: Mapping,
    pub filtering: Filtering,
}

impl Verdict {
    /// What the probe must measure from a LAN host behind a router of `profile` over `proto`;
    /// `None`: the router blocks it. (`upnp` measures as `home`: the probe maps nothing; a
    /// `port-forward` router's forwards are for other ports.)
    pub fn expected(profile: Profile, proto: Proto) -> Option<Verdict> {
        if profile.blocks(proto) {
            return None;
        }
        Some(Verdict {
            nat: profile.translates(),
            mapping: match profile.mapping() {
                nat::Mapping::EndpointIndependent | nat::Mapping::None => {
                    Mapping::EndpointIndependent
                }
                nat::Mapping::EndpointDependent => Mapping::EndpointDependent,
            },
            filtering: Filtering::measured(profile.filtering()),
        })
    }

    /// What the probe must measure over IPv6 from a LAN host behind a router whose IPv6 side is
    /// `policy` (and whose IPv4 `profile` says which protocols it blocks): never translated, so
    /// the mapping is the host's own address; filtered as the policy says. `None`: blocked.
    pub fn expected_ipv6(policy: Ipv6Policy, profile: Profile, proto: Proto) -> Option<Verdict> {
        if profile.blocks(proto) {
            return None;
        }
        Some(Verdict {
            nat: false,
            mapping: Mapping::EndpointIndependent,
            filtering: Filtering::measured(policy.filtering()),
        })
    }
}

impl Filtering {
    /// What the probe measures for a declared filtering: no filtering lets the other reflector in,
    /// as endpoint-independent filtering does.
    fn measured(declared: nat::Filtering) -> Filtering {
        match declared {
            nat::Filtering::EndpointIndependent | nat::Filtering::None => {
                Filtering::EndpointIndependent
            }
            nat::Filtering::AddressAndPortDependent => Filtering::AddressAndPortDependent,
        }
    }
}

/// Whether the probe must find the router hairpinning over `proto`: `None` when nothing is
/// translated (the host reaches itself directly) or the protocol is blocked; `hairpin` is the
/// router's setting, which only an endpoint-independent mapping can honour.
pub fn expected_hairpin(profile: Profile, hairpin: bool, proto: Proto) -> Option<bool> {
    (profile.translates() && !profile.blocks(proto))
        .then_some(hairpin && profile.mapping() == nat::Mapping::EndpointIndependent)
}

/// `probe measure`'s line, one per protocol:
/// `{"event":"nat_probe","proto":"udp","local":"10.1.0.10:40001","observed":[...],"nat":true,
/// "mapping":"endpoint-independent","filtering":"address-and-port-dependent","hairpin":null}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "event", rename = "nat_probe")]
pub struct NatProbe {
    pub proto: Proto,
    /// The LAN host's own address of the measuring socket.
    pub local: SocketAddr,
    /// What reflector 1 and reflector 2 saw as the source; `None`: neither answered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed: Option<[SocketAddr; 2]>,
    /// `None`: the protocol does not leave the LAN (neither reflector answered), as behind a
    /// router that blocks it.
    #[serde(flatten)]
    pub verdict: Option<Verdict>,
    /// Whether this host reached its own mapping through the router; `None` without translation
    /// or when the protocol is blocked.
    pub hairpin: Option<bool>,
}

/// `probe reflect`'s ready line: the bound UDP and TCP addresses, main port then alt port.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "event", rename = "reflector_ready")]
pub struct ReflectorReady {
    pub udp: Vec<SocketAddr>,
    pub tcp: Vec<SocketAddr>,
}

impl Serialize for Proto {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for Proto {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Proto::BOTH
            .into_iter()
            .find(|p| p.as_str() == s)
            .ok_or_else(|| {
                serde::de::Error::custom(format!("unknown protocol '{s}' (use udp or tcp)"))
            })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn every_profile_has_an_expected_verdict_derived_from_what_it_declares() {
        let v = |p| Verdict::expected(p, Proto::Tcp).unwrap();
        use Filtering as F;
        use Mapping as M;
        assert_eq!(
            v(Profile::Open),
            Verdict {
                nat: true,
                mapping: M::EndpointIndependent,
                filtering: F::EndpointIndependent
            }
        );
        for p in [Profile::Home, Profile::PortForward, Profile::Upnp] {
            assert_eq!(
                v(p),
                Verdict {
                    nat: true,
                    mapping: M::EndpointIndependent,
                    filtering: F::AddressAndPortDependent
                }
            );
        }
        assert_eq!(
            v(Profile::Strict),
            Verdict {
                nat: true,
                mapping: M::EndpointDependent,
                filtering: F::AddressAndPortDependent
            }
        );
        assert_eq!(
            v(Profile::Routed),
            Verdict {
                nat: false,
                mapping: M::EndpointIndependent,
                filtering: F::EndpointIndependent
            }
        );
        // udp-blocked: home over TCP, nothing over UDP
        assert_eq!(v(Profile::UdpBlocked), v(Profile::Home));
        assert_eq!(Verdict::expected(Profile::UdpBlocked, Proto::Udp), None);
        for p in Profile::ALL
            .into_iter()
            .filter(|&p| p != Profile::UdpBlocked)
        {
            assert_eq!(
                Verdict::expected(p, Proto::Udp),
                Verdict::expected(p, Proto::Tcp),
                "{p}"
            );
        }
    }

    #[test]
    fn hairpinning_is_expected_where_it_is_asked_for_and_can_work() {
        assert_eq!(
            expected_hairpin(Profile::Home, true, Proto::Udp),
            Some(true)
        );
        assert_eq!(
            expected_hairpin(Profile::Home, false, Proto::Tcp),
            Some(false)
        );
        assert_eq!(
            expected_hairpin(Profile::Strict, true, Proto::Tcp),
            Some(false)
        );
        assert_eq!(expected_hairpin(Profile::Routed, false, Proto::Tcp), None);
        assert_eq!(
            expected_hairpin(Profile::UdpBlocked, true, Proto::Udp),
            None
        );
        assert_eq!(
            expected_hairpin(Profile::UdpBlocked, true, Proto::Tcp),
            Some(true)
        );
    }

    #[test]
    fn the_line_keeps_its_shape() {
        let sa = |s: &str| s.parse::<SocketAddr>().unwrap();
        let line = NatProbe {
            proto: Proto::Udp,
            local: sa("10.1.0.10:40001"),
            observed: Some([sa("198.18.0.2:40001"); 2]),
            verdict: Some(Verdict {
                nat: true,
                mapping: Mapping::EndpointIndependent,
                filtering: Filtering::AddressAndPortDependent,
            }),
            hairpin: None,
        };
        let text = serde_json::to_string(&line).unwrap();
        assert_eq!(
            text,
            r#"{"event":"nat_probe","proto":"udp","local":"10.1.0.10:40001","observed":["198.18.0.2:40001","198.18.0.2:40001"],"nat":true,"mapping":"endpoint-independent","filtering":"address-and-port-dependent","hairpin":null}"#
        );
        assert_eq!(crate::parse_line::<NatProbe>(&text), Some(line.clone()));
        // blocked: no observed addresses, no verdict
        let blocked = NatProbe {
            observed: None,
            verdict: None,
            ..line
        };
        let text = serde_json::to_string(&blocked).unwrap();
        assert_eq!(
            text,
            r#"{"event":"nat_probe","proto":"udp","local":"10.1.0.10:40001","hairpin":null}"#
        );
        assert_eq!(crate::parse_line::<NatProbe>(&text), Some(blocked));
        assert_eq!(
            crate::parse_line::<NatProbe>(r#"{"event":"reflector_ready","udp":[],"tcp":[]}"#),
            None
        );
        assert_eq!(
            crate::parse_line::<NatProbe>(&text.replace("\"udp\"", "\"sctp\"")),
            None
        );
        let ready = ReflectorReady {
            udp: vec![sa("198.18.0.20:3478")],
            tcp: vec![sa("198.18.0.20:3478")],
        };
        let text = serde_json::to_string(&ready).unwrap();
        assert_eq!(
            text,
            r#"{"event":"reflector_ready","udp":["198.18.0.20:3478"],"tcp":["198.18.0.20:3478"]}"#
        );
    }
}
