"""PostgreSQL and Redis for a peer of `make bench-peer`, on loopback, with the Rust peer's
schema (yogimathius/api-in-stress) in one database: its shard-1 tables, and views named as
its primary's tables over them (its reads go to the primary, its writes to a shard), and
the generator's skills in its `skills` table so that it stores what it is sent.

    .venv/bin/python -m bench.peer_stores --dir /tmp/peer-stores
    # writes DATABASE_URL, PRIMARY_DATABASE_URL and REDIS_URL for the peer into
    # /tmp/peer-stores/peer.env (mode 0600); Ctrl-C stops both servers

The same PostgreSQL build and settings as `make run`'s embedded server, so that the two
implementations' databases are alike. docs/benchmarks.md says how the peer is patched to
read these variables.
"""

import argparse
import json
import signal
import threading
from pathlib import Path

import psycopg

from bench.tools import ROOT
from warriors.secret_files import write_secret
from warriors.servers import free_port
from warriors.servers.embedded_postgres import EmbeddedPostgres
from warriors.servers.redis_server import RedisServer

SCHEMA = """
CREATE TABLE IF NOT EXISTS warriors_1 (id VARCHAR PRIMARY KEY, name VARCHAR NOT NULL, dob VARCHAR NOT NULL);
CREATE TABLE IF NOT EXISTS skills (id SERIAL PRIMARY KEY, name VARCHAR NOT NULL UNIQUE);
CREATE TABLE IF NOT EXISTS warrior_skills_1 (
    id SERIAL PRIMARY KEY,
    warrior_id VARCHAR NOT NULL REFERENCES warriors_1 (id),
    skill_id INT NOT NULL REFERENCES skills (id)
);
CREATE INDEX IF NOT EXISTS idx_warrior_skills_warrior_id_skill_id ON warrior_skills_1 (warrior_id, skill_id);
CREATE OR REPLACE VIEW warriors AS SELECT * FROM warriors_1;
CREATE OR REPLACE VIEW warrior_skills AS SELECT * FROM warrior_skills_1;
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dir", type=Path, required=True, help="the servers' data folder")
    args = parser.parse_args()
    postgres = EmbeddedPostgres(args.dir / "postgres", free_port())
    redis = RedisServer(args.dir / "redis", free_port())
    url = postgres.start()
    redis_url = redis.start()
    skills = json.loads((ROOT / "bench" / "loadgen" / "words.json").read_text())["skills"]
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(SCHEMA)
        conn.cursor().executemany(
            "INSERT INTO skills (name) VALUES (%s) ON CONFLICT DO NOTHING", [(s,) for s in skills]
        )
    env_file = args.dir / "peer.env"  # passwords inside: mode 0600, never printed
    write_secret(env_file, f"DATABASE_URL={url}\nPRIMARY_DATABASE_URL={url}\nREDIS_URL={redis_url}\n")
    print(f"the peer's environment is in {env_file} (mode 0600); Ctrl-C stops the servers", flush=True)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        stop.wait()
    except KeyboardInterrupt:
        pass
    finally:
        redis.stop()
        postgres.stop()


if __name__ == "__main__":
    main()
