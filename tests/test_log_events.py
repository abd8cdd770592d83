"""One naming style for log events, in both packages: constant snake_case names, the thing first
and what happened to it after (``run_finished``, ``connection_opened``, ``backplane_reconnected``),
no dotted or component-prefixed names (``connection_opened``, ``redis_backplane_...``): the
logger's context, not the event name, says where a line comes from."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("signalr_core", "exporter_api")
LEVELS = {"debug", "info", "warning", "error", "exception", "critical", "msg"}
EVENT = re.compile(r"^[a-z][a-z0-9]*(_[a-z0-9]+)*$")
OLD_STYLES = re.compile(r"^(signalr\.[a-z_]+|redis_backplane_[a-z_]+)$")
# The names of the old styles and what they became (for a branch that still logs one).
RENAMED = {
    "redis_backplane_announce_failed": "backplane_announce_failed",
    "redis_backplane_bad_message": "backplane_message_malformed",
    "redis_backplane_client_result_reply_dropped": "backplane_result_reply_dropped",
    "redis_backplane_client_result_reply_failed": "backplane_result_reply_failed",
    "redis_backplane_close_failed": "backplane_close_failed",
    "redis_backplane_connected": "backplane_connected",
    "redis_backplane_connection_lost": "backplane_connection_lost",
    "redis_backplane_goodbye_failed": "backplane_goodbye_failed",
    "redis_backplane_group_command_dropped": "backplane_group_command_dropped",
    "redis_backplane_group_command_failed": "backplane_group_command_failed",
    "redis_backplane_no_subscriber": "backplane_subscriber_missing",
    "redis_backplane_partial_delivery": "backplane_delivery_incomplete",
    "redis_backplane_peer_joined": "backplane_peer_joined",
    "redis_backplane_peer_lost": "backplane_peer_lost",
    "redis_backplane_ready": "backplane_ready",
    "redis_backplane_reconnected": "backplane_reconnected",
    "redis_backplane_remote_close": "backplane_remote_close_applied",
    "redis_backplane_subscribe_failed": "backplane_subscribe_failed",
    "redis_backplane_subscribe_unconfirmed": "backplane_subscribe_unconfirmed",
    "redis_backplane_subscriber_lost": "backplane_subscriber_lost",
    "redis_backplane_unsubscribe_failed": "backplane_unsubscribe_failed",
    "signalr.authorize_policy_failed": "hub_authorization_failed",
    "signalr.client_closed": "connection_closed_by_client",
    "signalr.client_timeout": "client_timed_out",
    "signalr.connected": "connection_opened",
    "signalr.connection_adopted": "connection_adopted",
    "signalr.connection_failed": "connection_failed",
    "signalr.connection_handler_failed": "connection_handler_failed",
    "signalr.disconnected": "connection_closed",
    "signalr.handshake_failed": "handshake_failed",
    "signalr.handshake_timeout": "handshake_timed_out",
    "signalr.invocation_failed": "invocation_failed",
    "signalr.lifespan_not_started": "hub_lifespan_not_started",
    "signalr.negotiated": "connection_negotiated",
    "signalr.on_connected_failed": "hub_on_connected_failed",
    "signalr.on_disconnected_failed": "hub_on_disconnected_failed",
    "signalr.protocol_error": "client_message_rejected",
    "signalr.reconnect_timeout": "reconnect_timed_out",
    "signalr.replay_buffer_full": "replay_buffer_overflowed",
    "signalr.result_not_serializable": "result_serialization_failed",
    "signalr.slow_consumer": "slow_consumer_aborted",
    "signalr.stream_close_failed": "stream_close_failed",
    "signalr.stream_failed": "stream_failed",
    "signalr.transport_lost": "transport_lost",
    "signalr.transport_resumed": "transport_resumed",
}


def _log_calls() -> list[tuple[str, ast.Call]]:
    calls = []
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if (
                    isinstance(node, ast.Call)
                    and isinstance(node.func, ast.Attribute)
                    and node.func.attr in LEVELS
                    and "log" in ast.unparse(node.func.value).lower()
                    and node.args
                ):
                    calls.append((f"{path.relative_to(ROOT)}:{node.lineno}", node))
    return calls


def test_event_names_are_constant_snake_case() -> None:
    calls = _log_calls()
    assert len(calls) > 100  # the scan finds the service's and the library's lines
    wrong = []
    for where, call in calls:
        event = call.args[0]
        if isinstance(event, ast.JoinedStr):
            wrong.append(f"{where}: an f-string event")
        elif isinstance(event, ast.Constant) and not EVENT.match(str(event.value)):
            wrong.append(f"{where}: {event.value!r}")
    assert wrong == []


def test_no_event_name_of_the_old_styles_is_left() -> None:
    """Event names passed through a helper (``_log_failure("invocation_failed", ...)``) too."""
    left = [
        f"{path.relative_to(ROOT)}:{node.lineno}: {node.value!r} -> "
        f"{RENAMED.get(node.value, 'snake_case, no component prefix')!r}"
        for package in PACKAGES
        for path in sorted((ROOT / package).rglob("*.py"))
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8")))
        if isinstance(node, ast.Constant)
        and isinstance(node.value, str)
        and OLD_STYLES.match(node.value)
    ]
    assert left == []
