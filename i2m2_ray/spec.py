"""The task description every dataset hands every model, and the paradigms' names: defined
here once (no torch: cheap to import).

Paradigm kinds (what ``run.paradigms`` and ``per_paradigm`` name) and the models they give:

* ``unimodal``: one model per modality, named ``unimodal_<modality>``;
* ``inter``: the inter-modality (fusion) expert alone, named ``inter``;
* ``intra``: the product of the unimodal experts, named ``intra``;
* ``i2m2``: the product of the unimodal experts and the inter expert, named ``i2m2``.

Inside a product, experts are named by their modality (``"magnitude"``) or ``"inter"``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

UNIMODAL = "unimodal"
INTER = "inter"
INTRA = "intra"
I2M2 = "i2m2"
PARADIGMS = (UNIMODAL, INTER, INTRA, I2M2)
PRODUCTS = (INTRA, I2M2)
COMPONENTS = (UNIMODAL, INTER)  # fitted alone (stage 1); products are stage 2
# the compute-matched control (stage 2): the fitted inter expert trained on for the products'
# epochs at their learning rate, so that "I2M2 beats inter" cannot mean "I2M2 trained longer"
INTER_EXTENDED = "inter_extended"
_UNIMODAL_PREFIX = f"{UNIMODAL}_"


def unimodal_name(modality: str) -> str:
    """The model name of a modality's unimodal expert: ``unimodal_<modality>``."""
    return f"{_UNIMODAL_PREFIX}{modality}"


def kind_of(model: str) -> str:
    """The paradigm kind of a model name: ``unimodal_audio`` -> ``unimodal``, others as they are."""
    return UNIMODAL if model.startswith(_UNIMODAL_PREFIX) else model


def is_product(model: str) -> bool:
    """Whether a model is a product of experts (``intra`` or ``i2m2``)."""
    return model in PRODUCTS


def is_model_name(name: str) -> bool:
    """Whether ``name`` can name a model or a kind (``unimodal_<m>``, ``inter``, ...)."""
    return name in PARADIGMS or name == INTER_EXTENDED or name.startswith(_UNIMODAL_PREFIX)


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
        return [unimodal_name(m) for m in self.modalities] + [INTER, *PRODUCTS]

    def components(self, paradigm: str) -> list[str]:
        """Experts inside a model: ``["magnitude"]``, ``["inter"]``, ``["magnitude", "phase"]``..."""
        if kind_of(paradigm) == UNIMODAL:
            m = paradigm[len(_UNIMODAL_PREFIX) :]
            if m not in self.modalities:
                raise ValueError(
                    f"unknown modality '{m}' in paradigm '{paradigm}'; modalities: {list(self.modalities)}"
                )
            return [m]
        if paradigm == INTER:
            return [INTER]
        if paradigm == INTRA:
            return list(self.modalities)
        if paradigm == I2M2:
            return [*self.modalities, INTER]
        raise ValueError(f"unknown paradigm '{paradigm}'; expected one of {self.paradigms()}")

    def is_multilabel(self, head: str) -> bool:
        """Whether ``head`` is a multi-label head (per-class sigmoid, per-class score targets)."""
        return head in self.multilabel


def label_column(head: str) -> str:
    """Batch column that holds the labels of one label head: ``y_<head>`` (the data write
    it, the training loop reads it)."""
    return f"y_{head}"


def component_paradigm(expert: str) -> str:
    """Name of the stand-alone model whose weights initialise ``expert`` in a product."""
    return INTER if expert == INTER else unimodal_name(expert)
