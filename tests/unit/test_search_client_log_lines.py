"""opensearch-py logs each failed request at WARNING with the whole traceback; the search
engine's client makes it one line, the exception's type and message kept (issue 12)."""

import io
import logging

from warriors.adapters.search_engine import EngineKind, SearchEngine


def test_a_failed_request_is_one_line_with_its_reason() -> None:
    SearchEngine("http://127.0.0.1:1", EngineKind.OPENSEARCH)  # installs the filter
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    client_log = logging.getLogger("opensearch")
    client_log.addHandler(handler)
    try:
        try:
            raise ConnectionRefusedError("Connect call failed ('127.0.0.1', 1)")
        except ConnectionRefusedError:
            client_log.warning("%s %s [status:%s request:%.3fs]", "GET", "http://x/_bulk", "N/A", 0.001,
                               exc_info=True)  # fmt: skip
        client_log.warning("GET http://x/_alias/warriors [status:404 request:0.002s]")  # no exception
    finally:
        client_log.removeHandler(handler)
    lines = stream.getvalue().splitlines()
    assert lines == [
        "GET http://x/_bulk [status:N/A request:0.001s]:"
        " ConnectionRefusedError: Connect call failed ('127.0.0.1', 1)",
        "GET http://x/_alias/warriors [status:404 request:0.002s]",
    ]
