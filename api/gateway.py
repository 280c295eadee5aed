"""The single HTTP entry point (default http://127.0.0.1:8000).

It routes by path prefix as nginx does in the full stack: `/api/v1/commands/*` goes to
the command service. The query service joins it in the read-side work. Everything else
(health, metrics, OpenAPI docs) is answered by the command service for now.
"""

from fastapi import FastAPI

from api.command.app import create_app as create_command_app


def create_app() -> FastAPI:
    return create_command_app()
