"""Dagster for operators, end to end: the real webserver and daemon on workspace.yaml
(PostgreSQL storage), driven through the GraphQL API and a real browser.

- The rebuild job, launched through GraphQL while writes go on: the read model ends equal
  to a replay, no existing warrior ever answered 404, and every warrior written during
  the rebuild is there.
- A backfill of the daily statistics over a date range fills the expected rows.
- Headless Chromium (Debian's package) shows the asset graph and the rebuild run's page,
  and a daily statistics partition's plots: real images, decoded by the browser.
"""

import asyncio
import random
import shutil
import threading
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import httpx
import psycopg
import pytest
from selenium import webdriver
from selenium.common.exceptions import TimeoutException
from selenium.webdriver.common.action_chains import ActionChains
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support.ui import WebDriverWait

from tests.dagster_stack import DagsterStack, launch, start_dagster
from tests.history import Event, checkpoint, copy_events, head, read_model_rows, replay_into_shadow
from tests.support import ROOT, ProjectorProcess, ServiceProcess, wait_for

COMMANDS = "/api/v1/commands/warriors"
QUERIES = "/api/v1/queries/warriors"
SCREENSHOTS = ROOT / "test-output" / "screenshots"


@pytest.fixture(scope="module")
def analytics_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The stack's ANALYTICS_DIR: the daily statistics' Parquet files go here, not into .data."""
    return tmp_path_factory.mktemp("analytics")


@pytest.fixture(scope="module")
def dagster(
    postgres: str, tmp_path_factory: pytest.TempPathFactory, analytics_dir: Path
) -> Iterator[DagsterStack]:
    with pytest.MonkeyPatch.context() as environment:
        environment.setenv("ANALYTICS_DIR", str(analytics_dir))  # the processes inherit it
        stack = start_dagster(postgres, tmp_path_factory.mktemp("dagster-home"))
    yield stack
    stack.stop()


def create(client: httpx.Client, name: str) -> str:
    response = client.post(COMMANDS, json={"name": name, "dob": "1990-05-05", "fight_skills": ["Bo"]})
    assert response.status_code == 202, response.text
    return str(response.json()["id"])


class Traffic:
    """Writers creating warriors and readers fetching existing ones, until stopped."""

    def __init__(self, base_url: str, headers: dict[str, str], existing: list[str]) -> None:
        self.base_url = base_url
        self.headers = headers
        self.existing = existing
        self.written: list[str] = []
        self.reads = 0
        self.bad_reads: list[tuple[str, int]] = []
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._write), threading.Thread(target=self._read),
                         threading.Thread(target=self._read)]  # fmt: skip

    def __enter__(self) -> "Traffic":
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=30)

    def _write(self) -> None:
        with httpx.Client(base_url=self.base_url, headers=self.headers, timeout=10) as client:
            while not self._stop.is_set():
                self.written.append(create(client, f"During {len(self.written)}"))

    def _read(self) -> None:
        with httpx.Client(base_url=self.base_url, headers=self.headers, timeout=10) as client:
            while not self._stop.is_set():
                warrior_id = random.choice(self.existing)
                status = client.get(f"{QUERIES}/{warrior_id}").status_code
                self.reads += 1
                if status != 200:
                    self.bad_reads.append((warrior_id, status))


def test_rebuild_through_graphql_under_live_writes(
    dagster: DagsterStack, service: ServiceProcess, projector: ProjectorProcess, postgres: str
) -> None:
    with httpx.Client(base_url=service.base_url, headers=service.headers, timeout=10) as client:
        existing = [create(client, f"Before {i}") for i in range(200)]
    wait_for(lambda: checkpoint(postgres) >= head(postgres), timeout=60, what="the projector to catch up")

    with Traffic(service.base_url, service.headers, existing) as traffic:
        wait_for(lambda: len(traffic.written) >= 20, timeout=30, what="writes before the rebuild")
        written_before = len(traffic.written)
        run_id = launch(dagster, "rebuild_projection")
        status = dagster.wait_for_run(run_id)
        written_during = len(traffic.written) - written_before
    assert status == "SUCCESS", f"rebuild run {run_id} ended {status}; see {dagster.daemon.log_path}"
    assert written_during > 0, "no write overlapped the rebuild"
    assert traffic.reads > 0
    assert traffic.bad_reads == [], "an existing warrior did not answer 200 during the rebuild"

    wait_for(lambda: checkpoint(postgres) >= head(postgres), timeout=60, what="the projector after the swap")
    rows = read_model_rows(postgres)
    ids = {str(row[0]) for row in rows}
    assert set(traffic.written) <= ids, "a warrior written during the rebuild is missing"
    assert rows == _replayed(postgres)
    with psycopg.connect(postgres) as conn:
        assert conn.execute("SELECT total FROM warrior_count").fetchone() == (len(rows),)

    materializations = dagster.graphql(
        """query($id: ID!) { runOrError(runId: $id) { ... on Run { eventConnection { events {
           __typename ... on MaterializationEvent { assetKey { path } metadataEntries { label } } }
           } } } }""",
        {"id": run_id},
    )["runOrError"]["eventConnection"]["events"]
    rebuilt = [e for e in materializations if e["__typename"] == "MaterializationEvent"]
    assert rebuilt
    assert rebuilt[0]["assetKey"]["path"] == ["warriors_read_model"]
    assert "swap_milliseconds" in {m["label"] for m in rebuilt[0]["metadataEntries"]}


def _replayed(url: str) -> list[tuple[object, ...]]:
    return asyncio.run(replay_into_shadow(url))


def test_backfill_of_daily_statistics_through_graphql(dagster: DagsterStack, postgres: str) -> None:
    days = ["2026-02-01", "2026-02-02", "2026-02-03"]
    for number, day in enumerate(days, start=1):
        created = datetime.fromisoformat(day).replace(hour=10, tzinfo=UTC)
        events: list[Event] = [
            (
                uuid.uuid4(),
                "WarriorCreated",
                1,
                {"name": f"Backfilled {i}", "dob": "2000-01-01", "fight_skills": ["Judo"]},
            )
            for i in range(number * 10)
        ]
        copy_events(postgres, events, created_at=created)
    with psycopg.connect(postgres, autocommit=True) as conn:
        conn.execute("DELETE FROM daily_warrior_creations WHERE day = ANY(%s::date[])", (days,))

    launched = dagster.graphql(
        """mutation($params: LaunchBackfillParams!) { launchPartitionBackfill(backfillParams: $params) {
           __typename ... on LaunchBackfillSuccess { backfillId } ... on PythonError { message } } }""",
        {"params": {"partitionNames": days, "assetSelection": [{"path": ["daily_warrior_statistics"]}]}},
    )["launchPartitionBackfill"]
    assert launched["__typename"] == "LaunchBackfillSuccess", launched
    backfill_id = launched["backfillId"]

    def finished() -> str | None:
        status = dagster.graphql(
            """query($id: String!) { partitionBackfillOrError(backfillId: $id) {
               ... on PartitionBackfill { status } } }""",
            {"id": backfill_id},
        )["partitionBackfillOrError"]["status"]
        return status if status not in {"REQUESTED", "CANCELING", "FAILING"} else None

    status = wait_for(finished, timeout=300, what=f"backfill {backfill_id}")
    assert status in {"COMPLETED", "COMPLETED_SUCCESS"}, (
        f"backfill ended {status}; see {dagster.daemon.log_path}"
    )
    with psycopg.connect(postgres) as conn:
        rows = conn.execute(
            "SELECT day::text, warriors_created, avg_skills FROM daily_warrior_creations"
            " WHERE day = ANY(%s::date[]) ORDER BY day",
            (days,),
        ).fetchall()
        judo = conn.execute(
            "SELECT day::text, warriors FROM daily_skill_popularity"
            " WHERE day = ANY(%s::date[]) AND skill = 'Judo' ORDER BY day",
            (days,),
        ).fetchall()
    assert rows == [(day, n * 10, 1.0) for n, day in enumerate(days, start=1)]
    assert judo == [(day, n * 10) for n, day in enumerate(days, start=1)]


@pytest.fixture(scope="module")
def browser() -> Iterator[webdriver.Chrome]:
    options = webdriver.ChromeOptions()
    options.binary_location = _required("chromium")
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--window-size=1600,1000"):  # fmt: skip
        options.add_argument(flag)
    driver = webdriver.Chrome(options=options, service=webdriver.ChromeService(_required("chromedriver")))
    yield driver
    driver.quit()


def _required(program: str) -> str:
    path = shutil.which(program)
    assert path, f"{program} is not installed (make test installs Debian's chromium and chromium-driver)"
    return path


def _page_shows(driver: webdriver.Chrome, texts: list[str], screenshot: Path, timeout: float = 90) -> None:
    try:
        WebDriverWait(driver, timeout, poll_frequency=0.5).until(
            lambda d: all(text in d.page_source for text in texts)
        )
    finally:
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        driver.save_screenshot(str(screenshot))


def _dismiss_welcome(driver: webdriver.Chrome) -> None:
    """The first visit shows a "Join the Dagster community" dialog: Skip it."""
    try:
        skip = WebDriverWait(driver, 30).until(
            lambda d: d.find_element(By.XPATH, "//button[normalize-space()='Skip']")
        )
    except TimeoutException:
        return  # no dialog this time
    skip.click()


def test_browser_shows_the_asset_graph_and_the_rebuild_run(
    dagster: DagsterStack, browser: webdriver.Chrome
) -> None:
    runs = dagster.graphql(
        """{ runsOrError(filter: {pipelineName: "rebuild_projection"}, limit: 1) {
           ... on Runs { results { runId status } } } }"""
    )["runsOrError"]["results"]
    if runs:
        run_id = runs[0]["runId"]
    else:  # this test alone: a rebuild of its own
        run_id = launch(dagster, "rebuild_projection")
        assert dagster.wait_for_run(run_id) == "SUCCESS"

    browser.get(f"{dagster.base_url}/asset-groups")
    _dismiss_welcome(browser)
    # The graph opens with its groups collapsed; Alt+E is the UI's "expand all groups".
    WebDriverWait(browser, 60).until(lambda d: "projections" in d.page_source)
    ActionChains(browser).key_down(Keys.ALT).send_keys("e").key_up(Keys.ALT).perform()
    assets = ["event_store", "warriors_read_model", "aggregate_snapshots", "warrior_statistics",
              "daily_warrior_statistics"]  # fmt: skip
    _page_shows(browser, assets, SCREENSHOTS / "asset-graph.png")

    browser.get(f"{dagster.base_url}/runs/{run_id}")
    _page_shows(
        browser,
        ["rebuild_projection", "rebuild_projection_op", "swapped in"],
        SCREENSHOTS / "rebuild-run.png",
    )
    assert (SCREENSHOTS / "asset-graph.png").stat().st_size > 10_000


def test_browser_shows_the_daily_statistics_plots(
    dagster: DagsterStack, browser: webdriver.Chrome, postgres: str, analytics_dir: Path
) -> None:
    day = "2026-01-15"
    skills = [["Katana", "Bo"], ["Katana"], ["Judo", "Katana", "Sumo"]]
    events: list[Event] = [
        (uuid.uuid4(), "WarriorCreated", 1,
         {"name": f"Plotted {i}", "dob": f"{1950 + 7 * i}-04-01", "fight_skills": skills[i % 3]})
        for i in range(9)
    ]  # fmt: skip
    copy_events(postgres, events, created_at=datetime.fromisoformat(day).replace(hour=9, tzinfo=UTC))
    run_id = dagster.client.submit_job_execution("daily_statistics", tags={"dagster/partition": day})
    assert dagster.wait_for_run(run_id) == "SUCCESS", f"see {dagster.daemon.log_path}"
    assert (analytics_dir / "daily_skill_popularity" / f"day={day}" / "part-0.parquet").is_file()

    browser.get(f"{dagster.base_url}/assets/daily_warrior_statistics?view=events&partition={day}")
    _dismiss_welcome(browser)
    # The plots are markdown metadata too long to show inline: "[Show Markdown]" opens it.
    # (the innermost element: its text of its own, so the click lands on the link)
    show = "//*[text()='skill_popularity']/following::*[text()='[Show Markdown]'][1]"
    screenshot = SCREENSHOTS / "daily-statistics-plot.png"
    try:
        WebDriverWait(browser, 90, poll_frequency=0.5).until(lambda d: d.find_element(By.XPATH, show)).click()
        plot = WebDriverWait(browser, 30, poll_frequency=0.5).until(
            lambda d: next(
                (
                    img
                    for img in d.find_elements(By.CSS_SELECTOR, "img[src^='data:image/png']")
                    if d.execute_script("return arguments[0].complete && arguments[0].naturalWidth", img)
                ),
                None,
            )
        )
    finally:
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        browser.save_screenshot(str(screenshot))
    assert plot is not None
    size = browser.execute_script("return [arguments[0].naturalWidth, arguments[0].naturalHeight]", plot)
    assert size == [600, 300]
    assert plot.is_displayed()
    assert plot.size["width"] > 100  # laid out on the page, not hidden
    assert plot.size["height"] > 50
    assert "Skills" in (plot.get_attribute("alt") or "")
    assert screenshot.stat().st_size > 10_000
