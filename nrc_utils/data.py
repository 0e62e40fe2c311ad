"""Data sets of the book: K-class Gaussian mixtures, scikit-learn digits, MNIST,
Fashion-MNIST and CIFAR-10, as :class:`Dataset` objects (inputs ``x_i``, labels
``y_i`` in ``0..K-1``, the book's notation).

The Gaussian mixture is the data model of the paper's Section 4 (Zangrando et al.,
arXiv:2402.03991): ``x = m_c + s * xi`` with ``xi ~ N(0, I_d)``. Digits (1797 real 8x8
handwritten digits, shipped with scikit-learn) is always available offline. MNIST,
Fashion-MNIST and CIFAR-10 are read from their standard on-disk formats.

Where data is looked for, in this order (the first folder that holds a complete set of
files wins, separately for the training and the test files):

1. the user's data root, which is the ``root`` argument when it is given, else the
   environment variable ``NRC_DATA_ROOT`` when it is set, else ``<repo>/data``
   (``Path(__file__).resolve().parents[1] / "data"``, git-ignored);
2. then the system-wide folders of :data:`SYSTEM_DATA_DIRS`, i.e. ``/usr/share/datasets``,
   where Debian's package ``dataset-fashion-mnist`` puts Fashion-MNIST
   (``/usr/share/datasets/fashion-mnist/*-idx?-ubyte.gz``; ``make`` installs it where
   apt-get can be used as root). A copy in the user's data root always takes precedence.

Under each of these roots, files are looked for in these folders:

- MNIST: ``MNIST/raw`` (torchvision's layout), ``mnist``, the root itself;
- Fashion-MNIST: ``FashionMNIST/raw`` (torchvision's layout), ``fashion_mnist``,
  ``fashion-mnist`` (not the root itself: its file names are MNIST's);
- CIFAR-10: ``cifar-10-batches-bin`` (binary version, preferred: no pickle),
  ``cifar-10-batches-py`` (python version), each also under ``cifar10/``.

``download=True`` fetches the canonical files (checked against their published MD5
sums) into the user's data root when they are in none of these folders and the network
allows; otherwise :class:`DataNotFoundError` says which files to copy where.
:func:`available` says whether a data set's files are present, without downloading or
reading them.

Every problem with the files is one line naming the file, what is wrong and what to do,
raised as a :class:`DataError`: :class:`DataNotFoundError` (absent; the data root is a
file; a download failed), :class:`DataCorruptError` (truncated, damaged or not the
expected format: cut headers, headers promising more data than the file holds, broken
gzip streams, unloadable or mis-shaped pickles, float pixels, mismatched image and label
counts, labels outside ``0..9``) and :class:`DataPermissionError` (a folder or file that
cannot be read). Sizes promised by a header are checked against the data actually
present before anything of that size is allocated.
"""

from __future__ import annotations

import gzip
import hashlib
import http.client
import io
import logging
import math
import os
import pickle
import shutil
import tarfile
import urllib.request
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

__all__ = [
    "Dataset",
    "DataError",
    "DataNotFoundError",
    "DataCorruptError",
    "DataPermissionError",
    "SYSTEM_DATA_DIRS",
    "data_root",
    "search_roots",
    "gaussian_mixture",
    "digits",
    "mnist",
    "fashion_mnist",
    "cifar10",
    "load",
    "available",
    "standardize",
    "NAMES",
]

log = logging.getLogger(__name__)

#: The names understood by :func:`load` and :func:`available`.
NAMES = ("gaussian_mixture", "digits", "mnist", "fashion_mnist", "cifar10")


#: System-wide data folders searched after the user's data root, in order (see the module
#: docstring). Debian's ``dataset-fashion-mnist`` installs ``fashion-mnist/`` here.
SYSTEM_DATA_DIRS: tuple[Path, ...] = (Path("/usr/share/datasets"),)


class DataError(Exception):
    """A data set's files are absent, unreadable or damaged (always a one-line message)."""


class DataNotFoundError(DataError, FileNotFoundError):
    """A data set's files are not on disk (and could not be downloaded)."""


class DataCorruptError(DataError, ValueError):
    """A data file is truncated, damaged or not in the expected format."""


class DataPermissionError(DataError, PermissionError):
    """A data folder or file exists but this user may not read it."""


def data_root(root: str | os.PathLike | None = None) -> Path:
    """The user's data root: ``root`` if given, else ``$NRC_DATA_ROOT``, else ``<repo>/data``."""
    if root is not None:
        return Path(root).expanduser()
    env = os.environ.get("NRC_DATA_ROOT")
    if env:
        return Path(env).expanduser()
    return Path(__file__).resolve().parents[1] / "data"


def search_roots(root: str | os.PathLike | None = None) -> list[Path]:
    """The roots searched for files, in order: :func:`data_root`, then :data:`SYSTEM_DATA_DIRS`."""
    first = data_root(root)
    return [first] + [p for p in SYSTEM_DATA_DIRS if p != first]


def _one_line(err: BaseException) -> str:
    text = " ".join(str(err).split())
    return f"{type(err).__name__}: {text}" if text else type(err).__name__


def _remedy(path: Path, plural: bool = False) -> str:
    """What to do about a bad file: re-download or re-copy it, or reinstall its package."""
    it, copy = ("them", "good copies") if plural else ("it", "a good copy")
    for system in SYSTEM_DATA_DIRS:
        if path.is_relative_to(system):
            if path.parent.name == "fashion-mnist":
                return f"reinstall {it}: apt-get install --reinstall dataset-fashion-mnist"
            return f"reinstall the package that provides {it} (dpkg -S {path} names it)"
    return f"delete {it} and download {it} again (download=True) or copy {copy} there"


def _corrupt(path: Path, what: str, plural: bool = False, remedy: str | None = None) -> DataCorruptError:
    return DataCorruptError(f"{path} {what}; {remedy or _remedy(path, plural)}")


def _denied(path: Path) -> DataPermissionError:
    return DataPermissionError(
        f"{path} cannot be read by this user (permission denied); make it readable "
        f"(e.g. chmod -R a+rX {path}) or point NRC_DATA_ROOT at a readable copy"
    )


def _check_root(base: Path) -> None:
    """Refuse a data root that is (under) a file, or a folder this user may not enter."""
    for p in (base, *base.parents):
        try:
            if not p.exists():
                continue
        except PermissionError:  # a folder above p may not be entered
            raise _denied(p.parent) from None
        if not p.is_dir():
            raise DataNotFoundError(
                f"data root {base} is not a folder ({p} is a file); pass root= or set NRC_DATA_ROOT "
                "to a folder (it is created on download)"
            )
        if p == base and not os.access(p, os.R_OK | os.X_OK):
            raise _denied(p)
        return


def _is_file(path: Path) -> bool:
    try:
        return path.is_file()
    except PermissionError:
        raise _denied(path.parent) from None


def _open_bytes(path: Path) -> Any:
    """``open(path, "rb")``, a refused permission as :class:`DataPermissionError`."""
    try:
        return open(path, "rb")
    except PermissionError:
        raise _denied(path) from None
    except OSError as err:
        raise _corrupt(path, f"cannot be opened ({_one_line(err)})") from err


def _read_all(path: Path) -> bytes:
    with _open_bytes(path) as f:
        try:
            return f.read()
        except OSError as err:
            raise _corrupt(path, f"cannot be read ({_one_line(err)})") from err


# --------------------------------------------------------------------------------------
# The Dataset container
# --------------------------------------------------------------------------------------


@dataclass(repr=False)
class Dataset:
    """Inputs ``X`` (``(N, d)`` or images ``(N, C, H, W)``), labels ``y`` in ``0..K-1``."""

    X: torch.Tensor
    y: torch.Tensor
    K: int
    name: str

    def __post_init__(self) -> None:
        if self.y.ndim != 1 or self.X.shape[0] != self.y.shape[0]:
            raise ValueError(
                f"X has {self.X.shape[0]} rows and y has shape {tuple(self.y.shape)}; "
                "y must be 1-D with one label per row of X"
            )
        if self.y.dtype != torch.int64:
            raise ValueError(f"y must be int64 (torch.long), got {self.y.dtype}; use y.long()")
        if len(self.y) and (int(self.y.min()) < 0 or int(self.y.max()) >= self.K):
            raise ValueError(f"labels must lie in 0..{self.K - 1}, got {int(self.y.min())}..{int(self.y.max())}")

    def __len__(self) -> int:
        return self.X.shape[0]

    def __repr__(self) -> str:
        return (
            f"Dataset(name={self.name!r}, N={len(self)}, K={self.K}, "
            f"X={tuple(self.X.shape)} {self.X.dtype}, device={self.X.device})"
        )

    @property
    def d(self) -> int:
        """The flattened input dimension ``d`` (``C * H * W`` for images)."""
        return int(np.prod(self.X.shape[1:]))

    def flat(self) -> "Dataset":
        """The same data with ``X`` reshaped to ``(N, d)``."""
        return Dataset(self.X.reshape(len(self), self.d), self.y, self.K, self.name)

    def subset(self, idx: Any) -> "Dataset":
        """The rows ``idx`` (indices, a boolean mask or a slice; torch, numpy or list)."""
        if isinstance(idx, np.ndarray):
            idx = torch.from_numpy(idx)
        elif isinstance(idx, (list, tuple)):
            idx = torch.as_tensor(idx, dtype=torch.bool if idx and isinstance(idx[0], bool) else torch.int64)
        return Dataset(self.X[idx], self.y[idx], self.K, self.name)

    def split(self, test_fraction: float, seed: int = 0) -> tuple["Dataset", "Dataset"]:
        """A stratified ``(train, test)`` split, deterministic in ``seed``.

        Class ``c`` puts ``round(test_fraction * n_c)`` of its samples, chosen at random,
        in the test part; both parts keep the original order of the samples.
        """
        if not 0 < test_fraction < 1:
            raise ValueError(f"test_fraction must lie strictly between 0 and 1, got {test_fraction}")
        rng = np.random.default_rng(seed)
        y = self.y.cpu().numpy()
        test = np.zeros(len(y), dtype=bool)
        for c in range(self.K):
            members = np.flatnonzero(y == c)
            n_test = int(round(test_fraction * len(members)))
            test[rng.permutation(members)[:n_test]] = True
        return self.subset(np.flatnonzero(~test)), self.subset(np.flatnonzero(test))

    def one_hot(self) -> torch.Tensor:
        """One-hot targets ``(N, K)`` float32 (the square-loss targets ``y_i`` of the book)."""
        return torch.nn.functional.one_hot(self.y, self.K).to(torch.float32)

    def to(self, device: Any = None, dtype: torch.dtype | None = None) -> "Dataset":
        """Move to ``device``; ``dtype`` applies to ``X`` only (labels stay int64)."""
        return Dataset(self.X.to(device=device, dtype=dtype), self.y.to(device=device), self.K, self.name)


# --------------------------------------------------------------------------------------
# Synthetic and offline data
# --------------------------------------------------------------------------------------


def gaussian_mixture(
    K: int,
    d: int,
    n_per_class: int,
    s: float,
    mean_scale: float = 1.0,
    subspace_dim: int | None = None,
    seed: int = 0,
) -> Dataset:
    """A K-class Gaussian mixture in ``R^d`` (the data model of the paper's Section 4).

    ``x = m_c + s * xi`` with ``xi ~ N(0, I_d)``, ``n_per_class`` samples per class, the
    classes in order (``y = 0, ..., 0, 1, ..., K-1``).

    Class means (our choice, the paper's is not known to us): ``m_c = mean_scale * u_c``
    with ``u_c`` independent and uniform on the unit sphere of ``R^d`` or, when
    ``subspace_dim = p`` is given, of a random ``p``-dimensional subspace (the same for all
    classes). So ``||m_c|| = mean_scale`` exactly and, for ``p`` large, the means are
    nearly orthogonal, ``||m_c - m_c'|| ~ sqrt(2) mean_scale``, while a class has radius
    about ``s sqrt(d)``: ``E ||x - m_c||^2 = s^2 d``, hence ``E TCV_2 = N s^2 d`` around
    the true means (chapter 4, Gaussian mixtures). Deterministic in ``seed`` (numpy ``default_rng``).
    """
    for label, value in (("K", K), ("d", d), ("n_per_class", n_per_class)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
            raise ValueError(f"{label} must be a positive integer, got {value!r}")
    if not s >= 0 or not mean_scale >= 0:
        raise ValueError(f"s and mean_scale must be >= 0, got s={s}, mean_scale={mean_scale}")
    if subspace_dim is not None and (not isinstance(subspace_dim, (int, np.integer)) or not 1 <= subspace_dim <= d):
        raise ValueError(f"subspace_dim must lie in 1..d={d}, got {subspace_dim}")
    rng = np.random.default_rng(seed)
    p = d if subspace_dim is None else int(subspace_dim)
    U = rng.standard_normal((K, p))
    U /= np.linalg.norm(U, axis=1, keepdims=True)
    if subspace_dim is not None:
        Q, _ = np.linalg.qr(rng.standard_normal((d, p)))  # orthonormal basis, d x p
        U = U @ Q.T
    means = mean_scale * U
    y = np.repeat(np.arange(K), n_per_class)
    X = means[y] + s * rng.standard_normal((K * n_per_class, d))
    return Dataset(
        torch.from_numpy(X.astype(np.float32)),
        torch.from_numpy(y.astype(np.int64)),
        int(K),
        f"gaussian_mixture(K={K}, d={d}, s={s:g})",
    )


def digits(standardize: bool = True) -> Dataset:
    """scikit-learn's ``load_digits``: 1797 real 8x8 handwritten digits, ``K = 10``.

    Pixels (0..16) are scaled to ``[0, 1]`` and flattened to ``d = 64``. With
    ``standardize`` each pixel ``j`` becomes ``(x_j - mean_j) / std_j`` over all 1797
    images (population std); pixels that are constant over the set (``std_j = 0``, e.g.
    border pixels that are always 0) are only centred, i.e. become 0. The statistics use
    the whole set, before any :meth:`Dataset.split` (a negligible leak for our purposes).
    """
    from sklearn.datasets import load_digits

    bunch = load_digits()
    X = bunch.data.astype(np.float64) / 16.0
    if standardize:
        mean = X.mean(axis=0)
        std = X.std(axis=0)
        std[std == 0] = 1.0
        X = (X - mean) / std
    return Dataset(
        torch.from_numpy(X.astype(np.float32)),
        torch.from_numpy(bunch.target.astype(np.int64)),
        10,
        "digits",
    )


# --------------------------------------------------------------------------------------
# MNIST and Fashion-MNIST (IDX format)
# --------------------------------------------------------------------------------------

_IDX_STEMS = {
    True: ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    False: ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}

# Canonical sources and the MD5 sums of the .gz files (as published with torchvision).
_IDX_SOURCES = {
    "mnist": (
        "https://ossci-datasets.s3.amazonaws.com/mnist/",
        {
            "train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
            "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
            "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
            "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c",
        },
    ),
    "fashion_mnist": (
        "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
        {
            "train-images-idx3-ubyte.gz": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
            "train-labels-idx1-ubyte.gz": "25c81989df183df01b3e8a0aad5dffbe",
            "t10k-images-idx3-ubyte.gz": "bef4ecab320f06d8554ea6380940ec79",
            "t10k-labels-idx1-ubyte.gz": "bb300cfdad3c16e7a12a480ee83cd310",
        },
    ),
}

# IDX type codes (http://yann.lecun.com/exdb/mnist/, "THE IDX FILE FORMAT"); big-endian.
_IDX_DTYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def _idx_folders(name: str, root: Path) -> list[Path]:
    if name == "mnist":
        return [root / "MNIST" / "raw", root / "mnist", root]
    return [root / "FashionMNIST" / "raw", root / "fashion_mnist", root / "fashion-mnist"]


def _idx_file(folder: Path, stem: str) -> Path | None:
    """``folder/stem`` or ``folder/stem.gz``, whichever exists (uncompressed first)."""
    for candidate in (folder / stem, folder / f"{stem}.gz"):
        if _is_file(candidate):
            return candidate
    return None


def _first(roots: list[Path], probe: Any) -> Any:
    """``probe(root)`` for each root in order, the first result that is not None. An
    unreadable user data root (the first) is an error; an unreadable system folder
    counts as absent."""
    for i, root in enumerate(roots):
        try:
            hit = probe(root)
        except DataPermissionError:
            if i == 0:
                raise
            continue
        if hit is not None:
            return hit
    return None


def _find_idx(name: str, roots: list[Path], train: bool) -> tuple[Path, Path] | None:
    def probe(root: Path) -> tuple[Path, Path] | None:
        for folder in _idx_folders(name, root):
            images, labels = (_idx_file(folder, stem) for stem in _IDX_STEMS[train])
            if images is not None and labels is not None:
                return images, labels
        return None

    return _first(roots, probe)


_CHUNK = 1 << 22  # 4 MiB


def _read_upto(f: Any, n: int) -> bytearray:
    """At most ``n`` bytes of ``f``, read in chunks: never allocates more than is there."""
    out = bytearray()
    while len(out) < n:
        chunk = f.read(min(_CHUNK, n - len(out)))
        if not chunk:
            break
        out += chunk
    return out


def _short(path: Path, present: int, expected: int, dims: tuple[int, ...]) -> DataCorruptError:
    if present > expected:
        return _corrupt(path, f"holds more data bytes than its header promises ({expected}): the file is corrupt")
    return _corrupt(
        path,
        f"holds {present} data bytes but its header promises {expected} "
        f"({' x '.join(map(str, dims))}): the file is truncated or corrupt",
    )


def _read_idx(path: Path, kind: str) -> np.ndarray:
    """An IDX file (optionally gzipped) of unsigned bytes as a numpy array of its stored
    shape: ``kind="images"`` must be ``(n, 28, 28)``, ``kind="labels"`` ``(n,)`` in ``0..9``.

    The header (magic number, type code, dimensions) is read and checked first, and the
    size it promises is compared with the bytes actually present (the file size of a
    plain file, before reading any data; a gzip stream while it is decompressed in
    chunks), so a damaged header claiming 10^12 items allocates nothing of that size."""
    gz = path.suffix == ".gz"
    with _open_bytes(path) as raw:
        try:
            f = gzip.GzipFile(fileobj=raw, mode="rb") if gz else raw
            head = _read_upto(f, 4)
            if len(head) < 4 or head[0] != 0 or head[1] != 0:
                if head[:2] == b"\x1f\x8b" and not gz:
                    raise _corrupt(path, "is gzip-compressed but not named .gz", remedy="rename it to end in .gz")
                if len(head) < 4:
                    raise _corrupt(path, f"is cut inside its IDX header ({len(head)} of at least 4 bytes)")
                raise _corrupt(path, "is not an IDX file (bad magic number)")
            code, ndim = head[2], head[3]
            if code not in _IDX_DTYPES:
                raise _corrupt(path, f"is not an IDX file (unknown type code 0x{code:02X})")
            if code != 0x08:
                raise _corrupt(
                    path,
                    f"holds {np.dtype(_IDX_DTYPES[code]).name} values (IDX type code 0x{code:02X}), but MNIST "
                    f"{kind} are unsigned bytes (type code 0x08); the loader does not cast other types",
                )
            want_ndim = 3 if kind == "images" else 1
            if ndim != want_ndim:
                raise _corrupt(path, f"has {ndim} dimensions, but MNIST {kind} have {want_ndim}")
            dims_raw = _read_upto(f, 4 * ndim)
            if len(dims_raw) < 4 * ndim:
                raise _corrupt(path, f"is cut inside its IDX header ({4 + len(dims_raw)} of {4 + 4 * ndim} bytes)")
            dims = tuple(int.from_bytes(dims_raw[4 * i: 4 * i + 4], "big") for i in range(ndim))
            if kind == "images" and dims[1:] != (28, 28):
                raise _corrupt(path, f"holds images of {dims[1]}x{dims[2]} pixels, but MNIST images are 28x28")
            expected = math.prod(dims)  # unsigned bytes: one byte per item, exact (no overflow)
            if not gz:  # the size on disk says it before any data is read
                present = os.fstat(raw.fileno()).st_size - 4 - 4 * ndim
                if present != expected:
                    raise _short(path, present, expected, dims)
            body = _read_upto(f, expected + 1)  # gzip: only decompressing tells; never more than is there
        except DataError:
            raise
        except PermissionError:
            raise _denied(path) from None
        except (OSError, EOFError, zlib.error) as err:  # gzip.BadGzipFile is an OSError
            if gz and isinstance(err, gzip.BadGzipFile) and raw.seek(0) == 0 and raw.read(3) == b"\x00\x00\x08":
                raise _corrupt(path, "is named .gz but is not compressed", remedy="remove .gz from its name") from None
            what = "gzip stream is truncated or damaged" if gz else "cannot be read"
            raise _corrupt(path, f"is corrupt: its {what} ({_one_line(err)})") from err
    if len(body) != expected:
        raise _short(path, len(body), expected, dims)
    array = np.frombuffer(body, dtype=np.uint8).reshape(dims)
    if kind == "labels" and array.size and int(array.max()) > 9:
        raise _corrupt(path, f"holds labels up to {int(array.max())}, but MNIST labels lie in 0..9: the file is corrupt")
    return array


def _download(url: str, dest: Path, md5: str) -> None:
    """Fetch ``url`` to ``dest`` (via a ``.part`` file), checking its MD5 sum."""
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise DataNotFoundError(
            f"cannot create {dest.parent} to download {url} into ({_one_line(err)}); "
            "make it writable, or copy the file there"
        ) from err
    part = dest.with_name(dest.name + ".part")
    log.info("downloading %s to %s", url, dest)
    try:
        with urllib.request.urlopen(url, timeout=60) as response, open(part, "wb") as out:
            shutil.copyfileobj(response, out)
    except (OSError, http.client.HTTPException) as err:
        part.unlink(missing_ok=True)
        raise DataNotFoundError(
            f"download of {url} failed ({_one_line(err)}); copy the file to {dest.parent} instead"
        ) from err
    digest = hashlib.md5(part.read_bytes(), usedforsecurity=False).hexdigest()
    if digest != md5:
        part.unlink(missing_ok=True)
        raise DataNotFoundError(
            f"download of {url} has MD5 {digest}, expected {md5}; copy a good file to {dest.parent} instead"
        )
    os.replace(part, dest)


def _load_idx(name: str, title: str, root: Any, train: bool, download: bool) -> Dataset:
    base = data_root(root)
    _check_root(base)
    roots = search_roots(root)
    found = _find_idx(name, roots, train)
    if found is None and download:
        url, md5s = _IDX_SOURCES[name]
        target = _idx_folders(name, base)[0]
        for filename, md5 in md5s.items():
            if _idx_file(target, filename[: -len(".gz")]) is None:
                _download(url + filename, target / filename, md5)
        found = _find_idx(name, roots, train)
    if found is None:
        split = "training" if train else "test"
        images, labels = _IDX_STEMS[train]
        folders = ", ".join(str(f) for r in roots for f in _idx_folders(name, r))
        raise DataNotFoundError(
            f"{title} {split} files {images}[.gz] and {labels}[.gz] not found in any of {folders}; "
            f"pass download=True where the network allows, or copy the files to {_idx_folders(name, base)[0]}"
        )
    image_path, label_path = found
    images = _read_idx(image_path, "images")
    labels = _read_idx(label_path, "labels")
    if len(images) != len(labels):
        raise _corrupt(
            image_path,
            f"holds {len(images)} images but {label_path} holds {len(labels)} labels: they are not a pair",
            plural=True,
        )
    X = images.astype(np.float32)
    X /= np.float32(255.0)
    y = labels.astype(np.int64)
    return Dataset(torch.from_numpy(X[:, None, :, :]), torch.from_numpy(y), 10, f"{name}/{'train' if train else 'test'}")


def mnist(root: str | os.PathLike | None = None, train: bool = True, download: bool = False) -> Dataset:
    """MNIST (LeCun et al. 1998) from the IDX files: images ``(N, 1, 28, 28)`` float32 in
    ``[0, 1]`` (pixel / 255), ``K = 10``; 60000 training or 10000 test images.

    Looked for under ``root`` (default :func:`data_root`) in ``MNIST/raw``, ``mnist`` or
    the root itself, plain or ``.gz``. ``download=True`` fetches the missing files from
    https://ossci-datasets.s3.amazonaws.com/mnist/ into ``MNIST/raw``.
    """
    return _load_idx("mnist", "MNIST", root, train, download)


def fashion_mnist(root: str | os.PathLike | None = None, train: bool = True, download: bool = False) -> Dataset:
    """Fashion-MNIST (Xiao, Rasul, Vollgraf 2017), same IDX format and shapes as MNIST.

    Looked for under ``root`` in ``FashionMNIST/raw``, ``fashion_mnist`` or
    ``fashion-mnist``. ``download=True`` fetches the missing files from
    http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/ into ``FashionMNIST/raw``.
    """
    return _load_idx("fashion_mnist", "Fashion-MNIST", root, train, download)


# --------------------------------------------------------------------------------------
# CIFAR-10 (binary and python versions)
# --------------------------------------------------------------------------------------

_CIFAR_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz"
_CIFAR_MD5 = "c32a1d4ab5d03f1284b67883e8d87530"
_CIFAR_BIN = {True: [f"data_batch_{i}.bin" for i in range(1, 6)], False: ["test_batch.bin"]}
_CIFAR_PY = {True: [f"data_batch_{i}" for i in range(1, 6)], False: ["test_batch"]}
_CIFAR_RECORD = 1 + 3 * 32 * 32  # one label byte, then the R, G and B planes (32x32, row-major)


def _cifar_folders(root: Path, kind: str) -> list[Path]:
    return [root / f"cifar-10-batches-{kind}", root / "cifar10" / f"cifar-10-batches-{kind}"]


def _find_cifar(roots: list[Path], train: bool) -> tuple[str, list[Path]] | None:
    """``("bin", files)`` or ``("py", files)``, the binary version first, root by root."""

    def probe(root: Path) -> tuple[str, list[Path]] | None:
        for kind, names in (("bin", _CIFAR_BIN[train]), ("py", _CIFAR_PY[train])):
            for folder in _cifar_folders(root, kind):
                files = [folder / n for n in names]
                if all(_is_file(f) for f in files):
                    return kind, files
        return None

    return _first(roots, probe)


def _check_cifar_labels(path: Path, labels: np.ndarray) -> None:
    if labels.size and (int(labels.min()) < 0 or int(labels.max()) > 9):
        raise _corrupt(
            path,
            f"holds labels {int(labels.min())}..{int(labels.max())}, but CIFAR-10 labels lie in 0..9: the file is corrupt",
        )


def _read_cifar_bin(path: Path) -> tuple[np.ndarray, np.ndarray]:
    raw = np.frombuffer(_read_all(path), dtype=np.uint8)
    if raw.size == 0 or raw.size % _CIFAR_RECORD:
        raise _corrupt(
            path,
            f"holds {raw.size} bytes, not a whole number of {_CIFAR_RECORD}-byte CIFAR-10 records: "
            "the file is truncated or corrupt",
        )
    records = raw.reshape(-1, _CIFAR_RECORD)
    labels = records[:, 0].astype(np.int64)
    _check_cifar_labels(path, labels)
    return records[:, 1:].reshape(-1, 3, 32, 32), labels


class _BatchUnpickler(pickle._Unpickler):  # the pure-Python unpickler, to check each BUILD
    """Unpickles only builtin containers and numpy arrays: a CIFAR-10 python batch
    (a dict with ``b"data"``, a uint8 array, and ``b"labels"``, a list) needs nothing
    else, and refusing every other global means a tampered file cannot run code.

    The pure-Python unpickler is used rather than the C one: its memo is a dict (the C
    unpickler sizes an array by the largest memo index it meets, so one damaged byte
    could make it allocate up to 64 GB; a test flip took 10 GB), and it lets BUILD be
    checked: a dtype may only be given the state it already has (a damaged state can set
    numpy's internal flags, e.g. "holds object references" on uint8 pixels)."""

    _ALLOWED = {
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("numpy.core.multiarray", "_reconstruct"),  # numpy 1.x pickles (the original files)
        ("numpy._core.multiarray", "_reconstruct"),  # numpy 2.x pickles
        ("numpy.core.multiarray", "scalar"),
        ("numpy._core.multiarray", "scalar"),
        ("numpy.core.numeric", "_frombuffer"),  # protocol 5 pickles
        ("numpy._core.numeric", "_frombuffer"),
    }

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in self._ALLOWED:
            raise pickle.UnpicklingError(
                f"refusing to load {module}.{name}: a CIFAR-10 batch holds only a dict, lists "
                "and numpy arrays; use the binary version (cifar-10-batches-bin) instead"
            )
        if module.startswith("numpy.core.") and hasattr(np, "_core"):
            module = "numpy._core." + module[len("numpy.core."):]  # numpy 2 spelling, no warning
        return super().find_class(module, name)

    def load_build(self) -> None:
        state, inst = self.stack[-1], self.stack[-2]
        if isinstance(inst, np.dtype):
            plain = inst.__reduce__()[2]
            given = state
            if isinstance(state, tuple):  # Python 2 pickles read with encoding="bytes" spell "|" as b"|"
                given = tuple(v.decode("latin-1") if isinstance(v, bytes) else v for v in state)
            if given != plain:
                raise pickle.UnpicklingError(f"refusing dtype state {state!r} for {inst} (expected {plain!r})")
            self.stack.pop()  # the state is the one the dtype already has: nothing to set
            return
        super().load_build()

    dispatch = dict(pickle._Unpickler.dispatch)
    dispatch[pickle.BUILD[0]] = load_build


def _read_cifar_py(path: Path) -> tuple[np.ndarray, np.ndarray]:
    blob = _read_all(path)
    try:
        batch = _BatchUnpickler(io.BytesIO(blob), encoding="bytes").load()
    except Exception as err:  # a damaged pickle can fail in any way: all of them mean the same
        if isinstance(err, KeyError) and len(err.args) == 1 and isinstance(err.args[0], int):
            why = f"invalid load key 0x{err.args[0]:02x}, not a pickle opcode"  # the pure-Python unpickler's dispatch
        elif isinstance(err, EOFError) and not str(err):
            why = "EOFError: the file ends early"
        else:
            why = _one_line(err)
        raise _corrupt(path, f"is not a CIFAR-10 python batch: it does not unpickle ({why})") from err
    if not isinstance(batch, dict) or b"data" not in batch or b"labels" not in batch:
        keys = sorted(map(repr, batch)) if isinstance(batch, dict) else None
        what = f"a dict with keys {', '.join(keys)}" if keys is not None else f"a {type(batch).__name__}"
        raise _corrupt(path, f"is not a CIFAR-10 python batch: it holds {what}, not a dict with b'data' and b'labels'")
    data, labels = batch[b"data"], batch[b"labels"]
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8:
        what = f"{data.dtype} array" if isinstance(data, np.ndarray) else type(data).__name__
        raise _corrupt(
            path,
            f"holds b'data' as a {what}, but CIFAR-10 pixels are a uint8 array (0..255); the loader does not cast them",
        )
    try:
        labels = np.asarray(labels)
    except Exception as err:
        raise _corrupt(path, f"holds b'labels' that are not a list of integers ({_one_line(err)})") from err
    if labels.ndim != 1 or not (labels.size == 0 or np.issubdtype(labels.dtype, np.integer)):
        raise _corrupt(
            path, f"holds b'labels' of shape {labels.shape} and type {labels.dtype}, not a list of integers"
        )
    if data.ndim != 2 or data.shape[1] != 3 * 32 * 32 or len(data) != len(labels):
        raise _corrupt(
            path, f"holds b'data' of shape {data.shape} and {len(labels)} labels; a CIFAR-10 batch has (n, 3072) and n"
        )
    labels = labels.astype(np.int64)
    _check_cifar_labels(path, labels)
    return data.reshape(-1, 3, 32, 32), labels


def _download_cifar(root: Path) -> None:
    """Fetch the binary archive and extract only the six batch files (no other paths)."""
    archive = root / "cifar-10-binary.tar.gz"
    _download(_CIFAR_URL, archive, _CIFAR_MD5)
    target = _cifar_folders(root, "bin")[0]
    target.mkdir(parents=True, exist_ok=True)
    wanted = {f"cifar-10-batches-bin/{n}" for n in _CIFAR_BIN[True] + _CIFAR_BIN[False]}
    with tarfile.open(archive, "r:gz") as tar:
        for member in tar:
            if member.isfile() and member.name in wanted:
                with tar.extractfile(member) as src, open(target / Path(member.name).name, "wb") as out:
                    shutil.copyfileobj(src, out)
    archive.unlink()


def cifar10(root: str | os.PathLike | None = None, train: bool = True, download: bool = False) -> Dataset:
    """CIFAR-10 (Krizhevsky 2009): images ``(N, 3, 32, 32)`` float32 in ``[0, 1]``
    (pixel / 255), ``K = 10``; 50000 training or 10000 test images.

    Reads the binary version (``cifar-10-batches-bin/data_batch_{1..5}.bin``,
    ``test_batch.bin``: records of one label byte and 3072 pixel bytes) when present,
    else the python version (``cifar-10-batches-py/data_batch_{1..5}``, ``test_batch``)
    through an unpickler that admits only builtin containers and numpy arrays. Both are
    looked for under ``root`` and ``root/cifar10``. ``download=True`` fetches
    https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz (MD5-checked, 162 MB).
    """
    base = data_root(root)
    _check_root(base)
    roots = search_roots(root)
    found = _find_cifar(roots, train)
    if found is None and download:
        _download_cifar(base)
        found = _find_cifar(roots, train)
    if found is None:
        names = ", ".join(_CIFAR_BIN[train])
        others = "".join(f", nor under {r}" for r in roots[1:])
        raise DataNotFoundError(
            f"CIFAR-10 {'training' if train else 'test'} files ({names}) not found in "
            f"{_cifar_folders(base, 'bin')[0]} (nor the python batches in {_cifar_folders(base, 'py')[0]}{others}); "
            f"pass download=True where the network allows, or copy the files there"
        )
    kind, files = found
    reader = _read_cifar_bin if kind == "bin" else _read_cifar_py
    parts = [reader(f) for f in files]
    images = np.concatenate([p[0] for p in parts])
    labels = np.concatenate([p[1] for p in parts])
    X = images.astype(np.float32)
    X /= np.float32(255.0)
    return Dataset(torch.from_numpy(X), torch.from_numpy(labels), 10, f"cifar10/{'train' if train else 'test'}")


# --------------------------------------------------------------------------------------
# Dispatch
# --------------------------------------------------------------------------------------


def standardize(train: Dataset, *others: Dataset) -> tuple[Dataset, ...]:
    """``(train, *others)`` flattened to ``(N, d)``, each pixel ``j`` mapped to
    ``(x_j - m_j) / s_j`` with ``m_j, s_j`` the mean and (population) standard deviation of
    pixel ``j`` over ``train``; pixels constant over ``train`` (``s_j = 0``) are only centred.
    Statistics in float64, results float32. Used for image data fed to an MLP (chapter 6): the
    test set is mapped with the *training* statistics, so no test statistic leaks."""
    flats = [ds.flat() for ds in (train, *others)]
    X = flats[0].X.double()
    mean, std = X.mean(0), X.std(0, unbiased=False)
    std = torch.where(std > 0, std, torch.ones_like(std))
    return tuple(Dataset(((f.X.double() - mean) / std).float(), f.y, f.K, f.name) for f in flats)


def _canonical_name(name: str) -> str:
    key = str(name).lower().replace("-", "_")
    if key not in NAMES:
        raise ValueError(f"unknown data set {name!r}; choose one of: {', '.join(NAMES)}")
    return key


def load(name: str, root: str | os.PathLike | None = None, **kw: Any) -> Dataset:
    """The data set ``name`` (one of :data:`NAMES`), with keyword arguments ``kw``
    passed on to its function (e.g. ``train=False``, or the mixture's ``K, d, ...``).
    ``root`` is used by the file-based sets and ignored by the others."""
    key = _canonical_name(name)
    if key == "gaussian_mixture":
        return gaussian_mixture(**kw)
    if key == "digits":
        return digits(**kw)
    loader = {"mnist": mnist, "fashion_mnist": fashion_mnist, "cifar10": cifar10}[key]
    return loader(root=root, **kw)


def available(name: str, root: str | os.PathLike | None = None) -> bool:
    """Whether the files of ``name`` (training and test) are on disk in one of the
    :func:`search_roots`; never downloads and does not read the files (a present but
    damaged file is found by the loader, with a :class:`DataCorruptError`). Always true
    for ``gaussian_mixture`` and ``digits``."""
    key = _canonical_name(name)
    if key not in ("mnist", "fashion_mnist", "cifar10"):
        return True
    roots = search_roots(root)
    try:
        _check_root(roots[0])
        if key == "cifar10":
            return all(_find_cifar(roots, train) is not None for train in (True, False))
        return all(_find_idx(key, roots, train) is not None for train in (True, False))
    except DataError:  # a data root that is a file or cannot be read: load() says which
        return False
