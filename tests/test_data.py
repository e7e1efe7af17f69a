"""Dataset discovery and image/mask decoding on small synthetic files."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest

from somad import data
from somad.data import (
    IMAGE_SUFFIXES,
    Dataset,
    Sample,
    find_categories,
    is_mvtec_category,
    load_images,
    open_dataset,
    read_image,
    read_mask,
)
from somad.errors import DataError, ImageReadError


def write(path: Path, image: np.ndarray, ext: str = ".png") -> Path:
    """Write an array with OpenCV (channels in OpenCV's BGR order) and return the path."""
    path.parent.mkdir(parents=True, exist_ok=True)
    ok, buffer = cv2.imencode(ext, image)
    assert ok
    buffer.tofile(path)
    return path


def rgb_image(h: int = 12, w: int = 16, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def png_bytes(
    width: int, height: int, colour_type: int, rows: list[bytes], palette: bytes | None = None
) -> bytes:
    """A minimal 8-bit PNG built by hand (rows without the filter byte)."""

    def chunk(kind: bytes, payload: bytes) -> bytes:
        crc = zlib.crc32(kind + payload) & 0xFFFFFFFF
        return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", crc)

    header = struct.pack(">IIBBBBB", width, height, 8, colour_type, 0, 0, 0)
    out = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header)
    if palette is not None:
        out += chunk(b"PLTE", palette)
    out += chunk(b"IDAT", zlib.compress(b"".join(b"\x00" + row for row in rows)))
    return out + chunk(b"IEND", b"")


def make_mvtec(root: Path, *, missing_mask: bool = False) -> Path:
    cat = root / "bottle"
    for i in range(3):
        write(cat / "train" / "good" / f"{i:03d}.png", rgb_image(seed=i))
    write(cat / "test" / "good" / "000.png", rgb_image(seed=10))
    for kind in ("crack", "broken"):
        for i in range(2):
            write(cat / "test" / kind / f"{i:03d}.png", rgb_image(seed=20 + i))
            if not (missing_mask and kind == "crack" and i == 1):
                write(cat / "ground_truth" / kind / f"{i:03d}_mask.png", np.zeros((12, 16), np.uint8))
    (cat / "train" / "good" / "notes.txt").write_text("not an image")
    write(cat / "train" / "good" / ".hidden.png", rgb_image())
    return cat


# ----------------------------------------------------------------------------------------------- datasets


def test_sample_labels():
    assert Sample(Path("a.png"), "test", "good", None).label == 0
    assert Sample(Path("a.png"), "test", "crack", Path("m.png")).label == 1
    assert Sample(Path("a.png"), "test", "unlabelled", None).label == -1
    assert ".PNG".lower() in IMAGE_SUFFIXES and ".webp" in IMAGE_SUFFIXES


def test_mvtec_layout(tmp_path):
    cat = make_mvtec(tmp_path)
    ds = open_dataset(cat)
    assert isinstance(ds, Dataset)
    assert (ds.name, ds.root, ds.layout) == ("bottle", cat, "mvtec")
    assert [s.path.name for s in ds.train] == ["000.png", "001.png", "002.png"]  # hidden and .txt ignored
    assert all(s.split == "train" and s.label == 0 for s in ds.train)
    assert ds.defect_types == ["broken", "crack"]
    assert [s.defect_type for s in ds.test] == ["broken", "broken", "crack", "crack", "good"]
    assert [s.label for s in ds.test] == [1, 1, 1, 1, 0]
    good = next(s for s in ds.test if s.defect_type == "good")
    assert good.mask_path is None
    crack = [s for s in ds.test if s.defect_type == "crack"]
    assert crack[1].mask_path == cat / "ground_truth" / "crack" / "001_mask.png"
    assert ds.has_masks and ds.has_labels


def test_mvtec_missing_mask_is_not_an_error(tmp_path):
    ds = open_dataset(make_mvtec(tmp_path, missing_mask=True))
    crack = [s for s in ds.test if s.defect_type == "crack"]
    assert crack[0].mask_path is not None and crack[1].mask_path is None
    assert not ds.has_masks and ds.has_labels


def test_mvtec_without_test_folder(tmp_path):
    write(tmp_path / "c" / "train" / "good" / "a.png", rgb_image())
    ds = open_dataset(tmp_path / "c")
    assert ds.test == [] and not ds.has_masks and not ds.has_labels and ds.defect_types == []


def test_mvtec_empty_train_names_the_folder(tmp_path):
    (tmp_path / "c" / "train" / "good").mkdir(parents=True)
    with pytest.raises(DataError, match="no training images") as info:
        open_dataset(tmp_path / "c")
    assert str(tmp_path / "c" / "train" / "good") in str(info.value)
    assert info.value.path == tmp_path / "c"


def test_find_categories(tmp_path):
    make_mvtec(tmp_path)
    write(tmp_path / "cable" / "train" / "good" / "0.png", rgb_image())
    (tmp_path / "not_a_category").mkdir()
    assert is_mvtec_category(tmp_path / "bottle") and not is_mvtec_category(tmp_path)
    assert find_categories(tmp_path) == [tmp_path / "bottle", tmp_path / "cable"]
    assert find_categories(tmp_path / "cable") == [tmp_path / "cable"]
    with pytest.raises(DataError, match="no category found"):
        find_categories(tmp_path / "not_a_category")


def test_plain_folder(tmp_path):
    for name in ("b.png", "a.jpg", "c.BMP"):
        write(tmp_path / "good" / name, rgb_image(), ext=Path(name).suffix.lower())
    ds = open_dataset(tmp_path / "good")
    assert ds.layout == "folder" and ds.name == "good"
    assert [s.path.name for s in ds.train] == ["a.jpg", "b.png", "c.BMP"]
    assert ds.test == [] and not ds.has_labels


def test_plain_folder_with_unlabelled_test_folder(tmp_path):
    write(tmp_path / "train" / "a.png", rgb_image())  # a folder named "train" holding images directly
    write(tmp_path / "new" / "x.png", rgb_image())
    write(tmp_path / "new" / "y.png", rgb_image())
    ds = open_dataset(tmp_path / "train", test_path=tmp_path / "new")
    assert ds.layout == "folder"
    assert [(s.path.name, s.defect_type, s.label) for s in ds.test] == [
        ("x.png", "unlabelled", -1),
        ("y.png", "unlabelled", -1),
    ]
    assert not ds.has_labels and not ds.has_masks and ds.defect_types == []


def test_plain_folder_with_typed_test_folder(tmp_path):
    write(tmp_path / "train" / "a.png", rgb_image())
    write(tmp_path / "test" / "good" / "g.png", rgb_image())
    write(tmp_path / "test" / "dent" / "d.png", rgb_image())
    (tmp_path / "test" / "empty").mkdir()
    ds = open_dataset(tmp_path / "train", tmp_path / "test")
    assert [(s.defect_type, s.label) for s in ds.test] == [("dent", 1), ("good", 0)]
    assert ds.has_labels and ds.defect_types == ["dent"] and not ds.has_masks


def test_test_path_replaces_mvtec_test_set(tmp_path):
    cat = make_mvtec(tmp_path)
    write(tmp_path / "extra" / "z.png", rgb_image())
    ds = open_dataset(cat, test_path=tmp_path / "extra")
    assert ds.layout == "mvtec" and [s.path.name for s in ds.test] == ["z.png"]


def test_open_dataset_errors_name_the_path(tmp_path):
    missing = tmp_path / "nowhere"
    with pytest.raises(DataError, match="does not exist") as info:
        open_dataset(missing)
    assert info.value.path == missing and str(missing) in str(info.value)
    file = write(tmp_path / "img.png", rgb_image())
    with pytest.raises(DataError, match="not a folder"):
        open_dataset(file)
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "readme.txt").write_text("x")
    with pytest.raises(DataError, match="no training images") as info:
        open_dataset(tmp_path / "empty")
    assert str(tmp_path / "empty") in str(info.value)
    write(tmp_path / "ok" / "a.png", rgb_image())
    with pytest.raises(DataError, match="does not exist"):
        open_dataset(tmp_path / "ok", test_path=tmp_path / "no_test")
    (tmp_path / "empty_test").mkdir()
    with pytest.raises(DataError, match="no test images"):
        open_dataset(tmp_path / "ok", test_path=tmp_path / "empty_test")


# ----------------------------------------------------------------------------------------------- images


def test_read_colour_image_is_rgb(tmp_path):
    bgr = rgb_image()
    out = read_image(write(tmp_path / "ä ö.png", bgr))  # non-ASCII name
    assert out.dtype == np.uint8 and out.shape == (12, 16, 3) and out.flags.c_contiguous
    np.testing.assert_array_equal(out, bgr[:, :, ::-1])


def test_read_grayscale(tmp_path):
    gray = np.arange(12 * 16, dtype=np.uint8).reshape(12, 16)
    out = read_image(write(tmp_path / "g.png", gray))
    assert out.shape == (12, 16, 3)
    for c in range(3):
        np.testing.assert_array_equal(out[:, :, c], gray)


def test_read_rgba_drops_alpha(tmp_path):
    bgra = np.zeros((4, 5, 4), np.uint8)
    bgra[..., 0], bgra[..., 1], bgra[..., 2], bgra[..., 3] = 10, 20, 30, 0
    out = read_image(write(tmp_path / "a.png", bgra))
    assert out.shape == (4, 5, 3)
    np.testing.assert_array_equal(out[0, 0], [30, 20, 10])


def test_read_palette_and_gray_alpha_png(tmp_path):
    palette = bytes([255, 0, 0, 0, 0, 255])  # index 0 red, 1 blue
    path = tmp_path / "p.png"
    path.write_bytes(png_bytes(2, 2, 3, [b"\x00\x01", b"\x01\x00"], palette))
    out = read_image(path)
    assert out.shape == (2, 2, 3)
    np.testing.assert_array_equal(out[0, 0], [255, 0, 0])
    np.testing.assert_array_equal(out[0, 1], [0, 0, 255])
    path = tmp_path / "ga.png"
    path.write_bytes(png_bytes(2, 1, 4, [bytes([10, 255, 200, 0])]))
    np.testing.assert_array_equal(read_image(path), [[[10, 10, 10], [200, 200, 200]]])


def test_read_16_bit(tmp_path):
    values = np.array([[0, 257, 65535], [32896, 128, 129]], np.uint16)
    out = read_image(write(tmp_path / "d.png", values))
    np.testing.assert_array_equal(out[:, :, 0], [[0, 1, 255], [128, 0, 1]])
    colour = np.zeros((2, 2, 3), np.uint16)
    colour[..., 2] = 65535  # red in BGR order
    np.testing.assert_array_equal(read_image(write(tmp_path / "c.png", colour))[0, 0], [255, 0, 0])


def test_read_float_tiff(tmp_path):
    unit = np.full((3, 3), 0.5, np.float32)
    assert read_image(write(tmp_path / "u.tiff", unit, ".tiff"))[0, 0, 0] == 128
    wide = np.full((3, 3), 300.0, np.float32)
    wide[0, 0] = 100.0
    out = read_image(write(tmp_path / "w.tiff", wide, ".tiff"))
    assert out[0, 0, 0] == 100 and out[1, 1, 0] == 255


@pytest.mark.parametrize(
    "payload",
    [
        pytest.param(np.random.default_rng(1).bytes(600), id="random"),
        pytest.param(
            cv2.imencode(".png", np.zeros((40, 40, 3), np.uint8) + 7)[1].tobytes()[:70], id="truncated"
        ),
        pytest.param(b"", id="empty"),
    ],
)
def test_corrupt_file_names_the_file(tmp_path, payload):
    path = tmp_path / "broken_part.png"
    path.write_bytes(payload)
    with pytest.raises(ImageReadError) as info:
        read_image(path)
    assert "broken_part.png" in str(info.value) and info.value.path == path


def test_truncated_png_body(tmp_path):
    data_ = cv2.imencode(".png", rgb_image(64, 64))[1].tobytes()
    path = tmp_path / "cut.png"
    path.write_bytes(data_[: len(data_) // 2])
    with pytest.raises(ImageReadError, match="cannot decode"):
        read_image(path)


def test_missing_and_folder_paths(tmp_path):
    with pytest.raises(ImageReadError, match="not found"):
        read_image(tmp_path / "gone.png")
    with pytest.raises(ImageReadError, match="not a file"):
        read_image(tmp_path)


def test_pixel_limit(tmp_path, monkeypatch):
    path = write(tmp_path / "big.png", rgb_image(30, 40))
    jpg = write(tmp_path / "big.jpg", rgb_image(30, 40), ".jpg")
    bmp = write(tmp_path / "big.bmp", rgb_image(30, 40), ".bmp")
    monkeypatch.setattr(data, "MAX_IMAGE_PIXELS", 1000)
    for file in (path, jpg, bmp):  # PNG and JPEG via the header, BMP after decoding
        with pytest.raises(ImageReadError, match="too large"):
            read_image(file)
    monkeypatch.setattr(data, "MAX_IMAGE_PIXELS", 1200)
    assert read_image(path).shape == (30, 40, 3)


def test_file_size_limit(tmp_path, monkeypatch):
    path = write(tmp_path / "a.png", rgb_image())
    monkeypatch.setattr(data, "MAX_FILE_BYTES", 10)
    with pytest.raises(ImageReadError, match="file too large"):
        read_image(path)


# ----------------------------------------------------------------------------------------------- masks


def test_read_mask_binarises_and_resizes(tmp_path):
    mask = np.zeros((8, 8), np.uint8)
    mask[2:6, 3:5] = 1  # any value above zero counts
    path = write(tmp_path / "m.png", mask)
    same = read_mask(path, (8, 8))
    assert same.dtype == bool and same.sum() == 8
    big = read_mask(path, (16, 24))
    assert big.dtype == bool and big.shape == (16, 24)
    assert big.sum() == 8 * 2 * 3  # nearest neighbour: every pixel becomes a 2 x 3 block
    assert big[4:12, 9:15].all() and not big[:4].any()
    small = read_mask(path, (4, 4))
    assert small.shape == (4, 4) and set(np.unique(small)) <= {False, True}


def test_read_mask_colour_and_alpha(tmp_path):
    colour = np.zeros((4, 4, 3), np.uint8)
    colour[1, 1, 2] = 255
    assert read_mask(write(tmp_path / "c.png", colour), (4, 4)).sum() == 1
    alpha_only = np.zeros((4, 4, 4), np.uint8)
    alpha_only[0, :, 3] = 255
    assert read_mask(write(tmp_path / "a.png", alpha_only), (4, 4)).sum() == 4


def test_read_mask_errors(tmp_path):
    path = tmp_path / "m_mask.png"
    path.write_bytes(b"not a png at all")
    with pytest.raises(ImageReadError, match=r"m_mask\.png"):
        read_mask(path, (4, 4))
    with pytest.raises(ValueError):
        read_mask(write(tmp_path / "ok.png", np.zeros((4, 4), np.uint8)), (0, 4))


# ----------------------------------------------------------------------------------------------- load_images


def test_load_images_non_strict(tmp_path):
    good = write(tmp_path / "a.png", rgb_image())
    bad = tmp_path / "b.png"
    bad.write_bytes(b"garbage")
    seen: list[DataError] = []
    images, indices, errors = load_images([good, str(bad), tmp_path / "c.png", good], on_error=seen.append)
    assert len(images) == 2 and indices == [0, 3]
    assert [e.path for e in errors] == [bad, tmp_path / "c.png"]
    assert seen == errors and all(isinstance(e, ImageReadError) for e in errors)


def test_load_images_strict(tmp_path):
    good = write(tmp_path / "a.png", rgb_image())
    bad = tmp_path / "b.png"
    bad.write_bytes(b"garbage")
    with pytest.raises(ImageReadError, match=r"b\.png"):
        load_images([good, bad], strict=True)
    images, indices, errors = load_images(iter([good]), strict=True)
    assert len(images) == 1 and indices == [0] and errors == []


def test_a_text_file_lists_images_one_a_line(tmp_path):
    from somad.data import image_paths

    (tmp_path / "a.png").write_bytes(b"x")
    (tmp_path / "list.txt").write_text(f"a.png\n\n# a comment\n{tmp_path / 'b.png'}\n")
    assert image_paths([tmp_path / "list.txt"]) == [tmp_path / "a.png", tmp_path / "b.png"]
    (tmp_path / "empty.txt").write_text("\n")
    with pytest.raises(DataError, match="lists no image"):
        image_paths([tmp_path / "empty.txt"])
