"""exporter_api: the export service (REST + SignalR hub /hubs/runs + anyio export engine)."""
