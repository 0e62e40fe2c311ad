"""Bad data files give the loader's one-line message, never a bare struct.error, MemoryError,
OverflowError, AttributeError, EOFError, zlib.error or gzip.BadGzipFile.

Every case writes a good tiny set in the real on-disk format (the writers of test_data.py),
damages one file the way disks, downloads and copies damage them, and checks the error
class, that the message is one line naming the file, what is wrong and what to do.
"""

import builtins
import gzip
import os
import pathlib
import pickle
import struct
import tracemalloc
import urllib.request

import numpy as np
import pytest

from nrc_utils import data
from test_data import cifar_batches, make_idx_set, write_cifar_bin, write_cifar_py, write_idx

REDO = "delete it and download it again (download=True) or copy a good copy there"


@pytest.fixture(autouse=True)
def only_the_test_files(monkeypatch):
    """Each test sees only its own files (not Debian's Fashion-MNIST in /usr/share/datasets)."""
    monkeypatch.setattr(data, "SYSTEM_DATA_DIRS", ())


def one_line(err, path, *parts):
    """The message of ``err``: one line, naming ``path``, containing every one of ``parts``."""
    message = str(err.value if hasattr(err, "value") else err)
    assert "\n" not in message, message
    assert str(path) in message, message
    for part in parts:
        assert part in message, message
    return message


def idx_bytes(array, code=0x08, dims=None):
    """An IDX file: zeros, type code, ndim, big-endian uint32 dims, then ``array``'s bytes."""
    array = np.asarray(array)
    dims = array.shape if dims is None else dims
    return bytes([0, 0, code, len(dims)]) + struct.pack(f">{len(dims)}I", *dims) + array.tobytes()


@pytest.fixture
def mnist_dir(tmp_path):
    """A good tiny MNIST set (5 training, 3 test images) in tmp_path/mnist, uncompressed."""
    make_idx_set(tmp_path / "mnist", compress=False)
    return tmp_path / "mnist"


# ---- IDX: headers ---------------------------------------------------------------------


@pytest.mark.parametrize("compress", [False, True])
@pytest.mark.parametrize("stem", ["train-images-idx3-ubyte", "train-labels-idx1-ubyte"])
def test_idx_cut_inside_its_header(tmp_path, stem, compress):
    make_idx_set(tmp_path / "mnist", compress=compress)
    path = tmp_path / "mnist" / (stem + (".gz" if compress else ""))
    payload = gzip.decompress(path.read_bytes()) if compress else path.read_bytes()
    header = 16 if "images" in stem else 8
    for cut in range(header):
        blob = gzip.compress(payload[:cut]) if compress else payload[:cut]
        path.write_bytes(blob)
        with pytest.raises(data.DataCorruptError) as err:
            data.mnist(root=tmp_path)
        one_line(err, path, "is cut inside its IDX header", REDO)


def test_idx_header_promising_a_trillion_items_allocates_nothing_of_that_size(tmp_path, mnist_dir):
    path = mnist_dir / "train-images-idx3-ubyte"
    images = np.zeros((5, 28, 28), np.uint8)
    for compress in (False, True):
        blob = idx_bytes(images, dims=(0xFFFFFFFF, 28, 28))  # 3.4e12 bytes promised, 3920 present
        target = path.with_name(path.name + ".gz") if compress else path
        path.unlink(missing_ok=True)
        target.write_bytes(gzip.compress(blob) if compress else blob)
        tracemalloc.start()
        try:
            with pytest.raises(data.DataCorruptError) as err:
                data.mnist(root=mnist_dir.parent)
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        one_line(err, target, "holds 3920 data bytes but its header promises 3367254359280 (4294967295 x 28 x 28)", "truncated", REDO)
        assert peak < 50 * 2**20, peak  # a few MiB of chunks, not the promised terabytes
        target.unlink()


def test_idx_size_of_a_plain_file_is_checked_before_reading_its_data(mnist_dir):
    """A 256 MiB (sparse) file whose header promises 3.4e12 bytes: refused from its size
    on disk, without reading the 256 MiB."""
    path = mnist_dir / "train-images-idx3-ubyte"
    path.write_bytes(idx_bytes(np.zeros((0, 28, 28), np.uint8), dims=(0xFFFFFFFF, 28, 28)))
    with open(path, "r+b") as f:
        f.truncate(16 + 2**28)
    tracemalloc.start()
    try:
        with pytest.raises(data.DataCorruptError) as err:
            data.mnist(root=mnist_dir.parent)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    one_line(err, path, f"holds {2**28} data bytes but its header promises 3367254359280")
    assert peak < 2**20, peak


def test_idx_labels_header_promising_more_than_present(mnist_dir):
    path = mnist_dir / "train-labels-idx1-ubyte"
    path.write_bytes(idx_bytes(np.arange(5, dtype=np.uint8), dims=(4_000_000_000,)))
    with pytest.raises(data.DataCorruptError) as err:
        data.mnist(root=mnist_dir.parent)
    one_line(err, path, "holds 5 data bytes but its header promises 4000000000")


def test_idx_more_data_than_promised(mnist_dir):
    path = mnist_dir / "train-labels-idx1-ubyte"
    path.write_bytes(path.read_bytes() + b"\x00")
    with pytest.raises(data.DataCorruptError) as err:
        data.mnist(root=mnist_dir.parent)
    one_line(err, path, "more data bytes than its header promises (5)")


@pytest.mark.parametrize("code,dtype", [(0x0D, ">f4"), (0x0E, ">f8"), (0x0C, ">i4"), (0x09, ">i1")])
def test_idx_float_or_other_typed_pixels_are_refused_not_cast(mnist_dir, code, dtype):
    path = mnist_dir / "train-images-idx3-ubyte"
    pixels = np.random.default_rng(0).random((5, 28, 28)).astype(dtype)
    path.write_bytes(idx_bytes(pixels, code=code))
    with pytest.raises(data.DataCorruptError) as err:
        data.mnist(root=mnist_dir.parent)
    one_line(err, path, f"(IDX type code 0x{code:02X})", "unsigned bytes (type code 0x08)", "does not cast", REDO)


def test_idx_float_labels_are_refused(mnist_dir):
    path = mnist_dir / "t10k-labels-idx1-ubyte"
    path.write_bytes(idx_bytes(np.array([1.0, 2.0, 3.0], ">f4"), code=0x0D))
    with pytest.raises(data.DataCorruptError) as err:
        data.mnist(root=mnist_dir.parent, train=False)
    one_line(err, path, "holds float32 values (IDX type code 0x0D)")


def test_idx_wrong_dimensions_are_refused(mnist_dir):
    images = mnist_dir / "train-images-idx3-ubyte"
    images.write_bytes(idx_bytes(np.zeros((5, 32, 32), np.uint8)))
    with pytest.raises(data.DataCorruptError) as err:
        data.mnist(root=mnist_dir.parent)
    one_line(err, images, "images of 32x32 pixels, but MNIST images are 28x28")
    images.write_bytes(idx_bytes(np.zeros((5, 784), np.uint8)))
    with pytest.raises(data.DataCorruptError) as err:
        data.mnist(root=mnist_dir.parent)
    one_line(err, images, "has 2 dimensions, but MNIST images have 3")


def test_idx_bad_magic_and_misnamed_gzip(mnist_dir):
    path = mnist_dir / "train-images-idx3-ubyte"
    good = path.read_bytes()
    path.write_bytes(b"\x01" + good[1:])
    with pytest.raises(data.DataCorruptError) as err:
        data.mnist(root=mnist_dir.parent)
    one_line(err, path, "is not an IDX file (bad magic number)", REDO)
    path.write_bytes(good[:2] + b"\x42" + good[3:])
    with pytest.raises(data.DataCorruptError) as err:
        data.mnist(root=mnist_dir.parent)
    one_line(err, path, "unknown type code 0x42")
    path.write_bytes(gzip.compress(good))  # compressed, but without the .gz name
    with pytest.raises(data.DataCorruptError) as err:
        data.mnist(root=mnist_dir.parent)
    one_line(err, path, "is gzip-compressed but not named .gz; rename it to end in .gz")
    path.unlink()
    named = path.with_name(path.name + ".gz")
    named.write_bytes(good)  # the other way round: a plain file named .gz
    with pytest.raises(data.DataCorruptError) as err:
        data.mnist(root=mnist_dir.parent)
    one_line(err, named, "is named .gz but is not compressed; remove .gz from its name")


@pytest.mark.parametrize("mask", [0x01, 0x80, 0xFF])
def test_idx_header_byte_flips_are_one_line_errors(tmp_path, mask):
    """Flip each header byte of each file: the load either works (e.g. a flip that leaves
    a valid header) or raises the loader's own error, never anything else."""
    sets = make_idx_set(tmp_path / "mnist", compress=False)
    for stem, header in (("train-images-idx3-ubyte", 16), ("train-labels-idx1-ubyte", 8)):
        path = tmp_path / "mnist" / stem
        good = path.read_bytes()
        for i in range(header):
            bad = bytearray(good)
            bad[i] ^= mask
            path.write_bytes(bytes(bad))
            with pytest.raises(data.DataCorruptError) as err:
                data.mnist(root=tmp_path)
            one_line(err, path, "; ")
        path.write_bytes(good)
    assert len(data.mnist(root=tmp_path)) == len(sets["train"][1])


# ---- IDX: gzip streams ------------------------------------------------------------------


@pytest.mark.parametrize("stem", ["train-images-idx3-ubyte", "train-labels-idx1-ubyte"])
def test_gz_truncated_mid_stream(tmp_path, stem):
    make_idx_set(tmp_path / "mnist", compress=True)
    path = tmp_path / "mnist" / f"{stem}.gz"
    good = path.read_bytes()
    for cut in sorted({1, 5, 10, 11, len(good) // 2, len(good) - 8, len(good) - 4, len(good) - 1}):
        path.write_bytes(good[:cut])
        with pytest.raises(data.DataCorruptError) as err:
            data.mnist(root=tmp_path)
        one_line(err, path, "is corrupt", REDO)


def test_gz_byte_flips_anywhere_are_one_line_errors(tmp_path):
    """Flip bytes all over a gzip file (header, deflate stream, CRC and size trailer): a
    flip either leaves a loadable file (e.g. the gzip header's time stamp) or is reported
    as corrupt, never as zlib.error, EOFError, BadGzipFile or struct.error."""
    make_idx_set(tmp_path / "mnist", compress=True)
    path = tmp_path / "mnist" / "train-images-idx3-ubyte.gz"
    good = path.read_bytes()
    refused = 0
    for i in list(range(0, 40)) + list(range(40, len(good) - 8, 37)) + list(range(len(good) - 8, len(good))):
        bad = bytearray(good)
        bad[i] ^= 0x55
        path.write_bytes(bytes(bad))
        try:
            data.mnist(root=tmp_path)
        except data.DataCorruptError as err:
            one_line(err, path, REDO)
            refused += 1
    assert refused > 0.8 * (40 + 8 + (len(good) - 48) // 37)


# ---- IDX: images and labels that do not go together -----------------------------------------


def test_label_count_differs_from_image_count(mnist_dir):
    write_idx(mnist_dir / "train-labels-idx1-ubyte", np.zeros(4, np.uint8), compress=False)
    images = mnist_dir / "train-images-idx3-ubyte"
    with pytest.raises(data.DataCorruptError) as err:
        data.mnist(root=mnist_dir.parent)
    message = one_line(err, images, "holds 5 images but", "holds 4 labels", "delete them and download them again (download=True) or copy good copies there")
    assert str(mnist_dir / "train-labels-idx1-ubyte") in message


@pytest.mark.parametrize("bad", [10, 255])
def test_idx_labels_out_of_range(mnist_dir, bad):
    labels = np.array([0, 9, bad, 3, 1], np.uint8)
    write_idx(mnist_dir / "train-labels-idx1-ubyte", labels, compress=False)
    with pytest.raises(data.DataCorruptError) as err:
        data.mnist(root=mnist_dir.parent)
    one_line(err, mnist_dir / "train-labels-idx1-ubyte", f"holds labels up to {bad}", "0..9", REDO)


def test_fashion_mnist_goes_through_the_same_checks(tmp_path):
    make_idx_set(tmp_path / "FashionMNIST" / "raw", compress=True)
    path = tmp_path / "FashionMNIST" / "raw" / "t10k-images-idx3-ubyte.gz"
    path.write_bytes(path.read_bytes()[:-20])
    with pytest.raises(data.DataCorruptError) as err:
        data.fashion_mnist(root=tmp_path, train=False)
    one_line(err, path, "gzip stream is truncated or damaged")


# ---- CIFAR-10, binary version ------------------------------------------------------------


@pytest.mark.parametrize("bad", [10, 255])
def test_cifar_binary_label_byte_out_of_range(tmp_path, bad):
    write_cifar_bin(tmp_path / "cifar-10-batches-bin", cifar_batches())
    path = tmp_path / "cifar-10-batches-bin" / "data_batch_3.bin"
    raw = bytearray(path.read_bytes())
    raw[3073] = bad  # the label byte of the second record
    path.write_bytes(bytes(raw))
    with pytest.raises(data.DataCorruptError) as err:
        data.cifar10(root=tmp_path)
    one_line(err, path, f"..{bad}, but CIFAR-10 labels lie in 0..9", REDO)


def test_cifar_binary_byte_flips(tmp_path):
    """A flipped pixel byte is a different picture (not detectable); a flipped label byte
    or a lost byte is reported, naming the batch."""
    write_cifar_bin(tmp_path / "cifar-10-batches-bin", cifar_batches())
    path = tmp_path / "cifar-10-batches-bin" / "test_batch.bin"
    good = path.read_bytes()
    for i in range(0, len(good), 97):
        bad = bytearray(good)
        bad[i] ^= 0xF0
        path.write_bytes(bytes(bad))
        if i % 3073 == 0 and bad[i] > 9:
            with pytest.raises(data.DataCorruptError) as err:
                data.cifar10(root=tmp_path, train=False)
            one_line(err, path, "CIFAR-10 labels lie in 0..9")
        else:
            assert len(data.cifar10(root=tmp_path, train=False)) == 3
    path.write_bytes(good[:-3073])  # a whole record lost still loads: records are independent
    assert len(data.cifar10(root=tmp_path, train=False)) == 2
    path.write_bytes(b"")
    with pytest.raises(data.DataCorruptError) as err:
        data.cifar10(root=tmp_path, train=False)
    one_line(err, path, "holds 0 bytes, not a whole number of 3073-byte CIFAR-10 records")


# ---- CIFAR-10, python version ------------------------------------------------------------


def py_batch_path(tmp_path, **batch_fields):
    """Good python batches, then test_batch replaced by a pickle of the given dict fields."""
    folder = tmp_path / "cifar-10-batches-py"
    write_cifar_py(folder, cifar_batches())
    if batch_fields:
        (folder / "test_batch").write_bytes(pickle.dumps(batch_fields.get("obj", batch_fields)))
    return folder / "test_batch"


def test_cifar_pickle_truncated_anywhere(tmp_path):
    path = py_batch_path(tmp_path)
    good = path.read_bytes()
    for cut in list(range(0, 120, 3)) + list(range(120, len(good), 211)) + [len(good) - 1]:
        path.write_bytes(good[:cut])
        with pytest.raises(data.DataCorruptError) as err:
            data.cifar10(root=tmp_path, train=False)
        one_line(err, path, "is not a CIFAR-10 python batch", REDO)


@pytest.mark.parametrize("protocol", [3, 5])
def test_cifar_pickle_byte_flips_are_one_line_errors(tmp_path, protocol):
    """Flip every byte of the pickle's structure (all but the pixel bytes, which are any
    value): each flip loads (a flip that still reads as a valid batch) or is the loader's
    one-line error; never AttributeError, OverflowError, MemoryError, EOFError, ..."""
    path = py_batch_path(tmp_path)
    batch = {b"batch_label": b"t", b"labels": [3, 1, 4], b"data": np.zeros((3, 3072), np.uint8), b"filenames": []}
    good = pickle.dumps(batch, protocol=protocol)
    path.write_bytes(good)
    assert data.cifar10(root=tmp_path, train=False).y.tolist() == [3, 1, 4]
    pixels = good.find(bytes(3072 * 3))
    assert pixels > 0
    structure = [i for i in range(len(good)) if not pixels <= i < pixels + 3072 * 3]
    for i in structure:
        for mask in (0x01, 0x80):
            bad = bytearray(good)
            bad[i] ^= mask
            path.write_bytes(bytes(bad))
            try:
                ds = data.cifar10(root=tmp_path, train=False)
            except data.DataCorruptError as err:
                one_line(err, path, REDO)
            else:
                assert ds.X.shape[1:] == (3, 32, 32) and int(ds.y.max()) <= 9


def test_cifar_pickle_unknown_opcode_and_empty_file_are_named(tmp_path):
    path = py_batch_path(tmp_path)
    good = path.read_bytes()
    path.write_bytes(good[:2] + b"\x15" + good[3:])
    with pytest.raises(data.DataCorruptError) as err:
        data.cifar10(root=tmp_path, train=False)
    one_line(err, path, "does not unpickle (invalid load key 0x15, not a pickle opcode)", REDO)
    path.write_bytes(b"")
    with pytest.raises(data.DataCorruptError) as err:
        data.cifar10(root=tmp_path, train=False)
    one_line(err, path, "does not unpickle (EOFError: the file ends early)", REDO)


def test_cifar_pickle_huge_length_field(tmp_path):
    """A pickle whose bytes-length field claims 2^62 bytes: refused, no MemoryError."""
    path = py_batch_path(tmp_path)
    blob = pickle.PROTO + b"\x04" + pickle.BINBYTES8 + struct.pack("<Q", 2**62) + b"\x00" * 16
    path.write_bytes(blob)
    with pytest.raises(data.DataCorruptError) as err:
        data.cifar10(root=tmp_path, train=False)
    one_line(err, path, "does not unpickle")


def test_cifar_pickle_memo_index_cannot_make_the_unpickler_allocate(tmp_path):
    """The C unpickler sizes its memo by the largest index it meets: a LONG_BINPUT of 10^7
    costs it 150 MiB (a damaged byte can give up to 2^32, i.e. 64 GB). The loader's
    unpickler keeps its memo in a dict: this (legal) pickle loads in a few KiB."""
    path = py_batch_path(tmp_path)
    good = pickle.dumps({b"labels": [3, 1, 4], b"data": np.zeros((3, 3072), np.uint8)}, protocol=3)
    assert good[2:5] == b"}q\x00"  # EMPTY_DICT, BINPUT 0
    path.write_bytes(good[:3] + pickle.LONG_BINPUT + struct.pack("<I", 10**7) + good[5:])
    tracemalloc.start()
    try:
        ds = data.cifar10(root=tmp_path, train=False)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert ds.y.tolist() == [3, 1, 4]
    assert peak < 20 * 2**20, peak


@pytest.mark.parametrize("flags", [1, 16, 128])
def test_cifar_pickle_dtype_state_cannot_set_numpy_flags(tmp_path, flags):
    """A damaged dtype state can mark uint8 pixels as holding object references (flag 1),
    which numpy then treats as pointers; every dtype state but the plain one is refused."""
    path = py_batch_path(tmp_path)
    good = pickle.dumps({b"labels": [3, 1, 4], b"data": np.zeros((3, 3072), np.uint8)}, protocol=3)
    state = b"J\xff\xff\xff\xffJ\xff\xff\xff\xffK\x00t"  # ..., elsize -1, alignment -1, flags 0)
    assert good.count(state) == 1
    path.write_bytes(good.replace(state, state[:-2] + bytes([flags]) + b"t"))
    with pytest.raises(data.DataCorruptError) as err:
        data.cifar10(root=tmp_path, train=False)
    one_line(err, path, "does not unpickle", "refusing dtype state (3, '|', None, None, None, -1, -1, ", REDO)


def test_cifar_pickle_wrong_keys_and_types(tmp_path):
    images = np.zeros((3, 3072), np.uint8)
    path = py_batch_path(tmp_path, **{"data": images, "labels": [1, 2, 3]})  # str keys (a re-pickled batch)
    with pytest.raises(data.DataCorruptError) as err:
        data.cifar10(root=tmp_path, train=False)
    one_line(err, path, "it holds a dict with keys 'data', 'labels', not a dict with b'data' and b'labels'", REDO)
    path.write_bytes(pickle.dumps([images, [1, 2, 3]]))
    with pytest.raises(data.DataCorruptError) as err:
        data.cifar10(root=tmp_path, train=False)
    one_line(err, path, "it holds a list, not a dict")
    path.write_bytes(pickle.dumps({b"data": images.tolist(), b"labels": [1, 2, 3]}))
    with pytest.raises(data.DataCorruptError) as err:
        data.cifar10(root=tmp_path, train=False)
    one_line(err, path, "holds b'data' as a list, but CIFAR-10 pixels are a uint8 array")


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_cifar_float_pixels_are_refused_not_cast(tmp_path, dtype):
    pixels = np.random.default_rng(0).random((3, 3072)).astype(dtype)
    path = py_batch_path(tmp_path)
    path.write_bytes(pickle.dumps({b"data": pixels, b"labels": [1, 2, 3]}))
    with pytest.raises(data.DataCorruptError) as err:
        data.cifar10(root=tmp_path, train=False)
    one_line(err, path, f"holds b'data' as a {np.dtype(dtype).name} array", "does not cast", REDO)


@pytest.mark.parametrize(
    "images,labels,expected",
    [
        (np.zeros((3, 3071), np.uint8), [1, 2, 3], "b'data' of shape (3, 3071) and 3 labels"),
        (np.zeros(3 * 3072, np.uint8), [1, 2, 3], "b'data' of shape (9216,) and 3 labels"),
        (np.zeros((3, 3072), np.uint8), [1, 2], "b'data' of shape (3, 3072) and 2 labels"),
        (np.zeros((3, 3072), np.uint8), [[1], [2], [3]], "b'labels' of shape (3, 1)"),
        (np.zeros((3, 3072), np.uint8), [1.0, 2.0, 3.0], "b'labels' of shape (3,) and type float64"),
        (np.zeros((3, 3072), np.uint8), [1, -1, 3], "holds labels -1..3, but CIFAR-10 labels lie in 0..9"),
        (np.zeros((3, 3072), np.uint8), [1, 10, 3], "holds labels 1..10, but CIFAR-10 labels lie in 0..9"),
    ],
)
def test_cifar_pickle_wrong_shapes_and_labels(tmp_path, images, labels, expected):
    path = py_batch_path(tmp_path)
    path.write_bytes(pickle.dumps({b"data": images, b"labels": labels}))
    with pytest.raises(data.DataCorruptError) as err:
        data.cifar10(root=tmp_path, train=False)
    one_line(err, path, expected, REDO)


# ---- the data root itself ----------------------------------------------------------------


@pytest.mark.parametrize("name", ["mnist", "fashion_mnist", "cifar10"])
@pytest.mark.parametrize("below", [False, True])
def test_download_into_a_root_that_is_a_file_is_refused_before_any_download(tmp_path, monkeypatch, name, below):
    afile = tmp_path / "data"
    afile.write_text("not a folder")
    root = afile / "sub" if below else afile
    calls = []
    monkeypatch.setattr(urllib.request, "urlopen", lambda *a, **k: calls.append(a) or pytest.fail("downloaded"))
    with pytest.raises(data.DataNotFoundError) as err:
        data.load(name, root=root, download=True)
    one_line(err, root, f"({afile} is a file)", "is not a folder", "NRC_DATA_ROOT")
    assert calls == [] and not data.available(name, root=root)


def test_root_without_read_permission(tmp_path, monkeypatch):
    """As root, chmod cannot take read permission away: os.access is made to say no."""
    make_idx_set(tmp_path / "MNIST" / "raw")
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda p, mode, **kw: False if pathlib.Path(p) == tmp_path else real_access(p, mode, **kw))
    assert not data.available("mnist", root=tmp_path)
    for name in ("mnist", "cifar10"):
        with pytest.raises(data.DataPermissionError) as err:
            data.load(name, root=tmp_path)
        one_line(err, tmp_path, "cannot be read by this user (permission denied)", "chmod", "NRC_DATA_ROOT")
    assert isinstance(err.value, PermissionError) and isinstance(err.value, data.DataError)


def test_subfolder_that_cannot_be_entered(tmp_path, monkeypatch):
    """A folder without x permission: stat() of what is inside raises PermissionError."""
    make_idx_set(tmp_path / "MNIST" / "raw")
    blocked = tmp_path / "MNIST" / "raw"
    real_stat = pathlib.Path.stat

    def stat(self, **kw):
        if self.parent == blocked:
            raise PermissionError(13, "Permission denied", str(self))
        return real_stat(self, **kw)

    monkeypatch.setattr(pathlib.Path, "stat", stat)
    with pytest.raises(data.DataPermissionError) as err:
        data.mnist(root=tmp_path)
    one_line(err, blocked, "permission denied")
    assert not data.available("mnist", root=tmp_path)


def test_file_without_read_permission(tmp_path, monkeypatch):
    make_idx_set(tmp_path / "MNIST" / "raw")
    write_cifar_py(tmp_path / "cifar-10-batches-py", cifar_batches())
    locked = {tmp_path / "MNIST" / "raw" / "t10k-labels-idx1-ubyte.gz", tmp_path / "cifar-10-batches-py" / "test_batch"}
    real_open = builtins.open

    def fake_open(file, *args, **kw):
        if isinstance(file, (str, os.PathLike)) and pathlib.Path(file) in locked:
            raise PermissionError(13, "Permission denied", str(file))
        return real_open(file, *args, **kw)

    monkeypatch.setattr(builtins, "open", fake_open)
    for name, path in (("mnist", min(locked)), ("cifar10", max(locked))):
        with pytest.raises(data.DataPermissionError) as err:
            data.load(name, root=tmp_path, train=False)
        one_line(err, path, "cannot be read by this user (permission denied)")


def test_unreadable_system_folder_counts_as_absent(tmp_path, monkeypatch):
    system = tmp_path / "system"
    make_idx_set(system / "fashion-mnist")
    monkeypatch.setattr(data, "SYSTEM_DATA_DIRS", (system,))
    real_stat = pathlib.Path.stat

    def stat(self, **kw):
        if self.is_relative_to(system / "fashion-mnist") and self != system / "fashion-mnist":
            raise PermissionError(13, "Permission denied", str(self))
        return real_stat(self, **kw)

    monkeypatch.setattr(pathlib.Path, "stat", stat)
    user = tmp_path / "user"
    assert not data.available("fashion_mnist", root=user)
    with pytest.raises(data.DataNotFoundError, match="not found in any of"):
        data.fashion_mnist(root=user)


def test_every_loader_error_is_a_data_error():
    assert issubclass(data.DataNotFoundError, FileNotFoundError)
    assert issubclass(data.DataCorruptError, ValueError)
    assert issubclass(data.DataPermissionError, PermissionError)
    for cls in (data.DataNotFoundError, data.DataCorruptError, data.DataPermissionError):
        assert issubclass(cls, data.DataError)
