import pytest
from fixtures_layouts import write_mose

from unifusion_sam.data.readers import MOSE, materialize


def test_indexing_and_policy_arguments(tmp_path):
    write_mose(tmp_path, "valid")
    reader = MOSE(tmp_path, "valid")
    assert reader[-1].name == reader[len(reader) - 1].name == "m2"
    with pytest.raises(IndexError):
        reader[2]
    with pytest.raises(TypeError):
        reader["m1"]
    with pytest.raises(ValueError, match="on_error"):
        MOSE(tmp_path, "valid", on_error="ignore")
    with pytest.raises(TypeError, match="verify"):
        MOSE(tmp_path, "valid", verify="yes")
    with pytest.raises(TypeError, match="materialize"):
        materialize({"image": None})
    assert len(MOSE(tmp_path, "valid", verify=True)) == 2
