"""The bundled sample: real tau2-bench trajectories (MIT, see NOTICE.md)."""

from pathlib import Path

PATH = Path(__file__).with_name("tau2-trajectories.jsonl.gz")
TRAJECTORIES = 240
STEPS = 9065


def load_if_empty(lake) -> str:  # type: ignore[no-untyped-def]
    """Load the sample into an empty lake (no trajectories in any tenant: a team's data
    under another tenant is not mixed with demo runs); say what the lake holds."""
    from ..runner import ingest_paths

    if not _all_tenants(lake):
        s = ingest_paths(lake, [str(PATH)])
        return (f"loaded the tau2-bench sample: {s.trajectories} trajectories, {s.steps} steps "
                f"into {lake.settings.data}")
    return holds(lake) + "; the sample goes only into an empty lake"


def holds(lake) -> str:  # type: ignore[no-untyped-def]
    n, everyone = lake.count("trajectories"), _all_tenants(lake)
    if lake.created and not everyone:
        return (f"created a new, empty lake at {lake.settings.data} (no lake was there: if "
                "you meant an existing one, stop and check --data / LAKE_DATA)")
    return (f"lake {lake.settings.data} holds {n} trajectories in tenant "
            f"{lake.settings.tenant!r}" + (f" ({everyone} in all tenants)" if everyone != n
                                           else ""))


def _all_tenants(lake) -> int:  # type: ignore[no-untyped-def]
    store = lake.store
    return store.dataset("trajectories").count_rows() if store.exists("trajectories") else 0
