"""Zoo models reproducing a class of failures seen on real model libraries (see ENTRIES).

Imported by tests.models, which merges ENTRIES into ZOO; import the models through tests.models."""

from __future__ import annotations

from tests.models import ZooEntry, _builder  # noqa: F401

ENTRIES: dict[str, ZooEntry] = {}
