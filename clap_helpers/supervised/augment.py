"""SpecAugment for log-mel training batches.

:class:`SpecAugment` (training batches only): a random crop of ``crop_fraction`` of the frames
(eval uses whole clips: every model ends in global average pooling), then ``time_masks`` time bands
and ``freq_masks`` mel bands per clip, each of a uniform random width in [0, max], set to ``fill``.
No flips. Seeded.

Used by: notebook 09_cnn_baseline.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["SpecAugment"]


class SpecAugment(nn.Module):
    """Random time crop + time and frequency masking of spectrogram batches (training only).

    Input (B, C, frames, mels). In training mode: each clip gets a random crop of
    ``round(crop_fraction * frames)`` consecutive frames (output (B, C, crop, mels); 1.0 = no
    crop), then ``time_masks`` bands of ``w ~ U{0..max_time_width}`` frames and ``freq_masks``
    bands of ``w ~ U{0..max_freq_width}`` mel bins, at uniform random positions, all channels set
    to ``fill`` (bands may overlap). In eval mode the input is returned unchanged. Random numbers
    come from the module's own CPU generator (``seed``; :meth:`reseed`), so results do not depend
    on torch's global RNG or the device. Used by: :func:`train_folds` (notebook 09_cnn_baseline).
    """

    def __init__(
        self,
        crop_fraction: float = 0.9,
        time_masks: int = 2,
        max_time_width: int = 40,
        freq_masks: int = 2,
        max_freq_width: int = 8,
        fill: float = 0.0,
        seed: int = 0,
    ) -> None:
        super().__init__()
        if not 0.0 < crop_fraction <= 1.0:
            raise ValueError(f"crop_fraction must be in (0, 1], got {crop_fraction}")
        self.crop_fraction = float(crop_fraction)
        self.time_masks, self.max_time_width = int(time_masks), int(max_time_width)
        self.freq_masks, self.max_freq_width = int(freq_masks), int(max_freq_width)
        self.fill = float(fill)
        self.generator = torch.Generator()
        self.reseed(seed)

    def reseed(self, seed: int) -> None:
        """Restart the random stream at ``seed``."""
        self.seed = int(seed)
        self.generator.manual_seed(self.seed)

    def extra_repr(self) -> str:
        return (
            f"crop_fraction={self.crop_fraction}, time_masks={self.time_masks}x"
            f"{self.max_time_width}, freq_masks={self.freq_masks}x{self.max_freq_width}, "
            f"fill={self.fill}, seed={self.seed}"
        )

    def crop_length(self, frames: int) -> int:
        """Frames kept by the training crop of a ``frames``-frame input."""
        return min(frames, max(1, round(self.crop_fraction * frames)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training:
            return x
        if x.ndim != 4:
            raise ValueError(f"expected (B, C, frames, mels), got shape {tuple(x.shape)}")
        return self.mask(self.crop(x))

    def crop(self, x: torch.Tensor) -> torch.Tensor:
        """Random crop in time: (B, C, T, M) -> (B, C, crop_length(T), M)."""
        b, c, t, m = x.shape
        length = self.crop_length(t)
        if length == t:
            return x
        offsets = torch.randint(0, t - length + 1, (b,), generator=self.generator)
        frames = (offsets[:, None] + torch.arange(length)).to(x.device)  # (B, L)
        return x.gather(2, frames[:, None, :, None].expand(b, c, length, m))

    def _bands(self, batch: int, size: int, count: int, max_width: int) -> torch.Tensor:
        """(batch, size) bool: union of ``count`` random bands of width 0..max_width per row."""
        if count <= 0 or max_width <= 0:
            return torch.zeros((batch, size), dtype=torch.bool)
        width = torch.randint(0, min(max_width, size) + 1, (batch, count), generator=self.generator)
        u = torch.rand((batch, count), generator=self.generator)
        start = (u * (size - width + 1)).long()  # in [0, size - width]
        pos = torch.arange(size)
        inside = (pos >= start[..., None]) & (pos < (start + width)[..., None])
        return inside.any(dim=1)

    def mask(self, x: torch.Tensor) -> torch.Tensor:
        """Time and frequency masking of (B, C, T, M); returns a new tensor."""
        b, _, t, m = x.shape
        time = self._bands(b, t, self.time_masks, self.max_time_width).to(x.device)
        freq = self._bands(b, m, self.freq_masks, self.max_freq_width).to(x.device)
        return x.masked_fill(time[:, None, :, None] | freq[:, None, None, :], self.fill)
