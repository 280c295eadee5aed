"""The search index, engine-neutral (pure: no I/O): its settings and mappings (the seed's),
the documents, and the queries the query service sends. The same bodies go to
Elasticsearch 8/9 and OpenSearch 2.x.
"""

from typing import Any

from warriors.readside.search_terms import MAX_WORD_CHARS, MAX_WORDS, SYNONYMS

ALIAS = "warriors"
INDEX_PREFIX = "warriors-"  # the indexes behind the alias: warriors-<generation>
MAX_RESULTS = 50
MAX_SUGGESTIONS = 10


def index_name(generation: int) -> str:
    return f"{INDEX_PREFIX}{generation:06d}"


def generation_of(index: str) -> int:
    return int(index.removeprefix(INDEX_PREFIX))


def index_settings(shards: int, replicas: int, refresh_interval: str) -> dict[str, Any]:
    return {
        "number_of_shards": shards,
        "number_of_replicas": replicas,
        "refresh_interval": refresh_interval,
        "analysis": {
            "analyzer": {
                "warrior_analyzer": {
                    "type": "custom",
                    "tokenizer": "standard",
                    "filter": ["lowercase", "asciifolding", "warrior_synonym"],
                },
                # Completion input: lower case and accents folded, so `jos` suggests José.
                "warrior_suggest": {
                    "type": "custom",
                    "tokenizer": "keyword",
                    "filter": ["lowercase", "asciifolding"],
                },
            },
            "filter": {
                "warrior_synonym": {"type": "synonym", "synonyms": [", ".join(group) for group in SYNONYMS]}
            },
        },
    }


MAPPINGS: dict[str, Any] = {
    "dynamic": "strict",
    "properties": {
        "id": {"type": "keyword"},
        "name": {
            "type": "text",
            "analyzer": "warrior_analyzer",
            "fields": {
                "keyword": {"type": "keyword"},
                "suggest": {"type": "completion", "analyzer": "warrior_suggest"},
            },
        },
        "dob": {"type": "date"},
        "fight_skills": {
            "type": "text",
            "analyzer": "warrior_analyzer",
            "fields": {"keyword": {"type": "keyword"}},
        },
        "created_at": {"type": "date"},
        "updated_at": {"type": "date", "index": False},
        "version": {"type": "integer"},
    },
}


def search_body(term: str, limit: int) -> dict[str, Any]:
    """Names weigh three times skills; each word may be a typo (fuzziness AUTO, the first
    letter right, its 10 closest terms) and the last one a prefix (its first 20 terms).
    The term goes in as text to analyze, never as query syntax, so any character is
    harmless; like PostgreSQL's search, only its first MAX_WORDS words of MAX_WORD_CHARS
    letters count, which bounds the engine's work for any term (a long random string made
    it expand thousands of fuzzy terms)."""
    term = " ".join(word[:MAX_WORD_CHARS] for word in term.split()[:MAX_WORDS])
    fields = ["name^3", "fight_skills^2"]
    fuzzy = {"query": term, "fields": fields, "fuzziness": "AUTO", "prefix_length": 1, "max_expansions": 10}
    prefix = {"query": term, "type": "bool_prefix", "fields": fields, "max_expansions": 20}
    return {
        "size": min(limit, MAX_RESULTS),
        "query": {
            "bool": {
                "should": [
                    {"multi_match": fuzzy},
                    {"multi_match": prefix},
                ],
                "minimum_should_match": 1,
            }
        },
        "sort": ["_score", {"created_at": "desc"}, {"id": "asc"}],
    }  # fmt: skip


def newest_body(limit: int) -> dict[str, Any]:
    return {"size": min(limit, MAX_RESULTS), "query": {"match_all": {}},
            "sort": [{"created_at": "desc"}, {"id": "desc"}]}  # fmt: skip


def suggest_body(prefix: str, limit: int) -> dict[str, Any]:
    return {
        "_source": ["name"],
        "suggest": {
            "names": {
                "prefix": prefix,
                "completion": {
                    "field": "name.suggest",
                    "size": min(limit, MAX_SUGGESTIONS),
                    "skip_duplicates": True,
                },
            }
        },
    }


def suggestions(response: dict[str, Any]) -> list[str]:
    options = response["suggest"]["names"][0]["options"]
    return sorted({option["_source"]["name"] for option in options}, key=str.casefold)


def document(warrior: dict[str, Any]) -> dict[str, Any]:
    """A warrior as the index keeps it (the Read API's JSON, by field name)."""
    return {key: warrior[key] for key in MAPPINGS["properties"]}
