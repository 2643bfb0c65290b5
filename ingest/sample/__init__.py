"""The bundled sample: real tau2-bench trajectories (MIT, see NOTICE.md)."""

from pathlib import Path

PATH = Path(__file__).with_name("tau2-trajectories.jsonl.gz")
TRAJECTORIES = 240
STEPS = 9065


def load_if_empty(lake) -> str:  # type: ignore[no-untyped-def]
    """Load the sample into an empty lake (first start); say what the lake holds."""
    from ..runner import ingest_paths

    n = lake.count("trajectories")
    if n == 0:
        s = ingest_paths(lake, [str(PATH)])
        return (f"loaded the tau2-bench sample: {s.trajectories} trajectories, {s.steps} steps "
                f"into {lake.settings.data}")
    return f"lake {lake.settings.data} holds {n} trajectories (tenant {lake.settings.tenant!r})"
