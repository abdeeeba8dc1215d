"""The dataset index as the tool's front ends see it: minus what curation discarded, repaired images read repaired."""

from __future__ import annotations

from pathlib import Path

from cxr_core.config import Config
from cxr_core.curation.ledger import discarded_hashes, latest_decisions
from cxr_core.data.imaging import DecodedImages
from cxr_core.data.index import DatasetIndex, load_index
from cxr_core.data.labels import Progress


def curated_index(
    cfg: Config,
    data_dir: str | Path | None = None,
    refresh: bool = True,
    progress: Progress | None = None,
    labels: str | Path | None = None,
    decoded: DecodedImages | None = None,
) -> DatasetIndex:
    """:func:`cxr_core.data.index.load_index` without the images the curation ledger discarded, and with the repaired
    file standing in for each image whose latest decision is ``repair`` (``decoded`` keeps the pixels read)."""
    from cxr_core.curation.repaired import repaired_versions

    latest = latest_decisions(cfg)
    return load_index(
        cfg,
        data_dir,
        refresh=refresh,
        progress=progress,
        labels=labels,
        discarded=discarded_hashes(latest),
        replacements=repaired_versions(latest),
        decoded=decoded,
    )
