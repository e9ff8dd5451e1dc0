"""The ``transformer`` family: a pre-norm transformer encoder on images or on tabular rows.

Tokens come from the input's rank:

* an image ``(C, H, W)`` is cut into ``patch_size`` x ``patch_size`` patches, each linearly
  embedded (a conv with stride ``patch_size``, as in ViT, Dosovitskiy et al. 2021), plus a
  learned position embedding;
* a tabular row ``(F,)`` gives one token per feature, ``x_f * W_f + b_f`` (the feature
  tokenizer of FT-Transformer, Gorishniy et al. 2021); each feature has its own ``W_f`` and
  ``b_f``, so no position embedding is needed. The features are the columns as the data
  source hands them over (numeric, standardised).

A learned ``[CLS]`` token is prepended when ``pool: cls``. The tokens pass through the blocks,
each torch's own ``nn.TransformerEncoderLayer`` (``batch_first``, ``norm_first``, GELU; see
:class:`EncoderLayer` for the one change), then
a final LayerNorm; the ``[CLS]`` token (or the mean of all tokens, ``pool: mean``) goes
through dropout and a linear layer.

One width for all blocks: ``width`` is the embedding size of every token in every block
(per-block widths would need projections between blocks); what varies per block is its
heads, its MLP's size (``mlp_ratio`` x ``width``) and its dropout.

FLOPs: :func:`~raynas.trainables.families.count_flops` counts the linear layers, the patch
embedding and the attention's two matmuls (scores and weighted values); softmax, LayerNorm,
GELU and additions are element-wise and not counted, as for every family.

Example:
    >>> arch = {"patch_size": 4, "width": 32, "blocks": [{"heads": 4}, {"heads": 2, "mlp_ratio": 4}]}
    >>> build_transformer(arch, (1, 8, 8), 10)(torch.zeros(2, 1, 8, 8)).shape
    torch.Size([2, 10])
    >>> build_transformer({"blocks": [{"heads": 8}]}, (13,), 3)(torch.zeros(2, 13)).shape
    torch.Size([2, 3])
"""

from __future__ import annotations

import math

import torch
from torch import nn

from raynas.errors import ArchError
from raynas.trainables.families import _Reader, _unfused_attention

__all__ = ["EncoderLayer", "FeatureTokenizer", "PatchEmbedding", "Transformer", "build_transformer"]


class FeatureTokenizer(nn.Module):
    """FT-Transformer's numerical feature tokenizer: ``(N, F)`` -> ``(N, F, width)``, token
    ``f`` being ``x_f * W_f + b_f``."""

    def __init__(self, features: int, width: int):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(features, width))
        self.bias = nn.Parameter(torch.empty(features, width))
        bound = 1 / math.sqrt(width)  # as FT-Transformer's reference implementation (rtdl)
        nn.init.uniform_(self.weight, -bound, bound)
        nn.init.uniform_(self.bias, -bound, bound)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.unsqueeze(-1) * self.weight + self.bias


class PatchEmbedding(nn.Module):
    """ViT's patch embedding: ``(N, C, H, W)`` -> ``(N, H/p * W/p, width)``."""

    def __init__(self, in_channels: int, width: int, patch_size: int):
        super().__init__()
        self.proj = nn.Conv2d(in_channels, width, patch_size, patch_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x).flatten(2).transpose(1, 2)


class EncoderLayer(nn.TransformerEncoderLayer):
    """torch's ``nn.TransformerEncoderLayer``, also after dynamic int8 quantization and under
    TorchScript tracing.

    Two cases run torch's plain path (the same function, unfused) instead of its fused
    inference path: ``raynas compress --quantize int8`` swaps the MLP's linear layers for
    dynamically quantized ones, whose ``weight`` is a method, and torch's check for the fused
    path reads ``weight.device`` of it; and ``torch.jit.trace`` (``raynas export --format
    torchscript``) records the fused path differently on its check run and refuses the trace.
    Both are tested in tests/trainables/test_transformer.py.
    """

    def forward(self, src: torch.Tensor, *args, **kwargs) -> torch.Tensor:
        plain_weights = all(isinstance(m.weight, torch.Tensor) for m in (self.linear1, self.linear2))
        if plain_weights and not torch.jit.is_tracing():
            return super().forward(src, *args, **kwargs)
        with _unfused_attention():
            return super().forward(src, *args, **kwargs)


class Transformer(nn.Module):
    """Tokenizer, optional ``[CLS]`` token and position embedding, encoder blocks, LayerNorm,
    pooling, dropout, linear.

    Args:
        tokenizer: Maps a batch to ``(N, tokens, width)``.
        tokens: Tokens the tokenizer makes.
        width: Embedding size.
        blocks: The encoder blocks, each ``(N, T, width) -> (N, T, width)``.
        num_classes: Output logits.
        pool: ``cls`` (a learned token, prepended) or ``mean`` (the mean over the tokens).
        position: Add a learned position embedding (images; a feature tokenizer needs none).
        dropout: Before the linear layer.
    """

    def __init__(
        self,
        tokenizer: nn.Module,
        tokens: int,
        width: int,
        blocks: list[nn.Module],
        num_classes: int,
        *,
        pool: str = "cls",
        position: bool = True,
        dropout: float = 0.0,
    ):
        super().__init__()
        self.tokenizer = tokenizer
        self.pool = pool
        self.cls_token = nn.Parameter(torch.zeros(1, 1, width)) if pool == "cls" else None
        total = tokens + (pool == "cls")
        if position:
            self.position = nn.Parameter(torch.empty(1, total, width))
            nn.init.trunc_normal_(self.position, std=0.02)  # as ViT
        else:
            self.position = None
        self.blocks = nn.Sequential(*blocks)
        self.norm = nn.LayerNorm(width)
        head: list[nn.Module] = [nn.Dropout(dropout)] if dropout > 0 else []
        self.head = nn.Sequential(*head, nn.Linear(width, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens = self.tokenizer(x)
        if self.cls_token is not None:
            tokens = torch.cat([self.cls_token.expand(tokens.shape[0], -1, -1), tokens], dim=1)
        if self.position is not None:
            tokens = tokens + self.position
        tokens = self.norm(self.blocks(tokens))
        pooled = tokens[:, 0] if self.pool == "cls" else tokens.mean(dim=1)
        return self.head(pooled)


def build_transformer(arch: dict, input_shape: tuple, num_classes: int) -> nn.Module:
    """A transformer encoder on images ``(C, H, W)`` or tabular rows ``(F,)`` (see the module
    docstring).

    Arch keys:
        blocks (required): list of ``{heads (int, default 4; must divide width), mlp_ratio
            (positive number, default 2: the MLP has round(mlp_ratio * width) hidden units),
            dropout (float in [0, 1), default 0: in attention and MLP)}``, one per encoder
            block (what a searched repeat block yields).
        width (int, default 64): the embedding size, the same in every block.
        patch_size (int, default 4; images only): must divide the image's height and width.
        pool (``cls`` or ``mean``, default ``cls``): what the head reads.
        dropout (float in [0, 1), default 0): before the linear layer.

    Raises:
        ArchError: input of another rank (``arch``), heads not dividing the width
            (``arch.blocks.N.heads``), a patch size not dividing the image or given for a
            table (``arch.patch_size``, misfit), a bad value (its key path).
    """
    r = _Reader(arch, "arch", ["width", "blocks", "patch_size", "pool", "dropout"])
    if len(input_shape) not in (1, 3):
        raise ArchError(
            "arch",
            "family 'transformer' needs image input (C, H, W) or tabular rows (F,), got "
            f"input_shape {tuple(input_shape)}",
        )
    width = r.integer("width", 64)
    pool = r.choice("pool", ["cls", "mean"], "cls")
    dropout = r.dropout()
    blocks: list[nn.Module] = []
    for path, item in r.items("blocks"):
        b = _Reader(item, path, ["heads", "mlp_ratio", "dropout"])
        heads = b.integer("heads", 4)
        if width % heads:
            raise ArchError(
                f"{path}.heads",
                f"must divide the width (arch.width = {width}), got {heads}; each head attends "
                f"over width / heads dimensions",
            )
        hidden = max(1, round(b.number("mlp_ratio", 2) * width))
        # GELU as a module, not the string "gelu": hooks see it (the naswot proxy reads its
        # codes there) and torch still takes its fused inference path.
        blocks.append(
            EncoderLayer(
                width, heads, hidden, b.dropout(), activation=nn.GELU(), batch_first=True,
                norm_first=True,
            )
        )
    if len(input_shape) == 3:
        channels, h, w = input_shape
        patch = r.integer("patch_size", 4)
        if h % patch or w % patch:
            raise ArchError(
                "arch.patch_size",
                f"must divide the image's height and width ({h}x{w}), got {patch}",
                misfit=True,
            )
        tokenizer: nn.Module = PatchEmbedding(channels, width, patch)
        tokens = (h // patch) * (w // patch)
    else:
        if r.has("patch_size"):
            raise ArchError(
                "arch.patch_size",
                f"only for image input; tabular rows (input_shape {tuple(input_shape)}) are "
                "tokenized one feature per token",
                misfit=True,
            )
        tokens = input_shape[0]
        tokenizer = FeatureTokenizer(tokens, width)
    return Transformer(
        tokenizer, tokens, width, blocks, num_classes, pool=pool,
        position=len(input_shape) == 3, dropout=dropout,
    )
