"""The audit trail of logins, runs, downloads, cancels and logouts (`AuditTrail`)."""

from exporter_api.audit.records import ACTIONS, AuditRecord
from exporter_api.audit.trail import AuditTrail, JsonLinesSink

__all__ = ["ACTIONS", "AuditRecord", "AuditTrail", "JsonLinesSink"]
