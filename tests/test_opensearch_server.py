"""The development/test OpenSearch node: a real server (Maven Central jars, one JVM),
with the analysis the search needs (asciifolding, synonyms), the completion suggester,
external versioning, and a start/stop life cycle that other processes can drive."""

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from warriors.servers import free_port
from warriors.servers.opensearch_server import OpenSearchServer

INDEX_SETTINGS: dict[str, Any] = {
    "settings": {
        "number_of_shards": 1,
        "number_of_replicas": 0,
        "analysis": {
            "filter": {
                "warrior_synonyms": {
                    "type": "synonym",
                    "synonyms": [
                        "martial arts, combat, fighting",
                        "sword, blade, katana",
                        "kick, strike, punch",
                    ],
                }
            },
            "analyzer": {
                "warrior_analyzer": {
                    "type": "custom",
                    "tokenizer": "standard",
                    "filter": ["lowercase", "asciifolding", "warrior_synonyms"],
                }
            },
        },
    },
    "mappings": {
        "properties": {
            "name": {
                "type": "text",
                "analyzer": "warrior_analyzer",
                "fields": {"keyword": {"type": "keyword"}, "suggest": {"type": "completion"}},
            },
            "weapon": {"type": "text", "analyzer": "warrior_analyzer"},
        }
    },
}


@pytest.fixture(scope="module")
def server() -> Iterator[OpenSearchServer]:
    # Not under pytest's temporary root: another pytest session resets that root to mode
    # 0700, which would lock out the node's own user (warriors-search when run as root).
    folder = Path(tempfile.mkdtemp(prefix="warriors-test-os-"))
    node = OpenSearchServer(folder / "opensearch", free_port())
    node.start()
    try:
        yield node
    finally:
        node.stop()
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="module")
def client(server: OpenSearchServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url(), timeout=30.0) as http:
        yield http


def _index(client: httpx.Client, index: str, doc: str, version: int, body: dict[str, str]) -> httpx.Response:
    return client.put(
        f"/{index}/_doc/{doc}",
        params={"version": version, "version_type": "external", "refresh": "true"},
        json=body,
    )


def _hit_names(client: httpx.Client, index: str, field: str, text: str) -> list[str]:
    response = client.post(f"/{index}/_search", json={"query": {"match": {field: text}}})
    response.raise_for_status()
    return [hit["_source"]["name"] for hit in response.json()["hits"]["hits"]]


def test_start_is_idempotent(server: OpenSearchServer) -> None:
    pid = server.pid()
    assert server.running()
    assert server.start() == server.url()
    assert server.pid() == pid  # the same JVM, not a second one


def test_node_is_opensearch_2_19_on_loopback(client: httpx.Client, server: OpenSearchServer) -> None:
    info = client.get("/").json()
    assert info["version"]["distribution"] == "opensearch"
    assert info["version"]["number"].startswith("2.19.")
    assert server.url().startswith("http://127.0.0.1:")
    assert client.get("/_cluster/health").json()["status"] in ("yellow", "green")


def test_analysis_completion_and_external_versions(client: httpx.Client) -> None:
    created = client.put("/warriors", json=INDEX_SETTINGS)
    assert created.status_code == 200, created.text
    musashi = {"name": "Miyamoto Musashi", "weapon": "katana"}
    assert _index(client, "warriors", "w1", 5, {"name": "José Aldo", "weapon": "fists"}).status_code == 201
    assert _index(client, "warriors", "w2", 7, musashi).status_code == 201

    assert _hit_names(client, "warriors", "name", "jose") == ["José Aldo"]  # asciifolding
    assert _hit_names(client, "warriors", "weapon", "blade") == ["Miyamoto Musashi"]  # synonyms

    suggest = client.post(
        "/warriors/_search",
        json={"suggest": {"names": {"prefix": "miya", "completion": {"field": "name.suggest"}}}},
    )
    suggest.raise_for_status()
    options = suggest.json()["suggest"]["names"][0]["options"]
    assert [option["text"] for option in options] == ["Miyamoto Musashi"]

    # An older external version is refused; the stored document is unchanged.
    stale = _index(client, "warriors", "w2", 6, {"name": "Stale Musashi", "weapon": "bokken"})
    assert stale.status_code == 409
    assert stale.json()["error"]["type"] == "version_conflict_engine_exception"
    assert client.get("/warriors/_doc/w2").json()["_version"] == 7
    assert _index(client, "warriors", "w2", 8, {"name": "Musashi", "weapon": "two swords"}).status_code == 200


def test_stop_then_start_again_keeps_the_data(server: OpenSearchServer, client: httpx.Client) -> None:
    assert client.put("/lifecycle", json={"settings": {"number_of_replicas": 0}}).status_code == 200
    assert _index(client, "lifecycle", "a", 1, {"name": "kept"}).status_code == 201

    url = server.url()
    server.stop()
    assert not server.running()
    assert server.pid() is None
    with pytest.raises(httpx.ConnectError):
        httpx.get(url)
    server.stop()  # stopping a stopped node is a no-op

    assert server.start() == url
    assert server.start() == url
    assert server.running()
    assert client.get("/lifecycle/_doc/a").json()["_source"] == {"name": "kept"}
