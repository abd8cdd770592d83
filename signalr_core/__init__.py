"""signalr_core: an ASGI implementation of the ASP.NET Core SignalR server."""
