"""Adapters at the edges: servers the platform starts for itself."""
