"""How good are the generated sprites? Measures that need no pretrained network (and FID/KID where the
Inception weights are on disk). The command that applies them to a folder of samples is
`python -m reports.metrics`; the sets of known quality they are read against are reports/reference.py.

Every image tensor here is float in [-1, 1], shape [N, 3, H, W]. The generated set is always compared
with the *training* sprites (what the model was fit to). Four metrics answer four questions:

    sliced_wasserstein   do local patches (edges, colours, textures at 3 scales) look like real ones?
    precision_recall     are the samples near real sprites (precision)? do they cover them (recall)?
    memorisation         is a sample a copy of a training sprite?
    diversity            are the samples different from each other?

and `fid_kid` adds FID and KID through torch-fidelity when its Inception weights are on disk (never
downloaded here, never replaced by random weights).

Numbers alone mean little, so `reference_rows` evaluates three sets of known quality the same way:
real held-out sprites (the best a model can do: new real sprites), the same held-out sprites
blurred (a typical failure) and uniform noise (the worst end). A sample set is read by where it
falls between them. All these metrics depend on the set sizes: compare rows at similar n.

The feature space (precision/recall, memorisation, diversity). Without a pretrained network the
features are the pixels themselves, averaged over 4x4 blocks down to 16x16 (`pixel_features`):
phi(x) = vec(area_16(x)) / sqrt(768), so that ||phi(x) - phi(y)|| is the RMS difference of the
16x16 images, in the units of [-1, 1]. This sees silhouette, pose, colour layout and large
parts, and ignores what 16x16 averages out: outline sharpness and fine texture (blur is nearly
invisible in it; the finest SWD level catches it). It is only partly tolerant of shifts: moving a
64x64 sprite by 2 pixels takes it half as far as the typical distance between two different
sprites (0.16 against 0.32 on the real sprites). It knows nothing of meaning:
a well-drawn "new Pokemon" and a plausible colour blob with the right layout can be equally close
to the real sprites, and a left-right mirror image is far from its original (memorisation
therefore also compares with mirrored training sprites, since training flips them).
"""
from __future__ import annotations

import hashlib
import importlib.util
import math
import warnings
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F
from tqdm import tqdm

from plumbing.pictures import to_uint8
from reports.manifold import manifold_precision_recall, nearest_neighbours, pairwise_distances
from sprites.dataset import decode_folder, list_image_files, to_unit_range

FEATURE_SIZE = 16   # pixel features: images averaged down to 16x16 (x 3 colours = 768 numbers)
K_NEIGHBOURS = 3    # k of the k-NN balls in precision/recall (Kynkaanniemi et al. 2019 use k = 3)

# torch-fidelity's InceptionV3 weights (its URL_INCEPTION_V3, the same in 0.3 and 0.4). It fetches
# them with torch.hub.load_state_dict_from_url, which stores them in $TORCH_HOME/hub/checkpoints/.
INCEPTION_URL = ("https://github.com/toshas/torch-fidelity/releases/download/v0.2.0/"
                 "weights-inception-2015-12-05-6726825d.pth")

Features = Callable[[torch.Tensor], torch.Tensor]


# --- the shared feature space ---------------------------------------------------------------------

def random_orthogonal_rows(in_dim: int, out_dim: int, seed: int) -> torch.Tensor:
    """A fixed [out_dim, in_dim] matrix Q with orthonormal rows (Q Q^T = I), drawn from `seed`.

    QR of a Gaussian matrix; fixing the signs by diag(R) makes Q uniformly (Haar) distributed.
    """
    if not 1 <= out_dim <= in_dim:
        raise ValueError(f"projection to {out_dim} dimensions must be between 1 and {in_dim}")
    gen = torch.Generator().manual_seed(seed)
    gauss = torch.randn(in_dim, out_dim, generator=gen, dtype=torch.float64)
    q, r = torch.linalg.qr(gauss)              # q: [in_dim, out_dim], orthonormal columns
    return (q * torch.sign(torch.diagonal(r))).T


def pixel_features(images: torch.Tensor, size: int = FEATURE_SIZE, proj_dim: int | None = None,
                   seed: int = 0) -> torch.Tensor:
    """Network-free image features: the image averaged down to size x size, flattened. [N, D] float64.

        phi(x) = vec(area_size(x)) / sqrt(D),          D = 3 * size^2 (768 at 16x16)

    area_size averages blocks of pixels (4x4 for a 64x64 sprite), so ||phi(x) - phi(y)|| is the
    RMS difference of the two small images, in the units of [-1, 1] (0 = identical, 2 = black
    against white everywhere). With `proj_dim` = d the flattened image is also projected by a fixed,
    seeded matrix Q with orthonormal rows (`random_orthogonal_rows`):

        phi(x) = Q vec(area_size(x)) / sqrt(d)

    Because E ||Q v||^2 = (d / D) ||v||^2 for a random Q, this keeps distances in the same units,
    and by the Johnson-Lindenstrauss lemma it distorts them by a relative error of about
    1/sqrt(d). It only saves time on large sets; at the sizes of this project (< 1000 sprites)
    the unprojected 768 numbers are cheap, so it is off by default.

    Why pixels: no pretrained network is available offline, and a random network would measure
    nothing in particular. What the features can and cannot see is in the module docstring.
    """
    small = F.interpolate(images.float(), size=(size, size), mode="area")
    flat = small.flatten(1).double()
    if proj_dim is None:
        return flat / math.sqrt(flat.shape[1])
    q = random_orthogonal_rows(flat.shape[1], proj_dim, seed)
    return flat @ q.T / math.sqrt(proj_dim)


# --- sliced Wasserstein distance on Laplacian-pyramid patches --------------------------------------

BINOMIAL_5 = torch.tensor([1.0, 4.0, 6.0, 4.0, 1.0]) / 16.0   # the classic pyramid filter (Burt & Adelson)


def separable_filter(images: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    """Convolve every channel with the 1-D `kernel` along rows, then along columns (mirror edges)."""
    r = len(kernel) // 2
    c = images.shape[1]
    x = F.pad(images, (r, r, r, r), mode="reflect")
    k = kernel.to(x)
    x = F.conv2d(x, k.view(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)   # along rows
    return F.conv2d(x, k.view(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)  # along columns


def pyramid_down(images: torch.Tensor) -> torch.Tensor:
    """Low-pass with the 5-tap binomial filter, keep every other pixel: [N, C, H, W] -> [N, C, H/2, W/2]."""
    return separable_filter(images, BINOMIAL_5)[..., ::2, ::2]


def pyramid_up(images: torch.Tensor) -> torch.Tensor:
    """Insert zeros between pixels and low-pass; the filter is doubled per axis (x4 in all) since
    three quarters of the new pixels are zeros: [N, C, H, W] -> [N, C, 2H, 2W]."""
    n, c, h, w = images.shape
    up = images.new_zeros(n, c, 2 * h, 2 * w)
    up[..., ::2, ::2] = images
    return separable_filter(up, 2.0 * BINOMIAL_5)


def laplacian_pyramid(images: torch.Tensor, min_size: int = 16) -> list[torch.Tensor]:
    """Band-pass levels, finest first: [L_H, L_H/2, ..., G_min] (e.g. 64, 32, 16 for a 64px image).

        G_0 = x,   G_{i+1} = down(G_i),   L_i = G_i - up(G_{i+1}),   last level = G_last

    Each L_i holds the detail of one octave (edges at 64, shapes at 32); the last level is the
    small Gaussian-blurred image itself (colours and layout).
    """
    levels, g = [], images
    while g.shape[-1] > min_size:
        smaller = pyramid_down(g)
        levels.append(g - pyramid_up(smaller))
        g = smaller
    levels.append(g)
    return levels


def random_patches(level: torch.Tensor, n: int, patch: int, gen: torch.Generator) -> torch.Tensor:
    """`n` patch x patch crops [n, C, patch, patch] at uniformly random images and positions."""
    count, c, h, w = level.shape
    if patch > min(h, w):
        raise ValueError(f"{patch}x{patch} patches do not fit in a {h}x{w} pyramid level")
    img = torch.randint(count, (n,), generator=gen)
    top = torch.randint(h - patch + 1, (n,), generator=gen)
    left = torch.randint(w - patch + 1, (n,), generator=gen)
    offsets = torch.arange(patch)
    rows = (top[:, None] + offsets)[:, None, :, None]      # [n, 1, patch, 1]
    cols = (left[:, None] + offsets)[:, None, None, :]     # [n, 1, 1, patch]
    channels = torch.arange(c)[None, :, None, None]        # [1, C, 1, 1]
    return level[img[:, None, None, None], channels, rows, cols]


def sliced_w1(desc_a: torch.Tensor, desc_b: torch.Tensor, directions: int, repeats: int,
              gen: torch.Generator) -> float:
    """Sliced Wasserstein-1 distance of two equally large point sets [M, D].

        SWD(A, B) = E_u [ W1(u.A, u.B) ],   W1 in 1-D = mean_i |sort(u.A)_i - sort(u.B)_i|

    over `repeats` x `directions` random unit vectors u (the 1-D optimal transport pairs the
    i-th smallest projection of A with the i-th smallest of B).
    """
    values = []
    for _ in range(repeats):
        dirs = torch.randn(desc_a.shape[1], directions, generator=gen)
        dirs = dirs / dirs.norm(dim=0, keepdim=True)
        proj_a = (desc_a @ dirs).sort(dim=0).values
        proj_b = (desc_b @ dirs).sort(dim=0).values
        values.append((proj_a - proj_b).abs().mean().item())
    return sum(values) / len(values)


def sliced_wasserstein(a: torch.Tensor, b: torch.Tensor, patch: int = 7, n_patches: int = 8192,
                       directions: int = 128, repeats: int = 4, min_size: int = 16,
                       seed: int = 0) -> dict[str, float]:
    """Multi-scale sliced Wasserstein distance between two image sets (Karras et al. 2018, app. D).

    "Progressive Growing of GANs for Improved Quality, Stability, and Variation", ICLR 2018:
      1. a Laplacian pyramid per image down to `min_size` (64x64 -> levels 64, 32, 16);
      2. per level, `n_patches` 7x7 patches from each set at random images and positions,
         each a descriptor of 3*7*7 = 147 numbers;
      3. every colour channel of the descriptors is standardised, (d - mean_c) / std_c, with the
         mean and std over the patches of BOTH sets at that level;
      4. SWD = the mean over 4 x 128 = 512 random unit directions of the 1-D Wasserstein distance
         of the projected descriptors (`sliced_w1`), reported x 1e3 as in the paper.

    Returns {"64px": ..., "32px": ..., "16px": ..., "mean": average over the levels}. One seeded
    generator draws every patch and direction, so a seed gives the same numbers every time.

    Deviation: Karras et al.'s code standardises each set with its own statistics, which makes
    SWD blind to a global colour or contrast shift per level; the pooled statistics of step 3 keep
    such a shift visible. Limits: SWD compares distributions of *local* patches, so a set of
    well-drawn fragments in a wrong arrangement can score well; it has a noise floor (two sets
    drawn from the same distribution do not give 0; the held-out reference row shows how much)
    that shrinks with n_patches; values are comparable only at equal settings and image size.
    """
    if a.shape[1:] != b.shape[1:]:
        raise ValueError(f"image sets of different shapes: {tuple(a.shape[1:])} and {tuple(b.shape[1:])}")
    gen = torch.Generator().manual_seed(seed)
    result = {}
    for level_a, level_b in zip(laplacian_pyramid(a.float(), min_size), laplacian_pyramid(b.float(), min_size)):
        pa = random_patches(level_a, n_patches, patch, gen)
        pb = random_patches(level_b, n_patches, patch, gen)
        both = torch.cat([pa, pb])
        mean = both.mean(dim=(0, 2, 3), keepdim=True)
        std = both.std(dim=(0, 2, 3), keepdim=True).clamp_min(1e-8)
        da, db = ((pa - mean) / std).flatten(1), ((pb - mean) / std).flatten(1)
        result[f"{level_a.shape[-1]}px"] = 1e3 * sliced_w1(da, db, directions, repeats, gen)
    result["mean"] = sum(result.values()) / len(result)
    return result


# --- improved precision and recall ----------------------------------------------------------------

def precision_recall(real: torch.Tensor, fake: torch.Tensor, k: int = K_NEIGHBOURS,
                     features: Features = pixel_features) -> dict[str, float]:
    """Improved precision and recall (Kynkaanniemi et al., NeurIPS 2019).

    The real manifold is estimated as the union of balls around every real feature phi_r with
    radius r_k(phi_r), the distance to its k-th nearest real neighbour; likewise for the fakes:

        f(phi, Phi) = 1  if  ||phi - phi'|| <= r_k(phi')  for some phi' in Phi,  else 0
        precision   = mean over fakes of f(phi_g, Phi_real)   (samples that look real)
        recall      = mean over reals of f(phi_r, Phi_fake)   (real sprites the samples cover)

    `features` maps images to [N, D] features (default: `pixel_features`, the 16x16 pixels; the
    paper uses VGG-16 features). Limits: a single real outlier has a big ball, which inflates
    precision; recall grows with the number of fakes (more and bigger balls), so compare sets of
    equal size; in pixel features "near" means "similar layout and colours", not "plausible", and
    blurry images, which sit between real ones, can score a higher precision than real ones do.
    """
    return manifold_precision_recall(features(real), features(fake), k)


# --- memorisation ---------------------------------------------------------------------------------

def memorisation(samples: torch.Tensor, train: torch.Tensor | None, holdout: torch.Tensor,
                 quantile: float = 0.05, ratio: float = 0.5, duplicate_eps: float = 0.05, flips: bool = True,
                 features: Features = pixel_features, train_features: torch.Tensor | None = None) -> dict:
    """How many samples are (near) copies of a training sprite?

    For each sample s the distance to its nearest training image, in `features` (default: 16x16
    pixels, RMS difference in [-1, 1] units), also against the mirrored training images when
    `flips` (training flips them, so a mirrored copy is a copy):

        d(s) = min_j || phi(s) - phi(t_j) ||,      t_j in train (and flip(train))

    Calibration: the same distance for the real held-out sprites that are not themselves copies,
    i.e. new sprites. The sprite set has pixel-identical twins under different numbers (7 of the
    46 held-out sprites have a twin among the training sprites, at d < 0.03, while the nearest
    distinct sprite is at d > 0.17), so held-out sprites with d(h) < `duplicate_eps` (0.05, about
    6 grey levels of 255 RMS: the same picture) are counted as duplicates and left out. The
    threshold is the `quantile` (default the 5th percentile) of the rest:

        tau = Quantile_q { d(h) : h in holdout, d(h) >= duplicate_eps }
        s is memorised  iff  d(s) < ratio * tau                           (ratio = 0.5)

    So a sample counts as memorised when it is twice as close to a training sprite as all but the
    closest 5% of genuinely new sprites are. A generator that makes new sprites scores about 0, a
    copying one about 1 (on the real sprites tau is about 0.18: a copy blurred with sigma = 1 px is
    at 0.03-0.05 and caught; a copy shifted by 2 px is at 0.16-0.25 and is not). The held-out
    reference row is flagged at the share of held-out sprites with a training twin (7/46 = 15%).

    Returns the rate, tau, the rule's parameters, the number of held-out duplicates, the median d
    of the samples and of the held-out sprites, and per sample: d, the index into `train` of the
    nearest image, whether it was the mirrored one and whether the sample is flagged (so a report
    can show sample/nearest pairs). Limits: with ~40 held-out sprites the 5th percentile rests on
    about two of them; shifted, rescaled or recoloured copies are missed (the features are not
    invariant to them); alternate forms of one Pokemon are real near-duplicates.

    `train_features` replaces `train` for a set too large to hold as float images (every training
    image of every source): its features, the plain images then the mirrored ones
    (`mirrored_features`).
    """
    if train_features is None:
        n_train = len(train)
        f_refs = features(torch.cat([train, train.flip(-1)]) if flips else train)
    else:
        f_refs, n_train = train_features, len(train_features) // (2 if flips else 1)
    dist, idx = nearest_neighbours(features(samples), f_refs)
    holdout_dist, _ = nearest_neighbours(features(holdout), f_refs)
    new_sprites = holdout_dist[holdout_dist >= duplicate_eps]
    if len(new_sprites) == 0:
        raise ValueError(f"all {len(holdout)} held-out images are within {duplicate_eps} of a training image; "
                         "the memorisation threshold needs held-out images that are not copies")
    tau = torch.quantile(new_sprites, quantile).item()
    flagged = dist < ratio * tau
    return {
        "rate": flagged.double().mean().item(),
        "threshold": tau,
        "quantile": quantile,
        "ratio": ratio,
        "duplicate_eps": duplicate_eps,
        "holdout_duplicates": len(holdout) - len(new_sprites),
        "median_nn_distance": dist.median().item(),
        "holdout_median_nn_distance": holdout_dist.median().item(),
        "nn_distance": dist.tolist(),
        "nearest_train_index": (idx % n_train).tolist(),
        "nearest_is_mirrored": (idx >= n_train).tolist(),
        "memorised": flagged.tolist(),
    }


def mirrored_features(images_u8: torch.Tensor, chunk: int = 4096) -> torch.Tensor:
    """`pixel_features` of uint8 images and of their mirror images, [2N, D] (all plain, then all
    mirrored), computed a chunk at a time (a set of 90,000 images never exists as floats at once)."""
    plain, mirrored = [], []
    for i in tqdm(range(0, len(images_u8), chunk), desc=f"features of {len(images_u8):,} training images",
                  unit="chunk", leave=False, disable=len(images_u8) <= chunk):
        x = to_unit_range(images_u8[i:i + chunk])
        plain.append(pixel_features(x))
        mirrored.append(pixel_features(x.flip(-1)))
    return torch.cat(plain + mirrored)


# --- diversity ------------------------------------------------------------------------------------

def diversity(images: torch.Tensor, features: Features = pixel_features) -> float:
    """Mean pairwise distance of a set in `features` (default: 16x16 pixels, RMS in [-1, 1] units).

        diversity = 1 / (N (N - 1)) * sum_{i != j} || phi(x_i) - phi(x_j) ||

    This is an unbiased estimate of E||phi(X) - phi(X')|| for two independent draws, so sets of
    different sizes are comparable; compare with the same number for the real sprites. 0 means
    every image is the same. Limits: a set of a few very different images (mode collapse to a
    handful of modes) still scores high; it says nothing about whether the images look real; pixel
    noise scores low, since the 16x16 averaging cancels independent pixel noise.
    """
    f = features(images)
    n = len(f)
    if n < 2:
        raise ValueError("diversity needs at least 2 images")
    return (pairwise_distances(f, f).sum() / (n * (n - 1))).item()


# --- FID and KID through torch-fidelity ------------------------------------------------------------

def inception_weights_path() -> Path:
    """Where torch-fidelity keeps its Inception weights: torch.hub's cache, $TORCH_HOME/hub/checkpoints/
    (default ~/.cache/torch/hub/checkpoints/weights-inception-2015-12-05-6726825d.pth)."""
    return Path(torch.hub.get_dir()) / "checkpoints" / INCEPTION_URL.rsplit("/", 1)[-1]


def not_computed(what: str, fix: str) -> dict:
    return {"fid": None, "kid": None, "kid_std": None, "note": f"not computed: {what} - {fix}"}


# Inception features of real sets, kept for the life of the process (keyed by a hash of the pixels and
# the weights file): the reference rows compare four sets with the same ~900 training sprites.
REAL_FEATURES: dict[str, torch.Tensor] = {}


def inception_features(images_u8: torch.Tensor, weights: Path, batch_size: int = 32) -> torch.Tensor:
    """[N, 2048] pool features of torch-fidelity's InceptionV3 (the TF-FID port) for uint8 images.

    The network resizes each image to 299x299 itself, exactly as torch-fidelity's own FID does.
    """
    from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    net = FeatureExtractorInceptionV3("inception-v3-compat", ["2048"], feature_extractor_weights_path=str(weights))
    net.eval().to(device)
    with torch.no_grad():
        return torch.cat([net(batch.to(device))[0].cpu() for batch in images_u8.split(batch_size)])


def fid_kid(real: torch.Tensor | str | Path, fake: torch.Tensor, kid_subsets: int = 100) -> dict:
    """FID (Heusel et al. 2017) and KID (Binkowski et al. 2018) with torch-fidelity's InceptionV3.

        FID = ||mu_r - mu_g||^2 + Tr(S_r + S_g - 2 (S_r S_g)^(1/2))    Gaussians fit to 2048-D
                                                                       Inception pool features
        KID = MMD^2 with the kernel k(x, y) = (x.y / 2048 + 1)^3, unbiased, averaged over
              `kid_subsets` random subsets of size min(n_real, n_fake); kid_std is their spread

    Features and both formulas are torch-fidelity's (its feature extractor, `fid_features_to_statistics`,
    `fid_statistics_to_metric`, `kid_features_to_metric`). `real` is a tensor in [-1, 1] or a folder
    of PNGs (composited on white and resized to the fakes' size, as sprites/dataset.py does).

    The weights file (`inception_weights_path`) is looked for BEFORE torch-fidelity is touched, so
    nothing tries to download; without the package or the file the result is {"fid": None,
    "kid": None, "note": "not computed: ... - how to enable"}. There is no fallback: Inception
    features with random weights would give a meaningless number.

    Limits: Inception was trained on ImageNet photos, not 64x64 sprites upscaled to 299x299; FID
    is biased upward at small n (its 2048x2048 covariance is singular below 2049 images), so values
    at n = 64 only compare with values at the same n; KID is unbiased but noisy at small n.
    """
    weights = inception_weights_path()
    if importlib.util.find_spec("torch_fidelity") is None:
        return not_computed("the torch-fidelity package is not installed",
                            f"pip install 'torch-fidelity>=0.3,<0.4' and put its Inception weights at {weights}")
    if not weights.is_file():
        return not_computed(
            f"torch-fidelity's Inception weights are not in {weights}",
            f"on a machine with internet run torch-fidelity once (it caches {INCEPTION_URL} in "
            "~/.cache/torch/hub/checkpoints/) or download that file, and copy it here "
            "(or set TORCH_HOME to a folder whose hub/checkpoints/ holds it)")
    if isinstance(real, (str, Path)):
        real_u8 = decode_folder(list_image_files(Path(real)), fake.shape[-1])[0]
    else:
        real_u8 = to_uint8(real)
    fake_u8 = to_uint8(fake)
    n = min(len(real_u8), len(fake_u8))
    if n < 2:
        return not_computed(f"KID needs at least 2 images per set (got {len(real_u8)} real, {len(fake_u8)} generated)",
                            "evaluate more images")
    key = hashlib.sha256(real_u8.numpy().tobytes() + str(weights).encode()).hexdigest()
    try:
        if key not in REAL_FEATURES:
            REAL_FEATURES[key] = inception_features(real_u8, weights)
        f_real, f_fake = REAL_FEATURES[key], inception_features(fake_u8, weights)
    except Exception as err:  # a truncated, foreign or unpicklable weights file
        reason = (str(err).strip().splitlines() or [type(err).__name__])[0][:100]
        return not_computed(f"the Inception weights in {weights} could not be loaded ({reason})",
                            f"delete that file and download {INCEPTION_URL} again")
    import torch_fidelity
    from torch_fidelity.metric_fid import fid_features_to_statistics, fid_statistics_to_metric
    from torch_fidelity.metric_kid import kid_features_to_metric

    with warnings.catch_warnings():   # scipy warns that the covariance product is singular (n < 2049)
        warnings.simplefilter("ignore")
        fid = fid_statistics_to_metric(fid_features_to_statistics(f_fake), fid_features_to_statistics(f_real),
                                       verbose=False)
    kid = kid_features_to_metric(f_fake, f_real, kid_subsets=kid_subsets, kid_subset_size=n, verbose=False)
    return {"fid": float(fid["frechet_inception_distance"]),
            "kid": float(kid["kernel_inception_distance_mean"]),
            "kid_std": float(kid["kernel_inception_distance_std"]),
            "note": f"torch-fidelity {torch_fidelity.__version__}, InceptionV3 pool features, "
                    f"{len(real_u8)} real vs {len(fake_u8)} generated; FID compares only at equal n"}


# --- everything together, and the calibration rows -------------------------------------------------

def evaluate(samples: torch.Tensor, train: torch.Tensor, holdout: torch.Tensor, seed: int = 0,
             fid: bool = True, swd_patches: int = 8192) -> dict:
    """Every metric of `samples` against the training sprites (the held-out ones calibrate memorisation).

    Returns {"n", "swd": {per level, "mean"}, "precision", "recall", "memorisation": {...},
    "diversity", "diversity_real" (the training sprites', for reference), "fid", "kid",
    "kid_std", "fid_kid_note"}. With fid=False FID/KID are None without trying.
    """
    pr = precision_recall(train, samples)
    scores = fid_kid(train, samples) if fid else not_computed("switched off", "drop --no-fid")
    return {
        "n": len(samples),
        "swd": sliced_wasserstein(samples, train, n_patches=swd_patches, seed=seed),
        "precision": pr["precision"],
        "recall": pr["recall"],
        "memorisation": memorisation(samples, train, holdout),
        "diversity": diversity(samples),
        "diversity_real": diversity(train),
        "fid": scores["fid"],
        "kid": scores["kid"],
        "kid_std": scores["kid_std"],
        "fid_kid_note": scores["note"],
    }


def gaussian_blur(images: torch.Tensor, sigma: float) -> torch.Tensor:
    """Blur with a Gaussian of std `sigma` pixels: g(i) ~ exp(-i^2 / (2 sigma^2)), |i| <= 3 sigma."""
    radius = min(math.ceil(3 * sigma), images.shape[-1] - 1)
    offsets = torch.arange(-radius, radius + 1, dtype=torch.float32)
    kernel = torch.exp(-offsets ** 2 / (2 * sigma ** 2))
    return separable_filter(images.float(), kernel / kernel.sum())

