//! How a binary says why it failed: one line, once, each cause said once.

use gw_config::{LogConfig, LogFormat};

/// The error and its causes on one line (`outer: inner: innermost`), each cause said once.
///
/// Many errors put their cause in their own message (thiserror's `"…: {source}"`) and also hand
/// it out as [`source`](std::error::Error::source); printing the whole chain would then say it
/// twice (`Address already in use (os error 98): Address already in use (os error 98)`). A cause
/// whose text the line already holds is left out.
pub fn error_text(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let said = cause.to_string();
        if !said.is_empty() && !text.contains(&said) {
            text.push_str(": ");
            text.push_str(&said);
        }
        source = cause.source();
    }
    text
}

/// Reports why `binary` stopped, once: on stderr as `binary: why` with plain logs, or as one
/// JSON log record with JSON logs (stderr is the log either way, the log file under `start -d`,
/// so one of the two is enough and a JSON log stays all JSON).
pub fn report_failure(binary: &str, log: &LogConfig, error: &anyhow::Error) {
    let text = error_text(error.as_ref());
    match log.format {
        LogFormat::Plain => eprintln!("{binary}: {text}"),
        LogFormat::Json => tracing::error!(error = %text, "{binary} failed"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("cannot listen on 127.0.0.1:7272: {source}")]
    struct Bind {
        source: std::io::Error,
    }

    #[test]
    fn a_cause_already_in_the_message_is_said_once() {
        let e = anyhow::Error::new(Bind { source: std::io::Error::from(std::io::ErrorKind::AddrInUse) });
        let text = error_text(e.as_ref());
        assert_eq!(text.matches("address in use").count(), 1, "{text}");
        assert!(text.starts_with("cannot listen on 127.0.0.1:7272: "), "{text}");
    }

    #[test]
    fn causes_not_in_the_message_are_appended_in_order() {
        let e = anyhow::Error::new(std::io::Error::other("disk full")).context("writing the pid file").context("start");
        assert_eq!(error_text(e.as_ref()), "start: writing the pid file: disk full");
    }
}
