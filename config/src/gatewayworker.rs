//! `[gatewayworker]` sections: the listeners that speak PHP GatewayWorker's own protocols, so an
//! unmodified PHP `BusinessWorker` and `GatewayClient` work against our register and gateways.
//! Absent sections mean the daemons speak only our protocol.

use std::net::{SocketAddr, SocketAddrV4};

use serde::{Deserialize, Serialize};

use crate::validate::{Problem, Validate};

/// `[gatewayworker]` in `register.toml`: a second listener speaking `Register.php`'s JSON lines.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RegisterGatewayWorker {
    /// Where PHP BusinessWorkers, GatewayClients (and gateways) find the register: their
    /// `registerAddress`. An `ip:port`, or written as `start_register.php` writes it:
    /// `text://0.0.0.0:1236` (any case; the scheme is dropped, it is the only one that fits).
    #[serde(deserialize_with = "text_address")]
    pub listen: String,
    /// GatewayWorker's `secretKey`; PHP peers send it in plain text, so it is not our `secret`.
    /// Required when `listen` is not a loopback address, unless `allow_empty_secret_key`.
    pub secret_key: String,
    /// Serve PHP peers without a `secret_key` on a non-loopback address (GatewayWorker's default,
    /// for a private network where every host may list and announce gateways).
    pub allow_empty_secret_key: bool,
}

impl Default for RegisterGatewayWorker {
    fn default() -> Self {
        Self { listen: "127.0.0.1:1236".into(), secret_key: String::new(), allow_empty_secret_key: false }
    }
}

/// `[gatewayworker]` in `gateway.toml`: a second internal listener speaking `GatewayProtocol.php`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GatewayGatewayWorker {
    /// Where PHP BusinessWorkers and GatewayClients connect (GatewayWorker's `startPort`).
    pub listen: String,
    /// `ip:port` PHP peers use to reach `listen` (GatewayWorker's `lanIp`): IPv4 only, because
    /// PHP client ids embed it as four bytes. Defaults to `listen` (with the port the OS picked
    /// when that is 0).
    pub advertise: Option<String>,
    /// GatewayWorker-protocol registers (`[gatewayworker] listen` of our register, or a PHP
    /// register) to announce `advertise` to (`registerAddress`).
    pub registers: Vec<String>,
    /// GatewayWorker's `secretKey`, sent by PHP peers in plain text. Required when `listen` is
    /// not a loopback address, unless `allow_empty_secret_key`.
    pub secret_key: String,
    /// Serve PHP peers without a `secret_key` on a non-loopback address (GatewayWorker's default,
    /// for a private network where every host may command every client).
    pub allow_empty_secret_key: bool,
    /// Largest packet accepted from a PHP peer, header included.
    pub max_packet: usize,
}

impl Default for GatewayGatewayWorker {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:2901".into(),
            advertise: None,
            registers: vec!["127.0.0.1:1236".into()],
            secret_key: String::new(),
            allow_empty_secret_key: false,
            max_packet: 10 * 1024 * 1024,
        }
    }
}

impl GatewayGatewayWorker {
    /// The advertised IPv4 address, if valid.
    pub fn advertised(&self) -> Option<SocketAddrV4> {
        self.advertise.as_deref().unwrap_or(&self.listen).parse().ok()
    }
}

/// An address as `new Register('text://0.0.0.0:1236')` takes it: the `text://` scheme (any
/// case) is dropped; any other stays, for validation to refuse.
fn text_address<'de, D: serde::Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    let value = String::deserialize(d)?;
    Ok(match value.split_once("://") {
        Some((scheme, addr)) if scheme.eq_ignore_ascii_case("text") => addr.trim_end_matches('/').to_string(),
        _ => value,
    })
}

fn problem(key: &str, reason: String) -> Problem {
    Problem { key: format!("gatewayworker.{key}"), reason }
}

/// `listen` as an address, and a problem if there is no `secret_key` where the network reaches
/// it (PHP peers authenticate with nothing else), unless that is allowed explicitly.
fn listen_and_key(listen: &str, secret_key: &str, allow_empty: bool, who: &str) -> Vec<Problem> {
    let Ok(addr) = listen.parse::<SocketAddr>() else {
        return vec![problem("listen", format!("{listen:?} is not an IP:port address to listen on"))];
    };
    if secret_key.is_empty() && !allow_empty && !crate::validate::is_loopback(addr.ip()) {
        return vec![problem(
            "secret_key",
            format!(
                "required because gatewayworker.listen is the non-loopback address {addr}: without it anyone who \
                 reaches that address {who}; set secret_key (the PHP side's secretKey), or \
                 allow_empty_secret_key = true on a private network"
            ),
        )];
    }
    Vec::new()
}

impl Validate for RegisterGatewayWorker {
    fn validate(&self) -> Vec<Problem> {
        if self.listen.contains("://") && self.listen.parse::<SocketAddr>().is_err() {
            return vec![problem(
                "listen",
                format!(
                    "{:?}: GatewayWorker's register speaks text:// only (new Register('text://0.0.0.0:1236')); \
                     write the IP:port, or text://IP:port",
                    self.listen
                ),
            )];
        }
        listen_and_key(&self.listen, &self.secret_key, self.allow_empty_secret_key, "can list and announce gateways")
    }
}

impl Validate for GatewayGatewayWorker {
    fn validate(&self) -> Vec<Problem> {
        let mut out = listen_and_key(
            &self.listen,
            &self.secret_key,
            self.allow_empty_secret_key,
            "can send to, read and close every client",
        );
        let (key, value) = match &self.advertise {
            Some(a) => ("advertise", a.as_str()),
            None => ("listen", self.listen.as_str()),
        };
        match value.parse::<SocketAddrV4>() {
            Err(_) => out.push(problem(
                "advertise",
                format!("{value:?} (from {key}) is not an IPv4 ip:port; PHP client ids can only hold an IPv4 address"),
            )),
            Ok(a) if a.ip().is_unspecified() => out.push(problem(
                "advertise",
                format!("{value:?} (from {key}) is a wildcard; set advertise to the address PHP peers reach"),
            )),
            // Listening on port 0 advertises the port the OS picked; an advertised port 0 is wrong.
            Ok(a) if a.port() == 0 && self.advertise.is_some() => {
                out.push(problem("advertise", format!("{value:?} has port 0; PHP peers cannot reach it")));
            }
            Ok(_) => {}
        }
        if self.registers.is_empty() {
            out.push(problem("registers", "name at least one GatewayWorker-protocol register".into()));
        }
        if self.max_packet < 1024 {
            out.push(problem("max_packet", "must be at least 1024 bytes".into()));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{GatewayConfig, RegisterConfig};

    #[test]
    fn sections_parse_and_default() {
        let c: GatewayConfig = toml::from_str("[gatewayworker]\nlisten = \"10.0.0.5:2901\"\n").unwrap();
        let php = c.gatewayworker.unwrap();
        assert_eq!(php.advertised().unwrap().to_string(), "10.0.0.5:2901");
        assert_eq!(php.registers, ["127.0.0.1:1236"]);
        let r: RegisterConfig = toml::from_str("[gatewayworker]\nsecret_key = \"k\"\n").unwrap();
        assert_eq!(r.gatewayworker.unwrap().listen, "127.0.0.1:1236");
        // As start_register.php writes it.
        let r: RegisterConfig =
            toml::from_str("[gatewayworker]\nlisten = \"Text://0.0.0.0:1236\"\nsecret_key = \"k\"\n").unwrap();
        let php = r.gatewayworker.unwrap();
        assert_eq!(php.listen, "0.0.0.0:1236");
        assert!(php.validate().is_empty());
        let r: RegisterConfig = toml::from_str("[gatewayworker]\nlisten = \"websocket://0.0.0.0:1236\"\n").unwrap();
        let refused = r.gatewayworker.unwrap().validate();
        assert!(refused[0].to_string().contains("speaks text:// only"), "{refused:?}");
        assert!(toml::from_str::<GatewayConfig>("[gatewayworker]\nlan_ip = \"x\"\n").is_err());
    }

    #[test]
    fn advertised_address_must_be_a_reachable_ipv4() {
        let check = |listen: &str, advertise: Option<&str>| {
            let g = GatewayGatewayWorker {
                listen: listen.into(),
                advertise: advertise.map(String::from),
                secret_key: "k".into(),
                ..GatewayGatewayWorker::default()
            };
            g.validate().into_iter().map(|p| p.to_string()).collect::<Vec<_>>()
        };
        assert!(check("127.0.0.1:2901", None).is_empty());
        assert!(check("0.0.0.0:2901", Some("10.0.0.5:2901")).is_empty());
        assert!(check("127.0.0.1:0", None).is_empty(), "port 0 advertises the port the OS picked");
        assert!(check("127.0.0.1:0", Some("10.0.0.5:0"))[0].contains("port 0"));
        let wildcard = check("0.0.0.0:2901", None);
        assert!(
            wildcard[0].starts_with("gatewayworker.advertise:") && wildcard[0].contains("wildcard"),
            "{wildcard:?}"
        );
        let v6 = check("[::1]:2901", None);
        assert!(v6[0].contains("IPv4"), "{v6:?}");
        assert!(check("127.0.0.1:2901", Some("gw-1:2901"))[0].contains("IPv4"));
        let mut bad = GatewayGatewayWorker { registers: vec![], max_packet: 10, ..GatewayGatewayWorker::default() };
        bad.listen = "nope".into();
        assert_eq!(bad.validate().len(), 4);
    }

    #[test]
    fn an_empty_secret_key_off_loopback_needs_the_explicit_opt_in() {
        let gateway = |listen: &str, key: &str, allow: bool| {
            GatewayGatewayWorker {
                listen: listen.into(),
                advertise: Some("10.0.0.5:2901".into()),
                secret_key: key.into(),
                allow_empty_secret_key: allow,
                ..GatewayGatewayWorker::default()
            }
            .validate()
        };
        let refused = gateway("0.0.0.0:2901", "", false);
        assert_eq!(refused.len(), 1, "{refused:?}");
        assert_eq!(refused[0].key, "gatewayworker.secret_key");
        assert!(refused[0].reason.contains("allow_empty_secret_key"), "{refused:?}");
        assert!(gateway("0.0.0.0:2901", "k", false).is_empty());
        assert!(gateway("0.0.0.0:2901", "", true).is_empty());
        assert!(gateway("127.0.0.1:2901", "", false).is_empty());
        let register = |listen: &str, allow: bool| {
            RegisterGatewayWorker { listen: listen.into(), secret_key: String::new(), allow_empty_secret_key: allow }
                .validate()
        };
        assert_eq!(register("10.0.0.2:1236", false)[0].key, "gatewayworker.secret_key");
        assert!(register("10.0.0.2:1236", true).is_empty());
        assert!(register("[::1]:1236", false).is_empty());
    }
}
