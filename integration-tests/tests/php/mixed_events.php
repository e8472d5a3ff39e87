<?php
// A PHP application for the mixed-cluster test (tests/php_mixed.rs): every message is a user name
// the client logs in as; the worker binds it as uid, joins group "all", keeps it in $_SESSION and
// answers "php:<name>:<client_id>". onWebSocketConnect echoes what PHP received of the handshake;
// onClose appends "close <client_id> <name>" to closes.log beside it.
use GatewayWorker\Lib\Gateway;

class Events
{
    public static function onWebSocketConnect($client_id, $data)
    {
        Gateway::sendToCurrentClient(json_encode([
            'ws' => $data['get'], 'cookie' => $data['cookie'],
            'uri' => $data['server']['REQUEST_URI'], 'remote' => $_SERVER['REMOTE_ADDR'],
        ]));
    }

    public static function onClose($client_id)
    {
        // The test reads this file: close events reach PHP workers, also when a gateway stops.
        file_put_contents(__DIR__ . '/closes.log', "close $client_id " . ($_SESSION['name'] ?? '-') . "\n", FILE_APPEND);
    }

    public static function onMessage($client_id, $message)
    {
        if ($message === 'bye') {
            // Sent at once after each other: the message must still arrive (tests/php_mixed.rs).
            Gateway::sendToCurrentClient('bye');
            Gateway::destoryCurrentClient();
            return;
        }
        if ($message === 'big') {
            // Past the gateway's max_session_bytes: refused there (tests/php_mixed.rs).
            $_SESSION['big'] = str_repeat('x', 1100000);
            Gateway::sendToCurrentClient('big');
            return;
        }
        if ($message === 'order') {
            // Keys in no sorted order, nested too: PHP must read them back in this order
            // (tests/php_mixed.rs).
            $_SESSION['zeta'] = 1;
            $_SESSION['alpha'] = ['y' => 1, 'x' => 2];
            $_SESSION['mid'] = 'm';
            Gateway::sendToCurrentClient('order');
            return;
        }
        if ($message === 'whoami') {
            Gateway::sendToCurrentClient('php-session:' . json_encode($_SESSION));
            return;
        }
        Gateway::bindUid($client_id, $message);
        Gateway::joinGroup($client_id, 'all');
        $_SESSION['name'] = $message;
        Gateway::sendToCurrentClient("php:$message:$client_id");
    }
}
