"""Pure-torch models: experts, fusions, encoders and the paradigm builder."""

from i2m2_ray.models.build import TaskSpec, build_expert, build_model, load_components
from i2m2_ray.models.experts import (
    EarlyFusionExpert,
    JointFusionExpert,
    LateFusionExpert,
    MultiHead,
    ProductOfExperts,
    UnimodalExpert,
    binary_product_of_experts,
    product_of_experts,
)
from i2m2_ray.models.fusion import ConcatFusion, LowRankTensorFusion

__all__ = [
    "ConcatFusion",
    "EarlyFusionExpert",
    "JointFusionExpert",
    "LateFusionExpert",
    "LowRankTensorFusion",
    "MultiHead",
    "ProductOfExperts",
    "TaskSpec",
    "UnimodalExpert",
    "binary_product_of_experts",
    "build_expert",
    "build_model",
    "load_components",
    "product_of_experts",
]
