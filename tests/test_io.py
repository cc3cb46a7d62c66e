import io
import os
import pickle
import zipfile

import numpy as np
import pytest
import torch

from utils.io import UnsafePickleError, atomic_write, safe_load_pickle, save_json, save_pickle, save_png


def _cuda_tagged_storage_bytes(storage) -> bytes:
    """torch.save archive of `storage` whose pickled location says 'cuda:0' (as if saved on a GPU)."""
    buffer = io.BytesIO()
    torch.save(storage, buffer)
    src, dst = zipfile.ZipFile(io.BytesIO(buffer.getvalue())), io.BytesIO()
    with zipfile.ZipFile(dst, "w", zipfile.ZIP_STORED) as z:
        for info in src.infolist():
            content = src.read(info)
            if info.filename.endswith("data.pkl"):
                assert b"X\x03\x00\x00\x00cpu" in content
                content = content.replace(b"X\x03\x00\x00\x00cpu", b"X\x06\x00\x00\x00cuda:0")
            z.writestr(info, content)
    return dst.getvalue()


def pickle_as_if_saved_on_cuda(obj, protocol: int = 4) -> bytes:
    """Plain pickle of `obj` in which every tensor storage carries the location tag 'cuda:0'."""
    out = io.BytesIO()

    class CudaTagPickler(pickle.Pickler):
        def reducer_override(self, value):
            if isinstance(value, torch.storage.TypedStorage):
                return (torch.storage._load_from_bytes, (_cuda_tagged_storage_bytes(value),))
            return NotImplemented

    CudaTagPickler(out, protocol=protocol).dump(obj)
    return out.getvalue()


def test_safe_load_pickle_reads_tensors_arrays_and_containers(tmp_path):
    obj = {"road": torch.randn(8), "sky": torch.randn(8).double(), "arr": np.arange(5), "meta": [1, 2.5, "x", (3,)]}
    path = tmp_path / "refs.pkl"
    path.write_bytes(pickle.dumps(obj))
    loaded = safe_load_pickle(path)
    assert torch.equal(loaded["road"], obj["road"]) and loaded["sky"].dtype == torch.float64
    np.testing.assert_array_equal(loaded["arr"], obj["arr"])
    assert loaded["meta"] == obj["meta"]


@pytest.mark.parametrize("protocol", [2, 4])
def test_safe_load_pickle_maps_cuda_storages_to_cpu(tmp_path, protocol):
    obj = {"road": torch.randn(8), "sky": torch.randn(8)}
    data = pickle_as_if_saved_on_cuda(obj, protocol)
    assert b"cuda:0" in data
    path = tmp_path / "cuda.pkl"
    path.write_bytes(data)
    loaded = safe_load_pickle(path)
    assert loaded["road"].device.type == "cpu"
    assert torch.equal(loaded["road"], obj["road"]) and torch.equal(loaded["sky"], obj["sky"])


class _Evil:
    def __reduce__(self):
        return (os.system, ("touch " + str(_Evil.marker),))


def test_malicious_pickle_is_refused_without_side_effects(tmp_path):
    _Evil.marker = tmp_path / "pwned"
    path = tmp_path / "evil.pkl"
    path.write_bytes(pickle.dumps({"road": _Evil()}))
    with pytest.raises(UnsafePickleError, match="system"):
        safe_load_pickle(path)
    assert not _Evil.marker.exists()


def test_truncated_pickle_is_a_clear_error(tmp_path):
    path = tmp_path / "cut.pkl"
    path.write_bytes(pickle.dumps({"a": torch.ones(3)})[:20])
    with pytest.raises(pickle.UnpicklingError, match="cut.pkl"):
        safe_load_pickle(path)
    with pytest.raises(FileNotFoundError):
        safe_load_pickle(tmp_path / "missing.pkl")


def test_atomic_write_leaves_nothing_on_failure(tmp_path):
    target = tmp_path / "sub" / "out.json"
    save_json(target, {"a": 1})
    with pytest.raises(RuntimeError):
        with atomic_write(target, "w") as f:
            f.write("partial")
            raise RuntimeError("interrupted")
    assert target.read_text().strip().startswith("{")
    assert [p.name for p in target.parent.iterdir()] == ["out.json"]
    save_pickle({"x": 1}, tmp_path / "p.pkl")
    assert safe_load_pickle(tmp_path / "p.pkl") == {"x": 1}
    assert (target.stat().st_mode & 0o777) == 0o666 & ~_umask()  # not mkstemp's 0600
    save_png(tmp_path / "m.png", np.zeros((4, 5), np.uint8))
    with pytest.raises(ValueError):
        save_png(tmp_path / "bad.png", np.zeros((4, 5), np.int64))


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
