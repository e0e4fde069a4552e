"""The embedded tokenizer: one token per digit, "\\n\\n" one token, exact round trips, stable reloads."""

from __future__ import annotations

import pytest
from transformers import AutoTokenizer

from trapo.data import Example, boundary_token_ids, encode_prompt, encode_response
from trapo_lab.models import build_tokenizer, tiny_config
from trapo_lab.pretrain import encode_pairs
from trapo_lab.tasks import build_splits


@pytest.fixture(scope="module")
def tok():
    return build_tokenizer()


@pytest.fixture(scope="module")
def splits():
    return build_splits(n_train=300, n_val_per_tier=30, n_test_per_tier=30, n_skill_val=30, n_skill_test=30)


def _texts(splits):
    for examples in splits.values():
        for ex in examples:
            yield ex.prompt_text
            yield from ex.expert_solutions
            yield ex.meta["native_solution"]


def test_vocabulary_layout(tok):
    assert len(tok) == 256 + 6 + 5  # bytes, merges building "\n\n" and "\boxed", special tokens
    assert [tok(str(d), add_special_tokens=False)["input_ids"] for d in range(10)] == [[48 + d] for d in range(10)]
    assert tok.convert_ids_to_tokens(tok("\n\n", add_special_tokens=False)["input_ids"]) == ["ĊĊ"]
    assert len(tok("\\boxed", add_special_tokens=False)["input_ids"]) == 1
    assert tok.eos_token == "<|endoftext|>" and tok.pad_token == "<|pad|>"
    assert tok.eos_token_id != tok.pad_token_id


def test_tokenization_of_a_solution_by_hand(tok):
    ids = tok("12+3=15\n\n\\boxed{15}", add_special_tokens=False)["input_ids"]
    tokens = tok.convert_ids_to_tokens(ids)
    assert tokens == ["1", "2", "+", "3", "=", "1", "5", "ĊĊ", "\\boxed", "{", "1", "5", "}"]


def test_round_trip_of_every_prompt_and_solution(tok, splits):
    n = 0
    for text in _texts(splits):
        ids = tok(text, add_special_tokens=False)["input_ids"]
        assert tok.decode(ids) == text
        digits = sum(c.isdigit() for c in text)
        assert sum(tok.convert_ids_to_tokens(i).isdigit() for i in ids) == digits  # one token per digit
        n += 1
    assert n > 1000
    odd = "a b  c\n\n\nx\té ∑ 😀"
    assert tok.decode(tok(odd, add_special_tokens=False)["input_ids"]) == odd


def test_paragraph_boundary_is_one_token(tok):
    boundary = tok.convert_tokens_to_ids("ĊĊ")
    assert boundary_token_ids(tok) == {boundary}
    ids = tok("1+2=3\n\n3+4=7\n\n\\boxed{7}", add_special_tokens=False)["input_ids"]
    assert ids.count(boundary) == 2


def test_chat_template(tok):
    messages = [{"role": "user", "content": "4*5-3"}]
    text = tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    assert text == "<|user|>4*5-3<|assistant|>"
    ex = Example(prompt=messages, answer="17")
    ids = encode_prompt(tok, ex)
    user, assistant = tok.convert_tokens_to_ids(["<|user|>", "<|assistant|>"])
    assert ids == [user, 52, 42, 53, 45, 51, assistant]
    full = tok.apply_chat_template([*messages, {"role": "assistant", "content": "\\boxed{17}"}], tokenize=False)
    assert full == "<|user|>4*5-3<|assistant|>\\boxed{17}<|endoftext|>"
    with pytest.raises(Exception, match="role"):
        tok.apply_chat_template([{"role": "tool", "content": "x"}], tokenize=False)


def test_batched_pretraining_encoding_equals_the_shared_encoders(tok, splits):
    examples = splits["train"][:50] + splits["test_skills"][:10]
    pairs = encode_pairs(tok, [ex.prompt_text for ex in examples], [ex.expert_solutions[0] for ex in examples])
    for ex, (prompt, response) in zip(examples, pairs, strict=True):
        assert prompt == encode_prompt(tok, ex)
        assert response == encode_response(tok, ex.expert_solutions[0])


def test_reload_next_to_a_qwen2_config_keeps_ids(tok, splits, tmp_path):
    # transformers 5 reloads a tokenizer saved next to a qwen2 config as Qwen2Tokenizer, rebuilding its
    # pipeline; the embedded tokenizer is built to survive that unchanged.
    tok.save_pretrained(tmp_path)
    tiny_config(len(tok), eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id).save_pretrained(tmp_path)
    again = AutoTokenizer.from_pretrained(tmp_path)
    assert len(again) == len(tok)
    assert (again.eos_token_id, again.pad_token_id) == (tok.eos_token_id, tok.pad_token_id)
    for text in [*list(_texts(splits))[:400], "a b  c\n\n\nx\té"]:
        assert again(text, add_special_tokens=False)["input_ids"] == tok(text, add_special_tokens=False)["input_ids"]
    ex = splits["test"][0]
    assert encode_prompt(again, ex) == encode_prompt(tok, ex)
    assert boundary_token_ids(again) == boundary_token_ids(tok)


def test_build_tokenizer_is_deterministic_and_validates():
    a, b = build_tokenizer(), build_tokenizer()
    assert a.get_vocab() == b.get_vocab()
    with pytest.raises(ValueError, match="multi_char_tokens"):
        build_tokenizer(multi_char_tokens=("\\boxed",))


def test_tiny_config():
    config = tiny_config(267)
    assert (config.hidden_size, config.num_hidden_layers, config.num_attention_heads) == (128, 4, 4)
    assert config.intermediate_size == 512 and config.tie_word_embeddings
    from transformers import Qwen2ForCausalLM

    n = sum(p.numel() for p in Qwen2ForCausalLM(config).parameters())
    # embeddings 267*128 + 4 layers * (q,k,v,o 4*128*128 + qkv bias 3*128 + MLP 3*128*512 + 2 norms 2*128) + final norm
    assert n == 267 * 128 + 4 * (4 * 128 * 128 + 3 * 128 + 3 * 128 * 512 + 2 * 128) + 128
    with pytest.raises(ValueError, match="vocab_size"):
        tiny_config(0)
    with pytest.raises(ValueError, match="divisible"):
        tiny_config(267, hidden_size=130)
