// Drives clients/js/gatewayrs.js (the browser helper) from Node for tests/recovery.rs, with
// Node's WebSocket (`node --experimental-websocket` on Node 20, built in from 22).
//
// Prints `ID <client id>` when first connected, `RESUMED <client id> <replayed>` or
// `NOT_RECOVERED <reason>` on each later connection; on `READ <n>` from stdin prints
// `GOT <the next n messages>`; `QUIT` closes cleanly and exits.
"use strict";

const path = require("path");
const readline = require("readline");
const GatewayRsSocket = require(path.join(__dirname, "..", "..", "clients", "js", "gatewayrs.js"));

// One URL, or several (comma-separated): the gateways to fail over to.
const urls = process.argv[2].split(",");
const sock = new GatewayRsSocket(urls.length > 1 ? urls : urls[0], { ackEvery: 7, minBackoffMs: 50, maxBackoffMs: 200 });
const got = [];
let want = null;

function check() {
  if (want !== null && got.length >= want) {
    console.log("GOT " + got.splice(0, want).join(" "));
    want = null;
  }
}

sock.onrecovery = (r) => {
  if (r.first) console.log("ID " + r.clientId);
  else if (r.resumed) console.log("RESUMED " + r.clientId + " " + r.replayed);
  else console.log("NOT_RECOVERED " + r.reason);
};
sock.onmessage = (data) => {
  got.push(data);
  check();
};
readline.createInterface({ input: process.stdin }).on("line", (line) => {
  const [cmd, n] = line.trim().split(" ");
  if (cmd === "READ") {
    want = Number(n);
    check();
  } else if (cmd === "QUIT") {
    sock.onclose = () => process.exit(0);
    sock.close();
  }
});
