"""The torch k-space -> magnitude/phase transform equals the project's numpy preprocessing
(``i2m2_ray.data.fastmri.kspace_to_image`` + ``image_to_modalities``)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from i2m2_ray.data import fastmri
from i2m2_ray.data.fastmri_sample import image_to_kspace, synth_slice
from i2m2_ray.models.kspace import FromKspace, KspaceToModalities, image_to_modalities, kspace_to_image


def random_kspace(n: int, h: int, w: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (rng.normal(size=(n, h, w)) + 1j * rng.normal(size=(n, h, w))).astype(np.complex64)


def phase_gap(a: np.ndarray, b: np.ndarray) -> float:
    """Largest difference of two phase / pi maps, modulo 2 (a pixel on the negative real
    axis may land at +1 in one and -1 in the other)."""
    return float(np.abs((a - b + 1.0) % 2.0 - 1.0).max())


def assert_matches_cpu(kspace: np.ndarray, pad_width: int, crop: int, device: str = "cpu") -> None:
    ref_image = fastmri.kspace_to_image(kspace, pad_width, crop)
    ref = fastmri.image_to_modalities(ref_image)
    k = torch.from_numpy(kspace).to(device)
    image = kspace_to_image(k, pad_width, crop).cpu().numpy()
    scale = np.abs(ref_image).max()
    assert np.abs(image - ref_image).max() <= 1e-5 * scale
    out = {m: v.cpu().numpy() for m, v in KspaceToModalities(pad_width, crop)(k).items()}
    assert out["magnitude"].shape == ref["magnitude"].shape == (len(kspace), 1, crop, crop)
    assert out["magnitude"].dtype == np.float32 and out["phase"].dtype == np.float32
    np.testing.assert_allclose(out["magnitude"], ref["magnitude"], atol=1e-4, rtol=0)
    assert phase_gap(out["phase"], ref["phase"]) <= 1e-4


@pytest.mark.parametrize(
    "h,w,pad_width,crop",
    [
        (64, 36, 40, 32),  # the tests' tiny sample: even sizes (the numpy code's sign-flip path)
        (640, 368, 400, 320),  # the real single-coil knee size
        (64, 40, 40, 32),  # already at pad width: no zero-fill
        (63, 35, 41, 31),  # odd sizes (the numpy code's plain-shift path)
    ],
)
def test_transform_equals_the_numpy_preprocessing(h: int, w: int, pad_width: int, crop: int) -> None:
    n = 1 if h > 100 else 3
    assert_matches_cpu(random_kspace(n, h, w, seed=h + w), pad_width, crop)


def test_transform_on_a_synthetic_knee_slice() -> None:
    """k-space of an image with structure (not noise): the sample generator's slice."""
    rng = np.random.default_rng(0)
    image, _, _ = synth_slice(rng, 64, 40, 32)
    kspace = image_to_kspace(image, 36).astype(np.complex64)[None]
    assert_matches_cpu(kspace, 40, 32)


def test_modalities_known_values() -> None:
    # magnitudes 1, 1, 3, 3: mean 2, population std 1 -> -1, -1, 1, 1; phases 0, pi/2, pi, -pi/2
    image = torch.tensor([[[1.0 + 0j, 1j], [-3.0 + 0j, -3j]]], dtype=torch.complex64)
    out = image_to_modalities(image)
    torch.testing.assert_close(out["magnitude"], torch.tensor([[[[-1.0, -1.0], [1.0, 1.0]]]]))
    torch.testing.assert_close(out["phase"], torch.tensor([[[[0.0, 0.5], [1.0, -0.5]]]]))


def test_transform_ignores_autocast_and_gradients() -> None:
    k = torch.from_numpy(random_kspace(2, 64, 36, seed=1))
    plain = KspaceToModalities(40, 32)(k)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        cast = KspaceToModalities(40, 32)(k)
    for m in plain:
        assert cast[m].dtype == torch.float32 and not cast[m].requires_grad
        torch.testing.assert_close(cast[m], plain[m])


def test_bad_inputs_are_refused() -> None:
    with pytest.raises(TypeError, match="complex"):
        kspace_to_image(torch.zeros(1, 8, 8), 8, 4)
    with pytest.raises(ValueError, match="exceeds pad width"):
        kspace_to_image(torch.zeros(1, 8, 10, dtype=torch.complex64), 8, 4)
    with pytest.raises(ValueError, match="larger than the image"):
        kspace_to_image(torch.zeros(1, 8, 8, dtype=torch.complex64), 8, 9)


def test_from_kspace_feeds_the_model_the_modalities() -> None:
    seen: dict[str, torch.Tensor] = {}

    class Record(torch.nn.Module):
        def forward(self, inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
            seen.update(inputs)
            return {"y": inputs["magnitude"].mean((1, 2, 3))}

    k = torch.from_numpy(random_kspace(2, 64, 36, seed=2))
    model = FromKspace(KspaceToModalities(40, 32), Record())
    model({"kspace": k})
    expected = KspaceToModalities(40, 32)(k)
    assert set(seen) == {"magnitude", "phase"}
    torch.testing.assert_close(seen["phase"], expected["phase"])
    with pytest.raises(KeyError, match="kspace"):
        model({"magnitude": k})


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_transform_on_the_gpu_equals_the_numpy_preprocessing() -> None:
    assert_matches_cpu(random_kspace(4, 640, 368, seed=3), 400, 320, device="cuda")
