"""Images of an external data set that the run has seen: the same image, or the same lesion.

ISIC 2019 contains HAM10000 (the ISIC 2018 training set) under the same ``ISIC_`` image ids, and
its metadata names their ``HAM_`` lesions, with further photos of some of them. An external test
of a HAM10000 run that keeps them is not external. So every target image is left out that

* is an image of the run's split (matched by image id: the file stem, ``_downsampled`` removed),
  whatever its partition: train and val (the run learnt from them or chose its checkpoint on
  them) and test too (its internal test result is reported apart and must not be pooled); or
* belongs to a lesion of the run's split: a group (lesion id) of the split, or the lesion the
  target's own metadata gives one of the run's images.

The check applies where the two data sets share an id space (HAM10000 and ISIC 2019, or a data set
and another copy of itself); elsewhere it finds nothing and says so.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pandas as pd

from accvit_med.datasets.isic2019 import isic_id
from accvit_med.datasets.splits import SPLITS

ISIC_ID_SPACE = frozenset({"ham10000", "isic2019"})


def shares_ids(run_dataset: str, target_dataset: str) -> bool:
    return run_dataset == target_dataset or {run_dataset, target_dataset} <= ISIC_ID_SPACE


@dataclass
class Overlap:
    """Rows of the target to leave out (``mask``) and the counts the outputs record."""

    checked: bool
    mask: pd.Series  # True where the target row is left out
    same_image: dict[str, int] = field(default_factory=dict)  # by the run's partition
    same_lesion: int = 0  # further images that share a lesion with the run's split
    lesions: int = 0  # distinct lesions those two kinds cover

    def to_dict(self) -> dict:
        return {"checked": self.checked, "left_out": int(self.mask.sum()), "same_image": self.same_image,
                "same_lesion": self.same_lesion, "lesions": self.lesions}

    def lines(self) -> list[str]:
        if not self.checked:
            return ["overlap with the run's split: not checked (the data sets share no image ids)"]
        parts = ", ".join(f"{n} {s}" for s, n in self.same_image.items())
        return [f"left out {sum(self.same_image.values())} image(s) of the run's split ({parts}) and "
                f"{self.same_lesion} more of the same lesions ({self.lesions} lesion(s) in all)"]


def find_overlap(target: pd.DataFrame, run_split: pd.DataFrame, run_dataset: str, target_dataset: str) -> Overlap:
    """Which rows of ``target`` (path, group) the run's split (path, group, split) has seen."""
    if not shares_ids(run_dataset, target_dataset):
        return Overlap(False, pd.Series(False, index=target.index))
    run_ids = run_split["path"].map(isic_id)
    partition_of = dict(zip(run_ids, run_split["split"]))
    target_ids = target["path"].map(isic_id)
    same_image = target_ids.isin(partition_of)
    # Lesions: the split's groups, and what the target says the run's images belong to.
    lesions = set(run_split["group"]) | set(target.loc[same_image, "group"])
    same_lesion = target["group"].isin(lesions) & ~same_image
    by_partition = target_ids[same_image].map(partition_of).value_counts()
    mask = same_image | same_lesion
    return Overlap(
        True, mask,
        same_image={s: int(by_partition.get(s, 0)) for s in SPLITS},
        same_lesion=int(same_lesion.sum()),
        lesions=int(target.loc[mask, "group"].nunique()),
    )
