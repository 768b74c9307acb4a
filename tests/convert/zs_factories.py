"""Tiny PyTorch factories named as ``zs_factories:NAME`` by the convert tests (this folder is put on sys.path)."""

from __future__ import annotations

import torch


class Branchy(torch.nn.Module):
    """Data-dependent control flow: torch.export refuses it; the legacy tracer bakes one branch in."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.sum() > 0:
            return x * 2.0
        return x - 1.0


class ItemShape(torch.nn.Module):
    """The output's size comes from ``.item()``: the legacy tracer folds the input away."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n = int(x.sum().item())
        return torch.arange(n, dtype=torch.float32) * 2.0


class ItemBranch(torch.nn.Module):
    """A ``.item()`` size *and* a branch on it: dynamo fails, legacy folds the input away."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n = int(x.abs().sum().item())
        if n > 3:
            return torch.ones(n) * 2.0
        return torch.zeros(n + 1)


class SmallNet(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 4, 3, padding=1)
        self.head = torch.nn.Linear(4, 5)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        y = torch.relu(self.conv(image)).mean(dim=(2, 3))
        return torch.tanh(self.head(y))


def small_net() -> tuple[torch.nn.Module, torch.Tensor]:
    torch.manual_seed(0)
    return SmallNet().eval(), torch.randn(1, 3, 8, 8)


def small_net_no_inputs() -> torch.nn.Module:
    torch.manual_seed(0)
    return SmallNet().eval()


def branchy() -> tuple[torch.nn.Module, torch.Tensor]:
    return Branchy(), torch.rand(2, 3) + 0.1


def item_shape() -> tuple[torch.nn.Module, torch.Tensor]:
    return ItemShape(), torch.full((2, 3), 1.0)


def item_branch() -> tuple[torch.nn.Module, torch.Tensor]:
    return ItemBranch(), torch.full((2, 3), 1.0)


def not_a_module() -> int:
    return 3
