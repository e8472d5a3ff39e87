//! GatewayWorker's client id (`Lib/Context.php`): 20 hex digits of `pack('NnN', local_ip,
//! local_port, connection_id)`, from which PHP code finds the gateway (its advertised IPv4
//! address and internal port) and the connection on it.

use std::fmt;
use std::net::Ipv4Addr;
use std::str::FromStr;

/// A PHP-format client id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PhpClientId {
    /// The gateway's advertised IPv4 address.
    pub ip: Ipv4Addr,
    /// The gateway's GatewayWorker-protocol port.
    pub port: u16,
    /// The connection's number on that gateway.
    pub connection_id: u32,
}

/// Why a string is not a PHP client id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid GatewayWorker client id {0:?}: expected 20 hex digits")]
pub struct PhpClientIdError(pub String);

impl fmt::Display for PhpClientId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:08x}{:04x}{:08x}", u32::from(self.ip), self.port, self.connection_id)
    }
}

impl FromStr for PhpClientId {
    type Err = PhpClientIdError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || PhpClientIdError(s.chars().take(40).collect());
        if s.len() != 20 || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(err());
        }
        let ip = u32::from_str_radix(&s[..8], 16).map_err(|_| err())?;
        let port = u16::from_str_radix(&s[8..12], 16).map_err(|_| err())?;
        let connection_id = u32::from_str_radix(&s[12..], 16).map_err(|_| err())?;
        Ok(Self { ip: Ipv4Addr::from(ip), port, connection_id })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_php_address_to_client_id() {
        // Context::addressToClientId(ip2long('127.0.0.1'), 2900, 1)
        let id = PhpClientId { ip: Ipv4Addr::new(127, 0, 0, 1), port: 2900, connection_id: 1 };
        assert_eq!(id.to_string(), "7f0000010b5400000001");
        assert_eq!("7f0000010b5400000001".parse::<PhpClientId>().unwrap(), id);
        assert_eq!("7F0000010B5400000001".parse::<PhpClientId>().unwrap(), id);
    }

    #[test]
    fn rejects_other_lengths_and_non_hex() {
        for bad in ["", "7f0000010b540000000", "7f0000010b54000000011", "7f0000010b540000000g", "+f0000010b5400000001"]
        {
            assert!(bad.parse::<PhpClientId>().is_err(), "{bad}");
        }
    }
}
