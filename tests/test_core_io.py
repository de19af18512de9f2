"Bad and unusual image files through tadsr.core's loaders; atomic saving."
import io
import struct
import zlib

import numpy as np
import pytest
import torch
from PIL import Image

from tadsr.core import ImageError, atomic_write, load_image, load_pil, save_image, tensor_to_pil


def _png16(path, arr: np.ndarray, color_type: int):
    "Write a 16-bit PNG by hand (Pillow cannot write 16-bit RGB): color_type 0 grey, 2 RGB."
    h, w = arr.shape[:2]
    raw = b"".join(b"\x00" + arr[y].astype(">u2").tobytes() for y in range(h))

    def chunk(tag, data):
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", w, h, 16, color_type, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))
    return path


def _noise_png_bytes(size=64) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (size, size, 3), dtype=np.uint8)).save(buf, "PNG")
    return buf.getvalue()


@pytest.fixture
def bad_files(tmp_path):
    (tmp_path / "empty.png").write_bytes(b"")
    (tmp_path / "notes.jpg").write_text("this is not a photograph\n")
    data = _noise_png_bytes()
    (tmp_path / "half.png").write_bytes(data[: len(data) // 2])
    return tmp_path


@pytest.mark.parametrize("name,problem", [("missing.png", "not found"), ("empty.png", "empty"),
                                          ("notes.jpg", "not an image"), ("half.png", "truncated")])
@pytest.mark.parametrize("loader", [load_pil, load_image])
def test_bad_files_raise_image_error_naming_the_file(bad_files, loader, name, problem):
    with pytest.raises(ImageError) as e:
        loader(bad_files / name)
    msg = str(e.value)
    assert msg.startswith(str(bad_files / name) + ": "), msg
    assert problem in msg and "\n" not in msg
    assert isinstance(e.value, ValueError)


def test_truncated_png_refused_even_if_pillow_is_lenient(bad_files):
    from PIL import ImageFile
    old = ImageFile.LOAD_TRUNCATED_IMAGES
    ImageFile.LOAD_TRUNCATED_IMAGES = True
    try:
        with pytest.raises(ImageError, match="truncated"):
            load_image(bad_files / "half.png")
        assert ImageFile.LOAD_TRUNCATED_IMAGES is True            # the caller's setting is restored
    finally:
        ImageFile.LOAD_TRUNCATED_IMAGES = old


def test_folder_is_not_an_image(tmp_path):
    with pytest.raises(ImageError, match="folder"):
        load_pil(tmp_path)


def _check(x, h, w):
    assert x.shape == (1, 3, h, w) and x.dtype == torch.float32
    assert x.min() >= -1 and x.max() <= 1


def test_greyscale(tmp_path):
    Image.fromarray(np.array([[0, 255], [51, 204]], dtype=np.uint8), "L").save(tmp_path / "g.png")
    x = load_image(tmp_path / "g.png")
    _check(x, 2, 2)
    assert torch.equal(x[0, 0], x[0, 1]) and torch.equal(x[0, 0], x[0, 2])
    torch.testing.assert_close(x[0, 0], torch.tensor([[-1.0, 1.0], [51 / 127.5 - 1, 204 / 127.5 - 1]]))


def test_rgba_transparent_is_white(tmp_path):
    im = Image.new("RGBA", (2, 1), (255, 0, 0, 255))
    im.putpixel((1, 0), (0, 0, 0, 0))                                   # fully transparent black
    im.save(tmp_path / "a.png")
    x = load_image(tmp_path / "a.png")
    _check(x, 1, 2)
    torch.testing.assert_close(x[0, :, 0, 0], torch.tensor([1.0, -1.0, -1.0]))
    torch.testing.assert_close(x[0, :, 0, 1], torch.ones(3))


def test_la_half_transparent_blends_with_white(tmp_path):
    Image.new("LA", (1, 1), (0, 128)).save(tmp_path / "la.png")        # black at alpha 128/255
    u = np.asarray(load_pil(tmp_path / "la.png"))[0, 0]
    assert np.all(np.abs(u.astype(int) - 127) <= 1), u


def test_16bit_greyscale(tmp_path):
    a = np.array([[0, 65535, 32896]], dtype=np.uint16)
    x = load_image(_png16(tmp_path / "g16.png", a, 0))
    _check(x, 1, 3)
    torch.testing.assert_close(x[0, :, 0, 0], -torch.ones(3))
    torch.testing.assert_close(x[0, :, 0, 1], torch.ones(3))            # 65535 -> 1.0
    torch.testing.assert_close(x[0, :, 0, 2], torch.full((3,), 128 / 127.5 - 1))   # 32896/257 = 128


def test_16bit_rgb(tmp_path):
    a = np.zeros((2, 2, 3), dtype=np.uint16)
    a[..., 0] = 65535
    x = load_image(_png16(tmp_path / "rgb16.png", a, 2))
    _check(x, 2, 2)
    torch.testing.assert_close(x[0, :, 0, 0], torch.tensor([1.0, -1.0, -1.0]))


def test_palette(tmp_path):
    im = Image.new("P", (2, 1), 0)
    im.putpalette([10, 20, 30, 200, 100, 0] + [0, 0, 0] * 254)
    im.putpixel((1, 0), 1)
    im.save(tmp_path / "p.png")
    u = np.asarray(load_pil(tmp_path / "p.png"))
    assert u.tolist() == [[[10, 20, 30], [200, 100, 0]]]


def test_palette_with_transparency_is_white(tmp_path):
    im = Image.new("P", (1, 1), 0)
    im.putpalette([10, 20, 30] * 256)
    im.info["transparency"] = 0
    im.save(tmp_path / "pt.png", transparency=0)
    assert np.asarray(load_pil(tmp_path / "pt.png")).tolist() == [[[255, 255, 255]]]


def test_cmyk_jpeg(tmp_path):
    Image.new("CMYK", (8, 8), (0, 255, 255, 0)).save(tmp_path / "c.jpg", quality=95)   # pure red in print
    with Image.open(tmp_path / "c.jpg") as im:
        assert im.mode == "CMYK"
    x = load_image(tmp_path / "c.jpg")
    _check(x, 8, 8)
    r, g, b = x[0].mean(dim=(1, 2)).tolist()
    assert r > 0.95 and g < -0.95 and b < -0.95, (r, g, b)


def test_pil_input_and_modes_in_memory():
    x = load_image(Image.new("1", (3, 2), 1))
    _check(x, 2, 3)
    assert torch.equal(x, torch.ones_like(x))


def test_save_image_round_trip_exact_and_no_temp_files(tmp_path):
    u = torch.arange(256, dtype=torch.uint8).view(1, 16, 16).expand(3, 16, 16).clone()
    u[1] = u[1].flip(-1)
    x = u.float()[None] / 127.5 - 1
    p = save_image(x, tmp_path / "sub" / "x.png")
    assert p.exists()
    assert torch.equal(load_image(p), x)                               # exact on 8-bit data
    assert np.array_equal(np.asarray(Image.open(p)), u.permute(1, 2, 0).numpy())
    save_image(tensor_to_pil(x[0]), tmp_path / "sub" / "y.png")        # PIL input too
    assert sorted(q.name for q in (tmp_path / "sub").iterdir()) == ["x.png", "y.png"]


def test_save_image_error_leaves_nothing(tmp_path):
    with pytest.raises(ValueError):
        save_image(torch.zeros(2, 3, 4, 4), tmp_path / "bad.png")      # a batch is not one image
    with pytest.raises(ValueError, match="suffix"):
        save_image(torch.zeros(3, 4, 4), tmp_path / "bad.xyz")
    assert list(tmp_path.iterdir()) == []


def test_atomic_write_keeps_old_file_on_error(tmp_path):
    p = tmp_path / "ckpt.bin"
    p.write_bytes(b"old")
    with pytest.raises(RuntimeError):
        with atomic_write(p) as f:
            f.write(b"new but incomplete")
            raise RuntimeError("crash while writing")
    assert p.read_bytes() == b"old"
    assert [q.name for q in tmp_path.iterdir()] == ["ckpt.bin"]
    with atomic_write(p, "w") as f:
        f.write("new")
    assert p.read_text() == "new"
