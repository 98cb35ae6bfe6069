import pytest
import torch

from univid.errors import InputError
from univid.text import TextEncoder


def test_minilm_states_mask_and_cache(text_encoder):
    states, mask = text_encoder.encode(["a red circle moving right", "", "blue box moves up"])
    assert text_encoder.dim == 384
    assert states.shape[0] == 3 and states.shape[2] == 384
    assert mask.dtype == torch.bool
    # [CLS] a red circle moving right [SEP] -> 7 tokens; the empty caption is [CLS] [SEP].
    assert mask.sum(1).tolist()[:2] == [7, 2]
    assert torch.count_nonzero(states[1, 2:]) == 0  # padding is zero
    again, _ = text_encoder.encode(["a red circle moving right"])
    assert torch.equal(again[0], states[0, :7])
    other, _ = text_encoder.encode(["a green circle moving right"])
    assert not torch.allclose(other[0], states[0, :7])


def test_unknown_encoder_folder(tmp_path):
    with pytest.raises(InputError, match="not 'minilm'"):
        TextEncoder(str(tmp_path))
