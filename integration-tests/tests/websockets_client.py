#!/usr/bin/env python3
"""Talks to the gateway with Python's `websockets` library, which offers permessage-deflate by
default: checks that it was negotiated (no context takeover either way) and that text and binary
messages, long and short, come back intact through the echo worker, and a broadcast too.

    websockets_client.py WS_URL

Prints what was negotiated and PASS; exits non-zero on the first failure.
"""

import asyncio
import json
import sys

import websockets

try:  # websockets >= 13
    from websockets.asyncio.client import connect
except ImportError:  # older releases (Debian 12 ships 10.4)
    from websockets import connect


def extensions_of(ws):
    response = getattr(ws, "response", None)
    headers = response.headers if response is not None else ws.response_headers
    return headers.get("Sec-WebSocket-Extensions", "")


async def main(url):
    async with connect(url) as ws:  # compression="deflate" is the default
        ext = extensions_of(ws)
        print("negotiated:", ext)
        assert ext.startswith("permessage-deflate"), ext
        assert "server_no_context_takeover" in ext and "client_no_context_takeover" in ext, ext

        rows = [{"id": i, "symbol": "SYM%d" % i, "price": 100.5 + i, "volume": 1000 * i} for i in range(14)]
        long_text = json.dumps({"type": "prices", "rows": rows})
        for text in [long_text, "short", long_text.upper(), ""]:
            await ws.send(text)
            got = await asyncio.wait_for(ws.recv(), 10)
            assert got == text, "echo differs: %r != %r" % (got[:60], text[:60])
        data = bytes(range(256)) * 20
        await ws.send(data)
        got = await asyncio.wait_for(ws.recv(), 10)
        assert got == data, "binary echo differs"
        await ws.send("j")
        assert await asyncio.wait_for(ws.recv(), 10) == "joined"
        shout = "b:" + long_text
        await ws.send(shout)
        assert await asyncio.wait_for(ws.recv(), 10) == shout
    print("PASS: websockets %s talked compressed" % websockets.__version__)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1]))
