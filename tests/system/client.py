"""Clients of the system under test: REST against one chosen instance (or HAProxy), and the
official SignalR client (``hub_client.mjs``) as a long-lived Node process."""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from tests.services import stop_process, wait_until
from tests.system.catalog import password, run_body
from tests.system.harness import ROOT

HUB_CLIENT = Path(__file__).with_name("hub_client.mjs")
FINAL = frozenset({"Success", "NoData", "Failed", "Cancelled"})


@dataclass
class Session:
    """A logged-in user: ``token`` works on every instance (shared keys)."""

    user: str
    token: str

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}


def login(base: str, user: str) -> Session:
    response = httpx.post(
        f"{base}/api/auth/login",
        json={
            "dbUsername": user,
            "dbPassword": password(user),
            "databaseId": "db-pg",
            "managerId": "m1",
            "streamId": "s1",
        },
        timeout=30,
    )
    assert response.status_code == 200, response.text
    return Session(user, response.json()["accessToken"])


def post_run(base: str, session: Session, group_id: str) -> httpx.Response:
    return httpx.post(
        f"{base}/api/runs", json=run_body(group_id), headers=session.headers, timeout=30
    )


def start_run(base: str, session: Session, group_id: str) -> str:
    response = post_run(base, session, group_id)
    assert response.status_code == 201, response.text
    run_id: str = response.json()["runId"]
    return run_id


def get_run(base: str, session: Session, run_id: str) -> dict[str, Any]:
    response = httpx.get(f"{base}/api/runs/{run_id}", headers=session.headers, timeout=30)
    assert response.status_code == 200, response.text
    state: dict[str, Any] = response.json()
    return state


def wait_final(base: str, session: Session, run_id: str, timeout: float) -> dict[str, Any]:
    def final() -> dict[str, Any] | None:
        try:
            state = get_run(base, session, run_id)
        except httpx.TransportError:
            return None  # the instance asked may be restarting
        return state if state["status"] in FINAL else None

    return wait_until(final, timeout, f"run {run_id} to end", 0.2)


def list_files(base: str, session: Session, run_id: str) -> dict[str, Any]:
    response = httpx.get(f"{base}/api/runs/{run_id}/files", headers=session.headers, timeout=30)
    assert response.status_code == 200, response.text
    files: dict[str, Any] = response.json()
    return files


def cancel(base: str, session: Session, run_id: str) -> httpx.Response:
    return httpx.post(f"{base}/api/runs/{run_id}/cancel", headers=session.headers, timeout=30)


def download(url: str, session: Session | None = None) -> bytes:
    """GET ``url`` (a signed link, or a path with ``session``'s Bearer token) in full."""
    headers = session.headers if session else {}
    with httpx.stream("GET", url, headers=headers, timeout=60) as response:
        assert response.status_code == 200, response.read()
        return response.read()


@dataclass
class HubClient:
    """``hub_client.mjs``: its JSON lines land in a file that the test reads as they come."""

    name: str
    proc: subprocess.Popen[bytes]
    out_path: Path
    err_path: Path
    _seen: list[dict[str, Any]] = field(default_factory=list)

    @classmethod
    def start(
        cls,
        directory: Path,
        name: str,
        hub_url: str,
        session: Session,
        pin: str | None = None,
        transport: str = "WebSockets",
    ) -> HubClient:
        node = shutil.which("node")
        assert node is not None, "node is not installed (the official client runs on Node)"
        out_path, err_path = directory / f"{name}.jsonl", directory / f"{name}.err"
        command = [node, str(HUB_CLIENT), "--hub", hub_url, "--token", session.token]
        command += ["--client", name, "--transport", transport]
        if pin is not None:
            command += ["--pin", pin]
        with out_path.open("wb") as out, err_path.open("wb") as err:
            proc = subprocess.Popen(
                command, cwd=ROOT, stdin=subprocess.PIPE, stdout=out, stderr=err
            )
        client = cls(name, proc, out_path, err_path)
        try:
            line = client.wait_for(lambda x: x["type"] in {"connected", "connect_error"}, 30)
            assert line["type"] == "connected", f"{name} could not connect: {line}"
        except BaseException:
            client.stop()
            raise
        return client

    def lines(self) -> list[dict[str, Any]]:
        text = self.out_path.read_text(encoding="utf-8")
        # The last line may be half written.
        return [json.loads(x) for x in text.split("\n")[:-1] if x]

    def wait_for(
        self, predicate: Callable[[dict[str, Any]], bool], timeout: float, after: int = 0
    ) -> dict[str, Any]:
        """The first line (from index ``after``) that matches; fails on timeout."""

        def find() -> dict[str, Any] | None:
            for line in self.lines()[after:]:
                if predicate(line):
                    return line
            if self.proc.poll() is not None:
                raise AssertionError(f"{self.name} exited: {self.describe()}")
            return None

        try:
            return wait_until(find, timeout, f"a line of {self.name}", 0.02)
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n{self.describe()}") from None

    def subscribe(self, run_id: str) -> dict[str, Any]:
        count = len(self.lines())
        self._send(f"subscribe {run_id}")
        line = self.wait_for(
            lambda x: x["type"] in {"state", "subscribe_error"} and x["runId"] == run_id,
            15,
            after=count,
        )
        assert line["type"] == "state", f"SubscribeRun failed: {line}"
        state: dict[str, Any] = line["state"]
        return state

    def wait_run_final(self, run_id: str, timeout: float) -> dict[str, Any]:
        """The ``run.updated`` event with a final status (or a final SubscribeRun state)."""
        return self.wait_for(
            lambda x: (
                (
                    x["type"] == "event"
                    and x["name"] == "run.updated"
                    and x["payload"]["runId"] == run_id
                    and x["payload"]["status"] in FINAL
                )
                or (x["type"] == "state" and x["runId"] == run_id and x["state"]["status"] in FINAL)
            ),
            timeout,
        )

    def final_status(self, run_id: str, timeout: float) -> str:
        """The run's final status, from its last ``run.updated`` or a SubscribeRun state."""
        line = self.wait_run_final(run_id, timeout)
        status: str = (
            line["payload"]["status"] if line["type"] == "event" else line["state"]["status"]
        )
        return status

    def events(self, run_id: str, name: str | None = None) -> list[dict[str, Any]]:
        return [
            x
            for x in self.lines()
            if x["type"] == "event"
            and x["payload"]["runId"] == run_id
            and (name is None or x["name"] == name)
        ]

    def of_type(self, kind: str) -> list[dict[str, Any]]:
        return [x for x in self.lines() if x["type"] == kind]

    def stop(self) -> None:
        if self.proc.poll() is None:
            self._send("stop")
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                stop_process(self.proc)
        if self.proc.stdin is not None:
            self.proc.stdin.close()

    def describe(self) -> str:
        err = self.err_path.read_text(errors="replace")[-2000:]
        lines = self.out_path.read_text(errors="replace")[-6000:]
        return f"--- {self.name} stdout:\n{lines}\n--- {self.name} stderr:\n{err}"

    def _send(self, text: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(text.encode() + b"\n")
        self.proc.stdin.flush()


@dataclass
class HubClients:
    """Starts hub clients through HAProxy; the fixture stops whichever are left at teardown."""

    directory: Path
    hub_url: str
    started: list[HubClient] = field(default_factory=list)

    def start(
        self, name: str, session: Session, pin: str | None = None, transport: str = "WebSockets"
    ) -> HubClient:
        client = HubClient.start(self.directory, name, self.hub_url, session, pin, transport)
        self.started.append(client)
        return client

    def stop_all(self) -> None:
        for client in self.started:
            client.stop()
