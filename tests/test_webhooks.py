"""Webhooks (CONTRACT section 13), on SQLite and on PostgreSQL, with a real HTTP receiver on
loopback (`WEBHOOK_ALLOW_PRIVATE_URLS` on, as for local use).

- endpoints: the secret shown once (create, rotate), tenant isolation, API keys kept from
  secrets; URLs that are not https or resolve to non-public addresses refused, also again at
  delivery time;
- deliveries: signed per Standard Webhooks (verified by the `standardwebhooks` library), the
  body exactly the feed's event, in commit order per endpoint; a failing receiver retried on
  the schedule with the same `webhook-id` until everything arrived; a 3xx not followed; the
  endpoint disabled (and `webhook.disabled` recorded) when the whole schedule fails; manual
  retry; ping; a dead worker's lease running out and its delivery sent again;
- PostgreSQL: two workers at once never send to one endpoint at the same time, lose nothing.

The tests run the delivery worker themselves (`WebhookDeliverer.run_once`), with a clock they
move forward instead of waiting for the retry schedule.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import signal
import sys
import threading
from collections import defaultdict
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select, update
from standardwebhooks.webhooks import Webhook

from app.jobs import webhooks as webhook_jobs
from app.jobs.webhooks import WebhookDeliverer
from app.models import WebhookDelivery
from app.repositories import webhooks as outbox
from tests.conftest import ROOT, AppFactory
from tests.support import Api, User, assert_problem, create_contact, create_deal, run_cli

ALLOW = {"WEBHOOK_ALLOW_PRIVATE_URLS": True, "WEBHOOK_RETRY_SCHEDULE_SECONDS": [5, 300, 1800]}


# --- a receiver on loopback -------------------------------------------------------------------


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes

    @property
    def event(self) -> dict[str, Any]:
        body: dict[str, Any] = json.loads(self.body)
        return body


@dataclass
class Receiver:
    """Answers `statuses` in turn, then `default`; records every request."""

    port: int = 0
    requests: list[Received] = field(default_factory=list)
    statuses: list[int] = field(default_factory=list)
    default: int = 204
    answer: bytes = b""
    delay: float = 0.0
    # Set: the first request waits until it is set (a delivery in flight, for a kill).
    hold: threading.Event | None = None
    in_flight: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    most_in_flight: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    lock: threading.Lock = field(default_factory=threading.Lock)

    def url(self, path: str = "/hook") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def events(self, path: str = "/hook") -> list[dict[str, Any]]:
        return [r.event for r in self.requests if r.path == path]


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    state = Receiver()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            with state.lock:
                state.requests.append(
                    Received(self.path, {k.lower(): v for k, v in self.headers.items()}, body)
                )
                state.in_flight[self.path] += 1
                state.most_in_flight[self.path] = max(
                    state.most_in_flight[self.path], state.in_flight[self.path]
                )
                status = state.statuses.pop(0) if state.statuses else state.default
            if state.delay:
                threading.Event().wait(state.delay)
            if state.hold is not None and len(state.requests) == 1:
                state.hold.wait(30)
            with state.lock:
                state.in_flight[self.path] -= 1
            self.send_response(status)
            if 300 <= status < 400:
                self.send_header("Location", f"http://127.0.0.1:{state.port}/elsewhere")
            self.send_header("Content-Length", str(len(state.answer)))
            self.end_headers()
            self.wfile.write(state.answer)

        def log_message(self, *_: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state.port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield state
    server.shutdown()
    server.server_close()


# --- helpers ------------------------------------------------------------------------------------


class Clock:
    """Now, plus however far the test moved it on."""

    def __init__(self) -> None:
        self.offset = timedelta()

    def __call__(self) -> datetime:
        return datetime.now(UTC) + self.offset

    def advance(self, seconds: float) -> None:
        self.offset += timedelta(seconds=seconds)


@pytest.fixture
async def deliverers(api_allowed: Api) -> AsyncIterator[list[WebhookDeliverer]]:
    made: list[WebhookDeliverer] = []
    yield made
    for deliverer in made:
        await deliverer.aclose()


def new_deliverer(
    api: Api, made: list[WebhookDeliverer], clock: Clock | None = None, **settings: Any
) -> WebhookDeliverer:
    resources = api.app.state.resources
    deliverer = WebhookDeliverer(
        resources.session_factory,
        resources.settings.model_copy(update=settings),
        clock=clock or Clock(),
    )
    made.append(deliverer)
    return deliverer


async def drain(deliverer: WebhookDeliverer) -> None:
    """Serve endpoints until none has work due."""
    for _ in range(200):
        if not await deliverer.run_once():
            return
    raise AssertionError("the worker never ran out of work")


@pytest.fixture
async def api_allowed(make_api: AppFactory, database_url: str) -> Api:
    return await make_api(database_url, **ALLOW)


@pytest.fixture
async def boss(api_allowed: Api) -> User:
    return await api_allowed.register(organization_name="Acme")


async def subscribe(
    user: User, url: str, event_types: list[str] | None = None, **fields: Any
) -> dict[str, Any]:
    response = await user.post(
        "/webhooks", json={"url": url, "event_types": event_types or ["*"], **fields}
    )
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


async def deliveries(user: User, webhook_id: int) -> list[dict[str, Any]]:
    response = await user.get(f"/webhooks/{webhook_id}/deliveries", params={"page_size": 100})
    assert response.status_code == 200, response.text
    items: list[dict[str, Any]] = response.json()["items"]
    return items


def verify(secret: str, request: Received) -> dict[str, Any]:
    """What a receiver does: the official library checks the signature (or raises)."""
    payload: dict[str, Any] = Webhook(secret).verify(request.body, request.headers)
    return payload


# --- endpoints ------------------------------------------------------------------------------


async def test_the_secret_is_shown_on_create_and_rotation_only(
    boss: User, receiver: Receiver
) -> None:
    created = await subscribe(boss, receiver.url(), ["deal.*", "task.created"], description="Sync")
    secret = created["secret"]
    assert secret.startswith("whsec_")
    assert len(base64.b64decode(secret.removeprefix("whsec_"))) >= 24
    assert created["event_types"] == ["deal.*", "task.created"]
    assert created["enabled"] is True
    assert created["description"] == "Sync"

    one = (await boss.get(f"/webhooks/{created['id']}")).json()
    listed = (await boss.get("/webhooks")).json()
    assert "secret" not in one
    assert listed["total"] == 1
    assert "secret" not in listed["items"][0]

    rotated = await boss.post(f"/webhooks/{created['id']}/rotate-secret")
    assert rotated.status_code == 200, rotated.text
    assert rotated.json()["secret"].startswith("whsec_")
    assert rotated.json()["secret"] != secret

    changed = await boss.patch(
        f"/webhooks/{created['id']}", json={"event_types": ["contact.created"], "enabled": False}
    )
    assert changed.status_code == 200, changed.text
    assert changed.json()["event_types"] == ["contact.created"]
    assert changed.json()["enabled"] is False
    assert "secret" not in changed.json()

    refused = await boss.post("/webhooks", json={"url": receiver.url(), "event_types": ["nope"]})
    assert_problem(refused, 422)
    assert (await boss.delete(f"/webhooks/{created['id']}")).status_code == 204
    assert_problem(await boss.get(f"/webhooks/{created['id']}"), 404, "WEBHOOK_NOT_FOUND")


async def test_another_organizations_endpoint_is_missing(
    api_allowed: Api, boss: User, receiver: Receiver
) -> None:
    created = await subscribe(boss, receiver.url())
    stranger = await api_allowed.register(organization_name="Other")
    path = f"/webhooks/{created['id']}"
    assert_problem(await stranger.get(path), 404, "WEBHOOK_NOT_FOUND")
    assert_problem(await stranger.patch(path, json={"enabled": False}), 404)
    assert_problem(await stranger.post(f"{path}/rotate-secret"), 404)
    assert_problem(await stranger.delete(path), 404)
    assert (await stranger.get("/webhooks")).json()["total"] == 0


async def test_an_api_key_never_sees_a_secret(
    api_allowed: Api, boss: User, receiver: Receiver
) -> None:
    created = await subscribe(boss, receiver.url())
    issued = await boss.post(
        f"/organizations/{boss.organization_id}/api-keys", json={"name": "k", "role": "admin"}
    )
    headers = {"Authorization": f"Bearer {issued.json()['key']}"}
    client = api_allowed.client

    async def call(method: str, path: str, **kwargs: Any) -> Any:
        return await client.request(method, api_allowed.url(path), headers=headers, **kwargs)

    body = {"url": receiver.url(), "event_types": ["*"]}
    assert_problem(await call("POST", "/webhooks", json=body), 403, "PERMISSION_DENIED")
    rotate = await call("POST", f"/webhooks/{created['id']}/rotate-secret")
    assert_problem(rotate, 403, "PERMISSION_DENIED")
    read = await call("GET", f"/webhooks/{created['id']}")
    assert read.status_code == 200
    assert "secret" not in read.json()


@pytest.mark.parametrize(
    "url",
    [
        "http://93.184.215.14/hook",  # not https
        "https://127.0.0.1/hook",
        "https://localhost/hook",  # resolves to loopback
        "https://10.1.2.3/hook",
        "https://192.168.0.10/hook",
        "https://172.16.5.5/hook",
        "https://169.254.169.254/latest/meta-data",
        "https://[fd00:ec2::254]/",
        "https://[::1]/hook",
        "https://[::ffff:127.0.0.1]/hook",
        "https://0.0.0.0/hook",
        "https://224.0.0.1/hook",
        "https://user:pw@93.184.215.14/hook",
        "not a url",
    ],
)
async def test_urls_that_are_not_public_https_are_refused(api: Api, url: str) -> None:
    owner = await api.register()
    response = await owner.post("/webhooks", json={"url": url, "event_types": ["*"]})
    assert_problem(response, 400, "WEBHOOK_URL_NOT_ALLOWED")


async def test_a_public_https_url_is_accepted_and_a_change_is_checked_too(api: Api) -> None:
    owner = await api.register()
    created = await subscribe(owner, "https://93.184.215.14/hook")
    response = await owner.patch(
        f"/webhooks/{created['id']}", json={"url": "https://127.0.0.1/hook"}
    )
    assert_problem(response, 400, "WEBHOOK_URL_NOT_ALLOWED")


async def test_the_setting_allows_loopback_and_http(boss: User, receiver: Receiver) -> None:
    assert (await subscribe(boss, receiver.url()))["url"].startswith("http://127.0.0.1")


# --- delivery ----------------------------------------------------------------------------------


async def test_a_delivery_is_the_feeds_event_signed_per_standard_webhooks(
    api_allowed: Api, boss: User, receiver: Receiver, deliverers: list[WebhookDeliverer]
) -> None:
    endpoint = await subscribe(boss, receiver.url(), ["contact.*"])
    contact_id = await create_contact(boss, "Ann")
    await create_deal(boss, contact_id, "not a contact event")
    await drain(new_deliverer(api_allowed, deliverers))

    assert len(receiver.requests) == 1
    request = receiver.requests[0]
    payload = verify(endpoint["secret"], request)
    feed = (await boss.get("/events", params={"types": "contact.*"})).json()["items"]
    assert payload == feed[0]
    assert payload["type"] == "contact.created"
    assert request.headers["webhook-id"] == str(feed[0]["id"])
    assert request.headers["content-type"] == "application/json"

    [delivery] = await deliveries(boss, endpoint["id"])
    assert delivery["status"] == "succeeded"
    assert delivery["attempts"] == 1
    assert delivery["event_id"] == feed[0]["id"]
    assert delivery["event_type"] == "contact.created"
    assert delivery["last_response_status"] == 204
    assert delivery["duration_ms"] >= 0
    assert delivery["next_attempt_at"] is None

    metrics = (await api_allowed.client.get("/metrics")).text
    assert 'minicrm_webhook_deliveries_total{outcome="succeeded"}' in metrics


async def test_events_before_the_endpoint_existed_are_not_sent(
    api_allowed: Api, boss: User, receiver: Receiver, deliverers: list[WebhookDeliverer]
) -> None:
    await create_contact(boss, "Before")
    await subscribe(boss, receiver.url())
    await create_contact(boss, "After")
    await drain(new_deliverer(api_allowed, deliverers))
    names = [e["data"]["object"]["name"] for e in receiver.events()]
    assert names == ["After"]


async def test_a_receiver_down_for_a_while_gets_everything_in_order_with_stable_ids(
    api_allowed: Api, boss: User, receiver: Receiver, deliverers: list[WebhookDeliverer]
) -> None:
    endpoint = await subscribe(boss, receiver.url(), ["contact.created"])
    clock = Clock()
    deliverer = new_deliverer(api_allowed, deliverers, clock)
    receiver.statuses = [500, 503, 500]  # down for three attempts
    for name in ("One", "Two", "Three"):
        await create_contact(boss, name)

    await drain(deliverer)
    assert len(receiver.requests) == 1  # the first failed; the others wait behind it
    pending = await deliveries(boss, endpoint["id"])
    oldest = pending[-1]
    assert oldest["status"] == "pending"
    assert oldest["attempts"] == 1
    assert oldest["last_response_status"] == 500
    assert oldest["last_error"]
    assert oldest["next_attempt_at"] is not None
    for step in (5, 300, 1800):  # the schedule (jitter adds up to 10 %)
        await drain(deliverer)  # not due yet: nothing is sent
        count = len(receiver.requests)
        clock.advance(step * 1.1 + 1)
        await drain(deliverer)
        assert len(receiver.requests) > count

    names = [e["data"]["object"]["name"] for e in receiver.events()]
    assert names == ["One", "One", "One", "One", "Two", "Three"]
    ids = [r.headers["webhook-id"] for r in receiver.requests]
    assert len(set(ids[:4])) == 1
    assert len(set(ids)) == 3
    for request in receiver.requests:
        verify(endpoint["secret"], request)
    listed = await deliveries(boss, endpoint["id"])
    assert [d["status"] for d in listed] == ["succeeded"] * 3
    assert [d["attempts"] for d in listed] == [1, 1, 4]


async def test_events_arrive_in_commit_order(
    api_allowed: Api, boss: User, receiver: Receiver, deliverers: list[WebhookDeliverer]
) -> None:
    await subscribe(boss, receiver.url())
    for index in range(12):
        await create_contact(boss, f"C{index}")
    await drain(new_deliverer(api_allowed, deliverers))
    ids = [e["id"] for e in receiver.events()]
    assert len(ids) == 12
    assert ids == sorted(ids)


async def test_batches_of_events_none_of_them_wanted_and_pages_lose_nothing(
    api_allowed: Api,
    boss: User,
    receiver: Receiver,
    deliverers: list[WebhookDeliverer],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Small batches and pages: whole batches of events the endpoint does not want (deals)
    are passed over, and what it wants (contacts) arrives once each, in order, however the
    batches and pages fall; what was accepted is written down by the time the worker stops."""
    monkeypatch.setattr(webhook_jobs, "EVENTS_PER_BATCH", 3)
    monkeypatch.setattr(webhook_jobs, "DELIVERIES_PER_PAGE", 2)
    monkeypatch.setattr(webhook_jobs, "RECORD_EVERY", 2)
    endpoint = await subscribe(boss, receiver.url(), ["contact.*"])
    contact = await create_contact(boss, "C0")
    for index in range(7):  # deal events: two whole batches and a bit, none wanted
        created = await boss.post("/deals", json={"title": f"D{index}", "contact_id": contact})
        assert created.status_code == 201, created.text
    for index in range(1, 6):
        await create_contact(boss, f"C{index}")

    await drain(new_deliverer(api_allowed, deliverers))
    names = [e["data"]["object"]["name"] for e in receiver.events()]
    assert names == [f"C{index}" for index in range(6)]
    listed = await deliveries(boss, endpoint["id"])
    assert [d["status"] for d in listed] == ["succeeded"] * 6


async def test_a_redirect_is_not_followed(
    api_allowed: Api, boss: User, receiver: Receiver, deliverers: list[WebhookDeliverer]
) -> None:
    endpoint = await subscribe(boss, receiver.url())
    receiver.statuses = [302]
    await create_contact(boss)
    await drain(new_deliverer(api_allowed, deliverers))
    assert [r.path for r in receiver.requests] == ["/hook"]  # never /elsewhere
    [delivery] = await deliveries(boss, endpoint["id"])
    assert delivery["status"] == "pending"
    assert delivery["last_response_status"] == 302
    assert "redirect" in delivery["last_error"]


async def test_only_the_first_kib_of_the_answer_is_kept(
    api_allowed: Api, boss: User, receiver: Receiver, deliverers: list[WebhookDeliverer]
) -> None:
    endpoint = await subscribe(boss, receiver.url())
    receiver.default, receiver.answer = 200, b"x" * 5000
    await create_contact(boss)
    await drain(new_deliverer(api_allowed, deliverers))
    [delivery] = await deliveries(boss, endpoint["id"])
    assert delivery["status"] == "succeeded"
    assert delivery["last_response_body"] == "x" * 1024


async def test_the_address_is_checked_again_when_delivering(
    api_allowed: Api, boss: User, receiver: Receiver, deliverers: list[WebhookDeliverer]
) -> None:
    """An endpoint whose host now resolves to a private address gets nothing."""
    endpoint = await subscribe(boss, f"https://127.0.0.1:{receiver.port}/hook")
    await create_contact(boss)
    await drain(new_deliverer(api_allowed, deliverers, WEBHOOK_ALLOW_PRIVATE_URLS=False))
    assert receiver.requests == []
    [delivery] = await deliveries(boss, endpoint["id"])
    assert delivery["status"] == "pending"
    assert "non-public" in delivery["last_error"]


async def test_a_whole_failed_schedule_disables_the_endpoint_and_a_retry_resends(
    api_allowed: Api, boss: User, receiver: Receiver, deliverers: list[WebhookDeliverer]
) -> None:
    watcher = await subscribe(boss, receiver.url("/watcher"), ["webhook.*"])
    endpoint = await subscribe(boss, receiver.url(), ["contact.*"])
    receiver.default = 500
    clock = Clock()
    deliverer = new_deliverer(api_allowed, deliverers, clock)
    await create_contact(boss, "Lost cause")
    for _ in range(4):  # the first attempt and the schedule's three retries
        await drain(deliverer)
        clock.advance(2000 * 1.1)
    hook = [r for r in receiver.requests if r.path == "/hook"]
    assert len(hook) == 4

    state = (await boss.get(f"/webhooks/{endpoint['id']}")).json()
    assert state["enabled"] is False
    assert "4 failed attempts" in state["disabled_reason"]
    [failed] = await deliveries(boss, endpoint["id"])
    assert failed["status"] == "failed"
    assert failed["attempts"] == 4
    feed = (await boss.get("/events", params={"types": "webhook.disabled"})).json()["items"]
    assert len(feed) == 1
    assert feed[0]["data"]["object"]["id"] == endpoint["id"]
    assert feed[0]["actor"] == {"type": "system", "id": 0}
    receiver.default = 204
    await drain(deliverer)
    heard = [r for r in receiver.requests if r.path == "/watcher"]  # other endpoints hear of it
    assert heard
    assert {r.event["type"] for r in heard} == {"webhook.disabled"}
    verify(watcher["secret"], heard[-1])
    assert (await deliveries(boss, watcher["id"]))[0]["status"] == "succeeded"

    # Nothing is sent to a disabled endpoint; enabled again and retried, it arrives.
    await create_contact(boss, "While disabled")
    await drain(deliverer)
    assert len([r for r in receiver.requests if r.path == "/hook"]) == 4
    enabled = await boss.patch(f"/webhooks/{endpoint['id']}", json={"enabled": True})
    assert enabled.json()["enabled"] is True
    assert enabled.json()["disabled_reason"] is None
    retry = await boss.post(f"/webhooks/{endpoint['id']}/deliveries/{failed['id']}/retry")
    assert retry.status_code == 202, retry.text
    assert retry.json()["status"] == "pending"
    await drain(deliverer)
    [retried] = await deliveries(boss, endpoint["id"])
    assert retried["status"] == "succeeded"
    assert retried["attempts"] == 5
    names = [e["data"]["object"]["name"] for e in receiver.events()]
    assert names[-1] == "Lost cause"
    missing = await boss.post(f"/webhooks/{endpoint['id']}/deliveries/999999/retry")
    assert_problem(missing, 404, "WEBHOOK_DELIVERY_NOT_FOUND")


async def test_a_ping_goes_to_its_endpoint_only(
    api_allowed: Api, boss: User, receiver: Receiver, deliverers: list[WebhookDeliverer]
) -> None:
    pinged = await subscribe(boss, receiver.url(), ["deal.*"])
    await subscribe(boss, receiver.url("/other"), ["*"])
    response = await boss.post(f"/webhooks/{pinged['id']}/ping")
    assert response.status_code == 202, response.text
    await drain(new_deliverer(api_allowed, deliverers))
    assert [r.path for r in receiver.requests] == ["/hook"]
    payload = verify(pinged["secret"], receiver.requests[0])
    assert payload["type"] == "ping"
    assert payload["data"]["object"]["id"] == pinged["id"]
    assert "secret" not in payload["data"]["object"]
    [delivery] = await deliveries(boss, pinged["id"])
    assert delivery["event_type"] == "ping"
    assert delivery["status"] == "succeeded"


async def test_a_dead_workers_delivery_is_sent_again_after_its_lease(
    api_allowed: Api, boss: User, receiver: Receiver, deliverers: list[WebhookDeliverer]
) -> None:
    """A worker that claimed the endpoint, queued its events and died (no release) holds it
    only until its
    lease runs out; then another worker sends the delivery."""
    await subscribe(boss, receiver.url())
    await create_contact(boss)
    clock = Clock()
    factory = api_allowed.app.state.resources.session_factory
    async with factory() as session, session.begin():
        now = clock()
        claimed = await outbox.claim(session, "dead-worker", now, now + timedelta(seconds=60))
        assert claimed is not None
        [event] = await outbox.events_after(session, claimed.organization_id, claimed.position, 10)
        await outbox.add_deliveries(
            session, claimed.organization_id, claimed.id, [(event.id, event.type)], event.id, now
        )
    survivor = new_deliverer(api_allowed, deliverers, clock)
    assert await survivor.run_once() is False  # still leased to the dead worker
    assert receiver.requests == []
    clock.advance(61)
    await drain(survivor)
    assert len(receiver.events()) == 1


async def test_the_api_process_delivers_in_the_background_when_told_to(
    make_api: AppFactory, database_url: str, receiver: Receiver
) -> None:
    api = await make_api(database_url, BACKGROUND_WORKER="on", WORKER_POLL_SECONDS=0.05, **ALLOW)
    owner = await api.register()
    await subscribe(owner, receiver.url())
    await create_contact(owner, "Background")
    for _ in range(400):
        if receiver.requests:
            break
        await asyncio.sleep(0.025)
    assert [e["data"]["object"]["name"] for e in receiver.events()] == ["Background"]


# --- PostgreSQL: several workers ------------------------------------------------------------


async def test_two_workers_never_send_to_one_endpoint_at_once_and_lose_nothing(
    make_api: AppFactory, pg_url: str, receiver: Receiver
) -> None:
    api = await make_api(pg_url, **ALLOW)
    owner = await api.register()
    endpoints = [await subscribe(owner, receiver.url(f"/hook{n}")) for n in range(3)]
    receiver.delay = 0.005
    for index in range(30):
        await create_contact(owner, f"C{index}")
    made: list[WebhookDeliverer] = []
    try:
        workers = [new_deliverer(api, made) for _ in range(2)]
        expected = 30 * len(endpoints)

        async def work(deliverer: WebhookDeliverer) -> None:
            for _ in range(2000):
                if len(receiver.requests) >= expected:
                    return
                if not await deliverer.run_once():
                    await asyncio.sleep(0.01)

        await asyncio.wait_for(asyncio.gather(*(work(w) for w in workers)), 60)
    finally:
        for deliverer in made:
            await deliverer.aclose()
    for n in range(len(endpoints)):
        path = f"/hook{n}"
        ids = [e["id"] for e in receiver.events(path)]
        assert len(ids) == 30
        assert ids == sorted(ids)
        assert len(set(ids)) == 30
        assert receiver.most_in_flight[path] == 1


async def test_a_worker_killed_mid_delivery_leaves_it_to_be_sent_again(
    make_api: AppFactory, pg_url: str, receiver: Receiver
) -> None:
    """`minicrm worker` SIGKILLed while the receiver holds its request: the delivery stays
    pending, and once the lease ran out another worker sends it again, same `webhook-id`."""
    api = await make_api(pg_url, **ALLOW)
    owner = await api.register()
    endpoint = await subscribe(owner, receiver.url())
    await create_contact(owner, "Interrupted")
    receiver.hold = threading.Event()
    env = {
        **os.environ,
        "DATABASE_URL": pg_url,
        "WEBHOOK_ALLOW_PRIVATE_URLS": "true",
        # Killed long before its 2 s timeout; its lease (renewed before the request) lasts 2.5 s.
        "WEBHOOK_TIMEOUT_SECONDS": "2",
        "WEBHOOK_LEASE_SECONDS": "2.5",
        "WORKER_POLL_SECONDS": "0.05",
        "SECRET_KEY": "test-secret-key-that-is-long-enough-0123456789",
    }
    worker = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "app.cli",
        "worker",
        "--concurrency",
        "1",
        cwd=ROOT,
        env=env,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    try:
        for _ in range(600):
            if receiver.requests:
                break
            await asyncio.sleep(0.05)
        assert len(receiver.requests) == 1, "the worker never sent the delivery"
        worker.send_signal(signal.SIGKILL)
        await asyncio.wait_for(worker.wait(), 10)
    finally:
        if worker.returncode is None:
            worker.kill()
            await worker.wait()
        receiver.hold.set()
    [delivery] = await deliveries(owner, endpoint["id"])
    assert delivery["status"] == "pending"
    assert delivery["attempts"] == 0

    made: list[WebhookDeliverer] = []
    try:
        survivor = new_deliverer(api, made)
        for _ in range(400):
            await survivor.run_once()
            if len(receiver.requests) >= 2:
                break
            await asyncio.sleep(0.025)
    finally:
        for deliverer in made:
            await deliverer.aclose()
    first, second = receiver.requests[:2]
    assert first.headers["webhook-id"] == second.headers["webhook-id"]
    verify(endpoint["secret"], second)
    [delivery] = await deliveries(owner, endpoint["id"])
    assert delivery["status"] == "succeeded"


async def test_minicrm_prune_deletes_old_settled_deliveries_and_keeps_pending_ones(
    api_allowed: Api,
    boss: User,
    receiver: Receiver,
    deliverers: list[WebhookDeliverer],
    tmp_path: Path,
) -> None:
    webhook = await subscribe(boss, receiver.url(), ["contact.*"])
    for name in ("A", "B", "C"):
        await create_contact(boss, name)
    await drain(new_deliverer(api_allowed, deliverers))
    assert [d["status"] for d in await deliveries(boss, webhook["id"])] == ["succeeded"] * 3
    engine = api_allowed.app.state.resources.engine
    old = datetime.now(UTC) - timedelta(days=40)
    async with engine.begin() as conn:
        ids = [r[0] for r in await conn.execute(select(WebhookDelivery.id).order_by("id"))]
        await conn.execute(
            update(WebhookDelivery).where(WebhookDelivery.id.in_(ids[:2])).values(created_at=old)
        )
        # An old delivery still pending (its receiver was down for weeks): still to be sent.
        await conn.execute(
            update(WebhookDelivery).where(WebhookDelivery.id == ids[1]).values(status="pending")
        )
    result = await run_cli(api_allowed, tmp_path, "prune", EVENTS_RETENTION_DAYS="30")
    assert result.returncode == 0, result.stderr
    assert "webhook_deliveries_deleted=1" in result.stdout
    async with engine.connect() as conn:
        left = [r[0] for r in await conn.execute(select(WebhookDelivery.id).order_by("id"))]
    assert left == ids[1:]
