"""Networks for the end-to-end steps, written inline so the benchmark does not depend on
``fastgen.models``: the 784-400-20 MLP VAE of the PyTorch VAE example, DCGAN-sized
WGAN generators/critics at 28x28 (1 channel) and 64x64 (3 channels), and the WGAN-GP
critic at 28x28 (layer norm instead of batch norm: the penalty is per sample)."""
from __future__ import annotations

import torch
from torch import nn


class MLPVAE(nn.Module):
    """784-400-20 encoder, 20-400-784 decoder returning Bernoulli logits."""

    def __init__(self, x_dim: int = 784, hidden: int = 400, z_dim: int = 20):
        super().__init__()
        self.fc1 = nn.Linear(x_dim, hidden)
        self.fc_mu = nn.Linear(hidden, z_dim)
        self.fc_logvar = nn.Linear(hidden, z_dim)
        self.fc3 = nn.Linear(z_dim, hidden)
        self.fc4 = nn.Linear(hidden, x_dim)

    def encode(self, x):
        h = torch.relu(self.fc1(x))
        return self.fc_mu(h), self.fc_logvar(h)

    def decode(self, z):
        return self.fc4(torch.relu(self.fc3(z)))


class DCGANCritic28(nn.Module):
    """28x28x1 DCGAN critic: 9 parameter tensors (conv bias on the first layer only)."""

    label = "DCGAN critic 28x28"

    def __init__(self, nc: int = 1, ndf: int = 64):
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(nc, ndf, 4, 2, 1), nn.LeakyReLU(0.2, inplace=True),                # 14x14
            nn.Conv2d(ndf, ndf * 2, 4, 2, 1, bias=False), nn.BatchNorm2d(ndf * 2),
            nn.LeakyReLU(0.2, inplace=True),                                             # 7x7
            nn.Conv2d(ndf * 2, ndf * 4, 3, 2, 1, bias=False), nn.BatchNorm2d(ndf * 4),
            nn.LeakyReLU(0.2, inplace=True),                                             # 4x4
            nn.Conv2d(ndf * 4, 1, 4, 1, 0, bias=False),                                  # 1x1
        )

    def forward(self, x):
        return self.net(x).flatten(1)


class WGANGPCritic28(nn.Module):
    """28x28x1 DCGAN critic with layer normalization (WGAN-GP: no batch norm in the critic)."""

    label = "WGAN-GP critic 28x28"

    def __init__(self, nc: int = 1, ndf: int = 64):
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(nc, ndf, 4, 2, 1), nn.LeakyReLU(0.2),                                # 14x14
            nn.Conv2d(ndf, ndf * 2, 4, 2, 1), nn.LayerNorm([ndf * 2, 7, 7]), nn.LeakyReLU(0.2),  # 7x7
            nn.Conv2d(ndf * 2, ndf * 4, 3, 2, 1), nn.LayerNorm([ndf * 4, 4, 4]), nn.LeakyReLU(0.2),  # 4x4
            nn.Conv2d(ndf * 4, 1, 4, 1, 0),                                              # 1x1
        )

    def forward(self, x):
        return self.net(x).flatten(1)


class DCGANGenerator28(nn.Module):
    def __init__(self, nz: int = 100, nc: int = 1, ngf: int = 64):
        super().__init__()
        self.nz = nz
        self.net = nn.Sequential(
            nn.ConvTranspose2d(nz, ngf * 4, 7, 1, 0, bias=False), nn.BatchNorm2d(ngf * 4),
            nn.ReLU(True),                                                               # 7x7
            nn.ConvTranspose2d(ngf * 4, ngf * 2, 4, 2, 1, bias=False), nn.BatchNorm2d(ngf * 2),
            nn.ReLU(True),                                                               # 14x14
            nn.ConvTranspose2d(ngf * 2, nc, 4, 2, 1, bias=False), nn.Tanh(),             # 28x28
        )

    def forward(self, z):
        return self.net(z.view(z.shape[0], self.nz, 1, 1))


class DCGANCritic64(nn.Module):
    """64x64x3 DCGAN critic of the WGAN paper: 11 parameter tensors."""

    label = "DCGAN critic 64x64"

    def __init__(self, nc: int = 3, ndf: int = 64):
        super().__init__()
        layers = [nn.Conv2d(nc, ndf, 4, 2, 1, bias=False), nn.LeakyReLU(0.2, inplace=True)]
        ch = ndf
        for _ in range(3):                                                     # 32 -> 16 -> 8 -> 4
            layers += [nn.Conv2d(ch, ch * 2, 4, 2, 1, bias=False), nn.BatchNorm2d(ch * 2),
                       nn.LeakyReLU(0.2, inplace=True)]
            ch *= 2
        layers.append(nn.Conv2d(ch, 1, 4, 1, 0, bias=False))
        self.net = nn.Sequential(*layers)

    def forward(self, x):
        return self.net(x).flatten(1)


class DCGANGenerator64(nn.Module):
    def __init__(self, nz: int = 100, nc: int = 3, ngf: int = 64):
        super().__init__()
        self.nz = nz
        layers = [nn.ConvTranspose2d(nz, ngf * 8, 4, 1, 0, bias=False), nn.BatchNorm2d(ngf * 8),
                  nn.ReLU(True)]
        ch = ngf * 8
        for _ in range(3):                                                     # 4 -> 8 -> 16 -> 32
            layers += [nn.ConvTranspose2d(ch, ch // 2, 4, 2, 1, bias=False), nn.BatchNorm2d(ch // 2),
                       nn.ReLU(True)]
            ch //= 2
        layers += [nn.ConvTranspose2d(ch, nc, 4, 2, 1, bias=False), nn.Tanh()]  # 64x64
        self.net = nn.Sequential(*layers)

    def forward(self, z):
        return self.net(z.view(z.shape[0], self.nz, 1, 1))
