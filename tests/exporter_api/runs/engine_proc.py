"""A RunEngine in a process of its own, for the takeover tests to SIGKILL.

``python -m tests.exporter_api.runs.engine_proc CONFIG DATA_DIR STATE_URL BODY_JSON HEARTBEAT_S
TAKEOVER_S`` starts one run of ``BODY_JSON`` as USER1, prints ``{"runId": ..., "instanceId":
...}`` on a line of its own and then drives the run until it is killed.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import anyio

from exporter_api.config import load_config
from tests.exporter_api.runs.conftest import USER1, USER1_PASSWORD
from tests.exporter_api.runs.enginekit import U1, engine_kit, plan

READY = '{"runId"'


async def main(argv: list[str]) -> None:
    config_path, data_dir, state_url, body, heartbeat_s, takeover_s = argv
    config = load_config(Path(config_path))
    async with engine_kit(
        config,
        Path(data_dir),
        {"sess-1": (USER1, USER1_PASSWORD)},
        state_url=state_url,
        heartbeat_s=float(heartbeat_s),
        takeover_after_s=float(takeover_s),
    ) as kit:
        state = await kit.engine.start(U1, plan(config, json.loads(body)))
        line = json.dumps({"runId": state.run_id, "instanceId": kit.engine.instance_id})
        print(line, flush=True)
        await anyio.sleep_forever()


if __name__ == "__main__":
    anyio.run(main, sys.argv[1:])
