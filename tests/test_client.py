"""shoal.Client against a real scheduler over HTTP: typed errors, defaults, waits, paging, retries."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator

import pytest

import shoal
from api_fixtures import *  # noqa: F403  (the fixtures)
from api_fixtures import ApiServer, work_once
from shoal import Client, task_request
from shoal.core.store import Store
from shoal.sdk.http import IDLE_KEEP_S


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])  # nothing listens here once the socket closes


def test_api_errors_are_typed_and_carry_the_servers_status_and_message(client: Client) -> None:
    with pytest.raises(shoal.InvalidTask) as caught:
        client.submit_batch([task_request("a", ref="x", depends_on=["x"])])
    assert caught.value.status == 422
    assert caught.value.detail == "dependency cycle: x -> x"
    assert caught.value.errors == [{"cycle": "x -> x"}]
    assert str(caught.value) == "422: dependency cycle: x -> x"
    with pytest.raises(shoal.InvalidTask) as caught:
        client.submit("bad name")
    assert caught.value.detail[0]["loc"] == ["name"]
    with pytest.raises(shoal.NotFound) as missing:
        client.get("0" * 32)
    assert missing.value.status == 404 and "not found" in str(missing.value)
    task = client.submit("echo")
    client.cancel(task.id)
    with pytest.raises(shoal.Conflict):
        client.cancel(task.id)


def test_an_unreachable_scheduler_is_unavailable_after_the_retries() -> None:
    port = _free_port()
    with Client(f"http://127.0.0.1:{port}", token="", timeout_s=2, retries=2) as client:
        started = time.monotonic()
        with pytest.raises(shoal.Unavailable) as caught:
            client.stats()
        assert caught.value.status == 0 and f"127.0.0.1:{port}" in str(caught.value)
        # Two retries with full-jitter backoff of at most 0.05 and 0.1 s, then the error: far below
        # the 2 s timeout per try that a hang would take (generous for a loaded machine).
        assert time.monotonic() - started < 6
        with pytest.raises(shoal.Unavailable):
            client.health()


def test_a_scheduler_that_comes_up_during_the_retries_answers(api_factory: Callable[..., ApiServer]) -> None:
    """A connection that was refused sent nothing, so even a submit without a key is retried."""
    port = _free_port()
    late: list[ApiServer] = []

    def start_late() -> None:
        time.sleep(0.3)
        late.append(api_factory(port=port))

    starter = threading.Thread(target=start_late)
    starter.start()
    try:
        with Client(f"http://127.0.0.1:{port}", token="", retries=12) as client:
            handle = client.submit("echo", 1)
            assert handle.submitted is not None and handle.submitted["state"] == "queued"
    finally:
        starter.join()


def test_defaults_come_from_the_environment(
    monkeypatch: pytest.MonkeyPatch, api_factory: Callable[..., ApiServer]
) -> None:
    api = api_factory(api_token="env-token-12345")
    monkeypatch.setenv("SHOAL_API_URL", api.url + "/")
    monkeypatch.setenv("SHOAL_API_TOKEN", "env-token-12345")
    with Client() as client:
        assert client.url == api.url
        assert client.submit("echo").submitted["state"] == "queued"  # type: ignore[index]
    with Client(token="") as anonymous, pytest.raises(shoal.Unauthorized) as caught:
        anonymous.stats()
    assert caught.value.status == 401


def test_submit_passes_every_option(client: Client) -> None:
    parent = client.submit("a")
    echo = shoal.remote("echo").options(
        queue="q",
        priority=-5,
        depends_on=[parent],
        max_retries=7,
        timeout_s=12.5,
        idempotency_key="key-1",
    )
    handle = client.submit(echo, 1, 2, k="v")
    task = handle.info()
    expected = {
        "name": "echo",
        "args": [1, 2],
        "kwargs": {"k": "v"},
        "queue": "q",
        "priority": -5,
        "depends_on": [parent.id],
        "max_retries": 7,
        "timeout_s": 12.5,
        "idempotency_key": "key-1",
        "state": "pending",
    }
    assert {k: task[k] for k in expected} == expected  # type: ignore[literal-required]
    assert client.submit(echo, 1, 2, k="v").id == handle.id  # the key makes it the same task


def test_wire_requests_leave_unset_options_to_the_server(client: Client) -> None:
    assert task_request("echo") == {"name": "echo"}
    assert task_request("echo", ("a",), {"k": 1}, ref="r", depends_on=("x",), priority=0, delay_s=None) == {
        "name": "echo",
        "args": ["a"],
        "kwargs": {"k": 1},
        "ref": "r",
        "depends_on": ["x"],
        "priority": 0,
    }
    task = client.submit_request(task_request("echo", [1], delay_s=60))
    assert (task["state"], task["max_retries"], task["timeout_s"]) == ("scheduled", 3, 300.0)


def test_wait_with_no_time_answers_the_current_state(client: Client) -> None:
    handle = client.submit("echo")
    started = time.monotonic()
    assert client.wait(handle.id, timeout_s=0)["state"] == "queued"
    assert handle.state() is shoal.TaskState.QUEUED
    with pytest.raises(shoal.WaitTimeout) as caught:
        handle.result(timeout=0)
    assert caught.value.task["state"] == "queued"
    # Far below the server's default wait (30 s): none of the calls waited (generous under load).
    assert time.monotonic() - started < 15


async def test_result_waits_and_failures_raise_task_failed(client: Client, store: Store) -> None:
    ok = client.submit("echo", "hi")
    await work_once(store, result="hi")
    assert ok.result(timeout=5) == "hi"
    failing = client.submit(shoal.remote("fail").options(max_retries=0))
    await work_once(store, ok=False)
    with pytest.raises(shoal.TaskFailed) as caught:
        failing.result(timeout=5)
    assert (caught.value.state, caught.value.error) == ("failed", "boom")
    explained = failing.explain()
    assert explained["state"] == "failed" and explained["code"]


def test_iter_tasks_follows_every_page(client: Client) -> None:
    ids = {t["id"] for t in client.submit_batch([task_request("n") for _ in range(12)])}
    assert {t["id"] for t in client.iter_tasks(page=5)} == ids
    assert [t["id"] for t in client.iter_tasks(name="other")] == []


def test_a_connection_idle_past_the_servers_keep_alive_is_not_reused(
    client: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    """uvicorn closes idle keep-alive connections after 5 s; the client must not send into one."""
    first = client.submit("echo")
    pooled = client._transport._idle[-1][0]
    monkeypatch.setattr("shoal.sdk.http.time.monotonic", lambda: time.perf_counter() + 10 * IDLE_KEEP_S)
    second = client.submit("echo")
    assert pooled.sock is None  # closed instead of reused
    assert first.id != second.id


def test_pooled_connections_have_tcp_nodelay(client: Client) -> None:
    """(http.client sets it.) Else Nagle holds small writes back until the previous ones are acknowledged."""
    client.submit("echo")
    pooled = client._transport._idle[-1][0]
    assert pooled.sock is not None
    assert pooled.sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0


class _RecordingSocket:
    """A connected socket whose writes are recorded on their way out."""

    def __init__(self, real: socket.socket) -> None:
        self.real = real
        self.writes: list[bytes] = []

    def sendall(self, data: bytes) -> None:
        self.writes.append(bytes(data))
        self.real.sendall(data)

    def __getattr__(self, name: str) -> object:
        return getattr(self.real, name)


def test_a_submit_leaves_in_one_write_headers_and_body(client: Client) -> None:
    client.submit("echo")
    pooled = client._transport._idle[-1][0]
    assert pooled.sock is not None
    recording = _RecordingSocket(pooled.sock)
    pooled.sock = recording  # type: ignore[assignment]
    try:
        task = client.submit("echo", "one-write")
    finally:
        pooled.sock = recording.real
    assert task.id
    [write] = recording.writes
    head, _, body = write.partition(b"\r\n\r\n")
    assert head.startswith(b"POST /api/v1/tasks HTTP/1.1") and b'"one-write"' in body


def test_the_client_is_shared_between_threads(client: Client) -> None:
    handles: list[shoal.Handle[object]] = []
    lock = threading.Lock()

    def submit_some() -> None:
        for i in range(20):
            handle = client.submit("echo", i)
            with lock:
                handles.append(handle)

    threads = [threading.Thread(target=submit_some) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len({h.id for h in handles}) == 80
    assert sorted(t["args"][0] for t in client.iter_tasks(name="echo")) == sorted(list(range(20)) * 4)


def test_events_refused_by_the_server_raise(api_factory: Callable[..., ApiServer]) -> None:
    api = api_factory(api_token="only-the-right-one")
    with api.client(token="the-wrong-one") as client, pytest.raises(shoal.Unauthorized) as caught:
        next(client.events())
    assert caught.value.status == 401


@pytest.fixture
def no_default_client() -> Iterator[None]:
    shoal.set_default_client(None)
    yield
    shoal.set_default_client(None)


def test_task_submit_uses_the_default_client(api: ApiServer, no_default_client: None) -> None:
    with api.client() as client:
        shoal.set_default_client(client)
        handle = shoal.remote("echo").options(priority=4).submit("x")
        assert shoal.default_client() is client
        assert client.get(handle.id)["priority"] == 4


def test_arguments_json_cannot_carry_are_refused_before_sending(client: Client) -> None:
    with pytest.raises(shoal.InvalidTask, match="cannot be sent as JSON") as caught:
        client.submit("echo", {1, 2})
    assert caught.value.status == 400
    assert list(client.iter_tasks()) == []  # nothing reached the scheduler


def test_import_shoal_stays_light() -> None:
    """A producer's `import shoal` loads neither a service's stack nor Redis or pydantic."""
    import subprocess
    import sys

    heavy = {"fastapi", "starlette", "streamlit", "kubernetes", "uvicorn", "redis", "pydantic", "aiohttp"}
    code = f"import shoal, sys; print(sorted(m for m in {heavy!r} if m in sys.modules))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
