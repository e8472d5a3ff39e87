// Drives clients/js/gatewayrs.js (the browser helper) from Node for tests/recovery.rs, with
// Node's WebSocket (`node --experimental-websocket` on Node 20, built in from 22).
//
// Prints `ID <client id>` when first connected, `RESUMED <client id> <replayed>` or
// `NOT_RECOVERED <reason>` on each later connection; on `READ <n>` from stdin prints
// `GOT <the next n messages>`; `SEND <text>...` sends each and prints `SENT`; `RESENT` prints
// `RESENT <n> LOST <n>` of the last resume; `QUIT` closes cleanly and exits.
"use strict";

const path = require("path");
const readline = require("readline");
const GatewayRsSocket = require(path.join(__dirname, "..", "..", "clients", "js", "gatewayrs.js"));

// One URL, or several (comma-separated): the gateways to fail over to.
const urls = process.argv[2].split(",");
const sock = new GatewayRsSocket(urls.length > 1 ? urls : urls[0], { ackEvery: 7, minBackoffMs: 50, maxBackoffMs: 200 });
const got = [];
let want = null;
let last = { resent: 0, unsentLost: 0 };

function check() {
  if (want !== null && got.length >= want) {
    console.log("GOT " + got.splice(0, want).join(" "));
    want = null;
  }
}

sock.onrecovery = (r) => {
  last = r;
  if (r.first) console.log("ID " + r.clientId);
  else if (r.resumed) console.log("RESUMED " + r.clientId + " " + r.replayed);
  else console.log("NOT_RECOVERED " + r.reason);
};
sock.onmessage = (data) => {
  got.push(data);
  check();
};
readline.createInterface({ input: process.stdin }).on("line", (line) => {
  const [cmd, ...args] = line.trim().split(" ");
  if (cmd === "READ") {
    want = Number(args[0]);
    check();
  } else if (cmd === "SEND") {
    for (const text of args) {
      if (!sock.send(text)) throw new Error("not connected");
    }
    console.log("SENT");
  } else if (cmd === "RESENT") {
    console.log("RESENT " + last.resent + " LOST " + last.unsentLost);
  } else if (cmd === "QUIT") {
    sock.onclose = () => process.exit(0);
    sock.close();
  }
});
