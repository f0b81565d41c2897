"""Build a tiny random-weight Llama with a locally trained tokenizer (no download).

Run with an interpreter that has torch and transformers (the vLLM environment), so torch
stays out of the harness's environment: `python tests/live/tiny_llama.py OUT_DIR [SEED]`.
"""

from __future__ import annotations

import sys
from pathlib import Path

VOCAB_SIZE = 512


def build(out_dir: Path, seed: int = 0) -> Path:
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    out_dir.mkdir(parents=True, exist_ok=True)
    words = [f"w{i}" for i in range(VOCAB_SIZE)] + ["a", "tok", "hello", "world"]
    tokenizer = Tokenizer(models.WordLevel(unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    trainer = trainers.WordLevelTrainer(vocab_size=VOCAB_SIZE,
                                        special_tokens=["<unk>", "<s>", "</s>", "<pad>"])
    tokenizer.train_from_iterator([" ".join(words)] * 4, trainer=trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tokenizer, unk_token="<unk>", bos_token="<s>",
                                   eos_token="</s>", pad_token="<pad>")
    fast.model_max_length = 4096
    fast.chat_template = "{% for m in messages %}{{ m['content'] }} {% endfor %}"  # chat API: plain text
    fast.save_pretrained(out_dir)

    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=tokenizer.get_vocab_size(), hidden_size=128, intermediate_size=256,
                         num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=2,
                         max_position_embeddings=4096, bos_token_id=1, eos_token_id=2,
                         pad_token_id=3, torch_dtype="float32")
    LlamaForCausalLM(config).save_pretrained(out_dir, safe_serialization=True)
    return out_dir


if __name__ == "__main__":
    build(Path(sys.argv[1]), int(sys.argv[2]) if len(sys.argv) > 2 else 0)
