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


@pytest.mark.parametrize("kind", ["t5", "clip"])
def test_t5_and_clip_folders(tmp_path, kind):
    """T5 loads as its encoder only and CLIP as its text tower; states match the raw model."""
    from tiny_text import save_tiny_clip, save_tiny_t5

    folder = (save_tiny_t5 if kind == "t5" else save_tiny_clip)(tmp_path / kind)
    encoder = TextEncoder(str(folder), max_length=12)
    assert type(encoder.model).__name__ == ("T5EncoderModel" if kind == "t5" else "CLIPTextModel")
    assert encoder.dim == 32 and encoder.describe()["class"] == type(encoder.model).__name__
    states, mask = encoder.encode(["a red circle moving right", "hi"])
    tokens = encoder.tokenizer(["a red circle moving right"], return_tensors="pt")
    with torch.no_grad():
        raw = encoder.model(**tokens).last_hidden_state[0]
    n = int(mask[0].sum())
    assert n == tokens["input_ids"].shape[1] == 7
    torch.testing.assert_close(states[0, :n], raw, rtol=1e-5, atol=1e-5)


def test_padding_to_max_length(tmp_path):
    from tiny_text import save_tiny_t5

    encoder = TextEncoder(str(save_tiny_t5(tmp_path / "t5")), max_length=10, padding="max_length")
    states, mask = encoder.encode(["hi", "a red circle"])
    assert states.shape == (2, 10, 32)
    assert mask.sum(1).tolist() == [3, 5]
    assert torch.count_nonzero(states[0, 3:]) == 0
    with pytest.raises(InputError, match="padding"):
        TextEncoder(str(tmp_path / "t5"), padding="left")


def test_pickled_only_encoder_is_refused(tmp_path):
    """A folder whose weights are only a pickle is refused with one line."""
    from tiny_text import save_tiny_t5

    folder = save_tiny_t5(tmp_path / "t5")
    (folder / "model.safetensors").rename(folder / "pytorch_model.bin")
    with pytest.raises(InputError, match="cannot load the text encoder"):
        TextEncoder(str(folder))
