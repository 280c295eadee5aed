"""The local servers the platform starts for itself on loopback (embedded PostgreSQL, a
Kafka broker, an OpenSearch node, Redis), apart from the client adapters the services
talk to (warriors/adapters/). Their common shape and process handling: base.py."""

from warriors.servers.base import LocalServer, ServerError, free_port

__all__ = ["LocalServer", "ServerError", "free_port"]
