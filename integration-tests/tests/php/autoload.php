<?php
// Stands in for Composer's vendor/autoload.php when PHP GatewayWorker runs from its unmodified
// sources (workerman-chat ships without one, and there is no Composer here): maps Workerman\,
// GatewayWorker\ and GatewayClient\ to the source folders.
//
// Use: copy this file to <app>/vendor/autoload.php (start.php requires that path), and tell it
// where the sources are: define GW_PHP_PEERS before requiring it, or set the GW_PHP_PEERS
// environment variable, to the folder holding workerman/, gateway-worker/ and gateway-client/
// (this repository's tests use ../shared/peers/php). Without either it looks there, relative to
// this file's place in the repository.
$gw_php_peers = defined('GW_PHP_PEERS') ? GW_PHP_PEERS : (getenv('GW_PHP_PEERS') ?: __DIR__ . '/../../../../shared/peers/php');
spl_autoload_register(function ($class) use ($gw_php_peers) {
    $map = [
        'Workerman\\' => "$gw_php_peers/workerman/",
        'GatewayWorker\\' => "$gw_php_peers/gateway-worker/src/",
        'GatewayClient\\' => "$gw_php_peers/gateway-client/",
    ];
    foreach ($map as $prefix => $dir) {
        if (strncmp($class, $prefix, strlen($prefix)) === 0) {
            $file = $dir . str_replace('\\', '/', substr($class, strlen($prefix))) . '.php';
            if (is_file($file)) {
                require $file;
            }
            return;
        }
    }
});
