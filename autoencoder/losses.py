"""Stage-1 losses: KL term, LPIPS perceptual loss (pretrained weights, never random), patch GAN.

Total generator loss per batch (weights from the config's `loss` section):

    L = l1_weight * mean|x - x_hat|
      + colour_weight * mean|W (x - x_hat)|      (W: colour whitening, see vae.py)
      + perceptual_weight * mean LPIPS(x, x_hat)
      + kl_weight * mean_b KL(q(z|x_b) || N(0, I)) / D        (D = 3*H*W pixel values)
      + disc_weight * (-mean D(x_hat))            (hinge generator loss, after the share disc_start of training)

and, from disc_start on, one step of the patch discriminator D per step on
    L_D = 1/2 [ mean relu(1 - D(x)) + mean relu(1 + D(x_hat)) ]      (hinge loss, x_hat detached)
whose value the run logs as `disc`: 1 when D cannot tell (all logits 0), 0 when every patch of
every real and reconstructed sprite is on its side of the margin.
"""
from __future__ import annotations

from pathlib import Path

import torch
import torchvision
from torch import nn
from torch.nn import functional as F

from plumbing.cli import UserError


def kl_to_standard_normal(mean: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(mean, diag(exp(logvar))) || N(0, I)) per sample, summed over all latent dimensions.

    For one dimension with q = N(mu, s^2) and p = N(0, 1):
        KL(q || p) = 1/2 * (mu^2 + s^2 - 1 - log s^2)
    Dimensions are independent, so the KL of the diagonal Gaussian is the sum over dimensions.
    Returns a tensor of shape [B].
    """
    per_dim = 0.5 * (mean.pow(2) + logvar.exp() - 1.0 - logvar)
    return per_dim.flatten(1).sum(dim=1)


def colour_l1(vae: nn.Module, x_hat: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Mean L1 on whitened colours, mean |W (x_hat - x)| (the `colour_weight` term above, and the
    colour part of the scale-equivariance term): every colour axis counts alike
    (autoencoder/vae.py, VAE.whiten)."""
    return (vae.whiten(x_hat) - vae.whiten(x)).abs().mean()


# torchvision's ImageNet weights for each LPIPS backbone (downloaded once into torch.hub's cache).
_BACKBONES = {
    "alex": ("alexnet", "AlexNet_Weights"),
    "vgg": ("vgg16", "VGG16_Weights"),
    "squeeze": ("squeezenet1_1", "SqueezeNet1_1_Weights"),
}


def backbone_weights_file(net: str) -> tuple[str, Path]:
    """(download URL, local cache path) of the ImageNet weights an LPIPS backbone needs."""
    _, enum_name = _BACKBONES[net]
    url = getattr(torchvision.models, enum_name).IMAGENET1K_V1.url
    return url, Path(torch.hub.get_dir()) / "checkpoints" / Path(url).name


def load_lpips(net: str = "alex") -> nn.Module:
    """LPIPS (Zhang et al. 2018) with its *pretrained* backbone, frozen, in eval mode.

    The `lpips` package ships its small calibration layers; the backbone's ImageNet weights come
    from torchvision's download. If they cannot be had (no internet, no cached file), raise a
    UserError saying which file is missing and how to get it: a random backbone would make the
    "perceptual" loss meaningless, so there is no silent fallback.
    """
    import lpips  # an optional heavy dependency: imported only when the perceptual loss is on

    arch, enum_name = _BACKBONES[net]
    url, cached = backbone_weights_file(net)
    try:
        state = getattr(torchvision.models, enum_name).IMAGENET1K_V1.get_state_dict(progress=False)
    except Exception as err:  # URLError, hash mismatch, truncated file...
        reason = str(getattr(err, "reason", err)).splitlines()[0][:80]
        raise UserError(f"LPIPS needs the pretrained {arch} weights, which could not be loaded ({reason}); "
                        f"download {url} to {cached} (torch.hub's cache, set by TORCH_HOME) on a machine with "
                        "internet, or set loss.perceptual_weight=0")
    backbone = getattr(torchvision.models, arch)()
    backbone.load_state_dict(state)
    model = lpips.LPIPS(net=net, pretrained=True, pnet_rand=True, verbose=False)
    # lpips splits `backbone.features` into slices whose children keep their feature indices.
    for slice_ in model.net.children():
        for idx, layer in slice_.named_children():
            layer.load_state_dict(backbone.features[int(idx)].state_dict())
    model.eval().requires_grad_(False)
    return model


class PatchDiscriminator(nn.Module):
    """A small PatchGAN (Isola et al. 2017): one real/fake logit per overlapping image patch.

    conv4x4/s2 (no norm) -> [conv4x4/s2 -> GroupNorm -> LeakyReLU] x (layers - 1) -> conv4x4 -> logits.
    """

    def __init__(self, width: int = 64, layers: int = 3):
        super().__init__()
        mods: list[nn.Module] = [nn.Conv2d(3, width, 4, 2, 1), nn.LeakyReLU(0.2)]
        c = width
        for _ in range(layers - 1):
            mods += [nn.Conv2d(c, 2 * c, 4, 2, 1), nn.GroupNorm(8, 2 * c), nn.LeakyReLU(0.2)]
            c *= 2
        mods.append(nn.Conv2d(c, 1, 4, 1, 1))
        self.net = nn.Sequential(*mods)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def hinge_d_loss(logits_real: torch.Tensor, logits_fake: torch.Tensor) -> torch.Tensor:
    """Discriminator hinge loss: mean(relu(1 - D(x))) + mean(relu(1 + D(x_hat))), halved."""
    return 0.5 * (F.relu(1.0 - logits_real).mean() + F.relu(1.0 + logits_fake).mean())


def hinge_g_loss(logits_fake: torch.Tensor) -> torch.Tensor:
    """Generator side of the hinge GAN: make D(x_hat) large."""
    return -logits_fake.mean()
