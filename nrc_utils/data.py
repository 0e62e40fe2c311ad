"""Data sets of the book: K-class Gaussian mixtures, scikit-learn digits, MNIST,
Fashion-MNIST and CIFAR-10, as :class:`Dataset` objects (inputs ``x_i``, labels
``y_i`` in ``0..K-1``, SPEC notation).

The Gaussian mixture is the data model of the paper's Section 4 (Zangrando et al.,
arXiv:2402.03991): ``x = m_c + s * xi`` with ``xi ~ N(0, I_d)``. Digits (1797 real 8x8
handwritten digits, shipped with scikit-learn) is always available offline. MNIST,
Fashion-MNIST and CIFAR-10 are read from their standard on-disk formats under a data
root, which is

- the environment variable ``NRC_DATA_ROOT`` when it is set, else
- ``<repo>/data`` (``Path(__file__).resolve().parents[1] / "data"``, git-ignored).

Files are looked for in these folders under the root (the first complete one wins):

- MNIST: ``MNIST/raw`` (torchvision's layout), ``mnist``, the root itself;
- Fashion-MNIST: ``FashionMNIST/raw`` (torchvision's layout), ``fashion_mnist``,
  ``fashion-mnist`` (not the root itself: its file names are MNIST's);
- CIFAR-10: ``cifar-10-batches-bin`` (binary version, preferred: no pickle),
  ``cifar-10-batches-py`` (python version), each also under ``cifar10/``.

``download=True`` fetches the canonical files (checked against their published MD5
sums) where the network allows; otherwise :class:`DataNotFoundError` says which files to
copy where. :func:`available` says whether a data set is present, without downloading.
"""

from __future__ import annotations

import gzip
import hashlib
import http.client
import logging
import os
import pickle
import shutil
import struct
import tarfile
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

__all__ = [
    "Dataset",
    "DataNotFoundError",
    "data_root",
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


class DataNotFoundError(FileNotFoundError):
    """A data set's files are not on disk (and could not be downloaded)."""


def data_root(root: str | os.PathLike | None = None) -> Path:
    """The data root: ``root`` if given, else ``$NRC_DATA_ROOT``, else ``<repo>/data``."""
    if root is not None:
        return Path(root).expanduser()
    env = os.environ.get("NRC_DATA_ROOT")
    if env:
        return Path(env).expanduser()
    return Path(__file__).resolve().parents[1] / "data"


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
        """One-hot targets ``(N, K)`` float32 (the square-loss targets ``y_i`` of the SPEC)."""
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
    the true means (SPEC result 6). Deterministic in ``seed`` (numpy ``default_rng``).
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
        if candidate.is_file():
            return candidate
    return None


def _find_idx(name: str, root: Path, train: bool) -> tuple[Path, Path] | None:
    for folder in _idx_folders(name, root):
        images, labels = (_idx_file(folder, stem) for stem in _IDX_STEMS[train])
        if images is not None and labels is not None:
            return images, labels
    return None


def _read_idx(path: Path) -> np.ndarray:
    """An IDX file (optionally gzipped) as a numpy array of its stored shape."""
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            data = f.read()
    except (OSError, EOFError) as err:
        raise ValueError(f"{path} cannot be read ({err}); delete it and download or copy it again") from err
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] not in _IDX_DTYPES:
        raise ValueError(f"{path} is not an IDX file (bad magic number); delete it and download or copy it again")
    ndim = data[3]
    header = 4 + 4 * ndim
    dims = struct.unpack(f">{ndim}I", data[4:header])
    dtype = np.dtype(_IDX_DTYPES[data[2]])
    expected = int(np.prod(dims)) * dtype.itemsize
    if len(data) - header != expected:
        raise ValueError(
            f"{path} holds {len(data) - header} data bytes but its header promises {expected}: "
            "the file is truncated or corrupt; delete it and download or copy it again"
        )
    return np.frombuffer(data, dtype=dtype, offset=header).reshape(dims)


def _download(url: str, dest: Path, md5: str) -> None:
    """Fetch ``url`` to ``dest`` (via a ``.part`` file), checking its MD5 sum."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    log.info("downloading %s to %s", url, dest)
    try:
        with urllib.request.urlopen(url, timeout=60) as response, open(part, "wb") as out:
            shutil.copyfileobj(response, out)
    except (OSError, http.client.HTTPException) as err:
        part.unlink(missing_ok=True)
        raise DataNotFoundError(
            f"download of {url} failed ({err}); copy the file to {dest.parent} instead"
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
    found = _find_idx(name, base, train)
    if found is None and download:
        url, md5s = _IDX_SOURCES[name]
        target = _idx_folders(name, base)[0]
        for filename, md5 in md5s.items():
            if _idx_file(target, filename[: -len(".gz")]) is None:
                _download(url + filename, target / filename, md5)
        found = _find_idx(name, base, train)
    if found is None:
        split = "training" if train else "test"
        images, labels = _IDX_STEMS[train]
        folders = ", ".join(str(f) for f in _idx_folders(name, base))
        raise DataNotFoundError(
            f"{title} {split} files {images}[.gz] and {labels}[.gz] not found in any of {folders}; "
            f"pass download=True where the network allows, or copy the files to {_idx_folders(name, base)[0]}"
        )
    images, labels = (_read_idx(p) for p in found)
    if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
        raise ValueError(
            f"{found[0]} and {found[1]} do not match (image shape {images.shape}, label shape {labels.shape}); "
            "replace them with a matching pair"
        )
    X = images.astype(np.float32)[:, None, :, :] / np.float32(255.0)
    y = labels.astype(np.int64)
    return Dataset(torch.from_numpy(X), torch.from_numpy(y), 10, f"{name}/{'train' if train else 'test'}")


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


def _find_cifar(root: Path, train: bool) -> tuple[str, list[Path]] | None:
    """``("bin", files)`` or ``("py", files)``, the binary version first."""
    for kind, names in (("bin", _CIFAR_BIN[train]), ("py", _CIFAR_PY[train])):
        for folder in _cifar_folders(root, kind):
            files = [folder / n for n in names]
            if all(f.is_file() for f in files):
                return kind, files
    return None


def _read_cifar_bin(path: Path) -> tuple[np.ndarray, np.ndarray]:
    raw = np.fromfile(path, dtype=np.uint8)
    if raw.size == 0 or raw.size % _CIFAR_RECORD:
        raise ValueError(
            f"{path} holds {raw.size} bytes, not a whole number of {_CIFAR_RECORD}-byte CIFAR-10 records; "
            "delete it and download or copy it again"
        )
    records = raw.reshape(-1, _CIFAR_RECORD)
    return records[:, 1:].reshape(-1, 3, 32, 32), records[:, 0].astype(np.int64)


class _BatchUnpickler(pickle.Unpickler):
    """Unpickles only builtin containers and numpy arrays: a CIFAR-10 python batch
    (a dict with ``b"data"``, a uint8 array, and ``b"labels"``, a list) needs nothing
    else, and refusing every other global means a tampered file cannot run code."""

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


def _read_cifar_py(path: Path) -> tuple[np.ndarray, np.ndarray]:
    try:
        with open(path, "rb") as f:
            batch = _BatchUnpickler(f, encoding="bytes").load()
        data = np.asarray(batch[b"data"], dtype=np.uint8)
        labels = np.asarray(batch[b"labels"], dtype=np.int64)
    except (pickle.UnpicklingError, EOFError, KeyError, TypeError, ValueError) as err:
        raise ValueError(f"{path} is not a CIFAR-10 python batch ({err}); delete it and download or copy it again") from err
    if data.ndim != 2 or data.shape[1] != 3 * 32 * 32 or len(data) != len(labels):
        raise ValueError(f"{path} has data of shape {data.shape} and {len(labels)} labels; expected (n, 3072) and n")
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
    found = _find_cifar(base, train)
    if found is None and download:
        _download_cifar(base)
        found = _find_cifar(base, train)
    if found is None:
        names = ", ".join(_CIFAR_BIN[train])
        raise DataNotFoundError(
            f"CIFAR-10 {'training' if train else 'test'} files ({names}) not found in "
            f"{_cifar_folders(base, 'bin')[0]} (nor the python batches in {_cifar_folders(base, 'py')[0]}); "
            f"pass download=True where the network allows, or copy the files there"
        )
    kind, files = found
    reader = _read_cifar_bin if kind == "bin" else _read_cifar_py
    parts = [reader(f) for f in files]
    images = np.concatenate([p[0] for p in parts])
    labels = np.concatenate([p[1] for p in parts])
    if labels.size and (labels.min() < 0 or labels.max() > 9):
        raise ValueError(f"CIFAR-10 labels must lie in 0..9, found {labels.min()}..{labels.max()} in {files[0].parent}")
    X = images.astype(np.float32) / np.float32(255.0)
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
    """Whether the files of ``name`` (training and test) are on disk; never downloads.
    Always true for ``gaussian_mixture`` and ``digits``."""
    key = _canonical_name(name)
    base = data_root(root)
    if key in ("mnist", "fashion_mnist"):
        return all(_find_idx(key, base, train) is not None for train in (True, False))
    if key == "cifar10":
        return all(_find_cifar(base, train) is not None for train in (True, False))
    return True
