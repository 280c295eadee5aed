"""What the in-process Dagster tests share: the code location's resources on a database."""

from typing import Any

from orchestration.resources import EventStoreResource, ProjectionsResource, StatisticsResource


def resources(url: str, **statistics: Any) -> dict[str, Any]:
    """The resources of `orchestration.definitions` on the database at `url` (batches of
    500); `statistics` are extra settings of the statistics resource."""
    return {
        "store": EventStoreResource(database_url=url),
        "projections": ProjectionsResource(database_url=url, batch_size=500),
        "statistics": StatisticsResource(database_url=url, **statistics),
    }
