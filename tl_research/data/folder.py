"""The user's own images: a folder with one subfolder per class, prepared once as a TFDS dataset.

    photos/                       data.name = "folder:/path/to/photos"
      blight/   IMG_0001.jpg ...  (PNG or JPEG, any size; also BMP, GIF, WebP, TIFF; subfolders are
      healthy/  IMG_0107.jpg ...   searched too; hidden files are ignored)

Preparing writes array_record files like every other dataset here, so it is then read through
`tfds.data_source` / `builder.as_data_source` without TensorFlow; even without this module:
`tfds.builder_from_directory(<prepared dir>).as_data_source("train")`.

- Where: `<data_dir>/user_folder/<folder name>_<hash>/1.0.0`. The hash covers the file list (relative path,
  size, modification time) and the preparation settings, so a changed folder is prepared anew.
- Images: EXIF orientation applied, converted to RGB, resized so that the shorter side is at most
  `max_side` (default 512), stored as PNG; a JPEG that needs none of this keeps its original bytes.
- Splits: "train", "val", "test", stratified per class with fixed fractions (default 70/15/15) and a fixed
  seed, so every run sees the same examples; each split gets at least one image of every class that has
  enough. Labels follow the sorted class folder names.
- Unreadable images are skipped, not fatal: logged, and listed in `skipped.txt` in the prepared folder.
  A class folder without a readable image, or a folder with fewer than two classes, is a ConfigError
  naming `data.name`.
"""
from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import logging
import os
import pathlib
import re

import numpy as np
import tensorflow_datasets as tfds
from PIL import Image, ImageOps

from tl_research.data.builtin import SPLIT_SEED
from tl_research.errors import ConfigError

PREFIX = "folder:"
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff")
DEFAULT_FRACTIONS = (("train", 0.7), ("val", 0.15), ("test", 0.15))
DEFAULT_MAX_SIDE = 512
SKIPPED_FILE = "skipped.txt"
_EXIF_ORIENTATION = 0x0112

log = logging.getLogger(__name__)


@dataclasses.dataclass(eq=False)
class FolderConfig(tfds.core.BuilderConfig):
    """One prepared version of one folder: its files (relative path, class index) and the settings."""

    folder: str = ""
    class_names: tuple[str, ...] = ()
    files: tuple[tuple[str, int], ...] = ()
    fractions: tuple[tuple[str, float], ...] = DEFAULT_FRACTIONS
    max_side: int = DEFAULT_MAX_SIDE
    seed: int = SPLIT_SEED


class UserFolder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
    """A TFDS builder over a class-per-subfolder image folder; use `builder()` to create one."""

    name = "user_folder"
    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Initial release."}

    def __init__(self, *, config: FolderConfig, **kwargs):
        super().__init__(config=config, **kwargs)
        self.skipped: list[tuple[str, str]] = []  # (relative path, reason), filled by check_images
        self._readable: list[tuple[str, int]] | None = None

    @property
    def cfg(self) -> FolderConfig:
        return self.builder_config

    def _info(self) -> tfds.core.DatasetInfo:
        return tfds.core.DatasetInfo(
            builder=self,
            description=f"Images of {len(self.cfg.class_names)} classes from the folder {self.cfg.folder}.",
            features=tfds.features.FeaturesDict({
                "image": tfds.features.Image(shape=(None, None, 3)),
                "label": tfds.features.ClassLabel(names=list(self.cfg.class_names)),
                "file_name": tfds.features.Text(),
            }),
            supervised_keys=("image", "label"),
        )

    def check_images(self, name: str) -> None:
        """Decodes every image once; unreadable ones are set aside in `skipped`. `name` is data.name."""
        root = pathlib.Path(self.cfg.folder)
        self._readable, self.skipped = [], []
        for rel, label in self.cfg.files:
            try:
                _encode(root / rel, self.cfg.max_side)
                self._readable.append((rel, label))
            except Exception as e:  # noqa: BLE001 - PIL raises many types for a bad file
                self.skipped.append((rel, f"{type(e).__name__}: {e}"))
        for rel, reason in self.skipped:
            log.warning("skipping unreadable image %s (%s)", root / rel, reason)
        counts = np.bincount([label for _, label in self._readable], minlength=len(self.cfg.class_names))
        empty = [self.cfg.class_names[c] for c in np.flatnonzero(counts == 0)]
        if empty:
            raise ConfigError("data.name", name, _ALLOWED,
                              why=f"class folder(s) {', '.join(empty)} hold no readable image")

    def _split_generators(self, dl_manager):
        if self._readable is None:
            raise RuntimeError("UserFolder.check_images must run before preparing; use folder.builder()")
        labels = np.array([label for _, label in self._readable])
        splits = stratified_fractions(labels, dict(self.cfg.fractions), self.cfg.seed)
        return {split: self._generate_examples([self._readable[i] for i in idx])
                for split, idx in splits.items() if len(idx)}

    def _generate_examples(self, files):
        root = pathlib.Path(self.cfg.folder)
        for rel, label in files:
            try:
                data = _encode(root / rel, self.cfg.max_side)
            except Exception as e:  # noqa: BLE001 - changed since check_images
                self.skipped.append((rel, f"{type(e).__name__}: {e}"))
                log.warning("skipping unreadable image %s (%s)", root / rel, e)
                continue
            yield rel, {"image": data, "label": label, "file_name": rel}


_ALLOWED = ("folder:/path to a folder with two or more class subfolders, each holding at least one "
            f"readable image ({', '.join(IMAGE_EXTENSIONS)})")


def _encode(path: pathlib.Path, max_side: int) -> bytes:
    """The bytes to store for one image: its own if it is an RGB JPEG needing no change, else PNG."""
    with Image.open(path) as im:
        fmt, mode = im.format, im.mode
        orientation = im.getexif().get(_EXIF_ORIENTATION, 1)
        if min(im.size) > max_side:
            im.draft("RGB", (max_side, max_side))  # JPEG: decode at a reduced scale, still >= max_side
        im.load()
        out = ImageOps.exif_transpose(im)
        if out.mode != "RGB":
            out = out.convert("RGB")
        w, h = out.size
        resized = min(w, h) > max_side
        if resized:
            scale = max_side / min(w, h)
            out = out.resize((max(1, round(w * scale)), max(1, round(h * scale))), Image.BICUBIC)
        if fmt == "JPEG" and mode == "RGB" and orientation == 1 and not resized and out.size == im.size:
            return path.read_bytes()
        buf = io.BytesIO()
        out.save(buf, format="PNG", compress_level=1)
        return buf.getvalue()


def stratified_fractions(labels: np.ndarray, fractions: dict[str, float], seed: int) -> dict[str, np.ndarray]:
    """Positions per split, split class by class in the given fractions (largest-remainder rounding) after a
    seeded shuffle. A split with a fraction > 0 gets at least one example of every class that has at least
    one example per such split."""
    out = {name: [] for name in fractions}
    names = list(fractions)
    frac = np.array([fractions[n] for n in names], dtype=np.float64)
    for c in np.unique(labels):
        idx = np.random.default_rng([seed, int(c)]).permutation(np.flatnonzero(labels == c))
        exact = frac * len(idx)
        counts = np.floor(exact).astype(int)
        order = np.argsort(-(exact - counts), kind="stable")
        counts[order[:len(idx) - counts.sum()]] += 1
        wanted = np.flatnonzero(frac > 0)
        if len(idx) >= len(wanted):
            for s in wanted:
                if counts[s] == 0:
                    counts[int(np.argmax(counts))] -= 1
                    counts[s] += 1
        start = 0
        for name, k in zip(names, counts):
            out[name].extend(idx[start:start + k].tolist())
            start += k
    return {name: np.sort(np.asarray(v, dtype=np.int64)) for name, v in out.items()}


def scan(path: str, name: str) -> tuple[tuple[str, ...], list[tuple[str, int]]]:
    """(class names, [(relative path, class index)]) of a class-per-subfolder folder, sorted.
    ConfigError naming `data.name` (= `name`) for a missing folder, < 2 classes or an empty class."""
    root = pathlib.Path(path).expanduser()
    if not root.is_dir():
        raise ConfigError("data.name", name, _ALLOWED, why=f"{root} is not a folder")
    classes = sorted(d.name for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
    if len(classes) < 2:
        raise ConfigError("data.name", name, _ALLOWED,
                          why=f"{root} has {len(classes)} class subfolder(s): {', '.join(classes) or 'none'}")
    files, empty = [], []
    for label, cls in enumerate(classes):
        found = sorted(
            p.relative_to(root).as_posix() for p in (root / cls).rglob("*")
            if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS
            and not any(part.startswith(".") for part in p.relative_to(root).parts))
        if not found:
            empty.append(cls)
        files.extend((f, label) for f in found)
    if empty:
        raise ConfigError("data.name", name, _ALLOWED, why=f"class folder(s) {', '.join(empty)} hold no image")
    return tuple(classes), files


def _config_name(root: pathlib.Path, files, fractions, max_side, seed) -> str:
    h = hashlib.sha256()
    listing = [(rel, label, os.stat(root / rel).st_size, os.stat(root / rel).st_mtime_ns) for rel, label in files]
    h.update(json.dumps([listing, list(fractions), max_side, seed, str(UserFolder.VERSION)]).encode())
    slug = re.sub(r"[^a-z0-9]+", "_", root.name.lower()).strip("_") or "folder"
    return f"{slug}_{h.hexdigest()[:12]}"


def builder(path: str, data_dir: str | None = None, *, fractions=DEFAULT_FRACTIONS,
            max_side: int = DEFAULT_MAX_SIDE, seed: int = SPLIT_SEED) -> UserFolder:
    """The prepared dataset of a class-per-subfolder folder (prepared now unless it already is).

    `fractions`: (split, fraction) pairs summing to 1, train > 0; `max_side`: the largest shorter side kept.
    """
    name = PREFIX + path
    fractions = tuple((str(k), float(v)) for k, v in dict(fractions).items())
    if (dict(fractions).get("train", 0) <= 0 or any(v < 0 for _, v in fractions)
            or abs(sum(v for _, v in fractions) - 1) > 1e-6):
        raise ValueError(f"fractions must be >= 0, sum to 1 and give train > 0: {fractions}")
    root = pathlib.Path(path).expanduser().resolve()
    classes, files = scan(str(root), name)
    config = FolderConfig(name=_config_name(root, files, fractions, max_side, seed), folder=str(root),
                          class_names=classes, files=tuple(files), fractions=fractions, max_side=int(max_side),
                          seed=int(seed), description=f"The images of {root}.")
    b = UserFolder(config=config, data_dir=data_dir, file_format="array_record")
    if not b.is_prepared():
        b.check_images(name)
        b.download_and_prepare()
        lines = [f"{rel}\t{reason}" for rel, reason in b.skipped]
        pathlib.Path(b.data_dir, SKIPPED_FILE).write_text("".join(line + "\n" for line in lines))
    return b


def skipped(b: UserFolder) -> list[tuple[str, str]]:
    """The images a prepared folder dataset left out: (relative path, reason), from its skipped.txt."""
    path = pathlib.Path(b.data_dir, SKIPPED_FILE)
    if not path.exists():
        return []
    return [tuple(line.split("\t", 1)) for line in path.read_text().splitlines() if line]
