"""Pure-torch models: experts, fusions, encoders, the encoder registry and the paradigm
builder. Nothing here knows of Ray, MLflow or file formats."""

# the built-in encoder builders register themselves (preact_resnet, lenet, mlp_gru, transformers)
from i2m2_ray.models import encoder_builders  # noqa: F401
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
from i2m2_ray.models.registry import check_model, encoder_factory, get_encoder, register_encoder

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
    "check_model",
    "encoder_factory",
    "get_encoder",
    "load_components",
    "product_of_experts",
    "register_encoder",
]
