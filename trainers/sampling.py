"""Text from a language-model member: autoregressive sampling from an exported model."""
import torch

from trainers.export import ExportedModel


@torch.no_grad()
def generate(model: ExportedModel, prompt_ids: list[int], *, tokens: int, temperature: float = 1.0,
             seed: int = 0) -> list[int]:
    """`tokens` new ids after `prompt_ids`, each drawn from softmax(logits / temperature)
    (temperature 0: the most likely id) by a private generator seeded with `seed`. The
    context is the last max_seq_len ids (the model's learned positions)."""
    if not model.causal:
        raise ValueError("sampling needs a language model (causal); this member is a classifier")
    generator = torch.Generator().manual_seed(seed)
    ids = list(prompt_ids)
    for _ in range(tokens):
        context_BT = torch.tensor([ids[-model.max_seq_len:]], dtype=torch.long)
        logits_V = model(context_BT)[0, -1].float()
        if temperature == 0:
            ids.append(int(logits_V.argmax()))
        else:
            probs_V = torch.softmax(logits_V / temperature, dim=-1)
            ids.append(int(torch.multinomial(probs_V, 1, generator=generator)))
    return ids[len(prompt_ids):]
