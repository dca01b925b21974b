"""The task description every dataset hands every model (no torch: cheap to import)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

INTER = "inter"
PRODUCTS = ("intra", "i2m2")


@dataclass(frozen=True)
class TaskSpec:
    """Modality names and label heads (name -> number of classes).

    A head named in ``multilabel`` predicts every class independently (a sigmoid per class,
    targets are per-class scores in [0, 1], e.g. VQA's soft answer scores); the others are
    softmax heads over mutually exclusive classes.
    """

    modalities: tuple[str, ...]
    heads: Mapping[str, int] = field(default_factory=dict)
    multilabel: tuple[str, ...] = ()

    def paradigms(self) -> list[str]:
        """Model names of the four paradigms: ``unimodal_<m>`` per modality, then the rest."""
        return [f"unimodal_{m}" for m in self.modalities] + [INTER, *PRODUCTS]

    def components(self, paradigm: str) -> list[str]:
        """Experts inside a model: ``["magnitude"]``, ``["inter"]``, ``["magnitude", "phase"]``..."""
        if paradigm.startswith("unimodal_"):
            m = paradigm[len("unimodal_") :]
            if m not in self.modalities:
                raise ValueError(
                    f"unknown modality '{m}' in paradigm '{paradigm}'; modalities: {list(self.modalities)}"
                )
            return [m]
        if paradigm == INTER:
            return [INTER]
        if paradigm == "intra":
            return list(self.modalities)
        if paradigm == "i2m2":
            return [*self.modalities, INTER]
        raise ValueError(f"unknown paradigm '{paradigm}'; expected one of {self.paradigms()}")


def component_paradigm(expert: str) -> str:
    """Name of the stand-alone model whose weights initialise ``expert`` in a product."""
    return INTER if expert == INTER else f"unimodal_{expert}"
