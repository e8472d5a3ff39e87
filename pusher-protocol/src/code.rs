//! Pusher's documented error codes (protocol 7, "Error Codes"): the close code of a connection
//! the server ends, sent first as a `pusher:error` with the same code, or the code of a
//! `pusher:error` on a connection that stays open (4301, 4302).
//!
//! Errors about one subscription or one client event carry no code at all (`"code": null`), as
//! Pusher's own servers send them: client libraries act on the code's range (pysher disconnects
//! on any 4000–4099 it receives), and those errors must not end the connection.

use std::fmt;

/// What a client should do when the server closes its connection with a code of this range.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CodeRange {
    /// 4000–4099: do not reconnect with the same parameters.
    DoNotReconnect,
    /// 4100–4199: reconnect after backing off (at least 1 s).
    ReconnectAfterBackoff,
    /// 4200–4299: reconnect immediately.
    ReconnectImmediately,
    /// 4300–4399: any other error (sent on an open connection).
    Other,
}

impl CodeRange {
    /// The range `code` falls in, if it is a Pusher code (4000–4399).
    pub const fn of(code: u16) -> Option<Self> {
        match code {
            4000..=4099 => Some(Self::DoNotReconnect),
            4100..=4199 => Some(Self::ReconnectAfterBackoff),
            4200..=4299 => Some(Self::ReconnectImmediately),
            4300..=4399 => Some(Self::Other),
            _ => None,
        }
    }
}

/// A documented Pusher error code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorCode {
    /// 4000: the application only accepts TLS connections.
    SslRequired,
    /// 4001: no application has this key.
    AppNotFound,
    /// 4003: the application is disabled.
    AppDisabled,
    /// 4004: the application is over its connection quota.
    OverConnectionQuota,
    /// 4005: the request path is not `/app/{key}`.
    PathNotFound,
    /// 4006: the `protocol` parameter is not a number.
    InvalidVersionFormat,
    /// 4007: the `protocol` version is not one this server speaks (5, 6 or 7).
    UnsupportedProtocolVersion,
    /// 4008: no `protocol` parameter was given (only when the listener requires one).
    NoProtocolVersion,
    /// 4009: the connection is not authorized (origin not allowed, failed or missing sign-in,
    /// user connections terminated through the HTTP API).
    Unauthorized,
    /// 4100: the server is over capacity; try again after backing off.
    OverCapacity,
    /// 4200: reconnect now (the server is going away).
    ReconnectImmediately,
    /// 4201: a ping was sent and no pong came back in time.
    PongNotReceived,
    /// 4202: closed after inactivity.
    ClosedAfterInactivity,
    /// 4301: a client event was refused by the rate limit (the connection stays open).
    ClientEventRateLimit,
    /// 4302: a sign-in's watchlist was over the limit; only the first ids were kept (the
    /// connection stays open).
    WatchlistLimitExceeded,
}

impl ErrorCode {
    /// Every code, in numeric order.
    pub const ALL: [ErrorCode; 15] = [
        Self::SslRequired,
        Self::AppNotFound,
        Self::AppDisabled,
        Self::OverConnectionQuota,
        Self::PathNotFound,
        Self::InvalidVersionFormat,
        Self::UnsupportedProtocolVersion,
        Self::NoProtocolVersion,
        Self::Unauthorized,
        Self::OverCapacity,
        Self::ReconnectImmediately,
        Self::PongNotReceived,
        Self::ClosedAfterInactivity,
        Self::ClientEventRateLimit,
        Self::WatchlistLimitExceeded,
    ];

    /// The number sent in `pusher:error` and as the WebSocket close code.
    pub const fn code(self) -> u16 {
        match self {
            Self::SslRequired => 4000,
            Self::AppNotFound => 4001,
            Self::AppDisabled => 4003,
            Self::OverConnectionQuota => 4004,
            Self::PathNotFound => 4005,
            Self::InvalidVersionFormat => 4006,
            Self::UnsupportedProtocolVersion => 4007,
            Self::NoProtocolVersion => 4008,
            Self::Unauthorized => 4009,
            Self::OverCapacity => 4100,
            Self::ReconnectImmediately => 4200,
            Self::PongNotReceived => 4201,
            Self::ClosedAfterInactivity => 4202,
            Self::ClientEventRateLimit => 4301,
            Self::WatchlistLimitExceeded => 4302,
        }
    }

    /// The code with this number, if it is one of the documented ones.
    pub fn from_code(code: u16) -> Option<Self> {
        Self::ALL.into_iter().find(|c| c.code() == code)
    }

    /// Pusher's description of the code, used as the message and the close reason when there
    /// is nothing more precise to say.
    pub const fn description(self) -> &'static str {
        match self {
            Self::SslRequired => "Application only accepts SSL connections, reconnect using wss://",
            Self::AppNotFound => "Application does not exist",
            Self::AppDisabled => "Application disabled",
            Self::OverConnectionQuota => "Application is over connection quota",
            Self::PathNotFound => "Path not found",
            Self::InvalidVersionFormat => "Invalid version string format",
            Self::UnsupportedProtocolVersion => "Unsupported protocol version",
            Self::NoProtocolVersion => "No protocol version supplied",
            Self::Unauthorized => "Connection is unauthorized",
            Self::OverCapacity => "Over capacity",
            Self::ReconnectImmediately => "Generic reconnect immediately",
            Self::PongNotReceived => "Pong reply not received",
            Self::ClosedAfterInactivity => "Closed after inactivity",
            Self::ClientEventRateLimit => "Client event rejected due to rate limit",
            Self::WatchlistLimitExceeded => "Watchlist limit exceeded",
        }
    }

    /// The range of the code: what the client should do when it is a close code.
    pub const fn range(self) -> CodeRange {
        match CodeRange::of(self.code()) {
            Some(range) => range,
            None => unreachable!(),
        }
    }

    /// Whether the server closes the connection after sending this code (every code below
    /// 4300); 4301 and 4302 leave it open.
    pub const fn closes(self) -> bool {
        !matches!(self.range(), CodeRange::Other)
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.code(), self.description())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_match_the_protocol_document() {
        let table: Vec<(u16, &str)> = ErrorCode::ALL.iter().map(|c| (c.code(), c.description())).collect();
        assert_eq!(
            table,
            [
                (4000, "Application only accepts SSL connections, reconnect using wss://"),
                (4001, "Application does not exist"),
                (4003, "Application disabled"),
                (4004, "Application is over connection quota"),
                (4005, "Path not found"),
                (4006, "Invalid version string format"),
                (4007, "Unsupported protocol version"),
                (4008, "No protocol version supplied"),
                (4009, "Connection is unauthorized"),
                (4100, "Over capacity"),
                (4200, "Generic reconnect immediately"),
                (4201, "Pong reply not received"),
                (4202, "Closed after inactivity"),
                (4301, "Client event rejected due to rate limit"),
                (4302, "Watchlist limit exceeded"),
            ]
        );
    }

    #[test]
    fn ranges_say_what_the_client_does() {
        assert_eq!(ErrorCode::Unauthorized.range(), CodeRange::DoNotReconnect);
        assert_eq!(ErrorCode::OverCapacity.range(), CodeRange::ReconnectAfterBackoff);
        assert_eq!(ErrorCode::PongNotReceived.range(), CodeRange::ReconnectImmediately);
        assert_eq!(ErrorCode::ClientEventRateLimit.range(), CodeRange::Other);
        assert!(ErrorCode::AppNotFound.closes() && ErrorCode::ReconnectImmediately.closes());
        assert!(!ErrorCode::ClientEventRateLimit.closes() && !ErrorCode::WatchlistLimitExceeded.closes());
        assert_eq!(CodeRange::of(3999), None);
        assert_eq!(CodeRange::of(4400), None);
    }

    #[test]
    fn from_code_finds_every_code_and_only_those() {
        for c in ErrorCode::ALL {
            assert_eq!(ErrorCode::from_code(c.code()), Some(c));
        }
        assert_eq!(ErrorCode::from_code(4002), None);
        assert_eq!(ErrorCode::from_code(1000), None);
    }
}
