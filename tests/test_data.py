"tadsr.data: deterministic crops, broken files skipped with a warning, the held-out validation photos."
import warnings

import numpy as np
import pytest
import torch
from PIL import Image

from tadsr.data import HRCropDataset, bundled_photos, find_images, heldout_photos, make_loader, validation_photos


@pytest.fixture(scope="module")
def photos():
    return bundled_photos()


def _rand_img(h, w, seed=0):
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8))


def test_determinism(photos):
    a = HRCropDataset(photos, crop=64, length=50, seed=3)
    b = HRCropDataset(list(photos.values()), crop=64, length=50, seed=3)
    for i in [0, 7, 49]:
        assert torch.equal(a[i], b[i])
        assert a[i].shape == (3, 64, 64) and a[i].dtype == torch.float32
        assert a[i].min() >= -1 and a[i].max() <= 1
    c = HRCropDataset(photos, crop=64, length=50, seed=4)
    assert not torch.equal(a[7], c[7])
    assert not torch.equal(a[7], a[8])
    assert len(a) == 50
    with pytest.raises(IndexError):
        a[50]


def test_crop_is_a_window_of_a_source():
    src = _rand_img(40, 50)
    ds = HRCropDataset([src], crop=16, length=10, flip=False)
    u = torch.from_numpy(np.array(src)).permute(2, 0, 1)          # (3,H,W) uint8
    x = ((ds[5] + 1) * 127.5).round().to(torch.uint8)
    hits = [(t, l) for t in range(40 - 15) for l in range(50 - 15) if torch.equal(u[:, t:t + 16, l:l + 16], x)]
    assert len(hits) == 1


def test_loader_determinism(photos):
    ds = HRCropDataset(photos, crop=32, length=20)
    b1 = list(make_loader(ds, batch_size=8, seed=1))
    b2 = list(make_loader(ds, batch_size=8, seed=1))
    assert len(b1) == 2 and b1[0].shape == (8, 3, 32, 32)
    assert all(torch.equal(x, y) for x, y in zip(b1, b2))
    assert not torch.equal(b1[0], next(iter(make_loader(ds, batch_size=8, seed=2))))


def test_unreadable_file_skipped_with_warning(tmp_path):
    _rand_img(40, 40).save(tmp_path / "good.png")
    (tmp_path / "broken.jpg").write_text("not a jpeg")
    with pytest.warns(UserWarning, match="broken.jpg"):
        ds = HRCropDataset([tmp_path], crop=32, length=4)
    assert len(ds.images) == 1 and ds.names[0].endswith("good.png")


def test_small_image_skipped_with_warning(tmp_path):
    _rand_img(40, 40).save(tmp_path / "big.png")
    _rand_img(20, 80).save(tmp_path / "thin.png")
    with pytest.warns(UserWarning, match="thin.png.*smaller than crop=32"):
        ds = HRCropDataset(tmp_path, crop=32, length=4)
    assert len(ds.images) == 1


def test_empty_folder_raises(tmp_path):
    with pytest.raises(ValueError, match="no usable images.*0 unreadable, 0 smaller"):
        HRCropDataset([tmp_path], crop=32)


def test_all_too_small_raises(tmp_path):
    for i in range(2):
        _rand_img(20, 20, seed=i).save(tmp_path / f"s{i}.png")
    (tmp_path / "x.png").write_bytes(b"")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(ValueError, match=r"1 unreadable, 2 smaller than crop=32"):
            HRCropDataset(tmp_path, crop=32)


def test_find_images(tmp_path):
    (tmp_path / "a").mkdir()
    for n in ["z.PNG", "a/b.jpeg", "c.webp", "d.txt", "e.tif"]:
        (tmp_path / n).write_bytes(b"x")
    assert [p.relative_to(tmp_path).as_posix() for p in find_images(tmp_path)] == ["a/b.jpeg", "c.webp", "e.tif", "z.PNG"]
    assert [p.name for p in find_images(tmp_path, recursive=False)] == ["c.webp", "e.tif", "z.PNG"]
    with pytest.raises(ValueError, match="no such folder"):
        find_images(tmp_path / "missing")


def test_heldout_disjoint_from_bundled(photos):
    val = heldout_photos()
    assert set(validation_photos()) == {"china", "flower"}
    assert set(val) == {"china", "flower", "chelsea", "coffee"}
    assert set(photos) == {"astronaut", "rocket", "motorcycle_left", "motorcycle_right"}
    assert not set(val) & set(photos)
    val_px = {np.asarray(v).tobytes() for v in val.values()}
    assert not any(np.asarray(p).tobytes() in val_px for p in photos.values())


def test_dataset_refuses_heldout_photo(photos, tmp_path):
    val = heldout_photos()
    for name in val:
        with pytest.raises(ValueError, match="held-out photo"):
            HRCropDataset([photos["rocket"], val[name]], crop=64)
    val["flower"].save(tmp_path / "my_flower.png")                 # lossless copy on disk: still refused
    with pytest.raises(ValueError, match="held-out photo"):
        HRCropDataset([tmp_path], crop=64)


def test_area_weighting():
    "A 300x300 black photo and a 100x100 white one: about 10% of crops are white (p proportional to area)."
    black, white = Image.new("RGB", (300, 300), 0), Image.new("RGB", (100, 100), (255, 255, 255))
    ds = HRCropDataset([black, white], crop=64, length=1000)
    torch.testing.assert_close(ds.probs, torch.tensor([0.9, 0.1], dtype=torch.float64))
    n_white = sum(int(ds[i].mean() > 0) for i in range(1000))
    assert 70 <= n_white <= 130, n_white                            # binomial(1000, 0.1): sd ~9.5
