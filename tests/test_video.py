import numpy as np
import pytest
from PIL import Image

from univid.errors import InputError
from univid.video import check_output_path, save_video


def test_formats(tmp_path):
    video = np.random.default_rng(0).integers(0, 256, (4, 8, 10, 3), dtype=np.uint8)
    save_video(video, tmp_path / "v.npy")
    assert np.array_equal(np.load(tmp_path / "v.npy"), video)
    save_video(video, tmp_path / "v.png", scale=2)
    assert Image.open(tmp_path / "v.png").size == (4 * 10 * 2, 8 * 2)
    save_video(video, tmp_path / "v.gif")
    assert Image.open(tmp_path / "v.gif").n_frames == 4
    save_video(video, tmp_path / "v.mp4")
    import av

    with av.open(str(tmp_path / "v.mp4")) as container:
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    assert len(frames) == 4 and frames[0].shape == (8, 10, 3)


def test_bad_output_paths(tmp_path):
    with pytest.raises(InputError, match="must end in one of"):
        check_output_path(tmp_path / "v.avi")
    with pytest.raises(InputError, match="does not exist"):
        check_output_path(tmp_path / "missing" / "v.gif")
