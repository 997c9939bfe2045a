"""A webhook receiver for `bench.webhooks`: answers every POST 204 at once and appends what it
got to `RECEIVER_LOG` (one JSON line per delivery: the Standard Webhooks headers, the body,
and the wall-clock time it arrived). Signatures are checked afterwards by the benchmark, with
the endpoint's secret, so the receiver's own work stays small and constant.

    RECEIVER_LOG=deliveries.jsonl uvicorn bench.receiver:app --port 9000
"""

from __future__ import annotations

import json
import os
import time
from typing import Any

from starlette.types import Receive, Scope, Send

_log = open(os.environ["RECEIVER_LOG"], "a", encoding="utf-8")  # noqa: SIM115 (process-wide)


async def app(scope: Scope, receive: Receive, send: Send) -> None:
    if scope["type"] != "http":
        return
    body = b""
    more = True
    while more:
        message = await receive()
        body += message.get("body", b"")
        more = message.get("more_body", False)
    received_at = time.time()
    headers: dict[str, Any] = {
        name.decode("latin-1"): value.decode("latin-1") for name, value in scope["headers"]
    }
    _log.write(
        json.dumps(
            {
                "received_at": received_at,
                "id": headers.get("webhook-id"),
                "timestamp": headers.get("webhook-timestamp"),
                "signature": headers.get("webhook-signature"),
                "body": body.decode("utf-8"),
            }
        )
        + "\n"
    )
    _log.flush()
    await send({"type": "http.response.start", "status": 204, "headers": []})
    await send({"type": "http.response.body", "body": b""})
