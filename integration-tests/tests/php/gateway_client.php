<?php
// A web backend's use of the unmodified PHP GatewayClient against our cluster: every public call
// of GatewayClient/Gateway.php, in an order the Rust test (tests/php_gateway_client.rs) checks.
// Usage: php gateway_client.php PEERS_DIR REGISTER_ADDRESS SECRET_KEY PHASE
// Prints one JSON object with what each query returned, client ids replaced by session names.
require_once $argv[1] . '/gateway-client/Gateway.php';
use GatewayClient\Gateway;

Gateway::$registerAddress = $argv[2];
Gateway::$secretKey = $argv[3];
$phase = $argv[4];

// The test gave each client a session {"name": …}; find their ids by it.
$id = [];
foreach (Gateway::getAllClientSessions() as $client_id => $session) {
    $id[$session['name']] = $client_id;
}
$name = function ($client_id) use ($id) {
    $n = array_search($client_id, $id, true);
    return $n === false ? "unknown:$client_id" : $n;
};
$names = function ($list) use ($name) {
    $out = array_map($name, array_values($list));
    sort($out);
    return $out;
};
$keyed = function ($map) use ($name) {
    $out = [];
    foreach ($map as $client_id => $v) { $out[$name($client_id)] = $v; }
    ksort($out);
    return $out;
};
$r = ['ids' => $id];

if ($phase === 'commands') {
    Gateway::bindUid($id['a'], 'u1');
    Gateway::bindUid($id['c'], 'u2');
    Gateway::joinGroup($id['a'], 'g1');
    Gateway::joinGroup($id['b'], 'g1');
    Gateway::joinGroup($id['c'], 'g1');
    Gateway::joinGroup($id['c'], 'g2');
    Gateway::sendToClient($id['b'], 'to-b');
    Gateway::sendToUid('u1', 'to-u1');
    Gateway::sendToUid(['u1', 'u2'], 'to-u1-u2');
    Gateway::sendToGroup('g1', 'to-g1');
    Gateway::sendToGroup(['g1', 'g2'], 'to-g1-g2');
    Gateway::sendToGroup('g1', 'to-g1-but-b', [$id['b']]);
    Gateway::sendToAll('to-all');
    Gateway::sendToAll('to-a-c', [$id['a'], $id['c']]);
    Gateway::sendToAll('to-all-but-a', null, [$id['a']]);
    Gateway::setSession($id['b'], ['name' => 'b', 'x' => 1]);
    Gateway::updateSession($id['a'], ['y' => ['z' => 2]]);
    Gateway::sendToAll('commands-done');
}

if ($phase === 'queries') {
    $r['isOnline_a'] = Gateway::isOnline($id['a']);
    $r['isOnline_gone'] = Gateway::isOnline(substr($id['a'], 0, 12) . 'ffffffff');
    $r['isUidOnline_u1'] = Gateway::isUidOnline('u1');
    $r['isUidOnline_none'] = Gateway::isUidOnline('none');
    $r['isUidsOnline'] = Gateway::isUidsOnline(['u1', 'none']);
    $r['getAllClientIdCount'] = Gateway::getAllClientIdCount();
    $r['getAllClientCount'] = Gateway::getAllClientCount();
    $r['getClientIdCountByGroup_g1'] = Gateway::getClientIdCountByGroup('g1');
    $r['getClientCountByGroup_g2'] = Gateway::getClientCountByGroup('g2');
    $r['batchGetClientIdCountByGroup'] = Gateway::batchGetClientIdCountByGroup(['g1', 'g2', 'none']);
    $r['getClientIdListByGroup_g1'] = $names(Gateway::getClientIdListByGroup('g1'));
    $r['getAllClientIdList'] = $names(Gateway::getAllClientIdList());
    $r['getClientIdByUid_u1'] = $names(Gateway::getClientIdByUid('u1'));
    $b = Gateway::batchGetClientIdByUid(['u1', 'u2', 'none']);
    ksort($b);
    $r['batchGetClientIdByUid'] = array_map($names, $b);
    $u = Gateway::getUidListByGroup('g1');
    sort($u);
    $r['getUidListByGroup_g1'] = array_values($u);
    $r['getUidCountByGroup_g1'] = Gateway::getUidCountByGroup('g1');
    $u = Gateway::getAllUidList();
    sort($u);
    $r['getAllUidList'] = array_values($u);
    $r['getAllUidCount'] = Gateway::getAllUidCount();
    $r['getUidByClientId_c'] = Gateway::getUidByClientId($id['c']);
    $r['getUidByClientId_b'] = Gateway::getUidByClientId($id['b']);
    $g = Gateway::getAllGroupIdList();
    sort($g);
    $r['getAllGroupIdList'] = array_values($g);
    $c = Gateway::getAllGroupUidCount();
    ksort($c);
    $r['getAllGroupUidCount'] = $c;
    $l = array_map(function ($uids) { $v = array_values($uids); sort($v); return $v; }, Gateway::getAllGroupUidList());
    ksort($l);
    $r['getAllGroupUidList'] = $l;
    $l = array_map($names, Gateway::getAllGroupClientIdList());
    ksort($l);
    $r['getAllGroupClientIdList'] = $l;
    $c = Gateway::getAllGroupClientIdCount();
    ksort($c);
    $r['getAllGroupClientIdCount'] = $c;
    $r['getClientSessionsByGroup_g1'] = $keyed(Gateway::getClientSessionsByGroup('g1'));
    $r['getAllClientSessions'] = $keyed(Gateway::getAllClientSessions());
    $r['getAllClientInfo'] = $keyed(Gateway::getAllClientInfo());
    $r['getClientInfoByGroup_g2'] = $keyed(Gateway::getClientInfoByGroup('g2'));
    $r['getSession_a'] = Gateway::getSession($id['a']);
    $r['getSession_gone'] = Gateway::getSession(substr($id['a'], 0, 12) . 'ffffffff');
}

if ($phase === 'teardown') {
    Gateway::setSocketSession($id['c'], serialize(['name' => 'c', 'raw' => true]));
    Gateway::leaveGroup($id['b'], 'g1');
    Gateway::unbindUid($id['c'], 'other-uid');
    Gateway::unbindUid($id['a'], 'u1');
    Gateway::ungroup('g2');
    $r['after_g1'] = $names(Gateway::getClientIdListByGroup('g1'));
    $r['after_g2'] = Gateway::getClientCountByGroup('g2');
    $r['after_uids'] = array_values(Gateway::getAllUidList());
    $r['after_session_c'] = Gateway::getSession($id['c']);
    Gateway::closeClient($id['a'], 'bye-a');
    // A message right before destoryClient still arrives, as with PHP's own gateway.
    Gateway::sendToClient($id['b'], 'bye-b');
    Gateway::destoryClient($id['b']);
}

echo json_encode($r), "\n";
