"""Tests for nrc_utils.data: tiny files in the real on-disk formats, loaded back exactly.

No test touches the network: downloads are exercised with a stubbed ``urlopen``.
"""

import gzip
import hashlib
import io
import pickle
import pickletools
import struct
import tarfile
import urllib.error

import numpy as np
import pytest
import torch

from nrc_utils import data


@pytest.fixture(autouse=True)
def only_the_test_files(monkeypatch):
    """Each test sees only the files it writes: the system-wide folders (Debian's
    Fashion-MNIST in /usr/share/datasets) are searched only where a test puts them back."""
    monkeypatch.setattr(data, "SYSTEM_DATA_DIRS", ())


# ---- writers for the real formats ----------------------------------------------------


def write_idx(path, array: np.ndarray, compress: bool) -> None:
    """IDX: two zero bytes, type code 0x08 (ubyte), ndim, big-endian uint32 dims, data."""
    array = np.asarray(array, dtype=np.uint8)
    header = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    payload = header + array.tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    if compress:
        with gzip.open(str(path) + ".gz", "wb") as f:
            f.write(payload)
    else:
        path.write_bytes(payload)


def make_idx_set(folder, n_train=5, n_test=3, compress=True, seed=0):
    rng = np.random.default_rng(seed)
    out = {}
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        images = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        labels = rng.integers(0, 10, n, dtype=np.uint8)
        write_idx(folder / f"{prefix}-images-idx3-ubyte", images, compress)
        write_idx(folder / f"{prefix}-labels-idx1-ubyte", labels, compress)
        out[prefix] = (images, labels)
    return out


def cifar_batches(seed=0, n=3):
    """Six tiny batches (5 train, 1 test) of uint8 images (n, 3072) and labels."""
    rng = np.random.default_rng(seed)
    return [(rng.integers(0, 256, (n, 3072), dtype=np.uint8), rng.integers(0, 10, n)) for _ in range(6)]


def write_cifar_bin(folder, batches):
    folder.mkdir(parents=True, exist_ok=True)
    names = [f"data_batch_{i}.bin" for i in range(1, 6)] + ["test_batch.bin"]
    for name, (images, labels) in zip(names, batches):
        records = np.concatenate([labels.astype(np.uint8)[:, None], images], axis=1)
        (folder / name).write_bytes(records.tobytes())


def as_python2_pickle(blob):
    """A protocol-3 pickle rewritten as Python 2's cPickle (protocol 2) writes it, as in
    the original CIFAR-10 python batches: strings and bytes are BINSTRING/SHORT_BINSTRING
    (same layout as BINUNICODE/BINBYTES/SHORT_BINBYTES), read back as bytes with
    encoding="bytes" (so the dtype's byte order is b"|")."""
    swap = {b"X": b"T", b"B": b"T", b"C": b"U"}
    ops = list(pickletools.genops(blob))
    out = bytearray(b"\x80\x02")
    for (op, _, pos), nxt in zip(ops[1:], [o[2] for o in ops[2:]] + [len(blob)]):
        segment = blob[pos:nxt]
        out += swap.get(segment[:1], segment[:1]) + segment[1:]
    return bytes(out)


def write_cifar_py(folder, batches, numpy1_names=False, python2=False):
    """Python batches: pickled dicts with b"data" (uint8 array) and b"labels" (list).

    With ``numpy1_names`` the pickle refers to ``numpy.core.multiarray`` as the original
    files (written with numpy 1.x) do; ``python2`` also writes Python 2's string opcodes."""
    folder.mkdir(parents=True, exist_ok=True)
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    for name, (images, labels) in zip(names, batches):
        batch = {b"batch_label": b"tiny", b"labels": [int(v) for v in labels], b"data": images, b"filenames": []}
        if numpy1_names or python2:
            blob = pickle.dumps(batch, protocol=3)  # GLOBAL opcodes are plain text here
            blob = blob.replace(b"numpy._core.multiarray\n", b"numpy.core.multiarray\n")
            assert b"numpy.core.multiarray" in blob
            if python2:
                blob = as_python2_pickle(blob)
                assert b"T\x01\x00\x00\x00|" in blob  # the dtype byte order, a Python 2 str
        else:
            blob = pickle.dumps(batch, protocol=5)
        (folder / name).write_bytes(blob)


def expected_cifar(batches, train):
    chosen = batches[:5] if train else batches[5:]
    images = np.concatenate([b[0] for b in chosen]).reshape(-1, 3, 32, 32)
    labels = np.concatenate([b[1] for b in chosen])
    return images.astype(np.float32) / np.float32(255), labels


# ---- IDX ------------------------------------------------------------------------------


@pytest.mark.parametrize("layout", ["MNIST/raw", "mnist", "."])
@pytest.mark.parametrize("compress", [True, False])
def test_mnist_idx_round_trip(tmp_path, layout, compress):
    sets = make_idx_set(tmp_path / layout, compress=compress)
    assert data.available("mnist", root=tmp_path)
    for train, prefix in ((True, "train"), (False, "t10k")):
        ds = data.mnist(root=tmp_path, train=train)
        images, labels = sets[prefix]
        assert ds.X.shape == (len(labels), 1, 28, 28) and ds.X.dtype == torch.float32
        np.testing.assert_array_equal(ds.X.numpy(), images[:, None].astype(np.float32) / np.float32(255))
        assert torch.equal(ds.y, torch.from_numpy(labels.astype(np.int64)))
        assert ds.K == 10 and 0.0 <= ds.X.min() and ds.X.max() <= 1.0
        assert round(float(ds.X.max()) * 255) == images.max()


def test_fashion_mnist_torchvision_layout_and_not_the_bare_root(tmp_path):
    make_idx_set(tmp_path, seed=1)  # MNIST-named files in the bare root are not Fashion-MNIST
    assert not data.available("fashion_mnist", root=tmp_path)
    with pytest.raises(data.DataNotFoundError):
        data.fashion_mnist(root=tmp_path)
    sets = make_idx_set(tmp_path / "FashionMNIST" / "raw", seed=2)
    ds = data.load("fashion_mnist", root=tmp_path, train=False)
    np.testing.assert_array_equal(ds.y.numpy(), sets["t10k"][1])
    np.testing.assert_array_equal((ds.X.numpy()[:, 0] * 255).round().astype(np.uint8), sets["t10k"][0])


def test_idx_truncated_file_is_reported(tmp_path):
    make_idx_set(tmp_path / "mnist", compress=False)
    path = tmp_path / "mnist" / "train-images-idx3-ubyte"
    path.write_bytes(path.read_bytes()[:-10])
    with pytest.raises(ValueError, match="truncated or corrupt"):
        data.mnist(root=tmp_path)


# ---- CIFAR-10 -------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["bin", "py", "py-numpy1", "py-python2"])
def test_cifar10_round_trip(tmp_path, fmt):
    batches = cifar_batches()
    if fmt == "bin":
        write_cifar_bin(tmp_path / "cifar-10-batches-bin", batches)
    else:
        write_cifar_py(tmp_path / "cifar-10-batches-py", batches, numpy1_names=fmt == "py-numpy1",
                       python2=fmt == "py-python2")
    assert data.available("cifar10", root=tmp_path)
    for train in (True, False):
        ds = data.cifar10(root=tmp_path, train=train)
        X, y = expected_cifar(batches, train)
        assert ds.X.shape == X.shape == ((15 if train else 3), 3, 32, 32)
        np.testing.assert_array_equal(ds.X.numpy(), X)
        np.testing.assert_array_equal(ds.y.numpy(), y)


def test_cifar10_binary_record_layout(tmp_path):
    # label byte first, then the red, green and blue 32x32 planes, row-major
    batches = [(np.zeros((1, 3072), dtype=np.uint8), np.array([7])) for _ in range(6)]
    batches[5][0][0, 1024 + 32 * 2 + 5] = 200  # green channel, row 2, column 5
    write_cifar_bin(tmp_path / "cifar10" / "cifar-10-batches-bin", batches)
    ds = data.cifar10(root=tmp_path, train=False)
    assert ds.y.tolist() == [7]
    assert ds.X[0, 1, 2, 5] == pytest.approx(200 / 255) and ds.X.sum() == pytest.approx(200 / 255)


def test_cifar10_prefers_binary(tmp_path):
    write_cifar_bin(tmp_path / "cifar-10-batches-bin", cifar_batches(seed=1))
    write_cifar_py(tmp_path / "cifar-10-batches-py", cifar_batches(seed=2))
    ds = data.cifar10(root=tmp_path, train=False)
    np.testing.assert_array_equal(ds.y.numpy(), expected_cifar(cifar_batches(seed=1), False)[1])


def test_cifar10_pickle_cannot_run_code(tmp_path):
    write_cifar_py(tmp_path / "cifar-10-batches-py", cifar_batches())

    class Evil:
        def __reduce__(self):
            return (print, ("this must never run",))

    (tmp_path / "cifar-10-batches-py" / "test_batch").write_bytes(pickle.dumps({b"data": Evil(), b"labels": []}))
    with pytest.raises(ValueError, match="refusing to load builtins.print"):
        data.cifar10(root=tmp_path, train=False)


def test_cifar10_corrupt_binary_is_reported(tmp_path):
    write_cifar_bin(tmp_path / "cifar-10-batches-bin", cifar_batches())
    path = tmp_path / "cifar-10-batches-bin" / "test_batch.bin"
    path.write_bytes(path.read_bytes()[:-1])
    with pytest.raises(ValueError, match="whole number"):
        data.cifar10(root=tmp_path, train=False)


# ---- missing data, dispatch, downloads ---------------------------------------------------


@pytest.mark.parametrize("name", ["mnist", "fashion_mnist", "cifar10"])
def test_missing_files_raise_data_not_found_naming_the_folder(tmp_path, name):
    assert not data.available(name, root=tmp_path)
    with pytest.raises(data.DataNotFoundError) as info:
        data.load(name, root=tmp_path)
    message = str(info.value)
    assert str(tmp_path) in message and "download=True" in message and "\n" not in message
    assert isinstance(info.value, FileNotFoundError)


def test_default_root_from_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("NRC_DATA_ROOT", str(tmp_path))
    assert data.data_root() == tmp_path
    make_idx_set(tmp_path / "MNIST" / "raw")
    assert data.available("mnist") and len(data.mnist()) == 5
    monkeypatch.delenv("NRC_DATA_ROOT")
    assert data.data_root().name == "data" and (data.data_root().parent / "nrc_utils").is_dir()


def test_unknown_name_is_a_value_error_listing_the_choices():
    with pytest.raises(ValueError, match="gaussian_mixture, digits, mnist, fashion_mnist, cifar10"):
        data.load("imagenet")
    with pytest.raises(ValueError, match="unknown data set"):
        data.available("svhn")
    assert data.available("digits") and data.available("gaussian_mixture")


def test_download_failure_is_data_not_found(tmp_path, monkeypatch):
    def offline(url, timeout=None):
        raise urllib.error.URLError("network is unreachable")

    monkeypatch.setattr(data.urllib.request, "urlopen", offline)
    with pytest.raises(data.DataNotFoundError, match="download of .* failed .* copy the file to"):
        data.mnist(root=tmp_path, download=True)
    with pytest.raises(data.DataNotFoundError, match="failed"):
        data.cifar10(root=tmp_path, download=True)
    assert not list(tmp_path.rglob("*.part"))


def test_download_fetches_checks_and_loads(tmp_path, monkeypatch):
    source = tmp_path / "server"
    sets = make_idx_set(source, compress=True, seed=3)
    files = {p.name: p.read_bytes() for p in source.iterdir()}
    base, _ = data._IDX_SOURCES["mnist"]
    monkeypatch.setitem(
        data._IDX_SOURCES, "mnist", (base, {n: hashlib.md5(b).hexdigest() for n, b in files.items()})
    )
    requested = []

    def fake_urlopen(url, timeout=None):
        requested.append(url)
        return io.BytesIO(files[url.rsplit("/", 1)[1]])

    monkeypatch.setattr(data.urllib.request, "urlopen", fake_urlopen)
    root = tmp_path / "root"
    ds = data.mnist(root=root, download=True)
    assert len(requested) == 4 and all(u.startswith(base) for u in requested)
    assert (root / "MNIST" / "raw" / "train-images-idx3-ubyte.gz").is_file()
    np.testing.assert_array_equal(ds.y.numpy(), sets["train"][1])
    # a second call finds the files and downloads nothing
    data.mnist(root=root, train=False, download=True)
    assert len(requested) == 4
    # a corrupted download is refused
    monkeypatch.setitem(data._IDX_SOURCES, "mnist", (base, {n: "0" * 32 for n in files}))
    with pytest.raises(data.DataNotFoundError, match="MD5"):
        data.mnist(root=tmp_path / "other", download=True)


def test_cifar_download_extracts_only_the_batches(tmp_path, monkeypatch):
    batches = cifar_batches(seed=4)
    staging = tmp_path / "staging" / "cifar-10-batches-bin"
    write_cifar_bin(staging, batches)
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for path in sorted(staging.iterdir()):
            tar.add(path, arcname=f"cifar-10-batches-bin/{path.name}")
        evil = tarfile.TarInfo("../escaped.txt")
        evil.size = 3
        tar.addfile(evil, io.BytesIO(b"bad"))
    blob = buffer.getvalue()
    monkeypatch.setattr(data, "_CIFAR_MD5", hashlib.md5(blob).hexdigest())
    monkeypatch.setattr(data.urllib.request, "urlopen", lambda url, timeout=None: io.BytesIO(blob))
    root = tmp_path / "root"
    ds = data.cifar10(root=root, train=False, download=True)
    np.testing.assert_array_equal(ds.y.numpy(), expected_cifar(batches, False)[1])
    assert not (tmp_path / "escaped.txt").exists() and not (root / "cifar-10-binary.tar.gz").exists()


# ---- synthetic and digits ---------------------------------------------------------------


def test_gaussian_mixture_shapes_balance_and_determinism():
    ds = data.gaussian_mixture(K=4, d=30, n_per_class=25, s=0.1, seed=3)
    assert ds.X.shape == (100, 30) and ds.X.dtype == torch.float32 and ds.K == 4
    assert ds.y.tolist() == sorted(ds.y.tolist())
    assert torch.bincount(ds.y).tolist() == [25] * 4
    again = data.gaussian_mixture(K=4, d=30, n_per_class=25, s=0.1, seed=3)
    assert torch.equal(ds.X, again.X) and torch.equal(ds.y, again.y)
    other = data.gaussian_mixture(K=4, d=30, n_per_class=25, s=0.1, seed=4)
    assert not torch.equal(ds.X, other.X)


@pytest.mark.parametrize("s", [0.05, 0.5, 2.0])
def test_gaussian_mixture_within_class_spread_matches_s(s):
    d, n, K = 40, 500, 3
    ds = data.gaussian_mixture(K=K, d=d, n_per_class=n, s=s, seed=1)
    X = ds.X.double().numpy()
    y = ds.y.numpy()
    residual = np.concatenate([X[y == c] - X[y == c].mean(0) for c in range(K)])
    msr = np.mean(np.sum(residual**2, axis=1))  # E = s^2 d (1 - 1/n)
    assert msr == pytest.approx(s**2 * d * (1 - 1 / n), rel=0.03)


def test_gaussian_mixture_means_norm_and_subspace():
    ds = data.gaussian_mixture(K=5, d=20, n_per_class=1, s=0.0, mean_scale=3.0, subspace_dim=2, seed=0)
    means = ds.X.double().numpy()  # s = 0: every sample is its class mean
    np.testing.assert_allclose(np.linalg.norm(means, axis=1), 3.0, rtol=1e-6)
    assert np.linalg.matrix_rank(means, tol=1e-5) == 2
    with pytest.raises(ValueError, match="subspace_dim"):
        data.gaussian_mixture(K=2, d=3, n_per_class=2, s=1.0, subspace_dim=4)
    with pytest.raises(ValueError, match="n_per_class"):
        data.gaussian_mixture(K=2, d=3, n_per_class=0, s=1.0)


def test_digits():
    ds = data.digits()
    assert len(ds) == 1797 and ds.K == 10 and ds.X.shape == (1797, 64) and ds.d == 64
    X = ds.X.double().numpy()
    varying = X.std(0) > 0
    np.testing.assert_allclose(X.mean(0), 0.0, atol=1e-5)
    np.testing.assert_allclose(X.std(0)[varying], 1.0, rtol=1e-4)
    assert np.all(X[:, ~varying] == 0)
    raw = data.load("digits", standardize=False)
    assert float(raw.X.min()) == 0.0 and float(raw.X.max()) == 1.0
    assert torch.equal(raw.y, ds.y)


# ---- the Dataset container ---------------------------------------------------------------


def test_split_is_stratified_disjoint_and_deterministic():
    ds = data.digits(standardize=False)
    train, test = ds.split(0.2, seed=5)
    assert len(train) + len(test) == len(ds)
    counts = torch.bincount(ds.y, minlength=10)
    test_counts = torch.bincount(test.y, minlength=10)
    assert torch.equal(test_counts, torch.round(0.2 * counts.double()).long())
    # disjoint and complete: match rows back to the original data
    keys = {tuple(r) for r in ds.X.numpy().round(6).tolist()}
    assert len(keys) == len(ds)  # digits has no duplicate images
    train_keys = {tuple(r) for r in train.X.numpy().round(6).tolist()}
    test_keys = {tuple(r) for r in test.X.numpy().round(6).tolist()}
    assert not train_keys & test_keys and train_keys | test_keys == keys
    again_train, again_test = ds.split(0.2, seed=5)
    assert torch.equal(again_test.X, test.X) and torch.equal(again_train.y, train.y)
    assert not torch.equal(ds.split(0.2, seed=6)[1].X, test.X)
    with pytest.raises(ValueError, match="test_fraction"):
        ds.split(1.0)


def test_dataset_helpers():
    X = torch.arange(24, dtype=torch.float32).reshape(6, 1, 2, 2)
    ds = data.Dataset(X, torch.tensor([0, 1, 2, 0, 1, 2]), 3, "toy")
    assert len(ds) == 6 and ds.d == 4
    assert ds.flat().X.shape == (6, 4) and torch.equal(ds.flat().X[1], X[1].flatten())
    sub = ds.subset(np.array([4, 1]))
    assert sub.y.tolist() == [1, 1] and torch.equal(sub.X[0], X[4])
    assert ds.subset([True, False] * 3).y.tolist() == [0, 2, 1]
    assert ds.subset(slice(0, 2)).y.tolist() == [0, 1]
    oh = ds.one_hot()
    assert oh.dtype == torch.float32 and oh.shape == (6, 3) and torch.equal(oh.argmax(1), ds.y)
    dbl = ds.to(dtype=torch.float64)
    assert dbl.X.dtype == torch.float64 and dbl.y.dtype == torch.int64
    assert "toy" in repr(ds) and "N=6" in repr(ds)
    with pytest.raises(ValueError, match="0..2"):
        data.Dataset(X, torch.tensor([0, 1, 2, 3, 0, 0]), 3, "bad")
    with pytest.raises(ValueError, match="int64"):
        data.Dataset(X, torch.tensor([0, 1, 2, 0, 1, 2], dtype=torch.int32), 3, "bad")
