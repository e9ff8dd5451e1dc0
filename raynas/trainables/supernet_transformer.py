"""The weight-sharing supernet of the ``transformer`` family (single-path one-shot, as in
:mod:`raynas.trainables.supernet` for cells and :mod:`raynas.trainables.supernet_mbconv`).

What shares weights (the space's rules: :func:`raynas.search.oneshot.transformer_layout`); the
supernet holds the family's network of the largest candidates, and a path runs slices of it:

* **width** (one for all blocks): width ``w`` is the first ``w`` features of the largest, in
  the patch embedding (its first ``w`` output channels) or the feature tokenizer, the
  position embedding, the ``[CLS]`` token, every block's attention projections (query, key
  and value each the top-left ``w x w`` of its own part of the largest input projection; the
  output projection's ``w x w``) and MLP (the first ``w`` input features of its first linear
  layer, the first ``w`` outputs of its second), every LayerNorm (its first ``w`` weights and
  biases, normalising over the ``w`` features), the final LayerNorm and the head's first
  ``w`` inputs.
* **heads**: no weights of their own. Under weight sharing a block's query, key and value
  projections are the same sliced matrices whatever its heads; only their split into
  ``heads`` heads of ``w / heads`` features (and the scaling of the scores) changes.
* **mlp_ratio**: each block holds the hidden units of its largest ratio at the largest width;
  ratio ``r`` at width ``w`` runs the first ``max(1, round(r * w))`` of them (as the family).
* **depth**: ``blocks: {repeat: {min: a, max: b}, block}`` holds ``b`` blocks; a path with
  ``n`` blocks runs the first ``n``.
* **dropout** (the head's, and each block's in attention and MLP): no weights.

``patch_size`` and ``pool`` are constants of the space. The blocks compute torch's
``nn.TransformerEncoderLayer`` (pre-norm, GELU) functionally with the sliced weights
(``F.linear``, ``F.layer_norm``, ``F.scaled_dot_product_attention``): every path, in eval mode,
computes what :func:`~raynas.trainables.transformer.build_transformer` of its arch computes
with the weights :meth:`TransformerSupernet.path_state_dict` copies into it, to float tolerance
(tests/trainables/test_supernet_transformer.py).

Example:
    >>> space = {"patch_size": 4, "width": {"choice": [8, 16]}, "blocks": {
    ...     "repeat": {"min": 1, "max": 2}, "block": {"heads": {"choice": [1, 2]}, "mlp_ratio": {"choice": [1, 2]}}}}
    >>> net = TransformerSupernet(space, (1, 8, 8), 10)
    >>> net.set_arch({"patch_size": 4, "width": 8, "blocks": [{"heads": 2, "mlp_ratio": 1}]})
    >>> net.eval()(torch.zeros(2, 1, 8, 8)).shape
    torch.Size([2, 10])
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from raynas.search.oneshot import (
    TRANSFORMER_BLOCK_DEFAULTS,
    TRANSFORMER_CONSTANTS,
    TRANSFORMER_DEFAULTS,
    transformer_layout,
)
from raynas.trainables.supernet_paths import PathSampling, check_arch, check_constants, path_items, pick
from raynas.trainables.transformer import PatchEmbedding, build_transformer

__all__ = ["TransformerSupernet"]


def _hidden(ratio: float, width: int) -> int:
    """The MLP's hidden units, as build_transformer computes them."""
    return max(1, round(ratio * width))


class TransformerSupernet(PathSampling, nn.Module):
    """Every path of a transformer space in one network of shared, sliced weights.

    Its modules are those of the family's network of the largest path (the widest, deepest,
    each block's largest MLP; no head dropout module: dropout runs functionally), under the
    same names, so :meth:`path_state_dict` slices each tensor of its own state dict.

    Args:
        arch_space: The space's ``arch`` (checked by :func:`~raynas.search.oneshot.transformer_layout`).
        input_shape, num_classes: As for a family.

    Attributes:
        sampler: Called before every forward pass in training mode for the path to run (an
            arch dict); ``None`` runs the path last set.
        layout: The :class:`~raynas.search.oneshot.TransformerLayout` it holds.

    Raises:
        ConfigError: A space a supernet cannot hold (with its key path).
        ArchError: The constants do not build for the data (a patch size that does not divide
            the image, a patch size for tabular rows, input of another rank).
    """

    def __init__(self, arch_space: Mapping[str, Any], input_shape: tuple, num_classes: int):
        super().__init__()
        self._init_layout(transformer_layout(arch_space))
        # The family's network of the largest path holds every weight (and checks the
        # constants against the data: its ArchError names the key, as for any trial). Its
        # head dropout is left out (0): dropout has no weights and would shift the head's name.
        largest = build_transformer({**self.largest_path(), "dropout": 0.0}, tuple(input_shape), num_classes)
        self.tokenizer = largest.tokenizer
        self.pool = largest.pool
        self.cls_token = largest.cls_token
        self.position = largest.position
        self.blocks = largest.blocks
        self.norm = largest.norm
        self.head = largest.head
        self.max_width = max(self.layout.widths)
        # The active path: width, head dropout, and per block (heads, hidden units, dropout).
        self.width, self.dropout = self.max_width, 0.0
        self.active: list[tuple[int, int, float]] = []
        self._path: dict = {}
        self.set_arch(self._first_path())

    # -- paths ----------------------------------------------------------------------------------

    def _first_path(self) -> dict:
        layout = self.layout
        blocks = [{"heads": s.heads[0], "mlp_ratio": s.mlp_ratios[0], "dropout": s.dropouts[0]}
                  for s in layout.slots[:max(layout.depths)]]
        return {**self.constants, "width": layout.widths[0], "dropout": layout.dropouts[0], "blocks": blocks}

    def largest_path(self) -> dict:
        """The path of the most activations: the widest and deepest, each block with its most
        heads (the most attention scores), its largest MLP ratio and dropout (what a memory
        estimate traces)."""
        layout = self.layout
        blocks = [{"heads": max(s.heads), "mlp_ratio": max(s.mlp_ratios), "dropout": max(s.dropouts)}
                  for s in layout.slots[:max(layout.depths)]]
        return {**self.constants, "width": max(layout.widths), "dropout": max(layout.dropouts), "blocks": blocks}

    def set_arch(self, arch: Mapping[str, Any]) -> None:
        """Selects the path of ``arch`` (a full arch dict of the space; a key it leaves out
        takes the family's default).

        Raises:
            ArchError: A value that is not a candidate of the supernet (with its key path).
        """
        check_arch(arch, (*TRANSFORMER_CONSTANTS, *TRANSFORMER_DEFAULTS, "blocks"))
        check_constants(arch, self.constants, TRANSFORMER_CONSTANTS)
        layout = self.layout
        width = int(pick(arch.get("width", TRANSFORMER_DEFAULTS["width"]), layout.widths, "arch.width", "widths"))
        dropout = float(pick(arch.get("dropout", TRANSFORMER_DEFAULTS["dropout"]), layout.dropouts, "arch.dropout",
                             "dropouts"))
        blocks = path_items(arch.get("blocks"), layout.depths, "arch.blocks", "block", TRANSFORMER_BLOCK_DEFAULTS)
        active, normal = [], []
        for slot, (path, block) in zip(layout.slots, blocks):
            values = [pick(block.get(key, TRANSFORMER_BLOCK_DEFAULTS[key]), options, f"{path}.{key}", f"block's {key}")
                      for key, options in (("heads", slot.heads), ("mlp_ratio", slot.mlp_ratios),
                                           ("dropout", slot.dropouts))]
            heads, ratio, drop = int(values[0]), values[1], float(values[2])
            active.append((heads, _hidden(ratio, width), drop))
            normal.append({"heads": heads, "mlp_ratio": ratio, "dropout": drop})
        self.width, self.dropout, self.active = width, dropout, active
        self._path = {**self.constants, "width": width, "dropout": dropout, "blocks": normal}

    def _draw(self, rng: random.Random) -> dict:
        """A path with the width, the head's dropout, the depth and each block's heads, MLP
        ratio and dropout drawn from their candidates (:meth:`draw_uniform`)."""
        layout = self.layout
        width, dropout = rng.choice(layout.widths), rng.choice(layout.dropouts)
        blocks = [{"heads": rng.choice(s.heads), "mlp_ratio": rng.choice(s.mlp_ratios),
                   "dropout": rng.choice(s.dropouts)} for s in layout.slots[:rng.choice(layout.depths)]]
        return {**self.constants, "width": width, "dropout": dropout, "blocks": blocks}

    def path(self) -> dict:
        """The arch dict of the active path (every key explicit)."""
        return {**self._path, "blocks": [dict(block) for block in self._path["blocks"]]}

    # -- running and copying a path -------------------------------------------------------------

    def _tokens(self, x: torch.Tensor) -> torch.Tensor:
        w = self.width
        if isinstance(self.tokenizer, PatchEmbedding):
            conv = self.tokenizer.proj
            return F.conv2d(x, conv.weight[:w], conv.bias[:w], conv.stride).flatten(2).transpose(1, 2)
        return x.unsqueeze(-1) * self.tokenizer.weight[:, :w] + self.tokenizer.bias[:, :w]

    def _block(self, layer: nn.TransformerEncoderLayer, x: torch.Tensor, heads: int, hidden: int,
               p: float) -> torch.Tensor:
        """``layer`` (pre-norm) on its first ``x.shape[-1]`` features, ``heads`` heads and
        ``hidden`` MLP units, as ``nn.TransformerEncoderLayer.forward`` computes it."""
        n, t, w = x.shape
        full, attn = self.max_width, layer.self_attn
        p = p if self.training else 0.0
        h = F.layer_norm(x, (w,), layer.norm1.weight[:w], layer.norm1.bias[:w], layer.norm1.eps)
        # The input projection stacks query, key and value, each full x full: slice each part.
        q, k, v = (F.linear(h, attn.in_proj_weight[i * full:i * full + w, :w], attn.in_proj_bias[i * full:i * full + w])
                   .view(n, t, heads, w // heads).transpose(1, 2) for i in range(3))
        a = F.scaled_dot_product_attention(q, k, v, dropout_p=p).transpose(1, 2).reshape(n, t, w)
        a = F.linear(a, attn.out_proj.weight[:w, :w], attn.out_proj.bias[:w])
        x = x + F.dropout(a, p, self.training)
        h = F.layer_norm(x, (w,), layer.norm2.weight[:w], layer.norm2.bias[:w], layer.norm2.eps)
        h = F.dropout(F.gelu(F.linear(h, layer.linear1.weight[:hidden, :w], layer.linear1.bias[:hidden])), p,
                      self.training)
        h = F.linear(h, layer.linear2.weight[:w, :hidden], layer.linear2.bias[:w])
        return x + F.dropout(h, p, self.training)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._follow_sampler()
        w = self.width
        tokens = self._tokens(x)
        if self.cls_token is not None:
            tokens = torch.cat([self.cls_token[..., :w].expand(tokens.shape[0], -1, -1), tokens], dim=1)
        if self.position is not None:
            tokens = tokens + self.position[..., :w]
        for layer, (heads, hidden, p) in zip(self.blocks, self.active):
            tokens = self._block(layer, tokens, heads, hidden, p)
        tokens = F.layer_norm(tokens, (w,), self.norm.weight[:w], self.norm.bias[:w], self.norm.eps)
        pooled = tokens[:, 0] if self.pool == "cls" else tokens.mean(dim=1)
        pooled = F.dropout(pooled, self.dropout, self.training)
        linear = self.head[-1]
        return F.linear(pooled, linear.weight[:, :w], linear.bias)

    def path_state_dict(self) -> dict[str, torch.Tensor]:
        """The active path's weights (sliced), named as in ``build_transformer(self.path(), ...)``'s
        state dict."""
        w, full, depth = self.width, self.max_width, len(self.active)
        out: dict[str, torch.Tensor] = {}
        for name, t in self.state_dict().items():
            if name == "draws":
                continue
            if name.startswith("blocks."):
                _, index, rest = name.split(".", 2)
                if int(index) >= depth:
                    continue  # a block the path does not run
                hidden = self.active[int(index)][1]
                if rest in ("self_attn.in_proj_weight", "self_attn.in_proj_bias"):
                    t = torch.cat([t[i * full:i * full + w, :w] if t.dim() == 2 else t[i * full:i * full + w]
                                   for i in range(3)])
                elif rest == "self_attn.out_proj.weight":
                    t = t[:w, :w]
                elif rest == "linear1.weight":
                    t = t[:hidden, :w]
                elif rest == "linear1.bias":
                    t = t[:hidden]
                elif rest == "linear2.weight":
                    t = t[:w, :hidden]
                else:  # out_proj.bias, linear2.bias, norm1, norm2: one value per feature
                    t = t[:w]
            elif name.startswith("head."):
                # The family puts a dropout module before the linear layer when dropout > 0.
                name = f"head.{int(self.dropout > 0)}.{name.rsplit('.', 1)[1]}"
                t = t[:, :w] if t.dim() == 2 else t
            elif name in ("tokenizer.weight", "tokenizer.bias", "cls_token", "position"):
                t = t[..., :w]
            else:  # tokenizer.proj (output channels first), norm
                t = t[:w]
            out[name] = t
        return out

    def extra_repr(self) -> str:
        return f"width={self.width}, blocks={[(h, m) for h, m, _ in self.active]}"
