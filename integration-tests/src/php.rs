//! Real PHP GatewayWorker processes against our register and gateways: finds `php` and the
//! unmodified upstream sources in `../shared/peers/php`, lays out an application directory the way
//! a PHP shop has it (Composer's `vendor/autoload.php` replaced by the autoloader shipped in
//! `tests/php/autoload.php`, since workerman-chat has none and there is no Composer here), and runs
//! PHP scripts as child processes.
//!
//! Without PHP or the sources a test says plainly that it skips, unless `GW_REQUIRE_PHP=1` (set
//! by `.ci/run`) makes that a failure.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use gw_config::{GatewayGatewayWorker, RegisterConfig, RegisterGatewayWorker};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::GatewayHandle;
use crate::process::Daemon;

/// `php` and the PHP GatewayWorker sources.
#[derive(Debug, Clone)]
pub struct Php {
    /// The `php` executable.
    pub php: PathBuf,
    /// `shared/peers/php`: `workerman/`, `gateway-worker/`, `gateway-client/`, `workerman-chat/`.
    pub peers: PathBuf,
}

impl Php {
    /// PHP and its sources, or `None` after printing why the calling test skips. Panics instead
    /// when `GW_REQUIRE_PHP=1`.
    pub fn find(test: &str) -> Option<Php> {
        let peers = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/peers/php");
        let php = std::env::var_os("PATH")
            .and_then(|paths| std::env::split_paths(&paths).map(|d| d.join("php")).find(|p| p.is_file()));
        let missing = match (&php, peers.join("gateway-worker/src/BusinessWorker.php").is_file()) {
            (None, _) => Some("no `php` on PATH (scripts/install-php.sh installs Debian's php-cli)".to_string()),
            (_, false) => Some(format!("PHP GatewayWorker sources not found at {}", peers.display())),
            _ => None,
        };
        if let Some(why) = missing {
            assert!(std::env::var("GW_REQUIRE_PHP").as_deref() != Ok("1"), "{test}: GW_REQUIRE_PHP=1 but {why}");
            eprintln!("SKIPPED {test}: {why}");
            return None;
        }
        Some(Php { php: php.expect("checked"), peers: peers.canonicalize().expect("peers path") })
    }

    /// A fresh application directory laid out as a Composer project: `vendor/autoload.php` is
    /// the autoloader shipped with these tests (`tests/php/autoload.php`, mapping `Workerman\`,
    /// `GatewayWorker\` and `GatewayClient\` to the unmodified sources), told where they are.
    pub fn app_dir(&self, test: &str) -> PathBuf {
        let dir = crate::process::temp_dir(test);
        let shipped = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/php/autoload.php");
        let autoload = format!(
            "<?php\ndefine('GW_PHP_PEERS', '{}');\nrequire '{}';\n",
            self.peers.display(),
            shipped.canonicalize().expect("tests/php/autoload.php").display()
        );
        crate::process::write_config(&dir.join("vendor"), "autoload.php", &autoload);
        dir
    }

    /// workerman-chat's `Events.php` and `start_businessworker.php`, copied unchanged except the
    /// register address, behind a `start.php` like workerman-chat's own; returns the running
    /// Workerman master (4 worker processes, as the file says).
    pub fn start_chat_workers(&self, test: &str, php_register: SocketAddr) -> PhpProcess {
        let dir = self.app_dir(test);
        let chat = self.peers.join("workerman-chat/Applications/Chat");
        let app = dir.join("Applications/Chat");
        std::fs::create_dir_all(&app).unwrap();
        std::fs::copy(chat.join("Events.php"), app.join("Events.php")).unwrap();
        let start = std::fs::read_to_string(chat.join("start_businessworker.php")).unwrap();
        assert!(start.contains("'127.0.0.1:1236'"), "workerman-chat's start_businessworker.php changed upstream");
        let start = start.replace("'127.0.0.1:1236'", &format!("'{php_register}'"));
        std::fs::write(app.join("start_businessworker.php"), start).unwrap();
        crate::process::write_config(
            &dir,
            "start.php",
            r#"<?php
// workerman-chat's start.php, with Workerman's pid and log files kept in this directory.
use Workerman\Worker;
define('GLOBAL_START', 1);
require_once __DIR__ . '/vendor/autoload.php';
Worker::$pidFile = __DIR__ . '/workerman.pid';
Worker::$logFile = __DIR__ . '/workerman.log';
require_once __DIR__ . '/Applications/Chat/Events.php';
require_once __DIR__ . '/Applications/Chat/start_businessworker.php';
// Test harness only: a worker whose master is gone (the test was killed) exits too.
$worker->onWorkerStart = function () {
    \Workerman\Timer::add(1, function () { if (posix_getppid() === 1) { exit(0); } });
};
Worker::runAll();
"#,
        );
        self.run(&dir, &["start.php", "start"])
    }

    /// Runs `php ARGS` in `dir`.
    pub fn run(&self, dir: &Path, args: &[&str]) -> PhpProcess {
        let mut full = vec!["-d", "display_errors=stderr"];
        full.extend_from_slice(args);
        let daemon = Daemon::spawn_exe_in(&self.php, &full, dir);
        PhpProcess { daemon }
    }
}

/// A running PHP process; stopped with SIGINT (Workerman's Ctrl+C: the master stops its workers)
/// when dropped.
pub struct PhpProcess {
    /// The PHP process.
    pub daemon: Daemon,
}

impl PhpProcess {
    /// Stops it as Ctrl+C does and waits for it to exit.
    pub fn stop(mut self) -> String {
        if self.daemon.child.try_wait().ok().flatten().is_none() {
            self.daemon.signal("INT");
            self.daemon.wait_exit(Duration::from_secs(15));
        }
        self.daemon.output()
    }
}

impl Drop for PhpProcess {
    fn drop(&mut self) {
        if self.daemon.child.try_wait().ok().flatten().is_none() {
            let _ = std::process::Command::new("kill").arg("-INT").arg(self.daemon.pid().to_string()).status();
            let deadline = std::time::Instant::now() + Duration::from_secs(10);
            while self.daemon.child.try_wait().ok().flatten().is_none() && std::time::Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }
}

/// A register with a GatewayWorker-protocol listener on `127.0.0.1:0` (its own listener for our
/// peers is there too, unused).
pub struct PhpRegister {
    /// Where its GatewayWorker-protocol listener is.
    pub addr: SocketAddr,
    /// Its GatewayWorker-protocol gateway list.
    pub registry: Arc<gw_register::Registry>,
    _stop: tokio_util::sync::DropGuard,
}

impl PhpRegister {
    /// A register whose `[gatewayworker]` listener has this `secretKey`.
    pub async fn start(secret_key: &str) -> Self {
        let php = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = php.local_addr().unwrap();
        let native = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let config = RegisterConfig {
            listen: native.local_addr().unwrap().to_string(),
            gatewayworker: Some(RegisterGatewayWorker {
                listen: addr.to_string(),
                secret_key: secret_key.into(),
                ..RegisterGatewayWorker::default()
            }),
            ..RegisterConfig::default()
        };
        let registries = gw_register::Registries::default();
        let registry = registries.gatewayworker.clone();
        let stop = CancellationToken::new();
        let listeners = gw_register::Listeners { native, gatewayworker: Some(php) };
        tokio::spawn(gw_register::run_with(config, listeners, stop.clone(), registries));
        Self { addr, registry, _stop: stop.drop_guard() }
    }

    /// Waits until `n` gateways announced themselves here.
    pub async fn wait_for_gateways(&self, n: usize) {
        let registry = self.registry.clone();
        crate::eventually(Duration::from_secs(10), &format!("{n} gateways listed for PHP"), || {
            let listed = registry.gateways().len();
            async move { listed == n }
        })
        .await;
    }
}

/// A gateway (ours) that also serves PHP peers on a GatewayWorker-protocol listener announced to
/// `php_register`.
pub struct PhpGateway {
    /// The gateway.
    pub gateway: GatewayHandle,
    /// The GatewayWorker-protocol address (what PHP client ids embed).
    pub php_addr: SocketAddr,
}

impl PhpGateway {
    /// A gateway announcing to `registers`, whose `[gatewayworker]` listener announces itself to
    /// the PHP register `php_register`.
    pub async fn start(registers: &[SocketAddr], secret: &str, php_register: SocketAddr, secret_key: &str) -> Self {
        let gateway = GatewayHandle::start_with(registers, secret, |c| {
            c.gatewayworker = Some(GatewayGatewayWorker {
                listen: "127.0.0.1:0".into(),
                registers: vec![php_register.to_string()],
                secret_key: secret_key.into(),
                ..GatewayGatewayWorker::default()
            });
        })
        .await;
        let php_addr = gateway.gw.gatewayworker_addr().expect("a [gatewayworker] listener");
        Self { gateway, php_addr }
    }

    /// Graceful stop, as the `gateway` binary stops: clients are closed and their close events
    /// queued first, then the GatewayWorker links flush them and close.
    pub async fn stop(self) {
        self.gateway.stop().await;
    }
}
