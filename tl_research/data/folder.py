"""The user's own images: a folder with one subfolder per class, prepared once as a TFDS dataset.

    photos/                       data.name = "folder:/path/to/photos"
      blight/   IMG_0001.jpg ...  (PNG or JPEG, any size; also BMP, GIF, WebP, TIFF; subfolders are
      healthy/  IMG_0107.jpg ...   searched too; hidden files are ignored)

Preparing writes array_record files like every other dataset here, so it is then read through
`tfds.data_source` / `builder.as_data_source` without TensorFlow; even without this module:
`tfds.builder_from_directory(<prepared dir>).as_data_source("train")`.

- Where: `<data_dir>/user_folder/<folder name>_<hash>/1.0.0`. The hash covers the file list (relative path,
  size, modification time) and the preparation settings, so a changed folder is prepared anew.
- Launching again does not re-walk the folder: `<data_dir>/user_folder/.manifests/<folder name>_<hash of
  its path>.json` (under the TFDS data dir, never in the photo folder) holds the listing: each directory's
  modification time, its subfolders and its images' sizes and modification times. A launch stats only the
  directories; a directory whose modification time changed (an image added, removed or renamed there, which
  includes the usual "write a temporary file, rename it over the old one" of rsync and most editors) is
  listed again with its images' sizes and times. A directory modified within 2 s of being listed is
  listed again next time (its time may not yet show a change made in the same clock tick). The limit: an
  image overwritten in place under the same name (`cp new.jpg old.jpg`) leaves its directory's time
  unchanged, so it is seen only when that directory is listed again for another reason, after `touch`ing
  that directory, or with a full rescan: `builder(..., rescan=True)` or the environment variable
  TL_RESEARCH_FOLDER_RESCAN=1 (stats every image, as a first launch does).
- Preparing decodes every image once, in a pool of processes (default: one per core this process may run
  on; in-process for a folder under 16 MB): decode (JPEGs at a reduced scale when much larger than
  needed), check, resize and encode, staged under `<data_dir>/user_folder/.prepare_*` (removed afterwards)
  and written by TFDS in the order of the sorted file list, so the prepared dataset holds the same bytes
  whatever the number of processes (TFDS's own record serialization may order a record's fields differently
  in another process; the examples are the same). The workers are started with "spawn": a script that
  prepares a folder needs `if __name__ == "__main__":`, else it is prepared in-process, with a warning.
  The writing itself (TFDS, one process, about 8% of the time for phone photos) is not parallel.
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

import concurrent.futures
import dataclasses
import hashlib
import io
import json
import logging
import multiprocessing
import os
import pathlib
import re
import stat
import tempfile
import time

import numpy as np
import tensorflow_datasets as tfds
from PIL import Image, ImageOps

from tl_research.data import tfds_spill
from tl_research.data.builtin import SPLIT_SEED
from tl_research.core.errors import ConfigError

PREFIX = "folder:"
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff")
DEFAULT_FRACTIONS = (("train", 0.7), ("val", 0.15), ("test", 0.15))
DEFAULT_MAX_SIDE = 512
SKIPPED_FILE = "skipped.txt"
MANIFEST_DIR = ".manifests"  # under <data_dir>/user_folder
MANIFEST_VERSION = 1
RESCAN_ENV = "TL_RESEARCH_FOLDER_RESCAN"
_RACY_NS = 2 * 10**9  # a directory modified this close to its listing is listed again next time
POOL_MIN_BYTES = 16 * 2**20  # smaller folders are prepared in-process: starting workers (~0.5 s) costs more
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
        self._readable: list[tuple[str, int, int]] | None = None  # (relative path, label, position)
        self._staging: pathlib.Path | None = None

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

    def check_images(self, name: str, staging: str, workers: int | None = None) -> None:
        """Decodes, checks, resizes and encodes every image once, in `workers` processes (None: one per
        core; 1: in this process), into `staging` (a folder, one file per image); unreadable ones are set
        aside in `skipped`. `name` is data.name."""
        root, self._staging = pathlib.Path(self.cfg.folder), pathlib.Path(staging)
        jobs = [(str(root / rel), str(self._staging / f"{i:08d}"), self.cfg.max_side)
                for i, (rel, _) in enumerate(self.cfg.files)]
        self._readable, self.skipped = [], []
        for i, ((rel, label), why) in enumerate(zip(self.cfg.files, encode_all(jobs, workers))):
            if why is None:
                self._readable.append((rel, label, i))
            else:
                self.skipped.append((rel, why))
        for rel, reason in self.skipped:
            log.warning("skipping unreadable image %s (%s)", root / rel, reason)
        counts = np.bincount([label for _, label, _ in self._readable], minlength=len(self.cfg.class_names))
        empty = [self.cfg.class_names[c] for c in np.flatnonzero(counts == 0)]
        if empty:
            raise ConfigError("data.name", name, _ALLOWED,
                              why=f"class folder(s) {', '.join(empty)} hold no readable image")

    def _split_generators(self, dl_manager):
        if self._readable is None:
            raise RuntimeError("UserFolder.check_images must run before preparing; use folder.builder()")
        labels = np.array([label for _, label, _ in self._readable])
        splits = stratified_fractions(labels, dict(self.cfg.fractions), self.cfg.seed)
        return {split: self._generate_examples([self._readable[i] for i in idx])
                for split, idx in splits.items() if len(idx)}

    def _generate_examples(self, files):
        for rel, label, position in files:  # encoded by check_images: read, not decoded again
            staged = self._staging / f"{position:08d}"
            data = staged.read_bytes()
            staged.unlink()
            yield rel, {"image": data, "label": label, "file_name": rel}


_ALLOWED = ("folder:/path to a folder with two or more class subfolders, each holding at least one "
            f"readable image ({', '.join(IMAGE_EXTENSIONS)})")


def default_workers() -> int:
    """The cores this process may run on (its CPU affinity, e.g. a SLURM allocation)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def _prepare_one(job: tuple[str, str, int]) -> str | None:
    """Worker: one image (source path, staging path, max_side) decoded once and encoded into its staging
    file. None, or why the image is unreadable."""
    src, dst, max_side = job
    try:
        data = _encode(pathlib.Path(src), max_side)
    except Exception as e:  # noqa: BLE001 - PIL raises many types for a bad file
        return f"{type(e).__name__}: {e}"
    pathlib.Path(dst).write_bytes(data)
    return None


def encode_all(jobs: list[tuple[str, str, int]], workers: int | None = None):
    """`_prepare_one` of every job, in the jobs' order: in a pool of `workers` fresh ("spawn") processes,
    or in this process when `workers` is 1 (None: one per core, or 1 for a folder under POOL_MIN_BYTES)."""
    if workers is None:
        small = sum(_file_size(src) for src, _, _ in jobs) < POOL_MIN_BYTES
        workers = 1 if small else default_workers()
    if workers <= 1 or len(jobs) <= 1:
        yield from map(_prepare_one, jobs)
        return
    chunk, done = max(1, min(16, len(jobs) // (workers * 8))), 0
    try:
        with concurrent.futures.ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
            for why in pool.map(_prepare_one, jobs, chunksize=chunk):
                yield why
                done += 1
    except concurrent.futures.process.BrokenProcessPool as e:  # e.g. a script without a __main__ guard
        log.warning("preparing the images in this process instead: the worker processes failed (%s). A script "
                    "that prepares a folder in parallel must start under `if __name__ == \"__main__\":`", e)
        yield from map(_prepare_one, jobs[done:])


def _file_size(path: str) -> int:
    try:
        return os.stat(path).st_size
    except OSError:
        return 0


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
    classes, listing, _ = scan_listing(pathlib.Path(path).expanduser(), name)
    return classes, [(rel, label) for rel, label, _, _ in listing]


def scan_listing(root: pathlib.Path, name: str, old: dict | None = None, rescan: bool = False):
    """(class names, [(relative path, class index, size, mtime_ns)] sorted, directory listing for the
    manifest). `old`: a previous directory listing; a directory whose modification time it records is not
    listed again (one stat per directory) unless `rescan`."""
    old, new, horizon = old or {}, {}, time.time_ns() - _RACY_NS
    try:
        new["."] = _list_dir(root, old.get("."), True, horizon, rescan)
    except (FileNotFoundError, NotADirectoryError):
        raise ConfigError("data.name", name, _ALLOWED, why=f"{root} is not a folder") from None
    classes = tuple(new["."]["dirs"])
    if len(classes) < 2:
        raise ConfigError("data.name", name, _ALLOWED,
                          why=f"{root} has {len(classes)} class subfolder(s): {', '.join(classes) or 'none'}")
    listing, empty = [], []
    for label, cls in enumerate(classes):
        found, stack = [], [cls]
        while stack:
            rel = stack.pop()
            new[rel] = _list_dir(root / rel, old.get(rel), False, horizon, rescan)
            found.extend((f"{rel}/{n}", label, size, mtime) for n, size, mtime in new[rel]["files"])
            stack.extend(f"{rel}/{d}" for d in new[rel]["dirs"])
        if not found:
            empty.append(cls)
        listing.extend(sorted(found))
    if empty:
        raise ConfigError("data.name", name, _ALLOWED, why=f"class folder(s) {', '.join(empty)} hold no image")
    return classes, listing, new


def _list_dir(path: pathlib.Path, old: dict | None, top: bool, horizon: int, rescan: bool) -> dict:
    """{"mtime", "dirs", "files": [[name, size, mtime_ns]]} of one directory, hidden entries left out: `old`
    when it records the directory's current modification time. `top`: the folder itself (its subfolders,
    links followed, are the classes; its files are not images of any class); below it, as `Path.rglob`,
    linked directories are not entered. "mtime" is None when too recent to be trusted (see the docstring)."""
    st = os.stat(path)
    if not stat.S_ISDIR(st.st_mode):
        raise NotADirectoryError(path)
    mtime = st.st_mtime_ns
    if old is not None and not rescan and old.get("mtime") == mtime:
        return old
    dirs, files = [], []
    with os.scandir(path) as entries:
        for e in entries:
            if e.name.startswith("."):
                continue
            try:
                if e.is_dir() and (top or not e.is_symlink()):
                    dirs.append(e.name)
                elif not top and e.name.lower().endswith(IMAGE_EXTENSIONS) and e.is_file():
                    info = e.stat()
                    files.append([e.name, info.st_size, info.st_mtime_ns])
            except OSError:  # removed meanwhile, or a broken link
                continue
    return {"mtime": mtime if mtime < horizon else None, "dirs": sorted(dirs), "files": sorted(files)}


def _slug(root: pathlib.Path) -> str:
    return re.sub(r"[^a-z0-9]+", "_", root.name.lower()).strip("_") or "folder"


def manifest_path(root: pathlib.Path, data_dir: str | None) -> pathlib.Path:
    """Where the listing of the folder `root` (resolved) is kept: under the TFDS data dir."""
    base = pathlib.Path(data_dir or tfds.core.constants.DATA_DIR).expanduser()
    digest = hashlib.sha256(str(root).encode()).hexdigest()[:12]
    return base / UserFolder.name / MANIFEST_DIR / f"{_slug(root)}_{digest}.json"


def _read_manifest(path: pathlib.Path, root: pathlib.Path) -> dict:
    try:
        m = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    ok = isinstance(m, dict) and m.get("version") == MANIFEST_VERSION and m.get("root") == str(root)
    return m.get("dirs", {}) if ok else {}


def _write_manifest(path: pathlib.Path, root: pathlib.Path, dirs: dict) -> None:
    """Atomically (several launches may write it at once); a read-only data dir only costs the re-walk."""
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_text(json.dumps({"version": MANIFEST_VERSION, "root": str(root), "dirs": dirs}))
        os.replace(tmp, path)
    except OSError as e:
        log.warning("could not write the folder manifest %s (%s)", path, e)


def _config_name(root: pathlib.Path, listing, fractions, max_side, seed) -> str:
    """`listing`: [(relative path, label, size, mtime_ns)]."""
    h = hashlib.sha256()
    h.update(json.dumps([[list(row) for row in listing], list(fractions), max_side, seed,
                         str(UserFolder.VERSION)]).encode())
    return f"{_slug(root)}_{h.hexdigest()[:12]}"


def builder(path: str, data_dir: str | None = None, *, fractions=DEFAULT_FRACTIONS,
            max_side: int = DEFAULT_MAX_SIDE, seed: int = SPLIT_SEED, workers: int | None = None,
            rescan: bool | None = None) -> UserFolder:
    """The prepared dataset of a class-per-subfolder folder (prepared now unless it already is).

    `fractions`: (split, fraction) pairs summing to 1, train > 0; `max_side`: the largest shorter side kept;
    `workers`: preparing processes (None: one per core; 1: this process); `rescan`: stat every image instead
    of trusting the manifest's unchanged directories (None: the environment variable TL_RESEARCH_FOLDER_RESCAN).
    """
    name = PREFIX + path
    fractions = tuple((str(k), float(v)) for k, v in dict(fractions).items())
    if (dict(fractions).get("train", 0) <= 0 or any(v < 0 for _, v in fractions)
            or abs(sum(v for _, v in fractions) - 1) > 1e-6):
        raise ValueError(f"fractions must be >= 0, sum to 1 and give train > 0: {fractions}")
    root = pathlib.Path(path).expanduser().resolve()
    if rescan is None:
        rescan = os.environ.get(RESCAN_ENV, "") not in ("", "0")
    manifest = manifest_path(root, data_dir)
    old = _read_manifest(manifest, root)
    classes, listing, dirs = scan_listing(root, name, old, rescan)
    if dirs != old:
        _write_manifest(manifest, root, dirs)
    config = FolderConfig(name=_config_name(root, listing, fractions, max_side, seed), folder=str(root),
                          class_names=classes, files=tuple((rel, label) for rel, label, _, _ in listing),
                          fractions=fractions, max_side=int(max_side), seed=int(seed),
                          description=f"The images of {root}.")
    b = UserFolder(config=config, data_dir=data_dir, file_format="array_record")
    if not b.is_prepared():
        parent = pathlib.Path(b.data_dir).parents[1]
        parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=parent, prefix=".prepare_") as staging:
            b.check_images(name, staging, workers)
            with tfds_spill.without_tensorflow():  # a folder past 1,000 MB per split spills to disk
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
