"""Dropout off for preference training (`train/dropout.py`): every kind of dropout a Hugging Face model has."""

from __future__ import annotations

import torch

from rlhfkit.train.dropout import disable_dropout


def leaky_llama():
    """A one-layer random Llama whose attention drops half its weights while training."""
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(vocab_size=64, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                         num_attention_heads=2, num_key_value_heads=2, attention_dropout=0.5)  # fmt: skip
    return LlamaForCausalLM(config)


def test_disables_encoder_dropout_modules_and_decoder_attention_rates():
    from transformers import BertConfig, BertForSequenceClassification

    torch.manual_seed(0)
    bert = BertForSequenceClassification(
        BertConfig(
            vocab_size=64,
            hidden_size=16,
            num_hidden_layers=2,
            num_attention_heads=2,
            intermediate_size=32,
            num_labels=1,
            hidden_dropout_prob=0.3,
            attention_probs_dropout_prob=0.3,
        )
    ).train()
    ids = torch.randint(0, 64, (4, 12))
    assert not torch.equal(bert(ids).logits, bert(ids).logits)  # dropout draws new masks each call
    assert disable_dropout(bert) > 0
    assert torch.equal(bert(ids).logits, bert(ids).logits)
    assert torch.allclose(bert(ids).logits, bert.eval()(ids).logits, atol=1e-6)  # train mode = eval mode now
    assert bert.config.hidden_dropout_prob == 0.3  # the config is left for whoever trains it next

    llama = leaky_llama().train()
    assert not torch.equal(llama(ids).logits, llama(ids).logits)
    assert disable_dropout(llama) == 1
    assert torch.equal(llama(ids).logits, llama(ids).logits)
    assert disable_dropout(llama) == 0  # nothing left to turn off


def test_leaves_the_adapters_own_dropout_to_the_user():
    from peft import LoraConfig, get_peft_model

    llama = leaky_llama()
    model = get_peft_model(llama, LoraConfig(r=4, lora_dropout=0.1, target_modules=["q_proj", "v_proj"]))
    assert disable_dropout(model) == 1  # the attention's rate
    adapters = [
        m.p for n, m in model.named_modules() if isinstance(m, torch.nn.Dropout) and "lora_dropout" in n
    ]
    assert adapters == [0.1, 0.1]  # `--lora-dropout` was asked for explicitly
