"""Adapters at the edges: the clients the services talk to (Kafka, the search engine, Redis)."""
