//! What the daemons' logs say happened: link heartbeat timeouts between gateways and workers, on
//! the soak's time line (log time stamps are wall-clock UTC).

use std::path::Path;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::Value;

/// A gateway↔worker link declared dead for silence.
#[derive(Debug, Clone)]
pub struct LinkTimeout {
    pub at: Instant,
    pub node: String,
}

/// `2026-11-21T06:59:38.914493Z` as a time.
fn parse_utc(ts: &str) -> Option<SystemTime> {
    let (date, time) = ts.strip_suffix('Z')?.split_once('T')?;
    let mut d = date.split('-').map(|p| p.parse::<i64>());
    let (y, m, day) = (d.next()?.ok()?, d.next()?.ok()?, d.next()?.ok()?);
    let mut t = time.split(':');
    let (hh, mm) = (t.next()?.parse::<i64>().ok()?, t.next()?.parse::<i64>().ok()?);
    let secs: f64 = t.next()?.parse().ok()?;
    // Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's days_from_civil).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146097 + doe - 719468;
    let whole = days * 86400 + hh * 3600 + mm * 60;
    let total = whole as f64 + secs;
    (total >= 0.0).then(|| UNIX_EPOCH + Duration::from_secs_f64(total))
}

/// Heartbeat timeouts of gateway↔worker links in one node's log.
pub fn link_timeouts(node: &str, log: &Path, start: Instant, start_wall: SystemTime) -> Vec<LinkTimeout> {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let mut out = Vec::new();
    for line in text.lines().filter(|l| l.contains("heartbeat timeout")) {
        let Ok(v) = serde_json::from_str::<Value>(line) else { continue };
        let gateway_side = v["fields"]["message"] == "worker link dropped";
        let worker_side = v["span"]["name"] == "gateway_link";
        if !(gateway_side || worker_side) {
            continue;
        }
        let Some(wall) = v["timestamp"].as_str().and_then(parse_utc) else { continue };
        let at = match wall.duration_since(start_wall) {
            Ok(d) => start + d,
            Err(_) => start,
        };
        out.push(LinkTimeout { at, node: node.to_string() });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utc_time_stamps_parse() {
        let t = parse_utc("1970-01-02T00:00:01.5Z").unwrap();
        assert_eq!(t.duration_since(UNIX_EPOCH).unwrap(), Duration::from_millis(86_401_500));
        let t = parse_utc("2026-11-21T06:59:38.914493Z").unwrap();
        assert_eq!(t.duration_since(UNIX_EPOCH).unwrap().as_secs(), 1_795_244_378);
        assert!(parse_utc("garbage").is_none());
    }
}
