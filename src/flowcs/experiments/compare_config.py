"""The ``compare:`` section of every experiment's configuration: which policies ``flowcs compare`` runs, on how
many test images and seeds, and how each learned peer is trained (scaled per experiment in its defaults)."""

from __future__ import annotations

from dataclasses import dataclass, field

from ..config import from_dict, merge, to_dict
from ..errors import ConfigError
from ..policies.peers import ADPSConfig, ADSConfig, DPSConfig, LOUPEConfig, check_peer_configs

__all__ = ["CompareConfig", "SMOKE_PIXEL", "SMOKE_MRI"]


@dataclass
class CompareConfig:
    policies: list[str] = field(default_factory=list)  # empty: every policy that applies
    seeds: int | None = None  # evaluation seeds (None: the experiment's eval.seeds)
    test_subset: int | None = None  # evaluate on the first n test images (None: the experiment's test set)
    batch_size: int | None = None  # None: the experiment's eval.batch_size
    loupe: LOUPEConfig = field(default_factory=LOUPEConfig)
    dps: DPSConfig = field(default_factory=DPSConfig)
    adps: ADPSConfig = field(default_factory=ADPSConfig)
    ads: ADSConfig = field(default_factory=ADSConfig)

    @classmethod
    def preset(cls, changes: dict) -> CompareConfig:
        """The defaults with ``changes`` merged in (an experiment's scaled comparison)."""
        return from_dict(cls, merge(to_dict(cls()), changes))

    def validate(self) -> None:
        check_peer_configs(self.loupe, self.dps, self.adps, self.ads)
        if self.seeds is not None and self.seeds < 1:
            raise ConfigError("compare.seeds must be at least 1")


#: the comparison's part of the pixel experiments' ``--smoke`` presets (tiny peers, 128 test images)
SMOKE_PIXEL: dict = {
    "seeds": 1, "test_subset": 128, "batch_size": 64,
    "loupe": {"loop": {"batch_size": 32, "steps_per_epoch": 6, "log_every": 3}},
    "dps": {"loop": {"batch_size": 32, "steps_per_epoch": 6, "log_every": 3}},
    "adps": {"steps": 2, "widths": [4, 8, 8], "hidden": 32,
             "loop": {"batch_size": 32, "steps_per_epoch": 6, "log_every": 3}},
    "ads": {"widths": [4, 8, 8], "time_dim": 16, "samples": 3, "steps": 2, "per_round": 16, "test_images": 32,
            "loop": {"batch_size": 32, "steps_per_epoch": 8, "log_every": 4}},
}

#: the MRI experiments' version: MoDL steps are expensive, so batches of 2
SMOKE_MRI: dict = merge(SMOKE_PIXEL, {
    "batch_size": 16, "test_subset": None,
    "loupe": {"loop": {"batch_size": 2, "steps_per_epoch": 2, "log_every": 1}},
    "dps": {"loop": {"batch_size": 2, "steps_per_epoch": 2, "log_every": 1}},
    "adps": {"loop": {"batch_size": 2, "steps_per_epoch": 2, "log_every": 1}},
    "ads": {"per_round": 4, "test_images": 4, "max_batch": 16, "loop": {"batch_size": 4, "steps_per_epoch": 4}},
})
