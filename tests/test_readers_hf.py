import io

import numpy as np
import pytest
from PIL import Image

from unifusion_sam.data.io import DataError, DataWarning
from unifusion_sam.data.readers import HFSegmentation
from unifusion_sam.data.types import ReferringExpression, RefSample

datasets = pytest.importorskip("datasets")


def _png_bytes(arr, mode):
    buf = io.BytesIO()
    Image.fromarray(arr, mode=mode).save(buf, format="PNG")
    return buf.getvalue()


def _mask(h=6, w=8):
    grey = np.zeros((h, w), dtype=np.uint8)
    grey[1:4, 2:6] = 255
    grey[0, 0], grey[0, 1] = 127, 128
    return grey


def _dataset(bad_row=False):
    image = np.arange(6 * 8 * 3, dtype=np.uint8).reshape(6, 8, 3)
    rows = {
        "picture": [{"bytes": _png_bytes(image, "RGB"), "path": None}] * 2,
        "segmentation": [{"bytes": _png_bytes(_mask(), "L"), "path": None}] * 2,
        "caption": ["the left box", "the right box"],
    }
    if bad_row:
        rows["picture"][1] = {"bytes": b"not an image", "path": None}
    features = datasets.Features(
        {"picture": datasets.Image(), "segmentation": datasets.Image(), "caption": datasets.Value("string")}
    )
    return datasets.Dataset.from_dict(rows, features=features)


def test_expressions_from_image_columns():
    reader = HFSegmentation(_dataset(), image_column="picture", mask_column="segmentation", text_column="caption")
    assert len(reader) == 2
    rec = reader[1]
    assert isinstance(rec, ReferringExpression) and rec.sentence == "the right box" and rec.ref_id == "1"
    assert rec.image.shape == (6, 8, 3) and rec.image.dtype == np.uint8
    np.testing.assert_array_equal(rec.mask, _mask() >= 128)
    assert not rec.mask[0, 0] and rec.mask[0, 1]
    samples = HFSegmentation(_dataset(), image_column="picture", mask_column="segmentation", record="sample")
    sample = samples[0]
    assert isinstance(sample, RefSample) and sample.task == "fss" and sample.text is None


def test_split_and_column_validation():
    dd = datasets.DatasetDict({"train": _dataset(), "validation": _dataset()})
    kwargs = {"image_column": "picture", "mask_column": "segmentation", "text_column": "caption"}
    assert len(HFSegmentation(dd, split="validation", **kwargs)) == 2
    with pytest.raises(ValueError, match="split"):
        HFSegmentation(dd, split="test", **kwargs)
    with pytest.raises(ValueError, match="split="):
        HFSegmentation(dd, **kwargs)
    with pytest.raises(ValueError, match="'image'"):
        HFSegmentation(_dataset(), mask_column="segmentation", text_column="caption")
    with pytest.raises(ValueError, match="text_column"):
        HFSegmentation(_dataset(), image_column="picture", mask_column="segmentation")


def test_array_masks_label_maps_and_rows():
    image = np.zeros((4, 5, 3), dtype=np.uint8)
    label = np.zeros((4, 5), dtype=np.uint8)
    label[0, :2], label[2, 3] = 1, 2
    rows = [
        {"image": image, "mask": (label == 1).tolist(), "text": "bool list"},
        {"image": Image.fromarray(image), "mask": label == 2, "text": "bool array"},
        {"image": image, "mask": label, "text": "label map"},
    ]
    reader = HFSegmentation(rows, text_column="text", on_error="skip")
    np.testing.assert_array_equal(reader[0].mask, label == 1)
    np.testing.assert_array_equal(reader[1].mask, label == 2)
    with pytest.raises(DataError, match="row 2.*label map"):
        reader[2]  # values 0..2: ambiguous without mask_value
    picked = HFSegmentation(rows, text_column="text", mask_value=2)
    np.testing.assert_array_equal(picked[2].mask, label == 2)
    rows.append({"image": image, "mask": np.zeros((3, 5), dtype=bool), "text": "wrong size"})
    with pytest.raises(DataError, match="row 3.*differs"):
        HFSegmentation(rows, text_column="text")[3]
    rows.append({"image": image, "mask": None, "text": "no mask"})
    with pytest.raises(DataError, match="row 4.*missing mask"):
        HFSegmentation(rows, text_column="text")[4]


def test_corrupt_image_row():
    ds = _dataset(bad_row=True)
    kwargs = {"image_column": "picture", "mask_column": "segmentation", "text_column": "caption"}
    with pytest.raises(DataError, match="row 1"):
        HFSegmentation(ds, **kwargs)[1]
    reader = HFSegmentation(ds, on_error="skip", **kwargs)
    with pytest.warns(DataWarning, match="row 1"):
        assert [r.sentence for r in reader] == ["the left box"]
    with pytest.warns(DataWarning, match="row 1"):
        assert len(HFSegmentation(ds, on_error="skip", verify=True, **kwargs)) == 1
