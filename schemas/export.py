"""Generate the JSON Schema files in ``schemas/json/`` from the pydantic models.

The files let producers and consumers written in other languages validate what they send
and receive. They are generated, never edited by hand, and committed; a unit test fails
when they no longer match the models. Regenerate after changing ``schemas/``::

    python -m schemas.export            # (re)write schemas/json/*.schema.json
    python -m schemas.export --check    # exit 1 if any file is stale or missing
    python -m schemas.export OTHER_DIR  # write elsewhere

One file per public type (JSON Schema 2020-12):

* input: ``lead_event.schema.json`` (any event, discriminated on ``type``) and one per event
  type, e.g. ``page_view.schema.json``; these describe what is *accepted*;
* output: ``lead_became_hot``, ``lead_cooled`` and ``dead_letter`` ``.schema.json``; these
  describe what leadscore *writes* (every field always present).

Output is deterministic (sorted keys, 2-space indent, trailing newline) so that the files
only change when the models do, and diffs stay readable.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Final

from pydantic import BaseModel

from schemas.events import EVENT_ADAPTER, EVENT_MODELS
from schemas.examples import EXAMPLES, OUTPUT_EXAMPLES
from schemas.outputs import DeadLetter, LeadBecameHot, LeadCooled, LeadErased, LeadMerged

#: Where the committed schema files live.
SCHEMA_DIR: Final = Path(__file__).parent / "json"
#: Every generated file is named ``<name>.schema.json``.
SUFFIX: Final = ".schema.json"
#: Prefix of each schema's ``$id`` (a URN, as the project has no published schema URL).
SCHEMA_ID_BASE: Final = "urn:leadscore:schema:"
_DIALECT: Final = "https://json-schema.org/draft/2020-12/schema"

_OUTPUT_MODELS: Final[dict[str, type[BaseModel]]] = {
    "lead_became_hot": LeadBecameHot,
    "lead_cooled": LeadCooled,
    # (the input control event of that name has the file lead_erased.schema.json)
    "lead_erased_record": LeadErased,
    "lead_merged": LeadMerged,
    "dead_letter": DeadLetter,
}


def render_schemas() -> dict[str, str]:
    """Every schema file's name and exact text, in a stable order."""
    documents: dict[str, dict[str, Any]] = {
        "lead_event": _document(
            "lead_event",
            EVENT_ADAPTER.json_schema(mode="validation"),
            title="LeadEvent",
            description="Any input event; the `type` field says which one.",
            examples=list(EXAMPLES.values()),
        )
    }
    for name, model in EVENT_MODELS.items():
        documents[name] = _document(
            name, model.model_json_schema(mode="validation"), examples=[EXAMPLES[name]]
        )
    for name, output in _OUTPUT_MODELS.items():
        documents[name] = _document(
            name,
            output.model_json_schema(mode="serialization"),
            examples=[OUTPUT_EXAMPLES[name.removesuffix("_record")]],
        )
    return {
        name + SUFFIX: json.dumps(doc, indent=2, sort_keys=True, ensure_ascii=False) + "\n"
        for name, doc in documents.items()
    }


def export_schemas(directory: Path = SCHEMA_DIR) -> list[Path]:
    """Write every schema file into ``directory`` and return their paths.

    Files whose content is already right are left untouched. ``*.schema.json`` files in
    ``directory`` that no longer correspond to a type are deleted: the directory belongs
    to this generator.
    """
    directory.mkdir(parents=True, exist_ok=True)
    rendered = render_schemas()
    paths = []
    for name, text in rendered.items():
        path = directory / name
        if _read(path) != text:
            path.write_text(text, encoding="utf-8", newline="\n")
        paths.append(path)
    for obsolete in _obsolete(directory, rendered):
        obsolete.unlink()
    return paths


def check_schemas(directory: Path = SCHEMA_DIR) -> list[str]:
    """Names of the schema files in ``directory`` that are stale, missing or obsolete.

    An empty list means the files match the models exactly.
    """
    rendered = render_schemas()
    stale = [name for name, text in rendered.items() if _read(directory / name) != text]
    stale += [path.name for path in _obsolete(directory, rendered)]
    return sorted(stale)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m schemas.export [--check] [DIR]``; returns the exit status."""
    parser = argparse.ArgumentParser(
        prog="python -m schemas.export",
        description="Write (or check) the JSON Schema files generated from schemas/.",
    )
    parser.add_argument(
        "directory",
        nargs="?",
        type=Path,
        default=SCHEMA_DIR,
        help=f"output directory (default: {SCHEMA_DIR})",
    )
    parser.add_argument(
        "--check",
        action="store_true",
        help="write nothing; exit 1 if any file is stale, missing or obsolete",
    )
    args = parser.parse_args(argv)
    directory: Path = args.directory
    if args.check:
        stale = check_schemas(directory)
        if stale:
            print(
                f"stale JSON Schema files in {directory}: {', '.join(stale)}\n"
                "regenerate them with: python -m schemas.export",
                file=sys.stderr,
            )
            return 1
        print(f"JSON Schema files in {directory} are up to date")
        return 0
    paths = export_schemas(directory)
    print(f"wrote {len(paths)} JSON Schema files to {directory}")
    return 0


def _document(
    name: str,
    schema: dict[str, Any],
    *,
    title: str | None = None,
    description: str | None = None,
    examples: list[dict[str, Any]],
) -> dict[str, Any]:
    """A schema generated by pydantic, made a standalone document (``$schema``, ``$id``)."""
    document = {"$schema": _DIALECT, "$id": SCHEMA_ID_BASE + name, **schema}
    if title is not None:
        document["title"] = title
    if description is not None:
        document["description"] = description
    document["examples"] = examples
    return document


def _obsolete(directory: Path, rendered: dict[str, str]) -> list[Path]:
    if not directory.is_dir():
        return []
    return sorted(p for p in directory.glob("*" + SUFFIX) if p.name not in rendered)


def _read(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None


if __name__ == "__main__":
    sys.exit(main())
