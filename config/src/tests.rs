//! Unit tests: shipped files, defaults, typos, validation and environment overrides.

use super::*;
use std::collections::HashMap;
use std::path::Path;

fn no_env(_: &str) -> Option<String> {
    None
}

fn shipped(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../configs").join(name)
}

#[test]
fn every_shipped_config_file_parses_and_validates() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../configs");
    let mut seen = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        if !name.ends_with(".toml") {
            continue;
        }
        seen += 1;
        let result = if name.starts_with("register") {
            load::<RegisterConfig>(Some(&path), no_env).map(|_| ())
        } else if name.starts_with("gateway") {
            load::<GatewayConfig>(Some(&path), no_env).map(|_| ())
        } else if name.starts_with("http-api") {
            load::<HttpApiConfig>(Some(&path), no_env).map(|_| ())
        } else if name.starts_with("business-worker") || name.starts_with("worker") {
            load::<WorkerConfig>(Some(&path), no_env).map(|_| ())
        } else {
            panic!("shipped config {name} has no known daemon prefix");
        };
        // Container configs listen on 0.0.0.0 and get their secret from the environment.
        if let Err(ConfigError::Invalid { problems, .. }) = &result {
            assert!(problems.iter().all(|p| p.key == "secret"), "{name}: {problems:?}");
        } else {
            result.unwrap_or_else(|e| panic!("{name}: {e}"));
        }
    }
    assert!(seen >= 3, "expected the three example configs in {}", dir.display());
}

#[test]
fn shipped_examples_equal_the_defaults() {
    let r: RegisterConfig = load(Some(&shipped("register.toml")), no_env).unwrap();
    assert_eq!(r, RegisterConfig::default());
    let g: GatewayConfig = load(Some(&shipped("gateway.toml")), no_env).unwrap();
    assert_eq!(g, GatewayConfig::default());
    let w: WorkerConfig = load(Some(&shipped("business-worker.toml")), no_env).unwrap();
    assert_eq!(w, WorkerConfig::default());
    let h: HttpApiConfig = load(Some(&shipped("http-api.toml")), no_env).unwrap();
    assert_eq!(h, HttpApiConfig::default());
}

#[test]
fn defaults_are_valid_without_a_file() {
    assert!(load::<RegisterConfig>(None, no_env).is_ok());
    assert!(load::<GatewayConfig>(None, no_env).is_ok());
    assert!(load::<WorkerConfig>(None, no_env).is_ok());
    assert!(load::<HttpApiConfig>(None, no_env).is_ok());
}

#[test]
fn a_typo_names_the_key() {
    let err = parse::<GatewayConfig>("listn = \"127.0.0.1:1\"\n", Path::new("g.toml")).unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains("g.toml") && msg.contains("unknown field `listn`"), "{msg}");
    let err = parse::<WorkerConfig>("[link]\nmax_frme = 1\n", Path::new("w.toml")).unwrap_err();
    assert!(err.to_string().contains("max_frme"), "{err}");
}

#[test]
fn every_problem_is_reported_at_once() {
    let text = r#"
        name = ""
        listen = "nowhere"
        internal_listen = "0.0.0.0:2900"
        registers = []
        send_queue = 0
        [link]
        max_frame = 10
    "#;
    let config: GatewayConfig = parse(text, Path::new("g.toml")).unwrap();
    let keys: Vec<String> = config.validate().into_iter().map(|p| p.key).collect();
    for key in ["name", "listen", "advertise", "registers", "secret", "send_queue", "link.max_frame"] {
        assert!(keys.contains(&key.to_string()), "missing {key} in {keys:?}");
    }
}

#[test]
fn non_loopback_listener_requires_a_secret_and_says_why() {
    let mut r = RegisterConfig { listen: "0.0.0.0:1236".into(), ..Default::default() };
    let problems = r.validate();
    assert_eq!(problems.len(), 1);
    assert_eq!(problems[0].key, "secret");
    assert!(problems[0].reason.contains("non-loopback address 0.0.0.0:1236"), "{}", problems[0]);
    r.secret = "x".repeat(32);
    assert!(r.validate().is_empty());
    // IPv6 loopback is fine without a secret.
    r.secret.clear();
    r.listen = "[::1]:1236".into();
    assert!(r.validate().is_empty());
}

#[test]
fn gateway_public_listener_alone_does_not_need_the_secret() {
    let g = GatewayConfig { listen: "0.0.0.0:7272".into(), ..Default::default() };
    assert!(g.validate().is_empty(), "{:?}", g.validate());
}

#[test]
fn peer_addresses_accept_hostnames_and_ipv6() {
    let g = GatewayConfig {
        advertise: Some("gateway-1:2900".into()),
        registers: vec!["register:1236".into(), "[::1]:1236".into(), "10.0.0.1:1236".into()],
        ..Default::default()
    };
    assert!(g.validate().is_empty(), "{:?}", g.validate());
    let bad = GatewayConfig {
        advertise: Some("gateway-1".into()),
        registers: vec!["reg:99999".into(), "[::1:1236".into()],
        ..Default::default()
    };
    let keys: Vec<String> = bad.validate().into_iter().map(|p| p.key).collect();
    assert_eq!(keys, vec!["advertise", "registers[0]", "registers[1]"]);
}

#[test]
fn environment_overrides_addresses_secret_and_logging() {
    let vars: HashMap<&str, &str> = [
        ("GW_SECRET", "from-env"),
        ("GW_LISTEN", "0.0.0.0:8000"),
        ("GW_INTERNAL_LISTEN", "0.0.0.0:2901"),
        ("GW_ADVERTISE", "gateway-2:2901"),
        ("GW_REGISTERS", "register-1:1236, register-2:1236"),
        ("GW_LOG_FORMAT", "json"),
        ("GW_NAME", "gw-2"),
    ]
    .into_iter()
    .collect();
    let g: GatewayConfig = load(None, |k| vars.get(k).map(|v| v.to_string())).unwrap();
    assert_eq!(g.secret, "from-env");
    assert_eq!(g.listen, "0.0.0.0:8000");
    assert_eq!(g.advertised(), "gateway-2:2901");
    assert_eq!(g.registers, vec!["register-1:1236", "register-2:1236"]);
    assert_eq!(g.log.format, LogFormat::Json);
    assert_eq!(g.name, "gw-2");
}

#[test]
fn bad_environment_value_is_a_problem_with_the_variable_name() {
    let err = load::<WorkerConfig>(None, |k| (k == "GW_LOG_FORMAT").then(|| "xml".to_string())).unwrap_err();
    assert!(err.to_string().contains("GW_LOG_FORMAT: \"xml\" is not `plain` or `json`"), "{err}");
}

#[test]
fn missing_file_is_a_read_error_naming_the_path() {
    let err = load::<RegisterConfig>(Some(Path::new("/nonexistent/r.toml")), no_env).unwrap_err();
    assert!(err.to_string().contains("/nonexistent/r.toml"), "{err}");
}

#[test]
fn durations_are_human_readable() {
    let w: WorkerConfig = parse("grace_period = \"1m 30s\"\n", Path::new("w.toml")).unwrap();
    assert_eq!(w.grace_period, std::time::Duration::from_secs(90));
}

#[test]
fn a_log_level_that_is_no_level_is_rejected_in_the_file_and_the_environment() {
    // tracing reads a lone word as a target name: "verbose" would enable a target that does not
    // exist and log nothing at all, errors included.
    let dir = std::env::temp_dir().join(format!("gw-config-log-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("register.toml");
    std::fs::write(&path, "[log]\nlevel = \"verbose\"\n").unwrap();
    let err = load::<RegisterConfig>(Some(&path), no_env).unwrap_err().to_string();
    assert!(err.contains("log.level: \"verbose\""), "{err}");
    assert!(err.contains("trace, debug, info, warn, error, off"), "{err}");

    let err = load::<GatewayConfig>(None, |k| (k == "GW_LOG_LEVEL").then(|| "loud".to_string())).unwrap_err();
    let text = err.to_string();
    assert!(text.contains("GW_LOG_LEVEL: \"loud\""), "{text}");
    assert!(!text.contains("log.level"), "the variable is named, not the key it overrides: {text}");

    for bad in ["", "info,gw_gateway", "=debug", "info,gw_gateway=loud"] {
        assert!(check_log_level(bad).is_err(), "{bad:?} accepted");
    }
    for good in ["info", "DEBUG", "off", "info,gw_gateway=debug", "warn, gw_link=trace", "gw_gateway[conn]=debug"] {
        assert_eq!(check_log_level(good), Ok(()), "{good:?} rejected");
    }
    let ok: WorkerConfig =
        load(None, |k| (k == "GW_LOG_LEVEL").then(|| "info,gw_business_worker=debug".into())).unwrap();
    assert_eq!(ok.log.level, "info,gw_business_worker=debug");
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn every_wrong_type_and_unknown_key_of_a_file_is_reported_at_once() {
    let dir = std::env::temp_dir().join(format!("gw-config-many-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("gateway.toml");
    let text = "name = \"gw\"\nmax_connections = \"lots\"\nlistn = \"127.0.0.1:7272\"\n\n[link]\nmax_frme = 10\nqueue = -1\n\n[log]\nlevel = \"info\"\nformat = \"xml\"\n";
    std::fs::write(&path, text).unwrap();
    let err = load::<GatewayConfig>(Some(&path), no_env).unwrap_err().to_string();
    for needle in [
        "gateway.toml: 5 errors:",
        "line 2",
        "invalid type: string \"lots\"",
        "line 3",
        "unknown field `listn`",
        "line 6",
        "unknown field `max_frme`",
        "line 7",
        "line 11",
        "unknown variant `xml`",
    ] {
        assert!(err.contains(needle), "missing {needle:?} in:\n{err}");
    }
    // A syntax error ends the reading: reported alone, with its line.
    std::fs::write(&path, "name = \"gw\"\nmax_connections = = 3\nlistn = 1\n").unwrap();
    let err = load::<GatewayConfig>(Some(&path), no_env).unwrap_err().to_string();
    assert!(err.contains("line 2") && !err.contains("listn"), "{err}");
    // A value spanning lines cannot be set aside alone: what was found so far is reported.
    std::fs::write(&path, "max_connections = \"x\"\nregisters = [\n  1,\n]\nlistn = 1\n").unwrap();
    let err = load::<GatewayConfig>(Some(&path), no_env).unwrap_err().to_string();
    assert!(err.contains("invalid type: string \"x\""), "{err}");
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn http_api_keys_are_checked_and_never_shown() {
    let text = r#"
        listen = "0.0.0.0:8090"
        max_body = 10
        tls_cert = "/x.pem"
        [[keys]]
        name = "a"
        key = "short"
        [[keys]]
        name = "a"
        key = "long enough but has spaces"
        access = "read"
    "#;
    let config: HttpApiConfig = parse(text, Path::new("h.toml")).unwrap();
    let problems = config.validate();
    let keys: Vec<&str> = problems.iter().map(|p| p.key.as_str()).collect();
    assert_eq!(keys, vec!["keys[0].key", "keys[1].name", "keys[1].key", "tls_cert", "max_body"], "{problems:?}");
    let shown = format!("{problems:?} {config:?}");
    assert!(!shown.contains("short") && !shown.contains("has spaces"), "a key leaked: {shown}");
    let err = parse::<HttpApiConfig>(
        "[[keys]]\nname = \"a\"\nkey = \"0123456789abcdef\"\naccess = \"write\"\n",
        Path::new("h.toml"),
    )
    .unwrap_err();
    assert!(err.to_string().contains("write"), "{err}");
}

#[test]
fn http_api_on_a_public_address_needs_a_key_which_the_environment_can_give() {
    let vars: HashMap<&str, &str> = [("GW_LISTEN", "0.0.0.0:8090")].into_iter().collect();
    let err = load::<HttpApiConfig>(None, |k| vars.get(k).map(|v| v.to_string())).unwrap_err();
    assert!(err.to_string().contains("keys: at least one API key is required"), "{err}");
    let vars: HashMap<&str, &str> =
        [("GW_LISTEN", "0.0.0.0:8090"), ("GW_API_KEY", "0123456789abcdef0123")].into_iter().collect();
    let h: HttpApiConfig = load(None, |k| vars.get(k).map(|v| v.to_string())).unwrap();
    assert_eq!(h.keys.len(), 1);
    assert_eq!((h.keys[0].name.as_str(), h.keys[0].access), ("env", ApiAccess::All));
}

#[test]
fn process_threads_is_bounded_and_says_what_zero_means() {
    let config: GatewayConfig = parse("[process]\nthreads = 5000\n", Path::new("g.toml")).unwrap();
    let problems = config.validate();
    let p = problems.iter().find(|p| p.key == "process.threads").expect("process.threads reported");
    assert_eq!(p.reason, "5000 is more than 1024; 0 runs one per CPU core");
    for ok in [0, 1, 64] {
        let config: GatewayConfig = parse(&format!("[process]\nthreads = {ok}\n"), Path::new("g.toml")).unwrap();
        assert!(config.validate().is_empty(), "threads = {ok}");
    }
}

#[test]
fn process_malloc_arenas_defaults_to_one_and_is_bounded() {
    let config: GatewayConfig = parse("", Path::new("g.toml")).unwrap();
    assert_eq!(config.process.malloc_arenas, 1);
    let config: GatewayConfig = parse("[process]\nmalloc_arenas = 5000\n", Path::new("g.toml")).unwrap();
    let problems = config.validate();
    let p = problems.iter().find(|p| p.key == "process.malloc_arenas").expect("process.malloc_arenas reported");
    assert_eq!(p.reason, "5000 is more than 1024; 0 leaves glibc's default");
    let config: GatewayConfig = parse("[process]\nmalloc_arenas = 0\n", Path::new("g.toml")).unwrap();
    assert!(config.validate().is_empty());
}

#[test]
fn link_write_delay_is_a_duration_of_at_most_100ms() {
    let config: WorkerConfig = parse("[link]\nwrite_delay = \"2ms\"\n", Path::new("w.toml")).unwrap();
    assert_eq!(config.link.write_delay, std::time::Duration::from_millis(2));
    assert!(config.validate().is_empty());
    let config: WorkerConfig = parse("[link]\nwrite_delay = \"1s\"\n", Path::new("w.toml")).unwrap();
    let problems = config.validate();
    let p = problems.iter().find(|p| p.key == "link.write_delay").expect("link.write_delay reported");
    assert_eq!(p.reason, "1s is more than 100ms: every internal message would wait that long");
}

#[test]
fn the_largest_client_event_must_fit_in_an_internal_frame() {
    let problem = |text: &str| {
        let config: GatewayConfig = parse(text, Path::new("g.toml")).unwrap();
        config.validate().into_iter().find(|p| p.key == "link.max_frame").map(|p| p.reason)
    };
    // The defaults fit: 1 MiB message + 1 MiB session + 64 KiB in 8 MiB.
    assert_eq!(problem(""), None);
    let reason = problem("max_session_bytes = 8000000\n").expect("a session that cannot travel with an event");
    assert!(
        reason.starts_with("8388608 bytes cannot carry the largest client event: a message of 1048576 bytes (max_message_size) with a session of 8000000 bytes (max_session_bytes) and 65536 bytes for the rest needs 9114112"),
        "{reason}"
    );
    // A listener's own larger message limit counts too, and a larger frame fixes it.
    let big_listener = "[[listeners]]\nurl = \"websocket://127.0.0.1:0\"\nmax_message_size = 16777216\n";
    assert!(problem(big_listener).is_some_and(|r| r.contains("a message of 16777216 bytes")));
    assert_eq!(problem(&format!("{big_listener}[link]\nmax_frame = 33554432\n")), None);
    let config: GatewayConfig =
        parse("max_session_bytes = 1\nmax_groups_per_client = 0\n", Path::new("g.toml")).unwrap();
    let keys: Vec<_> = config.validate().into_iter().map(|p| p.key).collect();
    assert!(keys.contains(&"max_session_bytes".to_string()) && keys.contains(&"max_groups_per_client".into()));
}

#[test]
fn http_api_max_response_has_a_floor() {
    let config: HttpApiConfig = parse("max_response = 1000\n", Path::new("h.toml")).unwrap();
    let problems = config.validate();
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert_eq!(problems[0].to_string(), "max_response: 1000 is below 65536 bytes");
}

#[test]
fn what_a_php_user_writes_is_accepted() {
    // start_gateway.php's `new Gateway("Websocket://0.0.0.0:7272")` and `$gateway->pingInterval = 0`,
    // which turns the heartbeat off whatever pingNotResponseLimit says.
    let text = "listen = \"Websocket://0.0.0.0:7272\"\nping_interval = \"0s\"\n";
    let config: GatewayConfig = parse(text, Path::new("g.toml")).unwrap();
    assert!(config.validate().is_empty(), "{:?}", config.validate());
    assert_eq!(config.effective_listeners()[0].url, "websocket://0.0.0.0:7272");
    // Any protocol PHP's Gateway takes, any case, here or in [[listeners]].
    let config: GatewayConfig = parse("listen = \"Text://127.0.0.1:7272\"\n", Path::new("g.toml")).unwrap();
    assert!(config.validate().is_empty(), "{:?}", config.validate());
    assert_eq!(config.effective_listeners()[0].url, "text://127.0.0.1:7272");
    let text = "[[listeners]]\nurl = \"WebSocket://127.0.0.1:7272\"\n[[listeners]]\nurl = \"FRAME://127.0.0.1:7273\"\n";
    let config: GatewayConfig = parse(text, Path::new("g.toml")).unwrap();
    assert!(config.validate().is_empty(), "{:?}", config.validate());
    let urls: Vec<String> = config.effective_listeners().into_iter().map(|l| l.url).collect();
    assert_eq!(urls, ["websocket://127.0.0.1:7272", "frame://127.0.0.1:7273"]);
    // TLS needs its files, which only [[listeners]] can name; an unknown scheme is named.
    let config: GatewayConfig = parse("listen = \"wss://127.0.0.1:7272\"\n", Path::new("g.toml")).unwrap();
    let problems: Vec<String> = config.validate().iter().map(ToString::to_string).collect();
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert!(problems[0].starts_with("listen: \"wss://127.0.0.1:7272\" is a TLS listener"), "{problems:?}");
    let config: GatewayConfig = parse("listen = \"http://127.0.0.1:7272\"\n", Path::new("g.toml")).unwrap();
    let problems: Vec<String> = config.validate().iter().map(ToString::to_string).collect();
    assert!(problems[0].starts_with("listen: unknown scheme \"http\""), "{problems:?}");
}

/// The first ```toml block after `heading` in `text`.
fn toml_block_after<'a>(text: &'a str, heading: &str) -> &'a str {
    let from = text.find(heading).unwrap_or_else(|| panic!("no {heading:?}"));
    let rest = &text[from..];
    let start = rest.find("```toml\n").expect("a toml block") + "```toml\n".len();
    let end = rest[start..].find("```").expect("the end of the block");
    &rest[start..start + end]
}

#[test]
fn the_migration_guide_shows_the_shipped_gatewayworker_configs() {
    let guide = std::fs::read_to_string(shipped("../docs/migrating-from-gatewayworker.md")).unwrap();
    let unindent = |block: &str| block.lines().map(str::trim_start).collect::<Vec<_>>().join("\n");
    let register = unindent(toml_block_after(&guide, "2. Write `register.toml`"));
    let shown: RegisterConfig = parse(&register, Path::new("guide")).unwrap();
    let file: RegisterConfig = load(Some(&shipped("register-gatewayworker.toml")), no_env).unwrap();
    assert_eq!(shown, file, "the guide's register.toml and configs/register-gatewayworker.toml differ");
    let gateway = unindent(toml_block_after(&guide, "3. Write `gateway.toml`"));
    let shown: GatewayConfig = parse(&gateway, Path::new("guide")).unwrap();
    let file: GatewayConfig = load(Some(&shipped("gateway-gatewayworker.toml")), no_env).unwrap();
    assert_eq!(shown, file, "the guide's gateway.toml and configs/gateway-gatewayworker.toml differ");
    // Both follow workerman-chat's start_gateway.php.
    assert_eq!(file.ping_interval, std::time::Duration::from_secs(10), "$gateway->pingInterval = 10");
    assert_eq!(file.gatewayworker.expect("[gatewayworker]").listen, "127.0.0.1:2300", "lanIp:startPort");
}

#[test]
fn http_api_connection_limits_and_timeouts_are_checked() {
    let h = HttpApiConfig::default();
    assert_eq!((h.max_connections, h.max_connections_per_ip), (1024, 256));
    assert_eq!(
        (h.header_timeout, h.body_timeout),
        (std::time::Duration::from_secs(10), std::time::Duration::from_secs(10))
    );
    let text = "max_connections = 0\nmax_connections_per_ip = 0\nheader_timeout = \"0s\"\nbody_timeout = \"2h\"\n";
    let config: HttpApiConfig = parse(text, Path::new("h.toml")).unwrap();
    let problems = config.validate();
    let keys: Vec<&str> = problems.iter().map(|p| p.key.as_str()).collect();
    assert_eq!(keys, ["max_connections", "max_connections_per_ip", "header_timeout", "body_timeout"], "{problems:?}");
    assert!(problems[3].reason.contains("outside (0s, 1h]"), "{problems:?}");
}

#[test]
fn compression_is_per_listener_websocket_only_and_its_level_bounded() {
    let text = "[compression]\nenabled = false\nthreshold = 64\nlevel = 1\n\
        [[listeners]]\nurl = \"websocket://127.0.0.1:0\"\ncompression = true\n\
        [[listeners]]\nurl = \"websocket://127.0.0.1:0\"\n";
    let config: GatewayConfig = parse(text, Path::new("g.toml")).unwrap();
    assert_eq!(config.compression, CompressionConfig { enabled: false, threshold: 64, level: 1 });
    assert_eq!(config.listeners[0].compression, Some(true));
    assert_eq!(config.listeners[1].compression, None, "unset: [compression] enabled decides");
    assert!(config.validate().is_empty());

    let text = "[compression]\nlevel = 0\n[[listeners]]\nurl = \"text://127.0.0.1:0\"\ncompression = true\n";
    let config: GatewayConfig = parse(text, Path::new("g.toml")).unwrap();
    let problems = config.validate();
    let p = problems.iter().find(|p| p.key == "compression.level").expect("compression.level reported");
    assert_eq!(p.reason, "0 is outside 1..=9 (zlib levels)");
    let p = problems.iter().find(|p| p.key == "listeners[0].compression").expect("listener compression reported");
    assert_eq!(p.reason, "permessage-deflate applies to WebSocket listeners only (remove the key)");
    // Turning it off on a TCP listener says nothing wrong.
    let text = "[[listeners]]\nurl = \"text://127.0.0.1:0\"\ncompression = false\n";
    let config: GatewayConfig = parse(text, Path::new("g.toml")).unwrap();
    assert!(config.validate().is_empty());
}

#[test]
fn recovery_is_off_by_default_and_its_caps_are_checked() {
    let config: GatewayConfig = parse("", Path::new("g.toml")).unwrap();
    assert_eq!(config.recovery, RecoveryConfig::default());
    assert!(!config.recovery.enabled);
    assert_eq!(config.recovery.window, std::time::Duration::from_secs(120));
    assert_eq!((config.recovery.max_messages, config.recovery.max_bytes), (1000, 1 << 20));
    assert_eq!(config.recovery.max_held_bytes, 256 << 20);

    let text =
        "[recovery]\nenabled = true\nwindow = \"30s\"\nmax_messages = 10\nmax_bytes = 4096\nmax_held_bytes = 65536\n";
    let config: GatewayConfig = parse(text, Path::new("g.toml")).unwrap();
    assert_eq!(
        config.recovery,
        RecoveryConfig {
            enabled: true,
            window: std::time::Duration::from_secs(30),
            max_messages: 10,
            max_bytes: 4096,
            max_held_bytes: 65536
        }
    );
    assert!(config.validate().is_empty());

    let typo = parse::<GatewayConfig>("[recovery]\nenable = true\n", Path::new("g.toml")).unwrap_err().to_string();
    assert!(typo.contains("enable"), "{typo}");

    let text = "[recovery]\nwindow = \"0s\"\nmax_messages = 0\nmax_bytes = 100\nmax_held_bytes = 99\n";
    let config: GatewayConfig = parse(text, Path::new("g.toml")).unwrap();
    let problems = config.validate();
    let reason = |key: &str| problems.iter().find(|p| p.key == key).map(|p| p.reason.clone()).unwrap_or_default();
    assert_eq!(reason("recovery.window"), "must be greater than zero (turn recovery off with enabled = false)");
    assert_eq!(reason("recovery.max_messages"), "must be at least 1");
    assert_eq!(
        reason("recovery.max_held_bytes"),
        "99 is less than recovery.max_bytes 100: not even one held client would fit"
    );
}
