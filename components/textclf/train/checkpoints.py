"""Resumable checkpoints on an object store: the Trainer writes checkpoints to local disk as usual and a callback
mirrors each complete one to ``s3://`` / ``gs://``, so a training pod that is killed and rescheduled on another node
resumes from the newest checkpoint that was fully uploaded.

A checkpoint counts as complete only once its marker file (``trainer_state.json``, written last by the Trainer) is
in the store; the marker is uploaded after every other file and deleted first when the Trainer rotates the
checkpoint away, so a kill at any moment leaves either a complete checkpoint or one that restore skips.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any

from textclf.storage import Store
from textclf.storage.store import join_relative

log = logging.getLogger(__name__)

_CHECKPOINT_NAME = re.compile(r"checkpoint-(\d+)")


def _checkpoint_steps(names: list[str], marker: str) -> dict[int, str]:
    """Step -> checkpoint folder name, for the folders among ``names`` (store listing) that hold ``marker``."""
    complete = {}
    for name in names:
        folder, _, rest = name.partition("/")
        match = _CHECKPOINT_NAME.fullmatch(folder)
        if match and rest == marker:
            complete[int(match.group(1))] = folder
    return complete


class CheckpointMirror:
    """Mirrors the Trainer's local checkpoint folder to a store prefix and restores it from there.

    Args:
        store: The prefix for this run's checkpoints (``<checkpoint_root>/<run key>``).
        local_dir: The Trainer's ``output_dir``.
        marker: The file whose presence makes a checkpoint complete.
    """

    def __init__(self, store: Store, local_dir: Path, marker: str):
        self.store = store
        self.local_dir = local_dir
        self.marker = marker

    def restore(self) -> str | None:
        """Download the newest complete checkpoint in the store into ``local_dir`` (unless already there).

        Returns:
            Its folder name, or None when the store holds no complete checkpoint.
        """
        complete = _checkpoint_steps(self.store.list(), self.marker)
        if not complete:
            return None
        folder = complete[max(complete)]
        target = self.local_dir / folder
        if not (target / self.marker).is_file():
            if target.exists():
                import shutil

                shutil.rmtree(target)
            self.store.download_tree(folder, target)
            log.info("restored checkpoint %s from %s", folder, self.store.uri(folder))
        return folder

    def upload(self, folder: str) -> None:
        """Upload one local checkpoint folder, its marker last."""
        source = self.local_dir / folder
        files = sorted(p for p in source.rglob("*") if p.is_file())
        ordered = [p for p in files if p.name != self.marker] + [p for p in files if p.name == self.marker]
        for path in ordered:
            self.store.upload_file(path, join_relative(folder, path.relative_to(source).as_posix()))
        log.info("checkpoint %s mirrored to %s", folder, self.store.uri(folder))

    def prune(self) -> None:
        """Delete from the store the checkpoints the Trainer rotated away locally (marker first)."""
        local = {p.name for p in self.local_dir.glob("checkpoint-*") if p.is_dir()}
        names = self.store.list()
        stale = {n.partition("/")[0] for n in names if _CHECKPOINT_NAME.fullmatch(n.partition("/")[0])} - local
        for folder in sorted(stale):
            inside = [n for n in names if n.partition("/")[0] == folder]
            for name in sorted(inside, key=lambda n: n.partition("/")[2] != self.marker):
                self.store.delete(name)

    def callback(self) -> Any:
        """A ``transformers.TrainerCallback`` that mirrors every checkpoint right after the Trainer saves it."""
        from transformers import TrainerCallback

        mirror = self

        class _MirrorCheckpoints(TrainerCallback):
            def on_save(self, args, state, control, **kwargs):  # noqa: ANN001 - the Trainer's callback signature
                folder = f"checkpoint-{state.global_step}"
                if (mirror.local_dir / folder / mirror.marker).is_file():
                    mirror.upload(folder)
                mirror.prune()
                return control

        return _MirrorCheckpoints()
