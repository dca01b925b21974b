"""Write a small fastMRI single-coil knee sample in the real layout, with fastMRI+ labels.

Files: ``<out>/knee/file<N>.h5`` (``kspace`` (slices, H, W) complex64,
``reconstruction_rss`` / ``reconstruction_esc`` (slices, S, S) float32, ``ismrmrd_header``
XML bytes, attrs ``acquisition``, ``max``, ``norm``, ``patient_id``), and
``<out>/Annotations/knee.csv`` + ``knee_file_list.csv`` in the fastMRI+ format. The real
data have H=640, W~368, S=320; the demo shrinks them (``--height``, ``--width``, ``--crop``).

What it plants, in the centre crop the models see (S x S after zero-filling k-space to
``pad_width`` and the centred inverse FFT), so that the paradigms differ:

* ``acl`` -- magnitude only: a bright disc (magnitude x1.4) near the upper left.
* ``mtear`` -- phase only: a disc of phase +0.75 rad near the upper right; magnitude unchanged.
* ``cartilage`` -- only in the joint pattern: every slice has one dark magnitude spot
  (x0.5) and one phase spot (-1.0 rad), each at one of four places on a lower row; the
  label is positive when both sit at the same place. Either modality alone sees a spot at
  a uniformly random place and carries no information on this label.
* ``abnormal`` -- either modality helps: positive when a bright horizontal bar (x1.22) in
  magnitude or a vertical bar of +0.55 rad in phase is present (each with probability 0.3).

Discs have a radius of 0.09 of the crop. Gaussian noise is added to magnitude (sd 0.2
against a level of 1) and to phase (sd 0.32 rad) separately, so that no cue leaks from one
into the other; a random smooth phase ramp and smooth magnitude texture vary from slice to
slice. The strengths (:data:`CUES`) are set so that no paradigm saturates the demo: with
them, an early-fusion inter expert trained alone reaches a test AUROC of about 0.8, the
intra product about 0.86 and I2M2 about 0.99 (see the README).
Label strings are real fastMRI+ findings, including one with a trailing space
(``"Joint Effusion "``) and study-level ``artifact`` rows; about 1 volume in 12 is wider
than ``pad_width`` (skipped by the reader) and 1 in 10 is present but not reviewed.
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

import numpy as np
import scipy.fft
import scipy.ndimage

FINDINGS = {
    "acl": ["ACL High Grade Sprain", "ACL Low-Mod Grade Sprain"],
    "mtear": ["Meniscus Tear"],
    "cartilage": ["Cartilage - Partial Thickness loss/defect", "Cartilage - Full Thickness loss/defect"],
    "abnormal": ["Bone-Subchondral edema", "Joint Effusion ", "Displaced Meniscal Tissue"],
}

HEADER = """<?xml version="1.0" encoding="utf-8"?>
<ismrmrdHeader xmlns="http://www.ismrm.org/ISMRMRD">
  <encoding>
    <encodedSpace><matrixSize><x>{h}</x><y>{w}</y><z>1</z></matrixSize>
      <fieldOfView_mm><x>280</x><y>140</y><z>4.5</z></fieldOfView_mm></encodedSpace>
    <reconSpace><matrixSize><x>{s}</x><y>{s}</y><z>1</z></matrixSize>
      <fieldOfView_mm><x>140</x><y>140</y><z>4.5</z></fieldOfView_mm></reconSpace>
    <trajectory>cartesian</trajectory>
  </encoding>
</ismrmrdHeader>
"""


# Strength of each planted cue and of the noise (the generator's difficulty): magnitude
# factors, phase offsets in radians, cue radius as a fraction of the crop.
CUES: dict[str, float] = {
    "acl_mag": 1.4,
    "mtear_phase": 0.75,
    "cartilage_mag": 0.5,
    "cartilage_phase": -1.0,
    "bar_mag": 1.22,
    "bar_phase": 0.55,
    "radius": 0.09,
    "mag_noise": 0.2,
    "phase_noise": 0.32,
}


def _disc(shape: tuple[int, int], cy: float, cx: float, r: float) -> np.ndarray:
    yy, xx = np.ogrid[: shape[0], : shape[1]]
    return ((yy - cy) ** 2 + (xx - cx) ** 2) <= r**2


def synth_slice(
    rng: np.random.Generator, height: int, width: int, crop: int
) -> tuple[np.ndarray, dict[str, int], dict[str, tuple[float, float]]]:
    """One complex image on a ``(height, width)`` grid with cues in its centre crop.

    Returns the image, the four labels and, per positive label, the cue centre in crop
    coordinates (row, column).
    """
    s = crop
    top, left = (height - s) // 2, (width - s) // 2
    mag = np.full((height, width), 0.05, dtype=np.float64)
    body = _disc((height, width), height / 2, width / 2, 0.62 * s)
    texture = scipy.ndimage.gaussian_filter(rng.normal(size=(height, width)), sigma=s / 16)
    mag[body] = 1.0 + 0.8 * texture[body] / (texture.std() + 1e-8) * 0.15
    yy, xx = np.mgrid[:height, :width] / s
    # a gentle random phase ramp: no wrapping inside the object, so the planted phase
    # cues stay local patterns
    phase = (
        rng.uniform(-0.4, 0.4) * (yy - 0.5 * height / s)
        + rng.uniform(-0.4, 0.4) * (xx - 0.5 * width / s)
        + rng.uniform(-0.5, 0.5)
    )
    c = CUES
    r = c["radius"] * s
    jitter = lambda: rng.uniform(-0.05, 0.05) * s  # noqa: E731
    labels = {"abnormal": 0, "acl": 0, "cartilage": 0, "mtear": 0}
    where: dict[str, tuple[float, float]] = {}

    def at(cy: float, cx: float) -> np.ndarray:
        return _disc((height, width), top + cy, left + cx, r)

    if rng.random() < 0.3:
        cy, cx = 0.28 * s + jitter(), 0.3 * s + jitter()
        mag[at(cy, cx)] *= c["acl_mag"]
        labels["acl"], where["acl"] = 1, (cy, cx)
    if rng.random() < 0.3:
        cy, cx = 0.28 * s + jitter(), 0.7 * s + jitter()
        phase[at(cy, cx)] += c["mtear_phase"]
        labels["mtear"], where["mtear"] = 1, (cy, cx)
    places = [0.2, 0.4, 0.6, 0.8]
    q_mag = int(rng.integers(4))
    together = rng.random() < 0.35
    q_phase = q_mag if together else int(rng.choice([q for q in range(4) if q != q_mag]))
    row = 0.74 * s
    mag[at(row, places[q_mag] * s)] *= c["cartilage_mag"]
    phase[at(row, places[q_phase] * s)] += c["cartilage_phase"]
    if together:
        labels["cartilage"], where["cartilage"] = 1, (row, places[q_mag] * s)
    bar_mag, bar_phase = rng.random() < 0.3, rng.random() < 0.3
    if bar_mag:
        mag[top + int(0.48 * s) : top + int(0.54 * s), left + int(0.2 * s) : left + int(0.8 * s)] *= c["bar_mag"]
    if bar_phase:
        phase[top + int(0.35 * s) : top + int(0.62 * s), left + int(0.47 * s) : left + int(0.53 * s)] += c["bar_phase"]
    if bar_mag or bar_phase:
        labels["abnormal"], where["abnormal"] = 1, (0.5 * s, 0.5 * s)
    # noise goes into magnitude and phase separately: complex noise would make phase noisier
    # wherever magnitude is low, leaking magnitude cues into the phase image
    mag = mag + c["mag_noise"] * rng.normal(size=mag.shape)
    phase = phase + c["phase_noise"] * rng.normal(size=phase.shape)
    image = mag * np.exp(1j * phase)
    return image, labels, where


def image_to_kspace(image: np.ndarray, width: int) -> np.ndarray:
    """Centred 2-D FFT of an image, keeping the ``width`` central columns (truncation is the
    inverse of the reader's zero-filling)."""
    axes = (-2, -1)
    k = scipy.fft.fftshift(scipy.fft.fft2(scipy.fft.ifftshift(image, axes=axes), axes=axes, norm="ortho"), axes=axes)
    w0 = (k.shape[-1] - width) // 2
    return k[..., w0 : w0 + width]


def write_sample(
    out_dir: str | Path,
    volumes: int = 40,
    slices: int = 8,
    height: int = 640,
    width: int = 368,
    pad_width: int = 400,
    crop: int = 320,
    seed: int = 0,
) -> tuple[Path, Path]:
    """Write the sample; return (data directory, Annotations directory)."""
    import h5py

    if width > pad_width:
        raise ValueError(f"width {width} must be <= pad_width {pad_width}")
    if crop > min(height, pad_width):
        raise ValueError(f"crop {crop} must be <= height {height} and pad_width {pad_width}")
    out = Path(out_dir)
    data_dir, ann_dir = out / "knee", out / "Annotations"
    data_dir.mkdir(parents=True, exist_ok=True)
    ann_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    reviewed: list[str] = []
    rows: list[list[str]] = []
    scale = 2e-5  # real single-coil k-space values are of this order
    for v in range(volumes):
        name = f"file{1000000 + v}"
        wide = v % 12 == 11
        is_reviewed = v % 10 != 9  # one volume in ten is present but was not reviewed
        w = pad_width + 16 if wide else int(width + 2 * rng.integers(-2, 3))
        w = min(w, pad_width) if not wide else w
        grid_w = max(w, pad_width)
        kspace = np.zeros((slices, height, w), dtype=np.complex64)
        recon = np.zeros((slices, crop, crop), dtype=np.float32)
        for s in range(slices):
            image, labels, where = synth_slice(rng, height, grid_w, crop)
            kspace[s] = (scale * image_to_kspace(image, w)).astype(np.complex64)
            top, lft = (height - crop) // 2, (grid_w - crop) // 2
            recon[s] = scale * np.abs(image[top : top + crop, lft : lft + crop])
            for target, hit in labels.items():
                if hit and is_reviewed:
                    cy, cx = where[target]
                    finding = FINDINGS[target][int(rng.integers(len(FINDINGS[target])))]
                    # boxes are given in the vertically flipped reconstruction
                    y = crop - 1 - int(cy + crop / 10)
                    rows.append(
                        [
                            name,
                            str(s),
                            "No",
                            str(int(cx - crop / 10)),
                            str(y),
                            str(int(crop / 5)),
                            str(int(crop / 5)),
                            finding,
                        ]
                    )
        with h5py.File(data_dir / f"{name}.h5", "w") as f:
            f.create_dataset("kspace", data=kspace)
            f.create_dataset("reconstruction_rss", data=recon)
            f.create_dataset("reconstruction_esc", data=recon)
            f.create_dataset("ismrmrd_header", data=np.bytes_(HEADER.format(h=height, w=w, s=crop).encode()))
            f.attrs["acquisition"] = "CORPD_FBK" if v % 2 == 0 else "CORPDFS_FBK"
            f.attrs["max"] = float(recon.max())
            f.attrs["norm"] = float(np.linalg.norm(recon))
            f.attrs["patient_id"] = f"{rng.integers(1 << 62):x}"
        if is_reviewed:
            reviewed.append(name)
            if v % 7 == 3:
                rows.append([name, "", "Yes", "", "", "", "", "artifact"])
    with (ann_dir / "knee.csv").open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["file", "slice", "study_level", "x", "y", "width", "height", "label"])
        writer.writerows(rows)
    (ann_dir / "knee_file_list.csv").write_text("\n".join(reviewed) + "\n,\n")
    return data_dir, ann_dir


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", required=True, help="output folder (gets knee/ and Annotations/)")
    p.add_argument("--volumes", type=int, default=40)
    p.add_argument("--slices", type=int, default=8)
    p.add_argument("--height", type=int, default=640)
    p.add_argument("--width", type=int, default=368)
    p.add_argument("--pad-width", type=int, default=400)
    p.add_argument("--crop", type=int, default=320)
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args(argv)
    data_dir, ann_dir = write_sample(a.out, a.volumes, a.slices, a.height, a.width, a.pad_width, a.crop, a.seed)
    print(f"wrote {a.volumes} volumes to {data_dir} and labels to {ann_dir}")


if __name__ == "__main__":
    main()
