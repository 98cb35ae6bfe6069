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


def test_any_local_hugging_face_folder(tmp_path):
    """A small random BERT saved to a folder loads through the same path as MiniLM."""
    import shutil

    from transformers import BertConfig, BertModel

    from univid.text import resolve_encoder_path

    config = BertConfig(
        hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64
    )
    BertModel(config).save_pretrained(tmp_path)
    minilm = resolve_encoder_path("minilm")
    for name in ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json"):
        shutil.copy(minilm / name, tmp_path / name)
    encoder = TextEncoder(str(tmp_path), max_length=4)
    states, mask = encoder.encode(["a red circle moving right and far away", "hi"])
    assert encoder.dim == 32 and states.shape == (2, 4, 32)
    assert mask.sum(1).tolist() == [4, 3]  # truncated to max_length; [CLS] hi [SEP]
