"""`synthgraph dedup`: remove near-duplicates from any text field of a JSONL or Parquet file."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from synthgraph.graphs.cli_support import fail, progress, stdout, table
from synthgraph.tools.dedup import DedupService, dedup_file, default_namespace, dropped_path
from synthgraph.tools.io import InputError
from synthgraph.tools.minhash import MinHashDeduper
from synthgraph.tools.settings import Executor, get_settings


def dedup_command(
    input_path: Annotated[
        Path, typer.Argument(metavar="INPUT", help="A JSONL or Parquet file of records.")
    ],
    field: Annotated[str, typer.Option("--field", "-f", help="The text field to compare.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Kept records (.jsonl or .parquet).")],
    method: Annotated[
        str, typer.Option(help="minhash, embedding or both (minhash first).")
    ] = "both",
    threshold: Annotated[
        float, typer.Option(help="Drop at Jaccard (minhash) or cosine (embedding) ≥ this.")
    ] = 0.9,
    namespace: Annotated[
        str | None,
        typer.Option(help="Memory of kept records across runs (default: the field name)."),
    ] = None,
    id_field: Annotated[
        str, typer.Option(help="Field holding record ids (default: position).")
    ] = "id",
    reset: Annotated[
        bool, typer.Option("--reset", help="Forget the namespace before this run.")
    ] = False,
    executor: Annotated[
        Executor | None,
        typer.Option(
            help="thread or async: in this process; ray: the MinHash stage on Ray Data "
            "(SYNTHGRAPH_RAY_ADDRESS, else Ray on this machine). Default: SYNTHGRAPH_EXECUTOR.",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Drop near-duplicates: MinHash on words, then MiniLM embeddings in Chroma.

    Kept records go to OUT, dropped ones (with the stage, nearest kept record and
    score) to `<OUT stem>.dropped.jsonl`. Kept records are remembered in the
    namespace, so rerunning on the same input keeps nothing.
    """
    if method not in ("minhash", "embedding", "both"):
        fail(f"--method must be minhash, embedding or both, not {method!r}")
    deduper = MinHashDeduper
    if (executor or get_settings().executor) == "ray" and method != "embedding":
        try:
            from synthgraph.tools.minhash_ray import RayMinHashDeduper
            from synthgraph.tools.ray_support import init_ray
        except ImportError:
            fail("--executor ray needs Ray: pip install 'synthgraph[ray]'")
        init_ray()
        deduper = RayMinHashDeduper
    with progress(transient=True) as bar:
        tasks: dict[str, Any] = {}

        def report(stage: str, done: int, total: int) -> None:
            if stage not in tasks:
                tasks[stage] = bar.add_task(stage, total=total)
            bar.update(tasks[stage], completed=done, total=total)

        try:
            service = DedupService(
                namespace or default_namespace(field),
                threshold,
                method,
                progress=report,  # type: ignore[arg-type]
                deduper=deduper,
            )
            result = dedup_file(service, input_path, field, out, id_field=id_field, reset=reset)
        except (InputError, ValueError) as error:
            fail(str(error))
    stdout.print(
        table(
            f"dedup of {input_path.name} (namespace {service.namespace}, threshold {threshold})",
            ["stage", "checked", "kept", "dropped"],
            result.summary_rows(),
        )
    )
    stdout.print(f"kept → {out}\ndropped → {dropped_path(out)}")
