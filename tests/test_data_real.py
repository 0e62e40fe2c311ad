"""Where data is looked for (the user's data root, then the system folders) and the real
Fashion-MNIST of Debian's package ``dataset-fashion-mnist`` (skipped where it is absent).

Debian recompresses the four ``.gz`` files (their checksums differ from upstream's), so the
real-data test checks what they decode to: the IDX headers, counts, shapes, label range,
per-class counts and two well-known fingerprints of the upstream content (the first
labels of each split and the pixel mean and standard deviation of the training set).
"""

import gzip
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import torch

from nrc_utils import data
from test_data import make_idx_set

DEBIAN = Path("/usr/share/datasets")
DEBIAN_FILES = [DEBIAN / "fashion-mnist" / f"{stem}.gz" for pair in data._IDX_STEMS.values() for stem in pair]


@pytest.fixture
def system(tmp_path, monkeypatch):
    """A stand-in for /usr/share/datasets, searched after the user's data root."""
    folder = tmp_path / "system"
    folder.mkdir()
    monkeypatch.setattr(data, "SYSTEM_DATA_DIRS", (folder,))
    monkeypatch.delenv("NRC_DATA_ROOT", raising=False)
    return folder


# ---- the search order --------------------------------------------------------------------


def test_default_search_path_is_the_data_root_then_debian(monkeypatch, tmp_path):
    monkeypatch.delenv("NRC_DATA_ROOT", raising=False)
    repo_data = Path(data.__file__).resolve().parents[1] / "data"
    assert data.SYSTEM_DATA_DIRS == (DEBIAN,)
    assert data.search_roots() == [repo_data, DEBIAN]
    monkeypatch.setenv("NRC_DATA_ROOT", str(tmp_path))
    assert data.search_roots() == [tmp_path, DEBIAN]
    assert data.search_roots(tmp_path / "arg") == [tmp_path / "arg", DEBIAN]
    assert data.search_roots(DEBIAN) == [DEBIAN]  # not twice


def test_the_users_copy_wins_over_the_system_copy(tmp_path, system, monkeypatch):
    debian = make_idx_set(system / "fashion-mnist", seed=1)
    user = tmp_path / "user"
    # nothing in the user's root: the system copy is used, for load() and available()
    assert data.available("fashion_mnist", root=user)
    np.testing.assert_array_equal(data.fashion_mnist(root=user).y.numpy(), debian["train"][1])
    # a copy in the user's root (the root argument, or NRC_DATA_ROOT) comes first
    mine = make_idx_set(user / "FashionMNIST" / "raw", n_train=7, seed=2)
    np.testing.assert_array_equal(data.fashion_mnist(root=user).y.numpy(), mine["train"][1])
    monkeypatch.setenv("NRC_DATA_ROOT", str(user))
    np.testing.assert_array_equal(data.load("fashion-mnist", train=False).y.numpy(), mine["t10k"][1])
    # an incomplete user copy (labels missing) does not hide the system one
    (user / "FashionMNIST" / "raw" / "train-labels-idx1-ubyte.gz").unlink()
    assert len(data.fashion_mnist()) == len(debian["train"][1])


def test_download_is_not_attempted_when_the_system_copy_is_there(tmp_path, system, monkeypatch):
    make_idx_set(system / "fashion-mnist")
    monkeypatch.setattr(urllib.request, "urlopen", lambda *a, **k: pytest.fail("downloaded"))
    assert len(data.fashion_mnist(root=tmp_path / "user", download=True, train=False)) == 3
    assert not (tmp_path / "user").exists()


def test_missing_everywhere_names_every_folder_and_downloads_into_the_users_root(tmp_path, system):
    user = tmp_path / "user"
    with pytest.raises(data.DataNotFoundError) as err:
        data.fashion_mnist(root=user)
    message = str(err.value)
    assert "\n" not in message
    assert str(user / "FashionMNIST" / "raw") in message and str(system / "fashion-mnist") in message
    assert message.endswith(f"or copy the files to {user / 'FashionMNIST' / 'raw'}")
    with pytest.raises(data.DataNotFoundError) as err:
        data.cifar10(root=user)
    assert f"nor under {system}" in str(err.value)


def test_a_damaged_system_copy_says_to_reinstall_the_package(tmp_path, system):
    make_idx_set(system / "fashion-mnist")
    path = system / "fashion-mnist" / "train-labels-idx1-ubyte.gz"
    path.write_bytes(path.read_bytes()[:-6])
    with pytest.raises(data.DataCorruptError) as err:
        data.fashion_mnist(root=tmp_path / "user")
    message = str(err.value)
    assert message.startswith(str(path)) and "\n" not in message
    assert message.endswith("; reinstall it: apt-get install --reinstall dataset-fashion-mnist")


# ---- the real Fashion-MNIST, from Debian's dataset-fashion-mnist ----------------------------

debian_only = pytest.mark.skipif(
    not all(p.is_file() for p in DEBIAN_FILES),
    reason="Debian's dataset-fashion-mnist is not installed (apt-get install dataset-fashion-mnist, "
    "which `make` does where apt-get can be used as root)",
)


@debian_only
def test_debian_files_decode_to_the_standard_idx_headers():
    expected = {"train-images": (3, 60000), "train-labels": (1, 60000), "t10k-images": (3, 10000), "t10k-labels": (1, 10000)}
    for path in DEBIAN_FILES:
        with gzip.open(path, "rb") as f:
            head = f.read(16)
        ndim, n = expected[path.name[: path.name.index("-idx")]]
        assert head[:4] == bytes([0, 0, 0x08, ndim]), path
        dims = [int.from_bytes(head[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)]
        assert dims == ([n, 28, 28] if ndim == 3 else [n]), path


@debian_only
@pytest.mark.parametrize("train,n,first", [(True, 60000, [9, 0, 0, 3, 0, 2, 7, 2, 5, 5]), (False, 10000, [9, 2, 1, 1, 6, 1, 4, 6, 5, 7])])
def test_real_fashion_mnist_from_debian(monkeypatch, tmp_path, train, n, first):
    monkeypatch.setattr(data, "SYSTEM_DATA_DIRS", (DEBIAN,))
    monkeypatch.setenv("NRC_DATA_ROOT", str(tmp_path))  # an empty user root: the Debian copy is used
    assert data.available("fashion_mnist")
    start = time.perf_counter()
    ds = data.load("fashion_mnist", train=train)
    seconds = time.perf_counter() - start
    assert ds.name == f"fashion_mnist/{'train' if train else 'test'}" and ds.K == 10
    assert ds.X.shape == (n, 1, 28, 28) and ds.X.dtype == torch.float32 and ds.d == 784
    assert ds.y.shape == (n,) and ds.y.dtype == torch.int64
    assert int(ds.y.min()) == 0 and int(ds.y.max()) == 9
    assert torch.bincount(ds.y, minlength=10).tolist() == [n // 10] * 10  # 6000 (1000) per class
    assert float(ds.X.min()) == 0.0 and float(ds.X.max()) == 1.0
    assert ds.y[:10].tolist() == first  # upstream's first labels (ankle boot, T-shirt, ...)
    if train:  # the well-known normalisation constants of Fashion-MNIST's training set
        std, mean = torch.std_mean(ds.X)
        assert float(mean) == pytest.approx(0.2860, abs=5e-5) and float(std) == pytest.approx(0.3530, abs=5e-5)
    assert seconds < 30, seconds
    print(f"Fashion-MNIST {'train' if train else 'test'} from {DEBIAN}: {seconds:.2f} s")


@debian_only
def test_real_fashion_mnist_is_found_without_any_configuration(monkeypatch):
    """With the real defaults (no NRC_DATA_ROOT, the repo's data folder, then Debian)."""
    monkeypatch.setattr(data, "SYSTEM_DATA_DIRS", (DEBIAN,))
    monkeypatch.delenv("NRC_DATA_ROOT", raising=False)
    repo_copy = data._find_idx("fashion_mnist", [data.data_root()], False)
    found = data._find_idx("fashion_mnist", data.search_roots(), False)
    assert found == (repo_copy or (DEBIAN_FILES[2], DEBIAN_FILES[3]))
    if repo_copy is None:
        assert data.available("fashion_mnist") and len(data.fashion_mnist(train=False)) == 10000
